"""Figure of MGLN's part crops: faces with their eyes / nose / mouth boxes and the resampled crops.

Rows: the two example photos of ``assets/examples`` (68 landmarks from face3dkit's dlib detector),
then the onset, middle and peak frames of one synthetic sequence (``fer synth --sequence 3``,
landmarks of the renders). Each face is cut to a square around its landmarks (as face crops of
FER sets are), the boxes come from :func:`fer.models.mgln.part_boxes` with MGLN's default margins
and the crops from :func:`fer.models.mgln.crop_boxes` (the same batched ``grid_sample`` the model
applies to its feature maps), enlarged for display.

Usage::

    python docs/make_mgln_figure.py                       # -> docs/img/mgln_parts.png
    python docs/make_mgln_figure.py --ck48 /work/shared/data/ck48 --out /tmp/mgln_parts_ck48.png

``--ck48`` draws peak frames of CK+48 sequences instead (landmarks from the detector on the
48 x 48 crops). CK+ is for research use only: look at that version locally, never commit it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from face3dkit.io import load_image  # noqa: E402
from fer.models.mgln import PARTS, MGLNConfig, crop_boxes, part_boxes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FACE = 144  # displayed face side
COLOURS = {"eyes": (230, 60, 60), "nose": (60, 200, 80), "mouth": (60, 120, 240)}
SCALE = 6  # displayed pixels per crop cell


def square_crop(image: np.ndarray, points: np.ndarray, side: int, grow: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """A square around the landmarks (``grow`` x their extent), resized to ``side``; landmarks in [0, 1]."""
    lo, hi = points.min(0), points.max(0)
    c, half = (lo + hi) / 2, (hi - lo).max() * grow / 2
    x0, y0 = c - half
    m = int(np.ceil(2 * half))  # edge padding: the square may leave the photo
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="edge")
    box = (float(x0 + m), float(y0 + m), float(x0 + m + 2 * half), float(y0 + m + 2 * half))
    crop = np.array(Image.fromarray(padded).resize((side, side), Image.BILINEAR, box=box))
    return crop, ((points - [x0, y0]) / (2 * half)).astype(np.float32)


def detect(image: np.ndarray) -> np.ndarray | None:
    """68 landmarks of the largest face (face3dkit's dlib detector), or None."""
    from fer.conditioning.providers import load_detector

    faces = load_detector().detect(image)
    return None if not faces else np.asarray(faces[0].points, np.float64)


def photo_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        img = load_image(ROOT / "assets" / "examples" / name)
        pts = detect(img)
        if pts is None:
            print(f"{name}: no face found, skipped", file=sys.stderr)
            continue
        crop, lm = square_crop(img, pts, FACE)
        out.append((name, crop, lm))
    return out


def synthetic_sequence() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Onset, middle and peak of a near-frontal synthetic face with a strong expression."""
    from fer.data import SynthConfig, SyntheticDataset, generate_synthetic
    from fer.labels import EXPRESSIONS

    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(n=14, size=160, seed=3, sequence=3, yaw_max=20.0, intensity=(0.9, 1.0), test_fraction=0)
        generate_synthetic(tmp, cfg, progress=False)
        ds = SyntheticDataset(tmp, frames="all")
        pick = next(s for s in range(14) if EXPRESSIONS[int(ds.labels[3 * s])] == "surprise")
        out = []
        for t, what in enumerate(("onset", "middle", "peak")):
            i = int(np.flatnonzero((ds.sequence_ids == pick) & (ds.frame_numbers == t))[0])
            crop, lm = square_crop(ds.stored_image(i), ds.known_landmarks[i], FACE)
            out.append((f"synthetic {EXPRESSIONS[int(ds.labels[i])]} {what}", crop, lm))
        return out


def ck48_faces(root: Path, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Peak frames of ``n`` CK+48 test sequences of different classes (local viewing only)."""
    from fer.data import SequenceDataset, open_sequence_frames

    seqs = SequenceDataset(open_sequence_frames(root, split="test"), 3)
    out = []
    for cls in np.unique(seqs.labels)[:n]:
        i = int(seqs.sequences[np.flatnonzero(seqs.labels == cls)[0], -1])
        img = seqs.frames.stored_image(i)
        pts = detect(img)
        if pts is None:
            continue
        big = np.array(Image.fromarray(img).resize((FACE, FACE), Image.BILINEAR))
        out.append((Path(seqs.frames.sources[i]).name, big, (pts / img.shape[1]).astype(np.float32)))
    return out


def row(face: np.ndarray, lm: np.ndarray, cfg: MGLNConfig) -> Image.Image:
    """Face with landmarks and part boxes, then the three crops."""
    boxes = part_boxes(torch.from_numpy(lm)[None], cfg.part_margin, cfg.part_min_size)[0]
    x = torch.from_numpy(face).permute(2, 0, 1).float()[None] / 255
    crops = []
    for p in range(len(PARTS)):
        h, w = cfg.part_sizes[p]
        c = crop_boxes(x, boxes[p:p + 1], (h * SCALE, w * SCALE))[0]
        crops.append((c.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    pad = 8
    width = FACE + sum(c.shape[1] for c in crops) + pad * (len(crops) + 2)
    canvas = Image.new("RGB", (width, FACE + 2 * pad), (255, 255, 255))
    canvas.paste(Image.fromarray(face), (pad, pad))
    draw = ImageDraw.Draw(canvas)
    for px, py in lm * FACE:
        draw.ellipse([pad + px - 1, pad + py - 1, pad + px + 1, pad + py + 1], fill=(255, 230, 0))
    for p, name in enumerate(PARTS):
        x0, y0, x1, y1 = (boxes[p].numpy() * FACE + pad).tolist()
        draw.rectangle([x0, y0, x1, y1], outline=COLOURS[name], width=2)
    left = FACE + 2 * pad
    for name, c in zip(PARTS, crops, strict=True):
        top = pad + (FACE - c.shape[0]) // 2
        canvas.paste(Image.fromarray(c), (left, top))
        draw.rectangle([left - 2, top - 2, left + c.shape[1] + 1, top + c.shape[0] + 1], outline=COLOURS[name],
                       width=2)
        left += c.shape[1] + pad
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "mgln_parts.png"))
    ap.add_argument("--ck48", default=None, help="CK+48 root: draw its frames instead (never commit that figure)")
    ap.add_argument("--n", type=int, default=4, help="CK+48 faces")
    args = ap.parse_args()
    cfg = MGLNConfig()
    faces = ck48_faces(Path(args.ck48), args.n) if args.ck48 else photo_faces() + synthetic_sequence()
    rows = [row(face, lm, cfg) for _, face, lm in faces]
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"{args.out}: {len(rows)} faces ({', '.join(n for n, _, _ in faces)})")


if __name__ == "__main__":
    main()
