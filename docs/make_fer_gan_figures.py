#!/usr/bin/env python3
"""Pictures of the FER GANs: a TDGAN expression-transfer grid and a DR-GAN frontalisation grid.

    python docs/make_fer_gan_figures.py --tdgan-run RUN --drgan-run RUN [--out docs/img]

Each run is a ``fer train`` folder (``--model tdgan`` / ``--model drgan``); its held-out split
(``run.json``'s data) supplies the images. Without a run, one is trained briefly first
(``--train-epochs``, small profile, CPU): TDGAN on ``--tdgan-data`` (default the CK+48 folder
when present, else a synthetic set), DR-GAN on a synthetic set (yaw in ±60°, pose from the 3DMM
fit) with an L1 reconstruction term (``--drgan-w-rec``, not in the paper: with the adversarial
terms alone a run of a few CPU epochs renders noise), into ``--work``.

* ``tdgan_transfer.png``: top row the expression images (one per class), left column the face
  images (different people); cell (i, j) is the expression of column j put on the face of row i.
* ``drgan_frontalize.png``: rows are held-out faces ordered by yaw; columns the input, then the
  face re-rendered at yaw -45 ... +45 (the 0° column is the frontalisation).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from fer.data import SynthConfig, collate_samples  # noqa: E402
from fer.labels import EXPRESSIONS  # noqa: E402

CK48 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ck48"
YAWS = (-45, -30, -15, 0, 15, 30, 45)


def _train(kind: str, data: str, geometry: str, out: Path, epochs: int, **overrides: object) -> Path:
    """Train a small-profile run of ``kind`` into ``out`` (as ``fer train`` does), with config overrides."""
    from fer.evaluate import evaluate_model, write_report
    from fer.models import build_model
    from fer.train import TrainConfig, Trainer, prepare_data, seed_everything, training_data, write_run_info

    size = 64
    train, val, info = prepare_data(data, size, geometry, progress=False)
    train, extra = training_data(kind, train, seed=0)
    seed_everything(0)
    model = build_model(kind, "small", image_size=size, use_geometry=geometry != "none", **extra, **overrides)
    cfg = TrainConfig(epochs=epochs, device="cpu", progress=False)
    write_run_info(out, model, "small", size, info, cfg)
    trainer = Trainer(model, train, out, cfg, val_set=val)
    trainer.fit()
    if val is not None:
        m = evaluate_model(trainer.model, val, 128)
        write_report(m, out / "eval" / "val")
        print(f"{kind} trained {epochs} epochs on {data}: held-out accuracy {100 * m['accuracy']:.1f}%")
    return out


def save_png(image: np.ndarray, path: Path) -> Path:
    """Write an (H, W, 3) uint8 picture as a 256-colour palette PNG (a third of the RGB size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).quantize(256).save(path, optimize=True)
    return path


def _to_uint8(t: torch.Tensor, scale: int) -> np.ndarray:
    """(3, s, s) in [0, 1] -> (s * scale, s * scale, 3) uint8 (nearest upscaling)."""
    a = (t.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    return np.repeat(np.repeat(a, scale, 0), scale, 1)


def _canvas(cells: dict[tuple[int, int], np.ndarray], rows: int, cols: int, side: int, col_labels: list[str],
            row_labels: list[str] | None = None, gap: int = 2) -> np.ndarray:
    top, left = 14, (40 if row_labels else 0)
    img = Image.new("RGB", (left + cols * (side + gap), top + rows * (side + gap)), "white")
    draw = ImageDraw.Draw(img)
    for (r, c), a in cells.items():
        img.paste(Image.fromarray(a), (left + c * (side + gap), top + r * (side + gap)))
    for c, name in enumerate(col_labels):
        draw.text((left + c * (side + gap) + 2, 1), name, fill=(0, 0, 0))
    for r, name in enumerate(row_labels or []):
        draw.text((2, top + r * (side + gap) + side // 2 - 5), name, fill=(0, 0, 0))
    return np.asarray(img)


def _held_out(info: dict) -> object:
    from fer.train.run import open_for_eval

    return open_for_eval(info["data"]["path"], info)


def tdgan_figure(run: Path, out: Path, scale: int) -> Path:
    from fer.data import attach_subject_identities
    from fer.train.run import load_run

    model, info = load_run(run)
    ds = _held_out(info)
    attach_subject_identities(ds)
    # One expression image per class present, and faces of distinct people (the first image of each).
    classes = [k for k in range(len(EXPRESSIONS)) if (ds.labels == k).any()]
    expr_idx = [int(np.flatnonzero(ds.labels == k)[len(np.flatnonzero(ds.labels == k)) // 2]) for k in classes]
    people = [i for i in dict.fromkeys(ds.identities.tolist()) if i >= 0][:5] or [-1]
    face_idx = [int(np.flatnonzero(ds.identities == p)[0]) for p in people]
    if people == [-1]:
        face_idx = list(range(0, len(ds), max(1, len(ds) // 5)))[:5]
    ex = collate_samples([ds[i] for i in expr_idx])["image"]
    fa = collate_samples([ds[i] for i in face_idx])["image"]
    side = ex.shape[-1] * scale
    cells = {(0, 0): np.full((side, side, 3), 255, np.uint8)}
    for j in range(len(expr_idx)):
        cells[0, j + 1] = _to_uint8(ex[j], scale)
    noise = torch.zeros(len(expr_idx), model.config.noise_dim)
    for i in range(len(face_idx)):
        cells[i + 1, 0] = _to_uint8(fa[i], scale)
        gen = model.transfer(ex, fa[i:i + 1].expand_as(ex), noise)
        for j in range(len(expr_idx)):
            cells[i + 1, j + 1] = _to_uint8(gen[j], scale)
    labels = ["face \\ expr"] + [EXPRESSIONS[k][:8] for k in classes]
    return save_png(_canvas(cells, len(face_idx) + 1, len(expr_idx) + 1, side, labels), out)


def drgan_figure(run: Path, out: Path, scale: int, rows: int = 7) -> Path:
    from fer.evaluate import sample_yaw
    from fer.train.run import load_run

    model, info = load_run(run)
    ds = _held_out(info)
    yaw = sample_yaw(ds)
    if yaw is None:
        yaw = np.zeros(len(ds))
    # Rows: faces nearest to evenly spaced yaws over the held-out range.
    finite = np.flatnonzero(np.isfinite(yaw))
    targets = np.linspace(np.nanmin(yaw[finite]), np.nanmax(yaw[finite]), rows)
    pick = list(dict.fromkeys(int(finite[np.argmin(np.abs(yaw[finite] - t))]) for t in targets))
    x = collate_samples([ds[i] for i in pick])["image"]
    side = x.shape[-1] * scale
    cells = {}
    for r in range(len(pick)):
        cells[r, 0] = _to_uint8(x[r], scale)
    for c, y in enumerate(YAWS):
        gen = model.rotate(x, float(y))
        for r in range(len(pick)):
            cells[r, c + 1] = _to_uint8(gen[r], scale)
    labels = ["input"] + [f"{y:+d}°" if y else "0° (front)" for y in YAWS]
    row_labels = [f"{yaw[i]:+.0f}°" for i in pick]
    return save_png(_canvas(cells, len(pick), len(YAWS) + 1, side, labels, row_labels), out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tdgan-run", default=None, help="fer train --model tdgan run folder")
    p.add_argument("--drgan-run", default=None, help="fer train --model drgan run folder")
    p.add_argument("--tdgan-data", default=None, help="data of a TDGAN run trained here [default: CK+48 if present]")
    p.add_argument("--train-epochs", type=int, default=4, help="epochs of runs trained here")
    p.add_argument("--synth-n", type=int, default=1400, help="synthetic images for runs trained here")
    p.add_argument("--drgan-w-rec", type=float, default=1.0,
                   help="L1 reconstruction weight of a DR-GAN trained here (0 = the paper's losses only)")
    p.add_argument("--work", default="runs/fer-gan-figures", help="folder of runs trained here")
    p.add_argument("--scale", type=int, default=1, help="pixel upscaling of the pictures")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "img"))
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    out = Path(args.out)
    work = Path(args.work)
    synth = None
    if args.tdgan_run is None or args.drgan_run is None:
        from fer.train import synthetic_set

        synth = str(synthetic_set(SynthConfig(n=args.synth_n, size=128, seed=0)))
    tdgan_run = Path(args.tdgan_run) if args.tdgan_run else _train(
        "tdgan", args.tdgan_data or (str(CK48) if CK48.is_dir() else synth), "none", work / "tdgan", args.train_epochs)
    drgan_run = Path(args.drgan_run) if args.drgan_run else _train(
        "drgan", synth, "3dmm", work / "drgan", args.train_epochs, w_rec=args.drgan_w_rec)
    print(tdgan_figure(tdgan_run, out / "tdgan_transfer.png", args.scale))
    print(drgan_figure(drgan_run, out / "drgan_frontalize.png", args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
