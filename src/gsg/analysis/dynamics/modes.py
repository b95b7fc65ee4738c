"""One eigen-mode at a time: the decoupled per-mode ODEs (Eqs. 11-13) and their closed forms on the invariant
parabola (Eqs. 14-16): collapse threshold, fixed points p*_-/+ and the rate dp/dt = p Delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gsg.analysis.dynamics.integrate import State, _integrate
from gsg.analysis.dynamics.validate import Array, _positive

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
