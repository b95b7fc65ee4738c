"""SGD with the paper's learning-rate rules: lr = base_lr × batch / 256, cosine or constant schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from gsg.config import OptimConfig


def effective_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The absolute lr: ``cfg.lr`` if set, else base_lr × global batch / 256 (Goyal et al.'s linear rule)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * global_batch / 256


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.SGD:
    """SGD (momentum, weight decay) with two groups: predictor (``fix_lr`` flag) and everything else.

    The target (BYOL) and DirectPred's set-not-learned weights have no trainable parameters and are skipped.
    """
    pred, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (pred if name.startswith("predictor.") else rest).append(p)
    groups = [{"params": rest, "fix_lr": False, "name": "encoder"}]
    if pred:
        groups.append({"params": pred, "fix_lr": cfg.fix_pred_lr, "name": "predictor"})
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then cosine to 0 or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Apply the schedule; groups flagged ``fix_lr`` keep the base lr (SimSiam's --fix-pred-lr)."""
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = base_lr if group.get("fix_lr") else lr
    return lr
