"""Stop-gradient policies: symmetric (SimSiam/BYOL), guided (GSG), random and reverse.

This is where Guided Stop-Gradient lives. Everything is a pure, vectorised function of

- the predictions ``p`` of the source side (with gradient),
- the target-side projections ``t`` (SimSiam: the online projections; BYOL: the EMA encoder's), which
  are used under stop-gradient and, for GSG, to measure distances,
- and a partner assignment that pairs every image of the batch with another image of the same batch.

Notation of the paper (Lee & Lee, NeurIPS 2023, §4): image x1 has views x11, x12 and image x2 has views
x21, x22. The four distances between target projections of different images are::

    case 0: d(11,21)   case 1: d(11,22)   case 2: d(12,21)   case 3: d(12,22)

Eq. 6 gives the predictor to the two projections at the smallest distance and stop-gradient to the
other two. With ``a = case // 2`` (which view of x1 gets the predictor) and ``b = case % 2`` (which view
of x2), the loss of a pair is::

    L = ½ D(p1[a], sg t1[1-a]) + ½ D(p2[b], sg t2[1-b]),      D(p, z) = -cos(p, z)

Reverse (eq. 7) takes the complement of GSG's choice, ``3 - case``; random takes a uniform case.
Ties go to the lowest case index, as in the paper's if/elif pseudocode (Appendix A).

Example — GSG in your own training loop (any encoder ``f`` and predictor ``h``)::

    >>> import torch
    >>> from gsg.ssl.stopgrad import derangement, policy_loss
    >>> f = torch.nn.Linear(8, 4); h = torch.nn.Linear(4, 4)
    >>> x_a, x_b = torch.randn(6, 8), torch.randn(6, 8)        # two views of 6 images
    >>> z_a, z_b = f(x_a), f(x_b)
    >>> partner = derangement(6, generator=torch.Generator().manual_seed(0))
    >>> out = policy_loss("guided", p1=(h(z_a), h(z_b)), t1=(z_a, z_b), partner=partner)
    >>> out.loss.backward()
    >>> out.cases.shape
    torch.Size([6])

Three ways to form the pairs (``ssl.views`` × ``ssl.pairing``; docs/fidelity.md):

- ``pairs`` (reuse + **matching**, the default): the batch is split into B/2 disjoint pairs
  (:func:`perfect_matching`), each pair's two images reuse their two existing crops, and each pair is decided
  once. Every image then takes exactly one directed term per step, on crops no other decision touches: the
  paper's per-pair rule on two crops, at the encoder cost of plain SimSiam.
- ``partner`` without ``p2``/``t2`` (reuse + **cycle**): every image is paired along one random cycle, so
  it is in two pairs that use the same two crops. When their decisions differ the image receives exactly
  eq. 1 (the symmetric loss); kept as an option for comparison.
- ``p2``/``t2`` from fresh crops of ``x[partner]`` (**fresh**, four crops per image): the authors' scheme,
  the batch paired with its shuffle.

Example — the faithful two-crop rule::

    >>> pairs = perfect_matching(6, generator=torch.Generator().manual_seed(0))
    >>> pairs.shape                                          # 3 disjoint pairs of image indices
    torch.Size([3, 2])
    >>> out = policy_loss("guided", p1=(h(z_a), h(z_b)), t1=(z_a, z_b), pairs=pairs)
    >>> out.cases.shape                                      # one decision per pair
    torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError

Policy = Literal["symmetric", "guided", "random", "reverse"]
POLICIES: tuple[str, ...] = ("symmetric", "guided", "random", "reverse")
CASE_NAMES: tuple[str, ...] = ("11_21", "11_22", "12_21", "12_22")

Views = tuple[Tensor, Tensor]


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """Per-sample D(p, z) = -(p/‖p‖)·(z/‖z‖), shape (B,). ``z`` is used as given (detach it yourself)."""
    p, z = p.float(), z.float()
    # Scale vectors with entries above 1 down by their largest entry (the cosine does not change): the squared
    # norm of a float32 vector above ~1e19 overflows to inf, which made the cosine 0 instead of NaN or ±1.
    p = p / p.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    z = z / z.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    return -F.cosine_similarity(p, z, dim=-1, eps=1e-8)


def derangement(n: int, *, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """A random partner assignment: a bijection of ``range(n)`` with no fixed point.

    A uniformly random permutation ``s`` is turned into one cycle through all images
    (``partner[s[k]] = s[k+1 mod n]``): every image is paired with exactly one other image, never with
    itself, and each image's partner is uniform over the other n-1 images. (The authors' code shuffles the
    batch, which pairs some images with themselves; the paper's method excludes that.)
    """
    _check_pairable(n)
    gen_device = generator.device if generator is not None else torch.device(device)
    s = torch.randperm(n, generator=generator, device=gen_device)
    partner = torch.empty_like(s)
    partner[s] = torch.roll(s, -1)
    return partner.to(device)


def perfect_matching(n: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
    """A random perfect matching of ``range(n)``: ``n // 2`` disjoint pairs, shape (n // 2, 2).

    Consecutive entries of a uniformly random permutation are paired, so every image is in at most one pair
    and each pair is uniform over the others. With an odd ``n`` one image (the permutation's last) is in no
    pair; :func:`policy_loss` gives it the symmetric term of eq. 1.
    """
    _check_pairable(n)
    gen_device = generator.device if generator is not None else torch.device(device)
    s = torch.randperm(n, generator=generator, device=gen_device)
    return s[: 2 * (n // 2)].reshape(-1, 2).to(device)


def _check_pairable(n: int) -> None:
    if n < 2:
        raise ConfigError(
            f"guided, random and reverse stop-gradient pair each image with another image of the same batch, "
            f"so a batch needs at least 2 images (got {n}); increase --batch-size or drop the last partial batch"
        )


def pair_distances(t1: Views, t2: Views) -> Tensor:
    """The four Euclidean distances of eq. 4–5, shape (B, 4), in case order (11,21) (11,22) (12,21) (12,22).

    Computed in float32 without gradient: the guidance is a choice, not something to optimise.
    """
    with torch.no_grad():
        a = torch.stack([t.detach().float() for t in t1], dim=1)  # (B, 2, d): views of image 1
        b = torch.stack([t.detach().float() for t in t2], dim=1)  # (B, 2, d): views of image 2
        d = torch.linalg.vector_norm(a[:, :, None, :] - b[:, None, :, :], dim=-1)  # (B, 2, 2)
    return d.reshape(d.shape[0], 4)


def select_cases(policy: Policy, distances: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Which of the four loss combinations of eq. 6 each pair takes, shape (B,), values in 0..3.

    guided: argmin of the distances (first index on ties); reverse: 3 - guided (eq. 7);
    random: uniform over the four cases.
    """
    if policy == "guided":
        return _first_argmin(distances)
    if policy == "reverse":
        return 3 - _first_argmin(distances)
    if policy == "random":
        gen_device = generator.device if generator is not None else distances.device
        return torch.randint(0, 4, (distances.shape[0],), generator=generator, device=gen_device).to(
            distances.device
        )
    raise ConfigError(f"select_cases needs a pairing policy (guided, random, reverse), got {policy!r}")


def _first_argmin(d: Tensor) -> Tensor:
    # torch.argmin does not promise the first index on ties on every device; this does. NaN distances
    # (a diverged step) count as infinitely far, so the case index stays in 0..3.
    d = torch.nan_to_num(d, nan=float("inf"))
    is_min = d == d.min(dim=1, keepdim=True).values
    idx = torch.arange(d.shape[1], device=d.device).expand_as(d)
    return torch.where(is_min, idx, d.shape[1]).min(dim=1).values


def symmetric_loss(p: Views, t: Views) -> Tensor:
    """Eq. 1 per image: ½ D(p_a, sg t_b) + ½ D(p_b, sg t_a), shape (B,)."""
    return 0.5 * negative_cosine(p[0], t[1].detach()) + 0.5 * negative_cosine(p[1], t[0].detach())


def case_terms(p1: Views, t1: Views, p2: Views, t2: Views, cases: Tensor) -> tuple[Tensor, Tensor]:
    """The two directed terms of eq. 6 per pair for the given cases: (image 1's, image 2's), each (B,).

    The chosen prediction and target of each image are selected first (``torch.where`` on the (B, d) rows),
    then one cosine per image is computed: the unchosen pair costs no cosine and gets no gradient (half the
    work of computing both candidate terms and selecting the loss; docs/performance.md, recommendation 5).
    """
    a = (cases // 2).bool()[:, None]  # True: view 2 of image 1 gets the predictor
    b = (cases % 2).bool()[:, None]  # True: view 2 of image 2 gets the predictor
    term1 = negative_cosine(torch.where(a, p1[1], p1[0]), torch.where(a, t1[0], t1[1]).detach())
    term2 = negative_cosine(torch.where(b, p2[1], p2[0]), torch.where(b, t2[0], t2[1]).detach())
    return term1, term2


def case_loss(p1: Views, t1: Views, p2: Views, t2: Views, cases: Tensor) -> Tensor:
    """Eq. 6 per pair for the given cases, shape (B,): ½ (image 1's term + image 2's term)."""
    term1, term2 = case_terms(p1, t1, p2, t2, cases)
    return 0.5 * term1 + 0.5 * term2


@dataclass
class PolicyOutput:
    """The loss of a batch and, for analysis, what the policy chose."""

    loss: Tensor  # scalar, mean over per_sample
    per_sample: Tensor  # (B,): per image (symmetric, matched pairs) or per pair row (cycle, fresh)
    cases: Tensor | None = None  # (decisions,) in 0..3, None for symmetric; B/2 decisions for matched pairs
    distances: Tensor | None = None  # (decisions, 4), None for symmetric
    negatives: Tensor | None = None  # MoCo: the queue its logits used (before the step enqueued its keys)


def policy_loss(
    policy: Policy,
    *,
    p1: Views,
    t1: Views,
    partner: Tensor | None = None,
    p2: Views | None = None,
    t2: Views | None = None,
    pairs: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PolicyOutput:
    """The loss of a batch under a stop-gradient policy.

    Args:
        policy: ``symmetric`` | ``guided`` | ``random`` | ``reverse``.
        p1, t1: predictions and target projections of the two views of each image, each (B, d).
        partner: (B,) partner index of each image (see :func:`derangement`). Needed unless ``p2``/``t2``
            are given or the policy is symmetric.
        p2, t2: predictions and target projections of the partner images' views. ``None`` reuses the
            partner's existing views: ``p2 = p1[partner]``, ``t2 = t1[partner]``.
        pairs: (P, 2) disjoint pairs of image indices (see :func:`perfect_matching`): each pair is decided once
            on the two images' existing views and each image takes exactly one directed term. Images in no pair
            (one, for an odd batch) take the symmetric term of eq. 1. The loss is the mean over images of one
            term each, the scale of the symmetric loss. Excludes ``partner``/``p2``/``t2``.
        generator: RNG for ``random``.

    For ``symmetric`` with ``p2``/``t2`` given (four crops per image), the loss averages eq. 1 over both
    pairs of crops, so that its encoder cost equals GSG's "fresh" mode.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown stop-gradient policy {policy!r}; choose one of {', '.join(POLICIES)}")
    _check_views(p1, t1, "p1/t1")
    if policy == "symmetric":
        per = symmetric_loss(p1, t1)
        if p2 is not None and t2 is not None:
            per = 0.5 * (per + symmetric_loss(p2, t2))
        return PolicyOutput(loss=per.mean(), per_sample=per)
    if pairs is not None:
        if partner is not None or p2 is not None or t2 is not None:
            raise ConfigError("policy_loss: give either pairs (matched pairs on the existing views) or "
                              "partner / p2, t2 (cycle or fresh crops), not both")
        return _matched_loss(policy, p1, t1, pairs, generator)
    if p2 is None or t2 is None:
        if partner is None:
            raise ConfigError(f"the {policy} policy needs a partner assignment or the partner views p2/t2")
        _check_partner(partner, p1[0].shape[0])
        p2 = (p1[0][partner], p1[1][partner])
        t2 = (t1[0][partner], t1[1][partner])
    _check_views(p2, t2, "p2/t2")
    distances = pair_distances(t1, t2)
    cases = select_cases(policy, distances, generator=generator)
    per = case_loss(p1, t1, p2, t2, cases)
    return PolicyOutput(loss=per.mean(), per_sample=per, cases=cases, distances=distances)


def _matched_loss(policy: Policy, p: Views, t: Views, pairs: Tensor, generator: torch.Generator | None
                  ) -> PolicyOutput:
    """Reuse + matching: one decision per disjoint pair, one directed term per image (see policy_loss)."""
    n = p[0].shape[0]
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0 or 2 * pairs.shape[0] > n:
        raise ConfigError(f"pairs must have shape (P, 2) with 1 <= P <= {n // 2}, got {tuple(pairs.shape)}")
    i, j = pairs[:, 0], pairs[:, 1]
    p1, t1 = (p[0][i], p[1][i]), (t[0][i], t[1][i])
    p2, t2 = (p[0][j], p[1][j]), (t[0][j], t[1][j])
    distances = pair_distances(t1, t2)
    cases = select_cases(policy, distances, generator=generator)
    term1, term2 = case_terms(p1, t1, p2, t2, cases)
    per = torch.zeros(n, dtype=term1.dtype, device=term1.device)
    per = per.index_put((i,), term1).index_put((j,), term2)
    if 2 * pairs.shape[0] < n:  # images in no pair (an odd batch): the symmetric term
        paired = torch.zeros(n, dtype=torch.bool, device=per.device).index_fill(0, pairs.reshape(-1), True)
        per = torch.where(paired, per, symmetric_loss(p, t))
    return PolicyOutput(loss=per.mean(), per_sample=per, cases=cases, distances=distances)


def _check_views(p: Views, t: Views, name: str) -> None:
    shapes = {tuple(x.shape) for x in (*p, *t)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ConfigError(f"{name}: expected four (B, d) tensors of one shape, got {sorted(shapes)}")
    if p[0].shape[0] == 0:
        raise ConfigError(f"{name}: the batch is empty; a loss needs at least one image (two for pairing)")


def _check_partner(partner: Tensor, n: int) -> None:
    if partner.shape != (n,):
        raise ConfigError(f"partner must have shape ({n},), got {tuple(partner.shape)}")
