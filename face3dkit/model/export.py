"""Mesh export: OBJ with UVs and a baked albedo texture (Blender shows it), or vertex colours.

Blender ignores OBJ vertex colours, so models with UVs are exported with a texture baked by
rasterizing the mesh in UV space; models without UVs get per-vertex colours (trimesh).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from face3dkit.io.atomic import atomic_path, atomic_write_bytes

__all__ = ["bake_uv_texture", "export_mesh", "uv_vertex_map"]


def uv_vertex_map(faces: Tensor, face_uv: Tensor, n_uv: int) -> Tensor:
    """(T,) long: for each UV vertex, the mesh vertex it belongs to (seams split vertices)."""
    out = torch.full((n_uv,), -1, dtype=torch.long, device=faces.device)
    out[face_uv.reshape(-1)] = faces.reshape(-1)
    return out


def _fill_background(img: np.ndarray, covered: np.ndarray, iters: int = 8) -> np.ndarray:
    """Grow the covered region ``iters`` texels into the background, each new texel copying a covered
    texel of its 3 x 3 neighbourhood (avoids dark seams under mip-mapping and bilinear lookup).

    Args:
        img: (H, W, C) texture.
        covered: (H, W) bool, texels the mesh covers.
        iters: texels to grow.

    Returns:
        (H, W, C) filled texture (a new array).
    """
    h, w, c = img.shape
    # Dilate the flat index of the covered texels (separable 3 x 3 max), then gather.
    src = np.where(covered, np.arange(h * w, dtype=np.int64).reshape(h, w), -1)
    for _ in range(iters):
        m = src.copy()
        np.maximum(m[1:], src[:-1], out=m[1:])
        np.maximum(m[:-1], src[1:], out=m[:-1])
        m2 = m.copy()
        np.maximum(m2[:, 1:], m[:, :-1], out=m2[:, 1:])
        np.maximum(m2[:, :-1], m[:, 1:], out=m2[:, :-1])
        src = np.where(src >= 0, src, m2)
    out = img.reshape(h * w, c)[np.maximum(src, 0).ravel()].reshape(h, w, c)
    return np.where((src >= 0)[..., None], out, img)


def bake_uv_texture(colors: Tensor, faces: Tensor, uv: Tensor, face_uv: Tensor, size: int = 1024) -> np.ndarray:
    """Bake per-vertex colours into a UV texture by rasterizing the mesh in UV space.

    Args:
        colors: (N, 3) per-vertex colours in [0, 1].
        faces: (F, 3) vertex indices.
        uv: (T, 2) texture coordinates, origin bottom-left (OBJ convention).
        face_uv: (F, 3) UV indices per face corner.
        size: texture side in pixels.

    Returns:
        (size, size, 3) uint8 image (row 0 = top = v of 1).
    """
    from face3dkit.render import interpolate, rasterize

    dev = colors.device
    uvf = uv.to(dev, torch.float32)
    screen = torch.stack([uvf[:, 0] * size, (1 - uvf[:, 1]) * size, torch.ones_like(uvf[:, 0])], -1)[None]
    fuv = face_uv.to(dev)
    owner = uv_vertex_map(faces.to(dev), fuv, uv.shape[0])
    attr = colors.to(torch.float32)[owner.clamp_min(0)][None]
    with torch.no_grad():
        frags = rasterize(screen, fuv, size)
        tex = interpolate(attr, frags, fuv)[0]
    covered = (frags.pix_to_face[0].reshape(size, size, -1)[..., 0] >= 0).cpu().numpy()
    img = _fill_background(tex.clamp(0, 1).cpu().numpy(), covered)
    return (img * 255).round().astype(np.uint8)


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
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    v = verts.detach().cpu().double().numpy()
    f = faces.detach().cpu().numpy()
    if uv is not None and face_uv is not None and path.suffix.lower() == ".obj":
        tex = bake_uv_texture(colors.detach().cpu(), faces.cpu(), uv.cpu(), face_uv.cpu(), texture_size)
        owner = uv_vertex_map(faces.cpu(), face_uv.cpu(), uv.shape[0]).numpy()
        image = Image.fromarray(tex)
        visual = trimesh.visual.TextureVisuals(uv=uv.cpu().numpy(), image=image)
        mesh = trimesh.Trimesh(v[owner], face_uv.cpu().numpy(), visual=visual, process=False)
        stem = path.stem
        obj_text, assets = trimesh.exchange.obj.export_obj(
            mesh, include_texture=True, return_texture=True, write_texture=False, mtl_name=f"{stem}.mtl"
        )
        # Give the texture a predictable name and point the MTL at it.
        renames = {name: (f"{stem}_texture.png" if name.lower().endswith(".png") else name) for name in assets}
        written = []
        for name, data in assets.items():
            if name.lower().endswith(".mtl"):
                text = data.decode()
                for old, new_name in renames.items():
                    text = text.replace(old, new_name)
                data = text.encode()
            written.append(atomic_write_bytes(path.parent / renames[name], data))
        atomic_write_bytes(path, obj_text.encode())
        return [path, *written]
    col = (colors.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    mesh = trimesh.Trimesh(v, f, vertex_colors=col, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lstrip(".").lower())
    return [path]
