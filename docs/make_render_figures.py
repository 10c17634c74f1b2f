#!/usr/bin/env python3
"""Render the default model (shaded, with its albedo) at 224² and 512² with MeshRenderer.

    python docs/make_render_figures.py [--out docs/img]

Each picture: image | coverage mask | front-face region mask | antialiased silhouette close-up.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import face3dkit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.render import MeshRenderer
from face3dkit.viz import PREVIEW_LIGHT


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="docs/img")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    m = face3dkit.load_model("default")
    c = m.sample(1, generator=torch.Generator().manual_seed(7), id_scale=0.8, tex_scale=0.4)
    c.angles[:, 1] = math.radians(-28.0)
    c.angles[:, 0] = math.radians(6.0)
    c.gamma[:] = PREVIEW_LIGHT
    c.gamma[:, [3, 12, 21]] = 0.1  # some light from the image left
    out = m(c)
    for size in (224, 512):
        cam = PerspectiveCamera.for_image_size(size)
        panels = []
        for aa in (False, True):
            r = MeshRenderer(cam, m.faces, antialias=aa, region_faces=m.front_faces)
            res = r(out.verts_world, out.color, background=torch.ones(3))
            panels.append(res)
        img = (panels[0].image[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
        mask = np.repeat((panels[0].mask[0].numpy() * 255).astype(np.uint8), 3, -1)
        region = np.repeat((panels[0].region_mask[0].numpy() * 255).astype(np.uint8), 3, -1)
        # 4x close-up of the jaw silhouette, without and with antialiasing.
        s = size // 8
        y0 = int(size * 0.55)
        cols = np.nonzero(panels[0].mask[0, y0 + s // 2, :, 0].numpy() > 0)[0]
        x0 = max(int(cols.min()) - s // 2, 0)
        crops = []
        for res in panels:
            a = (res.image[0].clamp(0, 1).numpy() * 255).astype(np.uint8)[y0:y0 + s, x0:x0 + s]
            crops.append(np.asarray(Image.fromarray(a).resize((size // 2, size // 2), Image.NEAREST)))
        zoom = np.concatenate(crops, 0)
        row = np.concatenate([img, mask, region, zoom], 1)
        Image.fromarray(row).save(Path(args.out) / f"render_default_{size}.png")
        print(f"wrote {args.out}/render_default_{size}.png")


if __name__ == "__main__":
    main()
