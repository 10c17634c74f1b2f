#!/usr/bin/env python3
"""Where dlib's HOG and CNN (MMOD) detectors put their boxes, and what that does to the 68 points.

Renders the synthetic scenes of ``benchmarks/reconstruct.py`` (default model, yaw within ±60°),
runs both detectors, and prints (1) the HOG box in terms of the CNN box of the same face (centre
shift in CNN box widths, scale; medians and spreads) — the numbers behind
``face3dkit.landmarks.dlib_backend.CNN_TO_HOG_BOX`` — and (2) the median NME (mean point distance /
outer-eye-corner distance, %) of dlib's 68-point predictor run in the CNN box, in the CNN box mapped
by ``CNN_TO_HOG_BOX``, and in the HOG box. NME here is against the renders' fixed-vertex landmarks,
so the jaw contour adds a floor common to all three columns.

    python benchmarks/dlib_boxes.py [--n 50] [--seed 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reconstruct import make_scenes  # noqa: E402

import face3dkit  # noqa: E402
from face3dkit.landmarks.dlib_backend import CNN_TO_HOG_BOX, DlibDetector, cnn_to_hog_rect  # noqa: E402
from face3dkit.sysinfo import machine_summary  # noqa: E402


def _geom(r) -> tuple[float, float, float]:
    return (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2, float(r.right() - r.left())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=1, help="scene seed (the reconstruction benchmark uses 0)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# machine: {machine_summary()}")
    imgs, lms, _ = make_scenes(face3dkit.load_model("default"), args.n, args.seed)
    hog, cnn = DlibDetector("hog"), DlibDetector("cnn")
    import dlib

    def nme(img: np.ndarray, lm: np.ndarray, rect) -> float:
        sh = hog._predictor(img, rect)
        pts = np.array([[sh.part(i).x, sh.part(i).y] for i in range(68)]) + 0.5
        return float(np.linalg.norm(pts - lm, axis=1).mean() / np.linalg.norm(lm[36] - lm[45]))

    rel, both, cnn_only = [], [], []
    for img, lm in zip(imgs, lms, strict=True):
        h, c = hog._rects(img), cnn._rects(img)
        if not c:
            continue
        rc = c[0][0]
        vals = [nme(img, lm, rc), nme(img, lm, cnn_to_hog_rect(rc, dlib))]
        if h:
            rh = h[0][0]
            (hx, hy, hw), (cx, cy, cw) = _geom(rh), _geom(rc)
            rel.append(((hx - cx) / cw, (hy - cy) / cw, hw / cw))
            both.append([*vals, nme(img, lm, rh)])
        else:
            cnn_only.append(vals)
    rel_a = np.array(rel)
    print(f"# {args.n} scenes (seed {args.seed}): both detectors {len(both)}, CNN only {len(cnn_only)}; "
          f"library constants CNN_TO_HOG_BOX = {CNN_TO_HOG_BOX}")
    print("| HOG box vs CNN box | dx (widths) | dy (widths) | scale |")
    print("|---|---|---|---|")
    print("| median | " + " | ".join(f"{v:.3f}" for v in np.median(rel_a, 0)) + " |")
    print("| std | " + " | ".join(f"{v:.3f}" for v in rel_a.std(0)) + " |")
    print()
    print("| faces | n | NME med % CNN box | CNN box mapped | HOG box |")
    print("|---|---|---|---|---|")
    b = np.median(np.array(both), 0) * 100
    print(f"| found by both | {len(both)} | {b[0]:.2f} | {b[1]:.2f} | {b[2]:.2f} |")
    if cnn_only:
        o = np.median(np.array(cnn_only), 0) * 100
        print(f"| found by CNN only | {len(cnn_only)} | {o[0]:.2f} | {o[1]:.2f} | - |")
    print(f"# ratio mapped / raw CNN box (both): {b[1] / b[0]:.2f}x")


if __name__ == "__main__":
    main()
