"""Confusion-matrix picture drawn with Pillow (no plotting library)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["draw_confusion_matrix", "save_confusion_png"]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
               ) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return int(x1 - x0), int(y1 - y0)


def draw_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], title: str = "", cell: int = 64
                          ) -> np.ndarray:
    """Picture of a confusion matrix: rows = true class, columns = predicted class.

    Each cell shows the count and the row percentage; its blue shade is the row fraction.

    Args:
        cm: (C, C) counts.
        class_names: C names.
        title: line drawn above the matrix.
        cell: cell side in pixels.

    Returns:
        (H, W, 3) uint8 image.
    """
    cm = np.asarray(cm, np.int64)
    c = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    f_small, f_mid, f_big = _font(max(10, cell // 5)), _font(max(11, cell // 4)), _font(max(12, cell // 4))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(_text_size(probe, n, f_mid)[0] for n in class_names) + 16
    col_h = max(_text_size(probe, n, f_mid)[0] for n in class_names) + 12  # rotated column labels
    top = 34 + 22 + col_h
    left = label_w + 26
    w, h = left + c * cell + 12, top + c * cell + 12
    im = Image.new("RGB", (w, h), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.text((10, 8), title, fill=(0, 0, 0), font=f_big)
    d.text((left, 34), "predicted", fill=(60, 60, 60), font=f_mid)
    # the 'true' axis label, rotated
    tw, th = _text_size(probe, "true", f_mid)
    lab = Image.new("RGB", (tw + 4, th + 6), (255, 255, 255))
    ImageDraw.Draw(lab).text((2, 0), "true", fill=(60, 60, 60), font=f_mid)
    lab = lab.rotate(90, expand=True)
    im.paste(lab, (4, top + (c * cell - lab.height) // 2))
    for j, name in enumerate(class_names):
        tw, th = _text_size(probe, name, f_mid)
        t = Image.new("RGB", (tw + 4, th + 6), (255, 255, 255))
        ImageDraw.Draw(t).text((2, 0), name, fill=(0, 0, 0), font=f_mid)
        t = t.rotate(90, expand=True)
        im.paste(t, (left + j * cell + (cell - t.width) // 2, top - t.height - 4))
    for i, name in enumerate(class_names):
        tw, th = _text_size(probe, name, f_mid)
        d.text((left - tw - 8, top + i * cell + (cell - th) // 2 - 2), name, fill=(0, 0, 0), font=f_mid)
        for j in range(c):
            v = float(frac[i, j])
            colour = tuple(int(round(255 - v * (255 - t))) for t in (30, 90, 170))
            x0, y0 = left + j * cell, top + i * cell
            d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(200, 200, 200))
            ink = (255, 255, 255) if v > 0.55 else (0, 0, 0)
            s1, s2 = str(int(cm[i, j])), f"{100 * v:.0f}%"
            w1, h1 = _text_size(probe, s1, f_mid)
            w2, _ = _text_size(probe, s2, f_small)
            d.text((x0 + (cell - w1) // 2, y0 + cell // 2 - h1 - 3), s1, fill=ink, font=f_mid)
            d.text((x0 + (cell - w2) // 2, y0 + cell // 2 + 3), s2, fill=ink, font=f_small)
    for k in range(c):  # outline the diagonal
        x0, y0 = left + k * cell, top + k * cell
        d.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(230, 120, 20), width=2)
    return np.asarray(im)


def save_confusion_png(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
                       ) -> Path:
    """Draw and write the confusion matrix PNG (atomically)."""
    from face3dkit.io import save_image

    return save_image(draw_confusion_matrix(cm, class_names, title), path)
