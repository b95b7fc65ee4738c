"""The matrix-valued simulations: the symmetric reduction (Eqs. 7-8) with Theorem 3's K, and the full Lemma 1
dynamics of the linear online net, predictor and target, with DirectPred's predictor (Eq. 18).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gsg.analysis.dynamics.integrate import State, _integrate
from gsg.analysis.dynamics.validate import Array, _positive
from gsg.errors import ConfigError

_PREDICTORS = ("gradient", "directpred")


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
