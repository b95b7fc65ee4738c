"""Divergence checks: a non-finite loss, weight, BatchNorm statistic or momentum stops training on every rank
together, with a message that says which checkpoint is kept and what to change."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from gsg.errors import TrainingDiverged
from gsg.train.distributed import any_rank
from gsg.train.resume import saved_epoch

if TYPE_CHECKING:
    from gsg.train.loop import Trainer


def kept_message(trainer: Trainer) -> str:
    """The end of a divergence message: the checkpoint that survives, and what to try."""
    kept = (f"the last good checkpoint {trainer.ckpt_path} (epoch {saved_epoch(trainer.ckpt_path)}) is kept"
            if trainer.ckpt_path.is_file() else "no checkpoint had been written yet")
    if trainer.cfg.run.on_nonfinite == "rollback" and trainer.rollbacks:
        return (f"{kept}, after {trainer.rollbacks} rollbacks to it with the lr scaled down to "
                f"{trainer.state.lr_scale:g}. Lower --lr or check the data.")
    return f"{kept}. Lower --lr, check the data, or set run.on_nonfinite = 'rollback'."


def check_finite(trainer: Trainer, first_bad: Tensor) -> None:
    """Raise TrainingDiverged if a step's loss was not finite; under DDP on every rank together.

    ``first_bad``: the 0-d long tensor of the first bad step this epoch, -1 if none. A NaN on one rank reaches
    the others one step later through the gradient all-reduce; deciding per rank would roll the ranks back at
    different steps and leave them out of step (docs/gpu.md, F2).
    """
    if trainer.dist.enabled:  # (any rank bad, earliest bad step) in one all-reduce
        never = torch.iinfo(torch.long).max
        both = torch.stack([first_bad, -torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad)])
        torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
        first_bad = torch.where(both[0] >= 0, -both[1], both[0])
    bad_step = int(first_bad)
    if bad_step >= 0:
        raise TrainingDiverged(
            f"the loss became NaN or infinite at step {bad_step + 1} (epoch {trainer.state.epoch + 1}); training "
            f"stopped and {kept_message(trainer)}")


def check_weights_finite(trainer: Trainer) -> None:
    """Weights, BatchNorm statistics and momentum can overflow while the loss still looks finite."""
    named = [(k, v) for k, v in trainer.model.state_dict().items() if v.is_floating_point()]
    named += [(f"momentum of {n}", trainer.optimizer.state[p]["momentum_buffer"])
              for n, p in trainer.model.named_parameters()
              if trainer.optimizer.state.get(p, {}).get("momentum_buffer") is not None]
    ok = torch.stack([torch.isfinite(v).all() for _, v in named])
    bad = [k for (k, _), good in zip(named, ok.tolist(), strict=True) if not good]
    # Per-process BatchNorm statistics (gloo) can differ between ranks: every rank decides together.
    if trainer.dist.enabled and bool(any_rank(bool(bad), trainer.dist, trainer.device)) and not bad:
        bad = ["weights or statistics of another process"]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise TrainingDiverged(
            f"the model's {', '.join(bad[:3])}{more} became NaN or infinite by step {trainer.state.step} (epoch "
            f"{trainer.state.epoch + 1}); training stopped and {kept_message(trainer)}")
