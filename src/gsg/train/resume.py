"""Checkpoints of a pretraining run: what one holds, writing it for all ranks, and continuing from it.

A checkpoint is written atomically (gsg.checkpoint.save_atomic) by rank 0 with every rank's augmentation RNG,
so that a resumed run continues each rank's stream exactly; the same reload serves the rollback after a
non-finite loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gsg import __version__
from gsg.checkpoint import FORMAT_KEY, FORMAT_VERSION, check_resumable, load_checkpoint, save_atomic
from gsg.errors import CheckpointError
from gsg.ssl.build import backbone_spec
from gsg.train import rng
from gsg.train.distributed import barrier

if TYPE_CHECKING:
    from gsg.train.loop import Trainer

log = logging.getLogger("gsg.train")  # the loop's logger name, which the log lines and tests filter on
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of `epoch` already done (mid-epoch checkpoint on a signal)
    lr_scale: float = 1.0  # lowered by rollbacks after a non-finite loss
    history: list[dict[str, Any]] = field(default_factory=list)
    # This rank's running sums of the epoch in progress (loss, z_std, GSG case shares, batches, seconds), kept
    # in a mid-epoch checkpoint so that a resumed epoch's means cover the whole epoch, as without the stop.
    partial: dict[str, Any] | None = None


def build_checkpoint(trainer: Trainer, rng_states: list[dict[str, Any]] | None = None,
                     partials: list[dict[str, Any] | None] | None = None) -> dict[str, Any]:
    rng_states = rng_states or [rng.capture(trainer.aug_gen, trainer.device)]
    partials = partials or [trainer.state.partial]
    return {
        FORMAT_KEY: FORMAT_VERSION,
        "gsg_version": __version__,
        "config": trainer.cfg.to_dict(),
        "backbone": backbone_spec(trainer.model, trainer.image_size),
        "data": {"dataset": trainer.cfg.data.dataset, "mean": list(trainer.train_ds.mean),
                 "std": list(trainer.train_ds.std), "image_size": trainer.image_size,
                 "channels": trainer.train_ds.channels},
        "model": {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()},
        "train_state": {
            "optimizer": trainer.optimizer.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "epoch": trainer.state.epoch, "step": trainer.state.step,
            "batch_in_epoch": trainer.state.batch_in_epoch, "lr_scale": trainer.state.lr_scale,
            "rng": rng_states[0], "rng_per_rank": rng_states, "world_size": trainer.dist.world_size,
            "probe": trainer.probe.state_dict() if trainer.probe is not None else None,
            "partial_per_rank": partials if trainer.state.batch_in_epoch > 0 else None,
        },
        "metrics": {"history": trainer.state.history},
    }


def save_checkpoint(trainer: Trainer) -> None:
    """Write the checkpoint (collective: every rank must call it)."""
    states: list[Any] = [rng.capture(trainer.aug_gen, trainer.device)]
    partials: list[Any] = [trainer.state.partial]
    if trainer.dist.enabled:  # every rank's RNG, so that each resumes its own augmentation and pairing stream
        states = [None] * trainer.dist.world_size
        torch.distributed.all_gather_object(states, rng.capture(trainer.aug_gen, trainer.device))
        partials = [None] * trainer.dist.world_size  # and its own running epoch sums
        torch.distributed.all_gather_object(partials, trainer.state.partial)
    if trainer.dist.is_main:
        save_atomic(trainer.checkpoint_dict(states, partials), trainer.ckpt_path)
    barrier(trainer.dist)


def restore(trainer: Trainer) -> None:
    """Load ``trainer.ckpt_path`` into the trainer: weights, optimizer, scaler, progress, RNG and probe."""
    if not trainer.ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {trainer.ckpt_path}; start without --resume or point "
                              "--out at the run to continue")
    ckpt = load_checkpoint(trainer.ckpt_path, map_location="cpu")
    check_resumable(ckpt, trainer.ckpt_path)
    check_compatible(trainer, ckpt)
    try:
        trainer.model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {trainer.ckpt_path} does not fit this model: {exc}") from exc
    ts = ckpt["train_state"]
    trainer.optimizer.load_state_dict(ts["optimizer"])
    trainer.scaler.load_state_dict(ts["scaler"])
    per_rank = ts.get("rng_per_rank")
    same_world = isinstance(per_rank, list) and len(per_rank) == trainer.dist.world_size
    # A checkpoint from before these sums existed, or from another world size: the resumed epoch's means then
    # cover only the batches after the resume (the weights are exact either way).
    partials = ts.get("partial_per_rank")
    partial = partials[trainer.dist.rank] if same_world and isinstance(partials, list) else None
    trainer.state = TrainState(epoch=ts["epoch"], step=ts["step"], batch_in_epoch=ts["batch_in_epoch"],
                               lr_scale=ts["lr_scale"], history=list(ckpt["metrics"]["history"]), partial=partial)
    # Reseeded only when the checkpoint's generator ran on another device type (rng.restore warns).
    reseed = (trainer.cfg.run.seed * 7919 + trainer.dist.rank) * 1_000_003 + trainer.state.step
    rng.restore(per_rank[trainer.dist.rank] if same_world else ts["rng"], trainer.aug_gen, reseed=reseed,
                device=trainer.device)
    if trainer.probe is not None:
        if ts.get("probe") is None:
            log.warning("%s has no online-probe state (made with the probe off): the probe starts afresh",
                        trainer.ckpt_path)
        else:
            trainer.probe.load_state_dict(ts["probe"])  # rank 0's, whose weights every rank shares
            if partial is not None and partial.get("probe_counts") is not None:
                trainer.probe.load_running_counts(partial["probe_counts"])  # this rank's own epoch counts
    log.info("resumed from %s at epoch %d, step %d", trainer.ckpt_path, trainer.state.epoch, trainer.state.step)


def check_compatible(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    saved, now, defaults = ckpt["config"], trainer.cfg.to_dict(), type(trainer.cfg)().to_dict()
    # Anything that changes the model, the data or the optimisation must match for an exact resume.
    fixed = [("model", k) for k in now["model"]] + [("ssl", k) for k in now["ssl"]] + [
        ("data", "dataset"), ("data", "subset"), ("data", "image_size"), ("optim", "batch_size"),
        ("optim", "base_lr"), ("optim", "lr"), ("optim", "schedule"), ("optim", "weight_decay"),
        ("optim", "optimizer"), ("optim", "adam_beta1"), ("optim", "adam_beta2"), ("optim", "adam_eps"),
        ("run", "seed")]
    # a key the checkpoint predates had its default then
    diffs = [f"{s}.{k}: checkpoint {saved.get(s, {}).get(k, defaults[s][k])!r} vs now {now[s][k]!r}"
             for s, k in fixed if saved.get(s, {}).get(k, defaults[s][k]) != now[s][k]]
    if diffs:
        raise CheckpointError(f"checkpoint {trainer.ckpt_path} was made with a different config: "
                              + "; ".join(diffs) + ". Resume with the same settings or use a new --out.")
    if ckpt["train_state"].get("world_size", 1) != trainer.dist.world_size:
        log.warning("resuming with %d processes, checkpoint used %d: the batch order changes",
                    trainer.dist.world_size, ckpt["train_state"]["world_size"])


def saved_epoch(ckpt_path: Path) -> int | str:
    """The epoch of the checkpoint at ``ckpt_path``, or "?" where it cannot be read (for messages)."""
    try:
        return int(load_checkpoint(ckpt_path)["train_state"]["epoch"])
    except CheckpointError:
        return "?"


def rollback(trainer: Trainer) -> None:
    """After a non-finite loss: reload the last checkpoint and halve the lr scale it had."""
    scale = trainer.state.lr_scale * 0.5
    log.warning("non-finite loss: rolling back to %s with the lr scaled by %.3g", trainer.ckpt_path, scale)
    restore(trainer)
    trainer.state.lr_scale = scale
