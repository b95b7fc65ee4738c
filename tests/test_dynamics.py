"""Tests for the linear-dynamics simulator of Tian, Chen & Ganguli (2021): gsg.analysis.dynamics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gsg.analysis.dynamics import (
    SIMULATION_EXPERIMENTS,
    balancing_residual,
    collapse_inevitable,
    collapse_threshold,
    commutator_norm,
    directpred_predictor,
    eigenspace_alignment,
    experiment_defaults,
    fixed_points,
    parabola_constant,
    parabola_rate,
    predictor_asymmetry,
    predictor_eigenvalues,
    run_simulation,
    simulate_linear,
    simulate_modes,
    simulate_symmetric,
)
from gsg.errors import ConfigError

SIGMA2 = 0.5
ETA_C = 1.0 / (4.0 * (1.0 + SIGMA2))  # tau = 1


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------------


def test_fixed_points_match_the_notes_numbers() -> None:
    # Notes' own check: sigma^2 = 0.5, eta = 0.01, tau = 1 -> p*_- = 0.01015, p*_+ = 0.65651.
    p_minus, p_plus = fixed_points(tau=1.0, sigma2=0.5, eta=0.01)
    assert p_minus == pytest.approx(0.0101547, abs=1e-6)
    assert p_plus == pytest.approx(0.6565120, abs=1e-6)
    # They are the roots of Delta(p) = p (tau - (1+sigma2) p) - eta (Eq. 16).
    for p in (p_minus, p_plus):
        assert p * (1.0 - 1.5 * p) - 0.01 == pytest.approx(0.0, abs=1e-14)
    assert parabola_rate(np.array([0.0, p_minus, p_plus]), tau=1.0, sigma2=0.5, eta=0.01) == pytest.approx(
        [0.0, 0.0, 0.0], abs=1e-15
    )
    # eta = 0: p*_- = 0 and p*_+ = tau / (1+sigma2).
    assert fixed_points(tau=0.8, sigma2=0.25, eta=0.0) == pytest.approx((0.0, 0.64))


def test_collapse_threshold_and_no_fixed_point_above_it() -> None:
    assert collapse_threshold(1.0, 0.5) == pytest.approx(1.0 / 6.0)
    assert collapse_threshold(0.5, 0.0) == pytest.approx(0.0625)
    assert collapse_inevitable(0.17, 1.0, 0.5) and not collapse_inevitable(0.16, 1.0, 0.5)
    assert all(math.isnan(x) for x in fixed_points(1.0, 0.5, 0.17))
    # At eta_c the two branches meet at tau / (2 (1+sigma2)).
    pm, pp = fixed_points(1.0, 0.5, 1.0 / 6.0)
    assert pm == pytest.approx(1.0 / 3.0, abs=1e-7) and pp == pytest.approx(1.0 / 3.0, abs=1e-7)
    pm_arr, pp_arr = fixed_points(1.0, 0.5, np.array([0.0, 0.1, 0.2]))
    assert np.isnan(pm_arr[2]) and np.isnan(pp_arr[2]) and pp_arr[1] == pytest.approx(0.5442, abs=1e-4)


# ------------------------------------------------------------------------------------------------
# Theorem 1: balancing invariant
# ------------------------------------------------------------------------------------------------


def _correlated_x(n1: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n1, n1)) / math.sqrt(n1)
    B = rng.standard_normal((n1, n1)) / math.sqrt(n1)
    return A @ A.T + 0.5 * np.eye(n1), 0.3 * B @ B.T


def test_balancing_invariant_is_conserved_with_eta_zero() -> None:
    # Theorem 1 holds for any X, X' and Wa dynamics: use non-isotropic data, an EMA target and alpha_p != 1.
    X, Xn = _correlated_x(6, seed=1)
    tr = simulate_linear(n1=6, n2=4, X=X, Xn=Xn, eta=0.0, alpha_p=2.0, beta=0.5, init_scale=0.8, seed=3,
                         dt=0.0025, t_max=20.0, record_every=400, method="rk4")
    R = balancing_residual(tr.W, tr.Wp, alpha_p=2.0)
    drift = np.linalg.norm(R - R[0], axis=(-2, -1)).max() / np.linalg.norm(R[0])
    assert drift < 1e-9
    assert _rel(tr.W[-1], tr.W[0]) > 0.3  # the weights really moved, so the check is not vacuous


def test_balancing_residual_decays_as_exp_minus_two_eta_t() -> None:
    eta = 0.05
    tr = simulate_linear(n1=6, n2=4, sigma2=0.2, eta=eta, alpha_p=0.5, beta=1.0, init_scale=0.8, seed=4,
                         dt=0.0025, t_max=20.0, record_every=2000)
    R = balancing_residual(tr.W, tr.Wp, alpha_p=0.5)
    expected = np.exp(-2.0 * eta * tr.times)[:, None, None] * R[0]
    assert np.abs(R - expected).max() < 1e-9 * np.abs(R[0]).max()


def test_euler_is_first_order_and_rk4_much_more_accurate() -> None:
    kw = dict(n1=5, n2=3, sigma2=0.3, eta=0.0, beta=0.5, init_scale=0.8, seed=2, t_max=5.0,
              record_every=10**6)

    def drift(method: str, dt: float) -> float:
        tr = simulate_linear(method=method, dt=dt, **kw)
        R = balancing_residual(tr.W, tr.Wp)
        return float(np.linalg.norm(R[-1] - R[0]))

    e1, e2 = drift("euler", 0.02), drift("euler", 0.01)
    assert 1.7 < e1 / e2 < 2.3
    assert drift("rk4", 0.02) < 1e-4 * e2


# ------------------------------------------------------------------------------------------------
# Eqs. 7-8 and Theorem 3
# ------------------------------------------------------------------------------------------------


def test_symmetric_reduction_matches_the_full_dynamics() -> None:
    # SimSiam (Wa = W, so tau = 1 exactly), X = I, X' = sigma2 I, symmetrised Wp flow: Eqs. 7-8 are exact.
    rng = np.random.default_rng(5)
    W0 = 0.5 * rng.standard_normal((4, 7))
    Wp0 = rng.standard_normal((4, 4)) * 0.3
    Wp0 = 0.5 * (Wp0 + Wp0.T)
    full = simulate_linear(W0=W0, Wp0=Wp0, sigma2=0.4, eta=0.03, alpha_p=1.5, beta=None,
                           symmetric_predictor=True, dt=0.0025, t_max=10.0, record_every=400)
    red = simulate_symmetric(Wp0, W0 @ W0.T, tau=1.0, sigma2=0.4, eta=0.03, alpha_p=1.5, dt=0.0025,
                             t_max=10.0, record_every=400)
    np.testing.assert_allclose(red.times, full.times)
    assert np.abs(red.F - full.F).max() < 1e-9
    assert np.abs(red.Wp - full.Wp).max() < 1e-9


def test_commutator_decays_under_symmetric_dynamics() -> None:
    rng = np.random.default_rng(0)
    W0 = 0.5 * rng.standard_normal((5, 8))
    A = 0.4 * rng.standard_normal((5, 5))
    Wp0 = 0.5 * (A + A.T)
    F0 = W0 @ W0.T
    c0 = float(commutator_norm(F0, Wp0))
    assert c0 > 0.1
    tr = simulate_symmetric(Wp0, F0, tau=1.0, sigma2=SIGMA2, eta=0.05, alpha_p=1.0, dt=0.05, t_max=300.0,
                            record_every=200)
    c = commutator_norm(tr.F, tr.Wp)
    assert c[-1] < 1e-8 * c0
    # Aligned at the end: every eigenvector of F is an eigenvector of Wp.
    s, cos = eigenspace_alignment(tr.F[-1], tr.Wp[-1])
    alive = s > 1e-6
    assert alive.sum() >= 1 and np.all(cos[alive] > 1 - 1e-9)


# ------------------------------------------------------------------------------------------------
# Eqs. 11-14: per-mode dynamics, fixed points, collapse
# ------------------------------------------------------------------------------------------------


def test_modes_converge_to_p_plus_in_its_basin_and_to_zero_in_the_collapse_basin() -> None:
    eta = 0.05
    pm, pp = fixed_points(1.0, SIGMA2, eta)
    p0 = np.array([1.5 * pm, 3.0 * pm, 0.9, 0.5 * pm, 0.2 * pm, -0.1])
    tr = simulate_modes(p0, p0**2, tau0=1.0, sigma2=SIGMA2, eta=eta, alpha_p=1.0, dt=0.25, t_max=1500.0,
                        record_every=1000)
    p_end, s_end = tr.p[-1], tr.s[-1]
    np.testing.assert_allclose(p_end[:3], pp, atol=1e-8)
    np.testing.assert_allclose(s_end[:3], pp**2, atol=1e-8)
    assert np.all(np.abs(p_end[3:]) < 1e-8) and np.all(s_end[3:] < 1e-12)


def test_mode_equations_equal_the_scalar_lemma1_system() -> None:
    # n1 = n2 = 1: s = w^2, p = w_p, tau = w_a / w, so Eqs. 11-13 are exact (also with an EMA target).
    w0, p0, wa0 = 0.3, 0.2, 0.1
    kw = dict(sigma2=SIGMA2, eta=0.04, alpha_p=1.5, beta=0.4, dt=0.01, t_max=40.0, record_every=500)
    full = simulate_linear(W0=[[w0]], Wp0=[[p0]], Wa0=np.array([[wa0]]), **kw)
    modes = simulate_modes(p0, w0**2, tau0=wa0 / w0, **kw)
    np.testing.assert_allclose(modes.p, full.Wp[:, 0, 0], atol=1e-9)
    np.testing.assert_allclose(modes.s, full.F[:, 0, 0], atol=1e-9)
    np.testing.assert_allclose(modes.tau, full.Wa[:, 0, 0] / full.W[:, 0, 0], atol=1e-8)
    # The EMA lets tau rise to 1 and the mode settles at p*_+(tau = 1).
    late = simulate_modes(p0, w0**2, tau0=wa0 / w0, **{**kw, "dt": 0.1, "t_max": 400.0})
    _, pp = fixed_points(1.0, SIGMA2, 0.04)
    assert late.tau[-1] == pytest.approx(1.0, abs=1e-8) and late.p[-1] == pytest.approx(pp, abs=1e-8)


def test_eq14_parabola_constant_decays_exactly() -> None:
    eta, alpha_p = 0.03, 2.0
    p0 = np.array([0.1, 0.4, -0.2])
    s0 = np.array([0.3, 0.01, 0.2])
    tr = simulate_modes(p0, s0, sigma2=SIGMA2, eta=eta, alpha_p=alpha_p, dt=0.01, t_max=50.0,
                        record_every=500)
    c = parabola_constant(tr.p, tr.s, alpha_p)
    expected = parabola_constant(p0, s0, alpha_p) * np.exp(-2 * eta * tr.times)[:, None]
    assert np.abs(c - expected).max() < 1e-10


def test_every_mode_collapses_just_above_eta_c_and_not_just_below() -> None:
    p0 = np.linspace(0.35, 1.2, 12)  # above p*_- for eta = 0.95 eta_c (p*_- = 0.2588)
    starts = dict(p0=np.concatenate([p0, p0]), s0=np.concatenate([p0**2, 2.0 * p0**2 + 0.1]))
    above = simulate_modes(**starts, tau0=1.0, sigma2=SIGMA2, eta=1.05 * ETA_C, dt=0.25, t_max=800.0,
                           record_every=10**6)
    assert collapse_inevitable(1.05 * ETA_C, 1.0, SIGMA2)
    assert np.all(above.s[-1] < 1e-10) and np.all(np.abs(above.p[-1]) < 1e-5)

    below = simulate_modes(**starts, tau0=1.0, sigma2=SIGMA2, eta=0.95 * ETA_C, dt=0.25, t_max=800.0,
                           record_every=10**6)
    _, pp = fixed_points(1.0, SIGMA2, 0.95 * ETA_C)
    assert pp == pytest.approx(0.40787, abs=1e-5)
    np.testing.assert_allclose(below.p[-1], pp, atol=1e-8)
    np.testing.assert_allclose(below.s[-1], pp**2, atol=1e-8)


def test_full_dynamics_collapse_threshold() -> None:
    # Aligned start on the parabola, p0 = 0.6 > p*_-: survives just below eta_c, collapses just above.
    W0 = 0.6 * np.eye(3, 5)
    Wp0 = 0.6 * np.eye(3)
    kw = dict(W0=W0, Wp0=Wp0, sigma2=SIGMA2, beta=None, dt=0.2, t_max=800.0, record_every=10**6)
    above = simulate_linear(eta=1.05 * ETA_C, **kw)
    assert np.abs(above.F[-1]).max() < 1e-10
    below = simulate_linear(eta=0.95 * ETA_C, **kw)
    _, pp = fixed_points(1.0, SIGMA2, 0.95 * ETA_C)
    np.testing.assert_allclose(np.linalg.eigvalsh(below.F[-1]), pp**2, atol=1e-8)
    np.testing.assert_allclose(predictor_eigenvalues(below.Wp[-1]), pp, atol=1e-8)


def test_full_dynamics_from_random_start_reaches_p_plus_or_zero() -> None:
    tr = simulate_linear(n1=10, n2=5, sigma2=SIGMA2, eta=0.04, beta=0.4, init_scale=0.5, seed=0, dt=0.1,
                         t_max=400.0, record_every=10**6)
    _, pp = fixed_points(1.0, SIGMA2, 0.04)
    p = predictor_eigenvalues(tr.Wp[-1])
    s = np.linalg.eigvalsh(tr.F[-1])[::-1]
    alive = s > 1e-6
    assert alive.sum() >= 2
    np.testing.assert_allclose(p[alive], pp, atol=1e-8)
    np.testing.assert_allclose(s[alive], pp**2, atol=1e-8)
    assert np.all(np.abs(p[~alive]) < 1e-4)
    assert predictor_asymmetry(tr.Wp[-1]) < 1e-5  # Fig. 8: the asymmetric part of Wp decays


def test_batched_parameters_equal_separate_runs() -> None:
    kw = dict(n1=6, n2=3, sigma2=0.2, beta=0.5, init_scale=0.5, seed=7, dt=0.05, t_max=10.0, record_every=50)
    batch = simulate_linear(eta=np.array([0.0, 0.1]), alpha_p=np.array([1.0, 3.0]), **kw)
    for i, (eta, a) in enumerate([(0.0, 1.0), (0.1, 3.0)]):
        single = simulate_linear(eta=eta, alpha_p=a, **kw)
        np.testing.assert_allclose(batch.W[:, i], single.W, rtol=0, atol=1e-13)
        np.testing.assert_allclose(batch.Wp[:, i], single.Wp, rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------------
# DirectPred (Eq. 18)
# ------------------------------------------------------------------------------------------------


def test_directpred_predictor_commutes_and_has_the_eq18_spectrum() -> None:
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 4))
    F = A @ A.T  # rank 4, PSD
    Wp = directpred_predictor(F, eps=0.1)
    assert commutator_norm(F, Wp) < 1e-12
    s = np.clip(np.linalg.eigvalsh(F), 0, None)
    expected = np.sort(np.sqrt(s) + 0.1 * s.max())
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(Wp)), expected, atol=1e-10)


def test_directpred_dynamics_rescue_modes_and_reach_p_plus() -> None:
    kw = dict(n1=12, n2=6, sigma2=SIGMA2, eta=0.04, beta=0.4, init_scale=0.1, seed=0, dt=0.1, t_max=300.0,
              record_every=10**6)
    grad = simulate_linear(**kw)
    direct = simulate_linear(predictor="directpred", directpred_eps=0.1, **kw)
    s_grad = np.linalg.eigvalsh(grad.F[-1])
    s_dir = np.linalg.eigvalsh(direct.F[-1])
    assert (s_grad < 1e-6).sum() >= 1  # the trained predictor loses some modes from this small start
    assert np.all(s_dir > 0.1)  # DirectPred's eps boost keeps all of them
    _, pp = fixed_points(1.0, SIGMA2, 0.04)
    # At rest ds/dt = 0 forces p (tau - (1+sigma2) p) = eta, i.e. p = p*_+, with p = sqrt(s) + eps max(s).
    np.testing.assert_allclose(np.sqrt(s_dir) + 0.1 * s_dir.max(), pp, atol=1e-8)


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt": 0.0}, "dt"),
        ({"method": "midpoint"}, "method"),
        ({"eta": -0.1}, "eta"),
        ({"alpha_p": 0.0}, "alpha_p"),
        ({"predictor": "optimal"}, "predictor"),
        ({"Wa0": "random"}, "Wa0"),
        ({"X": np.eye(3)}, "X must be"),
        ({"t_max": 0.01, "dt": 0.1}, "t_max"),
    ],
)
def test_bad_input_raises_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate_linear(n1=4, n2=2, **kwargs)


def test_divergence_is_reported() -> None:
    with pytest.raises(ConfigError, match="diverged"):
        simulate_modes(5.0, 50.0, sigma2=0.0, dt=5.0, t_max=500.0, method="euler")


# ------------------------------------------------------------------------------------------------
# run_simulation
# ------------------------------------------------------------------------------------------------

def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_simulation_all_writes_every_png_and_json(tmp_path: Path) -> None:
    # Tiny sizes; CLI-style string overrides go to every experiment that has the parameter.
    res = run_simulation("all", tmp_path, n1="5", n2=3, init_scale=0.6, t_max=150.0, dt=0.5, record_every=30,
                         grid=6, etas="0,0.2", betas="none,0.4", alphas="0.5,2", n_starts=4)
    assert set(res) == set(SIMULATION_EXPERIMENTS)
    for e in SIMULATION_EXPERIMENTS:
        png, js = tmp_path / f"{e}.png", tmp_path / f"{e}.json"
        assert res[e]["files"] == [str(png), str(js)]
        assert _is_png(png) and png.stat().st_size > 10_000
        assert json.loads(js.read_text()) == res[e]
        assert res[e]["experiment"] == e

    # Key numbers in the JSON.
    th = res["trajectories"]["theory"]
    assert th["eta_c"] == pytest.approx(1.0 / 6.0)
    assert th["p_plus"] == pytest.approx(fixed_points(1.0, 0.5, 0.04)[1])
    assert res["trajectories"]["parameters"]["n1"] == 5
    for run in res["trajectories"]["runs"].values():
        assert len(run["final_s"]) == 3 and len(run["collapsed"]) == 3
        if not all(run["collapsed"]):
            assert run["max_abs_p_minus_p_plus_alive"] < 1e-4
    phase = res["phase"]["per_eta"]
    assert [x["eta"] for x in phase] == [0.0, 0.2]
    assert phase[1]["collapse_inevitable"] is True and phase[1]["p_plus"] is None
    assert phase[1]["basin_fraction_of_grid"] == 1.0 and phase[0]["basin_fraction_of_grid"] < 0.5
    wd = res["weight_decay"]["per_eta"]
    assert wd[1]["n_alive"] == 0 and all(wd[1]["collapsed"])
    assert [b["beta"] for b in res["ema"]["per_beta"]] == [None, 0.4]
    assert [a["alpha_p"] for a in res["predictor_lr"]["per_alpha"]] == [0.5, 2.0]
    assert res["predictor_lr"]["per_alpha"][1]["s_plus"] == pytest.approx(th["p_plus"] ** 2 / 2.0)


def test_run_simulation_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown simulation experiment"):
        run_simulation("nonsense", tmp_path)
    with pytest.raises(ConfigError, match="no parameter 'etas'"):
        run_simulation("trajectories", tmp_path, etas=[0.1])
    with pytest.raises(ConfigError, match="not a number"):
        run_simulation("trajectories", tmp_path, eta="lots")
    with pytest.raises(ConfigError, match="no experiment has"):
        run_simulation("all", tmp_path, bogus=1)
    with pytest.raises(ConfigError, match="not a boolean"):
        run_simulation("predictor_lr", tmp_path, symmetric_predictor="maybe")
    with pytest.raises(ConfigError, match="method"):
        run_simulation("phase", tmp_path, method="leapfrog")
    assert not list(tmp_path.iterdir())  # nothing written on bad input
    assert experiment_defaults("ema")["betas"][0] is None
