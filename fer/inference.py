"""Prediction with a trained run: :func:`predict` (what ``fer predict`` prints)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

__all__ = ["predict"]


def predict(run: str | os.PathLike, images: Iterable[str | os.PathLike], device: str = "auto",
            cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Expression label and class probabilities of face crops with a trained run.

    Images are read with :func:`face3dkit.io.load_image` and resized to the run's image size;
    models that classify from geometry get the run's geometry provider on the decoded images.

    Args:
        run: a run folder (``fer train --out``).
        images: image paths.
        device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        cache_dir: geometry cache (models that classify geometry).

    Returns:
        One dict per image, in order: ``{'image', 'label', 'probabilities': {class: p}}``, or
        ``{'image', 'error'}`` (one line) for an image that could not be read.
    """
    import numpy as np
    import torch

    from face3dkit.io import load_image
    from fer.data import resize_rgb
    from fer.labels import EXPRESSIONS
    from fer.train.run import images_batch, load_run

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model, info = load_run(run, dev)
    size = int(info["image_size"])
    results: list[dict[str, Any]] = []
    arrays, stored, where = [], [], []
    for p in images:
        p = str(p)
        try:
            im = load_image(p)
            arrays.append(resize_rgb(im, size))
            stored.append(im)
            where.append(len(results))
            results.append({"image": p})
        except (ValueError, OSError) as e:
            results.append({"image": p, "error": " ".join(str(e).split())})
    if arrays:
        if model.classifies_geometry():  # the run's geometry provider on the decoded images
            batch = images_batch(stored, info, cache_dir, geometry=True)
            batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        else:
            batch = {"image": torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255).to(dev)}
        with torch.no_grad():
            probs = torch.softmax(model.classify_batch(batch).float(), 1).cpu().numpy()
        for j, i in enumerate(where):
            results[i]["label"] = EXPRESSIONS[int(probs[j].argmax())]
            results[i]["probabilities"] = {n: round(float(v), 4) for n, v in zip(EXPRESSIONS, probs[j], strict=True)}
    return results
