"""Plots of training histories: one line per run, one panel per metric (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LABELS = {"knn_k1": "kNN accuracy, k=1 (%)", "knn_k200": "kNN accuracy, k=200 (%)",
          "z_std": "std(z/‖z‖)·√d", "z_rankme": "RankMe of z", "z_center_ratio": "centre ratio m_o of z",
          "loss": "loss", "pred_alignment": "predictor eigenspace alignment"}


def plot_histories(runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str], out: str | Path, *,
                   title: str = "") -> Path:
    """``runs``: label → per-epoch records (each with ``epoch`` and the metrics). Writes a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(metrics), 3.6), dpi=120)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        for label, history in runs.items():
            pts = [(r["epoch"], r[metric]) for r in history if r.get(metric) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=label, linewidth=1.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
