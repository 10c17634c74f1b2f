#!/usr/bin/env python3
"""What R-Nets regress, block by block, on held-out renders of the default model (a script, not a test).

Renders ``--test`` randomised faces (``face3dkit.regress.synthetic``, the training distribution at
``--size`` px; batches ``--first`` .. of ``--seed``, 100 a batch) and scores each checkpoint's
predictions against the truth, in the space each block acts on: identity and expression by the mean
squared vertex displacement of their error, albedo by the colour change
(``face3dkit.losses.basis_gram``), as R² against predicting the mean coefficients of the ``--first``
batches before them (their coefficients only, not rendered; 0 = no better than that mean); the
identity-only neutral shape error in mm, raw and after the best scale about the centroid (what is not
the face's size, which an image cannot tell from its distance); and the median yaw error.

    python benchmarks/rnet_accuracy.py [--rnet assets/rnet_default.pt RUN/rnet.pt ...] [--test 400]
        [--first 32] [--seed 4242] [--size 112] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

import face3dkit
from face3dkit.losses import basis_gram
from face3dkit.nets import RNet
from face3dkit.regress.synthetic import SyntheticFaces, batch_generator, sample_coefficients, synthetic_batch
from face3dkit.sysinfo import machine_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnet import scale_aligned_error  # noqa: E402

CHUNK = 100


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rnet", nargs="+", default=["default"])
    p.add_argument("--test", type=int, default=400, help="Held-out renders (a multiple of 100).")
    p.add_argument("--first", type=int, default=32, help="Batches before the held-out ones (their mean is R²'s 0).")
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = face3dkit.load_model("default")
    sl = m.layout.slices()
    data = SyntheticFaces(size=args.size)
    mean = torch.cat([sample_coefficients(m, data, CHUNK, batch_generator(args.seed, s)).join()
                      for s in range(args.first)]).mean(0, keepdim=True)
    batches = [synthetic_batch(m, data, CHUNK, args.seed, args.first + s) for s in range(args.test // CHUNK)]
    images = torch.cat([b["image"] for b in batches])
    images = (images * 255).round() / 255  # as 8-bit images
    truth = torch.cat([b["coeffs"] for b in batches])
    grams = {"id": basis_gram(m.id_basis), "exp": basis_gram(m.exp_basis), "tex": basis_gram(m.albedo_basis)}

    def sq(d: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return ((d @ g) * d).sum(1).mean()

    def neutral(ids: torch.Tensor) -> torch.Tensor:
        return m.shape(ids, torch.zeros(ids.shape[0], m.n_exp))

    true_shape = neutral(truth[:, sl["id"]])

    def shape_errors(est: torch.Tensor) -> tuple[float, float]:
        return (float((est - true_shape).norm(dim=-1).mean()) * 100,
                float(scale_aligned_error(est, true_shape).mean()) * 100)

    print(f"# {machine_summary('cpu')}, torch threads {torch.get_num_threads()}; {len(images)} held-out renders at "
          f"{args.size} px (seed {args.seed}, batches {args.first}..{args.first + len(batches) - 1}); mm: the default "
          "model's decimetres x 100")
    print("| R-Net | identity R² | expression R² | albedo R² | shape mm | scale-aligned mm | yaw error° median |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    raw, aligned = shape_errors(m.mean_shape[None].expand_as(true_shape))
    print(f"| mean face | 0 | 0 | 0 | {raw:.3f} | {aligned:.3f} | – |")
    for path in args.rnet:
        net = RNet.load(path).float().eval()
        with torch.no_grad():
            pred = torch.cat([net(images[i:i + CHUNK].permute(0, 3, 1, 2)) for i in range(0, len(images), CHUNK)])
            r2 = {k: 1 - float(sq(pred[:, sl[k]] - truth[:, sl[k]], g) / sq(mean[:, sl[k]] - truth[:, sl[k]], g))
                  for k, g in grams.items()}
            raw, aligned = shape_errors(neutral(pred[:, sl["id"]]))
            yaw = float((pred[:, sl["angles"]][:, 1] - truth[:, sl["angles"]][:, 1]).abs().median()) * 180 / math.pi
        print(f"| {path} | {r2['id']:.3f} | {r2['exp']:.3f} | {r2['tex']:.3f} | {raw:.3f} | {aligned:.3f} | "
              f"{yaw:.2f} |", flush=True)


if __name__ == "__main__":
    main()
