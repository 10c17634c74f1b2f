#!/usr/bin/env python3
"""Accuracy and speed of the full reconstruction pipeline on a synthetic round trip.

Renders the default model with random identity, expression, pose (yaw within ±60°), lighting
and albedo into 320 × 320 "photos", then reconstructs them through the whole pipeline
(detector → alignment → fit → every output written to a temporary folder), with each detector
asked for and once with the true landmarks. Reports median landmark NME (normalised by the
outer-eye-corner distance, 36-45) of the fitted landmarks and of the landmarks the fit was given
("given NME": the detector's points), yaw / pitch / roll errors in degrees and the per-vertex
shape error after similarity alignment (mm, taking the model's decimetre units), faces marked
``poor_fit``, plus seconds per face (the whole ``reconstruct`` call, outputs included).

First it profiles the pipeline stage by stage on the first ``--batch-size`` photos (load, detect,
align, the fit's stages, each output kind), in seconds per face. Then it runs the chosen settings
and, unless ``--no-today``, the settings before the speed work (photometric stage at the full 224
crop, plain L2 landmark loss: ``FitConfig(photo_size=None, landmark_loss='l2')``) in the same run,
and prints the ratios (NME, yaw error, s/face). Timings on a shared machine: compare ratios
within one run, with ``--threads 1``.

    python benchmarks/reconstruct.py [--n 50] [--threads 1] [--device cpu] [--iters 50] [--detectors dlib dlib-cnn]
        [--render-model default|makehuman|FILE] [--fit-model default|makehuman|FILE]

Then (unless ``--no-photos``) the real photos: ``assets/examples/*.jpg`` (public-domain portraits)
and any ``--photos`` given, through the same pipeline with dlib: per photo the fitted-vs-detected
landmark NME, pose, status (``ok`` / ``poor_fit``) and s/face. Real photos have no true landmarks:
the detector's points are the reference, so this checks that the fit stays on them.

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
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import face3dkit
from face3dkit.align import align_image
from face3dkit.fit import FitConfig, fit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.io import load_image
from face3dkit.landmarks import FaceLandmarks
from face3dkit.pipeline import OUTPUT_KINDS, ReconstructConfig, reconstruct
from face3dkit.pipeline.outputs import write_face_outputs
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


def make_scenes(model, n: int, seed: int, yaw_deg=None, one_identity: bool = False
                ) -> tuple[list[np.ndarray], list[np.ndarray], face3dkit.Coefficients]:
    """``n`` random photos, their (68, 2) true landmarks and coefficients; ``yaw_deg(rnd, n)`` draws
    the (n,) yaw in degrees from the scene generator (default: uniform in +-60); ``one_identity``:
    every photo has the first one's identity and albedo (photos of one person)."""
    g = torch.Generator().manual_seed(seed)
    c = model.sample(n, generator=g)
    if one_identity:
        c.id, c.tex = c.id[:1].expand(n, -1).clone(), c.tex[:1].expand(n, -1).clone()
    rnd = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    c.exp = (rnd(n, model.n_exp) < 0.12).float() * rnd(n, model.n_exp) * 0.7
    if model.exp_range is None:
        c.exp = torch.randn(n, model.n_exp, generator=g) * 0.5
    deg = math.pi / 180
    c.angles[:, 1] = (yaw_deg(rnd, n) if yaw_deg is not None else (rnd(n) * 2 - 1) * 60) * deg
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
    return c[i]


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
    per_face: dict[int, dict[str, float]] = {}
    for i, r in by_index.items():
        lm_t = truth_lm[i]
        iod = np.linalg.norm(lm_t[36] - lm_t[45])
        nme.append(np.linalg.norm(r.landmarks - lm_t, axis=1).mean() / iod)
        if r.detected is not None and len(r.detected) == 68:  # the points the fit was given
            nme_det.append(np.linalg.norm(r.detected - lm_t, axis=1).mean() / iod)
        ty, tp, tr = (truth_c.angles[i, 1] * deg, truth_c.angles[i, 0] * deg, truth_c.angles[i, 2] * deg)
        dy.append(abs(r.pose_deg[0] - float(ty)))
        dp.append(abs(r.pose_deg[1] - float(tp)))
        dr.append(abs(r.pose_deg[2] - float(tr)))
        if same:
            with torch.no_grad():
                fit_shape = model.shape(r.coeffs.id, r.coeffs.exp)[0].numpy()
            shape.append(similarity_aligned_error(fit_shape, true_shape[i]) * 100.0)  # dm -> mm
        per_face[i] = {"NME %": 100 * nme[-1], "yaw°": dy[-1], "pitch°": dp[-1], "roll°": dr[-1],
                       **({"shape mm": shape[-1]} if same else {})}
    return {
        "per_face": per_face,
        "faces": len(by_index),
        "failed": len(summary.failures),
        "nme_median_%": 100 * float(np.median(nme)) if nme else float("nan"),
        "nme_given_median_%": 100 * float(np.median(nme_det)) if nme_det else float("nan"),
        "yaw_err_median": float(np.median(dy)) if dy else float("nan"),
        "pitch_err_median": float(np.median(dp)) if dp else float("nan"),
        "roll_err_median": float(np.median(dr)) if dr else float("nan"),
        "yaw_err_p90": float(np.percentile(dy, 90)) if dy else float("nan"),
        "shape_err_mm_median": float(np.median(shape)) if shape else float("nan"),
        "poor_fit": sum(r.status != "ok" for r in summary.results),
        "s_per_face": summary.seconds / max(len(by_index), 1),
    }


def profile_stages(model, imgs: list[np.ndarray], detector, fit_cfg: FitConfig,
                   folder: Path) -> list[tuple[str, float]]:
    """Seconds per face of each pipeline stage on ``imgs`` (one batch): the photos are written as
    PNG and loaded back, detected, aligned, fitted together, and each output kind written."""
    from PIL import Image

    t: dict[str, float] = {}

    def timed(name, fn, *a, **k):
        t0 = time.perf_counter()
        out = fn(*a, **k)
        t[name] = t.get(name, 0.0) + time.perf_counter() - t0
        return out

    paths = []
    for i, im in enumerate(imgs):
        paths.append(folder / f"photo{i}.png")
        Image.fromarray(im).save(paths[-1])
    crops, lms, alignments = [], [], []
    for p in paths:
        img = timed("load image", load_image, p)
        faces = timed("detect landmarks", detector.detect, img, path=p)
        if not faces:
            continue
        al = timed("align (Deng crop)", align_image, img, max(faces, key=lambda f: f.area))
        alignments.append(al)
        crops.append(np.asarray(al.image))
        lms.append(np.asarray(al.landmarks))
    n = len(crops)
    dev = model.mean_shape.device
    x = torch.as_tensor(np.stack(crops), dtype=torch.float32, device=dev) / 255.0
    lm = torch.as_tensor(np.stack(lms), dtype=torch.float32, device=dev)
    t0 = time.perf_counter()
    res = fit(model, x, lm, fit_cfg)
    t_fit = time.perf_counter() - t0
    for k, v in res.timings.items():
        t[f"fit: {k}"] = v
    t["fit: other (setup)"] = t_fit - sum(res.timings.values())
    with torch.no_grad():
        verts = model.shape(res.coeffs.id, res.coeffs.exp)
        albedo = model.albedo(res.coeffs.tex)
    for i in range(n):
        c1 = res.coeffs[i].to("cpu")
        render = (res.render[i].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        mask = res.mask[i, ..., 0].cpu().numpy() > 0
        lm_fit = res.landmarks2d[i].cpu().numpy()
        for kind in OUTPUT_KINDS:
            timed(f"write {kind}", write_face_outputs, folder / f"face{i}", f"k_{kind}", c1, verts=verts[i],
                  faces=model.faces, albedo=albedo[i], lm68_image=lm_fit, lm68_detected_image=lms[i],
                  pose_deg=(0.0, 0.0, 0.0), crop=crops[i], render=render, render_mask=mask, lm68_crop=lm_fit,
                  lm68_detected_crop=lms[i], crop_matrix=np.asarray(alignments[i].matrix), uv=model.uv,
                  face_uv=model.face_uv, save=(kind,))
    return [(k, v / max(n, 1)) for k, v in t.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=None, help="photometric iterations (default: FitConfig)")
    p.add_argument("--landmark-iters", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--detectors", nargs="*", default=["dlib"],
                   help="landmark backends to run (dlib, dlib-cnn, mtcnn); none: only the true landmarks")
    p.add_argument("--no-true", action="store_true", help="skip the run with the true landmarks")
    p.add_argument("--contour-weight", type=float, default=None, help="FitConfig.contour_weight")
    p.add_argument("--no-marching", action="store_true", help="FitConfig.contour_marching = False (detector run)")
    p.add_argument("--tangent-weight", type=float, default=None, help="FitConfig.contour_tangent_weight")
    p.add_argument("--landmark-weight", type=float, default=None, help="LossWeights.landmark (default: FitConfig's)")
    p.add_argument("--render-model", default="default", help="model that renders the photos")
    p.add_argument("--fit-model", default=None, help="model that is fitted (default: --render-model)")
    p.add_argument("--photo-size", type=int, default=None, help="FitConfig.photo_size (0: the full crop)")
    p.add_argument("--landmark-loss", choices=["l2", "huber", "gm"], default=None, help="FitConfig.landmark_loss")
    p.add_argument("--no-today", action="store_true",
                   help="skip the run with the settings before the speed work (photo_size None, l2)")
    p.add_argument("--previous", action="store_true",
                   help="also run the previous defaults (no closed-form appearance, 50 photometric steps, no culling)")
    p.add_argument("--rnet", default=None, help="an R-Net checkpoint: also run --method rnet and rnet+fit with it")
    p.add_argument("--short-landmark-iters", type=int, default=20, help="landmark steps of rnet+fit-short")
    p.add_argument("--short-iters", type=int, default=10, help="photometric steps of rnet+fit-short")
    p.add_argument("--rnet-steps", nargs="*", default=[], metavar="L/P",
                   help="more rnet+fit rows with L landmark and P photometric steps each (e.g. 150/10 80/5); "
                        "L/P@S: the photometric stage at S px (FitConfig.photo_size); L/P@S:F: and on a mesh of F "
                        "triangles (FitConfig.photo_faces, 0: full); L/P@S:F:K: rasterized every K steps "
                        "(FitConfig.photo_raster_every)")
    p.add_argument("--fit-steps", nargs="*", default=[], metavar="L/P",
                   help="more fit rows (no R-Net) with the steps of an --rnet-steps spec (e.g. 150/40@64:10000)")
    p.add_argument("--rnet-start", choices=["pose", "all"], nargs="*", default=["pose"],
                   help="ReconstructConfig.rnet_start of the rnet+fit rows (several: a row set for each)")
    p.add_argument("--rnet-appearance", choices=["closed", "rnet"], default="closed",
                   help="rnet+fit's photometric start: the closed-form light and albedo (FitConfig.appearance_init) "
                        "or the R-Net's own")
    p.add_argument("--no-profile", action="store_true", help="skip the stage profile")
    p.add_argument("--photos", nargs="*", default=[], help="more real photos for the real-photo section")
    p.add_argument("--no-photos", action="store_true", help="skip the real-photo section")
    p.add_argument("--paired", action="store_true",
                   help="also print each row's per-face paired difference to the default fit, with bootstrap intervals")
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
    if args.landmark_weight is not None:
        fit_cfg.weights = dataclasses.replace(fit_cfg.weights, landmark=args.landmark_weight)
    if args.photo_size is not None:
        fit_cfg.photo_size = args.photo_size or None
    if args.landmark_loss is not None:
        fit_cfg.landmark_loss = args.landmark_loss
    print(f"# machine: {machine_summary(args.device)}, torch threads {torch.get_num_threads()}")
    print(f"# fit: {fit_cfg.landmark_iters} landmark + {fit_cfg.photo_iters} photometric iterations at "
          f"{fit_cfg.photo_size or 'crop'} px, {fit_cfg.landmark_loss} landmark loss "
          f"(scale {fit_cfg.landmark_scale} px), "
          f"batch {args.batch_size}, contour weight {fit_cfg.contour_weight}, marching {fit_cfg.contour_marching}, "
          f"tangent weight {fit_cfg.contour_tangent_weight} (true landmarks: fixed contour); every output written")
    rows = []
    runs = [] if args.no_true else [("true landmarks", TrueLandmarks(lms))]
    if args.detectors:
        from face3dkit.landmarks import make_detector

        names = {"dlib": "dlib HOG detector", "dlib-cnn": "dlib CNN detector", "mtcnn": "MTCNN (+ dlib 68)"}
        runs += [(names.get(d, d), make_detector(d)) for d in args.detectors]
    if not args.no_profile:
        det = runs[-1][1] if args.detectors else TrueLandmarks(lms)
        with tempfile.TemporaryDirectory() as tmp:
            stages = profile_stages(model, imgs[: args.batch_size], det, fit_cfg, Path(tmp))
        if isinstance(det, TrueLandmarks):
            det.i = 0
        total = sum(v for _, v in stages)
        print(f"# stage profile, {runs[-1][0] if args.detectors else 'true landmarks'}, batch of "
              f"{min(args.batch_size, args.n)} photos, seconds per face (total {total:.3f}):")
        print("| stage | s/face | share |")
        print("|---|---:|---:|")
        for k, v in stages:
            print(f"| {k} | {v:.3f} | {100 * v / total:.0f} % |")
    settings = [("default", fit_cfg)]
    if not args.no_today:
        settings.append(("today", dataclasses.replace(fit_cfg, photo_size=None, landmark_loss="l2")))
    if args.previous:  # the defaults before the closed-form appearance initialisation
        settings.append(("previous", dataclasses.replace(fit_cfg, appearance_init=False, photo_iters=50,
                                                         cull_backfaces=False)))
    extra = method_settings(args, fit_cfg)
    settings += [(name, f_cfg) for name, f_cfg, _, _ in extra]
    how = {name: (method, start) for name, _, method, start in extra}
    for setting, f_cfg in settings:
        for name, det in runs:
            f_run = f_cfg
            if name == "true landmarks":  # projections of the fixed landmark vertices: the 3D contour convention
                f_run = dataclasses.replace(f_cfg, landmark_convention="3d")
                det.i = 0
            method, start = how.get(setting, ("fit", "pose"))
            run_cfg = ReconstructConfig(device=args.device, batch_size=args.batch_size, fit=f_run, threads=args.threads,
                                        method=method, rnet=args.rnet if method != "fit" else None, rnet_start=start)
            with tempfile.TemporaryDirectory() as tmp:
                s = reconstruct(imgs, tmp, run_cfg, model=model, detector=det)
            row = evaluate(cpu_model, s, truth, lms, cpu_fit)
            rows.append((f"{name} ({setting})" if len(settings) > 1 else name, row))
            if s.failures and setting == "default":
                yaws = sorted(abs(float(truth.angles[int(f.image.removeprefix("array")), 1])) * 180 / math.pi
                              for f in s.failures)
                listed = ", ".join(f"{y:.0f}" for y in yaws)
                print(f"# {name}: {len(s.failures)} photos without a face, true |yaw| {listed}° "
                      f"({s.failures[0].reason})")
    keys = ["faces", "failed", "poor_fit", "nme_median_%", "nme_given_median_%", "yaw_err_median", "pitch_err_median",
            "roll_err_median", "yaw_err_p90", "shape_err_mm_median", "s_per_face"]
    heads = ["landmarks", "faces", "failed", "poor fit", "NME med %", "given NME med %", "yaw° med", "pitch° med",
             "roll° med", "yaw° p90", "shape mm med", "s/face"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for name, row in rows:
        vals = [f"{row[k]:.0f}" if k in ("faces", "failed", "poor_fit") else f"{row[k]:.2f}" for k in keys]
        print(f"| {name} | " + " | ".join(vals) + " |")

    if args.paired:
        paired_table(rows, len(runs))

    def ratio(what: str, a: dict, b: dict) -> None:
        print(f"# ratio {what}: NME {a['nme_median_%'] / b['nme_median_%']:.2f}x, "
              f"yaw error {a['yaw_err_median'] / max(b['yaw_err_median'], 1e-9):.2f}x, "
              f"shape error {a['shape_err_mm_median'] / b['shape_err_mm_median']:.2f}x, "
              f"s/face {a['s_per_face'] / b['s_per_face']:.2f}x")

    n_src = len(runs)
    labels = {"rnet": "the R-Net's regression (--method rnet)",
              "rnet+fit": "the fit from the R-Net (--method rnet+fit)",
              "rnet+fit-short": "a short fit from the R-Net (--method rnet+fit --landmark-iters / --iters "
                                "--short-landmark-iters / --short-iters)",
              "today": "today's settings (photometric at 224 px, L2 landmarks)",
              "previous": "the previous defaults (no closed-form appearance, 50 photometric steps, no culling)"}
    for k, (setting, _) in enumerate(settings[1:], 1):
        for (name, row), (_, old) in zip(rows[:n_src], rows[k * n_src:(k + 1) * n_src], strict=True):
            ratio(f"{name} / {labels.get(setting, setting.replace('rnet+fit', 'the fit from the R-Net, L/P'))}",
                  row, old)
    if not args.no_true and n_src > 1:
        for name, row in rows[1:n_src]:
            ratio(f"{name} / true landmarks", row, rows[0][1])
    for name, row in rows:
        if row["nme_given_median_%"] == row["nme_given_median_%"] and not name.startswith("true landmarks"):
            print(f"# {name}: fitted / given landmark NME (vs the true points) "
                  f"{row['nme_median_%'] / row['nme_given_median_%']:.2f}")
    if not args.no_photos:
        real_photos(model, args.photos, args)


def paired_table(rows: list[tuple[str, dict]], n_src: int, resamples: int = 4000, seed: int = 0) -> None:
    """Per-face paired differences of every row against the default fit of the same landmark source
    (the faces both found): mean of (row error - default error) with a 95 % bootstrap interval, per
    error kind. A median over a few dozen faces moves by tenths of a degree with the sample; the
    paired difference tells whether a row is better or worse on the same faces."""
    rng = np.random.default_rng(seed)
    kinds = ["NME %", "yaw°", "pitch°", "roll°", "shape mm"]
    print(f"# paired against the default fit of the same landmarks: mean (row - default) per face, "
          f"[95 % bootstrap interval, {resamples} resamples]; negative = the row is better")
    print("| row | faces | " + " | ".join(f"Δ {k}" for k in kinds) + " |")
    print("|---|---:|" + "---|" * len(kinds))
    for k, (name, row) in enumerate(rows):
        base = rows[k % n_src][1]
        if base is row:
            continue
        common = sorted(set(row["per_face"]) & set(base["per_face"]))
        cells = []
        for kind in kinds:
            d = np.array([row["per_face"][i][kind] - base["per_face"][i][kind] for i in common
                          if kind in row["per_face"][i] and kind in base["per_face"][i]])
            if d.size == 0:
                cells.append("–")
                continue
            boots = d[rng.integers(0, d.size, (resamples, d.size))].mean(1)
            lo, hi = np.percentile(boots, [2.5, 97.5])
            cells.append(f"{d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]")
        print(f"| {name} | {len(common)} | " + " | ".join(cells) + " |")


def method_settings(args, fit_cfg: FitConfig) -> list[tuple[str, FitConfig, str, str]]:
    """The rows beside the default fit: (name, FitConfig, method, ReconstructConfig.rnet_start) for
    ``--fit-steps`` and, with ``--rnet``, the regression and the fits from it for each ``--rnet-start``."""
    rows = [(f"fit {spec}", steps_config(fit_cfg, spec), "fit", "pose") for spec in args.fit_steps]
    if not args.rnet:
        return rows
    r_cfg = dataclasses.replace(fit_cfg, appearance_init=args.rnet_appearance == "closed")
    rows.append(("rnet", fit_cfg, "rnet", "pose"))
    for start in args.rnet_start:
        tag = "" if args.rnet_start == ["pose"] else f" [start {start}]"
        rows += [(f"rnet+fit{tag}", r_cfg, "rnet+fit", start),
                 (f"rnet+fit-short{tag}", dataclasses.replace(r_cfg, landmark_iters=args.short_landmark_iters,
                                                               photo_iters=args.short_iters), "rnet+fit", start)]
        rows += [(f"rnet+fit{tag} {spec}", steps_config(r_cfg, spec), "rnet+fit", start) for spec in args.rnet_steps]
    return rows


def steps_config(cfg: FitConfig, spec: str) -> FitConfig:
    """``cfg`` with the steps of an ``--rnet-steps`` spec ``L/P``, ``L/P@S``, ``L/P@S:F`` or
    ``L/P@S:F:K`` (F: the photometric mesh's triangles, FitConfig.photo_faces, 0 = the full mesh;
    K: FitConfig.photo_raster_every); ``Lp``: the landmark stage fits the pose only
    (FitConfig.fit_identity_in_landmark_stage = False); P may carry ``xR`` (the landmark stage's
    shape prior times R: FitConfig.landmark_prior_scale) and ``sF`` (the landmark stage's identity and
    expression times F before the photometric stage: FitConfig.photo_shape_shrink); ``L+R>T``: R more
    landmark steps for the faces whose residual after L is above T pixels of a 224 crop
    (FitConfig.landmark_refine_iters / landmark_refine_above)."""
    import re

    steps, _, rest = spec.partition("@")
    size, _, rest = rest.partition(":")
    faces, _, every = rest.partition(":")
    n_lm, _, n_ph = steps.partition("/")
    m = re.fullmatch(r"(\d+)((?:[xs][\d.]+)*)", n_ph)
    lm_m = re.fullmatch(r"(\d+)(?:\+(\d+)>([\d.]+))?(p?)", n_lm)
    if m is None or lm_m is None:
        raise SystemExit(f"bad steps spec {spec!r}")
    mods = dict(re.findall(r"([xs])([\d.]+)", m.group(2)))
    if lm_m.group(2):  # L+R>T: R more landmark steps for faces whose residual is above T px
        cfg = dataclasses.replace(cfg, landmark_refine_iters=int(lm_m.group(2)),
                                  landmark_refine_above=float(lm_m.group(3)))
    out = dataclasses.replace(cfg, landmark_iters=int(lm_m.group(1)), photo_iters=int(m.group(1)),
                              landmark_prior_scale=float(mods.get("x", 1.0)),
                              photo_shape_shrink=float(mods.get("s", 1.0)))
    if lm_m.group(4):  # Lp: the landmark stage fits the pose only
        out = dataclasses.replace(out, fit_identity_in_landmark_stage=False)
    if size:
        out = dataclasses.replace(out, photo_size=int(size))
    if faces:
        out = dataclasses.replace(out, photo_faces=int(faces) or None)
    return dataclasses.replace(out, photo_raster_every=int(every)) if every else out


def real_photos(model, extra: list[str], args) -> None:
    """Fitted-vs-detected agreement on real photos (assets/examples + ``extra``), dlib landmarks; with
    ``--rnet`` for every method, with the pose difference to the fit's (no true pose exists)."""
    from face3dkit.landmarks import make_detector

    root = Path(__file__).resolve().parents[1]
    paths = sorted(str(p) for p in (root / "assets" / "examples").glob("*.jpg")) + list(extra)
    if not paths:
        return
    methods = [("fit", FitConfig(), "fit", "pose")] + method_settings(args, FitConfig())
    det = make_detector("dlib")
    fit_pose: dict[str, np.ndarray] = {}
    print(f"\n# real photos ({len(paths)} photos, dlib, every output written)")
    print("| method | photo | fitted vs detected NME % | yaw° | pitch° | roll° | max abs Δ pose vs fit ° | status "
          "| s/face |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, f_cfg, method, start in methods:
        cfg = ReconstructConfig(device=args.device, batch_size=args.batch_size, threads=args.threads, fit=f_cfg,
                                method=method, rnet=args.rnet if method != "fit" else None, rnet_start=start)
        with tempfile.TemporaryDirectory() as tmp:
            s = reconstruct(paths, tmp, cfg, model=model, detector=det)
        per = s.seconds / max(len(s.results), 1)
        for r in s.results:
            iod = np.linalg.norm(r.detected[36] - r.detected[45])
            nme = 100 * np.linalg.norm(r.landmarks - r.detected, axis=1).mean() / iod
            pose = np.asarray(r.pose_deg, dtype=float)
            key = f"{r.image}#{r.face_index}"
            if name == "fit":
                fit_pose[key] = pose
            d = np.abs(pose - fit_pose[key]).max() if key in fit_pose else float("nan")
            print(f"| {name} | {Path(str(r.image)).name} | {nme:.2f} | {pose[0]:.1f} | {pose[1]:.1f} | {pose[2]:.1f} | "
                  f"{d:.1f} | {r.status}{' (' + r.reason + ')' if r.reason else ''} | {per:.2f} |")
        for f in s.failures:
            print(f"| {name} | {Path(str(f.image)).name} | – | – | – | – | – | failed: {f.reason} | – |")


if __name__ == "__main__":
    main()
