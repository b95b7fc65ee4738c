"""t-SNE map of test-set representations coloured by class (paper Appendix E, Fig. 6).

scikit-learn's Barnes–Hut t-SNE with PCA initialisation, perplexity 30 and a fixed
seed, on a seeded subsample (default at most 5000 points: Barnes–Hut is O(N log N) but still minutes
per 10 000 points on two cores). The caller writes the kNN accuracy into ``title``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gsg.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded uniform subsample of ``min(n, max_points)`` out of ``n``."""
    if max_points < 1:
        raise ConfigError(f"max_points must be at least 1, got {max_points}")
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def tsne_embedding(features: Tensor | np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-d t-SNE coordinates (N, 2) of ``features`` (N, D), PCA-initialised and seeded."""
    from sklearn.manifold import TSNE  # imported here: sklearn is only needed by this protocol

    if isinstance(features, Tensor):
        x = features.detach().float().cpu().numpy()
    else:
        x = np.asarray(features, np.float32)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DataError(f"t-SNE needs a (N, D) feature matrix with N >= 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("features contain NaN or infinite values; the checkpoint is diverged or corrupt")
    # Perplexity must stay below N (sklearn refuses otherwise); shrink it for tiny sets.
    perp = min(perplexity, max(1.0, (x.shape[0] - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, learning_rate="auto")
    return tsne.fit_transform(x)


def tsne_plot(features: Tensor | np.ndarray, labels: Tensor | np.ndarray, class_names: Sequence[str] | None,
              out_png: str | os.PathLike[str], title: str, *, max_points: int = 5000,
              perplexity: float = 30.0,
              seed: int = 0, dpi: int = 150) -> Path:
    """Embed a seeded subsample of ``features`` with t-SNE and save a scatter coloured by class.

    ``labels`` (N,) int class indices; ``class_names[c]`` names class c in the legend (``None``: the
    indices). Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: never open a window
    import matplotlib.pyplot as plt

    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    n = len(features)
    if y.shape != (n,):
        raise DataError(f"t-SNE got {n} feature rows but labels of shape {y.shape}")
    idx = subsample(n, max_points, seed)
    coords = tsne_embedding(features[torch.as_tensor(idx)] if isinstance(features, Tensor) else
                            np.asarray(features)[idx], perplexity=perplexity, seed=seed)
    y = y[idx]
    classes = np.unique(y)
    cmap = plt.get_cmap("tab10" if classes.size <= 10 else "tab20" if classes.size <= 20 else "turbo")
    fig, ax = plt.subplots(figsize=(7, 7))
    for i, c in enumerate(classes):
        m = y == c
        color = cmap(i % cmap.N) if classes.size <= 20 else cmap(i / max(1, classes.size - 1))
        name = class_names[int(c)] if class_names is not None and 0 <= int(c) < len(class_names) else str(c)
        ax.scatter(coords[m, 0], coords[m, 1], s=4, color=color, label=name, alpha=0.8, linewidths=0)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if classes.size <= 20:  # a legend of hundreds of classes hides the plot
        ax.legend(markerscale=4, fontsize=8, loc="best", frameon=True)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    log.info("t-SNE of %d points written to %s", len(idx), out)
    return out
