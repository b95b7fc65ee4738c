"""The directed terms of a batch loss: which online output is compared with which target, with what weight.

Every loss gsg trains is a weighted sum of directed terms ``w_k · D(p[on_k], sg t[pos_k])``: the online
output (prediction) of one crop against the stop-gradient target of the *other* crop of the same image. The
stop-gradient policy only decides which crop of an image is the online side ("a") and which the target side
("b"), and with what weight. :class:`Terms` records that structure on the rows of the stacked views
``[view 0; view 1; (view 2; view 3)]`` (row ``v·n + i`` is view ``v`` of batch row ``i``), so that analyses
(gsg.analysis.decomposition), gradient surgery (gsg.ssl.surgery) and the inverse predictor's objective can
use exactly the terms the loss used, for every policy:

- ``symmetric`` (eq. 1): both crops are "a" once, weight ½/n each; with four crops (``views = fresh``) both
  pairs of crops, ¼/n each;
- ``guided`` / ``random`` / ``reverse`` on matched pairs: one term per image, weight 1/n, the crop the
  pair's case gives the predictor is "a"; an image in no pair (an odd batch) takes the symmetric terms;
- on the cycle (``pairing = cycle``): each row's two images take one term each, weight ½/n; an image is in
  two rows, so it can receive two terms;
- with four crops: row i's image 1 is crops 0/1 of image i, image 2 crops 2/3 of its partner, ½/n each.

Example — the terms of a symmetric loss reproduce it::

    >>> import torch
    >>> from gsg.ssl.stopgrad import negative_cosine, policy_loss
    >>> p, t = (torch.randn(4, 8), torch.randn(4, 8)), (torch.randn(4, 8), torch.randn(4, 8))
    >>> terms = symmetric_terms(4)
    >>> torch.allclose(terms_loss(terms, p, t), policy_loss("symmetric", p1=p, t1=t).loss)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gsg.errors import ConfigError
from gsg.ssl.stopgrad import negative_cosine


@dataclass(frozen=True)
class Terms:
    """Directed terms on ``views × n`` stacked rows: term k compares online row ``on[k]`` with the target of
    row ``pos[k]`` (the other crop of the same image) with weight ``weight[k]``; the weights sum to 1."""

    on: Tensor  # (K,) long
    pos: Tensor  # (K,) long
    weight: Tensor  # (K,) float32
    n: int  # images per view (batch rows)
    views: int  # 2 (reuse) or 4 (fresh)

    @property
    def rows(self) -> int:
        return self.n * self.views

    def row_weight(self) -> Tensor:
        """(rows,) total weight of the terms in which each row is the online side (0: only a target)."""
        w = torch.zeros(self.rows, dtype=self.weight.dtype, device=self.weight.device)
        return w.index_add(0, self.on, self.weight)


def _cat(*parts: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def _sym(images: Tensor, n: int, first: int, w: float) -> tuple[Tensor, Tensor, Tensor]:
    """Views ``first`` and ``first + 1`` of ``images``, each the online side once, weight ``w``."""
    a, b = first * n + images, (first + 1) * n + images
    return torch.cat([a, b]), torch.cat([b, a]), torch.full((2 * images.numel(),), w, device=images.device)


def _directed(images: Tensor, n: int, choice: Tensor, first: int, w: float) -> tuple[Tensor, Tensor, Tensor]:
    """One term per image: view ``first + choice`` is online, the other view of the pair is the target."""
    c = choice.long()
    return ((first + c) * n + images, (first + 1 - c) * n + images,
            torch.full((images.numel(),), w, device=images.device))


def symmetric_terms(n: int, *, views: int = 2, device: torch.device | str = "cpu") -> Terms:
    """Eq. 1: ½ D(p_a, sg t_b) + ½ D(p_b, sg t_a) per image; with 4 views, averaged over both pairs of crops."""
    _check(n, views)
    idx = torch.arange(n, device=device)
    if views == 2:
        on, pos, w = _sym(idx, n, 0, 0.5 / n)
    else:
        on, pos, w = _cat(_sym(idx, n, 0, 0.25 / n), _sym(idx, n, 2, 0.25 / n))
    return Terms(on, pos, w.float(), n, views)


def matched_terms(n: int, pairs: Tensor, cases: Tensor) -> Terms:
    """Matched pairs (``ssl.pairing = matching``): one term per paired image, the symmetric terms for the rest."""
    _check(n, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    parts = [_directed(i, n, cases // 2, 0, 1.0 / n), _directed(j, n, cases % 2, 0, 1.0 / n)]
    if 2 * pairs.shape[0] < n:
        paired = torch.zeros(n, dtype=torch.bool, device=pairs.device).index_fill(0, pairs.reshape(-1), True)
        parts.append(_sym(torch.nonzero(~paired).flatten(), n, 0, 0.5 / n))
    on, pos, w = _cat(*parts)
    return Terms(on, pos, w.float(), n, 2)


def cycle_terms(n: int, partner: Tensor, cases: Tensor) -> Terms:
    """The cycle (``ssl.pairing = cycle`` with two crops): row i pairs image i with image ``partner[i]``."""
    _check(n, 2)
    idx = torch.arange(n, device=partner.device)
    on, pos, w = _cat(_directed(idx, n, cases // 2, 0, 0.5 / n), _directed(partner, n, cases % 2, 0, 0.5 / n))
    return Terms(on, pos, w.float(), n, 2)


def fresh_terms(n: int, cases: Tensor) -> Terms:
    """Four crops (``views = fresh``): row i is image i (views 0, 1) and its partner's fresh crops (views 2, 3)."""
    _check(n, 4)
    idx = torch.arange(n, device=cases.device)
    on, pos, w = _cat(_directed(idx, n, cases // 2, 0, 0.5 / n), _directed(idx, n, cases % 2, 2, 0.5 / n))
    return Terms(on, pos, w.float(), n, 4)


def policy_terms(policy: str, n: int, *, views: int = 2, cases: Tensor | None = None, pairs: Tensor | None = None,
                 partner: Tensor | None = None, device: torch.device | str = "cpu") -> Terms:
    """The terms of ``policy_loss(policy, ...)`` given the decisions it took (``PolicyOutput.cases``) and the
    pairs or partner it was given."""
    if policy == "symmetric":
        return symmetric_terms(n, views=views, device=device)
    if cases is None:
        raise ConfigError(f"the terms of the {policy} policy need its decisions (PolicyOutput.cases)")
    if views == 4:
        return fresh_terms(n, cases)
    if pairs is not None:
        return matched_terms(n, pairs, cases)
    if partner is not None:
        return cycle_terms(n, partner, cases)
    raise ConfigError(f"the terms of the {policy} policy on two crops need the pairs or the partner it used")


def stack(views: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The rows the terms index: the views stacked, (views × n, d)."""
    return torch.cat(list(views), dim=0)


def terms_loss(terms: Terms, p: list[Tensor] | tuple[Tensor, ...], t: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Σ_k w_k D(p[on_k], sg t[pos_k]): the batch loss the terms describe (equal to the policy's loss)."""
    ps, ts = stack(p), stack(t).detach()
    return (terms.weight * negative_cosine(ps[terms.on], ts[terms.pos])).sum()


def target_loss(terms: Terms, p: list[Tensor] | tuple[Tensor, ...], t: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """Σ_k w_k D(sg p[on_k], t[pos_k]): the same loss with the gradient through the targets only.

    Added to the policy's loss (which detaches every target), it gives a learnable target-side head (the inverse
    predictor's h^{-1}) the gradient of D(p_a, h^{-1}(sg z_b)) with respect to its parameters.
    """
    ps, ts = stack(p).detach(), stack(t)
    return (terms.weight * negative_cosine(ps[terms.on], ts[terms.pos])).sum()


def _check(n: int, views: int) -> None:
    if n < 1:
        raise ConfigError(f"a batch needs at least one image, got n = {n}")
    if views not in (2, 4):
        raise ConfigError(f"terms are defined for 2 views (reuse) or 4 (fresh), got {views}")


__all__ = ["Terms", "cycle_terms", "fresh_terms", "matched_terms", "policy_terms", "stack", "symmetric_terms",
           "target_loss", "terms_loss"]
