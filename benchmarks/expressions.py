#!/usr/bin/env python3
"""Expression follow-through: do the fitted landmarks open the eyes, drop the jaw and raise the
brows as much as the face in the photo does?

For each face three measures are taken from 68 landmarks, each divided by the outer-eye-corner
distance (36-45):

- eye opening: mean lid gap ``|37-41|, |38-40|, |43-47|, |44-46|``;
- mouth opening: mean inner-lip gap ``|61-67|, |62-66|, |63-65|``;
- brow height: mean distance of the brow points 17-21 / 22-26 from the line through the same
  side's eye corners (36-39 / 42-45).

They are compared between the fitted model landmarks and the detector's (dlib) landmarks on

1. synthetic photos rendered by ``--render-model`` with EMFACS expressions of the 7 basic classes
   (fer's mapping, random intensity 0.3-1), |yaw| <= 30°, fitted with ``--fit-model`` (render the
   *other* model to avoid measuring on the fitted model's own renders) — here the true landmarks
   are known too;
2. real photos: ``assets/examples/*.jpg`` and, when present, the CK+48 test frames
   (``../shared/data/ck48/test``, research use; 48 px crops upscaled 4x), whose six expressions
   cover wide-open eyes and dropped jaws (surprise, fear) and smiles.

Printed: Pearson correlation of fitted vs detected measures, the least-squares scale factor
``fitted ~ k detected`` (through the origin for the mouth, whose closed value is 0; the ratio of
means for the others) and the median fitted / detected landmark NME.

    python benchmarks/expressions.py [--n 60] [--render-model makehuman] [--fit-model default] [--ck48 N]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import face3dkit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.pipeline import ReconstructConfig, reconstruct
from face3dkit.sysinfo import machine_summary
from face3dkit.viz import render_faces

ROOT = Path(__file__).resolve().parents[1]
SIZE = 320


def measures(lm: np.ndarray) -> np.ndarray:
    """(3,) eye opening, mouth opening, brow height of (68, 2) landmarks (outer-eye-corner units)."""
    iod = np.linalg.norm(lm[36] - lm[45])
    gap = lambda a, b: np.linalg.norm(lm[a] - lm[b])  # noqa: E731
    eye = np.mean([gap(37, 41), gap(38, 40), gap(43, 47), gap(44, 46)])
    mouth = np.mean([gap(61, 67), gap(62, 66), gap(63, 65)])
    brow = []
    for brows, (c0, c1) in ((range(17, 22), (36, 39)), (range(22, 27), (42, 45))):
        d = lm[c1] - lm[c0]
        n = np.array([-d[1], d[0]]) / np.linalg.norm(d)
        brow += [abs((lm[k] - lm[c0]) @ n) for k in brows]
    return np.array([eye, mouth, np.mean(brow)]) / iod


def synthetic_scenes(model, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    # this folder holds benchmarks/fer.py, which would shadow the fer package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    from fer.data.synthetic import expression_units_for, expression_weights

    rng = np.random.default_rng(seed)
    units = expression_units_for(model.exp_names)
    g = torch.Generator().manual_seed(seed)
    c = model.sample(n, generator=g, tex_scale=0.6)
    labels = rng.integers(0, 7, n)
    exp = np.stack([expression_weights(model.exp_names, int(k), units) for k in labels])
    exp *= rng.uniform(0.3, 1.0, (n, 1))
    c.exp = torch.as_tensor(exp, dtype=torch.float32)
    deg = math.pi / 180
    c.angles[:, 1] = torch.as_tensor(rng.uniform(-30, 30, n) * deg, dtype=torch.float32)
    c.angles[:, 0] = torch.as_tensor(rng.uniform(-10, 10, n) * deg, dtype=torch.float32)
    c.gamma = torch.as_tensor(rng.normal(0, 0.06, (n, 27)), dtype=torch.float32)
    c.gamma[:, [2, 11, 20]] += 0.2
    cam = PerspectiveCamera(focal=1015.0 * SIZE / 224, cx=SIZE / 2, cy=SIZE / 2, image_size=SIZE)
    imgs = [render_faces(model, c[i],
                         camera=cam, background=float(rng.uniform(0.25, 0.75)))[0] for i in range(n)]
    with torch.no_grad():
        lms = model(c, camera=cam).landmarks2d.numpy()
    return imgs, lms


def real_photos(ck48: int) -> list[tuple[str, np.ndarray]]:
    out = [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in sorted((ROOT / "assets/examples").glob("*.jpg"))]
    ck = ROOT.parent / "shared/data/ck48/test"
    if ck48 and ck.is_dir():
        files = sorted(ck.glob("*/*.png"))
        step = max(1, len(files) // ck48)
        for p in files[::step][:ck48]:
            im = Image.open(p).convert("RGB").resize((192, 192), Image.BICUBIC)
            out.append((f"ck48/{p.parent.name}/{p.name}", np.asarray(im)))
    return out


def follow_through(fit_m: np.ndarray, det_m: np.ndarray) -> dict[str, float]:
    row = {}
    for j, name in enumerate(("eye", "mouth", "brow")):
        f, d = fit_m[:, j], det_m[:, j]
        ok = len(f) > 2 and d.std() > 0 and f.std() > 0
        row[f"{name}_r"] = float(np.corrcoef(f, d)[0, 1]) if ok else float("nan")
        row[f"{name}_k"] = float((f @ d) / (d @ d)) if name == "mouth" else float(f.mean() / d.mean())
    return row


def run(images: list[np.ndarray], model, cfg: ReconstructConfig) -> tuple[dict[int, object], float]:
    from face3dkit.landmarks import make_detector

    t = time.perf_counter()
    s = reconstruct(images, None, cfg, model=model, detector=make_detector("dlib"))
    return {int(r.image.removeprefix("array")): r for r in s.results}, time.perf_counter() - t


def table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    keys = ["n", "eye_r", "eye_k", "mouth_r", "mouth_k", "brow_r", "brow_k", "nme_fit_det_%"]
    print("| compared | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in rows:
        print(f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.2f}" if k != "n" else f"{r[k]:.0f}" for k in keys)
              + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="synthetic photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render-model", default="makehuman")
    ap.add_argument("--fit-model", default="default")
    ap.add_argument("--ck48", type=int, default=60, help="CK+48 test frames to use (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="photometric iterations (default: FitConfig)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from face3dkit.fit import FitConfig

    fit_cfg = FitConfig() if args.iters is None else FitConfig(photo_iters=args.iters)
    cfg = ReconstructConfig(batch_size=8, fit=fit_cfg)
    fit_model = face3dkit.load_model(args.fit_model)
    print(f"# machine: {machine_summary('cpu')}; fitted model {args.fit_model!r}; "
          f"{fit_cfg.landmark_iters} landmark + {fit_cfg.photo_iters} photometric iterations")
    if args.n:
        render_model = face3dkit.load_model(args.render_model)
        imgs, truth = synthetic_scenes(render_model, args.n, args.seed)
        res, secs = run(imgs, fit_model, cfg)
        idx = sorted(res)
        fit_m = np.stack([measures(res[i].landmarks) for i in idx])
        det_m = np.stack([measures(res[i].detected) for i in idx])
        true_m = np.stack([measures(truth[i]) for i in idx])
        iod = np.array([np.linalg.norm(truth[i][36] - truth[i][45]) for i in idx])
        nme_fit = np.array([np.linalg.norm(res[i].landmarks - truth[i], axis=1).mean() for i in idx]) / iod
        nme_det = np.array([np.linalg.norm(res[i].detected - truth[i], axis=1).mean() for i in idx]) / iod
        rows = [("fitted vs detected", {"n": len(idx), **follow_through(fit_m, det_m)}),
                ("fitted vs true", {"n": len(idx), **follow_through(fit_m, true_m)}),
                ("detected vs true", {"n": len(idx), **follow_through(det_m, true_m)})]
        table(f"synthetic: {len(idx)}/{args.n} faces of {args.render_model!r} found by dlib, fitted with "
              f"{args.fit_model!r} ({secs / max(len(idx), 1):.2f} s/face)", rows)
        print(f"# NME vs the true points: fitted {100 * np.median(nme_fit):.2f} %, detector "
              f"{100 * np.median(nme_det):.2f} %, ratio {np.median(nme_fit) / np.median(nme_det):.2f}")
    photos = real_photos(args.ck48)
    if photos:
        res, secs = run([im for _, im in photos], fit_model, cfg)
        idx = sorted(res)
        fit_m = np.stack([measures(res[i].landmarks) for i in idx])
        det_m = np.stack([measures(res[i].detected) for i in idx])
        nme = [np.linalg.norm(res[i].landmarks - res[i].detected, axis=1).mean()
               / np.linalg.norm(res[i].detected[36] - res[i].detected[45]) for i in idx]
        row = {"n": len(idx), **follow_through(fit_m, det_m), "nme_fit_det_%": 100 * float(np.median(nme))}
        table(f"real photos: {len(idx)}/{len(photos)} found by dlib (assets/examples + CK+48 test frames), "
              f"fitted with {args.fit_model!r} ({secs / max(len(idx), 1):.2f} s/face)", [("fitted vs detected", row)])
        for i in idx:
            if not photos[i][0].startswith("ck48/"):
                fm, dm = measures(res[i].landmarks), measures(res[i].detected)
                print(f"# {photos[i][0]}: eye {fm[0]:.3f}/{dm[0]:.3f}, mouth {fm[1]:.3f}/{dm[1]:.3f}, "
                      f"brow {fm[2]:.3f}/{dm[2]:.3f} (fitted/detected)")


if __name__ == "__main__":
    main()
