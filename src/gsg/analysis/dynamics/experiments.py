"""The experiments behind ``gsg simulate`` (Figs. 2-6 of Tian et al. in the linear model): each runs the
simulations for one figure, draws it with :mod:`gsg.analysis.dynamics.plots` and returns its numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gsg.analysis.dynamics.diagnostics import (
    _f_eigenvalues,
    commutator_norm,
    effective_tau,
    eigenspace_alignment,
    predictor_asymmetry,
    predictor_eigenvalues,
)
from gsg.analysis.dynamics.modes import (
    collapse_inevitable,
    collapse_threshold,
    fixed_points,
    is_collapsed,
    mode_rhs,
    parabola_rate,
    simulate_modes,
)
from gsg.analysis.dynamics.networks import LinearTrajectory, alignment_matrix_K, simulate_linear
from gsg.analysis.dynamics.validate import Array
from gsg.errors import ConfigError


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
    from gsg.analysis.dynamics import plots

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
    from gsg.analysis.dynamics import plots

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
    from gsg.analysis.dynamics import plots

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
    from gsg.analysis.dynamics import plots

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
    from gsg.analysis.dynamics import plots

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
    from gsg.analysis.dynamics import plots

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
