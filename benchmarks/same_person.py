#!/usr/bin/env python3
"""One identity from a set of photos, end to end through ``reconstruct`` (a script, not a test).

``--sets`` identities of the default model, ``--set-size`` photos each (``benchmarks/reconstruct.py``'s
320 px renders with the set's identity and albedo, each photo its own expression, yaw within
±``--yaw``, pitch, roll, light, position and background grey), detected by ``--landmarks``
(dlib: what a user's photos get), then:

* ``rnet+fit`` photo by photo: the error of each photo's identity, and of the mean of the set's;
* ``--same-person --method rnet+fit --same-person-identity aggregate``: the R-Net's mean identity
  held (what the run had before the joint fit);
* ``--same-person --method rnet+fit`` (joint, the default): one identity and albedo fitted to the
  set's photos together.

Errors of the identity-only neutral shape (``model.shape(id, 0)``) against the truth's, in mm: the
mean vertex distance, and after the least-squares similarity (rotation, translation and scale:
what is not the face's size or placement). s/face is each ``reconstruct`` call's time per face.

    python benchmarks/same_person.py [--sets 12] [--set-size 5] [--rnet default] [--landmarks dlib]
        [--yaw 45] [--fast] [--map-prior | --shared-prior-weight W] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconstruct import SIZE, TrueLandmarks, make_scenes, similarity_aligned_error  # noqa: E402

import face3dkit  # noqa: E402
from face3dkit.fit import FitConfig  # noqa: E402
from face3dkit.pipeline import ReconstructConfig, reconstruct  # noqa: E402
from face3dkit.sysinfo import machine_summary  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", type=int, default=12)
    p.add_argument("--set-size", type=int, default=5)
    p.add_argument("--rnet", default="default")
    p.add_argument("--landmarks", default="dlib", help="'dlib' (or another detector name), or 'truth'.")
    p.add_argument("--yaw", type=float, default=45.0, help="Yaw half-range of the photos, degrees.")
    p.add_argument("--fast", action="store_true", help="FitConfig.fast() instead of FitConfig().")
    p.add_argument("--map-prior", action="store_true",
                   help="The joint fit's shared prior at 1 / set size (FitConfig.shared_prior_weight; default 1).")
    p.add_argument("--shared-prior-weight", type=float, default=1.0,
                   help="The joint fit's FitConfig.shared_prior_weight (ignored with --map-prior).")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = face3dkit.load_model("default")
    fit_cfg = FitConfig.fast() if args.fast else FitConfig()
    base = ReconstructConfig(method="rnet+fit", rnet=args.rnet, fit=fit_cfg, save=(), threads=args.threads,
                             landmarks=args.landmarks if args.landmarks != "truth" else "dlib")
    runs = {"rnet+fit, photo by photo": base,
            "--same-person, R-Net mean held (aggregate)": dataclasses.replace(base, same_person=True,
                                                                               same_person_identity="aggregate"),
            "--same-person, joint fit (default)": dataclasses.replace(
                base, same_person=True, fit=dataclasses.replace(
                    fit_cfg, shared_prior_weight=1 / args.set_size if args.map_prior else args.shared_prior_weight))}
    names = ["mean face", "rnet+fit, photo by photo", "mean of the photo-by-photo identities", *list(runs)[1:]]
    errs: dict[str, list[tuple[float, float]]] = {k: [] for k in names}
    secs: dict[str, list[float]] = {k: [] for k in runs}
    missing = 0
    zero_exp = torch.zeros(1, model.n_exp)

    def neutral(idc: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.shape(idc.reshape(1, -1), zero_exp)[0].numpy()

    def err(idc: torch.Tensor, truth: np.ndarray) -> tuple[float, float]:
        est = neutral(idc)
        return float(np.linalg.norm(est - truth, axis=1).mean() * 100), similarity_aligned_error(est, truth) * 100

    t0 = time.perf_counter()
    for k in range(args.sets):
        imgs, lms, c = make_scenes(model, args.set_size, args.seed * 1000 + k, one_identity=True,
                                   yaw_deg=lambda rnd, n: (rnd(n) * 2 - 1) * args.yaw)
        truth = neutral(c.id[0])
        errs["mean face"].append(err(torch.zeros(model.n_id), truth))
        for name, cfg in runs.items():
            det = TrueLandmarks(lms) if args.landmarks == "truth" else None
            s = reconstruct(imgs, None, cfg, model=model, detector=det)
            secs[name].append(s.seconds / max(len(s.results), 1))
            if len(s.results) < args.set_size:
                missing += args.set_size - len(s.results)
            if not s.results:
                continue
            if name == "rnet+fit, photo by photo":
                errs[name] += [err(r.coeffs.id, truth) for r in s.results]
                errs["mean of the photo-by-photo identities"].append(
                    err(torch.cat([r.coeffs.id for r in s.results]).mean(0), truth))
            else:
                errs[name].append(err(s.results[0].coeffs.id, truth))
    print(f"# machine: {machine_summary('cpu')}, torch threads {torch.get_num_threads()}")
    print(f"# {args.sets} sets x {args.set_size} photos ({SIZE} px, yaw ±{args.yaw:g}°), landmarks {args.landmarks}, "
          f"R-Net {args.rnet}, FitConfig{'.fast()' if args.fast else '()'}, joint fit's shared prior weight "
          f"{runs['--same-person, joint fit (default)'].fit.shared_prior_weight:.3g}; "
          f"{missing} photo(s) without a face; "
          f"{time.perf_counter() - t0:.0f} s")
    print("| identity from | shape error mm (mean) | similarity-aligned mm (mean) | s/face |")
    print("|---|---:|---:|---:|")
    for name in names:
        e = np.array(errs[name]) if errs[name] else np.full((1, 2), np.nan)
        sec = f"{np.mean(secs[name]):.2f}" if name in secs else "–"
        print(f"| {name} | {e[:, 0].mean():.3f} | {e[:, 1].mean():.3f} | {sec} |")


if __name__ == "__main__":
    main()
