"""Zhang et al.'s gradient decomposition (ICLR 2022, §3-4, App. B.2): basic and extra gradient, centre and
residual of the extra gradient, and the de-centring coefficient η_p.

For a loss written on the normalised online outputs P_a = p_a/‖p_a‖ (Z_a without a predictor), the negative
gradient of one sample is split as

    −∂L/∂P_a = basic + G_e,   G_e = o_e + r_e,   o_e = mean over the batch of G_e,   r_e = G_e − o_e.

*basic* is the gradient the same loss gives when every target is replaced by the other crop's normalised
**online** output P_b (the gradient of a plain Siamese network without predictor: Zhang et al.'s "basic
gradient"). For SimSiam, −∂(−P_a·sg Z_b)/∂P_a = Z_b = P_b + (Z_b − P_b), so basic = P_b and G_e = Z_b − P_b,
o_e = o_z − o_p; without a predictor P = Z and G_e = 0 exactly; for BYOL the target is the EMA encoder's, so
G_e = Z_b^ema − P_b (not 0 even without a predictor). The de-centring coefficient is the scalar η_p for which
o_e − η_p o_p ⊥ o_p, i.e. η_p = (o_e·o_p)/(o_p·o_p) (Fig. 5a: ≈ −0.5 for SimSiam); o_p is the batch centre of
the online outputs P over every crop.

How gsg computes it (exact for every method and policy): the batch loss is rebuilt from the directed terms
it used (:mod:`gsg.ssl.terms`: which crop of each image is the online side "a" under the policy's decisions,
and the weight) as a function of the normalised outputs, L(P) = −Σ_k w_k P[on_k]·target_k, which equals the
training loss; ``torch.autograd.grad`` gives −∂L/∂P on every row, divided by the row's total weight (a
per-sample gradient); rows that are only targets (GSG's "b" crops) receive no gradient and are left out.

GSG seen through it: GSG still compares each crop only with the other crop of the same image, so G_e keeps its
SimSiam form; what GSG changes is which crop is "a". :func:`selection_decomposition` measures that change: the
difference between the policy's gradient and the symmetric loss's at the same outputs, n·(−∂L/∂P + ∂L_sym/∂P)
on every row, with its centre, residual and η (``sel_*``). Random selection averages to no centre; GSG's choice
(the crops nearest to the partner image get the predictor) pulls the crops nearest another image towards the
other crop, which de-centres (η_sel < 0); reverse does the opposite.

Example — a triplet loss −Z_a·sg(Z_b − Z_n) has G_e = −Z_n::

    >>> import torch, torch.nn.functional as F
    >>> za, zb, zn = (F.normalize(torch.randn(5, 3), dim=1) for _ in range(3))
    >>> g = negative_gradient(lambda x: -(x * (zb - zn)).sum(1).mean(), za) * 5   # per-sample
    >>> d = decompose(g, basic=zb, o_p=za.mean(0))
    >>> torch.allclose(d.extra, -zn)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from gsg.errors import ConfigError
from gsg.ssl.stopgrad import derangement, perfect_matching, policy_loss
from gsg.ssl.terms import Terms, policy_terms, symmetric_terms
from gsg.ssl.toy_losses import loss_targets, unit_rows

Views = list[Tensor] | tuple[Tensor, ...]


def negative_gradient(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """−∂L/∂X at X by autograd, for a loss written as a function of the normalised outputs X (N, d).

    X is taken as a detached float32 leaf: nothing flows back into the model, the result is (N, d).
    """
    leaf = x.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(leaf), leaf)
    return -g


def eta(o_e: Tensor, o_p: Tensor) -> float:
    """The de-centring coefficient: the η with (o_e − η o_p) ⊥ o_p, i.e. (o_e·o_p)/(o_p·o_p); NaN if o_p = 0."""
    den = float(o_p.double().square().sum())
    return float(o_e.double() @ o_p.double()) / den if den > 0 else float("nan")


@dataclass
class GradientDecomposition:
    """The per-sample decomposition of one batch's negative gradient (rows: the samples that receive one)."""

    grad: Tensor  # (M, d) −∂L/∂P_a per sample
    basic: Tensor  # (M, d)
    extra: Tensor  # (M, d) G_e = grad − basic
    center: Tensor  # (d,) o_e = mean of G_e
    residual: Tensor  # (M, d) r_e = G_e − o_e
    o_p: Tensor  # (d,) centre of the online outputs

    def metrics(self, prefix: str = "ge") -> dict[str, float]:
        """Norms (per-sample norms averaged over the batch), the centre/residual ratio, η_p and cos(o_e, o_p).

        Keys ``{prefix}_norm``, ``{prefix}_center_norm``, ``{prefix}_residual_norm``,
        ``{prefix}_center_residual_ratio`` (left out when the residual is 0), ``{prefix}_eta`` (η; left out when
        o_p = 0) and ``{prefix}_center_cos`` (left out when o_e or o_p is 0).
        """
        c, r = float(self.center.norm()), float(self.residual.norm(dim=1).mean())
        op = float(self.o_p.norm())
        out = {f"{prefix}_norm": float(self.extra.norm(dim=1).mean()), f"{prefix}_center_norm": c,
               f"{prefix}_residual_norm": r}
        if r > 0:
            out[f"{prefix}_center_residual_ratio"] = c / r
        if op > 0:
            out[f"{prefix}_eta"] = eta(self.center, self.o_p)
            if c > 0:
                out[f"{prefix}_center_cos"] = float(self.center.double() @ self.o_p.double()) / (c * op)
        return out


def decompose(grad: Tensor, basic: Tensor, o_p: Tensor) -> GradientDecomposition:
    """Split per-sample negative gradients (M, d) into basic + o_e + r_e (Zhang et al., App. B.2)."""
    if grad.dim() != 2 or grad.shape != basic.shape or o_p.shape != grad.shape[1:] or grad.shape[0] == 0:
        raise ConfigError(f"decompose needs grad and basic of one shape (M, d), M >= 1, and o_p (d,); got "
                          f"{tuple(grad.shape)}, {tuple(basic.shape)}, {tuple(o_p.shape)}")
    extra = grad.float() - basic.float()
    center = extra.mean(dim=0)
    return GradientDecomposition(grad=grad.float(), basic=basic.float(), extra=extra, center=center,
                                 residual=extra - center, o_p=o_p.float())


def _linear_loss(terms: Terms, targets: Tensor) -> Callable[[Tensor], Tensor]:
    def loss(x: Tensor) -> Tensor:  # −Σ_k w_k x[on_k]·target_k
        return -(terms.weight * (x[terms.on] * targets).sum(dim=1)).sum()
    return loss


def loss_decomposition(p: Views, t: Views, terms: Terms, *, loss: str = "cosine") -> GradientDecomposition:
    """The decomposition of the batch loss the terms describe, on its online rows.

    ``p``: the online outputs of every view (predictions; projections without a predictor), ``t``: the targets
    (SimSiam: the online projections; BYOL: the EMA encoder's; symmetric / inverse predictor: the target-side
    head's output), each (n, d). ``loss``: ``cosine`` (every policy of gsg.ssl.stopgrad) or a toy loss of
    gsg.ssl.toy_losses. Works on detached copies: the model and the random streams are untouched.
    """
    _check_views(p, t, terms)
    pu, tu = unit_rows(p).detach(), unit_rows(t).detach()
    w = terms.row_weight()
    online = w > 0
    scale = w[online, None]
    grad = negative_gradient(_linear_loss(terms, loss_targets(loss, terms, tu)), pu)[online] / scale
    basic = negative_gradient(_linear_loss(terms, pu[terms.pos]), pu)[online] / scale
    return decompose(grad, basic, pu.mean(dim=0))


def selection_decomposition(p: Views, t: Views, terms: Terms, reference: Terms) -> GradientDecomposition:
    """What a pairing policy's choice adds to the gradient: n·(−∂L/∂P + ∂L_ref/∂P) on every row (basic 0),
    with ``reference`` the symmetric terms of the same crops (cosine loss)."""
    _check_views(p, t, terms)
    pu, tu = unit_rows(p).detach(), unit_rows(t).detach()
    g = negative_gradient(_linear_loss(terms, tu[terms.pos]), pu)
    g_ref = negative_gradient(_linear_loss(reference, tu[reference.pos]), pu)
    sel = terms.n * (g - g_ref)
    return decompose(sel, torch.zeros_like(sel), pu.mean(dim=0))


def decomposition_metrics(d: GradientDecomposition) -> dict[str, float]:
    """The logged keys of a loss's decomposition: the ``ge_*`` metrics, ``eta_p``, ``grad_norm``, ``basic_norm``
    and ``p_center_norm`` (‖o_p‖)."""
    out = d.metrics("ge")
    if "ge_eta" in out:
        out["eta_p"] = out.pop("ge_eta")
    out.update(grad_norm=float(d.grad.norm(dim=1).mean()), basic_norm=float(d.basic.norm(dim=1).mean()),
               p_center_norm=float(d.o_p.norm()))
    return out


def batch_metrics(p: Views, t: Views, terms: Terms, *, loss: str = "cosine",
                  reference: Terms | None = None) -> dict[str, float]:
    """What the training loop logs each epoch (and ``gsg diagnose`` reports): the ``ge_*`` metrics of
    :func:`loss_decomposition`, ``grad_norm``, ``basic_norm``, ``p_center_norm`` (‖o_p‖), ``eta_p``, and, given
    the symmetric ``reference`` terms of a pairing policy, the ``sel_*`` metrics of
    :func:`selection_decomposition`."""
    out = decomposition_metrics(loss_decomposition(p, t, terms, loss=loss))
    if reference is not None:
        out.update(selection_decomposition(p, t, terms, reference).metrics("sel"))
    return out


def policy_batch_metrics(policy: str, p: Views, t: Views, *, loss: str = "cosine", pairing: str = "matching",
                         generator: torch.Generator | None = None) -> dict[str, float]:
    """:func:`batch_metrics` of the loss ``policy`` gives this batch (two views, or four: the last two are fresh
    crops of the images ``partner`` pairs with, as in training; pass them in that order), drawing the pairs or
    the partner from ``generator`` as the training step does. For analyses outside the training loop
    (``gsg diagnose``)."""
    n, views = p[0].shape[0], len(p)
    if loss != "cosine" or policy == "symmetric":
        return batch_metrics(p, t, symmetric_terms(n, views=views, device=p[0].device), loss=loss)
    device = p[0].device
    if views == 4:
        res = policy_loss(policy, p1=(p[0], p[1]), t1=(t[0], t[1]), p2=(p[2], p[3]), t2=(t[2], t[3]),  # type: ignore
                          generator=generator)
        terms = policy_terms(policy, n, views=4, cases=res.cases)
    else:
        pairs = perfect_matching(n, generator=generator, device=device) if pairing == "matching" else None
        partner = derangement(n, generator=generator, device=device) if pairing != "matching" else None
        res = policy_loss(policy, p1=(p[0], p[1]), t1=(t[0], t[1]), pairs=pairs, partner=partner,  # type: ignore
                          generator=generator)
        terms = policy_terms(policy, n, cases=res.cases, pairs=pairs, partner=partner)
    return batch_metrics(p, t, terms, reference=symmetric_terms(n, views=views, device=device))


def _check_views(p: Views, t: Views, terms: Terms) -> None:
    shapes = {tuple(x.shape) for x in (*p, *t)}
    if len(p) != terms.views or len(t) != terms.views or len(shapes) != 1 or next(iter(shapes))[0] != terms.n:
        raise ConfigError(f"the terms describe {terms.views} views of {terms.n} rows; got {len(p)} outputs and "
                          f"{len(t)} targets of shapes {sorted(shapes)}")


__all__ = ["GradientDecomposition", "batch_metrics", "decompose", "decomposition_metrics", "eta", "loss_decomposition",
           "negative_gradient", "policy_batch_metrics", "selection_decomposition"]
