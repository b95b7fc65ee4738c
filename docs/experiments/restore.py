"""Restore finished runs on a fresh machine from the metrics committed to the docs, before resuming a grid.

    python docs/experiments/restore.py --runs runs/reproduce-cpu2 --docs docs/results/runs/cpu2 \
        --pages 'docs/results/*_cpu2/results.json' crops=3 decomposition table4 fig5 table1=3 fig4 tsne directpred

The runs directory of a long reproduction is never committed; ``progress.py`` commits each finished run's
command, metrics and evaluations instead. This writes the ``done.json`` of every planned run whose committed copy
matches its plan exactly (``gsg.reproduce.restore``), and the baselines recorded in the results pages, so that
``gsg reproduce`` trains only the runs that are left. Idempotent: nothing in the runs directory is overwritten.
``EXPERIMENT=SEEDS`` as in ``progress.py``.
"""

from __future__ import annotations

import argparse
import glob
import logging
from pathlib import Path

from gsg.reproduce.experiments import get_experiment
from gsg.reproduce.plan import plan_runs
from gsg.reproduce.restore import restore_baselines, restore_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiments", nargs="+", help="EXPERIMENT or EXPERIMENT=SEEDS (the reproduction's --seeds)")
    ap.add_argument("--runs", type=Path, required=True, help="the shared --runs directory of the reproductions")
    ap.add_argument("--docs", type=Path, required=True, help="where progress.py copied the finished runs")
    ap.add_argument("--pages", default=None, help="glob of results.json pages whose baselines to restore")
    ap.add_argument("--scale", default="cpu")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    total = 0
    for spec in args.experiments:
        name, _, n_seeds = spec.partition("=")
        exp = get_experiment(name, args.scale)
        plans = plan_runs(exp, int(n_seeds) if n_seeds else exp.default_seeds, Path("unused"), runs_dir=args.runs)
        keys = restore_runs(exp, plans, args.docs)
        total += len(keys)
        print(f"{name}: restored {len(keys)} of {len(plans)} planned runs" + (f" ({', '.join(keys)})" if keys else ""))
    if args.pages:
        written = restore_baselines(sorted(Path(p) for p in glob.glob(args.pages)), args.runs)
        print(f"baselines: restored {len(written)} protocol(s)")
    print(f"{total} runs restored into {args.runs}")


if __name__ == "__main__":
    main()
