"""Image output helpers (for inspecting renders)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

__all__ = ["save_image"]


def save_image(image: Tensor, path: str | os.PathLike[str]) -> None:
    """Write an image tensor to a PNG (or any format Pillow infers from ``path``).

    Args:
        image: (H, W, 3), (H, W, 1), (H, W) or (1, H, W, C) float in [0, 1] (clamped), or uint8.
            Row 0 is the top of the picture (y down, docs/conventions.md).
        path: output file; parent directories are created.
    """
    from PIL import Image

    img = image.detach().cpu()
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError(f"save_image takes one image, got batch {img.shape[0]}")
        img = img[0]
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.is_floating_point():
        arr = (img.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).numpy()
    else:
        arr = img.numpy().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    Image.fromarray(arr).save(path)
