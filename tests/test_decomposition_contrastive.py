"""Zhang et al.'s decomposition of SimCLR's NT-Xent and MoCo's InfoNCE (gsg.analysis.decomposition_contrastive),
against a literal per-anchor transcription of −τ ∂ℓ_a/∂Z_a = Z₊ − Σ_k λ_k C_k, and as a logged metric of both
methods' training and of `gsg diagnose`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gsg.analysis.decomposition_contrastive import (
    contrastive_batch_metrics,
    moco_decomposition,
    simclr_decomposition,
)
from gsg.errors import ConfigError
from gsg.train.loop import Trainer


def _softmax_weighted(anchor: torch.Tensor, cands: list[torch.Tensor], tau: float) -> torch.Tensor:
    """Σ_k λ_k C_k for one anchor, λ_k = exp(a·C_k/τ) / Σ_j exp(a·C_j/τ), written out term by term."""
    weights = [float(torch.exp(anchor @ c / tau)) for c in cands]
    total = sum(weights)
    return sum((w / total) * c for w, c in zip(weights, cands, strict=True))  # type: ignore[return-value]


def test_simclr_extra_gradient_is_minus_the_softmax_weighted_other_views() -> None:
    torch.manual_seed(0)
    n, tau = 5, 0.5
    za, zb = torch.randn(n, 8), torch.randn(n, 8)
    d = simclr_decomposition(za, zb, tau)
    z = F.normalize(torch.cat([za, zb]), dim=1)
    for i in range(2 * n):  # the transcription loops over anchors; the function does not
        pos = (i + n) % (2 * n)
        others = [z[k] for k in range(2 * n) if k != i]
        assert torch.allclose(d.basic[i], z[pos], atol=1e-6)
        assert torch.allclose(d.extra[i], -_softmax_weighted(z[i], others, tau), atol=1e-5)
        assert torch.allclose(d.grad[i], z[pos] - _softmax_weighted(z[i], others, tau), atol=1e-5)
    assert torch.allclose(d.o_p, z.mean(0)) and torch.allclose(d.center, d.extra.mean(0))


def test_simclr_gradient_is_the_nt_xent_gradient_through_the_anchors() -> None:
    """Same loss as training: anchor i's term of gsg's nt_xent, with only row i live (the other rows constant),
    has the gradient of the decomposition. nt_xent normalises its inputs, so at unit rows its gradient is the
    decomposition's projected on the sphere's tangent plane, (I − Z_i Z_iᵀ)."""
    from gsg.ssl.contrastive import nt_xent

    torch.manual_seed(1)
    n, tau = 4, 0.2
    za, zb = F.normalize(torch.randn(n, 6), dim=1), F.normalize(torch.randn(n, 6), dim=1)
    d = simclr_decomposition(za, zb, tau)
    z = torch.cat([za, zb])
    for i in range(2 * n):
        live = z[i].clone().requires_grad_(True)
        rows = torch.cat([z[:i], live[None], z[i + 1:]])
        (g,) = torch.autograd.grad(nt_xent(rows[:n], rows[n:], tau)[i], live)
        ours = d.grad[i] - (d.grad[i] @ z[i]) * z[i]
        assert torch.allclose(ours, -g * tau, atol=1e-5)


def test_moco_extra_gradient_is_the_key_lag_minus_the_softmax_weighted_keys() -> None:
    torch.manual_seed(2)
    n, k_size, tau = 4, 7, 0.2
    q = [torch.randn(n, 8), torch.randn(n, 8)]
    k = [torch.randn(n, 8), torch.randn(n, 8)]
    queue = torch.randn(k_size, 8)
    qu, ku, cu = (F.normalize(x, dim=1) for x in (torch.cat(q), torch.cat(k), queue))
    d = moco_decomposition(q, k, queue, tau)
    assert d.grad.shape == (n, 8)  # MoCo v2: only the view-1 queries are anchors
    for i in range(n):
        cands = [ku[n + i], *cu]  # the positive key of view 2, then the queue
        assert torch.allclose(d.basic[i], qu[n + i], atol=1e-6)  # the other crop's online output
        assert torch.allclose(d.extra[i], ku[n + i] - qu[n + i] - _softmax_weighted(qu[i], cands, tau), atol=1e-5)
    assert torch.allclose(d.o_p, qu.mean(0), atol=1e-6)
    sym = moco_decomposition(q, k, queue, tau, symmetric=True)
    assert sym.grad.shape == (2 * n, 8) and torch.allclose(sym.grad[:n], d.grad, atol=1e-6)
    for i in range(n):  # the symmetric rows: view-2 queries against view-1 keys
        cands = [ku[i], *cu]
        assert torch.allclose(sym.extra[n + i], ku[i] - qu[i] - _softmax_weighted(qu[n + i], cands, tau),
                              atol=1e-5)


def test_bad_input_names_the_fix() -> None:
    z = torch.randn(4, 8)
    with pytest.raises(ConfigError, match="temperature must be positive"):
        simclr_decomposition(z, z, 0.0)
    with pytest.raises(ConfigError, match="N >= 2"):
        simclr_decomposition(z[:1], z[:1], 0.5)
    with pytest.raises(ConfigError, match="queue of negatives"):
        contrastive_batch_metrics("moco", [z, z], [z, z], 0.2)
    with pytest.raises(ConfigError, match="not a contrastive method"):
        contrastive_batch_metrics("simsiam", [z, z], [z, z], 0.2)


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_contrastive_training_logs_and_diagnose_reports_the_decomposition(make_config, method: str) -> None:
    from gsg.eval.diagnose import diagnose

    cfg = make_config(ssl={"method": method, **({"queue_size": 48} if method == "moco" else {})},
                      run={"limit_batches": 2})
    r = Trainer(cfg).fit()
    # InfoNCE always has an extra gradient: the softmax-weighted candidates (and MoCo's key lag)
    assert r["ge_norm"] > 0 and r["basic_norm"] == pytest.approx(1.0, abs=1e-4)
    assert all(k in r for k in ("ge_center_norm", "ge_residual_norm", "eta_p", "p_center_norm"))
    assert "sel_eta" not in r
    dec = diagnose(Path(cfg.run.out) / "checkpoint.pt", samples=64, batch_size=32)["decomposition"]
    assert dec["batches"] == 2 and dec["ge_norm"] > 0 and dec["sd"]["ge_norm"] is not None
