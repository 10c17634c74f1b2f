"""Classification metrics: accuracy, per-class accuracy, macro-F1, confusion matrix, accuracy per yaw bin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fer.labels import EXPRESSIONS, YAW_BIN_NAMES, yaw_bin

__all__ = ["confusion_matrix", "classification_metrics"]


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows = true class, columns = predicted class."""
    labels = np.asarray(labels, np.int64)
    pred = np.asarray(pred, np.int64)
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def classification_metrics(labels: np.ndarray, pred: np.ndarray, yaw: np.ndarray | None = None,
                           class_names: Sequence[str] = EXPRESSIONS) -> dict[str, Any]:
    """Metrics of predictions ``pred`` against ``labels`` (both (N,) int).

    Args:
        labels, pred: canonical class indices.
        yaw: optional (N,) yaw in degrees (NaN: unknown) for the per-yaw-bin accuracy.
        class_names: names of the classes, in index order.

    Returns:
        ``{'n', 'accuracy', 'macro_f1', 'per_class': {name: {'n', 'accuracy', 'precision', 'f1'}},
        'confusion': [[...]], 'per_yaw': {bin: {'n', 'accuracy'}}}``. Macro-F1 averages the F1 of
        the classes present in ``labels`` (F1 = 0 for a class never predicted correctly).
    """
    labels = np.asarray(labels, np.int64)
    pred = np.asarray(pred, np.int64)
    c = len(class_names)
    cm = confusion_matrix(labels, pred, c)
    n = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1).astype(np.float64)
    predicted = cm.sum(0).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros(c), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(c), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(c), where=denom > 0)
    present = support > 0
    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {
            class_names[k]: {"n": int(support[k]), "accuracy": float(recall[k]) if present[k] else float("nan"),
                             "precision": float(precision[k]), "f1": float(f1[k])}
            for k in range(c)
        },
        "confusion": cm.tolist(),
        "per_yaw": {},
    }
    if yaw is not None:
        bins = yaw_bin(np.asarray(yaw, np.float64))
        for b, name in enumerate(YAW_BIN_NAMES):
            sel = bins == b
            if sel.any():
                out["per_yaw"][name] = {"n": int(sel.sum()), "accuracy": float((pred[sel] == labels[sel]).mean())}
    return out
