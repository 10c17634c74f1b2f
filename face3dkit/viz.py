"""Pictures for people: shaded previews, landmark drawings, side-by-side panels (uint8 HWC)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from face3dkit.geometry import PerspectiveCamera
from face3dkit.io.image import save_image
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel

__all__ = ["PREVIEW_LIGHT", "render_faces", "draw_landmarks", "save_png"]

PREVIEW_LIGHT = torch.zeros(27)
PREVIEW_LIGHT[[2, 11, 20]] = 0.25  # SH band 1 along z: light from the camera side
PREVIEW_LIGHT[[1, 10, 19]] = -0.12  # band 1 along y (basis is -y): light from above


@torch.no_grad()
def render_faces(model: MorphableModel, coeffs: Coefficients, size: int = 512, background: float = 1.0,
                 light: Tensor | None = None, camera: PerspectiveCamera | None = None) -> np.ndarray:
    """Shaded renders of faces for previews.

    Args:
        model: the morphable model.
        coeffs: B faces; ``gamma`` is replaced by ``light`` (default :data:`PREVIEW_LIGHT`) when
            ``light`` is given or all of ``coeffs.gamma`` is zero.
        size: image side in pixels (the default camera rescaled to it).
        background: grey level of the background in [0, 1].
        camera: overrides the camera.

    Returns:
        (B, size, size, 3) uint8 images.
    """
    from face3dkit.render.face import render_face

    cam = camera or PerspectiveCamera.for_image_size(size)
    c = coeffs.clone()
    if light is not None or not bool(c.gamma.abs().sum()):
        lt = (PREVIEW_LIGHT if light is None else light).to(c.gamma)
        c.gamma = lt.expand_as(c.gamma).clone()
    with torch.no_grad():
        img = render_face(model, c, cam, background=background).image.clamp(0, 1)
    return (img.cpu().numpy() * 255).round().astype(np.uint8)


def draw_landmarks(image: np.ndarray, points: np.ndarray | Tensor, color: tuple[int, int, int] = (230, 30, 30),
                   radius: float = 2.0, numbers: bool = False) -> np.ndarray:
    """Draw (K, 2) pixel points (x right, y down) on an (H, W, 3) uint8 image; returns a copy."""
    pts = points.detach().cpu().numpy() if isinstance(points, Tensor) else np.asarray(points)
    im = Image.fromarray(np.ascontiguousarray(image))
    d = ImageDraw.Draw(im)
    for i, (x, y) in enumerate(pts):
        d.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color)
        if numbers:
            d.text((x + radius + 1, y - 5), str(i), fill=(0, 0, 120))
    return np.asarray(im)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) uint8 image atomically: :func:`face3dkit.io.save_image` (kept under this name)."""
    return save_image(image, path)
