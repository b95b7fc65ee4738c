"""Collapse metrics: known answers for collapsed, isotropic and hand-computed batches."""

from __future__ import annotations

import math

import pytest
import torch

from gsg.analysis.collapse import (
    alignment,
    center_residual,
    collapse_report,
    gsg_case_stats,
    normalized_std,
    rankme,
    singular_spectrum,
    uniformity,
)
from gsg.errors import ConfigError


def collapsed_batch(n=64, d=16, seed=0):
    # One direction, positive per-row scales: identical after normalisation.
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g)
    scales = torch.rand(n, 1, generator=g) + 0.5
    return scales * direction


def gaussian(n, d, seed=0, mean=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + mean


def test_collapsed_batch():
    z = collapsed_batch()
    assert normalized_std(z) == pytest.approx(0.0, abs=1e-6)
    cr = center_residual(z)
    assert cr["m_o"] == pytest.approx(1.0, abs=1e-6)
    assert cr["m_r"] == pytest.approx(0.0, abs=1e-6)
    assert rankme(z) == pytest.approx(1.0, abs=1e-3)
    assert uniformity(z) == pytest.approx(0.0, abs=1e-6)


def test_isotropic_gaussian():
    z = gaussian(4096, 64)
    assert normalized_std(z) == pytest.approx(1.0, abs=0.05)
    assert rankme(z) > 0.9 * 64
    assert center_residual(z)["m_o"] < 0.05  # ≈ sqrt(1/N) = 0.016
    assert uniformity(z) < -3.5  # ≈ -4 on the high-dimensional sphere


def test_hand_checked_two_orthogonal_rows():
    z = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalises to e1, e2
    # Per channel values (1, 0) and (0, 1): unbiased std 1/sqrt(2); times sqrt(2) -> 1.
    assert normalized_std(z) == pytest.approx(1.0, abs=1e-6)
    cr = center_residual(z)  # o = (0.5, 0.5), r = ±(0.5, -0.5)
    assert cr["m_o"] == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert cr["m_r"] == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert cr["m_r_rms"] == pytest.approx(math.sqrt(0.5), abs=1e-6)
    assert uniformity(z) == pytest.approx(-4.0, abs=1e-6)  # one pair at squared distance 2, t = 2


def test_center_residual_identity_and_link_to_channel_variance():
    z = gaussian(500, 32, seed=1, mean=0.7)  # shifted, so the centre is far from 0
    cr = center_residual(z)
    assert 0.5 < cr["m_o"] < 1.0
    assert cr["m_o"] ** 2 + cr["m_r_rms"] ** 2 == pytest.approx(1.0, abs=1e-5)
    zn = z / z.norm(dim=1, keepdim=True)
    # Σ_k Var_batch(ẑ_k) (biased) = mean ‖r_i‖² = 1 - m_o²
    assert zn.var(dim=0, correction=0).sum().item() == pytest.approx(cr["m_r_rms"] ** 2, abs=1e-5)
    assert cr["m_r"] <= cr["m_r_rms"] + 1e-7  # mean ≤ root-mean-square


def test_rankme_known_answers():
    # σ = (3, 1): p = (3/4, 1/4), RankMe = exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.75477
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    assert rankme(z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))), abs=1e-5)
    assert rankme(z) == pytest.approx(1.75477, abs=1e-5)
    # r orthonormal columns with equal singular values: RankMe = r.
    q, _ = torch.linalg.qr(gaussian(50, 7, seed=2).double())
    assert rankme(2.0 * q[:, :5] @ torch.eye(5, 12, dtype=torch.float64)) == pytest.approx(5.0, abs=1e-4)
    # Rank-r Gaussian embeddings: RankMe ≤ r.
    low = gaussian(300, 3, seed=3) @ gaussian(3, 20, seed=4)
    assert rankme(low) <= 3.0 + 1e-3


def test_singular_spectrum_is_sqrt_of_covariance_eigenvalues():
    z = gaussian(200, 10, seed=5, mean=1.0).double()
    spec = singular_spectrum(z)
    assert spec.dtype == torch.float32 and spec.shape == (10,)
    assert torch.all(spec[:-1] >= spec[1:])
    cov = torch.cov(z.T, correction=0)
    eig = torch.linalg.eigvalsh(cov).flip(0)
    torch.testing.assert_close(spec.double() ** 2, eig, rtol=1e-5, atol=1e-6)
    raw = singular_spectrum(z, center=False)
    torch.testing.assert_close(raw.double(), torch.linalg.svdvals(z) / math.sqrt(200), rtol=1e-5, atol=1e-6)
    # Rank-3 embeddings: 7 of 10 values vanish.
    low = gaussian(300, 3, seed=6) @ gaussian(3, 10, seed=7)
    s = singular_spectrum(low)
    assert torch.all(s[3:] < 1e-5 * s[0]) and s[2] > 1e-2 * s[0]


def test_alignment_known_answers():
    z = gaussian(40, 8, seed=8)
    assert alignment(z, 3.0 * z) == pytest.approx(0.0, abs=1e-6)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    assert alignment(e1, e2) == pytest.approx(2.0, abs=1e-6)
    assert alignment(e1, e2, alpha=1) == pytest.approx(math.sqrt(2.0), abs=1e-6)
    assert alignment(e1, -e1) == pytest.approx(4.0, abs=1e-6)


def test_uniformity_known_answers():
    pts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # squared distances 2, 4, 2
    want = math.log((2 * math.exp(-4.0) + math.exp(-8.0)) / 3)
    assert uniformity(pts) == pytest.approx(want, abs=1e-6)
    want_t1 = math.log((2 * math.exp(-2.0) + math.exp(-4.0)) / 3)
    assert uniformity(pts, t=1) == pytest.approx(want_t1, abs=1e-6)
    assert uniformity(gaussian(256, 32, seed=9)) < uniformity(collapsed_batch()) - 3
    with pytest.raises(ConfigError, match="at most 4096"):
        uniformity(gaussian(4097, 2))


def test_gsg_case_stats_hand_example():
    cases = torch.tensor([0, 0, 3, 1])
    distances = torch.tensor(
        [
            [1.0, 2.0, 3.0, 4.0],  # margin 1.0, nearest 0 (taken)
            [0.5, 0.5, 2.0, 3.0],  # margin 0.0, tie -> nearest 0 (taken)
            [4.0, 3.0, 2.0, 1.5],  # margin 0.5, nearest 3 (taken)
            [2.0, 5.0, 1.0, 7.0],  # margin 1.0, nearest 2 (case 1 taken)
        ]
    )
    stats = gsg_case_stats(cases, distances)
    assert stats["case_11_21"] == 0.5
    assert stats["case_11_22"] == 0.25
    assert stats["case_12_21"] == 0.0
    assert stats["case_12_22"] == 0.25
    assert sum(stats[k] for k in ("case_11_21", "case_11_22", "case_12_21", "case_12_22")) == 1.0
    assert stats["margin_mean"] == pytest.approx(0.625)
    assert stats["margin_median"] == pytest.approx(0.75)  # midpoint of 0.5 and 1.0
    assert stats["nearest_share"] == pytest.approx(0.75)


def test_gsg_case_stats_shares_sum_to_one_on_random_cases():
    g = torch.Generator().manual_seed(10)
    cases = torch.randint(0, 4, (257,), generator=g)
    stats = gsg_case_stats(cases, torch.rand(257, 4, generator=g))
    counts = torch.bincount(cases, minlength=4) / 257
    assert [stats[k] for k in ("case_11_21", "case_11_22", "case_12_21", "case_12_22")] == pytest.approx(
        counts.tolist()
    )
    assert sum(counts.tolist()) == pytest.approx(1.0)


def test_collapse_report_collects_the_metrics():
    z = gaussian(128, 16, seed=12)
    report = collapse_report(z)
    assert set(report) == {"std", "m_o", "m_r", "m_r_rms", "rankme", "uniformity"}
    assert report["std"] == normalized_std(z)
    assert report["m_o"] == center_residual(z)["m_o"]
    assert report["rankme"] == rankme(z)
    assert report["uniformity"] == uniformity(z)
    assert all(isinstance(v, float) for v in report.values())


def test_bad_inputs_raise_config_error():
    with pytest.raises(ConfigError, match="2-D"):
        normalized_std(torch.randn(10))
    with pytest.raises(ConfigError, match="at least 2"):
        normalized_std(torch.randn(1, 4))
    with pytest.raises(ConfigError, match="paired"):
        alignment(torch.randn(3, 4), torch.randn(4, 4))
    with pytest.raises(ConfigError, match=r"0\.\.3"):
        gsg_case_stats(torch.tensor([0, 4]), torch.rand(2, 4))
    with pytest.raises(ConfigError, match=r"\(B, 4\)"):
        gsg_case_stats(torch.tensor([0, 1]), torch.rand(2, 3))
