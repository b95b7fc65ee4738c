"""L2-regularised logistic regression on frozen features, as in the transfer protocol of Ericsson et al.

Solver: scikit-learn's ``LogisticRegression(solver="lbfgs")``, the solver ssl-transfer's ``linear.py``
(the code the GSG paper ran, Appendix D) uses, so our numbers differ from theirs only through the
features. It minimises, over W (C × D) and b (C,),

    Σ_i CE(W x_i + b, y_i) + (wd / 2) ‖W‖²_F        with sklearn's C = 1 / wd

(sklearn: ``C · Σ loss + ½‖W‖²``; the bias is not penalised). ``wd`` is the "weight decay" the paper
sweeps over 45 log-spaced values in [1e-6, 1e5]. Because the data term is a sum, not a mean, the best
``wd`` grows with the training-set size. Features are used as they are, not standardised, as in
ssl-transfer. The sweep reuses the previous solution as the start of the next fit (sklearn's
``warm_start``, ssl-transfer does the same) with sklearn's default of at most 100 L-BFGS iterations:
weakly regularised fits stop before convergence, which is part of that protocol; raise ``max_iter`` to
solve each problem to convergence instead. A torch L-BFGS would run on the GPU, but on 2048-d features
the CPU solve is not the bottleneck (embedding the images is), and matching the reference code matters
more.

Multi-label data (VOC2007): one binary classifier per class; the score is its decision function.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from gsg.errors import ConfigError, DataError
from gsg.eval.metrics import mean_per_class_accuracy, voc11_ap_per_class

log = logging.getLogger(__name__)

Metric = Literal["top1", "mean_per_class", "voc11_map"]
METRICS: tuple[str, ...] = ("top1", "mean_per_class", "voc11_map")
DEFAULT_VALUES = np.logspace(-6, 5, 45)


@dataclass
class MultiLabel:
    """Multi-label targets: ``targets`` (N, C) in {0, 1}; ``difficult`` (N, C) bool or None (VOC).

    Difficult entries are left out of both the training of that class's classifier and its AP.
    """

    targets: np.ndarray
    difficult: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, idx: np.ndarray) -> MultiLabel:
        return MultiLabel(self.targets[idx], None if self.difficult is None else self.difficult[idx])

    @staticmethod
    def concat(a: MultiLabel, b: MultiLabel) -> MultiLabel:
        if (a.difficult is None) != (b.difficult is None):
            raise DataError("cannot join multi-label splits where only one marks difficult entries")
        diff = None if a.difficult is None else np.concatenate([a.difficult, b.difficult])
        return MultiLabel(np.concatenate([a.targets, b.targets]), diff)


Labels = np.ndarray | MultiLabel


class LogRegClassifier:
    """A (multinomial or one-vs-rest multi-label) L2 logistic regression with ``wd = 1/C``.

    Keeps its sklearn estimators between :meth:`fit` calls so a sweep warm-starts each fit from the last.
    """

    def __init__(self, metric: Metric, *, max_iter: int = 100, warm_start: bool = True, tol: float = 1e-4):
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
        if max_iter < 1:
            raise ConfigError(f"max_iter must be at least 1, got {max_iter}")
        self.metric, self.max_iter, self.warm_start, self.tol = metric, max_iter, warm_start, tol
        self._models: list[LogisticRegression] = []

    def _new(self, wd: float) -> LogisticRegression:
        return LogisticRegression(C=1.0 / wd, solver="lbfgs", max_iter=self.max_iter, tol=self.tol,
                                  warm_start=self.warm_start)

    def fit(self, X: np.ndarray, y: Labels, wd: float) -> LogRegClassifier:
        """Fit with weight decay ``wd`` (> 0) on features ``X`` (N, D)."""
        if not wd > 0:
            raise ConfigError(f"the regularisation (weight decay) must be positive, got {wd}")
        X = _check_X(X)
        with warnings.catch_warnings():
            # Non-convergence within max_iter is expected in the weakly regularised part of the sweep.
            warnings.simplefilter("ignore", ConvergenceWarning)
            if isinstance(y, MultiLabel):
                n_classes = y.targets.shape[1]
                if len(self._models) != n_classes:
                    self._models = [self._new(wd) for _ in range(n_classes)]
                for c, model in enumerate(self._models):  # one binary problem per class (VOC)
                    keep = slice(None) if y.difficult is None else ~y.difficult[:, c]
                    yc = y.targets[keep, c]
                    if np.unique(yc).size < 2:
                        raise DataError(f"class {c} has only one label value in the training split, so no "
                                        "binary classifier can be fitted; use a split where it occurs")
                    model.set_params(C=1.0 / wd)
                    model.fit(X[keep], yc)
            else:
                y = _check_y(y, len(X))
                if np.unique(y).size < 2:
                    raise DataError("the training split has a single class; logistic regression needs two "
                                    "or more")
                if len(self._models) != 1:
                    self._models = [self._new(wd)]
                self._models[0].set_params(C=1.0 / wd)
                self._models[0].fit(X, y)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores (N, C): class probabilities, or per-class binary decision values for multi-label."""
        if not self._models:
            raise ConfigError("fit the classifier before scoring it")
        X = _check_X(X)
        if self.metric == "voc11_map":
            return np.stack([m.decision_function(X) for m in self._models], axis=1)
        return self._models[0].predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.metric == "voc11_map":
            return (self.decision_function(X) > 0).astype(np.int64)
        return self._models[0].predict(_check_X(X))

    def score(self, X: np.ndarray, y: Labels) -> float:
        """The protocol metric in percent (top-1, mean per-class accuracy or VOC 11-point mAP)."""
        return score_predictions(self, X, y, self.metric)

    @property
    def estimators(self) -> list[LogisticRegression]:
        return self._models


def score_predictions(clf: LogRegClassifier, X: np.ndarray, y: Labels, metric: Metric) -> float:
    """Score a fitted classifier with ``metric`` in percent."""
    if metric == "voc11_map":
        if not isinstance(y, MultiLabel):
            raise DataError("the voc11_map metric needs multi-label targets (a MultiLabel)")
        return float(voc11_ap_per_class(clf.decision_function(X), y.targets, y.difficult).mean())
    y = _check_y(y, len(X))
    pred = clf.predict(X)
    if metric == "top1":
        return float(100.0 * np.mean(pred == y))
    return mean_per_class_accuracy(pred, y)


def fit_and_score(train_X: np.ndarray, train_y: Labels, test_X: np.ndarray, test_y: Labels, *, wd: float,
                  metric: Metric, max_iter: int = 100, classifier: LogRegClassifier | None = None
                  ) -> tuple[float, LogRegClassifier]:
    """Fit on (train_X, train_y) with weight decay ``wd`` and return (metric on the test set, classifier).

    Passing the ``classifier`` of a previous call warm-starts from its solution.
    """
    clf = classifier if classifier is not None else LogRegClassifier(metric, max_iter=max_iter)
    clf.fit(train_X, train_y, wd)
    return clf.score(test_X, test_y), clf


def sweep_regularization(train_X: np.ndarray, train_y: Labels, val_X: np.ndarray, val_y: Labels, *,
                         values: Sequence[float] | np.ndarray = DEFAULT_VALUES, metric: Metric,
                         max_iter: int = 100, warm_start: bool = True) -> tuple[float, list[float]]:
    """Choose the weight decay with the best validation score: ``argmax_wd score(fit(train, wd), val)``.

    ``values`` are tried in the given order (default: 45 log-spaced values from 1e-6 to 1e5, the
    paper's grid); ties keep the first, as ssl-transfer's strict ``>`` does. Returns ``(best_wd, scores)``
    with one validation score (percent) per value.
    """
    values = [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]
    if not values:
        raise ConfigError("the regularisation sweep needs at least one value")
    clf = LogRegClassifier(metric, max_iter=max_iter, warm_start=warm_start)
    scores: list[float] = []
    for wd in values:
        score, clf = fit_and_score(train_X, train_y, val_X, val_y, wd=wd, metric=metric, classifier=clf)
        scores.append(score)
        log.debug("logreg sweep: wd=%.3g C=%.3g val %s=%.2f", wd, 1.0 / wd, metric, score)
    best = int(np.argmax(scores))  # first maximum
    log.info("logreg sweep: best wd=%.3g (C=%.3g), val %s=%.2f", values[best], 1 / values[best], metric,
             scores[best])
    return values[best], scores


def _check_X(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(f"features must be a non-empty (N, D) array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("features contain NaN or infinite values; the backbone diverged or the checkpoint "
                        "is corrupt")
    return X


def _check_y(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"got {n} feature rows but {y.shape[0]} labels")
    if (y < 0).any():
        raise DataError("labels contain -1 (unlabelled samples); use a labelled split for evaluation")
    return y
