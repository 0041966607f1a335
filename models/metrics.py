"""Predictions scored against labels: one confusion matrix, two presentations, calibration.

Pure numpy (no sklearn). Every figure comes from :func:`class_scores`; the training manifests
(:func:`classification_metrics`) and the evaluation report (:func:`prediction_metrics`) lay the
same numbers out differently. The class balance of the predictions is reported next to the
labels' on purpose: the system this replaces emitted 99 % SELL and nobody noticed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.dataset import CLASSES

CALIBRATION_BINS = 10
SCALAR_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "log_loss")
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Proba = npt.NDArray[np.floating[Any]]


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def confusion_matrix(y: IntArray, pred: IntArray, n_classes: int = len(CLASSES)) -> IntArray:
    """Counts ``[true, predicted]``."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m


@dataclass(frozen=True)
class ClassScores:
    """Confusion matrix of one predictor and the per-class figures derived from it."""

    confusion: IntArray
    support: FloatArray
    predicted: FloatArray
    precision: FloatArray
    recall: FloatArray
    f1: FloatArray

    @property
    def rows(self) -> int:
        """Number of scored rows."""
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        """Share of rows predicted right (0 for no rows)."""
        return float(np.diag(self.confusion).sum() / max(self.rows, 1))

    @property
    def balanced_accuracy(self) -> float:
        """Mean recall over the classes present in the labels."""
        present = self.support > 0
        return float(self.recall[present].mean()) if present.any() else 0.0

    @property
    def macro_f1(self) -> float:
        """Unweighted mean F1 over all classes."""
        return float(self.f1.mean())

    def label_shares(self) -> FloatArray:
        """Class balance of the labels."""
        return self.support / max(self.rows, 1)

    def prediction_shares(self) -> FloatArray:
        """Class balance of the predictions."""
        return self.predicted / max(self.rows, 1)


def class_scores(y: IntArray, pred: IntArray, n_classes: int = len(CLASSES)) -> ClassScores:
    """Confusion matrix, per-class precision / recall / F1 (0 where undefined)."""
    cm = confusion_matrix(y, pred, n_classes)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    tp = np.diag(cm).astype(np.float64)
    recall, precision = _ratio(tp, support), _ratio(tp, predicted)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return ClassScores(cm, support, predicted, precision, recall, f1)


def log_loss(y: IntArray, proba: Proba) -> float:
    """Mean negative log-likelihood of the true class (probabilities clipped at 1e-15)."""
    picked = np.clip(proba[np.arange(len(y)), y].astype(np.float64), 1e-15, 1.0)
    return float(-np.log(picked).mean())


def classification_metrics(y: IntArray, proba: Proba) -> dict[str, Any]:
    """The manifests' block: scalars, per-class lists (``CLASSES`` order), confusion matrix."""
    s = class_scores(y, proba.argmax(axis=1), proba.shape[1])
    return {
        "rows": len(y),
        "accuracy": s.accuracy,
        "balanced_accuracy": s.balanced_accuracy,
        "macro_f1": s.macro_f1,
        "log_loss": log_loss(y, proba) if len(y) else 0.0,
        "precision": s.precision.round(6).tolist(),
        "recall": s.recall.round(6).tolist(),
        "label_balance": s.label_shares().round(6).tolist(),
        "prediction_balance": s.prediction_shares().round(6).tolist(),
        "confusion": s.confusion.tolist(),
    }


def mean_fold_metrics(folds: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Mean of the scalar metrics over walk-forward folds."""
    return {k: float(np.mean([f[k] for f in folds])) for k in SCALAR_METRICS} if folds else {}


def scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """Just the scalars of a metrics block (empty for none)."""
    return {k: metrics.get(k) for k in SCALAR_METRICS} if metrics else {}


def prediction_metrics(y: IntArray, pred: IntArray, proba: Proba | None = None) -> dict[str, Any]:
    """The evaluation report's block: scalars (log loss only with probabilities), per-class
    P/R/F1 and class balances keyed by class name, confusion matrix."""
    s = class_scores(y, pred)
    return {
        "rows": len(y),
        "accuracy": s.accuracy,
        "balanced_accuracy": s.balanced_accuracy,
        "macro_f1": s.macro_f1,
        "log_loss": None if proba is None else log_loss(y, proba),
        "per_class": {
            c: {
                "precision": float(s.precision[k]),
                "recall": float(s.recall[k]),
                "f1": float(s.f1[k]),
            }
            for k, c in enumerate(CLASSES)
        },
        "label_balance": dict(zip(CLASSES, s.label_shares().tolist(), strict=True)),
        "prediction_balance": dict(zip(CLASSES, s.prediction_shares().tolist(), strict=True)),
        "confusion": s.confusion.tolist(),
    }


def calibration(y: IntArray, proba: Proba, n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Reliability of the top-class probability: per-bin confidence vs accuracy, and the ECE."""
    conf = proba.max(axis=1).astype(np.float64)
    hit = (proba.argmax(axis=1) == y).astype(np.float64)
    # bins [k/n, (k+1)/n); confidence 1.0 goes to the last bin
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    mean_conf = _ratio(np.bincount(b, conf, n_bins).astype(np.float64), count)
    acc = _ratio(np.bincount(b, hit, n_bins).astype(np.float64), count)
    ece = float((count * np.abs(acc - mean_conf)).sum() / max(len(y), 1))
    bins = [
        {"lo": k / n_bins, "hi": (k + 1) / n_bins, "count": int(count[k]),
         "confidence": float(mean_conf[k]), "accuracy": float(acc[k])}
        for k in range(n_bins)
    ]  # fmt: skip
    return {"ece": ece, "bins": bins}
