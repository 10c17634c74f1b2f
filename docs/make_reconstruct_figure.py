#!/usr/bin/env python3
"""Rebuild docs/img/reconstruct_examples.png: `face3dkit reconstruct assets/examples` and stack
each face's picture (aligned crop | render | overlay with the fitted landmarks), one row per image.

    python docs/make_reconstruct_figure.py [--out OUTDIR]
    python docs/make_reconstruct_figure.py --photos PHOTO... --dst check.png [--upscale 4]

    python docs/make_reconstruct_figure.py --methods fit rnet rnet+fit --rnet assets/rnet/rnet_r18_112.pt \
        --dst docs/img/reconstruct_methods.png

With ``--methods`` the figure has one row per image: the aligned crop, then the overlay (render
blended with the crop, fitted landmarks) of each method side by side, from one run per method.

With ``--photos`` the same figure is made of other photos (your own open-mouth or wide-eyed
photos, dataset frames) into ``--dst``, to look at, not to commit: the repository only ships the
public-domain examples.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from face3dkit.fit import FitConfig
from face3dkit.pipeline import ReconstructConfig, reconstruct

ROOT = Path(__file__).resolve().parents[1]

#: --methods: name -> (ReconstructConfig.method, FitConfig)
METHODS = {"fit": ("fit", FitConfig()), "fit-fast": ("fit", FitConfig.fast()), "rnet": ("rnet", FitConfig()),
           "rnet+fit": ("rnet+fit", FitConfig()),
           "rnet+fit-fast": ("rnet+fit", FitConfig.fast())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/examples", help="reconstruction output folder")
    p.add_argument("--photos", nargs="+", default=None, help="photos instead of assets/examples")
    p.add_argument("--dst", default=None, help="figure path (default: docs/img/reconstruct_examples.png)")
    p.add_argument("--upscale", type=int, default=1, help="enlarge small --photos (e.g. 48 px dataset crops) first")
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                   help="compare methods: crop | overlay of each method (-fast: FitConfig.fast's photometric "
                        "stage, as reconstruct --fast)")
    p.add_argument("--rnet", default=None, help="R-Net checkpoint for --methods rnet / rnet+fit")
    args = p.parse_args()
    if args.methods:
        return compare_methods(args)
    if args.photos and not args.dst:
        p.error("--photos needs --dst (the committed figure shows only the repository's examples)")
    cfg = ReconstructConfig(save=("png",), resume=False)
    if args.photos:
        inputs = []
        for f in args.photos:
            im = Image.open(f).convert("RGB")
            if args.upscale > 1:
                im = im.resize((im.width * args.upscale, im.height * args.upscale), Image.BICUBIC)
            inputs.append(np.asarray(im))
    else:
        inputs = [str(ROOT / "assets" / "examples")]
    summary = reconstruct(inputs, args.out, cfg, progress=False)
    rows = []
    for r in sorted(summary.results, key=lambda r: str(r.image)):
        png = next(f for f in r.files if f.endswith(".png") and not f.endswith("_texture.png"))
        rows.append(np.asarray(Image.open(png).convert("RGB")))
    width = max(a.shape[1] for a in rows)
    rows = [np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255) for a in rows]
    dst = Path(args.dst) if args.dst else ROOT / "docs" / "img" / "reconstruct_examples.png"
    Image.fromarray(np.concatenate(rows, 0)).save(dst, optimize=True)
    print(f"wrote {dst} ({len(rows)} faces)")


def _pictures(summary) -> dict[str, np.ndarray]:
    out = {}
    for r in summary.results:
        png = next(f for f in r.files if f.endswith(".png") and not f.endswith("_texture.png"))
        out[f"{r.image}#{r.face_index}"] = np.asarray(Image.open(png).convert("RGB"))
    return out


def compare_methods(args: argparse.Namespace) -> None:
    """One row per example image: crop, then each method's overlay (the third panel of its picture)."""
    inputs = [str(ROOT / "assets" / "examples")] if not args.photos else list(args.photos)
    runs = []
    for m in args.methods:
        method, fit_cfg = METHODS[m]
        cfg = ReconstructConfig(save=("png",), resume=False, method=method, fit=fit_cfg,
                                rnet=args.rnet if method != "fit" else None)
        summary = reconstruct(inputs, str(Path(args.out) / m.replace("+", "-")), cfg, progress=False)
        runs.append(_pictures(summary))
        print(f"{m}: {summary.seconds / max(len(summary.results), 1):.2f} s/face, "
              f"{sum(r.status != 'ok' for r in summary.results)} poor fit(s)")
    rows = []
    for key in sorted(runs[0]):
        pics = [run[key] for run in runs if key in run]
        w = pics[0].shape[1] // 3  # crop | render | overlay
        rows.append(np.concatenate([pics[0][:, :w]] + [p[:, 2 * w:3 * w] for p in pics], 1))
    dst = Path(args.dst or ROOT / "docs" / "img" / "reconstruct_methods.png")
    Image.fromarray(np.concatenate(rows, 0)).save(dst, optimize=True)
    print(f"wrote {dst}: rows = images, columns = crop | {' | '.join(args.methods)}")


if __name__ == "__main__":
    main()
