"""The stop-gradient policies against a literal, loop-based transcription of the paper (eq. 1, 6, 7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gsg.errors import ConfigError
from gsg.ssl.stopgrad import (
    derangement,
    negative_cosine,
    pair_distances,
    policy_loss,
    select_cases,
)


def D(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    # D(p, z) = -(p/||p||_2) . (z/||z||_2), written out.
    return -(p / p.norm()) @ (z / z.norm())


def reference_gsg(p11, p12, z11, z12, p21, p22, z21, z22, policy="guided"):
    """Appendix A's pseudocode, one pair at a time, with eq. 7 for reverse. Returns (loss, cases)."""
    losses, cases = [], []
    for i in range(p11.shape[0]):
        d1121 = torch.dist(z11[i], z21[i])
        d1122 = torch.dist(z11[i], z22[i])
        d1221 = torch.dist(z12[i], z21[i])
        d1222 = torch.dist(z12[i], z22[i])
        m = min(d1121, d1122, d1221, d1222)
        if d1121 == m:
            case = 0
        elif d1122 == m:
            case = 1
        elif d1221 == m:
            case = 2
        else:
            case = 3
        if policy == "reverse":
            case = 3 - case
        if case == 0:
            loss = D(p11[i], z12[i].detach()) + D(p21[i], z22[i].detach())
        elif case == 1:
            loss = D(p11[i], z12[i].detach()) + D(p22[i], z21[i].detach())
        elif case == 2:
            loss = D(p12[i], z11[i].detach()) + D(p21[i], z22[i].detach())
        else:
            loss = D(p12[i], z11[i].detach()) + D(p22[i], z21[i].detach())
        losses.append(0.5 * loss)
        cases.append(case)
    return sum(losses) / len(losses), torch.tensor(cases)


def _views(b: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(8)]


@pytest.mark.parametrize("policy", ["guided", "reverse"])
@pytest.mark.parametrize("b", [2, 3, 17])
def test_guided_and_reverse_match_literal_transcription(policy: str, b: int) -> None:
    p11, p12, z11, z12, p21, p22, z21, z22 = _views(b, 8, seed=b)
    out = policy_loss(policy, p1=(p11, p12), t1=(z11, z12), p2=(p21, p22), t2=(z21, z22))
    ref_loss, ref_cases = reference_gsg(p11, p12, z11, z12, p21, p22, z21, z22, policy)
    assert torch.equal(out.cases.cpu(), ref_cases)
    assert out.loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)


def test_ties_go_to_first_case_as_in_the_if_elif_chain() -> None:
    # Image 2's views coincide, so d(11,21) == d(11,22) and d(12,21) == d(12,22): a tie in every pair.
    p11, p12, z11, z12, p21, _, z21, _ = _views(5, 4, seed=3)
    z22, p22 = z21.clone(), p21.clone()
    out = policy_loss("guided", p1=(p11, p12), t1=(z11, z12), p2=(p21, p22), t2=(z21, z22))
    _, ref_cases = reference_gsg(p11, p12, z11, z12, p21, p22, z21, z22)
    assert torch.equal(out.cases, ref_cases)
    assert set(out.cases.tolist()) <= {0, 2}  # the first of each tied pair
    # All four equal: case 0.
    z = torch.ones(2, 3)
    assert select_cases("guided", pair_distances((z, z), (z, z))).tolist() == [0, 0]
    assert select_cases("reverse", pair_distances((z, z), (z, z))).tolist() == [3, 3]


def test_reuse_mode_equals_fresh_mode_with_partner_views() -> None:
    p11, p12, z11, z12, *_ = _views(6, 5, seed=1)
    partner = derangement(6, generator=torch.Generator().manual_seed(0))
    reuse = policy_loss("guided", p1=(p11, p12), t1=(z11, z12), partner=partner)
    fresh = policy_loss("guided", p1=(p11, p12), t1=(z11, z12), p2=(p11[partner], p12[partner]),
                        t2=(z11[partner], z12[partner]))
    ref_loss, ref_cases = reference_gsg(p11, p12, z11, z12, p11[partner], p12[partner], z11[partner], z12[partner])
    assert torch.equal(reuse.cases, fresh.cases) and torch.equal(reuse.cases, ref_cases)
    assert reuse.loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)


def test_symmetric_is_eq1() -> None:
    p1, p2, z1, z2, *_ = _views(4, 6, seed=2)
    out = policy_loss("symmetric", p1=(p1, p2), t1=(z1, z2))
    ref = sum(0.5 * D(p1[i], z2[i]) + 0.5 * D(p2[i], z1[i]) for i in range(4)) / 4
    assert out.loss.item() == pytest.approx(ref.item(), abs=1e-6)
    assert out.cases is None


def test_random_policy_is_one_of_the_four_cases_uniformly() -> None:
    b = 4000
    p11, p12, z11, z12, p21, p22, z21, z22 = _views(b, 4, seed=5)
    out = policy_loss("random", p1=(p11, p12), t1=(z11, z12), p2=(p21, p22), t2=(z21, z22),
                      generator=torch.Generator().manual_seed(0))
    share = torch.bincount(out.cases, minlength=4).double() / b
    assert torch.allclose(share, torch.full((4,), 0.25, dtype=torch.float64), atol=0.03)
    # Each pair's loss is exactly the eq. 6 loss of its drawn case.
    for case in range(4):
        idx = (out.cases == case).nonzero().flatten()[:3]
        for i in idx.tolist():
            a, c = case // 2, case % 2
            ref = 0.5 * D((p11, p12)[a][i], (z11, z12)[1 - a][i]) + 0.5 * D((p21, p22)[c][i], (z21, z22)[1 - c][i])
            assert out.per_sample[i].item() == pytest.approx(ref.item(), abs=1e-6)


def test_gradients_reach_only_the_predictor_branch() -> None:
    b, d = 6, 5
    zs = [torch.randn(b, d, requires_grad=True) for _ in range(4)]
    ps = [z * 2.0 + 0.1 for z in zs]  # a differentiable "predictor"
    targets = [z for z in zs]
    out = policy_loss("guided", p1=(ps[0], ps[1]), t1=(targets[0], targets[1]),
                      p2=(ps[2], ps[3]), t2=(targets[2], targets[3]))
    # Gradient through the prediction only: compare with a loss where targets are constants.
    consts = [z.detach().clone() for z in zs]
    ref = policy_loss("guided", p1=(ps[0], ps[1]), t1=(consts[0], consts[1]),
                      p2=(ps[2], ps[3]), t2=(consts[2], consts[3]))
    g = torch.autograd.grad(out.loss, zs, retain_graph=True)
    g_ref = torch.autograd.grad(ref.loss, zs)
    for a, r in zip(g, g_ref, strict=True):
        assert torch.allclose(a, r)
    # A view that got stop-gradient in every pair receives no gradient: its rows are zero.
    a = out.cases // 2
    grad_view1 = g[0]
    assert torch.all(grad_view1[a == 1] == 0)  # view 11 was the target wherever view 12 got the predictor
    assert torch.all(grad_view1[a == 0].abs().sum(1) > 0)


def test_distances_carry_no_gradient() -> None:
    z = [torch.randn(3, 4, requires_grad=True) for _ in range(4)]
    d = pair_distances((z[0], z[1]), (z[2], z[3]))
    assert not d.requires_grad
    ref = torch.stack([torch.cdist(z[i][None], z[j][None])[0].diagonal() for i, j in [(0, 2), (0, 3), (1, 2), (1, 3)]],
                      dim=1)
    assert torch.allclose(d, ref.detach(), atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_is_a_bijection_without_fixed_points(n: int) -> None:
    for seed in range(20):
        partner = derangement(n, generator=torch.Generator().manual_seed(seed))
        assert sorted(partner.tolist()) == list(range(n))
        assert bool((partner != torch.arange(n)).all())


def test_derangement_partner_is_uniform_over_the_others() -> None:
    n, trials = 5, 4000
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(n)
    for _ in range(trials):
        counts[derangement(n, generator=g)[0]] += 1
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / trials, torch.full((4,), 0.25), atol=0.03)


def test_batch_of_one_cannot_be_paired() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        derangement(1)


def test_negative_cosine_matches_formula() -> None:
    p, z = torch.randn(7, 3), torch.randn(7, 3)
    ref = -(F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(1)
    assert torch.allclose(negative_cosine(p, z), ref, atol=1e-6)


def test_unknown_policy_and_bad_shapes_are_clear_errors() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="choose one of"):
        policy_loss("guidd", p1=(x, x), t1=(x, x))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="partner"):
        policy_loss("guided", p1=(x, x), t1=(x, x))
    with pytest.raises(ConfigError, match="one shape"):
        policy_loss("symmetric", p1=(x, torch.randn(4, 2)), t1=(x, x))


def test_nan_distances_keep_cases_in_range_and_empty_batch_is_an_error() -> None:
    z = torch.randn(3, 4)
    bad = z.clone()
    bad[1] = float("nan")
    cases = select_cases("guided", pair_distances((bad, z), (z, z)))
    assert cases.tolist()[1] in (0, 1, 2, 3) and cases.max() <= 3
    assert select_cases("reverse", torch.full((2, 4), float("nan"))).tolist() == [3, 3]
    empty = torch.zeros(0, 4)
    with pytest.raises(ConfigError, match="empty"):
        policy_loss("symmetric", p1=(empty, empty), t1=(empty, empty))
