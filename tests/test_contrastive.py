"""SimCLR's NT-Xent and MoCo's InfoNCE against literal transcriptions of the papers' equations; the key queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gsg.errors import ConfigError
from gsg.ssl.contrastive import info_nce_queue, nt_xent
from gsg.ssl.queue import KeyQueue


def _sim(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u @ v) / (u.norm() * v.norm())


def simclr_literal(z_a: torch.Tensor, z_b: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR (Chen et al. 2020), Algorithm 1 / eq. 1, sample by sample in the paper's interleaved order:
    z_{2k-1} and z_{2k} are the two views of image k; L = 1/(2N) Σ_k [ℓ(2k-1, 2k) + ℓ(2k, 2k-1)].
    Returns the per-anchor losses in our order (view-a anchors, then view-b anchors)."""
    n = z_a.shape[0]
    z = [None] * (2 * n)
    for k in range(n):
        z[2 * k], z[2 * k + 1] = z_a[k], z_b[k]

    def ell(i: int, j: int) -> torch.Tensor:
        num = torch.exp(_sim(z[i], z[j]) / tau)
        den = sum(torch.exp(_sim(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        return -torch.log(num / den)

    return torch.stack([ell(2 * k, 2 * k + 1) for k in range(n)] + [ell(2 * k + 1, 2 * k) for k in range(n)])


def moco_literal(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo (He et al. 2020) eq. 1 per query, with normalised q and k and the queue's keys as negatives."""
    out = []
    for i in range(q.shape[0]):
        qi, ki = q[i] / q[i].norm(), k[i].detach() / k[i].detach().norm()
        pos = torch.exp(qi @ ki / tau)
        neg = sum(torch.exp(qi @ queue[j] / tau) for j in range(queue.shape[0]))
        out.append(-torch.log(pos / (pos + neg)))
    return torch.stack(out)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.5), (5, 8, 0.1), (7, 4, 1.0)])
def test_nt_xent_equals_the_papers_equation_values_and_gradients(n: int, d: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    a = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
    a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
    ours = nt_xent(a1.float(), b1.float(), tau)
    ref = simclr_literal(a2, b2, tau)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    ours.mean().backward()
    ref.mean().backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b1.grad, b2.grad, rtol=1e-4, atol=1e-6)


def test_nt_xent_rows_are_the_same_anchors_of_the_whole_batch() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    full = nt_xent(a, b, 0.5)
    part = nt_xent(a, b, 0.5, rows=slice(2, 4))
    torch.testing.assert_close(part, torch.cat([full[2:4], full[8:10]]))


def test_nt_xent_is_log_2n_minus_1_without_information() -> None:
    # equal similarities: log(2N - 1) exactly; near-orthogonal random features in high dimension: close to it
    n = 16
    same = torch.ones(n, 8)
    torch.testing.assert_close(nt_xent(same, same, 0.5), torch.full((2 * n,), math.log(2 * n - 1)))
    g = torch.Generator().manual_seed(1)
    rand = nt_xent(torch.randn(n, 4096, generator=g), torch.randn(n, 4096, generator=g), 0.5)
    assert abs(float(rand.mean()) - math.log(2 * n - 1)) < 0.01
    # the positive aligned with its anchor: much lower than chance
    z = torch.randn(n, 64, generator=g)
    assert float(nt_xent(z, z, 0.1).mean()) < 0.1


def test_nt_xent_and_info_nce_bad_input_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="at least 2 images"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4), 0.5)
    with pytest.raises(ConfigError, match="temperature must be positive"):
        nt_xent(torch.randn(4, 4), torch.randn(4, 4), 0.0)
    with pytest.raises(ConfigError, match="temperature must be positive"):
        info_nce_queue(torch.randn(4, 4), torch.randn(4, 4), torch.randn(8, 4), -0.2)
    with pytest.raises(ConfigError, match="one shape"):
        nt_xent(torch.randn(4, 4), torch.randn(3, 4), 0.5)
    with pytest.raises(ConfigError, match="queue"):
        info_nce_queue(torch.randn(4, 4), torch.randn(4, 4), torch.randn(8, 5), 0.2)


@pytest.mark.parametrize("n,k,tau", [(3, 5, 0.2), (6, 16, 0.07)])
def test_info_nce_queue_equals_moco_eq1_and_only_the_query_gets_gradient(n: int, k: int, tau: float) -> None:
    g = torch.Generator().manual_seed(n + k)
    q = torch.randn(n, 8, generator=g, dtype=torch.float64)
    key = torch.randn(n, 8, generator=g, dtype=torch.float64)
    queue = F.normalize(torch.randn(k, 8, generator=g, dtype=torch.float64), dim=1)
    q1, q2 = q.clone().requires_grad_(), q.clone().requires_grad_()
    k1 = key.clone().float().requires_grad_()
    ours = info_nce_queue(q1.float(), k1, queue.float(), tau)
    ref = moco_literal(q2, key, queue, tau)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-5)
    ours.mean().backward()
    ref.mean().backward()
    torch.testing.assert_close(q1.grad, q2.grad, rtol=1e-4, atol=1e-6)
    assert k1.grad is None  # the key is under stop-gradient


def test_key_queue_pointer_advances_wraps_and_normalises() -> None:
    q = KeyQueue(6, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(q.keys.norm(dim=1), torch.ones(6))  # random unit vectors, as MoCo
    assert q.ptr.dtype == torch.long and int(q.ptr) == 0
    first = torch.tensor([[2.0, 0, 0], [0, 3.0, 0], [0, 0, 4.0], [1.0, 1.0, 0]])
    init = q.keys.clone()
    q.enqueue(first)
    assert int(q.ptr) == 4
    torch.testing.assert_close(q.keys[:4], F.normalize(first, dim=1))
    torch.testing.assert_close(q.keys[4:], init[4:])
    second = torch.tensor([[5.0, 0, 0], [0, 6.0, 0], [0, 0, 7.0], [0, 1.0, 1.0]])
    q.enqueue(second)
    assert int(q.ptr) == 2  # (4 + 4) mod 6: slots 4, 5, 0, 1
    torch.testing.assert_close(q.keys[[4, 5, 0, 1]], F.normalize(second, dim=1))
    torch.testing.assert_close(q.keys[2:4], F.normalize(first, dim=1)[2:4])
    assert set(q.state_dict()) == {"keys", "ptr"}
    with pytest.raises(ConfigError, match="at most 6 keys"):
        q.enqueue(torch.randn(7, 3))
    with pytest.raises(ConfigError, match="dimension 3"):
        q.enqueue(torch.randn(2, 4))


def test_docstring_examples_run() -> None:
    import doctest

    import gsg.ssl.contrastive
    import gsg.ssl.queue

    for mod in (gsg.ssl.contrastive, gsg.ssl.queue):
        res = doctest.testmod(mod)
        assert res.attempted > 0 and res.failed == 0, mod.__name__
