"""Gradient surgery on the extra gradient (Zhang et al., ICLR 2022, Table 4): train SimSiam with G_e replaced.

``ssl.grad_surgery`` keeps, of each sample's negative gradient at the normalised prediction P_a = basic + G_e
(gsg.analysis.decomposition; G_e = o_e + r_e):

- ``basic``: basic only (G_e removed: expected to collapse);
- ``center``: basic + o_e (the batch centre of G_e);
- ``residual``: basic + r_e;
- ``full``: basic + G_e, the unchanged gradient (a control: bit-identical to ``none``);
- ``none``: no surgery.

Mechanism: :class:`_Replace`, a custom autograd Function, wraps each view's prediction p (identity in the
forward). After the loss is computed, :meth:`GradSurgery.prepare` computes, from the directed terms the loss
used, each row's removed part ``G_e − kept`` (vectorised over the batch). In the backward the Function adds
to the incoming gradient ∂L/∂p the change that replacing −∂L/∂P_a by basic + kept makes:
``w · J^T (G_e − kept)`` with J = (I − P Pᵀ)/‖p‖ the Jacobian of P = p/‖p‖ and w the row's loss weight.

Example::

    >>> import torch
    >>> from gsg.ssl.stopgrad import policy_loss
    >>> from gsg.ssl.terms import symmetric_terms
    >>> z = [torch.randn(6, 4), torch.randn(6, 4)]
    >>> h = torch.nn.Linear(4, 4)
    >>> surgery = GradSurgery("basic")
    >>> p = surgery.wrap([h(zi) for zi in z])
    >>> loss = policy_loss("symmetric", p1=(p[0], p[1]), t1=(z[0], z[1])).loss
    >>> surgery.prepare(p, z, symmetric_terms(6))
    >>> loss.backward()            # h receives the basic gradient only
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError
from gsg.ssl.terms import Terms, stack

SURGERY: tuple[str, ...] = ("none", "basic", "center", "residual", "full")


class _Replace(torch.autograd.Function):
    """Identity forward; backward adds the surgery's correction of this view's rows."""

    @staticmethod
    def forward(ctx: Any, p: Tensor, surgery: GradSurgery, view: int) -> Tensor:
        ctx.surgery, ctx.view = surgery, view
        return p.view_as(p)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return grad + ctx.surgery.correction(ctx.view).to(grad.dtype), None, None


class GradSurgery:
    """One step's surgery: :meth:`wrap` the predictions, compute the loss, :meth:`prepare`, then backward."""

    def __init__(self, keep: str) -> None:
        if keep not in SURGERY or keep == "none":
            raise ConfigError(f"gradient surgery keeps one of {', '.join(SURGERY[1:])}, got {keep!r}")
        self.keep = keep
        self._correction: Tensor | None = None
        self._n = 0

    def wrap(self, p: list[Tensor]) -> list[Tensor]:
        self._correction = None
        return [_Replace.apply(pi, self, v) for v, pi in enumerate(p)]

    def prepare(self, p: list[Tensor] | tuple[Tensor, ...], t: list[Tensor] | tuple[Tensor, ...],
                terms: Terms, *, grad_scale: float = 1.0) -> None:
        """Compute every row's correction from the (detached) predictions, targets and the loss's terms.

        ``grad_scale``: the factor the backward's incoming gradient carries (fp16 loss scaling:
        ``GradScaler.get_scale()``), so that the correction is scaled as the gradient it corrects.
        """
        with torch.no_grad():
            ps = stack(p).detach().float()
            pu, tu = F.normalize(ps, dim=1), F.normalize(stack(t).detach().float(), dim=1)
            w = terms.row_weight()
            online = w > 0
            # per-sample G_e = Σ_k w_k (T[pos_k] − P[pos_k]) / w_r on the online rows (gsg.analysis.decomposition)
            ge = torch.zeros_like(pu).index_add(0, terms.on, terms.weight[:, None] * (tu - pu)[terms.pos])
            ge[online] /= w[online, None]
            center = ge[online].mean(dim=0)
            if self.keep == "basic":
                removed = ge
            elif self.keep == "center":
                removed = ge - center  # r_e
            elif self.keep == "residual":
                removed = center.expand_as(ge).clone()  # o_e
            else:
                removed = torch.zeros_like(ge)
            removed = torch.where(online[:, None], removed, 0.0) * (w[:, None] * grad_scale)
            # map the change at P = p/‖p‖ back to p: J^T v = (v − (P·v) P) / ‖p‖
            corr = (removed - (removed * pu).sum(dim=1, keepdim=True) * pu) / ps.norm(dim=1, keepdim=True).clamp_min(
                1e-12)
        self._correction, self._n = corr, terms.n

    def correction(self, view: int) -> Tensor:
        if self._correction is None:
            raise RuntimeError("GradSurgery: backward ran before prepare(); call prepare(p, t, terms) after the "
                               "loss and before backward")
        return self._correction[view * self._n:(view + 1) * self._n]


__all__ = ["SURGERY", "GradSurgery"]
