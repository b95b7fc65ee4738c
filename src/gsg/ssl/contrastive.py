"""Explicit contrastive losses: SimCLR's NT-Xent and MoCo's InfoNCE against a queue of keys.

Pure, vectorised functions of the projections; they return the loss of every anchor (take ``.mean()``).
Both compute in float32 on L2-normalised vectors, whatever the autocast dtype of their inputs.

NT-Xent (SimCLR; Chen, Kornblith, Norouzi & Hinton, ICML 2020, eq. 1). For the 2N views of a batch, with
sim(u, v) = uᵀv / (‖u‖‖v‖) and temperature τ, the loss of anchor i whose positive (the other view of the
same image) is j::

    ℓ(i, j) = -log  exp(sim(z_i, z_j)/τ) / Σ_{k ≠ i} exp(sim(z_i, z_k)/τ)

every other view of the batch (2N - 2 of them) is a negative. For features that carry no information
(all similarities equal) ℓ = log(2N - 1).

    >>> import torch
    >>> from gsg.ssl.contrastive import nt_xent, info_nce_queue
    >>> z_a, z_b = torch.randn(8, 16), torch.randn(8, 16)         # two views of 8 images
    >>> nt_xent(z_a, z_b, temperature=0.5).shape                 # one loss per view: 2N anchors
    torch.Size([16])
    >>> same = torch.ones(8, 16)                                 # every similarity equal: log(2N - 1)
    >>> round(float(nt_xent(same, same, temperature=0.5).mean()), 4) == round(float(torch.tensor(15.0).log()), 4)
    True

InfoNCE with a queue (MoCo; He et al., CVPR 2020, eq. 1; MoCo v2: Chen, Fan, Girshick & He, "Improved
Baselines with Momentum Contrastive Learning", 2020). A query q, its positive key k₊ (the momentum
encoder's projection of another view of the same image) and K negative keys from the queue::

    L_q = -log  exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{i=1..K} exp(q·k_i/τ))

i.e. a (K+1)-way softmax classification with the positive at index 0.

    >>> q, k = torch.randn(4, 16), torch.randn(4, 16)
    >>> queue = torch.nn.functional.normalize(torch.randn(32, 16), dim=1)
    >>> info_nce_queue(q, k, queue, temperature=0.2).shape
    torch.Size([4])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ConfigError(f"the contrastive temperature must be positive (it divides the similarities), got "
                          f"{temperature}; SimCLR uses 0.5 at CIFAR size and 0.1 at ImageNet size, MoCo v2 0.2")


def nt_xent(z_a: Tensor, z_b: Tensor, temperature: float, *, rows: slice | None = None) -> Tensor:
    """SimCLR's NT-Xent loss of each anchor, shape (2n,): first the view-a anchors, then the view-b anchors.

    Args:
        z_a, z_b: (N, d) projections of the two views of the same N images (row i of each: image i).
        temperature: τ > 0.
        rows: the anchors whose losses are returned (default: all N images). Every one of the 2N views is a
            candidate (positive or negative) of every anchor; under DDP, ``z_a``/``z_b`` are the gathered
            global batch and ``rows`` this process's slice, so that each process computes its own anchors'
            losses against the negatives of the whole batch.

    Raises ConfigError for N < 2 (an anchor would have no negative) or τ ≤ 0.
    """
    _check_temperature(temperature)
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ConfigError(f"nt_xent: expected two (N, d) tensors of one shape, got {tuple(z_a.shape)} and "
                          f"{tuple(z_b.shape)}")
    n = z_a.shape[0]
    if n < 2:
        raise ConfigError(f"SimCLR's negatives are the other images of the batch, so it needs at least 2 images "
                          f"(got {n}); increase --batch-size")
    rows = rows if rows is not None else slice(0, n)
    idx = torch.arange(n, device=z_a.device)[rows]  # global indices of the anchors' images
    z = F.normalize(torch.cat([z_a, z_b]).float(), dim=1)  # (2N, d): candidates
    anchors = torch.cat([z[idx], z[n + idx]])  # (2m, d)
    logits = anchors @ z.T / temperature  # (2m, 2N)
    self_col = torch.cat([idx, n + idx])
    pos_col = torch.cat([n + idx, idx])
    ar = torch.arange(self_col.shape[0], device=z.device)
    logits = logits.index_put((ar, self_col), torch.tensor(float("-inf"), device=z.device))  # k ≠ i
    return torch.logsumexp(logits, dim=1) - logits[ar, pos_col]


def info_nce_queue(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's InfoNCE loss of each query, shape (n,).

    Args:
        q: (n, d) queries (the online encoder's projections; gradients flow through them).
        k: (n, d) positive keys, row i for query i (the momentum encoder's; used under stop-gradient).
        queue: (K, d) negative keys, L2-normalised, used under stop-gradient.
        temperature: τ > 0 (MoCo v2: 0.2).
    """
    _check_temperature(temperature)
    if q.ndim != 2 or q.shape != k.shape or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ConfigError(f"info_nce_queue: expected q, k (n, d) and a queue (K, d), got {tuple(q.shape)}, "
                          f"{tuple(k.shape)}, {tuple(queue.shape)}")
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (n, 1)
    l_neg = q @ queue.detach().float().T  # (n, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


__all__ = ["info_nce_queue", "nt_xent"]
