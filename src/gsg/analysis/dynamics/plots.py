"""Figures for the linear-dynamics simulator (:mod:`gsg.analysis.dynamics`), in the style of Tian et al. 2021.

Every function takes plain arrays, writes one PNG and returns its path. Figures are drawn on a
``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module never changes the
caller's pyplot backend and works on machines without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

Array = np.ndarray
_DPI = 120
_COLLAPSE_FILL = "#f4b6b6"  # light red for "collapse" regions, used consistently across figures


def _figure(nrows: int, ncols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False))
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _mode_colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def plot_trajectories(
    path: Path,
    runs: Sequence[dict[str, Any]],
    *,
    p_minus: float,
    p_plus: float,
    s_plus: float,
    title: str,
    s_floor: float = 1e-8,
) -> Path:
    """Fig. 2 (columns 1-2): per run, log eigenvalues s_j of F and eigenvalues p_j of Wp over time.

    ``runs``: dicts with ``label``, ``times`` (T,), ``s`` (T, n), ``p`` (T, n), ``collapsed`` (n,) bool.
    """
    fig, axes = _figure(len(runs), 2, 11.0, 3.0 * len(runs) + 0.6)
    for row, run in zip(axes, runs, strict=True):
        t, s, p = run["times"], run["s"], run["p"]
        colours = _mode_colours(s.shape[1])
        ax_s, ax_p = row
        for j in range(s.shape[1]):
            ax_s.plot(t, np.clip(s[:, j], s_floor, None), color=colours[j], lw=1.2)
            ax_p.plot(t, p[:, j], color=colours[j], lw=1.2)
        ax_s.axhline(s_plus, color="k", ls="--", lw=1, label=f"s*+ = p*+²/α_p = {s_plus:.3f}")
        ax_s.set_yscale("log")
        ax_s.set_ylim(s_floor / 2, None)
        ax_s.set_xlabel("time t")
        ax_s.set_ylabel(f"eigenvalues s_j of F (log, floor {s_floor:g})")
        n_dead = int(np.sum(run["collapsed"]))
        ax_s.set_title(f"{run['label']}: s_j ({n_dead}/{s.shape[1]} modes collapsed)")
        ax_s.legend(loc="lower right", fontsize=8)
        ax_p.axhline(p_plus, color="k", ls="--", lw=1, label=f"p*+ = {p_plus:.3f} (stable)")
        ax_p.axhline(p_minus, color="r", ls=":", lw=1.2, label=f"p*- = {p_minus:.3f} (basin edge)")
        ax_p.axhline(0.0, color="grey", lw=0.6)
        ax_p.set_xlabel("time t")
        ax_p.set_ylabel("eigenvalues p_j of Wp (real part)")
        ax_p.set_title(f"{run['label']}: p_j")
        ax_p.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_alignment(
    path: Path,
    *,
    times: Array,
    cos: Array,
    collapsed: Array,
    commutators: dict[str, tuple[Array, Array]],
    asymmetry: tuple[Array, Array],
    lam_min_K: tuple[Array, Array],
    title: str,
) -> Path:
    """Fig. 2 (column 3), Fig. 9: alignment cos(Wp u_j, u_j), ||[F, Wp]||, asymmetry, lambda_min(K)."""
    fig, axes = _figure(2, 2, 11.0, 7.4)
    ax = axes[0, 0]
    colours = _mode_colours(cos.shape[1])
    for j in range(cos.shape[1]):
        dead = bool(collapsed[j])
        ax.plot(
            times, cos[:, j], color="0.65" if dead else colours[j], lw=0.9 if dead else 1.3,
            ls="--" if dead else "-",
        )
    ax.plot([], [], color=colours[0], label="non-collapsed modes")
    ax.plot([], [], color="0.65", ls="--", label="collapsed modes")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("time t")
    ax.set_ylabel("cos(Wp u_j, u_j)")
    ax.set_title("alignment per eigenvector u_j of F (sorted by s_j)")
    ax.legend(loc="lower right", fontsize=8)

    ax = axes[0, 1]
    for label, (t, v) in commutators.items():
        ax.semilogy(t, np.clip(v, 1e-17, None), lw=1.5, label=label)
    ax.set_xlabel("time t")
    ax.set_ylabel("||[F, Wp]||_F / (||F||_F ||Wp||_F)")
    ax.set_title("commutator (Theorem 3)")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    t, v = asymmetry
    ax.semilogy(t, np.clip(v, 1e-17, None), color="C3", lw=1.5, label="regular Wp")
    ax.set_xlabel("time t")
    ax.set_ylabel("||Wp - Wp^T||_F / ||Wp||_F")
    ax.set_title("Wp becomes symmetric")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    t, v = lam_min_K
    ax.plot(t, v, color="C2", lw=1.5, label="λ_min(K(t)), symmetric Wp")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.fill_between(t, np.minimum(v, 0.0), 0.0, color=_COLLAPSE_FILL, label="K not positive definite")
    ax.set_xlabel("time t")
    ax.set_ylabel("λ_min(K)")
    ax.set_title("K(t) of Theorem 3 (τ = <Wa, W>/||W||²)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_phase(
    path: Path,
    panels: Sequence[dict[str, Any]],
    *,
    cubic_p: Array,
    title: str,
) -> Path:
    """Fig. 3 + Fig. 4: phase portraits of Eqs. 11-12 in (p, s), and the cubic dp/dt of Eq. 16.

    ``panels``: dicts with ``eta``, grids ``P``, ``S``, flow ``dP``, ``dS``, boolean ``basin`` (collapse
    basin on the grid), ``p_minus``, ``p_plus`` (NaN if absent), ``alpha_p``, ``tau``, ``sigma2``,
    ``cubic`` (rates on ``cubic_p``), ``trajectories`` (list of (p, s) arrays).
    """
    n = len(panels)
    ncols = 2 if n + 1 <= 4 else 3
    nrows = -(-(n + 1) // ncols)
    fig, axes = _figure(nrows, ncols, 5.6 * ncols, 5.0 * nrows)
    flat = list(axes.ravel())
    for ax in flat[n + 1:]:
        ax.set_visible(False)
    for ax, pan in zip(flat[:n], panels, strict=True):
        P, S = pan["P"], pan["S"]
        ax.contourf(P, S, pan["basin"].astype(float), levels=[0.5, 1.5], colors=[_COLLAPSE_FILL])
        speed = np.hypot(pan["dP"], pan["dS"])
        ax.streamplot(
            P[0], S[:, 0], pan["dP"], pan["dS"], color=np.log10(speed + 1e-12), cmap="Greys",
            norm=Normalize(-4, 0), density=1.1, linewidth=0.7, arrowsize=0.8,
        )
        pp = np.linspace(P.min(), P.max(), 300)
        ax.plot(pp, pp**2 / pan["alpha_p"], color="C0", lw=1.5, label="parabola s = p²/α_p")
        for traj in pan.get("trajectories", []):
            ax.plot(traj[0], traj[1], color="C1", lw=1.0)
        if pan["eta"] == 0:
            ax.axvline(pan["tau"] / (1 + pan["sigma2"]), color="C2", lw=1.5, label="fixed line p = τ/(1+σ²)")
        if np.isfinite(pan["p_plus"]):
            ax.plot(pan["p_plus"], pan["p_plus"] ** 2 / pan["alpha_p"], "o", color="C2", ms=7,
                    label=f"p*+ = {pan['p_plus']:.3f} (stable)")
        if np.isfinite(pan["p_minus"]) and pan["eta"] > 0:
            ax.plot(pan["p_minus"], pan["p_minus"] ** 2 / pan["alpha_p"], "o", mfc="white", color="C3",
                    ms=7, label=f"p*- = {pan['p_minus']:.3f} (saddle)")
        ax.plot(0, 0, "ks", ms=5, label="collapsed (0, 0)")
        ax.fill_between([], [], color=_COLLAPSE_FILL, label="collapse basin")
        ax.set_xlim(P.min(), P.max())
        ax.set_ylim(S.min(), S.max())
        ax.set_xlabel("p (eigenvalue of Wp)")
        ax.set_ylabel("s (eigenvalue of F)")
        crit = " > η_c: collapse" if not np.isfinite(pan["p_plus"]) else ""
        ax.set_title(f"η = {pan['eta']:g}{crit}")
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
    ax = flat[n]
    for k, pan in enumerate(panels):
        ax.plot(cubic_p, pan["cubic"], color=f"C{k}", lw=1.5, label=f"η = {pan['eta']:g}")
        for root in (pan["p_minus"], pan["p_plus"]):
            if np.isfinite(root) and root > 0:
                ax.plot(root, 0.0, "o", color=f"C{k}", mfc="white")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xlabel("p on the parabola")
    ax.set_ylabel("dp/dt = p Δ(p)  (Eq. 16)")
    ax.set_title("1-D dynamics on the parabola (Fig. 4)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_weight_decay(
    path: Path,
    *,
    etas: Array,
    p_final: Array,
    s_final: Array,
    n_alive: Array,
    mode_eta: Array,
    mode_p_final: Array,
    mode_survival: Array,
    eta_grid: Array,
    p_minus: Array,
    p_plus: Array,
    alpha_p: float,
    eta_c: float,
    commutators: dict[str, tuple[Array, Array]],
    title: str,
) -> Path:
    """Weight-decay sweep: bifurcation diagram of final p, final s, surviving modes, alignment speed."""
    fig, axes = _figure(2, 2, 11.0, 8.0)
    top = float(np.nanmax(np.concatenate([p_final.ravel(), p_plus[np.isfinite(p_plus)]]))) * 1.55

    def _shade(ax: Any) -> None:
        ax.axvspan(eta_c, max(float(etas.max()), float(eta_grid.max())), color=_COLLAPSE_FILL,
                   label=f"η > η_c = τ²/(4(1+σ²)) = {eta_c:.3f}")

    ax = axes[0, 0]
    _shade(ax)
    ax.scatter(mode_eta.ravel(), mode_p_final.ravel(), s=6, color="0.55",
               label="Eqs. 11-12 from p0 on the parabola")
    n_modes = p_final.shape[1]
    ax.scatter(np.repeat(etas, n_modes), p_final.ravel(), s=14, color="C0",
               label="full Lemma-1 eigenvalues of Wp")
    ax.plot(eta_grid, p_plus, "k-", lw=1.5, label="p*+ (stable)")
    ax.plot(eta_grid, p_minus, "r--", lw=1.5, label="p*- (collapse-basin edge)")
    ax.set_ylim(-0.05, top)
    ax.set_xlabel("weight decay η")
    ax.set_ylabel("final p_j")
    ax.set_title("final predictor eigenvalues")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[0, 1]
    _shade(ax)
    ax.scatter(np.repeat(etas, n_modes), s_final.ravel(), s=14, color="C0",
               label="full Lemma-1 eigenvalues of F")
    ax.plot(eta_grid, p_plus**2 / alpha_p, "k-", lw=1.5, label="s*+ = p*+²/α_p")
    ax.set_ylim(-0.03, float(np.nanmax(s_final)) * 1.45)  # headroom for the legend
    ax.set_xlabel("weight decay η")
    ax.set_ylabel("final s_j")
    ax.set_title("final eigenvalues of F")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[1, 0]
    _shade(ax)
    ax.plot(etas, n_alive / p_final.shape[1], "o-", color="C0", label="full Lemma-1: non-collapsed modes")
    ax.plot(mode_eta[:, 0], mode_survival, "s-", color="0.45", ms=4,
            label="Eqs. 11-12: fraction of parabola starts surviving")
    ax.set_ylim(-0.05, 1.35)
    ax.set_xlabel("weight decay η")
    ax.set_ylabel("fraction of modes not collapsed")
    ax.set_title("larger η: larger collapse basin")
    ax.legend(fontsize=7, loc="upper right")

    ax = axes[1, 1]
    for label, (t, v) in commutators.items():
        ax.semilogy(t, np.clip(v, 1e-17, None), lw=1.4, label=label)
    ax.set_xlabel("time t")
    ax.set_ylabel("||[F, Wp]||_F / (||F||_F ||Wp||_F)")
    ax.set_title("alignment speed (Fig. 5, top)")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_ema(
    path: Path,
    runs: Sequence[dict[str, Any]],
    *,
    s_plus: float,
    title: str,
) -> Path:
    """EMA sweep (Fig. 5 bottom, Table 4 #8-#10): growth, tau(t), alignment, lambda_min(K), final spectrum.

    ``runs``: dicts with ``label``, ``times``, ``trF`` (T,), ``tau`` (T,), ``comm`` (T,), ``lam_K`` (T,),
    ``s_final`` (n,), ``n_alive`` (int).
    """
    fig, axes = _figure(2, 3, 15.0, 8.2)
    for k, run in enumerate(runs):
        c = f"C{k}"
        t = run["times"]
        axes[0, 0].plot(t, run["trF"], color=c, lw=1.5, label=run["label"])
        axes[0, 1].plot(t, run["tau"], color=c, lw=1.5, label=run["label"])
        axes[0, 2].semilogy(t, np.clip(run["comm"], 1e-17, None), color=c, lw=1.4, label=run["label"])
        axes[1, 0].plot(t, run["lam_K"], color=c, lw=1.4, label=run["label"])
        s = np.sort(run["s_final"])[::-1]
        axes[1, 1].plot(np.arange(1, s.size + 1), np.clip(s, 1e-12, None), "o-", color=c, ms=4,
                        label=run["label"])
        axes[1, 2].bar(k, run["n_alive"], color=c, label=run["label"])
    specs = [
        (axes[0, 0], "time t", "tr F = Σ_j s_j", "representation growth"),
        (axes[0, 1], "time t", "τ = <Wa, W> / ||W||²", "target / online ratio (Assumption 1)"),
        (axes[0, 2], "time t", "||[F, Wp]||_F / (||F||_F ||Wp||_F)", "alignment"),
        (axes[1, 0], "time t", "λ_min(K), K of Theorem 3 with sym(Wp)", "alignment condition"),
        (axes[1, 1], "mode j (sorted)", "final s_j (log, floor 1e-12)", "final spectrum of F"),
        (axes[1, 2], "run", "non-collapsed modes", "surviving modes"),
    ]
    axes[0, 1].axhline(1.0, color="k", lw=0.8)
    axes[1, 0].axhline(0.0, color="k", lw=0.8)
    axes[1, 1].axhline(s_plus, color="k", ls="--", lw=1, label=f"s*+ (τ = 1) = {s_plus:.3f}")
    axes[1, 1].set_yscale("log")
    axes[1, 2].set_xticks(range(len(runs)), [r["label"].split(" (")[0] for r in runs], rotation=20)
    for ax, xlabel, ylabel, sub in specs:
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(sub)
    axes[0, 0].legend(fontsize=8)  # one legend for the shared colours; the spectrum adds s*+
    axes[1, 1].legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def plot_predictor_lr(
    path: Path,
    *,
    alphas: Array,
    p_final: Array,
    s_final: Array,
    n_alive: Array,
    alpha_grid: Array,
    p_plus: float,
    basin_alphas: Array,
    basin_fraction: Array,
    runs: Sequence[dict[str, Any]],
    title: str,
) -> Path:
    """Predictor-lr sweep (Table 4 #1, #2; cf. Fig. 6): final p and s, collapse basin, trajectories."""
    fig, axes = _figure(2, 2, 11.0, 8.0)
    ax = axes[0, 0]
    n_modes = p_final.shape[1]
    ax.scatter(np.repeat(alphas, n_modes), p_final.ravel(), s=14, color="C0",
               label="full Lemma-1 eigenvalues of Wp")
    ax.axhline(p_plus, color="k", lw=1.5, label=f"p*+ = {p_plus:.3f} (independent of α_p)")
    ax.set_xscale("log")
    ax.set_xlabel("relative predictor lr α_p")
    ax.set_ylabel("final p_j")
    ax.set_title("final predictor eigenvalues")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    ax.scatter(np.repeat(alphas, n_modes), np.clip(s_final.ravel(), 1e-8, None), s=14, color="C0",
               label="full Lemma-1 eigenvalues of F")
    ax.plot(alpha_grid, p_plus**2 / alpha_grid, "k-", lw=1.5, label="s*+ = p*+²/α_p")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-4, None)
    ax.set_xlabel("relative predictor lr α_p")
    ax.set_ylabel("final s_j")
    ax.set_title("too large α_p: s_j barely grows (#2)")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    ax.plot(basin_alphas, basin_fraction, "s-", color="C3", ms=4,
            label="Eqs. 11-12: collapsing share of start box")
    ax.plot(alphas, 1.0 - n_alive / p_final.shape[1], "o-", color="C0", label="full Lemma-1: collapsed modes")
    ax.set_xscale("log")
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("relative predictor lr α_p")
    ax.set_ylabel("fraction collapsed")
    ax.set_title("larger α_p: smaller collapse basin (#1)")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for k, run in enumerate(runs):
        c = f"C{k}"
        for j in range(run["p"].shape[1]):
            ax.plot(run["p"][:, j], np.clip(run["s"][:, j], 1e-6, None), color=c, lw=1.0,
                    label=run["label"] if j == 0 else None)
            ax.plot(run["p"][0, j], run["s"][0, j], "o", color=c, ms=4)
        pp = np.linspace(1e-3, 1.1 * p_plus, 200)
        ax.plot(pp, pp**2 / run["alpha_p"], color=c, ls=":", lw=1.2)
    ax.set_yscale("log")
    ax.set_ylim(1e-6, None)
    ax.set_xlabel("p")
    ax.set_ylabel("s (log, floor 1e-6)")
    ax.set_title("per-mode trajectories (dots: starts); dotted: s = p²/α_p")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
