#!/usr/bin/env python3
"""Training curves of an R-Net run (``face3dkit train-rnet``'s ``metrics.csv``) as one PNG: one panel
per loss term (total, landmark, photometric, supervised), the raw per-step values in grey and their
moving average (``--window`` steps) in colour, with the first and last averaged values printed.
Plain PIL (no plotting library needed).

    python docs/make_rnet_figure.py --run runs/rnet-ship [--dst docs/img/rnet_training.png] [--window 100]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
TERMS = (("loss", "total (weighted, with supervision)"), ("landmark", "landmark (px^2 at the render size)"),
         ("photometric", "photometric (skin-weighted L2)"), ("supervised", "supervised (coefficient MSE)"))


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], steps: np.ndarray, v: np.ndarray,
           window: int, title: str, colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    pad_l, pad_b, pad_t = 58, 22, 20
    px0, py0, px1, py1 = x0 + pad_l, y0 + pad_t, x1 - 8, y1 - pad_b
    draw.rectangle([px0, py0, px1, py1], outline=(0, 0, 0))
    k = min(window, len(v))
    smooth = np.convolve(v, np.ones(k) / k, mode="valid")
    s_steps = steps[k - 1:]
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    lo, hi = min(lo, smooth.min()), max(hi, smooth.max())
    if hi <= lo:
        hi = lo + 1e-9

    def xy(s: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        xs = px0 + (s - steps[0]) / max(steps[-1] - steps[0], 1) * (px1 - px0)
        ys = py1 - (np.clip(y, lo, hi) - lo) / (hi - lo) * (py1 - py0)
        return list(zip(xs.tolist(), ys.tolist(), strict=True))

    draw.line(xy(steps, v), fill=(200, 200, 200), width=1)
    draw.line(xy(s_steps, smooth), fill=colour, width=2)
    draw.text((x0 + 4, y0 + 3), f"{title}: {smooth[0]:.4g} -> {smooth[-1]:.4g} (mean of {k} steps)", fill=(0, 0, 0))
    for frac in (0.0, 0.5, 1.0):
        val = lo + frac * (hi - lo)
        yy = py1 - frac * (py1 - py0)
        draw.text((x0 + 2, yy - 6), f"{val:.3g}", fill=(0, 0, 0))
    for frac in (0.0, 0.5, 1.0):
        st = steps[0] + frac * (steps[-1] - steps[0])
        xx = px0 + frac * (px1 - px0)
        draw.text((xx - 12, py1 + 5), f"{int(st)}", fill=(0, 0, 0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--dst", default=str(ROOT / "docs" / "img" / "rnet_training.png"))
    p.add_argument("--window", type=int, default=100)
    args = p.parse_args()
    rows = list(csv.DictReader(open(Path(args.run) / "metrics.csv")))
    steps = np.array([float(r["step"]) for r in rows])
    w, h = 560, 230
    img = Image.new("RGB", (2 * w, 2 * h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    colours = [(30, 30, 30), (200, 60, 40), (40, 110, 200), (40, 150, 70)]
    for i, ((key, title), col) in enumerate(zip(TERMS, colours, strict=True)):
        if key not in rows[0]:
            continue
        v = np.array([float(r[key]) for r in rows])
        _panel(draw, ((i % 2) * w, (i // 2) * h, (i % 2 + 1) * w, (i // 2 + 1) * h), steps, v, args.window, title,
               col)
    img.save(args.dst, optimize=True)
    print(f"wrote {args.dst} ({len(rows)} steps)")


if __name__ == "__main__":
    main()
