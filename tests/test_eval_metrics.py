"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gsg.errors import DataError
from gsg.eval.metrics import (
    mean_per_class_accuracy,
    top1_accuracy,
    topk_accuracy,
    voc11_ap_per_class,
    voc11_average_precision,
)


def test_topk_accuracy() -> None:
    scores = torch.tensor([[0.1, 0.5, 0.4],   # true 2: second best
                           [0.9, 0.05, 0.05],  # true 0: best
                           [0.2, 0.3, 0.5]])  # true 0: third
    targets = torch.tensor([2, 0, 0])
    acc = topk_accuracy(scores, targets, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(100 / 3)
    assert acc[2] == pytest.approx(200 / 3)
    assert acc[5] == pytest.approx(100.0)  # k > C: every sample counts
    assert top1_accuracy(scores, targets) == pytest.approx(100 / 3)
    assert top1_accuracy(torch.tensor([2, 0, 0]), targets) == 100.0


def test_mean_per_class_accuracy_unbalanced() -> None:
    # Class 0: 8 samples, 8 right. Class 1: 2 samples, 0 right. Overall accuracy 80%, per class (100 + 0)/2.
    y = np.array([0] * 8 + [1] * 2)
    p = np.array([0] * 8 + [0] * 2)
    assert mean_per_class_accuracy(p, y) == pytest.approx(50.0)
    # Class 2 only predicted, never present: left out (no recall defined).
    p2 = np.array([0] * 7 + [2] + [1, 1])
    assert mean_per_class_accuracy(p2, y) == pytest.approx((7 / 8 + 1.0) / 2 * 100)
    assert mean_per_class_accuracy(torch.tensor(p), torch.tensor(y)) == pytest.approx(50.0)


def test_voc11_ap_hand_example() -> None:
    # Ranking by score: +, -, +, -, +  (3 positives).
    # precision/recall after each: 1/1 @1/3, 1/2 @1/3, 2/3 @2/3, 2/4 @2/3, 3/5 @1.
    # p_interp(t): t <= 1/3 (0, .1, .2, .3): 1; 1/3 < t <= 2/3 (.4, .5, .6): 2/3; t > 2/3 (.7 .. 1): 3/5.
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    targets = [1, 0, 1, 0, 1]
    expected = 100 * (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11
    assert voc11_average_precision(scores, targets) == pytest.approx(expected)


def test_voc11_map_two_classes_difficult_and_ties() -> None:
    scores = np.array([[0.9, 0.1], [0.8, 0.5], [0.7, 0.5], [0.1, 0.9]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    difficult = np.array([[False, False], [True, False], [False, False], [False, True]])
    # Class 0 with the difficult row 1 removed: ranking +, +, - -> AP 100.
    # Class 1 with row 3 (difficult) removed: scores 0.1 (-), 0.5 (+), 0.5 (-); the two 0.5s are tied and
    # form one point: precision 1/2 at recall 1 -> AP 50.
    aps = voc11_ap_per_class(scores, targets, difficult, curve="devkit")
    assert aps.tolist() == pytest.approx([100.0, 50.0])
    assert voc11_average_precision(scores, targets, difficult, curve="devkit") == pytest.approx(75.0)
    # Without the difficult mask class 0 ranks +, -, + and class 1 ranks - (0.9), then the tie.
    aps_all = voc11_ap_per_class(scores, targets, curve="devkit")
    assert aps_all[0] == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
    assert aps_all[1] == pytest.approx(100 * (11 * 1 / 3) / 11)  # best precision 1/3 at recall 1


def test_voc11_rejects_voc_encoding_and_missing_positives() -> None:
    with pytest.raises(DataError, match="difficult"):
        voc11_average_precision([0.3, 0.2], [1, -1])
    with pytest.raises(DataError, match="no positive"):
        voc11_average_precision([0.3, 0.2], [0, 0])
