"""The faithful two-crop pairing (reuse + matching): disjoint pairs, one decision each, one directed term per image.

Checked against a literal loop transcription of the paper's per-pair rule (Appendix A with x21, x22 taken as the
partner's existing crops), on gradients of a tiny model, and for the loss scale of eq. 1.
"""

from __future__ import annotations

import pytest
import torch

from gsg.config import load_config, resolved_pairing
from gsg.errors import ConfigError
from gsg.ssl.stopgrad import derangement, perfect_matching, policy_loss


def D(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -(p / p.norm()) @ (z / z.norm())


def reference_matched(p1, p2, z1, z2, pairs, policy="guided", cases=None):
    """One pair at a time: Appendix A's if/elif chain on (x1, x2) = (pairs[k, 0], pairs[k, 1]).

    Returns the per-image term (each image in a pair gets its own directed term; an unpaired image gets eq. 1),
    the mean over images, and the cases. ``cases`` given: use them (the random policy).
    """
    n = p1.shape[0]
    per = [None] * n
    out_cases = []
    for k, (i, j) in enumerate(pairs.tolist()):
        d = [torch.dist(z1[i], z1[j]), torch.dist(z1[i], z2[j]), torch.dist(z2[i], z1[j]), torch.dist(z2[i], z2[j])]
        m = min(d)
        case = next(c for c in range(4) if d[c] == m)
        if policy == "reverse":
            case = 3 - case
        if cases is not None:
            case = int(cases[k])
        out_cases.append(case)
        pi, zi = (p1, p2), (z1, z2)
        a, b = case // 2, case % 2
        per[i] = D(pi[a][i], zi[1 - a][i])  # view a of x1 gets the predictor, its other view the stop-gradient
        per[j] = D(pi[b][j], zi[1 - b][j])
    for i in range(n):
        if per[i] is None:
            per[i] = 0.5 * D(p1[i], z2[i]) + 0.5 * D(p2[i], z1[i])
    per_t = torch.stack(per)
    return per_t, per_t.mean(), torch.tensor(out_cases)


def _views(b: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(4)]


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_every_image_is_in_exactly_one_pair(n: int) -> None:
    for seed in range(10):
        pairs = perfect_matching(n, generator=torch.Generator().manual_seed(seed))
        assert pairs.shape == (n // 2, 2)
        flat = pairs.flatten().tolist()
        assert len(set(flat)) == len(flat) == 2 * (n // 2)  # disjoint, no self-pairs
        assert set(flat) <= set(range(n))


def test_matching_partner_is_uniform_over_the_others() -> None:
    n, trials = 5, 4000
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(n)
    for _ in range(trials):
        pairs = perfect_matching(n, generator=g)
        for i, j in pairs.tolist():
            if i == 0:
                counts[j] += 1
            elif j == 0:
                counts[i] += 1
    # image 0 is unpaired with probability 1/5, and otherwise paired uniformly with one of the other 4
    assert counts[0] == 0
    assert torch.allclose(counts[1:] / trials, torch.full((4,), 0.2), atol=0.03)


@pytest.mark.parametrize("policy", ["guided", "reverse"])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_matched_rule_matches_literal_transcription(policy: str, n: int) -> None:
    p1, p2, z1, z2 = _views(n, 6, seed=n)
    pairs = perfect_matching(n, generator=torch.Generator().manual_seed(1))
    out = policy_loss(policy, p1=(p1, p2), t1=(z1, z2), pairs=pairs)
    ref_per, ref_loss, ref_cases = reference_matched(p1, p2, z1, z2, pairs, policy)
    assert torch.equal(out.cases, ref_cases)
    assert torch.allclose(out.per_sample.double(), ref_per, atol=1e-6)
    assert out.loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)


def test_random_matched_uses_its_drawn_cases() -> None:
    p1, p2, z1, z2 = _views(9, 4, seed=3)
    pairs = perfect_matching(9, generator=torch.Generator().manual_seed(2))
    out = policy_loss("random", p1=(p1, p2), t1=(z1, z2), pairs=pairs, generator=torch.Generator().manual_seed(0))
    ref_per, ref_loss, _ = reference_matched(p1, p2, z1, z2, pairs, cases=out.cases)
    assert out.loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    assert torch.allclose(out.per_sample.double(), ref_per, atol=1e-6)
    assert out.cases.shape == (4,)


@pytest.mark.parametrize("policy", ["guided", "reverse", "random"])
def test_no_image_receives_the_symmetric_gradient(policy: str) -> None:
    # A tiny model: per-view linear encoder and predictor. Under matched pairs every paired image must get
    # gradient through exactly one of its two predictions (one directed term), never both (eq. 1).
    torch.manual_seed(0)
    n, d = 12, 5
    enc, pred = torch.nn.Linear(7, d), torch.nn.Linear(d, d)
    x1, x2 = torch.randn(n, 7), torch.randn(n, 7)
    z1, z2 = enc(x1), enc(x2)
    q1, q2 = pred(z1), pred(z2)
    q1.retain_grad()
    q2.retain_grad()
    pairs = perfect_matching(n, generator=torch.Generator().manual_seed(4))
    out = policy_loss(policy, p1=(q1, q2), t1=(z1, z2), pairs=pairs, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    has1 = q1.grad.abs().sum(1) > 0
    has2 = q2.grad.abs().sum(1) > 0
    assert torch.all(has1 ^ has2), "every image takes exactly one directed term"
    # ... and the cycle pairing, for contrast, hands some images both (the symmetric gradient)
    z1, z2 = enc(x1), enc(x2)
    q1, q2 = pred(z1), pred(z2)
    q1.retain_grad()
    q2.retain_grad()
    partner = derangement(n, generator=torch.Generator().manual_seed(4))
    policy_loss("guided", p1=(q1, q2), t1=(z1, z2), partner=partner).loss.backward()
    both = (q1.grad.abs().sum(1) > 0) & (q2.grad.abs().sum(1) > 0)
    assert both.any()


def test_odd_batch_gives_the_unpaired_image_the_symmetric_term() -> None:
    p1, p2, z1, z2 = _views(7, 4, seed=9)
    pairs = perfect_matching(7, generator=torch.Generator().manual_seed(0))
    left = (set(range(7)) - set(pairs.flatten().tolist())).pop()
    out = policy_loss("guided", p1=(p1, p2), t1=(z1, z2), pairs=pairs)
    sym = 0.5 * D(p1[left], z2[left]) + 0.5 * D(p2[left], z1[left])
    assert out.per_sample[left].item() == pytest.approx(sym.item(), abs=1e-6)


def test_loss_has_the_symmetric_loss_scale() -> None:
    # Mean over images of one term each: when p == z for every view, every directed term is -1 and so is eq. 1.
    z1, z2 = _views(10, 8, seed=0)[:2]
    pairs = perfect_matching(10, generator=torch.Generator().manual_seed(0))
    out = policy_loss("guided", p1=(z1, z2), t1=(z1, z2), pairs=pairs)
    sym = policy_loss("symmetric", p1=(z1, z2), t1=(z1, z2))
    assert out.loss.item() == pytest.approx(sym.loss.item(), abs=1e-6)
    # On random views the two agree in expectation: each is a mean over images of D of independent vectors.
    p1, p2, z1, z2 = _views(4000, 3, seed=1)
    pairs = perfect_matching(4000, generator=torch.Generator().manual_seed(0))
    shifted = (p1 + z2, p2 + z1)  # predictions correlated with the other view: every D around -0.7
    m = policy_loss("random", p1=shifted, t1=(z1, z2), pairs=pairs, generator=torch.Generator().manual_seed(0))
    s = policy_loss("symmetric", p1=shifted, t1=(z1, z2))
    assert m.loss.item() == pytest.approx(s.loss.item(), abs=0.02)
    assert s.loss.item() < -0.5


def test_pairs_exclude_partner_and_bad_shapes() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError, match="not both"):
        policy_loss("guided", p1=(x, x), t1=(x, x), pairs=perfect_matching(4), partner=derangement(4))
    with pytest.raises(ConfigError, match="shape"):
        policy_loss("guided", p1=(x, x), t1=(x, x), pairs=torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ConfigError, match="at least 2"):
        perfect_matching(1)


def test_config_pairing_defaults_and_errors() -> None:
    assert resolved_pairing(load_config().ssl) == "matching"
    assert resolved_pairing(load_config(overrides={"ssl": {"views": "fresh"}}).ssl) == "cycle"
    assert resolved_pairing(load_config(overrides={"ssl": {"pairing": "cycle"}}).ssl) == "cycle"
    with pytest.raises(ConfigError, match=r"needs ssl\.views = .reuse."):
        load_config(overrides={"ssl": {"views": "fresh", "pairing": "matching"}})
    with pytest.raises(ConfigError, match="did you mean 'matching'"):
        load_config(overrides={"ssl": {"pairing": "matchng"}})
