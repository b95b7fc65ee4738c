"""VOC2007 mAP as ssl-transfer computes it (audit #19): "difficult" entries are negatives, and the 11-point AP
runs on sklearn's precision-recall curve with its appended (recall 0, precision 1) point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_curve

from gsg.errors import ConfigError, DataError
from gsg.eval.logreg import MultiLabel
from gsg.eval.metrics import voc11_ap_per_class, voc11_average_precision
from gsg.eval.transfer import FeatureSplit, evaluate_splits


def sklearn_11_point_ap(y: np.ndarray, s: np.ndarray) -> float:
    """The reference, transcribed literally: precision_recall_curve, then for t in linspace(0, 1, 11) the best
    precision among points with recall >= t (0 if none), averaged over the 11 thresholds."""
    precision, recall, _ = precision_recall_curve(y, s)
    total = 0.0
    for t in np.linspace(0, 1, 11):
        reached = recall >= t
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / 11


def test_hand_example_difficult_is_a_negative() -> None:
    # VOC labels of one class over 4 images: 0 = difficult only, 1 = positive, -1 = negative.
    voc = np.array([0, 1, -1, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    targets = (voc == 1).astype(int)  # ssl-transfer: target == 1, so the difficult image is a negative
    # Ranking -, +, -, +: (recall, precision) = (0, 0), (1/2, 1/2), (1/2, 1/3), (1, 1/2), and sklearn's (0, 1).
    # p_interp(0) = 1 (the appended point); t = 0.1 .. 0.5: best precision at recall >= t is 1/2 (recall 1/2
    # or 1); t = 0.6 .. 1: 1/2 at recall 1. AP = (1 + 10 * 1/2) / 11 = 6/11.
    assert voc11_average_precision(scores, targets) == pytest.approx(100 * 6 / 11)
    assert voc11_average_precision(scores, targets) == pytest.approx(100 * sklearn_11_point_ap(targets, scores))
    # The VOC-devkit variant gsg used before: the difficult image dropped (ranking +, -, +) and no appended
    # point: p_interp = 1 for t <= 0.5 (6 thresholds), 2/3 above (5): (6 + 5 * 2/3) / 11.
    old = voc11_average_precision(scores, targets, voc == 0, curve="devkit")
    assert old == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
    # The devkit curve alone (difficult as negative): p_interp(0) is the best precision reached, 1/2.
    assert voc11_average_precision(scores, targets, curve="devkit") == pytest.approx(100 * 5.5 / 11)


def test_matches_sklearns_curve_on_random_rankings_with_ties() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(5, 60))
        y = (rng.random(n) < rng.uniform(0.1, 0.7)).astype(int)
        if trial % 4 == 0:  # 10 positives: recalls land exactly on the thresholds 0.1, 0.2, ...
            n, y = 40, np.r_[np.ones(10, int), np.zeros(30, int)][rng.permutation(40)]
        if y.sum() == 0:
            y[0] = 1
        s = np.round(rng.random(n) + 0.8 * y, 1)  # rounded: many tied scores
        assert voc11_ap_per_class(s, y)[0] == pytest.approx(100 * sklearn_11_point_ap(y, s), abs=1e-9), trial


def test_several_classes_and_bad_input() -> None:
    s = np.array([[0.9, 0.2], [0.1, 0.8], [0.5, 0.7]])
    y = np.array([[1, 0], [0, 1], [0, 1]])
    aps = voc11_ap_per_class(s, y)
    assert aps.tolist() == pytest.approx([100 * sklearn_11_point_ap(y[:, c], s[:, c]) for c in range(2)])
    assert voc11_average_precision(s, y) == pytest.approx(aps.mean())
    with pytest.raises(DataError, match="curve"):
        voc11_ap_per_class(s, y, curve="matlab")


def voc_split(n_pos: int, n_neg: int, n_hard: int, seed: int) -> FeatureSplit:
    """One VOC class: positives at x0 = +2, negatives at -2, "difficult only" images at +4 (they look like
    the strongest positives), labelled 0 with their difficult flag, as embed_pil_dataset returns them."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.tensor([2.0] * n_pos + [-2.0] * n_neg + [4.0] * n_hard)
    x = torch.stack([centre, torch.zeros_like(centre)], 1) + 0.3 * torch.randn(len(centre), 2, generator=g)
    labels = torch.tensor([1] * n_pos + [0] * (n_neg + n_hard)).view(-1, 1)
    hard = torch.tensor([False] * (n_pos + n_neg) + [True] * n_hard).view(-1, 1)
    return FeatureSplit(x, labels, hard)


def test_feature_split_targets_count_difficult_as_negative() -> None:
    split = voc_split(3, 2, 2, seed=0)
    y = split.targets()
    assert isinstance(y, MultiLabel) and y.difficult is None
    assert y.targets[:, 0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    old = split.targets("ignore")
    assert isinstance(old, MultiLabel) and old.difficult[:, 0].tolist() == [False] * 5 + [True] * 2
    with pytest.raises(ConfigError, match="voc_difficult"):
        split.targets("drop")


def test_protocol_scores_difficult_images_as_negatives() -> None:
    splits = {"train": voc_split(20, 20, 4, 1), "val": voc_split(10, 10, 2, 2), "test": voc_split(10, 10, 2, 3)}
    values = [1e-2, 1.0]
    ours = evaluate_splits(splits, "voc11_map", values=values)
    old = evaluate_splits(splits, "voc11_map", values=values, voc_difficult="ignore")
    assert ours["voc_difficult"] == "negative" and old["voc_difficult"] == "ignore"
    assert old["value"] == pytest.approx(100.0)  # positives vs negatives only: perfectly separated
    # The two difficult test images score highest and now count as false positives: precision 10/12 at
    # every recall > 0, plus the appended point: (1 + 10 * 10/12) / 11.
    assert ours["value"] == pytest.approx(100 * (1 + 10 * 10 / 12) / 11)
