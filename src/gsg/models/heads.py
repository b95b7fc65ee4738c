"""Projector and predictor heads (GSG paper, Appendix C).

- ImageNet projector: 3 FC layers of ``dim``, BN+ReLU after the first two, BN only after the last.
- CIFAR projector: 2 FC layers (in→dim, dim→dim), BN+ReLU after the first, BN only after the last.
- Predictor ``mlp``: dim → hidden (BN, ReLU) → dim, a bottleneck (2048→512→2048 in the paper).
- Predictor ``linear``: one dim×dim layer without bias (Tian et al.'s linear predictor).
- Predictor ``none``: the identity (the no-predictor experiment of Fig. 5).
- Predictor ``directpred`` / ``directcopy``: set from the correlation of its inputs (gsg.models.directpred).
- Zhang et al.'s architectures (ICLR 2022, Fig. 2, §5): ``symmetric`` (the MLP h on both branches, the target is
  sg(h(z))), ``inverse`` (h on the online branch, a learnable h^{-1} of the same architecture on the target branch,
  fed the detached projection), ``bias`` (h(z) = z + b, a learnable bias only). A predictor that changes the
  target side has a ``target_side(z, p)`` method, which gsg.ssl.siamese calls to build the SimSiam target.

The projector's last BatchNorm matters for collapse without a predictor, so it is a choice:
``affine`` (learnable scale and shift, as lightly's heads), ``plain`` (no affine parameters, as the
official SimSiam/GSG ImageNet code ``BatchNorm1d(dim, affine=False)``) or ``none``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from gsg.errors import ConfigError

PREDICTORS = ("mlp", "linear", "none", "directpred", "directcopy", "symmetric", "inverse", "bias")
# Predictors whose target_side replaces the SimSiam target (BYOL's target is the EMA encoder: not defined there).
TARGET_SIDE = ("symmetric", "inverse")
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


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
    )


class BiasPredictor(nn.Module):
    """h(z) = z + b with a learnable b (starts at 0): "a single bias layer is sufficient" (Zhang et al. §5)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        return z + self.bias


class SymmetricPredictor(nn.Module):
    """Zhang et al.'s "symmetric predictor" (Fig. 2b): h on both branches, the target is sg(h(z_b)).

    The target reuses the prediction of the other view (h(z_b) is computed for that view anyway), detached: no
    second pass through h, so BatchNorm statistics are those of a plain SimSiam step.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.h = _mlp(dim, hidden)

    def forward(self, z: Tensor) -> Tensor:
        return self.h(z)

    def target_side(self, z: Tensor, p: Tensor) -> Tensor:
        return p.detach()


class InversePredictor(nn.Module):
    """Zhang et al.'s "inverse predictor" (Fig. 2c): h on the online branch, h^{-1} on the stop-gradient branch.

    The target is h^{-1}(sg z_b): the encoder gets no gradient through it, h^{-1} does. h^{-1} has h's
    architecture (as the paper) and is trained jointly by the same similarity loss, D(h(z_a), h^{-1}(sg z_b)),
    through its target argument: the stop-gradient policies detach every target, so the training loop adds
    that loss's gradient with respect to h^{-1} (:func:`gsg.ssl.terms.target_loss` on the policy's terms).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.h = _mlp(dim, hidden)
        self.inverse = _mlp(dim, hidden)

    def forward(self, z: Tensor) -> Tensor:
        return self.h(z)

    def target_side(self, z: Tensor, p: Tensor) -> Tensor:
        return self.inverse(z.detach())


def predictor(kind: str, dim: int, *, hidden: int = 512, directpred_rho: float = 0.3,
              directpred_eps: float = 0.1, directpred_freq: int = 1) -> nn.Module:
    """Build a predictor head of the given kind (see module docstring)."""
    if kind == "mlp":
        return _mlp(dim, hidden)
    if kind == "symmetric":
        return SymmetricPredictor(dim, hidden)
    if kind == "inverse":
        return InversePredictor(dim, hidden)
    if kind == "bias":
        return BiasPredictor(dim)
    if kind == "linear":
        return nn.Linear(dim, dim, bias=False)
    if kind == "none":
        return nn.Identity()
    if kind in ("directpred", "directcopy"):
        from gsg.models.directpred import DirectPredictor

        return DirectPredictor(dim, mode=kind, rho=directpred_rho, eps=directpred_eps, freq=directpred_freq)
    raise ConfigError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
