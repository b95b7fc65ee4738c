"""DirectPred / DirectCopy: closed-form predictors from known spectra, EMA, freq, state, alignment."""

from __future__ import annotations

import math

import pytest
import torch

from gsg.errors import ConfigError
from gsg.models.directpred import (
    DirectPredictor,
    correlation_update,
    directcopy_weight,
    directpred_weight,
    eigenspace_alignment,
)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def from_spectrum(u: torch.Tensor, values) -> torch.Tensor:
    return u @ torch.diag(torch.as_tensor(values, dtype=u.dtype)) @ u.T


def batch(n: int, d: int, seed: int, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + mean


def outer_mean(f: torch.Tensor) -> torch.Tensor:
    """E_B[f fᵀ] written literally as the mean of per-sample outer products."""
    return torch.einsum("ni,nj->nij", f, f).mean(dim=0)


S = [4.0, 2.25, 1.0, 0.25, 0.0]  # s/s_max = 1, .5625, .25, .0625, 0 -> sqrt = 1, .75, .5, .25, 0


def test_directpred_weight_from_known_spectrum():
    u = orthogonal(5, 0)
    w = directpred_weight(from_spectrum(u, S), eps=0.1)
    want = from_spectrum(u, [1.1, 0.85, 0.6, 0.35, 0.1])
    # s = 0 comes out of eigh as ±1e-16 and sqrt turns that into ~1e-8: hence atol 1e-7.
    torch.testing.assert_close(w, want, rtol=0, atol=1e-7)
    torch.testing.assert_close(w, w.T, rtol=0, atol=0)
    eig = torch.linalg.eigvalsh(w)
    assert torch.all(eig > 0)
    torch.testing.assert_close(eig, torch.tensor([0.1, 0.35, 0.6, 0.85, 1.1], dtype=torch.float64))
    # Only the spectrum's shape matters: scaling F̂ leaves W_p unchanged.
    scaled = directpred_weight(7.0 * from_spectrum(u, S), eps=0.1)
    torch.testing.assert_close(scaled, want, rtol=0, atol=1e-7)


def test_directpred_weight_variants():
    u = orthogonal(5, 1)
    f_hat = from_spectrum(u, [4.0, 1.0, 0.0, -0.5, 0.0])  # a negative eigenvalue is clamped to 0
    # The zero eigenvalues come out of eigh as ±1e-16, and sqrt turns that into ~1e-8: hence atol 1e-7.
    want = from_spectrum(u, [1.1, 0.6, 0.1, 0.1, 0.1])
    torch.testing.assert_close(directpred_weight(f_hat, eps=0.1), want, rtol=0, atol=1e-7)
    # eps=0: the released code's floor 1e-4 on every eigenvalue.
    want = from_spectrum(u, [1.0, 0.5, 1e-4, 1e-4, 1e-4])
    torch.testing.assert_close(directpred_weight(f_hat, eps=0.0), want, rtol=0, atol=1e-7)
    # eps_inside: p = sqrt(s/s_max + eps)
    want = from_spectrum(u, [math.sqrt(1.1), math.sqrt(0.35), math.sqrt(0.1), math.sqrt(0.1), math.sqrt(0.1)])
    torch.testing.assert_close(directpred_weight(f_hat, eps=0.1, eps_inside=True), want, rtol=0, atol=1e-12)
    # float32 in, float32 out.
    assert directpred_weight(f_hat.float(), eps=0.1).dtype == torch.float32


def test_directcopy_weight():
    u = orthogonal(5, 2)
    f_hat = from_spectrum(u, S)
    eye = torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(directcopy_weight(f_hat, eps=0.1), f_hat / 4.0 + 0.1 * eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(directcopy_weight(f_hat, eps=0.1, normalize=False), f_hat + 0.1 * eye,
                               rtol=0, atol=1e-12)


def test_correlation_ema_over_three_steps():
    rho = 0.3
    fs = [batch(12, 6, seed) for seed in (1, 2, 3)]
    c1, c2, c3 = (outer_mean(f) for f in fs)
    want = rho * (rho * c1 + (1 - rho) * c2) + (1 - rho) * c3
    f_hat = None
    for f in fs:
        f_hat = correlation_update(f_hat, f, rho)
    torch.testing.assert_close(f_hat, want, rtol=1e-5, atol=1e-6)

    module = DirectPredictor(6, rho=rho)
    for f in fs:
        module.observe(f)
    torch.testing.assert_close(module.corr, want, rtol=1e-5, atol=1e-6)
    assert int(module.steps) == 3


def test_correlation_is_not_centred():
    f = torch.full((8, 3), 2.0)  # zero variance, non-zero mean
    torch.testing.assert_close(correlation_update(None, f, 0.3), torch.full((3, 3), 4.0))


def test_observe_sets_weight_from_corr_and_forward_applies_it():
    module = DirectPredictor(6, eps=0.1)
    torch.testing.assert_close(module.weight, torch.eye(6))  # starts at the identity
    module.observe(batch(20, 6, seed=4, mean=0.5))
    torch.testing.assert_close(module.weight, directpred_weight(module.corr, 0.1), rtol=0, atol=0)
    z = batch(5, 6, seed=5).requires_grad_()
    out = module(z)
    torch.testing.assert_close(out, z @ module.weight.T)
    out.sum().backward()
    torch.testing.assert_close(z.grad, module.weight.sum(dim=0).expand(5, 6))
    assert list(module.parameters()) == []  # W_p is set, not learned


def test_directcopy_mode_uses_directcopy_weight():
    module = DirectPredictor(4, mode="directcopy", eps=0.2)
    module.observe(batch(10, 4, seed=6))
    torch.testing.assert_close(module.weight, directcopy_weight(module.corr, 0.2), rtol=0, atol=0)


def test_freq_recomputes_only_every_freq_steps():
    module = DirectPredictor(5, freq=3)
    weights, corrs = [], []
    for step in range(7):
        module.observe(batch(16, 5, seed=10 + step))
        weights.append(module.weight.clone())
        corrs.append(module.corr.clone())
    for step in range(7):
        last_reset = step - step % 3  # resets at steps 0, 3, 6
        torch.testing.assert_close(weights[step], directpred_weight(corrs[last_reset], 0.1), rtol=0, atol=0)
    assert torch.equal(weights[1], weights[0]) and torch.equal(weights[2], weights[0])
    assert not torch.equal(weights[3], weights[2])


def test_state_dict_round_trip_restores_statistics_and_phase():
    a = DirectPredictor(5, freq=2)
    for step in range(3):
        a.observe(batch(16, 5, seed=20 + step))
    b = DirectPredictor(5, freq=2)
    b.load_state_dict(a.state_dict())
    for name in ("weight", "corr", "corr_initialized", "steps"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # Continuing both gives identical results: the EMA and the freq phase were restored.
    for step in range(2):
        f = batch(16, 5, seed=30 + step)
        a.observe(f)
        b.observe(f)
        assert torch.equal(a.weight, b.weight) and torch.equal(a.corr, b.corr)


def test_all_reduce_hook_averages_the_batch_correlation():
    f_here, f_other = batch(10, 4, seed=40), batch(10, 4, seed=41)
    seen = []

    def fake_all_reduce(t: torch.Tensor) -> torch.Tensor:  # mean over two "processes"
        seen.append(t.clone())
        return (t + outer_mean(f_other)) / 2

    module = DirectPredictor(4)
    module.observe(f_here, all_reduce=fake_all_reduce)
    torch.testing.assert_close(seen[0], outer_mean(f_here))
    torch.testing.assert_close(module.corr, outer_mean(torch.cat([f_here, f_other])))


def test_eigenspace_alignment():
    u = orthogonal(5, 3)
    f_hat = from_spectrum(u, [5.0, 4.0, 3.0, 2.0, 1.0])
    commuting = from_spectrum(u, [0.9, 0.1, 2.0, 0.5, 1.0])
    assert eigenspace_alignment(commuting, f_hat) == pytest.approx(1.0, abs=1e-12)
    rotated = from_spectrum(orthogonal(5, 4), [0.9, 0.1, 2.0, 0.5, 1.0])
    assert eigenspace_alignment(rotated, f_hat) < 0.99
    # 2-D: W_p a rotation by θ turns every eigenvector by θ, so the alignment is cos θ.
    theta = math.pi / 3
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    assert eigenspace_alignment(rot, torch.diag(torch.tensor([2.0, 1.0]))) == pytest.approx(0.5, abs=1e-6)
    # top=1: only the leading eigenvector; W_p = diag(1, -1) keeps e1 and flips e2.
    flip = torch.diag(torch.tensor([1.0, -1.0]))
    assert eigenspace_alignment(flip, torch.diag(torch.tensor([2.0, 1.0]))) == pytest.approx(0.0, abs=1e-12)
    assert eigenspace_alignment(flip, torch.diag(torch.tensor([2.0, 1.0])), top=1) == pytest.approx(1.0)


def test_module_alignment():
    module = DirectPredictor(6)
    assert math.isnan(module.alignment())
    module.observe(batch(50, 6, seed=50, mean=0.3))
    assert module.alignment() == pytest.approx(1.0, abs=1e-5)


def test_bad_configuration_raises_config_error():
    with pytest.raises(ConfigError, match="mode"):
        DirectPredictor(4, mode="directset")
    with pytest.raises(ConfigError, match="rho"):
        DirectPredictor(4, rho=1.0)
    with pytest.raises(ConfigError, match="freq"):
        DirectPredictor(4, freq=0)
    with pytest.raises(ConfigError, match="eps"):
        DirectPredictor(4, eps=-0.1)
    with pytest.raises(ConfigError, match=r"\(N, 4\)"):
        DirectPredictor(4).observe(torch.randn(3, 5))
    with pytest.raises(ConfigError, match="square"):
        directpred_weight(torch.randn(3, 4), 0.1)
