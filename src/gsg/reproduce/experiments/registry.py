"""The experiments by name: the list, and the lookup that builds one at a scale."""

from __future__ import annotations

import difflib

from gsg.errors import ConfigError
from gsg.reproduce.experiments.base import SCALES, Experiment
from gsg.reproduce.experiments.crops import _crops
from gsg.reproduce.experiments.decomposition import _decomposition
from gsg.reproduce.experiments.directpred import _directpred
from gsg.reproduce.experiments.table1 import _fig4, _fig5, _table1, _tsne
from gsg.reproduce.experiments.table4 import _table4

EXPERIMENTS: tuple[str, ...] = ("table1", "fig4", "fig5", "table4", "tsne", "directpred", "crops",
                               "decomposition")


_BUILDERS = {"table1": _table1, "fig4": _fig4, "fig5": _fig5, "table4": _table4, "tsne": _tsne,
             "directpred": _directpred, "crops": _crops, "decomposition": _decomposition}


def _check_choice(what: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown {what} {value!r}{hint}; choose one of {', '.join(valid)}")


def get_experiment(name: str, scale: str) -> Experiment:
    """The definition of experiment ``name`` at ``scale``; a ConfigError names the valid ones."""
    _check_choice("experiment", name, EXPERIMENTS)
    _check_choice("scale", scale, SCALES)
    return _BUILDERS[name](scale)
