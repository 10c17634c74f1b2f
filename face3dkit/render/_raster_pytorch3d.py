"""Adapter to PyTorch3D's rasterizer (the ``"pytorch3d"`` backend; imported lazily).

Convention conversion: face3dkit screen vertices ``(u, v, d)`` are mapped to PyTorch3D NDC with
:func:`~face3dkit.render.screen_to_ndc` (+X left, +Y up, shorter side in [-1, 1]) and the depth is
kept in z, which is what PyTorch3D's ``MeshRasterizer`` feeds to ``rasterize_meshes`` (view-space
z), so ``zbuf`` and the perspective-correct barycentrics have the same meaning. Culling is done
here (faces replaced by a degenerate face, which PyTorch3D skips) so that the near-plane and
back-face rules are exactly face3dkit's. The fill rule on exact ties differs (PyTorch3D has no
top-left rule), so pixel centres lying exactly on an edge may be assigned differently.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fragments import Fragments, screen_to_ndc

__all__ = ["rasterize_pytorch3d"]


@torch.no_grad()
def rasterize_pytorch3d(
    verts: Tensor,
    faces: Tensor,
    image_hw: tuple[int, int],
    cull_backfaces: bool = False,
    near: float = 1e-3,
    bin_size: int | None = None,
    max_faces_per_bin: int | None = None,
) -> Fragments:
    """Rasterize with ``pytorch3d.renderer.mesh.rasterize_meshes`` (K = 1, perspective-correct).

    Args:
        verts: (B, V, 3) screen-space vertices ``(u, v, d)``.
        faces: (F, 3) or (B, F, 3) vertex ids.
        image_hw: (H, W).
        cull_backfaces: as :func:`face3dkit.render.rasterize`.
        near: as :func:`face3dkit.render.rasterize`.
        bin_size, max_faces_per_bin: passed to PyTorch3D (None = its heuristics).

    Returns:
        :class:`Fragments` in face3dkit's conventions, ``bary`` / ``zbuf`` in ``verts.dtype``.
    """
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    B, V, _ = verts.shape
    H, W = image_hw
    v = verts.detach().float()
    f = faces.long()
    if f.ndim == 2:
        f = f.unsqueeze(0).expand(B, -1, -1)
    F = f.shape[1]
    # Cull exactly as the torch backend does, by replacing faces with a degenerate one.
    tri = torch.gather(v, 1, f.reshape(B, -1, 1).expand(-1, -1, 3)).view(B, F, 3, 3)
    x, y, d = tri.unbind(-1)
    area2 = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    keep = torch.isfinite(tri).all(-1).all(-1) & (d >= near).all(-1) & (area2 != 0)
    if cull_backfaces:
        keep &= area2 < 0
    f = torch.where(keep[..., None], f, torch.zeros_like(f))
    v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
    meshes = Meshes(verts=list(screen_to_ndc(v, (H, W))), faces=list(f))
    p2f, zbuf, bary, _ = rasterize_meshes(
        meshes,
        image_size=(H, W),
        blur_radius=0.0,
        faces_per_pixel=1,
        bin_size=bin_size,
        max_faces_per_bin=max_faces_per_bin,
        perspective_correct=True,
        clip_barycentric_coords=False,
        cull_backfaces=False,
    )
    p2f = p2f[..., 0].long()
    bg = p2f < 0
    bary = bary[..., 0, :].to(verts.dtype).masked_fill(bg[..., None], -1.0)
    zbuf = zbuf[..., 0].to(verts.dtype).masked_fill(bg, -1.0)
    return Fragments(p2f, bary, zbuf, F)
