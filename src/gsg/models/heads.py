"""Projector and predictor heads (GSG paper, Appendix C).

- ImageNet projector: 3 FC layers of ``dim``, BN+ReLU after the first two, BN only after the last.
- CIFAR projector: 2 FC layers (in→dim, dim→dim), BN+ReLU after the first, BN only after the last.
- Predictor ``mlp``: dim → hidden (BN, ReLU) → dim, a bottleneck (2048→512→2048 in the paper).
- Predictor ``linear``: one dim×dim layer without bias (Tian et al.'s linear predictor).
- Predictor ``none``: the identity (the no-predictor experiment of Fig. 5).
- Predictor ``directpred`` / ``directcopy``: set from the correlation of its inputs (gsg.models.directpred).

The projector's last BatchNorm matters for collapse without a predictor, so it is a choice:
``affine`` (learnable scale and shift, as lightly's heads), ``plain`` (no affine parameters, as the
official SimSiam/GSG ImageNet code ``BatchNorm1d(dim, affine=False)``) or ``none``.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from gsg.errors import ConfigError

PREDICTORS = ("mlp", "linear", "none", "directpred", "directcopy")
LAST_BN = ("affine", "plain", "none")
LastBN = Literal["affine", "plain", "none"]


def projector(in_dim: int, dim: int, *, layers: int = 2, hidden: int | None = None,
              last_bn: LastBN = "plain") -> nn.Sequential:
    """The projection MLP: ``layers`` FC layers, BN+ReLU between them, BN (per ``last_bn``) at the end."""
    if layers < 1:
        raise ConfigError(f"projector needs at least 1 layer, got {layers}")
    if last_bn not in LAST_BN:
        raise ConfigError(f"unknown projector last_bn {last_bn!r}; choose one of {', '.join(LAST_BN)}")
    hidden = hidden or dim
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    # The bias of the last layer is redundant when a BN follows it.
    mods.append(nn.Linear(d, dim, bias=last_bn == "none"))
    if last_bn != "none":
        mods.append(nn.BatchNorm1d(dim, affine=last_bn == "affine"))
    return nn.Sequential(*mods)


def predictor(kind: str, dim: int, *, hidden: int = 512, directpred_rho: float = 0.3,
              directpred_eps: float = 0.1, directpred_freq: int = 1) -> nn.Module:
    """Build a predictor head of the given kind (see module docstring)."""
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
    if kind == "linear":
        return nn.Linear(dim, dim, bias=False)
    if kind == "none":
        return nn.Identity()
    if kind in ("directpred", "directcopy"):
        from gsg.models.directpred import DirectPredictor

        return DirectPredictor(dim, mode=kind, rho=directpred_rho, eps=directpred_eps, freq=directpred_freq)
    raise ConfigError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
