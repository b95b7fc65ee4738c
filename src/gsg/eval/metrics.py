"""Classification metrics of the evaluation protocols, all in percent.

- top-k accuracy: share of samples whose true class is among the k highest scores;
- mean per-class accuracy: the recall of each class, averaged over the classes present in the targets
  (Aircraft, Pets, Caltech101, Flowers in the transfer protocol);
- VOC 11-point average precision (VOC2007): per class, AP = (1/11) Σ_{t ∈ {0, 0.1, …, 1}} p_interp(t),
  with p_interp(t) = max{precision(r) : recall(r) ≥ t} (0 when no recall reaches t); mAP is its mean
  over classes. By default computed as ssl-transfer does (the code behind the GSG paper's Table 2): on
  ``sklearn.metrics.precision_recall_curve``'s points, which include an appended (recall 0, precision 1),
  so p_interp(0) = 1 always.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from gsg.errors import DataError

ArrayLike = Tensor | np.ndarray


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def topk_accuracy(scores: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracies in percent: ``100 · mean_i [targets_i ∈ top-k(scores_i)]`` for each k in ``ks``.

    ``scores`` is (N, C) logits or probabilities, ``targets`` (N,) class indices. A k larger than C counts
    every sample as correct, as ``torch.topk`` on all C classes would.
    """
    if scores.ndim != 2 or targets.ndim != 1 or scores.shape[0] != targets.shape[0]:
        raise DataError(f"topk_accuracy needs scores (N, C) and targets (N,), got {tuple(scores.shape)} "
                        f"and {tuple(targets.shape)}")
    if scores.shape[0] == 0:
        raise DataError("topk_accuracy got no samples; evaluate on a non-empty split")
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices  # (N, kmax), best first
    hit = top.eq(targets.to(top.device).view(-1, 1))  # at most one True per row
    cum = hit.cumsum(dim=1).clamp_(max=1).float()  # cum[:, j] = correct within top-(j+1)
    return {k: 100.0 * cum[:, min(k, kmax) - 1].mean().item() for k in ks}


def top1_accuracy(scores_or_preds: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy in percent; accepts (N, C) scores or (N,) predicted labels."""
    preds = scores_or_preds.argmax(dim=1) if scores_or_preds.ndim == 2 else scores_or_preds
    if preds.shape != targets.shape or preds.numel() == 0:
        raise DataError(f"top1_accuracy needs as many predictions as targets (and at least one), got "
                        f"{tuple(preds.shape)} and {tuple(targets.shape)}")
    return 100.0 * preds.to(targets.device).eq(targets).float().mean().item()


def mean_per_class_accuracy(preds: ArrayLike, targets: ArrayLike) -> float:
    """Mean over the classes present in ``targets`` of that class's recall, in percent.

    ``(100 / |K|) Σ_{c ∈ K} |{i : y_i = c, ŷ_i = c}| / |{i : y_i = c}|`` with K the set of classes that
    occur in ``targets``: a class only ever predicted, never present, has no recall and is left out (the
    confusion-matrix formula of Ericsson et al. would give 0/0 for it).
    """
    p, y = _np(preds).reshape(-1), _np(targets).reshape(-1)
    if p.shape != y.shape or y.size == 0:
        raise DataError(f"mean_per_class_accuracy needs as many predictions as targets (and at least one), "
                        f"got {p.shape} and {y.shape}")
    classes, inverse = np.unique(y, return_inverse=True)
    total = np.bincount(inverse, minlength=classes.size)
    correct = np.bincount(inverse, weights=(p == y).astype(np.float64), minlength=classes.size)
    return float(100.0 * np.mean(correct / total))


CURVES = ("sklearn", "devkit")


def voc11_ap_per_class(scores: ArrayLike, targets: ArrayLike, difficult: ArrayLike | None = None, *,
                       curve: str = "sklearn") -> np.ndarray:
    """11-point interpolated AP of each class, in percent (see the module docstring for the formula).

    ``scores`` (N, C) or (N,): classifier scores, higher means "positive". ``targets`` the same shape with
    1 for positive and 0 for negative. ``difficult`` (same shape, bool, optional): entries removed from
    that class's ranking, neither positive nor negative. ssl-transfer (and so the GSG paper's Table 2)
    does *not* remove them: it takes VOC's 1 / -1 / 0 (0 = difficult) labels as ``targets = labels == 1``,
    so a difficult entry is a negative; pass ``difficult`` only for the VOC devkit's convention.

    Tied scores form one threshold, as in ``sklearn.metrics.precision_recall_curve``. ``curve="sklearn"``
    (default, ssl-transfer's ``voc_eval_cls``): that function's points, which end with an artificial
    (recall 0, precision 1), so p_interp(0) = 1, and recall is compared with the thresholds
    ``np.linspace(0, 1, 11)`` exactly, as ssl-transfer's ``voc_ap`` does. ``curve="devkit"``: no artificial
    point, p_interp(0) is the best precision reached, as in the VOC devkit (with a 1e-12 tolerance on the
    recall comparison). The two differ when the top-scoring entry of a class is a negative (by
    (1 - p_max) / 11 at most, plus the rare recall exactly on a threshold). A class without positives
    raises ``DataError``.
    """
    if curve not in CURVES:
        raise DataError(f"curve must be one of {CURVES}, got {curve!r}")
    s, y = _np(scores).astype(np.float64), _np(targets)
    if s.ndim == 1:
        s, y = s[:, None], y.reshape(-1, 1)
    if s.shape != y.shape or s.ndim != 2:
        raise DataError(f"voc11 AP needs scores and targets of the same shape (N, C), got {s.shape} and "
                        f"{y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError("voc11 AP targets must be 1 (positive) or 0 (negative); pass VOC's 0 = difficult "
                        "entries through `difficult` (targets = labels == 1, difficult = labels == 0)")
    keep = np.ones_like(y, dtype=bool) if difficult is None else ~_np(difficult).reshape(y.shape).astype(bool)
    thresholds = np.linspace(0.0, 1.0, 11)
    aps = np.empty(s.shape[1])
    for c in range(s.shape[1]):  # one ranking per class; the work inside is vectorised
        sc, pos = s[keep[:, c], c], y[keep[:, c], c].astype(bool)
        n_pos = int(pos.sum())
        if n_pos == 0:
            raise DataError(f"class {c} has no positive (non-difficult) example, so its AP is undefined; "
                            "evaluate on a split where every class occurs")
        order = np.argsort(-sc, kind="stable")
        sc, pos = sc[order], pos[order]
        tp = np.cumsum(pos)
        fp = np.cumsum(~pos)
        # The curve has one point per distinct score: the last index of each run of equal scores.
        last = np.r_[np.nonzero(np.diff(sc))[0], sc.size - 1]
        precision = tp[last] / (tp[last] + fp[last])
        recall = tp[last] / n_pos
        if curve == "sklearn":
            precision, recall = np.r_[precision, 1.0], np.r_[recall, 0.0]
            reached = recall[None, :] >= thresholds[:, None]  # (11, points)
        else:
            reached = recall[None, :] >= thresholds[:, None] - 1e-12
        p_interp = np.where(reached, precision[None, :], 0.0).max(axis=1)
        aps[c] = 100.0 * p_interp.mean()
    return aps


def voc11_average_precision(scores: ArrayLike, targets: ArrayLike, difficult: ArrayLike | None = None, *,
                            curve: str = "sklearn") -> float:
    """VOC2007 11-point mAP in percent: the mean over classes of :func:`voc11_ap_per_class`.

    Example (one class; ranking +, −, +; precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; p_interp is 1 for
    t ≤ 0.5 and 2/3 above, so AP = (6 · 1 + 5 · 2/3) / 11):
        >>> round(voc11_average_precision([0.9, 0.8, 0.7], [1, 0, 1]), 4)
        84.8485

    A negative ranked first (−, +): precision 0 at recall 0, then 1/2 at recall 1. The sklearn curve's
    extra point makes p_interp(0) = 1, the devkit's p_interp(0) = 1/2:
        >>> round(voc11_average_precision([0.9, 0.8], [0, 1]), 4), voc11_average_precision([0.9, 0.8], [0, 1],
        ...                                                                              curve="devkit")
        (54.5455, 50.0)
    """
    return float(voc11_ap_per_class(scores, targets, difficult, curve=curve).mean())
