#!/usr/bin/env python3
"""Accuracy and speed of the full reconstruction pipeline on a synthetic round trip.

Renders the default model with random identity, expression, pose (yaw within ±60°), lighting
and albedo into 320 × 320 "photos", then reconstructs them through the whole pipeline
(detector → alignment → fit), with each detector asked for and once with the true landmarks.
Reports median landmark NME (normalised by the outer-eye-corner distance, 36-45), yaw / pitch /
roll errors in degrees and the per-vertex shape error after similarity alignment (mm, taking the
model's decimetre units), plus seconds per face.

    python benchmarks/reconstruct.py [--n 50] [--threads 2] [--device cpu] [--iters 50] [--detectors dlib dlib-cnn]
        [--render-model default|makehuman|FILE] [--fit-model default|makehuman|FILE]

With ``--render-model makehuman --fit-model default`` (or the reverse) the photos come from the
*other* model, so the result is not measured on the fitted model's own renders only; the shape
error is then not defined (different topologies) and is left out. The detector's own NME against
the true points is reported next to the fitted landmarks' NME (the fit must not make the
detector's landmarks worse: ratio <= 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import numpy as np
import torch

import face3dkit
from face3dkit.fit import FitConfig
from face3dkit.geometry import PerspectiveCamera
from face3dkit.landmarks import FaceLandmarks
from face3dkit.pipeline import ReconstructConfig, reconstruct
from face3dkit.sysinfo import machine_summary
from face3dkit.viz import render_faces

SIZE = 320


class TrueLandmarks:
    """A 'detector' that returns the known landmarks of each synthetic photo."""

    def __init__(self, landmarks: list[np.ndarray]) -> None:
        self.landmarks = landmarks
        self.i = 0

    def detect(self, image: np.ndarray, path: object = None) -> list[FaceLandmarks]:
        pts = self.landmarks[self.i]
        self.i += 1
        x0, y0 = pts.min(0)
        x1, y1 = pts.max(0)
        return [FaceLandmarks(pts.copy(), (float(x0), float(y0), float(x1), float(y1)), 1.0, "truth")]


def make_scenes(model, n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], face3dkit.Coefficients]:
    g = torch.Generator().manual_seed(seed)
    c = model.sample(n, generator=g)
    rnd = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    c.exp = (rnd(n, model.n_exp) < 0.12).float() * rnd(n, model.n_exp) * 0.7
    if model.exp_range is None:
        c.exp = torch.randn(n, model.n_exp, generator=g) * 0.5
    deg = math.pi / 180
    c.angles[:, 1] = (rnd(n) * 2 - 1) * 60 * deg
    c.angles[:, 0] = (rnd(n) * 2 - 1) * 15 * deg
    c.angles[:, 2] = (rnd(n) * 2 - 1) * 10 * deg
    c.gamma = torch.randn(n, 27, generator=g) * 0.08
    c.gamma[:, [2, 11, 20]] += 0.2
    c.trans[:, :2] = (rnd(n, 2) * 2 - 1) * 0.15
    c.trans[:, 2] = (rnd(n) * 2 - 1) * 0.5
    cam = PerspectiveCamera(focal=1015.0 * SIZE / 224, cx=SIZE / 2, cy=SIZE / 2, image_size=SIZE)
    imgs = []
    for i in range(n):
        bg = 0.25 + 0.5 * float(rnd(1))
        imgs.append(render_faces(model, _take(c, i), camera=cam, background=bg)[0])
    with torch.no_grad():
        lms = model(c, camera=cam).landmarks2d.numpy()
    return imgs, list(lms), c


def _take(c: face3dkit.Coefficients, i: int) -> face3dkit.Coefficients:
    return face3dkit.Coefficients(**{k: v[i:i + 1] for k, v in c.as_dict().items()})


def similarity_aligned_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-vertex distance after the least-squares similarity (Umeyama) of ``a`` onto ``b``."""
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(b0.T @ a0)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1, 1, d]) @ vt
    scale = (s * [1, 1, d]).sum() / (a0 ** 2).sum()
    return float(np.linalg.norm(scale * a0 @ r.T - b0, axis=1).mean())


def evaluate(model, summary, truth_c, truth_lm, fit_model=None) -> dict[str, float]:
    """Errors of a run; ``model`` rendered the photos, ``fit_model`` (default: the same) was fitted."""
    by_index = {int(r.image.removeprefix("array")): r for r in summary.results}
    nme, nme_det, dy, dp, dr, shape = [], [], [], [], [], []
    same = fit_model is None or fit_model is model
    with torch.no_grad():
        true_shape = model.shape(truth_c.id, truth_c.exp).numpy()
    deg = 180 / math.pi
    for i, r in by_index.items():
        lm_t = truth_lm[i]
        iod = np.linalg.norm(lm_t[36] - lm_t[45])
        nme.append(np.linalg.norm(r.landmarks - lm_t, axis=1).mean() / iod)
        if r.detected is not None and len(r.detected) == 68:
            nme_det.append(np.linalg.norm(r.detected - lm_t, axis=1).mean() / iod)
        ty, tp, tr = (truth_c.angles[i, 1] * deg, truth_c.angles[i, 0] * deg, truth_c.angles[i, 2] * deg)
        dy.append(abs(r.pose_deg[0] - float(ty)))
        dp.append(abs(r.pose_deg[1] - float(tp)))
        dr.append(abs(r.pose_deg[2] - float(tr)))
        if same:
            with torch.no_grad():
                fit_shape = model.shape(r.coeffs.id, r.coeffs.exp)[0].numpy()
            shape.append(similarity_aligned_error(fit_shape, true_shape[i]) * 100.0)  # dm -> mm
    return {
        "faces": len(by_index),
        "failed": len(summary.failures),
        "nme_median_%": 100 * float(np.median(nme)) if nme else float("nan"),
        "det_nme_median_%": 100 * float(np.median(nme_det)) if nme_det else float("nan"),
        "yaw_err_median": float(np.median(dy)) if dy else float("nan"),
        "pitch_err_median": float(np.median(dp)) if dp else float("nan"),
        "roll_err_median": float(np.median(dr)) if dr else float("nan"),
        "yaw_err_p90": float(np.percentile(dy, 90)) if dy else float("nan"),
        "shape_err_mm_median": float(np.median(shape)) if shape else float("nan"),
        "s_per_face": summary.seconds / max(len(by_index), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=None, help="photometric iterations (default: FitConfig)")
    p.add_argument("--landmark-iters", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--detectors", nargs="*", default=["dlib"],
                   help="landmark backends to run (dlib, dlib-cnn, mtcnn); none: only the true landmarks")
    p.add_argument("--no-true", action="store_true", help="skip the run with the true landmarks")
    p.add_argument("--contour-weight", type=float, default=None, help="FitConfig.contour_weight")
    p.add_argument("--no-marching", action="store_true", help="FitConfig.contour_marching = False (detector run)")
    p.add_argument("--tangent-weight", type=float, default=None, help="FitConfig.contour_tangent_weight")
    p.add_argument("--render-model", default="default", help="model that renders the photos")
    p.add_argument("--fit-model", default=None, help="model that is fitted (default: --render-model)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    fit_name = args.fit_model or args.render_model
    model = face3dkit.load_model(fit_name, device=args.device)
    cpu_model = face3dkit.load_model(args.render_model)
    cpu_fit = cpu_model if fit_name == args.render_model else face3dkit.load_model(fit_name)
    t = time.perf_counter()
    imgs, lms, truth = make_scenes(cpu_model, args.n, args.seed)
    print(f"# {args.n} synthetic photos ({SIZE}px) of model {args.render_model!r} rendered in "
          f"{time.perf_counter() - t:.1f} s; fitted model: {fit_name!r}")
    fit_cfg = FitConfig()
    if args.iters is not None:
        fit_cfg.photo_iters = args.iters
    if args.landmark_iters is not None:
        fit_cfg.landmark_iters = args.landmark_iters
    if args.contour_weight is not None:
        fit_cfg.contour_weight = args.contour_weight
    if args.no_marching:
        fit_cfg.contour_marching = False
    if args.tangent_weight is not None:
        fit_cfg.contour_tangent_weight = args.tangent_weight
    cfg = ReconstructConfig(device=args.device, batch_size=args.batch_size, fit=fit_cfg, threads=args.threads)
    print(f"# machine: {machine_summary(args.device)}")
    print(f"# fit: {fit_cfg.landmark_iters} landmark + {fit_cfg.photo_iters} photometric iterations, "
          f"batch {args.batch_size}, contour weight {fit_cfg.contour_weight}, marching {fit_cfg.contour_marching}, "
          f"tangent weight {fit_cfg.contour_tangent_weight} (true landmarks: fixed contour)")
    rows = []
    runs = [] if args.no_true else [("true landmarks", TrueLandmarks(lms))]
    if args.detectors:
        from face3dkit.landmarks import make_detector

        names = {"dlib": "dlib HOG detector", "dlib-cnn": "dlib CNN detector", "mtcnn": "MTCNN (+ dlib 68)"}
        runs += [(names.get(d, d), make_detector(d)) for d in args.detectors]
    for name, det in runs:
        run_cfg = cfg
        if name == "true landmarks":  # projections of the fixed landmark vertices: the 3D contour convention
            run_cfg = ReconstructConfig(device=args.device, batch_size=args.batch_size, threads=args.threads,
                                        fit=dataclasses.replace(fit_cfg, contour_marching=False,
                                                                contour_tangent_weight=1.0))
        s = reconstruct(imgs, None, run_cfg, model=model, detector=det)
        row = evaluate(cpu_model, s, truth, lms, cpu_fit)
        rows.append((name, row))
        if s.failures:
            yaws = sorted(abs(float(truth.angles[int(f.image.removeprefix("array")), 1])) * 180 / math.pi
                          for f in s.failures)
            listed = ", ".join(f"{y:.0f}" for y in yaws)
            print(f"# {name}: {len(s.failures)} photos without a face, true |yaw| {listed}° ({s.failures[0].reason})")
    keys = ["faces", "failed", "nme_median_%", "det_nme_median_%", "yaw_err_median", "pitch_err_median",
            "roll_err_median", "yaw_err_p90", "shape_err_mm_median", "s_per_face"]
    heads = ["landmarks", "faces", "failed", "NME med %", "detector NME med %", "yaw° med", "pitch° med",
             "roll° med", "yaw° p90", "shape mm med", "s/face"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for name, row in rows:
        vals = [f"{row[k]:.0f}" if k in ("faces", "failed") else f"{row[k]:.2f}" for k in keys]
        print(f"| {name} | " + " | ".join(vals) + " |")
    for name, row in rows:
        if row["det_nme_median_%"] == row["det_nme_median_%"] and name != "true landmarks":
            print(f"# {name}: fitted / detected landmark NME (vs the true points) "
                  f"{row['nme_median_%'] / row['det_nme_median_%']:.2f}")
    if rows and rows[0][0] == "true landmarks":
        ref = rows[0][1]
        for name, row in rows[1:]:
            print(f"# ratio {name} / true landmarks: NME {row['nme_median_%'] / ref['nme_median_%']:.2f}x, "
                  f"yaw error {row['yaw_err_median'] / max(ref['yaw_err_median'], 1e-9):.2f}x, "
                  f"s/face {row['s_per_face'] / ref['s_per_face']:.2f}x")


if __name__ == "__main__":
    main()
