"""Collapse metrics: pure, vectorised functions of a batch of embeddings z of shape (N, d).

Sources (formulas in /work/shared/notes/directpred_and_collapse.md, Parts B-D):

- SimSiam std (Chen & He 2021, §4.1): per-channel std of ẑ = z/‖z‖, averaged over channels; reported here
  times √d so that isotropic embeddings give ≈ 1 and complete collapse gives 0.
- Vector decomposition (Zhang et al., ICLR 2022): centre o = mean_i ẑ_i, residuals r_i = ẑ_i - o,
  m_o = ‖o‖, m_r = mean_i ‖r_i‖.
- RankMe (Garrido et al., ICML 2023): exp-entropy of the normalised singular values of z.
- Singular-value spectrum (Jing et al., ICLR 2022) of the centred embeddings.
- Alignment and uniformity (Wang & Isola, ICML 2020) on normalised embeddings.
- GSG statistics: share of each of the four stop-gradient cases and the distance margin (Lee & Lee 2023).

Rows with zero norm stay zero after normalisation (F.normalize); NaN/inf inputs give NaN metrics, which is the
honest answer for a diverged batch. All metrics are computed in float32 (spectra in float64) and returned as
Python floats, except :func:`singular_spectrum`, which returns a tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.errors import ConfigError

# Largest batch for which uniformity builds all N(N-1)/2 pairwise distances at once (4096 -> 8.4M floats).
UNIFORMITY_MAX_N = 4096

CASE_KEYS: tuple[str, ...] = ("case_11_21", "case_11_22", "case_12_21", "case_12_22")


def _check_batch(z: Tensor, name: str = "z", min_n: int = 1) -> None:
    if not isinstance(z, Tensor) or z.dim() != 2:
        shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ConfigError(f"{name} must be a 2-D tensor (batch x embedding dim), got shape {shape}")
    if not z.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.shape[0] < min_n or z.shape[1] < 1:
        raise ConfigError(
            f"{name} needs at least {min_n} row(s) and 1 column for this metric, got shape {tuple(z.shape)}; "
            f"compute it on a larger batch"
        )


def _unit(z: Tensor) -> Tensor:
    return F.normalize(z.float(), dim=1)


def normalized_std(z: Tensor) -> float:
    """SimSiam's collapse metric times √d: √d · mean_k std_i(ẑ_ik), ẑ = z/‖z‖.

    std is the unbiased sample std over the batch (torch.std's default, as SimSiam and solo-learn log it).
    ≈ 1 for isotropic embeddings (per-channel std ≈ 1/√d), 0 for complete collapse. Needs N ≥ 2.
    """
    _check_batch(z, min_n=2)
    return float(normalized_std_tensor(z))


def normalized_std_tensor(z: Tensor) -> Tensor:
    """:func:`normalized_std` as a 0-d tensor on z's device, without checks: no host sync, for every
    training step."""
    zn = _unit(z)
    return zn.std(dim=0).mean() * math.sqrt(zn.shape[1])


def center_residual(z: Tensor) -> dict[str, float]:
    """Zhang et al.'s vector decomposition of ẑ_i = z_i/‖z_i‖ into centre o and residuals r_i.

    o = (1/N) Σ_i ẑ_i,   r_i = ẑ_i - o,
    m_o = ‖o‖ (centre ratio; ‖ẑ‖ = 1 so ‖o‖/‖ẑ‖ = ‖o‖),
    m_r = (1/N) Σ_i ‖r_i‖ (residual ratio, the batch mean of ‖r_i‖/‖ẑ_i‖),
    m_r_rms = sqrt((1/N) Σ_i ‖r_i‖²).

    Because Σ_i r_i = 0, the identity m_o² + m_r_rms² = 1 holds exactly for non-zero rows. Collapse:
    m_o → 1, m_r → 0. Returns {"m_o", "m_r", "m_r_rms"}.
    """
    _check_batch(z)
    zn = _unit(z)
    o = zn.mean(dim=0)
    r_norm = (zn - o).norm(dim=1)
    return {
        "m_o": float(o.norm()),
        "m_r": float(r_norm.mean()),
        "m_r_rms": float(r_norm.square().mean().sqrt()),
    }


def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe effective rank (Garrido et al. 2023) of the raw, uncentred embedding matrix.

    p_k = σ_k(z) / Σ_j σ_j(z) + eps,   RankMe = exp(-Σ_k p_k log p_k),   k = 1..min(N, d).

    Ranges over ≈ [1, min(N, d)]: ≈ 1 for complete collapse, ≈ d for isotropic embeddings with N ≫ d.
    An all-zero matrix gives ≈ 1 (the denominator is clamped). The paper uses ~25,600 samples and compares
    RankMe only between runs of the same method.
    """
    _check_batch(z)
    sv = torch.linalg.svdvals(z.double())
    p = sv / sv.sum().clamp_min(torch.finfo(torch.float64).tiny) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def singular_spectrum(z: Tensor, center: bool = True) -> Tensor:
    """Singular values σ_k of Z_c/√N, descending, float32, on z's device (Jing et al. 2022).

    Z_c = z - mean_i z_i when ``center`` (raw z otherwise). Their squares σ_k² are the eigenvalues of the
    covariance C = Z_c^T Z_c / N (biased, 1/N); Jing et al. plot log of C's singular values, which are these
    σ_k² (so their log curve is 2·log σ_k). min(N, d) values; dimensional collapse shows as a tail ≈ 0.
    """
    _check_batch(z)
    x = z.double()
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    return (torch.linalg.svdvals(x) / math.sqrt(x.shape[0])).float()


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2) -> float:
    """Wang & Isola's alignment: E_i ‖ẑ1_i - ẑ2_i‖^α on normalised positive pairs (row i of z1 and z2).

    0 for identical pairs; at most 2^α (antipodal pairs).
    """
    _check_batch(z1, "z1")
    _check_batch(z2, "z2")
    if z1.shape != z2.shape:
        raise ConfigError(
            f"alignment needs paired rows: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} differ"
        )
    if not alpha > 0:
        raise ConfigError(f"alpha must be > 0 (Wang & Isola use 2), got {alpha!r}")
    return float((_unit(z1) - _unit(z2)).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2) -> float:
    """Wang & Isola's uniformity: log (2/(N(N-1))) Σ_{i<j} exp(-t ‖ẑ_i - ẑ_j‖²).

    0 (its maximum) for a collapsed batch; more negative for spread-out embeddings (≈ -4 for t=2 on the
    high-dimensional sphere). Builds all pairwise distances at once, so N is capped at
    UNIFORMITY_MAX_N = 4096: pass a subset (e.g. ``z[:4096]``) for larger batches. Needs N ≥ 2.
    """
    _check_batch(z, min_n=2)
    if z.shape[0] > UNIFORMITY_MAX_N:
        raise ConfigError(
            f"uniformity computes all pairwise distances and accepts at most {UNIFORMITY_MAX_N} rows, got "
            f"{z.shape[0]}; pass a random subset, e.g. z[torch.randperm(len(z))[:{UNIFORMITY_MAX_N}]]"
        )
    if not t > 0:
        raise ConfigError(f"t must be > 0 (Wang & Isola use 2), got {t!r}")
    sq = torch.pdist(_unit(z)).double().square()
    # log-mean-exp via logsumexp: exact 0 for a collapsed batch, no underflow for large t.
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))


def gsg_case_stats(cases: Tensor, distances: Tensor) -> dict[str, float]:
    """Statistics of GSG's stop-gradient choices over a batch of B image pairs.

    ``cases`` (B,) in 0..3 is the case each pair took, in the order of ``distances`` (B, 4) columns:
    0 = d(11,21), 1 = d(11,22), 2 = d(12,21), 3 = d(12,22) (as in gsg.ssl.stopgrad.CASE_NAMES).

    Returns
    - ``case_11_21`` … ``case_12_22``: share of pairs in each case (sums to 1);
    - ``margin_mean`` / ``margin_median``: mean and median over pairs of d_(2) - d_(1), the gap between the
      smallest and second-smallest of the four distances (how clear-cut GSG's choice is; median is the
      midpoint-interpolated one for even B);
    - ``nearest_share``: share of pairs whose case is the nearest pair (1 for guided, ≈ 1/4 random,
      0 for reverse, up to ties).
    """
    if not isinstance(cases, Tensor) or cases.dim() != 1:
        got = getattr(cases, "shape", cases)
        raise ConfigError(f"cases must be a 1-D tensor of case indices, got {got!r}")
    if not isinstance(distances, Tensor) or distances.dim() != 2 or distances.shape != (cases.shape[0], 4):
        raise ConfigError(
            f"distances must have shape (B, 4) = ({cases.shape[0]}, 4), matching cases, "
            f"got {tuple(distances.shape) if isinstance(distances, Tensor) else distances!r}"
        )
    if cases.shape[0] == 0:
        raise ConfigError("gsg_case_stats needs at least one pair; got an empty batch")
    if cases.is_floating_point() or cases.dtype == torch.bool:
        raise ConfigError(f"cases must hold integer case indices 0..3, got dtype {cases.dtype}")
    c = cases.long()
    if int(c.min()) < 0 or int(c.max()) > 3:
        raise ConfigError(f"cases must lie in 0..3, found values in [{int(c.min())}, {int(c.max())}]")
    shares = torch.bincount(c, minlength=4).double() / c.shape[0]
    d = distances.double()
    two = d.topk(2, dim=1, largest=False).values  # ascending: smallest, second smallest
    margin = two[:, 1] - two[:, 0]
    out = {key: float(s) for key, s in zip(CASE_KEYS, shares, strict=True)}
    out["margin_mean"] = float(margin.mean())
    out["margin_median"] = float(margin.quantile(0.5))
    out["nearest_share"] = float((c == d.argmin(dim=1)).double().mean())
    return out


def collapse_report(z: Tensor) -> dict[str, float]:
    """All single-batch collapse metrics of z (N ≥ 2) in one flat dict, for logging.

    Keys: ``std`` (normalized_std, ×√d), ``m_o``, ``m_r``, ``m_r_rms`` (center_residual), ``rankme``, and
    ``uniformity`` (on the first UNIFORMITY_MAX_N rows if the batch is larger).
    """
    _check_batch(z, min_n=2)
    report = {"std": normalized_std(z)}
    report.update(center_residual(z))
    report["rankme"] = rankme(z)
    report["uniformity"] = uniformity(z[:UNIFORMITY_MAX_N])
    return report
