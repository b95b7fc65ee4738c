"""Plots of a reproduction in the paper's style: accuracy (or a metric) per epoch, one line per variant, one
panel per group; Table 4's accuracy against batch size; the t-SNE panels; the decomposition's η crossing.

Like :mod:`gsg.reproduce.report`, everything here reads the results dict, so plots can be redrawn from
``results.json`` without training.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gsg.reproduce.experiments import TABLE4_BATCHES, Experiment
from gsg.reproduce.markdown import knn_label


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: never open a window
    import matplotlib.pyplot as plt

    return plt


def _groups(res: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for v in res["variants"].values():
        if v["group"] not in seen:
            seen.append(v["group"])
    return seen


def plot_curves(res: dict[str, Any], path: Path, *, curve: str, ylabel: str, title: str,
                chance: float | None = None, per_pass: bool = False) -> Path:
    """One panel per group (SimSiam / BYOL ...), one line per variant (mean over seeds, ± std band); against the
    epoch, or with ``per_pass`` against the crops encoded per image (epoch × the variant's crops per step)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    groups = _groups(res)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.0), squeeze=False)
    dataset = res["dataset_name"]
    for i, (ax, g) in enumerate(zip(axes[0], groups, strict=True)):
        for j, v in enumerate(x for x in res["variants"].values() if x["group"] == g):
            c = v["curve"][curve]
            if not c["epoch"]:
                continue
            color = plt.get_cmap("tab10")(j % 10)
            xs = [e * v.get("crops", 2) for e in c["epoch"]] if per_pass else c["epoch"]
            ax.plot(xs, c["mean"], label=v["label"], color=color, linewidth=1.6)
            if any(s is not None for s in c["std"]):
                lo = [m - (s or 0.0) for m, s in zip(c["mean"], c["std"], strict=True)]
                hi = [m + (s or 0.0) for m, s in zip(c["mean"], c["std"], strict=True)]
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle="--", linewidth=1, label=f"chance ({chance:g}%)")
        ax.set_title(f"({chr(97 + i)}) {dataset}, {g}")
        ax.set_xlabel("Crops encoded per image (epochs × crops per step)" if per_pass else "Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    # wrapped to the figure's width: a one-panel figure cut long titles off at both sides
    fig.suptitle(textwrap.fill(f"{title} (ours, scale {res['scale']})", width=48 * len(groups)))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_batch_sizes(res: dict[str, Any], path: Path) -> Path:
    """Table 4: linear (and kNN) accuracy against the batch size, one line per algorithm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    batches = TABLE4_BATCHES[res["scale"]]
    lines = (("simsiam_gsg_b", "SimSiam w/ GSG"), ("byol_gsg_b", "BYOL w/ GSG"), ("simclr_b", "SimCLR"),
             ("moco_q", "MoCo v2 (b = queue)"))
    for j, (prefix, label) in enumerate(lines):
        color = plt.get_cmap("tab10")(j)
        for metric, style in (("linear", "-o"), ("knn", "--s")):
            xs, ys = [], []
            for b in sorted(batches):
                stat = res["variants"].get(f"{prefix}{b}", {}).get("metrics", {}).get(metric, {})
                if stat.get("mean") is not None:
                    xs.append(b)
                    ys.append(stat["mean"])
            if xs:
                ax.plot(xs, ys, style, color=color, label=f"{label}, {'linear' if metric == 'linear' else 'kNN'}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(batches), [str(b) for b in sorted(batches)])
    ax.set_xlabel("Batch size (ours)")
    ax.set_ylabel("Accuracy (%)")
    ax.set_title(f"Table 4: accuracy vs batch size (ours, scale {res['scale']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tsne_grid(panels: Sequence[tuple[str, Path]], path: Path, title: str) -> Path:
    """The t-SNE PNGs side by side as the paper's Fig. 6: (a) SimSiam, (b) w/ GSG, (c) BYOL, (d) w/ GSG."""
    plt = _plt()
    import matplotlib.image as mpimg

    cols = 2
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (label, png) in enumerate(panels):
        ax = axes.flat[i]
        ax.imshow(mpimg.imread(png))
        ax.set_title(f"({chr(97 + i)}) {label}", fontsize=14)
    fig.suptitle(title, fontsize=16)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# The decomposition experiment's per-epoch curves (history keys) and their axis labels.
DECOMPOSITION_PLOTS: tuple[tuple[str, str], ...] = (
    ("z_center_ratio", "m_o = ‖o_z‖ (centre of z/‖z‖)"), ("z_residual_ratio", "m_r = mean ‖r_i‖ (residuals)"),
    ("z_rankme", "RankMe of z (last batch)"), ("ge_center_norm", "‖o_e‖ (centre of the extra gradient)"),
    ("ge_residual_norm", "mean ‖r_e‖ (residual of the extra gradient)"),
    ("eta_p", "η_p = o_e·o_p / ‖o_p‖² (Zhang et al.: ≈ -0.5)"),
    ("sel_eta", "η of GSG's selection gradient (< 0: de-centring)"))


def plot_eta_crossing(res: dict[str, Any], path: Path) -> Path | None:
    """Zhang et al.'s Fig. 5a from the last epoch: cos(o_e − η o_p, o_p) against η, one line per run.

    Rebuilt from three logged scalars: with a = o_e·o_p = η_p ‖o_p‖², b = ‖o_p‖², c = ‖o_e‖²,
    cos = (a − η b) / (√(c − 2ηa + η²b) √b); it crosses 0 at η = η_p.
    """
    plt = _plt()
    etas = [-2.0 + 3.0 * i / 300 for i in range(301)]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = 0
    for v in res["variants"].values():
        m = v["metrics"]
        eta_p, c, op = (m.get(k, {}).get("mean") for k in ("eta_p", "ge_center_norm", "p_center_norm"))
        if eta_p is None or not c or c < 1e-6 or not op:  # no extra-gradient centre: no crossing to draw
            continue
        b = op * op
        a = eta_p * b
        cos = [(a - e * b) / (math.sqrt(max(c * c - 2 * e * a + e * e * b, 1e-30)) * op) for e in etas]
        ax.plot(etas, cos, label=f"{v['label']} (η_p = {eta_p:.2f})", linewidth=1.4)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(0.0, color="gray", linewidth=1)
    ax.axvline(-0.5, color="gray", linestyle="--", linewidth=1, label="Zhang et al. Fig. 5a: ≈ -0.5")
    ax.set_xlabel("η")
    ax.set_ylabel("cos(o_e − η o_p, o_p)")
    ax.set_title(f"De-centring, last epoch (ours, scale {res['scale']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(res: dict[str, Any], exp: Experiment, out: Path) -> list[str]:
    """Write the experiment's PNGs into ``out``; returns their paths."""
    knn = "kNN accuracy (%, " + knn_label(res) + ")"
    chance = res["chance"] if res["experiment"] in ("fig4", "fig5", "decomposition") else None
    paths = [plot_curves(res, out / f"{res['experiment']}_knn.png", curve="knn", ylabel=knn, title=res["title"],
                         chance=chance)]
    if res["experiment"] in ("fig4", "fig5"):  # the collapse signal beside the accuracy
        paths.append(plot_curves(res, out / f"{res['experiment']}_zstd.png", curve="z_std",
                                 ylabel="std(z/‖z‖)·√d (0: complete collapse)", title=res["title"]))
    if res["experiment"] == "table4":
        paths.append(plot_batch_sizes(res, out / "table4_batch.png"))
    if res["experiment"] == "crops":  # equal compute: 4 crops for N epochs against 2 crops for 2N
        paths.append(plot_curves(res, out / "crops_knn_per_pass.png", curve="knn", ylabel=knn, title=res["title"],
                                 per_pass=True))
    if res["experiment"] == "decomposition":
        for key, label in DECOMPOSITION_PLOTS:  # panels only for the groups whose runs logged the metric
            logged = {n: v for n, v in res["variants"].items() if v["curve"].get(key, {}).get("epoch")}
            if logged:
                paths.append(plot_curves({**res, "variants": logged}, out / f"decomposition_{key}.png", curve=key,
                                         ylabel=label, title=res["title"]))
        crossing = plot_eta_crossing(res, out / "decomposition_eta_crossing.png")
        if crossing is not None:
            paths.append(crossing)
    if res["experiment"] == "tsne":
        panels = [(r["label"], Path(r["evals"]["tsne"]["png"])) for r in res["runs"]
                  if r["seed"] == 0 and r.get("evals", {}).get("tsne", {}).get("png")]
        if panels:
            paths.append(plot_tsne_grid(panels, out / "tsne_panels.png",
                                        f"t-SNE of test-set representations (ours, scale {res['scale']})"))
    return [str(p) for p in paths]


__all__ = ["plot_batch_sizes", "plot_curves", "plot_eta_crossing", "plot_tsne_grid", "write_plots"]
