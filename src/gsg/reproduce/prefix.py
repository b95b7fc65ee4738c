"""Continue a finished shorter run instead of training its epochs again.

A run whose steps do not read its total length (a constant lr and, for BYOL, a constant EMA momentum) trains in
its first N epochs exactly the N-epoch run of the same config: the batch order, the augmentations and the
pairing come from the run's generator, epoch by epoch, and the checkpoint saves that generator. So the
four-crop control's "2x epochs" runs can start from their 1x run's final checkpoint and train only the second
half. A test checks the weights bit for bit against a run trained straight through; on the cpu2 grid,
``simsiam_sym2x2-s0`` (trained from scratch) logged the same loss and monitor kNN as ``simsiam-s0`` at every one
of its first 12 epochs.

Only the checkpoint and ``metrics.jsonl`` are copied (the history of the first N epochs is inside the
checkpoint); the TensorBoard events of those epochs stay in the shorter run's directory. The copy is recorded in
``continued_from.json`` with the two commands that do the same by hand.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gsg.checkpoint import load_checkpoint
from gsg.config import Config
from gsg.errors import CheckpointError
from gsg.train.loop import CHECKPOINT_NAME

if TYPE_CHECKING:
    from gsg.reproduce.plan import PlannedRun

RECORD_NAME = "continued_from.json"
METRICS_NAME = "metrics.jsonl"


def length_dependence(cfg: Config) -> list[str]:
    """The settings through which a run's steps depend on its total number of epochs (none: it has prefixes)."""
    reasons = []
    if cfg.optim.schedule != "constant":
        reasons.append(f"optim.schedule = {cfg.optim.schedule!r} (the lr at a step depends on the total)")
    if cfg.ssl.method == "byol" and cfg.ssl.ema_schedule != "constant":
        reasons.append(f"ssl.ema_schedule = {cfg.ssl.ema_schedule!r} (the EMA momentum depends on the total)")
    return reasons


def _without_length(cfg: Config) -> dict[str, Any]:
    d = cfg.to_dict()
    d["optim"] = {k: v for k, v in d["optim"].items() if k != "epochs"}
    d["run"] = {k: v for k, v in d["run"].items() if k != "out"}
    return d


def prefix_sources(plans: Sequence[PlannedRun]) -> dict[str, PlannedRun]:
    """For each plan that has one, the plan whose finished training is its prefix: the same config and seed with
    fewer epochs (the longest such), when neither reads its total length. Keyed by the longer plan's key."""
    sources: dict[str, PlannedRun] = {}
    for p in plans:
        if length_dependence(p.config):
            continue
        ident = _without_length(p.config)
        shorter = [q for q in plans if q.config.optim.epochs < p.config.optim.epochs and q.dir != p.dir
                   and _without_length(q.config) == ident]
        if shorter:
            sources[p.key] = max(shorter, key=lambda q: q.config.optim.epochs)
    return sources


def finished_epoch(source: PlannedRun) -> int | None:
    """The epoch of ``source``'s checkpoint if its training has finished (its last epoch, at an epoch's end)."""
    ckpt = source.dir / CHECKPOINT_NAME
    if not ckpt.is_file():
        return None
    try:
        ts = load_checkpoint(ckpt)["train_state"]
    except (CheckpointError, KeyError, TypeError):
        return None
    done = int(ts["epoch"]) == source.config.optim.epochs and int(ts.get("batch_in_epoch", 0)) == 0
    return int(ts["epoch"]) if done else None


def continue_from(plan: PlannedRun, source: PlannedRun) -> dict[str, Any] | None:
    """Copy ``source``'s final checkpoint (and its metrics) into ``plan.dir`` when ``plan`` has no checkpoint yet, so
    that ``pretrain(..., resume="auto")`` trains only the epochs after it. Returns the record written, or None
    (``plan`` already has a checkpoint, or ``source`` has not finished)."""
    dst = plan.dir / CHECKPOINT_NAME
    epoch = finished_epoch(source)
    if dst.exists() or epoch is None:
        return None
    plan.dir.mkdir(parents=True, exist_ok=True)
    metrics = source.dir / METRICS_NAME
    if metrics.is_file() and not (plan.dir / METRICS_NAME).exists():
        shutil.copyfile(metrics, plan.dir / METRICS_NAME)
    tmp = dst.with_name(dst.name + ".partial")
    shutil.copyfile(source.dir / CHECKPOINT_NAME, tmp)
    os.replace(tmp, dst)  # the checkpoint last: a crash before this leaves a run that trains from scratch
    record = {**planned_record(plan, source), "epoch": epoch, "time": datetime.now(UTC).isoformat(timespec="seconds")}
    (plan.dir / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def planned_record(plan: PlannedRun, source: PlannedRun) -> dict[str, Any]:
    """What continuing ``source`` means for ``plan``: the shorter run, its epochs, why it is exact, by hand."""
    why = ["constant lr"] + (["constant EMA momentum"] if plan.config.ssl.method == "byol" else [])
    return {"source": source.key, "source_dir": str(source.dir), "epoch": source.config.optim.epochs,
            "why": " and ".join(why) + ": the first epochs of this run are the shorter run",
            "by_hand": [shlex.join(["mkdir", "-p", str(plan.dir)]),
                        shlex.join(["cp", str(source.dir / CHECKPOINT_NAME), str(plan.dir / CHECKPOINT_NAME)]),
                        plan.command]}


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RECORD_NAME
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


__all__ = ["continue_from", "finished_epoch", "length_dependence", "planned_record", "prefix_sources", "read_record"]
