"""Evaluation of a FER model on a dataset: predictions, metrics, report files.

:func:`evaluate_model` gives accuracy, per-class accuracy, macro-F1, the confusion matrix and the
accuracy per yaw bin (true pose when the dataset knows it, else the attached geometry's pose);
:func:`write_report` stores ``metrics.json`` and ``confusion.png``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from face3dkit.io.atomic import atomic_write_text
from fer.data.base import collate_samples
from fer.evaluate.confusion import draw_confusion_matrix, save_confusion_png
from fer.evaluate.metrics import classification_metrics, confusion_matrix
from fer.labels import EXPRESSIONS

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "draw_confusion_matrix",
    "evaluate_model",
    "predict_dataset",
    "prediction_metrics",
    "TTA_MODES",
    "save_confusion_png",
    "sample_yaw",
    "write_report",
]


#: Test-time augmentations of :func:`predict_dataset`.
TTA_MODES = ("none", "flip")


@torch.no_grad()
def predict_dataset(model: Any, dataset: Any, batch_size: int = 64, device: str | torch.device = "cpu",
                    progress: bool = False, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of every readable sample.

    Args:
        model: a :class:`fer.models.FerModel` (put in eval mode here, restored afterwards); a model
            with ``classify_batch`` gets the whole batch (frames, landmarks), others the images.
        dataset: a :class:`fer.data.FerDataset`.
        tta: ``"none"``, or ``"flip"``: the mean of the class probabilities of each sample and of
            its mirror image (:func:`fer.train.augment.mirror_batch`: landmarks, pose and
            expression coefficients mirrored with it).

    Returns:
        probabilities (M, 7) float32 and the dataset indices (M,) they belong to (unreadable images
        are skipped, so M <= len(dataset)).
    """
    from tqdm import tqdm

    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    if tta == "flip":
        from fer.train.augment import mirror_batch
    exp_mirror = getattr(getattr(dataset, "geometry", None), "exp_mirror", None)
    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_samples)
    probs, idx = [], []
    try:
        for batch in tqdm(loader, desc="evaluating", disable=not progress, leave=False):
            if batch is None:
                continue
            views = [batch] if tta == "none" else [batch, mirror_batch(batch, exp_mirror)]
            p = 0.0
            for view in views:
                if hasattr(model, "classify_batch"):  # models that need more than the image (MGLN: frames, landmarks)
                    dev_batch = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                                 for k, v in view.items()}
                    logits = model.classify_batch(dev_batch)
                else:
                    logits = model.classify(view["image"].to(device, non_blocking=True))
                p = p + torch.softmax(logits.float(), 1).cpu()
            probs.append((p / len(views)).numpy())
            idx.append(batch["index"].numpy())
    finally:
        model.train(was_training)
    if not probs:
        return np.zeros((0, len(EXPRESSIONS)), np.float32), np.zeros(0, np.int64)
    return np.concatenate(probs), np.concatenate(idx)


def sample_yaw(dataset: Any) -> np.ndarray | None:
    """(N,) yaw in degrees per sample: the true pose where known, else the geometry's; None if neither."""
    yaw = np.asarray(dataset.true_pose[:, 0], np.float64).copy()
    geo = getattr(dataset, "geometry", None)
    if geo is not None:
        missing = ~np.isfinite(yaw) & geo.valid
        yaw[missing] = geo.pose[missing, 0]
    return yaw if np.isfinite(yaw).any() else None


def evaluate_model(model: Any, dataset: Any, batch_size: int = 64, device: str | torch.device = "cpu",
                   progress: bool = False, tta: str = "none") -> dict[str, Any]:
    """Metrics of ``model`` on ``dataset`` (see :func:`fer.evaluate.metrics.classification_metrics`);
    ``tta`` as in :func:`predict_dataset`.

    The result also holds ``skipped`` (unreadable samples) and ``tta``.
    """
    probs, idx = predict_dataset(model, dataset, batch_size, device, progress, tta)
    m = prediction_metrics(dataset, probs, idx)
    m["tta"] = tta
    return m


def prediction_metrics(dataset: Any, probs: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    """Metrics of the (M, 7) class probabilities ``probs`` of the dataset samples ``idx`` (M,) (the
    output of :func:`predict_dataset`), with per-yaw accuracy and ``skipped`` (unread samples)."""
    yaw = sample_yaw(dataset)
    m = classification_metrics(dataset.labels[idx], probs.argmax(1) if len(probs) else np.zeros(0, np.int64),
                               None if yaw is None else yaw[idx])
    m["skipped"] = int(len(dataset) - len(idx))
    return m


def write_report(metrics: dict[str, Any], out_dir: str | os.PathLike, title: str = "") -> dict[str, Path]:
    """Write ``metrics.json`` and ``confusion.png`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mpath = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    title = title or f"accuracy {100 * metrics['accuracy']:.1f}%  macro-F1 {100 * metrics['macro_f1']:.1f}%"
    cpath = save_confusion_png(np.asarray(metrics["confusion"]), EXPRESSIONS, out / "confusion.png", title)
    return {"metrics": mpath, "confusion": cpath}
