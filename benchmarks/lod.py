"""The photometric stage's decimated meshes: how close their renders are, and what a step costs.

For each triangle budget (``--faces``; 0 = the model's own mesh) the script decimates the model
(:func:`face3dkit.model.lod_faces`), renders a batch of random faces (yaw -70..70, random identity,
expression, light) through the fit's photometric renderer at each ``--sizes`` and prints, against
the full mesh at the same size: the front-face mask IoU, the mean and 99th-percentile colour
difference per channel inside both masks, and the time of one photometric forward + backward per
face (the loss's gradients to every coefficient), with and without the rasterization (the reused
visibility of ``FitConfig.photo_raster_every``). ``--png`` also writes a picture: full mesh and
``--png-faces`` triangles, shaded and as triangles.

    python benchmarks/lod.py --threads 2 --faces 0 20000 10000 5000 --sizes 112 64 --png docs/img/lod_mesh.png
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import face3dkit
from face3dkit.fit.fitter import _PhotometricRenderer
from face3dkit.geometry import PerspectiveCamera
from face3dkit.model import lod_faces, vertex_normals
from face3dkit.sysinfo import machine_summary


def step_ms(r: _PhotometricRenderer, c: face3dkit.Coefficients, cam: PerspectiveCamera, reuse: bool,
            repeats: int) -> float:
    """Milliseconds per face of one render + squared-error loss + backward."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in c.as_dict().items()}
    cc = face3dkit.Coefficients(**p)

    def once(first: bool) -> None:
        img, mask = r(cc, cam, reuse=reuse and not first)
        ((img - 0.5) ** 2 * mask).sum().backward()

    once(True)
    t = time.perf_counter()
    for _ in range(repeats):
        once(False)
    return 1000 * (time.perf_counter() - t) / repeats / c.angles.shape[0]


def picture(model, faces: torch.Tensor, path: str, size: int = 384) -> None:
    from PIL import Image

    from face3dkit.render.renderer import render_mesh
    from face3dkit.shading.sh import sh_shade

    c = face3dkit.Coefficients.zeros(model.layout, 1)
    c.angles[:, 1], c.angles[:, 0] = math.radians(30), math.radians(-5)
    c.gamma[:, [0, 9, 18]], c.gamma[:, [2, 11, 20]], c.gamma[:, [3, 12, 21]] = 0.8, 0.3, 0.2
    cam = PerspectiveCamera.for_image_size(size)
    world, _ = model.posed_points(c)
    rows = []
    for f in (model.faces, faces):
        with torch.no_grad():
            col = sh_shade(model.mean_albedo[None], vertex_normals(world, f), c.gamma)
            img, _, _, frags = render_mesh(world, col, f, cam, background=1.0, cull_backfaces=True)
        p2f = frags.pix_to_face[0].numpy()
        edge = np.zeros_like(p2f, bool)
        edge[:, 1:] |= p2f[:, 1:] != p2f[:, :-1]
        edge[1:] |= p2f[1:] != p2f[:-1]
        wire = np.full((size, size, 3), 255, np.uint8)
        wire[p2f >= 0] = 225
        wire[edge & (p2f >= 0)] = 40
        rows.append(np.concatenate([(img[0].clamp(0, 1).numpy() * 255).astype(np.uint8), wire], 1))
    Image.fromarray(np.concatenate(rows, 0)).save(path)
    print(f"# wrote {path}: top the model's mesh ({model.n_faces} triangles), bottom {faces.shape[0]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--faces", type=int, nargs="+", default=[0, 20000, 10000, 5000])
    p.add_argument("--sizes", type=int, nargs="+", default=[112, 64])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--png", default=None)
    p.add_argument("--png-faces", type=int, default=10000, help="the decimation the picture shows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    m = face3dkit.load_model(args.model)
    g = torch.Generator().manual_seed(args.seed)
    b = args.batch
    c = m.sample(b, generator=g)
    if m.exp_range is not None:
        c.exp = (torch.rand(b, m.n_exp, generator=g) < 0.12).float() * torch.rand(b, m.n_exp, generator=g) * 0.7
    c.angles[:, 1] = torch.linspace(-70, 70, b) * math.pi / 180
    c.gamma = torch.randn(b, 27, generator=g) * 0.08
    c.gamma[:, [2, 11, 20]] += 0.2
    print(f"# {machine_summary()}, {args.threads} thread(s); model {args.model!r} ({m.n_faces} triangles), "
          f"{b} faces, yaw -70..70")
    levels = {}
    for n in args.faces:
        t = time.perf_counter()
        f = m.faces if n == 0 else lod_faces(m, n)
        levels[n] = (f, time.perf_counter() - t)
    full = _PhotometricRenderer(m, cull_backfaces=True)
    print("| triangles | px | front triangles | mask IoU | colour diff mean | colour diff p99 | step ms/face "
          "| step ms/face (visibility kept) | first row's step / this kept | decimation s (cached: ~0) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = None  # the first row's step (the full mesh at the first size, rasterized every step)
    for size in args.sizes:
        cam = PerspectiveCamera.for_image_size(size)
        with torch.no_grad():
            img0, mask0 = full(c, cam)
        for f, t_dec in levels.values():
            r = _PhotometricRenderer(m, cull_backfaces=True, faces=f)
            with torch.no_grad():
                img1, mask1 = r(c, cam)
            a, bb = mask0[..., 0] > 0, mask1[..., 0] > 0
            iou = float((a & bb).sum() / (a | bb).sum())
            d = (img0 - img1).abs().mean(-1)[a & bb]
            ms, ms_keep = step_ms(r, c, cam, False, args.repeats), step_ms(r, c, cam, True, args.repeats)
            base = base or ms
            print(f"| {f.shape[0]} | {size} | {int(r.front.sum())} | {iou:.4f} | {float(d.mean()):.4f} | "
                  f"{float(d.quantile(0.99)):.4f} | {ms:.2f} | {ms_keep:.2f} | {base / ms_keep:.2f}x | {t_dec:.1f} |")
    if args.png:
        picture(m, lod_faces(m, args.png_faces), args.png)


if __name__ == "__main__":
    main()
