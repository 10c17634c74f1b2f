#!/usr/bin/env python3
"""Rebuild docs/img/reconstruct_examples.png: `face3dkit reconstruct assets/examples` and stack
each face's picture (aligned crop | render | overlay with the fitted landmarks), one row per image.

    python docs/make_reconstruct_figure.py [--out OUTDIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from face3dkit.pipeline import ReconstructConfig, reconstruct

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/examples", help="reconstruction output folder")
    args = p.parse_args()
    cfg = ReconstructConfig(save=("png",), resume=False)
    summary = reconstruct([str(ROOT / "assets" / "examples")], args.out, cfg, progress=False)
    rows = []
    for r in sorted(summary.results, key=lambda r: str(r.image)):
        stem = Path(str(r.image)).stem
        rows.append(np.asarray(Image.open(Path(args.out) / stem / f"{stem}.png").convert("RGB")))
    width = max(a.shape[1] for a in rows)
    rows = [np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255) for a in rows]
    dst = ROOT / "docs" / "img" / "reconstruct_examples.png"
    Image.fromarray(np.concatenate(rows, 0)).save(dst, optimize=True)
    print(f"wrote {dst} ({len(rows)} faces)")


if __name__ == "__main__":
    main()
