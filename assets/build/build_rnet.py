#!/usr/bin/env python3
"""Build ``assets/rnet_default.pt``, the R-Net shipped for the default model, from a finished
``face3dkit train-rnet`` run folder: its ``rnet.pt`` weights stored as float16 (integer buffers
kept), with the run's configuration, step count, training time, the first and last 100-step means
of every loss term, the default model's SHA-256 and the source commit as provenance.

    python assets/build/build_rnet.py --run runs/rnet-ship [--out assets/rnet_default.pt]

The training data are renders of the default model only (``face3dkit.regress.synthetic``), so the
weights derive from the model's MIT / CC0 sources alone (assets/LICENSE-default-model.txt).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import subprocess
from pathlib import Path

import torch

from face3dkit.io.atomic import atomic_open
from face3dkit.nets import RNet

ROOT = Path(__file__).resolve().parents[2]


def _means(rows: list[dict[str, str]]) -> dict[str, float]:
    keys = [k for k in rows[0] if k != "step"]
    return {k: round(sum(float(r[k]) for r in rows) / len(rows), 5) for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a finished train-rnet run folder (rnet.pt, metrics.csv)")
    p.add_argument("--out", default=str(ROOT / "assets" / "rnet_default.pt"))
    args = p.parse_args()
    run = Path(args.run)
    raw = torch.load(run / "rnet.pt", map_location="cpu", weights_only=True)
    net = RNet.load(run / "rnet.pt")  # checks it loads
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    model_file = ROOT / "assets" / "default_model.npz"
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
    out = {k: raw[k] for k in ("format", "backbone", "input_size", "layout")}
    out.update(state_dict=half, weights_dtype="float16", steps=raw.get("steps"), config=raw.get("config"),
               trained_seconds=raw.get("trained_seconds"), world_size=raw.get("world_size", 1),
               loss_first_100=_means(rows[:100]), loss_last_100=_means(rows[-100:]),
               default_model_sha256=hashlib.sha256(model_file.read_bytes()).hexdigest(), source_commit=commit)
    with atomic_open(args.out) as f:
        torch.save(out, f)
    back = RNet.load(args.out)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        err = (back.eval()(x) - net.eval()(x)).abs().max().item()
    size = Path(args.out).stat().st_size / 2**20
    print(f"wrote {args.out}: {out['backbone']} input {out['input_size']} px, {out['steps']} steps, {size:.1f} MiB; "
          f"float16 vs float32 output max |diff| {err:.2e}")


if __name__ == "__main__":
    main()
