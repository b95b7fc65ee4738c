"""``gsg reproduce``: the paper's tables and figures (Table 1, Table 4, Fig. 4, Fig. 5, the t-SNE of
Appendix E) and the DirectPred comparison of Tian et al., at a CPU scale and at the paper's full scale.

    from gsg.reproduce import reproduce
    result = reproduce("table1", scale="cpu", out="runs/reproduce/table1-cpu")

writes ``results.json``, ``results.md`` (the paper's layout, our numbers beside the paper's),
``commands.md`` and PNG plots into ``out``; finished runs are reused and an interrupted one resumes.
"""

from __future__ import annotations

from gsg.reproduce.aggregate import mean_std
from gsg.reproduce.experiments import EXPERIMENTS, SCALES, estimate_seconds, get_experiment
from gsg.reproduce.plan import full_scale_launch, plan_runs
from gsg.reproduce.runner import reproduce

__all__ = ["EXPERIMENTS", "SCALES", "estimate_seconds", "full_scale_launch", "get_experiment", "mean_std",
           "plan_runs", "reproduce"]
