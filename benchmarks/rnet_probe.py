#!/usr/bin/env python3
"""What an R-Net's backbone knows: a linear probe of its pooled features.

Renders ``--train + --test`` randomised faces of the default model (``face3dkit.regress.synthetic``,
the training distribution), takes the R-Net backbone's pooled features, fits a ridge regression
from them to the true coefficients on the first ``--train`` and prints, per coefficient block, the
held-out R² (1 - residual / variance; 0 = no better than the mean, < 0 worse). A block whose
probe R² is ~0 is not in the features at all: its head cannot learn it, only a longer-trained
backbone can.

    python benchmarks/rnet_probe.py [--rnet assets/rnet_default.pt] [--train 2000] [--test 400] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import face3dkit
from face3dkit.nets import RNet
from face3dkit.regress.synthetic import SyntheticFaces, synthetic_batch
from face3dkit.sysinfo import machine_summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rnet", default="default")
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--size", type=int, default=112, help="render side (the shipped R-Net's training size)")
    p.add_argument("--ridge", type=float, nargs="*", default=[1.0, 100.0])
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = face3dkit.load_model("default")
    net = RNet.load(args.rnet).float().eval()
    n, chunk = args.train + args.test, 100
    feats, truth = [], []
    t0 = time.perf_counter()
    for step in range((n + chunk - 1) // chunk):
        b = synthetic_batch(model, SyntheticFaces(size=args.size), chunk, args.seed, step)
        with torch.no_grad():
            feats.append(net.pooled_features(b["image"].permute(0, 3, 1, 2)).numpy())
        truth.append(b["coeffs"].numpy())
    f, t = np.concatenate(feats)[:n].astype(np.float64), np.concatenate(truth)[:n].astype(np.float64)
    print(f"# {args.rnet}: {f.shape[1]} pooled features of {n} renders ({args.size} px) in "
          f"{time.perf_counter() - t0:.0f} s; {machine_summary('cpu')}")
    x = np.c_[f, np.ones(n)]
    tr, te = slice(0, args.train), slice(args.train, n)
    names = ["identity", "expression", "albedo", "angles", "SH light", "translation"]
    print("| ridge | " + " | ".join(f"{k} R²" for k in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for lam in args.ridge:
        w = np.linalg.solve(x[tr].T @ x[tr] + lam * np.eye(x.shape[1]), x[tr].T @ t[tr])
        pred, o, cells = x[te] @ w, 0, []
        for k in model.layout.sizes:
            res = ((pred[:, o:o + k] - t[te, o:o + k]) ** 2).sum(0)
            var = ((t[te, o:o + k] - t[tr, o:o + k].mean(0)) ** 2).sum(0)
            cells.append(f"{float(np.mean(1 - res / var)):.3f}")
            o += k
        print(f"| {lam:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
