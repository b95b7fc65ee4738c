"""The optimiser and the paper's learning-rate rules: lr = base_lr × batch / 256, warm-up, cosine or constant.

``optim.optimizer``:

- ``sgd`` (default; the paper's, for ResNets): momentum ``optim.momentum``, L2 weight decay on every parameter
  (as SimSiam's and GSG's code);
- ``adamw`` (for ViTs and other timm models): ``torch.optim.AdamW`` with betas (``optim.adam_beta1``,
  ``optim.adam_beta2``) = (0.9, 0.999) and eps ``optim.adam_eps`` = 1e-8 (PyTorch's defaults), decoupled weight
  decay ``optim.weight_decay`` on weight matrices and kernels only: biases, normalisation parameters (every
  parameter with fewer than 2 dimensions) and what a timm model lists in ``no_weight_decay()`` (position
  embeddings, class token) get none, as in timm, DINO and MAE.

Both read the lr the same way: ``optim.lr`` if set, else ``optim.base_lr × global batch / 256``; it is the
peak, reached after ``optim.warmup_epochs`` of linear warm-up and followed by the cosine decay to 0 (or kept,
``schedule = constant``). Typical values: SGD base_lr 0.05 (SimSiam); AdamW base_lr 5e-4 with weight decay
0.04-0.05 and 10 warm-up epochs (DINO's ViT recipe), e.g. ``--set optim.optimizer=adamw --set
optim.base_lr=5e-4 --set optim.weight_decay=0.05 --set optim.warmup_epochs=10``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gsg.config import OptimConfig
from gsg.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")


def effective_lr(cfg: OptimConfig, global_batch: int) -> float:
    """The absolute lr: ``cfg.lr`` if set, else base_lr × global batch / 256 (Goyal et al.'s linear rule)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * global_batch / 256


def _no_decay_names(model: nn.Module) -> set[str]:
    """Parameter names (in ``model``) that a submodule's timm-style ``no_weight_decay()`` exempts."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        listed = getattr(module, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{n}" if prefix else n for n in listed()}
    return names


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """SGD or AdamW (module docstring) with a predictor group (``fix_lr`` flag) and everything else.

    The target (BYOL) and DirectPred's set-not-learned weights have no trainable parameters and are skipped.
    """
    pred, rest = [], []
    decay: dict[str, bool] = {}
    exempt = _no_decay_names(model) if cfg.optimizer == "adamw" else set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (pred if name.startswith("predictor.") else rest).append(p)
        decay[name] = p.ndim >= 2 and name not in exempt
    groups: list[dict[str, Any]] = [{"params": rest, "fix_lr": False, "name": "encoder"}]
    if pred:
        groups.append({"params": pred, "fix_lr": cfg.fix_pred_lr, "name": "predictor"})
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        by_id = {id(p): decay[n] for n, p in model.named_parameters() if n in decay}
        split: list[dict[str, Any]] = []
        for g in groups:  # each group in two: with decoupled decay, and without (biases, norms, embeddings)
            for wd, keep in ((cfg.weight_decay, True), (0.0, False)):
                params = [p for p in g["params"] if by_id[id(p)] == keep]
                if params:
                    split.append({**g, "params": params, "weight_decay": wd,
                                  "name": g["name"] + ("" if keep else "_no_decay")})
        return torch.optim.AdamW(split, lr=lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                 weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optim.optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


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
