"""Invariants and diagnostics of recorded trajectories, batched over leading axes: Theorem 1's balancing
residual, Theorem 3's commutator ||[F, Wp]||, Fig. 2's eigenspace alignment, predictor asymmetry, tau, eigenvalues.
"""

from __future__ import annotations

import numpy as np

from gsg.analysis.dynamics.validate import Array


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
