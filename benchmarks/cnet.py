"""Identity aggregation over photo sets: single image vs plain mean vs C-Net (a script, not a test).

Held-out synthetic identity sets (:func:`face3dkit.regress.identity_sets`: one identity and albedo
per set, each image its own expression, pose, light, background, blur and noise) of ``--seed`` at
steps from 10^8 on, which no training run reaches (``train-cnet`` / ``train-rnet`` draw the batch of
step ``t`` of seed ``s`` from ``s * 1000003 + t``), regressed by the R-Net, and for each set:

* mean face: zero identity and albedo for every set (what an estimate must beat to carry any
  information about the person);
* single image: each image's own identity (the error averaged over the images);
* plain mean: the mean of the set's regressions;
* C-Net: the confidence-weighted mean (:func:`face3dkit.nets.aggregate`), with ``--cnet``;
* with ``--fit``: each image fitted alone as ``reconstruct --method rnet+fit`` does (the R-Net's
  pose, identity from the prior mean), the error of each and of the mean of the set's fits; and the
  joint fit of ``reconstruct --same-person --method rnet+fit`` (one identity and albedo fitted to the
  set's images together, :func:`face3dkit.fit.fit` with ``shared=('id', 'tex')``, from the C-Net's,
  else the plain, aggregate). The fits see the renders' own landmarks (projections of the model's
  landmark vertices: ``landmark_convention='3d'``) plus Gaussian noise of ``--lm-noise`` pixels of a
  224 crop, a detector's error.

Columns: identity-coefficient RMSE vs the truth (coefficients are in prior standard deviations:
the truth is drawn N(0, 1) per coefficient, :class:`face3dkit.regress.SyntheticFaces`' default
``id_scale``; predicting the mean face scores about 1), albedo-coefficient RMSE, and the shape error: the
mean Euclidean distance per vertex between the identity-only neutral shape (``model.shape(id, 0)``,
no expression, no pose) of the estimate and that of the truth, in the model's units and in mm when
the model says its units (the default model: decimetres); and that distance after the estimate's
best scale about its centroid (both shapes centred: what of the shape is not its size, which an image
cannot tell from its distance to the camera; the default model's first identity mode, 43 % of its
shape variance, is mostly size).

Usage::

    python benchmarks/cnet.py --rnet runs/rnet/rnet.pt --cnet runs/cnet/cnet.pt [--sets 50 --set-size 5]
        [--size PX] [--seed 2026] [--batch-sets 10] [--model default] [--threads 2] [--device cpu]
        [--fit [--fit-config default|fast] [--lm-noise 1.5] [--map-prior]]

``--size`` defaults to the crop size of the C-Net's (else the R-Net's) training run, else 224. Without
``--cnet`` only the first two rows are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

import face3dkit
from face3dkit.fit import FitConfig, fit
from face3dkit.model import Coefficients
from face3dkit.nets import CNet, RNet, aggregate
from face3dkit.regress import SyntheticFaces, identity_sets
from face3dkit.sysinfo import machine_summary

#: First step of the held-out sets (of ``--seed``).
HELD_OUT_STEP = 10**8
#: Millimetres per model unit, by the model's ``meta['units']``.
MM_PER_UNIT = {"millimetres": 1.0, "millimeters": 1.0, "mm": 1.0, "centimetres": 10.0, "centimeters": 10.0,
               "cm": 10.0, "decimetres": 100.0, "decimeters": 100.0, "dm": 100.0, "metres": 1000.0,
               "meters": 1000.0, "m": 1000.0}


def scale_aligned_error(est: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(N,) mean vertex distance of (N, V, 3) shapes to (N, V, 3) truths after each estimate's best
    scale, both centred on their centroids (what of a shape is not its size)."""
    e, t = est - est.mean(1, keepdim=True), true - true.mean(1, keepdim=True)
    k = (e * t).sum((1, 2)) / (e * e).sum((1, 2))
    return (k[:, None, None] * e - t).norm(dim=-1).mean(1)


def _trained_size(path: str) -> int | None:
    """The crop size of the training run recorded in a face3dkit checkpoint (None if not recorded)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return int(raw["config"]["data"]["size"])
    except Exception:  # not recorded (a Deep3DFaceRecon checkpoint, an older file)
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rnet", required=True, help="R-Net checkpoint (train-rnet's rnet.pt).")
    p.add_argument("--cnet", default=None, help="C-Net checkpoint (train-cnet's cnet.pt); optional.")
    p.add_argument("--sets", type=int, default=50, help="Identity sets.")
    p.add_argument("--set-size", type=int, default=5, help="Images per set.")
    p.add_argument("--size", type=int, default=None, help="Crop side, pixels (default: the training run's).")
    p.add_argument("--seed", type=int, default=2026, help="Seed of the held-out sets.")
    p.add_argument("--batch-sets", type=int, default=10, help="Sets rendered and regressed together.")
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fit", action="store_true", help="Add the per-image and the joint fits (rnet+fit).")
    p.add_argument("--fit-config", choices=["default", "fast"], default="default",
                   help="FitConfig() or FitConfig.fast() for --fit.")
    p.add_argument("--lm-noise", type=float, default=1.5, help="Landmark noise of --fit, pixels of a 224 crop.")
    p.add_argument("--map-prior", action="store_true",
                   help="The joint fit's shared prior at 1 / set size (FitConfig.shared_prior_weight; default 1).")
    args = p.parse_args()
    if min(args.sets, args.set_size, args.batch_sets) < 1:
        p.error("--sets, --set-size and --batch-sets must be >= 1")
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    model = face3dkit.load_model(args.model, device=dev)
    lay = model.layout
    rnet = RNet.load(args.rnet)
    if rnet.layout != lay:
        raise SystemExit(f"{args.rnet}: an R-Net for {rnet.layout.total} coefficients does not fit model "
                         f"{args.model!r} ({lay.total})")
    rnet = rnet.to(dev).eval()
    cnet = None
    if args.cnet:
        cnet = CNet.load(args.cnet)
        if (cnet.feature_channels, cnet.n_id, cnet.n_tex) != (rnet.feature_channels, lay.n_id, lay.n_tex):
            raise SystemExit(f"{args.cnet}: a C-Net for {cnet.feature_channels} channels, {cnet.n_id} / {cnet.n_tex} "
                             f"coefficients does not fit the R-Net ({rnet.feature_channels}) and model "
                             f"({lay.n_id} / {lay.n_tex})")
        cnet = cnet.to(dev).eval()
    size = args.size or (args.cnet and _trained_size(args.cnet)) or _trained_size(args.rnet) or 224
    data = SyntheticFaces(size=size)
    units = str(model.meta.get("units") or "")
    mm = MM_PER_UNIT.get(units.lower())
    zero_exp = torch.zeros(1, lay.n_exp, device=dev)

    def neutral(ids: torch.Tensor) -> torch.Tensor:
        return model.shape(ids, zero_exp.expand(ids.shape[0], -1))

    # Per method: sums of per-vector identity RMSE, albedo RMSE, mean vertex distance; and counts.
    methods = ["mean face (zero identity and albedo: the floor)", "single image", "plain mean"] + \
        (["C-Net"] if cnet is not None else [])
    agg_name = "C-Net" if cnet is not None else "plain mean"
    if args.fit:
        methods += ["single image, fitted (rnet+fit)", "mean of the fits", f"joint fit from the {agg_name}"]
        fit_cfg = dataclasses.replace(FitConfig.fast() if args.fit_config == "fast" else FitConfig(),
                                      landmark_convention="3d")
        joint_cfg = dataclasses.replace(fit_cfg, shared_prior_weight=1 / args.set_size if args.map_prior else 1.0)
    sums = {k: [0.0, 0.0, 0.0, 0.0, 0] for k in methods}

    def add(name: str, est_id: torch.Tensor, est_tex: torch.Tensor, true_id: torch.Tensor, true_tex: torch.Tensor,
            true_shape: torch.Tensor) -> None:
        s = sums[name]
        est_shape = neutral(est_id)
        s[0] += float((est_id - true_id).pow(2).mean(1).sqrt().sum())
        s[1] += float((est_tex - true_tex).pow(2).mean(1).sqrt().sum())
        s[2] += float((est_shape - true_shape).norm(dim=-1).mean(1).sum())
        s[3] += float(scale_aligned_error(est_shape, true_shape).sum())
        s[4] += est_id.shape[0]

    t0 = time.perf_counter()
    done, step = 0, HELD_OUT_STEP
    with torch.no_grad():
        while done < args.sets:
            n = min(args.batch_sets, args.sets - done)
            b = identity_sets(model, data, n, args.set_size, args.seed, step)
            k = args.set_size
            imgs = b["image"].reshape(n * k, size, size, 3).to(dev).permute(0, 3, 1, 2)
            pred, feats = rnet.forward_with_features(imgs)
            c = Coefficients.split(pred, lay)
            true = Coefficients.split(b["coeffs"][:, 0].to(dev), lay)  # (n, total): one truth per set
            true_shape = neutral(true.id)
            add(methods[0], torch.zeros_like(true.id), torch.zeros_like(true.tex), true.id, true.tex, true_shape)
            add("single image", c.id, c.tex, true.id.repeat_interleave(k, 0), true.tex.repeat_interleave(k, 0),
                true_shape.repeat_interleave(k, 0))
            ids, texs = c.id.reshape(n, k, -1), c.tex.reshape(n, k, -1)
            add("plain mean", ids.mean(1), texs.mean(1), true.id, true.tex, true_shape)
            agg_id, agg_tex = ids.mean(1), texs.mean(1)
            if cnet is not None:
                ci, ct = cnet(feats)
                agg_id, agg_tex = aggregate(ids, ci.reshape(n, k, -1)), aggregate(texs, ct.reshape(n, k, -1))
                add("C-Net", agg_id, agg_tex, true.id, true.tex, true_shape)
            if args.fit:
                g = torch.Generator().manual_seed(args.seed + step)
                lm = b["landmarks"].reshape(n * k, -1, 2)
                lm = (lm + torch.randn(lm.shape, generator=g) * args.lm_noise * size / 224).to(dev)
                crops = b["image"].reshape(n * k, size, size, 3).to(dev)
                start = c.clone()  # rnet+fit's start: the regression's pose, the prior mean's shape
                start.id, start.exp = torch.zeros_like(c.id), torch.zeros_like(c.exp)
                with torch.enable_grad():
                    single = fit(model, crops, lm, fit_cfg, init=start).coeffs
                add("single image, fitted (rnet+fit)", single.id, single.tex, true.id.repeat_interleave(k, 0),
                    true.tex.repeat_interleave(k, 0), true_shape.repeat_interleave(k, 0))
                add("mean of the fits", single.id.reshape(n, k, -1).mean(1), single.tex.reshape(n, k, -1).mean(1),
                    true.id, true.tex, true_shape)
                start.id, start.tex = agg_id.repeat_interleave(k, 0), agg_tex.repeat_interleave(k, 0)
                for j in range(n):  # one joint fit per set
                    rows = slice(j * k, (j + 1) * k)
                    with torch.enable_grad():
                        joint = fit(model, crops[rows], lm[rows], joint_cfg, init=start[rows], shared=("id", "tex"))
                    add(f"joint fit from the {agg_name}", joint.coeffs.id[:1], joint.coeffs.tex[:1], true.id[j:j + 1],
                        true.tex[j:j + 1], true_shape[j:j + 1])
            done += n
            step += 1
    secs = time.perf_counter() - t0

    print(f"# machine: {machine_summary(args.device)}, torch threads {torch.get_num_threads()}")
    print(f"# R-Net {args.rnet} ({rnet.backbone_name}), C-Net {args.cnet or '-'}; model {args.model!r} "
          f"({lay.n_id} identity, {lay.n_tex} albedo coefficients)")
    print(f"# {args.sets} held-out identity sets x {args.set_size} images at {size} px (seed {args.seed}, steps "
          f"{HELD_OUT_STEP}..{step - 1}), {secs:.1f} s")
    if args.fit:
        print(f"# fits: FitConfig{'.fast()' if args.fit_config == 'fast' else '()'} with landmark_convention='3d', "
              f"the renders' landmarks + N(0, {args.lm_noise:g} px of a 224 crop); joint fit's shared prior weight "
              f"{joint_cfg.shared_prior_weight:.3g}")
    u = "mm" if mm else (units or "model units")
    f = mm or 1.0
    print(f"| estimate | identity RMSE | albedo RMSE | shape error {u} | scale-aligned shape error {u} |")
    print("|---|---:|---:|---:|---:|")
    for name in methods:
        s = sums[name]
        print(f"| {name} | {s[0] / s[4]:.4f} | {s[1] / s[4]:.4f} | {s[2] / s[4] * f:.3f} | {s[3] / s[4] * f:.3f} |")


if __name__ == "__main__":
    main()
