"""Mesh files: Wavefront OBJ with UVs, its MTL and texture PNG, or vertex colours (PLY / GLB via
trimesh), each written atomically (:mod:`face3dkit.io.atomic`).

Blender ignores OBJ vertex colours, so meshes with UVs are written with a texture (baked by
:func:`face3dkit.render.uv.bake_uv_texture`); the OBJ's ``vt`` and ``f`` lines depend only on the
layout and are formatted once per layout.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from face3dkit.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from face3dkit.io.image import FAST_PNG_LEVEL

__all__ = ["write_colored_mesh", "write_textured_obj"]

#: OBJ texture-coordinate and face lines by layout (the same for every face exported with it).
_OBJ_LAYOUT_CACHE: dict[str, str] = {}
_OBJ_LAYOUT_CACHE_SIZE = 4


_MTL = """# face3dkit
newmtl material_0
Ka 1.000000 1.000000 1.000000
Kd 1.000000 1.000000 1.000000
Ks 0.000000 0.000000 0.000000
Ns 1.000000
d 1.000000
illum 1
map_Kd {texture}
"""


def _obj_text(verts: np.ndarray, uv: np.ndarray, faces: np.ndarray, mtl_name: str,
              layout_key: str | None = None) -> str:
    """Wavefront OBJ text of a mesh whose vertex ``i`` has texture coordinate ``i`` (1-based
    ``f a/a b/b c/c``), using material ``material_0`` of ``mtl_name``. The ``vt`` and ``f`` lines
    depend only on the layout: with a ``layout_key`` they are formatted once and reused."""
    head = f"# face3dkit\nmtllib {mtl_name}\nusemtl material_0\n"
    v = ("v %.8f %.8f %.8f\n" * len(verts)) % tuple(verts.ravel().tolist())
    tail = _OBJ_LAYOUT_CACHE.get(layout_key) if layout_key is not None else None
    if tail is None:
        f1 = faces.astype(np.int64) + 1
        vt = ("vt %.8f %.8f\n" * len(uv)) % tuple(uv.ravel().tolist())
        tail = vt + ("f %d/%d %d/%d %d/%d\n" * len(f1)) % tuple(np.repeat(f1, 2, axis=1).ravel().tolist())
        if layout_key is not None:
            if len(_OBJ_LAYOUT_CACHE) >= _OBJ_LAYOUT_CACHE_SIZE:
                _OBJ_LAYOUT_CACHE.pop(next(iter(_OBJ_LAYOUT_CACHE)))
            _OBJ_LAYOUT_CACHE[layout_key] = tail
    return head + v + tail


def write_textured_obj(path: str | os.PathLike, verts: np.ndarray, uv: np.ndarray, face_uv: np.ndarray,
                       texture: np.ndarray, layout_key: str | None = None) -> list[Path]:
    """Write ``<stem>.obj``, ``<stem>.mtl`` and ``<stem>_texture.png`` for a mesh in UV numbering.

    Args:
        path: the ``.obj`` path.
        verts: (T, 3) vertex positions, one per UV vertex (seams split vertices).
        uv: (T, 2) texture coordinates, origin bottom-left.
        face_uv: (F, 3) UV-vertex ids per face.
        texture: (S, S, 3) uint8 texture (row 0 = top).
        layout_key: optional layout digest: the ``vt`` / ``f`` lines are formatted once per key.

    Returns:
        The three files written (obj, mtl, png).
    """
    path = Path(path)
    stem = path.stem
    png = io.BytesIO()
    Image.fromarray(texture).save(png, format="PNG", compress_level=FAST_PNG_LEVEL)
    tex_path = atomic_write_bytes(path.parent / f"{stem}_texture.png", png.getvalue())
    mtl_path = atomic_write_text(path.parent / f"{stem}.mtl", _MTL.format(texture=tex_path.name))
    atomic_write_text(path, _obj_text(np.asarray(verts, dtype=np.float64), np.asarray(uv, dtype=np.float64),
                                      np.asarray(face_uv), f"{stem}.mtl", layout_key))
    return [path, mtl_path, tex_path]


def write_colored_mesh(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> list[Path]:
    """Write a mesh with (N, 3) uint8 vertex colours in the format of ``path``'s suffix (trimesh:
    ``.ply``, ``.glb``, ``.obj`` without a texture, ...)."""
    import trimesh

    path = Path(path)
    mesh = trimesh.Trimesh(np.asarray(verts, dtype=np.float64), np.asarray(faces), vertex_colors=colors, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lstrip(".").lower())
    return [path]
