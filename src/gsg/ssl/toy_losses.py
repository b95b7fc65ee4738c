"""The two toy losses of Zhang et al.'s Conjecture 1 (ICLR 2022, §3, Fig. 4), as stop-gradient-like losses.

With Z = z/‖z‖, o_z the batch centre of Z and r_a = Z_a − o_z the residual of Z_a:

- ``center``:   L = −Z_a · sg(o_z)   — the gradient −∂L/∂Z_a = o_z points along the centre (expected: m_o ↑);
- ``residual``: L = −Z_a · sg(r_a)   — the gradient r_a points along the sample's own residual (m_r ↑).

Both are linear in the normalised online output (not cosines: ‖o_z‖ = m_o and ‖r_a‖ scale the gradient, as
in the paper). The online output is the prediction p (the projection itself with ``model.predictor = none``,
the paper's setting); the vectors o_z and r_a are built from the target-side projections t (SimSiam: the
online projections, detached; BYOL: the EMA encoder's): o_z is the mean over both views of the batch. Each
view is the online side once, as the symmetric loss: L = ½ L(view 0) + ½ L(view 1), averaged over images.

Example::

    >>> import torch
    >>> z = (torch.randn(8, 4), torch.randn(8, 4))
    >>> out = toy_loss("center", p=z, t=(z[0].detach(), z[1].detach()))
    >>> out.per_sample.shape
    torch.Size([8])
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError
from gsg.ssl.stopgrad import PolicyOutput
from gsg.ssl.terms import Terms, stack, symmetric_terms

TOY_LOSSES: tuple[str, ...] = ("center", "residual")
LOSSES: tuple[str, ...] = ("cosine", *TOY_LOSSES)


def unit_rows(views: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The stacked views, each row divided by its norm (float32)."""
    return F.normalize(stack(views).float(), dim=1)


def loss_targets(loss: str, terms: Terms, t_unit: Tensor) -> Tensor:
    """(K, d) the vector each term's online output is dotted with: L = −Σ_k w_k P[on_k] · target_k.

    ``cosine``: T[pos_k] (the other crop's normalised target); ``center``: o_z = mean of the rows of T;
    ``residual``: T[on_k] − o_z. ``t_unit`` are the normalised target rows (detached).
    """
    t_unit = t_unit.detach()
    if loss == "cosine":
        return t_unit[terms.pos]
    if loss not in TOY_LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    o = t_unit.mean(dim=0, keepdim=True)
    if loss == "center":
        return o.expand(terms.on.numel(), -1)
    return t_unit[terms.on] - o


def toy_loss(loss: str, *, p: tuple[Tensor, Tensor], t: tuple[Tensor, Tensor]) -> PolicyOutput:
    """Conjecture 1's ``center`` or ``residual`` loss of a batch of two views; per_sample is per image."""
    if loss not in TOY_LOSSES:
        raise ConfigError(f"toy_loss takes one of {', '.join(TOY_LOSSES)}, got {loss!r}")
    n = p[0].shape[0]
    if n < 1 or any(x.shape != p[0].shape or x.dim() != 2 for x in (*p, *t)):
        raise ConfigError(f"toy_loss needs four (B, d) tensors of one shape with B >= 1, got "
                          f"{sorted({tuple(x.shape) for x in (*p, *t)})}")
    terms = symmetric_terms(n, device=p[0].device)
    targets = loss_targets(loss, terms, unit_rows(t))
    per_term = -(unit_rows(p)[terms.on] * targets).sum(dim=1)  # (2n,): view 0's terms, then view 1's
    per = 0.5 * (per_term[:n] + per_term[n:])
    return PolicyOutput(loss=per.mean(), per_sample=per)


__all__ = ["LOSSES", "TOY_LOSSES", "loss_targets", "toy_loss", "unit_rows"]
