"""Functional rasterizer front end: :func:`rasterize` dispatches to a backend."""

from __future__ import annotations

import torch
from torch import Tensor

from ._raster_torch import DEFAULT_MAX_CANDIDATES, rasterize_torch
from .backend import get_backend
from .fragments import Fragments, image_hw, pack_faces

__all__ = ["rasterize"]


def rasterize(
    verts: Tensor,
    faces: Tensor,
    image_size: int | tuple[int, int],
    *,
    cull_backfaces: bool = False,
    near: float = 1e-3,
    backend: str | None = None,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> Fragments:
    """Rasterize triangles given in screen space (one visible face per pixel, K = 1).

    Conventions (docs/conventions.md): pixel (row i, col j) has its centre at ``(j + 0.5, i + 0.5)``,
    u to the right, v down. A pixel is covered by a face when its centre is inside the triangle;
    centres exactly on an edge follow the top-left rule (owned by the face for which the edge is a
    top edge (horizontal, interior below) or a left edge (interior to the right)), so pixels on an
    edge shared by two faces are covered exactly once, and meshes are rasterized without cracks.
    The nearest surface (smallest interpolated depth at the pixel centre) wins; exact depth ties go
    to the smallest packed face id.

    Faces are dropped (never clipped) when any vertex has ``d < near`` or a non-finite coordinate,
    when they are degenerate (zero signed area on screen), and, with ``cull_backfaces``, when they
    are back-facing: front faces are counter-clockwise as seen by the camera (OpenGL / PyTorch3D),
    i.e. negative signed area ``(p1 - p0) x (p2 - p0)`` in the y-down pixel frame. A model whose
    triangles are counter-clockwise seen from outside (BFM, with ``+z`` toward the camera) keeps
    its visible side.

    The output is not differentiable (``pix_to_face`` is discrete); differentiate through
    :func:`~face3dkit.render.interpolate` / :func:`~face3dkit.render.barycentrics` (positions
    and attributes) and :func:`~face3dkit.render.antialias` (silhouettes).

    Args:
        verts: (B, V, 3) screen-space vertices ``(u, v, d)``: pixels, pixels, depth (> 0 in
            front of the camera). Use :func:`~face3dkit.render.ndc_to_screen` for PyTorch3D NDC.
        faces: (F, 3) int vertex ids shared across the batch, or (B, F, 3) per batch element.
        image_size: int (square) or (H, W).
        cull_backfaces: drop back-facing (clockwise on screen) faces.
        near: near-plane depth (> 0); faces with a vertex closer than this are dropped.
        backend: ``"torch"``, ``"pytorch3d"``, ``"auto"`` or None (``$FACE3DKIT_RENDER_BACKEND``,
            default ``"torch"``); see :mod:`face3dkit.render.backend`.
        max_candidates: torch backend only: (face, pixel) pairs processed per chunk (memory cap).

    Returns:
        :class:`Fragments`: ``pix_to_face`` (B, H, W) int64 packed face ids (``b * F + f``, -1
        background), ``bary`` (B, H, W, 3) perspective-correct barycentrics (-1 background),
        ``zbuf`` (B, H, W) depth (-1 background), all on ``verts.device``, floats in
        ``verts.dtype``.
    """
    if verts.ndim != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be (B, V, 3), got {tuple(verts.shape)}")
    if not verts.is_floating_point():
        raise TypeError(f"verts must be floating point, got {verts.dtype}")
    if not near > 0:
        raise ValueError(f"near must be > 0 (depths are positive in front of the camera), got {near}")
    hw = image_hw(image_size)
    B, V, _ = verts.shape
    faces = faces.to(verts.device)
    name = get_backend(backend)
    if name == "pytorch3d":
        from ._raster_pytorch3d import rasterize_pytorch3d

        return rasterize_pytorch3d(verts, faces, hw, cull_backfaces=cull_backfaces, near=near)
    fp = pack_faces(faces, B, V)
    F = fp.shape[0] // max(B, 1)
    if fp.numel() == 0 or B == 0:
        p2f = torch.full((B, *hw), -1, dtype=torch.long, device=verts.device)
        neg = torch.full((B, *hw), -1.0, dtype=verts.dtype, device=verts.device)
        return Fragments(p2f, neg[..., None].expand(-1, -1, -1, 3).clone(), neg, F)
    return rasterize_torch(verts, fp, F, hw, cull_backfaces=cull_backfaces, near=near, max_candidates=max_candidates)
