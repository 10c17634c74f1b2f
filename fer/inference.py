"""Using a trained run: :func:`predict` (``fer predict``), :func:`evaluate_run` (``fer evaluate``),
:func:`generate_pose` (``fer generate``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["evaluate_run", "generate_pose", "predict"]


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

    dev = _device(device)
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


def _device(device: str) -> Any:
    import torch

    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        ("cpu" if device == "auto" else device))


def evaluate_run(run: str | os.PathLike, data: str | os.PathLike, split: str | None = "auto", batch_size: int = 128,
                 device: str = "auto", cache_dir: str | os.PathLike | None = None, name: str | None = None,
                 tta: str = "none") -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Evaluate a trained run on a dataset and write the report into ``RUN/eval/<name>/``.

    Args:
        run: a run folder.
        data: a dataset of any supported format.
        split: ``'auto'`` (the format's held-out split, :func:`fer.data.split_policy`), a split name,
            or None for every sample.
        batch_size, device, cache_dir: evaluation batch, device, geometry cache.
        name: report folder name (default: from the data path, split and TTA).
        tta: ``'none'`` or ``'flip'`` (average with the mirrored images).

    Returns:
        (metrics of :func:`fer.evaluate.evaluate_model` plus ``data``, ``split``, ``skipped_rows``,
        ``weights``; the written report paths; the evaluated dataset).
    """
    from fer.evaluate import evaluate_model, write_report
    from fer.train.run import load_run, open_for_eval

    dev = _device(device)
    model, info = load_run(run, dev)
    ds = open_for_eval(data, info, split, cache_dir, need_geometry=model.classifies_geometry())
    if len(ds) == 0:
        raise ValueError(f"{data}: no usable samples ({ds.report.summary()})")
    m = evaluate_model(model, ds, batch_size, dev, tta=tta)
    m["data"] = str(data)
    m["split"] = split
    m["skipped_rows"] = ds.report.skipped
    m["weights"] = info["weights"]
    label = name or (Path(data).stem + (f"-{split}" if split and split != "auto" else "")
                     + (f"-{tta}" if tta != "none" else ""))
    paths = write_report(m, Path(run) / "eval" / label)
    return m, paths, ds


def generate_pose(run: str | os.PathLike, image: str | os.PathLike, yaw: float = 0.0,
                  out: str | os.PathLike | None = None, device: str = "auto") -> Path:
    """Re-render the face crop ``image`` at ``yaw`` degrees with a trained DR-GAN run (0 frontalises);
    writes the input (resized) and the generated face side by side to ``out`` (default: next to
    the image, ``<stem>_yaw<yaw>.png``) and returns that path."""
    import numpy as np
    import torch

    from face3dkit.io import load_image, save_image
    from fer.data import resize_rgb
    from fer.train.run import load_run

    dev = _device(device)
    model, info = load_run(run, dev)
    if not hasattr(model, "rotate"):
        raise ValueError(f"{run}: a '{info['model']}' run cannot change the pose (train one with --model drgan)")
    size = int(info["image_size"])
    arr = resize_rgb(load_image(image), size)
    x = torch.from_numpy(arr).permute(2, 0, 1)[None].float().div(255).to(dev)
    with torch.no_grad():
        y = model.rotate(x, yaw)
    gen = (y[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    path = Path(out) if out else Path(image).with_name(f"{Path(image).stem}_yaw{yaw:+g}.png")
    return save_image(np.concatenate([arr, gen], 1), path)
