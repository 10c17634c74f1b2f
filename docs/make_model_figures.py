#!/usr/bin/env python3
"""Render the pictures of an embedded model shown in the README (docs/img/<model>_*.png).

    python docs/make_model_figures.py [--model default|makehuman] [--out docs/img]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

import face3dkit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.model import Coefficients, MorphableModel
from face3dkit.render import interpolate, rasterize

FRONT_LIGHT = torch.zeros(27)
FRONT_LIGHT[[2, 11, 20]] = 0.25  # a little light from the camera side (SH band 1, z)
FRONT_LIGHT[[1, 10, 19]] = -0.12  # and from above


def render(model: MorphableModel, c: Coefficients, size: int, bg: float = 1.0) -> np.ndarray:
    """(B, size, size, 3) uint8 shaded renders of coefficients ``c``."""
    cam = PerspectiveCamera.for_image_size(size)
    out = model(c, camera=cam)
    frags = rasterize(cam.to_screen(out.verts_world), model.faces, size)
    col = interpolate(out.color, frags, model.faces)
    cov = (frags.pix_to_face >= 0)[..., None]
    img = torch.where(cov, col, torch.full_like(col, bg)).clamp(0, 1)
    return (img.numpy() * 255).round().astype(np.uint8)


def grid(images: list[np.ndarray], cols: int, labels: list[str] | None = None) -> Image.Image:
    h, w, _ = images[0].shape
    rows = math.ceil(len(images) / cols)
    lab_h = 14 if labels else 0
    canvas = Image.new("RGB", (cols * w, rows * (h + lab_h)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(Image.fromarray(im), (c * w, r * (h + lab_h)))
        if labels:
            draw.text((c * w + 3, r * (h + lab_h) + h), labels[i], fill=(0, 0, 0))
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="default")
    p.add_argument("--out", default="docs/img")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    m = face3dkit.load_model(args.model)
    L = m.layout

    def coeffs(n: int) -> Coefficients:
        c = Coefficients.zeros(L, n)
        c.gamma[:] = FRONT_LIGHT
        return c

    # 1. Mean face: frontal, 3/4 and profile, with landmarks and the skin mask.
    size = 320
    c = coeffs(3)
    c.angles[:, 1] = torch.tensor([0.0, 35.0, 70.0]) * math.pi / 180
    views = list(render(m, c, size))
    cam = PerspectiveCamera.for_image_size(size)
    lm = m(c, camera=cam).landmarks2d
    c1 = coeffs(1)
    o = m(c1, camera=cam)
    frags = rasterize(cam.to_screen(o.verts_world), m.faces, size)
    skin = interpolate(m.skin_mask.float()[None, :, None].expand(1, -1, 3).contiguous(), frags, m.faces)[0]
    base = torch.as_tensor(views[0]).float() / 255
    tint = torch.tensor([0.2, 0.75, 0.3])
    over = torch.where(skin[..., :1] > 0.5, 0.55 * base + 0.45 * tint, base)
    over_img = Image.fromarray((over.numpy() * 255).astype(np.uint8))
    d = ImageDraw.Draw(over_img)
    for i, (x, y) in enumerate(lm[0].numpy()):
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(220, 20, 20))
        if i % 4 == 0:
            d.text((x + 3, y - 5), str(i), fill=(0, 0, 120))
    panels = [over_img] + [Image.fromarray(v) for v in views]
    mean_img = Image.new("RGB", (size * 4, size), "white")
    for i, pnl in enumerate(panels):
        mean_img.paste(pnl, (i * size, 0))
    pre = args.model if args.model in ("default", "makehuman") else "model"
    mean_img.save(out / f"{pre}_mean_face.png")

    # 2. Identity samples (id ~ N(0, 1), albedo ~ N(0, 1)), slight yaw.
    g = torch.Generator().manual_seed(3)
    c = coeffs(8)
    c.id = torch.randn(8, L.n_id, generator=g)
    c.tex = torch.randn(8, L.n_tex, generator=g)
    c.angles[:, 1] = torch.linspace(-25, 25, 8) * math.pi / 180
    grid(list(render(m, c, 224)), 4).save(out / f"{pre}_identity_samples.png")

    # 3. Every expression unit at weight 1 (mean identity), frontal.
    names = m.exp_names or [f"exp{i}" for i in range(L.n_exp)]
    c = coeffs(len(names) + 1)
    c.exp[1:] = torch.eye(len(names))
    c.angles[:, 1] = 12 * math.pi / 180
    imgs = list(render(m, c, 176))
    grid(imgs, 7, ["neutral"] + names).save(out / f"{pre}_expression_units.png")
    written = [f"{pre}_mean_face.png", f"{pre}_identity_samples.png", f"{pre}_expression_units.png"]

    # 4. Albedo samples (mean identity, frontal): skin PCA ~ N(0, 1) and, where the model has
    #    them, the brow components at -2, 0, +2 (darkness) and thickness.
    if m.tex_names and "brow_darkness" in m.tex_names:
        g = torch.Generator().manual_seed(5)
        c = coeffs(8)
        c.tex = torch.randn(8, L.n_tex, generator=g)
        kd, kt = m.tex_names.index("brow_darkness"), m.tex_names.index("brow_thickness")
        c.tex[:, kd] = torch.tensor([-2.0, 0, 2, -1, 1, 2, 0, -2])
        c.tex[:, kt] = torch.tensor([0.0, 2, -2, 1, -1, 2, 0, 2])
        labels = [f"brow dark {float(a):+.0f} thick {float(b):+.0f}" for a, b in zip(c.tex[:, kd], c.tex[:, kt],
                                                                                    strict=True)]
        grid(list(render(m, c, 224)), 4, labels).save(out / f"{pre}_albedo_samples.png")
        written.append(f"{pre}_albedo_samples.png")
    print(f"wrote {out}/: " + ", ".join(written))


if __name__ == "__main__":
    main()
