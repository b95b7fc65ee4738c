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
paper-style figures; the plotting lives in :mod:`gsg.analysis.dynamics.plots`.

Modules: ``validate`` (argument checks), ``integrate`` (fixed-step Euler / RK4), ``modes`` (Eqs. 11-16),
``networks`` (Eqs. 7-8, Theorem 3's K, Lemma 1, DirectPred), ``diagnostics`` (Theorems 1 and 3, Fig. 2
alignment), ``params`` (experiment defaults and overrides), ``experiments`` (one function per figure),
``driver`` (:func:`run_simulation`) and ``plots``. This package re-exports the public API.
"""

from __future__ import annotations

from gsg.analysis.dynamics.diagnostics import (
    balancing_residual,
    commutator_norm,
    effective_tau,
    eigenspace_alignment,
    predictor_asymmetry,
    predictor_eigenvalues,
)
from gsg.analysis.dynamics.driver import run_simulation
from gsg.analysis.dynamics.modes import (
    ModeTrajectory,
    collapse_inevitable,
    collapse_threshold,
    fixed_points,
    is_collapsed,
    mode_rhs,
    parabola_constant,
    parabola_rate,
    simulate_modes,
)
from gsg.analysis.dynamics.networks import (
    LinearTrajectory,
    SymmetricTrajectory,
    alignment_matrix_K,
    directpred_predictor,
    lemma1_rhs,
    simulate_linear,
    simulate_symmetric,
    symmetric_rhs,
)
from gsg.analysis.dynamics.params import SIMULATION_EXPERIMENTS, experiment_defaults

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
