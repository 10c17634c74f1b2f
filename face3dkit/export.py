"""Mesh export: a fitted face as OBJ with UVs and a baked albedo texture (Blender shows it), or as a
mesh with vertex colours when the model has no UVs.

Baking is UV-space rendering (:mod:`face3dkit.render.uv`); the file formats are
:mod:`face3dkit.io.mesh`. This module joins the two (the model package stays free of the renderer).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from torch import Tensor

from face3dkit.io.mesh import write_colored_mesh, write_textured_obj
from face3dkit.render.uv import bake_uv_texture, layout_digest, uv_vertex_map

__all__ = ["export_mesh"]


def export_mesh(
    path: str | os.PathLike,
    verts: Tensor,
    faces: Tensor,
    colors: Tensor,
    uv: Tensor | None = None,
    face_uv: Tensor | None = None,
    texture_size: int = 1024,
) -> list[Path]:
    """Write one mesh as OBJ (+ MTL + texture PNG when UVs are given), atomically per file.

    Args:
        path: output ``.obj`` path (``.ply`` / ``.glb`` also work through trimesh).
        verts: (N, 3) vertices.
        faces: (F, 3) long.
        colors: (N, 3) colours in [0, 1] (albedo or shaded).
        uv, face_uv: optional (T, 2) UVs and (F, 3) UV indices; with them the colours are baked
            into ``<stem>_texture.png`` referenced by ``<stem>.mtl``.
        texture_size: baked texture side, pixels.

    Returns:
        The files written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = verts.detach().cpu().double().numpy()
    if uv is not None and face_uv is not None and path.suffix.lower() == ".obj":
        key = layout_digest(faces, uv, face_uv)
        tex = bake_uv_texture(colors.detach().cpu(), faces.cpu(), uv.cpu(), face_uv.cpu(), texture_size, key)
        owner = uv_vertex_map(faces.cpu(), face_uv.cpu(), uv.shape[0]).numpy()
        return write_textured_obj(path, v[owner], uv.detach().cpu().double().numpy(), face_uv.detach().cpu().numpy(),
                                  tex, key)
    col = (colors.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return write_colored_mesh(path, v, faces.detach().cpu().numpy(), col)
