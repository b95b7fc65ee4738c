"""Linear learning dynamics of non-contrastive SSL (Tian, Chen & Ganguli, ICML 2021, arXiv:2102.06810).

Everything here is float64 numpy and follows the notation of the paper (plain-text equations, the
paper's numbering):

* online weights ``W`` (n2 x n1), linear predictor ``Wp`` (n2 x n2), target ``Wa`` (n2 x n1);
* ``X = E[xbar xbar^T]`` (correlation of the mean augmented view) and ``Xn = X' = E_x[Var[x'|x]]``
  (augmentation noise; isotropic ``sigma2 * I`` by default);
* ``eta`` weight decay, ``alpha_p`` relative predictor learning rate (W_p lr / W lr), ``beta`` EMA rate of
  the target (``beta=None`` means SimSiam-like ``Wa = W`` with the stop-gradient kept);
* ``F = W X W^T`` the correlation of the predictor inputs.

Lemma 1 (gradient flow of J = 1/2 E||Wp W x1 - StopGrad(Wa x2)||^2 plus weight decay)::

    dWp/dt = alpha_p * ( -Wp W (X + X') + Wa X ) W^T - eta * Wp
    dW/dt  =           Wp^T ( -Wp W (X + X') + Wa X ) - eta * W
    dWa/dt = beta * ( -Wa + W )

Theorem 1 (balancing; holds for any Wa dynamics, X and X')::

    W W^T - alpha_p^{-1} Wp^T Wp = e^{-2 eta t} C,      C fixed by the initialisation

Under Assumptions 1-3 (Wa = tau W, X = I, X' = sigma2 I, symmetric Wp and symmetrised flow)::

    dWp/dt = -(alpha_p/2)(1+sigma2) {Wp, F} + alpha_p tau F - eta Wp                    (Eq. 7)
    dF/dt  = -(1+sigma2) {Wp^2, F} + tau {Wp, F} - 2 eta F                              (Eq. 8)

Theorem 3: L = [F, Wp] obeys dL/dt = -L K - K L with
``K = (1+sigma2)[(alpha_p/2) F + Wp^2 - tau/(1+sigma2) Wp] + (3/2) eta I``.

Once aligned (Wp = U diag(p_j) U^T, F = U diag(s_j) U^T) every mode decouples::

    dp_j/dt       = alpha_p s_j [tau - (1+sigma2) p_j] - eta p_j                          (Eq. 11)
    ds_j/dt       = 2 p_j s_j [tau - (1+sigma2) p_j] - 2 eta s_j                          (Eq. 12)
    s_j dtau/dt   = beta (1 - tau) s_j - tau (ds_j/dt) / 2                                (Eq. 13)
    s_j(t)        = alpha_p^{-1} p_j(t)^2 + e^{-2 eta t} c_j                              (Eq. 14)

On the invariant parabola (c_j = 0) ``dp_j/dt = p_j Delta_j`` with
``Delta_j = p_j [tau - (1+sigma2) p_j] - eta`` (Eq. 16), whose fixed points are ``0`` (stable),
``p*_- = [tau - sqrt(tau^2 - 4 eta (1+sigma2))] / (2 (1+sigma2))`` (unstable) and
``p*_+ = [tau + sqrt(tau^2 - 4 eta (1+sigma2))] / (2 (1+sigma2))`` (stable). Collapse of every mode is
unavoidable when ``eta > tau^2 / (4 (1+sigma2))``.

DirectPred (Eq. 18) replaces the trained predictor by ``Wp = U diag(sqrt(s_j) + eps max_j s_j) U^T``
computed from an estimate F_hat of F.

The experiment driver :func:`run_simulation` (called by ``gsg simulate``) turns these into the
paper-style figures; the plotting lives in :mod:`gsg.analysis.dynamics_plots`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsg.errors import ConfigError

__all__ = [
    "SIMULATION_EXPERIMENTS",
    "LinearTrajectory",
    "ModeTrajectory",
    "SymmetricTrajectory",
    "alignment_matrix_K",
    "balancing_residual",
    "collapse_inevitable",
    "collapse_threshold",
    "commutator_norm",
    "directpred_predictor",
    "effective_tau",
    "eigenspace_alignment",
    "experiment_defaults",
    "fixed_points",
    "is_collapsed",
    "lemma1_rhs",
    "mode_rhs",
    "parabola_constant",
    "parabola_rate",
    "predictor_asymmetry",
    "predictor_eigenvalues",
    "run_simulation",
    "simulate_linear",
    "simulate_modes",
    "simulate_symmetric",
    "symmetric_rhs",
]

Array = np.ndarray
_METHODS = ("euler", "rk4")
_PREDICTORS = ("gradient", "directpred")


# --------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ConfigError(f"unknown integration method {method!r}; use one of {', '.join(_METHODS)}")


def _positive(name: str, value: Any, *, allow_zero: bool = False) -> Array:
    arr = np.asarray(value, dtype=np.float64)
    bad = (arr < 0) if allow_zero else (arr <= 0)
    if not np.all(np.isfinite(arr)) or np.any(bad):
        need = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{name} must be finite and {need}, got {value!r}; pass a {need} number")
    return arr


def _n_steps(dt: float, t_max: float, record_every: int) -> int:
    _positive("dt", dt)
    _positive("t_max", t_max)
    if int(record_every) != record_every or record_every < 1:
        raise ConfigError(f"record_every must be a positive integer, got {record_every!r}")
    n = round(t_max / dt)
    if n < 1:
        raise ConfigError(f"t_max={t_max} is shorter than one step dt={dt}; increase t_max or reduce dt")
    return n


# --------------------------------------------------------------------------------------------------
# Generic fixed-step integrator
# --------------------------------------------------------------------------------------------------

State = tuple[Array, ...]
Rhs = Callable[[State], State]


def _step(rhs: Rhs, state: State, dt: float, method: str) -> State:
    """One explicit Euler or classical RK4 step of d(state)/dt = rhs(state)."""
    k1 = rhs(state)
    if method == "euler":
        return tuple(x + dt * k for x, k in zip(state, k1, strict=True))
    k2 = rhs(tuple(x + 0.5 * dt * k for x, k in zip(state, k1, strict=True)))
    k3 = rhs(tuple(x + 0.5 * dt * k for x, k in zip(state, k2, strict=True)))
    k4 = rhs(tuple(x + dt * k for x, k in zip(state, k3, strict=True)))
    return tuple(
        x + (dt / 6.0) * (a + 2.0 * b + 2.0 * c + d)
        for x, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
    )


def _integrate(
    rhs: Rhs,
    state: State,
    *,
    dt: float,
    t_max: float,
    record_every: int,
    method: str,
    before_step: Callable[[State], State] | None = None,
) -> tuple[Array, list[Array]]:
    """Integrate with a fixed step, recording every ``record_every`` steps and always the last one.

    ``before_step`` may overwrite part of the state at the start of every step (DirectPred sets Wp
    there); the recorded state is the one after that overwrite, i.e. the one the step actually used.
    """
    _check_method(method)
    n = _n_steps(dt, t_max, record_every)
    times: list[float] = []
    records: list[list[Array]] = [[] for _ in state]
    for k in range(n + 1):
        if before_step is not None:
            state = before_step(state)
        if k % record_every == 0 or k == n:
            times.append(k * dt)
            for rec, x in zip(records, state, strict=True):
                rec.append(x.copy())
        if k == n:
            break
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is reported just below
            state = _step(rhs, state, dt, method)
        if not all(np.all(np.isfinite(x)) for x in state):
            raise ConfigError(
                f"the integration diverged at t={(k + 1) * dt:.4g} (non-finite values); "
                f"reduce dt (now {dt}) or use method='rk4'"
            )
    return np.asarray(times), [np.stack(r) for r in records]


# --------------------------------------------------------------------------------------------------
# Closed forms on the invariant parabola (Eqs. 14-16)
# --------------------------------------------------------------------------------------------------


def collapse_threshold(tau: float | Array = 1.0, sigma2: float | Array = 0.0) -> Array | float:
    """Critical weight decay ``eta_c = tau^2 / (4 (1+sigma2))``: for eta > eta_c only p = 0 survives."""
    tau = np.asarray(tau, dtype=np.float64)
    sigma2 = _positive("sigma2", sigma2, allow_zero=True)
    out = tau**2 / (4.0 * (1.0 + sigma2))
    return float(out) if out.ndim == 0 else out


def collapse_inevitable(eta: float | Array, tau: float | Array = 1.0, sigma2: float | Array = 0.0) -> Any:
    """True where ``eta > tau^2 / (4 (1+sigma2))`` (Eq. 16 discussion): every mode collapses to 0."""
    out = np.asarray(eta, dtype=np.float64) > np.asarray(collapse_threshold(tau, sigma2))
    return bool(out) if out.ndim == 0 else out


def fixed_points(
    tau: float | Array = 1.0, sigma2: float | Array = 0.0, eta: float | Array = 0.0
) -> tuple[Any, Any]:
    """Non-zero fixed points ``(p*_-, p*_+)`` of Eq. 16.

    ``p*_-/+ = [tau -/+ sqrt(tau^2 - 4 eta (1+sigma2))] / (2 (1+sigma2))``.

    p*_- is unstable (the edge of the collapse basin p < p*_-), p*_+ is stable; the matching s is
    p^2 / alpha_p (Eq. 14 with c_j = 0). Both are NaN where eta > tau^2 / (4 (1+sigma2)) (no
    non-collapsed fixed point). Works element-wise on arrays.
    """
    tau = np.asarray(tau, dtype=np.float64)
    sigma2 = _positive("sigma2", sigma2, allow_zero=True)
    eta = _positive("eta", eta, allow_zero=True)
    disc = tau**2 - 4.0 * eta * (1.0 + sigma2)
    root = np.sqrt(np.where(disc >= 0, disc, np.nan))
    p_minus = (tau - root) / (2.0 * (1.0 + sigma2))
    p_plus = (tau + root) / (2.0 * (1.0 + sigma2))
    if p_minus.ndim == 0:
        return float(p_minus), float(p_plus)
    return p_minus, p_plus


def parabola_rate(p: Array, *, tau: float = 1.0, sigma2: float = 0.0, eta: float = 0.0) -> Array:
    """Eq. 16 on the parabola: ``dp/dt = p Delta`` with ``Delta = p [tau - (1+sigma2) p] - eta``.

    Equivalently ``-(1+sigma2) p (p - p*_-)(p - p*_+)`` (the cubic of Fig. 4).
    """
    p = np.asarray(p, dtype=np.float64)
    return p * (p * (tau - (1.0 + sigma2) * p) - eta)


def parabola_constant(p: Array, s: Array, alpha_p: float | Array) -> Array:
    """``c = s - p^2 / alpha_p`` of Eq. 14; under Eqs. 11-12 it evolves exactly as ``c(0) e^{-2 eta t}``."""
    return np.asarray(s) - np.asarray(p) ** 2 / np.asarray(alpha_p)


def is_collapsed(
    s: Array,
    *,
    tau: float = 1.0,
    sigma2: float = 0.0,
    alpha_p: float = 1.0,
    tol: float = 1e-3,
) -> Array:
    """Mode-wise collapse test on eigenvalues ``s`` of F at the end of a run.

    A mode counts as collapsed when ``s < tol * s_ref`` with ``s_ref = (tau/(1+sigma2))^2 / alpha_p``,
    the largest stable non-collapsed value on the parabola (p*_+ at eta = 0). Relative, so it does not
    depend on the units of the initialisation; it needs the run to be long enough for collapsing modes
    to decay (rate 2 eta in s).
    """
    s_ref = (tau / (1.0 + sigma2)) ** 2 / alpha_p
    return np.asarray(s) < tol * s_ref


# --------------------------------------------------------------------------------------------------
# Per-mode (decoupled) dynamics, Eqs. 11-13
# --------------------------------------------------------------------------------------------------


def mode_rhs(
    p: Array,
    s: Array,
    tau: Array,
    *,
    sigma2: float | Array,
    eta: float | Array,
    alpha_p: float | Array,
    beta: float | Array | None,
) -> tuple[Array, Array, Array]:
    """Eqs. 11-13 element-wise: returns (dp/dt, ds/dt, dtau/dt); dtau/dt = 0 when ``beta`` is None.

    Eq. 13 is used divided by s_j, with ds_j/dt / s_j = 2 p_j [tau - (1+sigma2) p_j] - 2 eta written out
    so that it stays finite when s_j -> 0.
    """
    gap = tau - (1.0 + sigma2) * p
    dp = alpha_p * s * gap - eta * p
    growth = p * gap - eta  # = (ds/dt) / (2 s)
    ds = 2.0 * s * growth
    dtau = np.zeros_like(tau) if beta is None else beta * (1.0 - tau) - tau * growth
    return dp, ds, dtau


@dataclass(frozen=True)
class ModeTrajectory:
    """Recorded per-mode trajectories; arrays have shape (T, *mode_shape)."""

    times: Array
    p: Array
    s: Array
    tau: Array


def simulate_modes(
    p0: Array | float,
    s0: Array | float,
    *,
    tau0: Array | float = 1.0,
    beta: float | Array | None = None,
    sigma2: float | Array = 0.0,
    eta: float | Array = 0.0,
    alpha_p: float | Array = 1.0,
    dt: float = 0.05,
    t_max: float = 100.0,
    record_every: int = 10,
    method: str = "rk4",
) -> ModeTrajectory:
    """Integrate Eqs. 11-12 (and Eq. 13 for tau when ``beta`` is given) for any array of modes at once.

    ``tau0`` is the fixed tau when ``beta`` is None (tau = 1 is SimSiam), else its initial value. All
    arguments broadcast together, so a grid of initial conditions or a sweep of eta / alpha_p is one call.
    """
    sigma2 = _positive("sigma2", sigma2, allow_zero=True)
    eta = _positive("eta", eta, allow_zero=True)
    alpha_p = _positive("alpha_p", alpha_p)
    if beta is not None:
        beta = _positive("beta", beta)
    s0_arr = _positive("s0 (eigenvalues of F = W W^T)", s0, allow_zero=True)
    p, s, tau = np.broadcast_arrays(
        np.asarray(p0, dtype=np.float64), s0_arr, np.asarray(tau0, dtype=np.float64), sigma2, eta, alpha_p,
        *(() if beta is None else (beta,)),
    )[:3]
    state = (p.astype(np.float64).copy(), s.astype(np.float64).copy(), tau.astype(np.float64).copy())

    def rhs(x: State) -> State:
        return mode_rhs(x[0], x[1], x[2], sigma2=sigma2, eta=eta, alpha_p=alpha_p, beta=beta)

    times, (ps, ss, taus) = _integrate(
        rhs, state, dt=dt, t_max=t_max, record_every=record_every, method=method
    )
    return ModeTrajectory(times=times, p=ps, s=ss, tau=taus)


# --------------------------------------------------------------------------------------------------
# Symmetric matrix reduction, Eqs. 7-8, and Theorem 3
# --------------------------------------------------------------------------------------------------


def _anti(a: Array, b: Array) -> Array:
    """Anticommutator {A, B} = AB + BA (batched)."""
    return a @ b + b @ a


def symmetric_rhs(
    Wp: Array, F: Array, *, tau: float, sigma2: float, eta: float, alpha_p: float
) -> tuple[Array, Array]:
    """Eqs. 7-8: (dWp/dt, dF/dt) for symmetric Wp, F = W W^T, Wa = tau W, X = I, X' = sigma2 I."""
    dWp = -(alpha_p / 2.0) * (1.0 + sigma2) * _anti(Wp, F) + alpha_p * tau * F - eta * Wp
    dF = -(1.0 + sigma2) * _anti(Wp @ Wp, F) + tau * _anti(Wp, F) - 2.0 * eta * F
    return dWp, dF


def alignment_matrix_K(
    Wp: Array, F: Array, *, tau: float, sigma2: float, eta: float, alpha_p: float
) -> Array:
    """Theorem 3: ``K = (1+sigma2)[(alpha_p/2) F + Wp^2 - tau/(1+sigma2) Wp] + (3/2) eta I``.

    ||[F, Wp]||_F decays at least as e^{-2 lambda0 t} while lambda_min(K) >= lambda0 > 0.
    """
    eye = np.eye(Wp.shape[-1])
    return (1.0 + sigma2) * (0.5 * alpha_p * F + Wp @ Wp - tau / (1.0 + sigma2) * Wp) + 1.5 * eta * eye


@dataclass(frozen=True)
class SymmetricTrajectory:
    """Recorded Eq. 7-8 trajectories; Wp and F have shape (T, n2, n2)."""

    times: Array
    Wp: Array
    F: Array


def simulate_symmetric(
    Wp0: Array,
    F0: Array,
    *,
    tau: float = 1.0,
    sigma2: float = 0.0,
    eta: float = 0.0,
    alpha_p: float = 1.0,
    dt: float = 0.05,
    t_max: float = 100.0,
    record_every: int = 10,
    method: str = "rk4",
) -> SymmetricTrajectory:
    """Integrate the symmetric reduction Eqs. 7-8 with a fixed tau (Assumption 1 with constant tau).

    ``Wp0`` is symmetrised and ``F0`` must be symmetric positive semi-definite (it stands for W W^T).
    """
    _positive("sigma2", sigma2, allow_zero=True)
    _positive("eta", eta, allow_zero=True)
    _positive("alpha_p", alpha_p)
    Wp0 = np.asarray(Wp0, dtype=np.float64)
    F0 = np.asarray(F0, dtype=np.float64)
    if Wp0.ndim != 2 or Wp0.shape[0] != Wp0.shape[1] or F0.shape != Wp0.shape:
        raise ConfigError(
            f"Wp0 and F0 must be square matrices of the same size, got {Wp0.shape} and {F0.shape}"
        )
    if not np.allclose(F0, F0.T) or np.linalg.eigvalsh(F0).min() < -1e-10 * max(1.0, np.abs(F0).max()):
        raise ConfigError("F0 must be symmetric positive semi-definite (it is W W^T); pass e.g. W0 @ W0.T")
    state = (0.5 * (Wp0 + Wp0.T), 0.5 * (F0 + F0.T))

    def rhs(x: State) -> State:
        return symmetric_rhs(x[0], x[1], tau=tau, sigma2=sigma2, eta=eta, alpha_p=alpha_p)

    times, (wps, fs) = _integrate(rhs, state, dt=dt, t_max=t_max, record_every=record_every, method=method)
    return SymmetricTrajectory(times=times, Wp=wps, F=fs)


# --------------------------------------------------------------------------------------------------
# Full Lemma 1 dynamics
# --------------------------------------------------------------------------------------------------


def lemma1_rhs(
    W: Array,
    Wp: Array,
    Wa: Array,
    *,
    X: Array,
    Xn: Array,
    eta: Array | float,
    alpha_p: Array | float,
    beta: Array | float | None,
) -> tuple[Array, Array, Array]:
    """Lemma 1: (dW/dt, dWp/dt, dWa/dt). ``beta=None`` is SimSiam (Wa = W, stop-gradient kept; dWa = dW).

    Batched: W (..., n2, n1), Wp (..., n2, n2); eta/alpha_p/beta broadcast against the leading dims
    and must already carry two trailing singleton axes when they are arrays.
    """
    resid = -Wp @ W @ (X + Xn) + Wa @ X  # the (negated) l2 residual, common to both updates
    WT = np.swapaxes(W, -1, -2)
    dWp = alpha_p * resid @ WT - eta * Wp
    dW = np.swapaxes(Wp, -1, -2) @ resid - eta * W
    dWa = dW if beta is None else beta * (W - Wa)
    return dW, dWp, dWa


def directpred_predictor(F: Array, eps: float = 0.0) -> Array:
    """DirectPred, Eq. 18: ``Wp = U diag(sqrt(s_j) + eps * max_j s_j) U^T`` with F = U diag(s) U^T.

    Negative eigenvalues (round-off) are clipped to 0. This is the paper's un-normalised form; the
    released code's sqrt(s_j / s_max) + eps only differs by a scale that the cosine loss ignores, but
    the l2 loss of the linear theory does not, so the paper's form is used here (on the parabola
    s = p^2 / alpha_p with alpha_p = 1 it is exactly the non-collapsed branch p = sqrt(s)).
    """
    s, U = np.linalg.eigh(0.5 * (F + np.swapaxes(F, -1, -2)))
    s = np.clip(s, 0.0, None)
    p = np.sqrt(s) + eps * s.max(axis=-1, keepdims=True)
    return (U * p[..., None, :]) @ np.swapaxes(U, -1, -2)


@dataclass(frozen=True)
class LinearTrajectory:
    """Recorded Lemma-1 trajectories: times (T,), W/Wa (T, *batch, n2, n1), Wp/F (T, *batch, n2, n2)."""

    times: Array
    W: Array
    Wp: Array
    Wa: Array
    F: Array


def simulate_linear(
    n1: int = 16,
    n2: int = 8,
    *,
    X: Array | None = None,
    Xn: Array | None = None,
    sigma2: float = 0.0,
    eta: float | Array = 0.0,
    alpha_p: float | Array = 1.0,
    beta: float | Array | None = None,
    symmetric_predictor: bool = False,
    predictor: str = "gradient",
    directpred_eps: float = 0.0,
    directpred_rho: float = 0.0,
    W0: Array | None = None,
    Wp0: Array | None = None,
    Wa0: Array | str = "copy",
    init_scale: float = 0.1,
    seed: int = 0,
    dt: float = 0.05,
    t_max: float = 100.0,
    record_every: int = 10,
    method: str = "rk4",
) -> LinearTrajectory:
    """Integrate Lemma 1 (see module docstring) for the linear online net W, predictor Wp and target Wa.

    Args:
        n1, n2: input and output sizes (ignored when ``W0`` is given).
        X, Xn: input correlation X (default I) and augmentation covariance X' (default sigma2 * I).
        eta, alpha_p, beta: weight decay, relative predictor lr, EMA rate (``None``: SimSiam, Wa = W).
            Arrays of shape ``batch`` run that many systems at once from the same initialisation.
        symmetric_predictor: Assumption 3 - start from a symmetric Wp and symmetrise its flow.
        predictor: ``"gradient"`` (Lemma 1) or ``"directpred"`` (Eq. 18: before every step Wp is set
            from F_hat <- rho F_hat + (1 - rho) F, F = W X W^T, and held fixed during the step).
        W0, Wp0: initial weights; default N(0, init_scale^2 / fan_in) entries drawn with ``seed`` (so the
            eigenvalues of F and Wp start at the scale of init_scale^2 and init_scale).
        Wa0: initial target: an array, ``"copy"`` (Wa(0) = W(0)) or ``"zero"`` (the paper's Fig. 7).
        dt, t_max, record_every, method: fixed-step ``"euler"`` or ``"rk4"`` integration.
    """
    if predictor not in _PREDICTORS:
        raise ConfigError(f"unknown predictor {predictor!r}; use one of {', '.join(_PREDICTORS)}")
    if not 0.0 <= directpred_rho < 1.0:
        raise ConfigError(f"directpred_rho must be in [0, 1), got {directpred_rho!r}")
    _positive("directpred_eps", directpred_eps, allow_zero=True)
    _positive("init_scale", init_scale)
    sigma2_arr = _positive("sigma2", sigma2, allow_zero=True)
    eta_a = _positive("eta", eta, allow_zero=True)
    alpha_a = _positive("alpha_p", alpha_p)
    beta_a = None if beta is None else _positive("beta", beta)
    params = [eta_a, alpha_a] + ([] if beta_a is None else [beta_a])
    batch = np.broadcast_shapes(*(a.shape for a in params))

    rng = np.random.default_rng(seed)
    if W0 is None:
        if int(n1) < 1 or int(n2) < 1:
            raise ConfigError(f"n1 and n2 must be positive integers, got n1={n1}, n2={n2}")
        W0 = init_scale / math.sqrt(n1) * rng.standard_normal((n2, n1))
    W0 = np.asarray(W0, dtype=np.float64)
    n2, n1 = W0.shape[-2:]
    if Wp0 is None:
        Wp0 = init_scale / math.sqrt(n2) * rng.standard_normal((n2, n2))
    Wp0 = np.asarray(Wp0, dtype=np.float64)
    if Wp0.shape[-2:] != (n2, n2):
        raise ConfigError(f"Wp0 must be {n2} x {n2} to match W0 ({n2} x {n1}), got {Wp0.shape}")
    if isinstance(Wa0, str):
        if Wa0 not in ("copy", "zero"):
            raise ConfigError(f"Wa0 must be an array, 'copy' or 'zero', got {Wa0!r}")
        Wa0 = W0.copy() if Wa0 == "copy" else np.zeros_like(W0)
    Wa0 = np.asarray(Wa0, dtype=np.float64)
    if Wa0.shape[-2:] != (n2, n1):
        raise ConfigError(f"Wa0 must have the shape of W0 ({n2} x {n1}), got {Wa0.shape}")
    X = np.eye(n1) if X is None else np.asarray(X, dtype=np.float64)
    Xn = float(sigma2_arr) * np.eye(n1) if Xn is None else np.asarray(Xn, dtype=np.float64)
    for name, mat in (("X", X), ("Xn", Xn)):
        if mat.shape != (n1, n1) or not np.allclose(mat, mat.T):
            raise ConfigError(f"{name} must be a symmetric {n1} x {n1} matrix, got shape {mat.shape}")
        if np.linalg.eigvalsh(mat).min() < -1e-10:
            raise ConfigError(f"{name} must be positive semi-definite (it is a correlation / covariance)")

    if symmetric_predictor:
        Wp0 = 0.5 * (Wp0 + np.swapaxes(Wp0, -1, -2))
    W = np.broadcast_to(W0, (*batch, n2, n1)).copy()
    Wp = np.broadcast_to(Wp0, (*batch, n2, n2)).copy()
    Wa = np.broadcast_to(Wa0, (*batch, n2, n1)).copy()
    # Parameters get two trailing axes so that they broadcast over the matrix dimensions.
    eta_m = eta_a[..., None, None]
    alpha_m = alpha_a[..., None, None]
    beta_m = None if beta_a is None else beta_a[..., None, None]
    direct = predictor == "directpred"

    def rhs(x: State) -> State:
        w, wp, wa = x
        dW, dWp, dWa = lemma1_rhs(
            w, wp, w if beta_m is None else wa, X=X, Xn=Xn, eta=eta_m, alpha_p=alpha_m, beta=beta_m
        )
        if direct:
            dWp = np.zeros_like(wp)  # held fixed within the step; reset from F_hat before the next one
        elif symmetric_predictor:
            dWp = 0.5 * (dWp + np.swapaxes(dWp, -1, -2))
        return dW, dWp, dWa

    f_hat: list[Array] = []

    def before_step(x: State) -> State:
        w, wp, wa = x
        if beta_m is None:
            wa = w  # SimSiam: the target is the online network itself
        if direct:
            f_now = w @ X @ np.swapaxes(w, -1, -2)
            f_hat[:] = [f_now if not f_hat else directpred_rho * f_hat[0] + (1.0 - directpred_rho) * f_now]
            wp = directpred_predictor(f_hat[0], directpred_eps)
        return w, wp, wa

    times, (Ws, Wps, Was) = _integrate(
        rhs, (W, Wp, Wa), dt=dt, t_max=t_max, record_every=record_every, method=method,
        before_step=before_step,
    )
    Fs = Ws @ X @ np.swapaxes(Ws, -1, -2)
    return LinearTrajectory(times=times, W=Ws, Wp=Wps, Wa=Was, F=Fs)


# --------------------------------------------------------------------------------------------------
# Invariants and diagnostics (all batched over leading axes)
# --------------------------------------------------------------------------------------------------


def balancing_residual(W: Array, Wp: Array, alpha_p: float | Array = 1.0) -> Array:
    """Theorem 1: ``W W^T - alpha_p^{-1} Wp^T Wp`` (= e^{-2 eta t} C; conserved exactly when eta = 0)."""
    alpha = np.asarray(alpha_p, dtype=np.float64)
    if alpha.ndim:
        alpha = alpha[..., None, None]
    return W @ np.swapaxes(W, -1, -2) - np.swapaxes(Wp, -1, -2) @ Wp / alpha


def commutator_norm(F: Array, Wp: Array, *, normalised: bool = False) -> Array:
    """``||[F, Wp]||_F = ||F Wp - Wp F||_F`` (Theorem 3); ``normalised`` divides by ||F||_F ||Wp||_F."""
    L = F @ Wp - Wp @ F
    out = np.linalg.norm(L, axis=(-2, -1))
    if normalised:
        denom = np.linalg.norm(F, axis=(-2, -1)) * np.linalg.norm(Wp, axis=(-2, -1))
        out = out / np.where(denom > 0, denom, 1.0)
    return out


def eigenspace_alignment(F: Array, Wp: Array) -> tuple[Array, Array]:
    """Fig. 2 alignment: for each eigenvector u_j of F, ``cos(Wp u_j, u_j)``; sorted by decreasing s_j.

    Returns (s, cos) with shape (..., n2). 1 means u_j is an eigenvector of Wp with a positive
    eigenvalue; cos is set to 0 where Wp u_j = 0.
    """
    s, U = np.linalg.eigh(0.5 * (F + np.swapaxes(F, -1, -2)))
    s, U = s[..., ::-1], U[..., ::-1]
    WU = Wp @ U
    num = np.sum(WU * U, axis=-2)
    den = np.linalg.norm(WU, axis=-2) * np.linalg.norm(U, axis=-2)
    return s, num / np.where(den > 0, den, np.inf)


def predictor_asymmetry(Wp: Array) -> Array:
    """``||Wp - Wp^T||_F / ||Wp||_F`` (0 for a symmetric predictor; as in the reproduction report)."""
    den = np.linalg.norm(Wp, axis=(-2, -1))
    return np.linalg.norm(Wp - np.swapaxes(Wp, -1, -2), axis=(-2, -1)) / np.where(den > 0, den, 1.0)


def effective_tau(W: Array, Wa: Array) -> Array:
    """Least-squares tau of Assumption 1 (Wa ~ tau W): ``<Wa, W>_F / ||W||_F^2``."""
    den = np.sum(W * W, axis=(-2, -1))
    return np.sum(Wa * W, axis=(-2, -1)) / np.where(den > 0, den, 1.0)


def predictor_eigenvalues(Wp: Array) -> Array:
    """Eigenvalues of Wp sorted decreasingly: eigvalsh if symmetric, else the real parts of eigvals."""
    sym = np.allclose(Wp, np.swapaxes(Wp, -1, -2), atol=1e-12)
    ev = np.linalg.eigvalsh(Wp) if sym else np.linalg.eigvals(Wp).real
    return -np.sort(-ev, axis=-1)


def _f_eigenvalues(F: Array) -> Array:
    return np.linalg.eigvalsh(0.5 * (F + np.swapaxes(F, -1, -2)))[..., ::-1]


# --------------------------------------------------------------------------------------------------
# Experiments behind ``gsg simulate`` (Figs. 2-6 of Tian et al. in the linear model)
# --------------------------------------------------------------------------------------------------

SIMULATION_EXPERIMENTS: tuple[str, ...] = (
    "trajectories",
    "alignment",
    "phase",
    "weight_decay",
    "ema",
    "predictor_lr",
)

# sigma2 = 0.5 gives eta_c = 1/6; eta = 0.04 and beta = 0.4 are the continuous-time values of the
# paper's Fig. 5 (lr 0.01: eta_bar = 4e-4, EMA 0.996).
_COMMON: dict[str, Any] = {
    "sigma2": 0.5,
    "alpha_p": 1.0,
    "tau": 1.0,
    "seed": 0,
    "dt": 0.1,
    "method": "rk4",
    "collapse_tol": 1e-3,
}
_MATRIX: dict[str, Any] = {"n1": 32, "n2": 16, "init_scale": 0.1, "eta": 0.04, "beta": 0.4}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "trajectories": {**_COMMON, **_MATRIX, "t_max": 300.0, "record_every": 5, "directpred_eps": 0.1},
    "alignment": {**_COMMON, **_MATRIX, "t_max": 300.0, "record_every": 5},
    "phase": {
        **_COMMON, "etas": [0.0, 0.04, 0.2], "p_range": [-0.3, 0.9], "s_range": [0.0, 0.6],
        "grid": 90, "t_max": 400.0, "dt": 0.2,
    },
    "weight_decay": {
        **_COMMON, **_MATRIX, "etas": [round(0.02 * k, 2) for k in range(13)], "t_max": 600.0,
        "record_every": 20, "n_starts": 40,
    },
    "ema": {
        **_COMMON, **_MATRIX, "betas": [None, 2.0, 0.4, 0.1, 0.04], "Wa0": "zero", "t_max": 600.0,
        "record_every": 10,
    },
    "predictor_lr": {
        **_COMMON, **_MATRIX, "alphas": [0.1, 0.3, 1.0, 3.0, 10.0], "beta": None, "symmetric_predictor": True,
        "t_max": 600.0, "record_every": 10, "grid": 40,
    },
}


def experiment_defaults(experiment: str) -> dict[str, Any]:
    """The parameters (and their defaults) that ``run_simulation(experiment, ...)`` accepts as overrides."""
    if experiment not in _DEFAULTS:
        raise ConfigError(
            f"unknown simulation experiment {experiment!r}; "
            f"use one of {', '.join((*SIMULATION_EXPERIMENTS, 'all'))}"
        )
    return json.loads(json.dumps(_DEFAULTS[experiment]))  # deep copy; all defaults are JSON types


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Accept CLI strings ("0.1", "0,0.1,0.2", "none") as well as Python values, typed like the default."""
    if isinstance(default, list):
        # Element type from the first non-None default (betas starts with None = SimSiam).
        elem = next((d for d in default if d is not None), 0.0)
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            items = [items]
        return [_coerce(name, v, elem) for v in items if not (isinstance(v, str) and not v.strip())]
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("none", "null", "simsiam"):
            return None
        if isinstance(default, str):
            return text
        if isinstance(default, bool):
            if text.lower() in ("true", "1", "yes", "on"):
                return True
            if text.lower() in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"override {name}={value!r} is not a boolean; pass true or false")
        try:
            return int(text) if isinstance(default, int) and not isinstance(default, bool) else float(text)
        except ValueError:
            raise ConfigError(
                f"override {name}={value!r} is not a number; pass e.g. {name}={default!r}"
            ) from None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if value != int(value):
            raise ConfigError(f"override {name} must be an integer, got {value!r}")
        return int(value)
    return value


def _resolve(experiment: str, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = experiment_defaults(experiment)
    for key, value in overrides.items():
        if key not in cfg:
            raise ConfigError(
                f"experiment {experiment!r} has no parameter {key!r}; valid ones: {', '.join(sorted(cfg))}"
            )
        cfg[key] = _coerce(key, value, cfg[key])
    return cfg


def _jsonable(obj: Any) -> Any:
    """numpy -> Python; non-finite floats -> None so the JSON is standard."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _theory(cfg: dict[str, Any], eta: float | None = None) -> dict[str, Any]:
    eta = cfg["eta"] if eta is None else eta
    p_minus, p_plus = fixed_points(cfg["tau"], cfg["sigma2"], eta)
    return {
        "eta": eta,
        "tau": cfg["tau"],
        "sigma2": cfg["sigma2"],
        "alpha_p": cfg["alpha_p"],
        "eta_c": collapse_threshold(cfg["tau"], cfg["sigma2"]),
        "collapse_inevitable": collapse_inevitable(eta, cfg["tau"], cfg["sigma2"]),
        "p_minus": p_minus,
        "p_plus": p_plus,
        "s_minus": p_minus**2 / cfg["alpha_p"],
        "s_plus": p_plus**2 / cfg["alpha_p"],
    }


def _beta_text(beta: Any) -> str:
    return "no EMA (Wa = W)" if beta is None else f"β={beta:g}"


def _linear_run(cfg: dict[str, Any], **extra: Any) -> LinearTrajectory:
    kw = {
        k: cfg[k]
        for k in ("n1", "n2", "sigma2", "eta", "alpha_p", "beta", "init_scale", "seed", "dt", "t_max",
                  "record_every", "method")
        if k in cfg
    }
    kw.update(extra)
    return simulate_linear(**kw)


def _collapsed(s: Array, cfg: dict[str, Any], alpha_p: Any = None) -> Array:
    alpha = cfg["alpha_p"] if alpha_p is None else alpha_p
    return is_collapsed(s, tau=cfg["tau"], sigma2=cfg["sigma2"], alpha_p=alpha, tol=cfg["collapse_tol"])


def _max_err(values: Array, target: float, alive: Array) -> float | None:
    return float(np.max(np.abs(values[alive] - target))) if np.any(alive) and math.isfinite(target) else None


def _exp_trajectories(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    th = _theory(cfg)
    variants = {
        "gradient Wp": {},
        "symmetric Wp": {"symmetric_predictor": True},
        f"DirectPred (eps={cfg['directpred_eps']:g})": {
            "predictor": "directpred", "directpred_eps": cfg["directpred_eps"],
        },
    }
    runs, summary = [], {}
    for label, extra in variants.items():
        tr = _linear_run(cfg, **extra)
        s, p = _f_eigenvalues(tr.F), predictor_eigenvalues(tr.Wp)
        dead = _collapsed(s[-1], cfg)
        runs.append({"label": label, "times": tr.times, "s": s, "p": p, "collapsed": dead})
        summary[label] = {
            "final_s": s[-1],
            "final_p": p[-1],
            "collapsed": dead,
            "n_collapsed": int(dead.sum()),
            "max_abs_p_minus_p_plus_alive": _max_err(p[-1], th["p_plus"], ~dead),
        }
    png = plots.plot_trajectories(
        out_dir / "trajectories.png", runs, p_minus=th["p_minus"], p_plus=th["p_plus"], s_plus=th["s_plus"],
        title=(f"Lemma 1, n1={cfg['n1']}, n2={cfg['n2']}: η={cfg['eta']:g}, {_beta_text(cfg['beta'])}, "
               f"σ²={cfg['sigma2']:g}, α_p={cfg['alpha_p']:g}, init {cfg['init_scale']:g}"),
    )
    return {"theory": th, "runs": summary, "files": [png]}


def _exp_alignment(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    reg = _linear_run(cfg)
    sym = _linear_run(cfg, symmetric_predictor=True)
    s, cos = eigenspace_alignment(reg.F, reg.Wp)
    dead = _collapsed(s[-1], cfg)
    comm_reg = commutator_norm(reg.F, reg.Wp, normalised=True)
    comm_sym = commutator_norm(sym.F, sym.Wp, normalised=True)
    asym = predictor_asymmetry(reg.Wp)
    tau_t = effective_tau(sym.W, sym.Wa)
    # K(t) of Theorem 3 with the measured tau(t); X = I so F = W W^T as the theorem assumes.
    K = alignment_matrix_K(
        sym.Wp, sym.F, tau=tau_t[:, None, None], sigma2=cfg["sigma2"], eta=cfg["eta"], alpha_p=cfg["alpha_p"]
    )
    lam = np.linalg.eigvalsh(0.5 * (K + np.swapaxes(K, -1, -2)))[:, 0]
    png = plots.plot_alignment(
        out_dir / "alignment.png", times=reg.times, cos=cos, collapsed=dead,
        commutators={"regular Wp": (reg.times, comm_reg), "symmetric Wp": (sym.times, comm_sym)},
        asymmetry=(reg.times, asym), lam_min_K=(sym.times, lam),
        title=(f"Eigenspace alignment, Lemma 1: η={cfg['eta']:g}, {_beta_text(cfg['beta'])}, "
               f"σ²={cfg['sigma2']:g}, "
               f"α_p={cfg['alpha_p']:g}"),
    )
    alive = ~dead
    return {
        "theory": _theory(cfg),
        "final_cos": cos[-1],
        "collapsed": dead,
        "min_final_cos_alive": float(cos[-1][alive].min()) if alive.any() else None,
        "final_commutator_regular": float(comm_reg[-1]),
        "final_commutator_symmetric": float(comm_sym[-1]),
        "initial_commutator_regular": float(comm_reg[0]),
        "final_asymmetry": float(asym[-1]),
        "initial_asymmetry": float(asym[0]),
        "min_lambda_K": float(lam.min()),
        "final_lambda_K": float(lam[-1]),
        "files": [png],
    }


def _exp_phase(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    tau, sigma2, alpha_p = cfg["tau"], cfg["sigma2"], cfg["alpha_p"]
    g = int(cfg["grid"])
    if g < 4:
        raise ConfigError(f"grid must be at least 4, got {g}")
    (p_lo, p_hi), (s_lo, s_hi) = cfg["p_range"], cfg["s_range"]
    if not (p_lo < p_hi and 0.0 <= s_lo < s_hi):
        raise ConfigError(
            f"need p_range low < high and 0 <= s_range low < high, got {cfg['p_range']}, {cfg['s_range']}"
        )
    P, S = np.meshgrid(np.linspace(p_lo, p_hi, g), np.linspace(s_lo, s_hi, g))
    cubic_p = np.linspace(min(p_lo, 0.0), p_hi, 400)
    # A few example trajectories started off the parabola, as in Fig. 3.
    starts_p = np.array([0.05, 0.2, 0.6, -0.2, 0.85, 0.4])
    starts_s = np.array([0.55, 0.02, 0.55, 0.3, 0.1, 0.005]) * (s_hi - s_lo) / 0.6 + s_lo
    panels, summary = [], []
    for eta in cfg["etas"]:
        dP, dS, _ = mode_rhs(P, S, np.full_like(P, tau), sigma2=sigma2, eta=eta, alpha_p=alpha_p, beta=None)
        # The collapse basin: integrate every grid point (vectorised) and classify the end state.
        run = simulate_modes(P, S, tau0=tau, sigma2=sigma2, eta=eta, alpha_p=alpha_p, dt=cfg["dt"],
                             t_max=cfg["t_max"], record_every=10**9, method=cfg["method"])
        basin = _collapsed(run.s[-1], cfg)
        ex = simulate_modes(starts_p, starts_s, tau0=tau, sigma2=sigma2, eta=eta, alpha_p=alpha_p,
                            dt=cfg["dt"], t_max=cfg["t_max"], record_every=1, method=cfg["method"])
        th = _theory(cfg, eta)
        panels.append({
            "eta": eta, "P": P, "S": S, "dP": dP, "dS": dS, "basin": basin, "p_minus": th["p_minus"],
            "p_plus": th["p_plus"], "alpha_p": alpha_p, "tau": tau, "sigma2": sigma2,
            "cubic": parabola_rate(cubic_p, tau=tau, sigma2=sigma2, eta=eta),
            "trajectories": [(ex.p[:, k], ex.s[:, k]) for k in range(starts_p.size)],
        })
        summary.append({**th, "basin_fraction_of_grid": float(basin.mean())})
    png = plots.plot_phase(
        out_dir / "phase.png", panels, cubic_p=cubic_p,
        title=(f"Per-mode dynamics (Eqs. 11-12), τ={tau:g}, σ²={sigma2:g}, α_p={alpha_p:g}; "
               f"shaded: collapse basin after t={cfg['t_max']:g}"),
    )
    return {"per_eta": summary, "files": [png]}


def _exp_weight_decay(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    etas = np.asarray(cfg["etas"], dtype=np.float64)
    if etas.ndim != 1 or etas.size < 1:
        raise ConfigError("etas must be a non-empty list of weight decays, e.g. etas=0,0.05,0.1")
    tr = _linear_run(cfg, eta=etas)  # one batched integration over all eta, same initialisation
    s_fin = _f_eigenvalues(tr.F[-1])
    p_fin = predictor_eigenvalues(tr.Wp[-1])
    dead = _collapsed(s_fin, cfg)
    # Bifurcation diagram from Eqs. 11-12: starts on the parabola for every eta (broadcast, one call).
    n_starts = int(cfg["n_starts"])
    p0 = np.linspace(0.01, 0.9, n_starts)[None, :]
    mode = simulate_modes(p0, p0**2 / cfg["alpha_p"], tau0=cfg["tau"], sigma2=cfg["sigma2"],
                          eta=etas[:, None], alpha_p=cfg["alpha_p"], dt=cfg["dt"], t_max=cfg["t_max"],
                          record_every=10**9, method=cfg["method"])
    mode_survival = 1.0 - _collapsed(mode.s[-1], cfg).mean(axis=1)
    eta_c = collapse_threshold(cfg["tau"], cfg["sigma2"])
    eta_grid = np.linspace(0.0, max(float(etas.max()), eta_c), 400)
    pm, pp = fixed_points(cfg["tau"], cfg["sigma2"], eta_grid)
    comm = commutator_norm(tr.F, tr.Wp, normalised=True)
    # Normalised commutators of collapsed runs are ratios of vanishing matrices: show surviving runs only.
    alive_runs = np.nonzero((~dead).any(axis=1))[0]
    pick = np.linspace(0, alive_runs.size - 1, min(4, alive_runs.size)).round().astype(int)
    show = alive_runs[np.unique(pick)]
    png = plots.plot_weight_decay(
        out_dir / "weight_decay.png", etas=etas, p_final=p_fin, s_final=s_fin, n_alive=(~dead).sum(axis=1),
        mode_eta=np.broadcast_to(etas[:, None], mode.p[-1].shape), mode_p_final=mode.p[-1],
        mode_survival=mode_survival, eta_grid=eta_grid, p_minus=pm, p_plus=pp, alpha_p=cfg["alpha_p"],
        eta_c=eta_c, commutators={f"η = {etas[i]:g}": (tr.times, comm[:, i]) for i in show},
        title=(f"Weight decay sweep: Lemma 1 (n1={cfg['n1']}, n2={cfg['n2']}, {_beta_text(cfg['beta'])}) "
               f"and Eqs. 11-12; "
               f"σ²={cfg['sigma2']:g}, α_p={cfg['alpha_p']:g}"),
    )
    per_eta = []
    for i, eta in enumerate(etas):
        th = _theory(cfg, float(eta))
        per_eta.append({
            **th,
            "final_s": s_fin[i], "final_p": p_fin[i], "collapsed": dead[i], "n_alive": int((~dead[i]).sum()),
            "max_abs_p_minus_p_plus_alive": _max_err(p_fin[i], th["p_plus"], ~dead[i]),
            "mode_dynamics_survival_fraction": float(mode_survival[i]),
            "final_commutator": float(comm[-1, i]),
        })
    return {"eta_c": eta_c, "per_eta": per_eta, "files": [png]}


def _exp_ema(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    if not cfg["betas"]:
        raise ConfigError("betas must be a non-empty list of EMA rates (none = SimSiam), e.g. betas=none,0.4")
    th = _theory(cfg)
    runs, per_beta = [], []
    for beta in cfg["betas"]:
        tr = _linear_run(cfg, beta=beta, Wa0=cfg["Wa0"])
        s = _f_eigenvalues(tr.F)
        trF = s.sum(axis=-1)
        dead = _collapsed(s[-1], cfg)
        comm = commutator_norm(tr.F, tr.Wp, normalised=True)
        tau_t = effective_tau(tr.W, tr.Wa)
        reach = np.nonzero(trF >= 0.9 * trF[-1])[0]
        # Theorem 3 assumes a symmetric Wp; use the symmetric part of the trained one.
        wp_sym = 0.5 * (tr.Wp + np.swapaxes(tr.Wp, -1, -2))
        K = alignment_matrix_K(wp_sym, tr.F, tau=tau_t[:, None, None], sigma2=cfg["sigma2"], eta=cfg["eta"],
                               alpha_p=cfg["alpha_p"])
        lam = np.linalg.eigvalsh(K)[:, 0]
        label = "no EMA (SimSiam, Wa = W)" if beta is None else f"β = {beta:g}"
        runs.append({"label": label, "times": tr.times, "trF": trF, "tau": tau_t, "comm": comm, "lam_K": lam,
                     "s_final": s[-1], "n_alive": int((~dead).sum())})
        per_beta.append({
            "beta": beta, "final_s": s[-1], "collapsed": dead, "n_alive": int((~dead).sum()),
            "t_90_trF": float(tr.times[reach[0]]) if reach.size and trF[-1] > 0 else None,
            "min_tau": float(tau_t.min()), "final_tau": float(tau_t[-1]), "final_commutator": float(comm[-1]),
            "min_lambda_K": float(lam.min()),
        })
    png = plots.plot_ema(
        out_dir / "ema.png", runs, s_plus=th["s_plus"],
        title=(f"EMA rate sweep, Lemma 1 (n1={cfg['n1']}, n2={cfg['n2']}, Wa(0)={cfg['Wa0']}): "
               f"η={cfg['eta']:g}, σ²={cfg['sigma2']:g}, α_p={cfg['alpha_p']:g}"),
    )
    return {"theory": th, "per_beta": per_beta, "files": [png]}


def _exp_predictor_lr(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from gsg.analysis import dynamics_plots as plots

    alphas = np.asarray(cfg["alphas"], dtype=np.float64)
    if alphas.ndim != 1 or alphas.size < 1:
        raise ConfigError("alphas must be a non-empty list of relative predictor lrs, e.g. alphas=0.3,1,3")
    th = _theory(cfg)
    # Batched over alpha_p from one initialisation; symmetric Wp without EMA is the setting of Fig. 6.
    tr = _linear_run(cfg, alpha_p=alphas, symmetric_predictor=bool(cfg["symmetric_predictor"]))
    s_fin = _f_eigenvalues(tr.F[-1])
    p_fin = predictor_eigenvalues(tr.Wp[-1])
    dead = _collapsed(s_fin, cfg, alpha_p=alphas[:, None])
    # Collapse basin vs alpha_p from Eqs. 11-12: share of a box of small starts (|p| <= 0.3, s <= 0.03)
    # that collapses; the box is the scale of a small random initialisation.
    g = int(cfg["grid"])
    P, S = np.meshgrid(np.linspace(-0.3, 0.3, g), np.linspace(1e-4, 0.03, g))
    basin_alphas = np.geomspace(alphas.min(), alphas.max(), 9)
    run = simulate_modes(P[None], S[None], tau0=cfg["tau"], sigma2=cfg["sigma2"], eta=cfg["eta"],
                         alpha_p=basin_alphas[:, None, None], dt=cfg["dt"], t_max=cfg["t_max"],
                         record_every=10**9, method=cfg["method"])
    basin_fraction = _collapsed(run.s[-1], cfg, alpha_p=basin_alphas[:, None, None]).mean(axis=(1, 2))
    # Per-mode trajectories for the extreme alpha_p values from the same few starts.
    p0, s0 = np.array([0.05, 0.15, -0.1, 0.3]), np.array([0.01, 0.002, 0.02, 0.001])
    show = sorted({float(alphas.min()), float(np.median(alphas)), float(alphas.max())})
    runs = []
    for a in show:
        m = simulate_modes(p0, s0, tau0=cfg["tau"], sigma2=cfg["sigma2"], eta=cfg["eta"], alpha_p=a,
                           dt=cfg["dt"], t_max=cfg["t_max"], record_every=1, method=cfg["method"])
        runs.append({"label": f"α_p = {a:g}", "alpha_p": a, "p": m.p, "s": m.s})
    png = plots.plot_predictor_lr(
        out_dir / "predictor_lr.png", alphas=alphas, p_final=p_fin, s_final=s_fin,
        n_alive=(~dead).sum(axis=1),
        alpha_grid=np.geomspace(alphas.min(), alphas.max(), 200), p_plus=th["p_plus"],
        basin_alphas=basin_alphas, basin_fraction=basin_fraction, runs=runs,
        title=(f"Relative predictor lr sweep: Lemma 1 (n1={cfg['n1']}, n2={cfg['n2']}, "
               f"{'symmetric' if cfg['symmetric_predictor'] else 'regular'} Wp, {_beta_text(cfg['beta'])}) "
               f"and Eqs. 11-12; η={cfg['eta']:g}, σ²={cfg['sigma2']:g}"),
    )
    per_alpha = []
    for i, a in enumerate(alphas):
        per_alpha.append({
            "alpha_p": a, "s_plus": th["p_plus"] ** 2 / a, "final_s": s_fin[i], "final_p": p_fin[i],
            "collapsed": dead[i], "n_alive": int((~dead[i]).sum()),
            "max_abs_p_minus_p_plus_alive": _max_err(p_fin[i], th["p_plus"], ~dead[i]),
        })
    return {
        "theory": th, "per_alpha": per_alpha,
        "basin": {"alpha_p": basin_alphas, "collapsed_fraction": basin_fraction}, "files": [png],
    }


_RUNNERS: dict[str, Callable[[dict[str, Any], Path], dict[str, Any]]] = {
    "trajectories": _exp_trajectories,
    "alignment": _exp_alignment,
    "phase": _exp_phase,
    "weight_decay": _exp_weight_decay,
    "ema": _exp_ema,
    "predictor_lr": _exp_predictor_lr,
}


def run_simulation(experiment: str, out_dir: Path | str, **overrides: Any) -> dict[str, Any]:
    """Run one simulator experiment (or ``"all"``), write its PNG and ``<experiment>.json`` to ``out_dir``.

    Experiments: ``trajectories`` (Fig. 2 eigenvalues for gradient / symmetric / DirectPred predictors),
    ``alignment`` (Fig. 2 alignment, Theorem 3, Fig. 9), ``phase`` (Figs. 3-4 with fixed points and the
    collapse basin), ``weight_decay`` (Fig. 5 top, Table 4 #3-#5), ``ema`` (Fig. 5 bottom, #8-#10) and
    ``predictor_lr`` (#1-#2, cf. Fig. 6). ``overrides`` replace defaults (see :func:`experiment_defaults`);
    strings such as ``"0.1"`` or ``"0,0.05,0.1"`` are accepted for the CLI. With ``"all"`` an override
    goes to every experiment that has that parameter. Returns the JSON-ready dict that was written
    (with ``all``: ``{experiment: result}``, each also written to its own JSON).
    """
    out = Path(out_dir)
    if experiment == "all":
        known = set().union(*(_DEFAULTS[e] for e in SIMULATION_EXPERIMENTS))
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"no experiment has parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return {
            e: run_simulation(e, out, **{k: v for k, v in overrides.items() if k in _DEFAULTS[e]})
            for e in SIMULATION_EXPERIMENTS
        }
    cfg = _resolve(experiment, overrides)
    _check_method(cfg["method"])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory {out}: {exc}; pass a writable --out") from exc
    result = _RUNNERS[experiment](cfg, out)
    json_path = out / f"{experiment}.json"
    result = _jsonable({"experiment": experiment, "parameters": cfg, **result,
                        "files": [*result["files"], json_path]})
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
