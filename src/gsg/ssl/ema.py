"""BYOL's target network: an exponential moving average of the online encoder's parameters."""

from __future__ import annotations

import math

import torch
from torch import nn

from gsg.errors import ConfigError


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "cosine") -> float:
    """Target momentum at ``step`` (0-based) of ``total_steps``.

    cosine (BYOL paper): m = 1 - (1 - base) * (cos(pi * step / total) + 1) / 2, from ``base`` to 1;
    constant: m = base (the GSG authors' code uses a fixed 0.99).
    """
    if not 0.0 <= base <= 1.0:
        raise ConfigError(f"EMA momentum must be in [0, 1], got {base}")
    if schedule == "constant":
        return base
    if schedule == "cosine":
        frac = min(max(step, 0), total_steps) / max(total_steps, 1)
        return 1.0 - (1.0 - base) * (math.cos(math.pi * frac) + 1.0) / 2.0
    raise ConfigError(f"unknown momentum schedule {schedule!r}; choose cosine or constant")


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """θ_target ← m θ_target + (1 - m) θ_online for every parameter (buffers are not averaged).

    One fused ``_foreach`` call per step instead of a Python loop of small kernels.
    """
    t_params = [p for p in target.parameters()]
    o_params = [p.detach() for p in online.parameters()]
    if len(t_params) != len(o_params):
        raise ConfigError("EMA target and online networks have different structures")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
