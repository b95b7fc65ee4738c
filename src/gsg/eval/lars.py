"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017) for the ImageNet linear probe.

For each parameter tensor ``w`` with gradient ``g`` (per step)::

    d  = g + wd · w                                   # weight decay folded into the update
    q  = η · ‖w‖ / ‖d‖    if ‖w‖ > 0 and ‖d‖ > 0, else 1  # trust ratio (η = trust_coefficient)
    mu = momentum · mu + q · d                         # heavy-ball momentum buffer, starts at 0
    w  = w − lr · mu

Parameters with ``ndim <= 1`` (biases, BatchNorm scales and shifts) are *excluded* by default: they take
plain momentum SGD with ``d = g`` (no weight decay, ``q = 1``), as in the LARS of MoCo v3 / MAE that
later SimSiam-style linear probes use. The official SimSiam ``main_lincls.py`` wraps SGD in apex's
``LARC(trust_coefficient=0.001, clip=False)``, which adapts every tensor and uses the ratio
``η‖w‖ / (‖g‖ + wd‖w‖)``; with the linear probe's ``wd = 0`` both ratios are identical and the only
difference is the classifier bias, which apex adapts once it is non-zero. Pass ``exclude_1d=False`` to
adapt every tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from gsg.errors import ConfigError


class LARS(torch.optim.Optimizer):
    """Momentum SGD with LARS trust-ratio scaling; see the module docstring for the exact update.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2, 2))
        >>> opt = LARS([w], lr=0.1, momentum=0.9, trust_coefficient=0.001)
        >>> w.grad = torch.ones(2, 2); opt.step()
        >>> round(w[0, 0].item(), 6)  # 1 - 0.1 * 0.001 * (2 / 2) * 1
        0.9999
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        *,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        exclude_1d: bool = True,
    ) -> None:
        if lr < 0:
            raise ConfigError(f"LARS learning rate must be non-negative, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"LARS momentum must be in [0, 1), got {momentum}")
        if weight_decay < 0:
            raise ConfigError(f"LARS weight decay must be non-negative, got {weight_decay}")
        if trust_coefficient <= 0:
            raise ConfigError(f"LARS trust coefficient must be positive, got {trust_coefficient}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, exclude_1d=exclude_1d)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            eta, exclude_1d = group["trust_coefficient"], group["exclude_1d"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not (exclude_1d and p.ndim <= 1):
                    d = d.add(p, alpha=wd) if wd != 0 else d.clone()
                    w_norm = torch.linalg.vector_norm(p)
                    d_norm = torch.linalg.vector_norm(d)
                    # torch.where keeps this on-device (no .item() sync per tensor).
                    q = torch.where((w_norm > 0) & (d_norm > 0), eta * w_norm / d_norm,
                                    torch.ones_like(w_norm))
                    d.mul_(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(momentum).add_(d)
                p.add_(mu, alpha=-lr)
        return loss
