"""Rebuild finished runs' records from the metrics committed to the docs, on a fresh machine.

A long reproduction outlives the machine it started on: its runs directory (checkpoints, ``done.json``) is never
committed, but each finished run's ``command.txt``, ``metrics.jsonl`` and ``evals.json`` are
(``docs/experiments/progress.py``), and every results page keeps the baselines it was written with. From those a
fresh checkout can write the ``done.json`` records that tell ``gsg reproduce`` a run is finished, so that it trains
only what is left instead of the whole grid again.

A run is restored only when its committed command is exactly the command its plan would run now (the same config,
seed and output directory), its metrics hold every planned epoch, and its evaluations are all there: anything else
is left to be trained. Nothing already in the runs directory is overwritten. A restored run has no checkpoint, so
an evaluation that needs one (a new protocol, a new t-SNE) cannot be added to it later; the record says it was
restored and from where.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gsg.reproduce.baselines import baseline_key
from gsg.reproduce.execute import DONE_NAME, RESULT_FORMAT, _final_metrics
from gsg.reproduce.experiments import Experiment
from gsg.reproduce.files import _write_json
from gsg.reproduce.plan import PlannedRun
from gsg.reproduce.prefix import RECORD_NAME

log = logging.getLogger(__name__)

# What the metrics logger adds to each epoch's values (gsg.train.logging.MetricsLogger.log).
_LOGGER_KEYS = ("kind", "step", "time")


def epoch_history(metrics: Path) -> list[dict[str, Any]]:
    """The per-epoch values the training loop returned, read back from its ``metrics.jsonl``."""
    history = []
    for line in metrics.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") == "epoch":
            history.append({k: v for k, v in row.items() if k not in _LOGGER_KEYS})
    return history


def _read_copy(exp: Experiment, plan: PlannedRun, src: Path) -> tuple[list[dict[str, Any]], dict[str, Any]] | str:
    """The history and saved evaluations of the committed copy ``src`` of ``plan``, or why it cannot stand for a
    finished run."""
    for name in ("command.txt", "metrics.jsonl", "evals.json"):
        if not (src / name).is_file():
            return f"{src / name} is missing"
    if (src / "command.txt").read_text().strip() != plan.command:
        return "its command differs from the plan's (the config or the runs directory changed)"
    history = epoch_history(src / "metrics.jsonl")
    if [h.get("epoch") for h in history] != list(range(1, plan.config.optim.epochs + 1)):
        return f"its metrics hold {len(history)} of {plan.config.optim.epochs} epochs"
    saved = json.loads((src / "evals.json").read_text())
    evals = saved.get("evals", {})
    missing = [e for e in exp.evals if e in ("knn", "linear", "tsne") and (e not in evals or "error" in evals[e])]
    if missing:
        return f"it lacks the evaluations {', '.join(missing)}"
    return history, saved


def restore_runs(exp: Experiment, plans: Sequence[PlannedRun], docs: Path) -> list[str]:
    """Write ``done.json`` for every plan whose finished run was committed under ``docs/<key>/`` and that the runs
    directory does not already hold; returns the keys restored. Plans that cannot be restored are logged with the
    reason and left to train."""
    restored = []
    for plan in plans:
        src = docs / plan.key
        if (plan.dir / DONE_NAME).exists() or not src.is_dir():
            continue
        copy = _read_copy(exp, plan, src)
        if isinstance(copy, str):
            log.warning("%s: not restored from %s: %s; it will be trained", plan.key, src, copy)
            continue
        history, saved = copy
        rec: dict[str, Any] = {
            "format": RESULT_FORMAT, "key": plan.key, "name": plan.run.name, "label": plan.run.label,
            "group": plan.run.group, "seed": plan.seed, "config": plan.config.to_dict(), "command": plan.command,
            "eval_commands": plan.eval_commands, "checkpoint": None, "status": "ok", "history": history,
            "final": _final_metrics(history), "evals": saved.get("evals", {}), "times": saved.get("times", {}),
            "restored_from": str(src)}
        if (src / RECORD_NAME).is_file():
            rec["continued_from"] = json.loads((src / RECORD_NAME).read_text())
        plan.dir.mkdir(parents=True, exist_ok=True)
        for name in ("command.txt", "metrics.jsonl", RECORD_NAME):
            if (src / name).is_file() and not (plan.dir / name).exists():
                (plan.dir / name).write_bytes((src / name).read_bytes())
        _write_json(plan.dir / DONE_NAME, rec)
        restored.append(plan.key)
    return restored


def restore_baselines(pages: Iterable[Path], root: Path) -> list[Path]:
    """Write ``root/baselines/<key>.json`` from the baselines recorded in results pages (``results.json``) where
    the runs directory lacks them; returns the files written."""
    written = []
    for page in pages:
        rec = json.loads(page.read_text()).get("baselines")
        if not isinstance(rec, dict) or not isinstance(rec.get("protocol"), dict) or not rec.get("results"):
            continue
        path = root / "baselines" / f"{baseline_key(rec['protocol'])}.json"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_json(path, rec)
        written.append(path)
    return written


__all__ = ["epoch_history", "restore_baselines", "restore_runs"]
