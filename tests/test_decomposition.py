"""Zhang et al.'s gradient decomposition, the directed terms it is built on, the toy losses, gradient surgery and
the symmetric / inverse / bias predictors — against hand-derived cases and literal transcriptions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from gsg.analysis.decomposition import (
    batch_metrics,
    decompose,
    eta,
    loss_decomposition,
    negative_gradient,
    selection_decomposition,
)
from gsg.checkpoint import load_checkpoint
from gsg.config import load_config
from gsg.errors import ConfigError
from gsg.models.heads import BiasPredictor, InversePredictor, SymmetricPredictor, predictor
from gsg.ssl.stopgrad import derangement, negative_cosine, perfect_matching, policy_loss
from gsg.ssl.surgery import GradSurgery
from gsg.ssl.terms import Terms, policy_terms, symmetric_terms, target_loss, terms_loss
from gsg.ssl.toy_losses import toy_loss
from gsg.train.loop import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
POLICIES = ("symmetric", "guided", "random", "reverse")


def _unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=1)


def _views(n: int, d: int = 6, k: int = 4, seed: int = 0, grad: bool = False) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g).requires_grad_(grad) for _ in range(k)]


def _run_policy(policy: str, mode: str, p: list[Tensor], t: list[Tensor], seed: int = 1) -> tuple[Tensor, Terms]:
    """The policy's loss in one of the three pairings, and its terms from the decisions it took."""
    n = p[0].shape[0]
    gen = torch.Generator().manual_seed(seed)
    if mode == "fresh":
        res = policy_loss(policy, p1=(p[0], p[1]), t1=(t[0], t[1]), p2=(p[2], p[3]), t2=(t[2], t[3]),
                          generator=gen)  # type: ignore[arg-type]
        return res.loss, policy_terms(policy, n, views=4, cases=res.cases)
    pairs = perfect_matching(n, generator=gen) if mode == "matching" and policy != "symmetric" else None
    partner = derangement(n, generator=gen) if mode == "cycle" and policy != "symmetric" else None
    res = policy_loss(policy, p1=(p[0], p[1]), t1=(t[0], t[1]), pairs=pairs, partner=partner,
                      generator=gen)  # type: ignore[arg-type]
    return res.loss, policy_terms(policy, n, cases=res.cases, pairs=pairs, partner=partner)


# ------------------------------------------------------------------------------------------ the terms


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["matching", "cycle", "fresh"])
@pytest.mark.parametrize("n", [6, 7])
def test_terms_reproduce_the_policy_loss_and_its_gradient(policy: str, mode: str, n: int) -> None:
    views = 4 if mode == "fresh" else 2
    p, t = _views(n, k=views, grad=True), _views(n, k=views, seed=5)
    loss, terms = _run_policy(policy, mode, p, t)
    assert float(terms.weight.sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(terms.on % n, terms.pos % n)  # every term compares two crops of one image
    assert bool(((terms.on // n) != (terms.pos // n)).all())
    again = terms_loss(terms, p, t)
    assert float(again.detach()) == pytest.approx(float(loss.detach()), abs=1e-6)
    for a, b in zip(torch.autograd.grad(loss, p), torch.autograd.grad(again, p), strict=True):
        assert torch.allclose(a, b, atol=1e-7)


def test_matched_terms_give_each_image_one_term_on_the_crop_its_case_chose() -> None:
    n = 6
    pairs = torch.tensor([[0, 3], [1, 4], [2, 5]])
    cases = torch.tensor([0, 1, 3])  # (11,21): view 0 of 0 and of 3; (11,22): view 0 of 1, view 1 of 4; ...
    terms = policy_terms("guided", n, cases=cases, pairs=pairs)
    got = sorted(zip(terms.on.tolist(), terms.pos.tolist(), strict=True))
    # row = view * n + image
    assert got == sorted([(0, 6), (3, 9), (1, 7), (10, 4), (8, 2), (11, 5)])
    assert torch.allclose(terms.weight, torch.full((6,), 1 / 6))


# ------------------------------------------------------------------------------------------ the decomposition


def test_triplet_loss_has_extra_gradient_minus_the_negative() -> None:
    za, zb, zn = (_unit(x) for x in _views(8, d=5, k=3))
    grad = negative_gradient(lambda x: -(x * (zb - zn)).sum(1).mean(), za) * 8  # per-sample
    d = decompose(grad, zb, za.mean(0))
    assert torch.allclose(d.extra, -zn, atol=1e-6)
    assert torch.allclose(d.center, -zn.mean(0), atol=1e-6)
    assert torch.allclose(d.residual, -(zn - zn.mean(0)), atol=1e-6)


def test_eta_p_of_a_constructed_centre_is_its_coefficient() -> None:
    o_p = torch.tensor([0.3, -0.4, 0.5, 0.1])
    ortho = torch.tensor([0.4, 0.3, 0.0, 0.0])  # ⊥ o_p
    assert float(ortho @ o_p) == pytest.approx(0.0)
    for c in (-0.5, 0.0, 0.8):
        assert eta(c * o_p, o_p) == pytest.approx(c)
        assert eta(c * o_p + ortho, o_p) == pytest.approx(c)  # only the part along o_p counts
        # the definition: o_e − η o_p is orthogonal to o_p
        o_e = c * o_p + ortho
        assert float((o_e - eta(o_e, o_p) * o_p) @ o_p) == pytest.approx(0.0, abs=1e-7)
    grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    basic = grad - (-0.5 * o_p)  # every sample's G_e is -0.5 o_p
    m = decompose(grad, basic, o_p).metrics()
    assert m["ge_eta"] == pytest.approx(-0.5) and m["ge_center_cos"] == pytest.approx(-1.0)
    assert m["ge_residual_norm"] == pytest.approx(0.0, abs=1e-6)
    quarters = torch.arange(20.0).reshape(5, 4) / 4  # exact in float32: G_e is exactly the same on every row
    exact = decompose(quarters + torch.tensor([1.0, 0.0, 0.0, 0.0]), quarters, o_p).metrics()
    assert exact["ge_residual_norm"] == 0.0 and "ge_center_residual_ratio" not in exact
    assert torch.isnan(torch.tensor(eta(o_p, torch.zeros(4))))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["matching", "cycle", "fresh"])
def test_no_predictor_has_exactly_zero_extra_gradient(policy: str, mode: str) -> None:
    views = 4 if mode == "fresh" else 2
    z = _views(7, k=views)
    _, terms = _run_policy(policy, mode, z, [zi.detach() for zi in z])
    d = loss_decomposition(z, [zi.detach() for zi in z], terms)
    assert torch.equal(d.extra, torch.zeros_like(d.extra))
    assert torch.allclose(d.grad, d.basic) and d.grad.shape[0] == int((terms.row_weight() > 0).sum())


def test_simsiam_extra_gradient_is_z_b_minus_p_b_literally() -> None:
    n = 5
    p, z = _views(n, k=2), _views(n, k=2, seed=3)
    d = loss_decomposition(p, z, symmetric_terms(n))
    P, Z = [_unit(x) for x in p], [_unit(x) for x in z]
    # rows: view 0 of every image (its target is view 1), then view 1 (target view 0)
    rows = [(0, i) for i in range(n)] + [(1, i) for i in range(n)]
    for r, (v, i) in enumerate(rows):
        assert torch.allclose(d.grad[r], Z[1 - v][i], atol=1e-6)  # -dL/dP_a = Z_b
        assert torch.allclose(d.basic[r], P[1 - v][i], atol=1e-6)  # basic = P_b
        assert torch.allclose(d.extra[r], Z[1 - v][i] - P[1 - v][i], atol=1e-6)
    o_z, o_p = torch.cat(Z).mean(0), torch.cat(P).mean(0)
    assert torch.allclose(d.center, o_z - o_p, atol=1e-6)  # o_e = o_z - o_p
    assert torch.allclose(d.o_p, o_p, atol=1e-6)


def test_gsg_decomposes_the_crop_its_term_chose_and_leaves_the_target_crop_out() -> None:
    n = 4
    p, z = _views(n, k=2), _views(n, k=2, seed=3)
    pairs, cases = torch.tensor([[0, 1], [2, 3]]), torch.tensor([2, 1])  # (12,21), (11,22)
    terms = policy_terms("guided", n, cases=cases, pairs=pairs)
    d = loss_decomposition(p, z, terms)
    P, Z = [_unit(x) for x in p], [_unit(x) for x in z]
    a = {0: 1, 1: 0, 2: 0, 3: 1}  # the crop of each image that takes the predictor
    assert d.grad.shape == (n, 6)
    # online rows are ordered by row index: view 0's images first
    order = sorted(range(n), key=lambda i: (a[i], i))
    for r, i in enumerate(order):
        assert torch.allclose(d.extra[r], Z[1 - a[i]][i] - P[1 - a[i]][i], atol=1e-6)
    assert torch.allclose(d.o_p, torch.cat(P).mean(0), atol=1e-6)  # o_p over every crop


def test_byol_without_predictor_has_the_ema_lag_as_extra_gradient() -> None:
    n = 6
    z, z_ema = _views(n, k=2), _views(n, k=2, seed=9)
    d = loss_decomposition(z, z_ema, symmetric_terms(n))
    expected = torch.cat([_unit(z_ema[1]) - _unit(z[1]), _unit(z_ema[0]) - _unit(z[0])])
    assert torch.allclose(d.extra, expected, atol=1e-6) and float(d.extra.norm()) > 0


def test_selection_gradient_of_gsg_is_half_the_target_on_a_and_minus_half_on_b() -> None:
    n = 4
    z = _views(n, k=2)
    Z = [_unit(x) for x in z]
    pairs, cases = torch.tensor([[0, 1], [2, 3]]), torch.tensor([0, 3])
    terms = policy_terms("guided", n, cases=cases, pairs=pairs)
    sel = selection_decomposition(z, [x.detach() for x in z], terms, symmetric_terms(n))
    a = {0: 0, 1: 0, 2: 1, 3: 1}
    for i in range(n):  # n·(grad of the chosen term − grad of the symmetric loss), per crop
        assert torch.allclose(sel.extra[a[i] * n + i], 0.5 * Z[1 - a[i]][i], atol=1e-6)
        assert torch.allclose(sel.extra[(1 - a[i]) * n + i], -0.5 * Z[a[i]][i], atol=1e-6)
    same = selection_decomposition(z, z, symmetric_terms(n), symmetric_terms(n))
    assert torch.equal(same.extra, torch.zeros_like(same.extra))


def test_batch_metrics_names_and_values() -> None:
    n = 8
    p, z = _views(n, k=2), _views(n, k=2, seed=2)
    m = batch_metrics(p, z, symmetric_terms(n))
    d = loss_decomposition(p, z, symmetric_terms(n))
    assert m["ge_center_norm"] == pytest.approx(float(d.center.norm()))
    assert m["ge_residual_norm"] == pytest.approx(float(d.residual.norm(dim=1).mean()))
    assert m["ge_center_residual_ratio"] == pytest.approx(m["ge_center_norm"] / m["ge_residual_norm"])
    assert m["eta_p"] == pytest.approx(eta(d.center, d.o_p))
    assert m["grad_norm"] == pytest.approx(1.0) and m["basic_norm"] == pytest.approx(1.0)
    assert not any(k.startswith("sel_") for k in m)
    with pytest.raises(ConfigError, match="views"):
        batch_metrics(p[:1], z[:1], symmetric_terms(n))


# ------------------------------------------------------------------------------------------ toy losses


def test_toy_losses_follow_their_formulas_and_their_gradients_are_o_z_and_r_a() -> None:
    n = 6
    z = _views(n, k=2)
    Z = [_unit(x) for x in z]
    o = torch.cat(Z).mean(0)
    center = toy_loss("center", p=(z[0], z[1]), t=(z[0].detach(), z[1].detach()))
    residual = toy_loss("residual", p=(z[0], z[1]), t=(z[0].detach(), z[1].detach()))
    for i in range(n):  # literal: ½(-Z_0·o - Z_1·o) and ½(-Z_0·(Z_0 - o) - Z_1·(Z_1 - o))
        assert float(center.per_sample[i]) == pytest.approx(float(-0.5 * (Z[0][i] @ o + Z[1][i] @ o)), abs=1e-6)
        lit = -0.5 * (Z[0][i] @ (Z[0][i] - o) + Z[1][i] @ (Z[1][i] - o))
        assert float(residual.per_sample[i]) == pytest.approx(float(lit), abs=1e-6)
    terms = symmetric_terms(n)
    dc = loss_decomposition(z, [x.detach() for x in z], terms, loss="center")
    assert torch.allclose(dc.grad, o.expand(2 * n, -1), atol=1e-6)  # -dL/dZ_a = o_z
    dr = loss_decomposition(z, [x.detach() for x in z], terms, loss="residual")
    assert torch.allclose(dr.grad, torch.cat(Z) - o, atol=1e-6)  # -dL/dZ_a = r_a
    assert eta(dr.center, dr.o_p) == pytest.approx(-1.0, abs=1e-5)  # mean(r_a) - o_z = -o_z
    with pytest.raises(ConfigError, match="center, residual"):
        toy_loss("cosine", p=(z[0], z[1]), t=(z[0], z[1]))


# ------------------------------------------------------------------------------------------ gradient surgery


def _surgery_grad(keep: str, policy: str, p_raw: list[Tensor], t: list[Tensor]) -> tuple[list[Tensor], Terms]:
    p = [x.clone().requires_grad_(True) for x in p_raw]
    n = p[0].shape[0]
    s = GradSurgery(keep) if keep != "none" else None
    q = s.wrap(p) if s is not None else p
    pairs = perfect_matching(n, generator=torch.Generator().manual_seed(0)) if policy != "symmetric" else None
    res = policy_loss(policy, p1=(q[0], q[1]), t1=(t[0], t[1]), pairs=pairs)  # type: ignore[arg-type]
    terms = policy_terms(policy, n, cases=res.cases, pairs=pairs)
    if s is not None:
        s.prepare(q, t, terms)
    res.loss.backward()
    return [x.grad for x in p], terms  # type: ignore[misc]


@pytest.mark.parametrize("policy", ["symmetric", "guided"])
def test_surgery_replaces_the_extra_gradient_by_the_kept_part(policy: str) -> None:
    n = 6
    p_raw, t = _views(n, k=2), _views(n, k=2, seed=4)
    none, terms = _surgery_grad("none", policy, p_raw, t)
    assert all(torch.equal(a, b) for a, b in zip(_surgery_grad("full", policy, p_raw, t)[0], none, strict=True))
    P, T = _unit(torch.cat(p_raw)), _unit(torch.cat(t))
    w = terms.row_weight()
    online = w > 0
    ge = torch.zeros_like(P)
    for k in range(terms.on.numel()):  # literal: per-sample G_e = T_b - P_b
        ge[terms.on[k]] += (T[terms.pos[k]] - P[terms.pos[k]]) * terms.weight[k] / w[terms.on[k]]
    o_e = ge[online].mean(0)
    kept = {"basic": torch.zeros_like(ge), "center": o_e.expand_as(ge), "residual": ge - o_e}
    for keep, extra in kept.items():
        got, _ = _surgery_grad(keep, policy, p_raw, t)
        # the loss whose gradient at P_a is basic + kept: -Σ w P[on]·sg(P[pos] + kept[on])
        x = [xi.clone().requires_grad_(True) for xi in p_raw]
        xs = torch.cat(x)
        target = (P[terms.pos] + extra[terms.on]).detach()
        lit = -(terms.weight * (_unit(xs)[terms.on] * target).sum(1)).sum()
        lit.backward()
        for a, b in zip(got, x, strict=True):
            assert torch.allclose(a, b.grad, atol=1e-6), keep  # type: ignore[arg-type]
        if keep == "basic":
            assert not torch.allclose(got[0], none[0], atol=1e-4)


def test_surgery_correction_follows_the_loss_scale() -> None:
    n = 6
    p_raw, t = _views(n, k=2), _views(n, k=2, seed=4)
    grads = []
    for scale in (1.0, 1024.0):
        p = [x.clone().requires_grad_(True) for x in p_raw]
        s = GradSurgery("center")
        q = s.wrap(p)
        loss = policy_loss("symmetric", p1=(q[0], q[1]), t1=(t[0], t[1])).loss
        s.prepare(q, t, symmetric_terms(n), grad_scale=scale)
        (loss * scale).backward()  # what GradScaler.scale(loss).backward() does
        grads.append(torch.cat([x.grad for x in p]) / scale)  # type: ignore[misc]
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_surgery_backward_before_prepare_is_a_clear_error() -> None:
    s = GradSurgery("basic")
    p = s.wrap([torch.randn(3, 2, requires_grad=True)])
    with pytest.raises(RuntimeError, match="prepare"):
        p[0].sum().backward()
    with pytest.raises(ConfigError, match="basic, center, residual, full"):
        GradSurgery("none")


# ------------------------------------------------------------------------------------------ predictors


def test_bias_symmetric_and_inverse_predictors() -> None:
    z = torch.randn(5, 4)
    bias = predictor("bias", 4)
    assert isinstance(bias, BiasPredictor) and torch.equal(bias(z), z)  # starts at b = 0
    with torch.no_grad():
        bias.bias.fill_(0.5)
    assert torch.equal(bias(z), z + 0.5)
    sym = predictor("symmetric", 4, hidden=3)
    assert isinstance(sym, SymmetricPredictor)
    p = sym(z)
    tgt = sym.target_side(z, p)
    assert torch.equal(tgt, p) and not tgt.requires_grad  # sg(h(z_b)): the prediction itself, detached
    inv = predictor("inverse", 4, hidden=3)
    assert isinstance(inv, InversePredictor)
    assert [type(m) for m in inv.inverse] == [type(m) for m in inv.h]  # h^{-1} has h's architecture
    zz = z.clone().requires_grad_(True)
    inv.target_side(zz, inv(zz)).sum().backward()
    assert zz.grad is None or torch.equal(zz.grad, torch.zeros_like(zz))  # nothing reaches the encoder... via
    assert inv.inverse[0].weight.grad is not None  # ... the target; h^{-1} learns


def test_inverse_predictor_objective_is_the_loss_with_only_the_encoder_output_stopped() -> None:
    torch.manual_seed(0)
    n, d = 6, 4
    inv = InversePredictor(d, 3)
    z = [torch.randn(n, d, requires_grad=True) for _ in range(2)]
    p = [inv(zi) for zi in z]
    t = [inv.target_side(zi, pi) for zi, pi in zip(z, p, strict=True)]
    res = policy_loss("symmetric", p1=(p[0], p[1]), t1=(t[0], t[1]))
    terms = symmetric_terms(n)
    inv_term = target_loss(terms, p, t)
    assert float(inv_term.detach()) == pytest.approx(float(res.loss.detach()), abs=1e-6)
    total = res.loss + (inv_term - inv_term.detach())
    params = [*inv.parameters(), *z]
    got = torch.autograd.grad(total, params, allow_unused=True)
    # literal: ½ D(h(z_0), h^{-1}(sg z_1)) + ½ D(h(z_1), h^{-1}(sg z_0)), no detach on the h^{-1} output
    lit = (0.5 * negative_cosine(inv(z[0]), inv.inverse(z[1].detach()))
           + 0.5 * negative_cosine(inv(z[1]), inv.inverse(z[0].detach()))).mean()
    want = torch.autograd.grad(lit, params, allow_unused=True)
    for a, b in zip(got, want, strict=True):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize("overrides,match", [
    ({"ssl": {"grad_surgery": "basic"}, "model": {"predictor": "none"}}, "extra gradient is 0"),
    ({"ssl": {"grad_surgery": "center"}, "model": {"predictor": "symmetric"}}, "extra gradient is 0"),
    ({"ssl": {"loss": "center", "stop_gradient": "guided"}}, "symmetric"),
    ({"ssl": {"loss": "residual", "stop_gradient": "symmetric", "views": "fresh", "pairing": "cycle"}}, "reuse"),
    ({"ssl": {"loss": "center", "stop_gradient": "symmetric", "grad_surgery": "basic"}}, "cannot be combined"),
    ({"ssl": {"loss": "center", "stop_gradient": "symmetric"}, "model": {"predictor": "inverse"}}, "target side"),
    ({"ssl": {"method": "byol"}, "model": {"predictor": "symmetric"}}, "EMA encoder"),
    ({"ssl": {"grad_surgery": "centre"}}, "did you mean 'center'"),
])
def test_meaningless_combinations_are_clear_errors(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


def test_valid_combinations_load() -> None:
    for o in ({"ssl": {"grad_surgery": "residual", "method": "byol"}, "model": {"predictor": "none"}},
              {"ssl": {"loss": "residual", "stop_gradient": "symmetric"}, "model": {"predictor": "none"}},
              {"ssl": {"stop_gradient": "guided"}, "model": {"predictor": "inverse"}}):
        load_config(overrides=o)


# ------------------------------------------------------------------------------------------ training


def _weights(cfg) -> dict[str, Tensor]:  # type: ignore[no-untyped-def]
    return load_checkpoint(Path(cfg.run.out) / "checkpoint.pt")["model"]


@pytest.mark.parametrize("ssl,pred", [({"stop_gradient": "random"}, "mlp"),
                                      ({"stop_gradient": "guided", "views": "fresh"}, "inverse")])
def test_logging_the_decomposition_leaves_the_weights_bit_identical(tmp_path: Path, ssl: dict, pred: str) -> None:
    from conftest import tiny_config

    common = {"ssl": ssl, "model": {"predictor": pred}, "optim": {"epochs": 2}, "run": {"limit_batches": 2}}
    on = tiny_config(tmp_path / "on", **common)
    off = tiny_config(tmp_path / "off", **{**common, "run": {"limit_batches": 2, "log_decomposition": False}})
    h_on, h_off = Trainer(on).fit()["history"], Trainer(off).fit()["history"]
    a, b = _weights(on), _weights(off)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in h_on] == [h["loss"] for h in h_off]
    assert all("ge_center_norm" in h and "sel_eta" in h and "eta_p" in h for h in h_on)
    assert not any("ge_center_norm" in h for h in h_off)


def test_full_surgery_trains_exactly_as_no_surgery_and_basic_differs(tmp_path: Path) -> None:
    from conftest import tiny_config

    runs = {k: tiny_config(tmp_path / k, ssl={"stop_gradient": "symmetric", "grad_surgery": k},
                           run={"limit_batches": 2}) for k in ("none", "full", "basic")}
    for cfg in runs.values():
        Trainer(cfg).fit()
    w = {k: _weights(c) for k, c in runs.items()}
    assert all(torch.equal(w["none"][k], w["full"][k]) for k in w["none"])
    assert not torch.equal(w["none"]["backbone.conv1.weight"], w["basic"]["backbone.conv1.weight"])


@pytest.mark.parametrize("ssl,pred", [
    ({"stop_gradient": "symmetric"}, "symmetric"), ({"stop_gradient": "guided"}, "inverse"),
    ({"stop_gradient": "symmetric"}, "bias"), ({"stop_gradient": "symmetric", "loss": "center"}, "none"),
    ({"stop_gradient": "symmetric", "loss": "residual"}, "none"),
    ({"stop_gradient": "guided", "grad_surgery": "center"}, "mlp"),
    ({"method": "byol", "stop_gradient": "symmetric"}, "none")])
def test_zhang_options_train_and_log_the_decomposition(make_config, ssl: dict, pred: str) -> None:
    cfg = make_config(ssl=ssl, model={"predictor": pred}, run={"limit_batches": 2})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    r = trainer.fit()
    after = trainer.model.state_dict()
    assert torch.isfinite(torch.tensor(r["loss"])) and -1.0 <= r["loss"] <= 1.0
    assert not torch.equal(before["backbone.conv1.weight"], after["backbone.conv1.weight"])
    assert 0 <= r["z_center_ratio"] <= 1 and 0 <= r["z_residual_ratio"] <= 1
    assert r["grad_norm"] > 0 and "ge_residual_norm" in r
    if pred in ("symmetric", "none") and ssl.get("method") != "byol" and "loss" not in ssl:
        assert r["ge_norm"] == 0.0  # the target is the other crop's own output: no extra gradient
    if pred == "inverse":  # h^{-1} is trained (its gradient comes only from the inverse objective)
        assert not torch.equal(before["predictor.inverse.0.weight"], after["predictor.inverse.0.weight"])
    if pred == "bias":
        assert not torch.equal(before["predictor.bias"], after["predictor.bias"])
    if ssl.get("method") == "byol":
        assert r["ge_norm"] > 0  # the EMA target differs from the online output


def test_diagnose_reports_the_decomposition(make_config, tmp_path: Path) -> None:
    from gsg.eval.diagnose import diagnose

    cfg = make_config(ssl={"stop_gradient": "guided"}, model={"predictor": "mlp"}, run={"limit_batches": 1})
    Trainer(cfg).fit()
    r = diagnose(Path(cfg.run.out) / "checkpoint.pt", samples=64, batch_size=32)
    dec = r["decomposition"]
    assert dec["batches"] == 2 and dec["batch_size"] == 32
    assert dec["ge_norm"] > 0 and "eta_p" in dec and "sel_eta" in dec
    assert dec["sd"]["eta_p"] is not None and dec["sd"]["eta_p"] >= 0 and set(dec["sd"]) <= set(dec)
    assert r["bn"] == "running" and 0 <= dec["z_center_ratio"] <= 1
    # Train-mode statistics on the views (as the per-epoch log): another decomposition, the same clean embeddings
    # (the copy in train mode leaves the checkpoint's running statistics to the clean views).
    rb = diagnose(Path(cfg.run.out) / "checkpoint.pt", samples=64, batch_size=32, bn="batch")
    clean = {k: v for k, v in r["projection"].items() if k != "alignment"}  # alignment is of the views
    assert rb["bn"] == "batch" and rb["backbone"] == r["backbone"]
    assert {k: v for k, v in rb["projection"].items() if k != "alignment"} == clean
    assert rb["decomposition"]["z_center_ratio"] != pytest.approx(dec["z_center_ratio"], abs=1e-6)
    with pytest.raises(ConfigError, match="bn must be 'running'"):
        diagnose(Path(cfg.run.out) / "checkpoint.pt", samples=64, batch_size=32, bn="train")
    nopred = make_config(ssl={"stop_gradient": "symmetric"}, model={"predictor": "none"}, run={"limit_batches": 1,
                                                                                               "out": str(tmp_path)})
    Trainer(nopred).fit()
    r0 = diagnose(tmp_path / "checkpoint.pt", samples=64, batch_size=32)
    assert r0["decomposition"]["ge_norm"] == 0.0 and "sel_eta" not in r0["decomposition"]


def test_batch_mean_sd_is_the_mean_and_sample_sd_over_the_batches_that_have_each_metric() -> None:
    import statistics

    from gsg.eval.diagnose import batch_mean_sd

    out = batch_mean_sd([{"eta_p": -0.5, "ge_norm": 0.2}, {"eta_p": -0.1, "ge_norm": 0.4}, {"ge_norm": 0.9}])
    assert out["eta_p"] == pytest.approx(-0.3) and out["ge_norm"] == pytest.approx(0.5)
    assert out["sd"]["eta_p"] == pytest.approx(statistics.stdev([-0.5, -0.1]))
    assert out["sd"]["ge_norm"] == pytest.approx(statistics.stdev([0.2, 0.4, 0.9]))
    assert batch_mean_sd([{"eta_p": 0.25}])["sd"] == {"eta_p": None}


@pytest.mark.parametrize("module", ["gsg.ssl.terms", "gsg.ssl.toy_losses", "gsg.ssl.surgery",
                                    "gsg.analysis.decomposition"])
def test_docstring_examples_hold(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
