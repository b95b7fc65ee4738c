"""Logistic regression: separable data is learnt, shuffled labels give chance, the sweep picks the best."""

from __future__ import annotations

import numpy as np
import pytest

from gsg.errors import ConfigError, DataError
from gsg.eval import logreg
from gsg.eval.logreg import LogRegClassifier, MultiLabel, fit_and_score, sweep_regularization


def blobs(n: int, seed: int, *, k: int = 3, d: int = 8, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian blobs in d dimensions (centres 3 units apart along distinct axes)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = 3.0 * np.eye(k, d)
    return centres[y] + spread * rng.standard_normal((n, d)), y


def test_separable_features_reach_100_and_shuffled_labels_chance() -> None:
    X, y = blobs(300, 0)
    Xt, yt = blobs(300, 1)
    acc, clf = fit_and_score(X, y, Xt, yt, wd=1e-2, metric="top1")
    assert acc == pytest.approx(100.0)
    assert clf.decision_function(Xt).shape == (300, 3)
    rng = np.random.default_rng(2)
    acc_shuffled, _ = fit_and_score(X, rng.permutation(y), Xt, rng.permutation(yt), wd=1e-2, metric="top1")
    # chance is 33%; 300 test points give a standard error of about 2.7 points
    assert 20.0 <= acc_shuffled <= 47.0


def test_wd_maps_to_sklearn_C() -> None:
    X, y = blobs(60, 0)
    clf = LogRegClassifier("top1").fit(X, y, wd=250.0)
    assert clf.estimators[0].C == pytest.approx(1 / 250.0)


def test_sweep_picks_the_best_value_with_monkeypatched_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    # A scorer whose validation score peaks at wd = 1e2 (and ties elsewhere are impossible): the sweep
    # must return exactly that grid value and the scores in grid order.
    def fake(train_X, train_y, test_X, test_y, *, wd, metric, max_iter=100, classifier=None):
        return -abs(np.log10(wd) - 2.0), classifier

    monkeypatch.setattr(logreg, "fit_and_score", fake)
    values = np.logspace(-6, 5, 45)
    X, y = np.zeros((2, 1)), np.array([0, 1])
    best, scores = sweep_regularization(X, y, X, y, values=values, metric="top1")
    assert best == pytest.approx(1e2)
    assert len(scores) == 45 and int(np.argmax(scores)) == 32  # 1e2 is the 33rd of 45 values
    # Ties keep the first value, as ssl-transfer's strict '>' does.
    monkeypatch.setattr(logreg, "fit_and_score", lambda *a, **k: (1.0, None))
    best, _ = sweep_regularization(X, y, X, y, values=[1e-3, 1e-2, 1e-1], metric="top1")
    assert best == 1e-3


def test_sweep_on_real_fits_rejects_overwhelming_regularisation() -> None:
    # wd = 1e5 shrinks W to ~0, so every prediction is the majority class; wd = 1e-2 separates the blobs.
    X, y = blobs(150, 0)
    Xv, yv = blobs(150, 1)
    best, scores = sweep_regularization(X, y, Xv, yv, values=[1e5, 1e-2], metric="top1")
    assert best == 1e-2
    assert scores[1] == pytest.approx(100.0)
    assert scores[0] < 50.0


def test_mean_per_class_metric() -> None:
    X, y = blobs(120, 0)
    clf = LogRegClassifier("mean_per_class").fit(X, y, 1e-2)
    assert clf.score(X, y) == pytest.approx(100.0)


def test_multilabel_one_binary_classifier_per_class_and_difficult_ignored() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4))
    targets = np.stack([(X[:, 0] > 0), (X[:, 1] > 0.5)], axis=1).astype(np.int64)
    difficult = np.zeros_like(targets, dtype=bool)
    difficult[:20, 1] = True
    targets[:20, 1] = 1 - targets[:20, 1]  # wrong labels on difficult entries must not matter
    y = MultiLabel(targets, difficult)
    clf = LogRegClassifier("voc11_map").fit(X, y, 1e-3)
    assert len(clf.estimators) == 2
    assert clf.decision_function(X).shape == (200, 2)
    assert clf.score(X, y) == pytest.approx(100.0)  # both classes perfectly ranked once difficult ones go


def test_logreg_errors() -> None:
    X, y = blobs(20, 0)
    with pytest.raises(ConfigError, match="positive"):
        LogRegClassifier("top1").fit(X, y, 0.0)
    with pytest.raises(ConfigError, match="metric"):
        LogRegClassifier("accuracy")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unlabelled"):
        LogRegClassifier("top1").fit(X, np.full(20, -1), 1.0)
    with pytest.raises(DataError, match="NaN"):
        LogRegClassifier("top1").fit(np.full((20, 8), np.nan), y, 1.0)
