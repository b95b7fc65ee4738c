"""Zhang et al.'s decomposition for the explicit contrastive losses: SimCLR's NT-Xent and MoCo's InfoNCE.

Zhang et al. (ICLR 2022, §6, "unified view") write the InfoNCE negative gradient of an anchor Z_a as a basic
part plus an extra part made of the softmax-weighted candidates,

    −τ ∂ℓ_a/∂Z_a = Z₊ − Σ_k λ_k C_k,   λ_k = exp(Z_a·C_k/τ) / Σ_j exp(Z_a·C_j/τ),

with the candidates C_k (the positive Z₊ among them) under stop-gradient. gsg keeps the definitions of
:mod:`gsg.analysis.decomposition`: the per-sample gradient of each anchor's own term in units where the basic part
is a unit vector (here ×τ), the basic part is the other crop's normalised **online** output, and o_p is the
centre of the online outputs over every crop. So

- SimCLR: the positive is the other crop's online output, basic = Z₊ and G_e = −Σ_{k≠a} λ_k Z_k exactly Zhang
  et al.'s extra term (the 2N − 1 other views of the batch are the candidates);
- MoCo: the positive is the key encoder's k₊ and the negatives the queue, so G_e = (k₊ − Z_b) − Σ_k λ_k C_k:
  the key encoder's lag (as BYOL's G_e = Z_b^ema − P_b) plus the softmax-weighted keys.

An anchor's gradient through the other anchors' terms (SimCLR's candidates are live in training) is left out, as
Zhang et al. do. Under DDP the training loss's SimCLR candidates are the global batch; these functions see what
they are given (the epoch-end log passes this process's batch).

    >>> import torch
    >>> za, zb = torch.randn(6, 4), torch.randn(6, 4)
    >>> d = simclr_decomposition(za, zb, temperature=0.5)
    >>> d.grad.shape, torch.allclose(d.basic, d.grad - d.extra)
    (torch.Size([12, 4]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsg.analysis.decomposition import GradientDecomposition, decompose, decomposition_metrics, negative_gradient
from gsg.errors import ConfigError
from gsg.ssl.contrastive import _check_temperature
from gsg.ssl.toy_losses import unit_rows

Views = list[Tensor] | tuple[Tensor, ...]


def _info_nce(logits: Tensor, pos: Tensor) -> Tensor:
    """Mean over anchors of −log softmax(logits)[pos] (τ already applied)."""
    ar = torch.arange(logits.shape[0], device=logits.device)
    return (torch.logsumexp(logits, dim=1) - logits[ar, pos]).mean()


def simclr_decomposition(z_a: Tensor, z_b: Tensor, temperature: float) -> GradientDecomposition:
    """The decomposition of NT-Xent (``gsg.ssl.contrastive.nt_xent``) on its 2N anchors: view-a rows, then
    view-b rows, each against the other 2N − 1 views as detached candidates."""
    _check_temperature(temperature)
    n = z_a.shape[0]
    if z_a.ndim != 2 or z_a.shape != z_b.shape or n < 2:
        raise ConfigError(f"simclr_decomposition needs two (N, d) views of one shape with N >= 2, got "
                          f"{tuple(z_a.shape)} and {tuple(z_b.shape)}")
    z = unit_rows([z_a, z_b]).detach()  # (2N, d): the anchors and the candidates
    ar = torch.arange(2 * n, device=z.device)
    pos = torch.cat([ar[n:], ar[:n]])
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)

    def loss(x: Tensor) -> Tensor:
        return _info_nce((x @ z.T / temperature).masked_fill(self_mask, float("-inf")), pos)

    grad = negative_gradient(loss, z) * (2 * n * temperature)
    return decompose(grad, z[pos], z.mean(dim=0))


def moco_decomposition(q: Views, k: Views, queue: Tensor, temperature: float, *,
                       symmetric: bool = False) -> GradientDecomposition:
    """The decomposition of MoCo's InfoNCE (``gsg.ssl.methods.moco_loss``): the queries of view 1 against the keys
    of view 2 and the queue (and, ``symmetric``, view 2's against view 1's keys, rows after view 1's).

    ``q``: the two views' online projections, ``k``: their key-encoder projections, ``queue`` (K, d): the
    negatives the step used (before it enqueued its own keys)."""
    _check_temperature(temperature)
    if len(q) != 2 or len(k) != 2 or queue.ndim != 2 or queue.shape[1] != q[0].shape[1]:
        raise ConfigError(f"moco_decomposition needs two views of queries and keys and a (K, d) queue, got "
                          f"{len(q)} and {len(k)} views and a queue of shape {tuple(queue.shape)}")
    qu = [unit_rows([x]).detach() for x in q]
    ku = [unit_rows([x]).detach() for x in k]
    negatives = unit_rows([queue]).detach()
    directions = [(0, 1), (1, 0)] if symmetric else [(0, 1)]
    grads, basics = [], []
    for a, b in directions:  # two directions at most: not a loop over samples
        cands_pos = ku[b]

        def loss(x: Tensor, pos_keys: Tensor = cands_pos) -> Tensor:
            logits = torch.cat([(x * pos_keys).sum(dim=1, keepdim=True), x @ negatives.T], dim=1) / temperature
            return _info_nce(logits, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

        grads.append(negative_gradient(loss, qu[a]) * (qu[a].shape[0] * temperature))
        basics.append(qu[b])
    return decompose(torch.cat(grads), torch.cat(basics), torch.cat(qu).mean(dim=0))


def contrastive_batch_metrics(method: str, z: Views, t: Views, temperature: float, *,
                              negatives: Tensor | None = None, symmetric: bool = False) -> dict[str, float]:
    """The logged metrics (:func:`gsg.analysis.decomposition.decomposition_metrics`) of a SimCLR or MoCo batch:
    ``z`` the online projections of the two views, ``t`` the key encoder's (MoCo), ``negatives`` MoCo's queue."""
    if method == "simclr":
        return decomposition_metrics(simclr_decomposition(z[0], z[1], temperature))
    if method == "moco":
        if negatives is None:
            raise ConfigError("the MoCo decomposition needs the queue of negatives the step used")
        return decomposition_metrics(moco_decomposition(z, t, negatives, temperature, symmetric=symmetric))
    raise ConfigError(f"{method!r} is not a contrastive method (simclr, moco)")


__all__ = ["contrastive_batch_metrics", "moco_decomposition", "simclr_decomposition"]
