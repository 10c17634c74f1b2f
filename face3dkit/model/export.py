"""Mesh export: OBJ with UVs and a baked albedo texture (Blender shows it), or vertex colours.

Blender ignores OBJ vertex colours, so models with UVs are exported with a texture baked by
rasterizing the mesh in UV space; models without UVs get per-vertex colours (trimesh). The UV
rasterization and the background-fill map depend only on the UV layout and the texture size, not
on the colours: they are computed once per layout and reused for every face exported with it.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from face3dkit.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["bake_uv_texture", "export_mesh", "uv_vertex_map"]


def uv_vertex_map(faces: Tensor, face_uv: Tensor, n_uv: int) -> Tensor:
    """(T,) long: for each UV vertex, the mesh vertex it belongs to (seams split vertices)."""
    out = torch.full((n_uv,), -1, dtype=torch.long, device=faces.device)
    out[face_uv.reshape(-1)] = faces.reshape(-1)
    return out


def _fill_index(covered: np.ndarray, iters: int = 8) -> np.ndarray:
    """(H, W) int64 flat index of the covered texel each texel copies in :func:`_fill_background`
    (itself where covered; -1 where no covered texel is within ``iters``)."""
    h, w = covered.shape
    src = np.where(covered, np.arange(h * w, dtype=np.int64).reshape(h, w), -1)
    for _ in range(iters):
        m = src.copy()
        np.maximum(m[1:], src[:-1], out=m[1:])
        np.maximum(m[:-1], src[1:], out=m[:-1])
        m2 = m.copy()
        np.maximum(m2[:, 1:], m[:, :-1], out=m2[:, 1:])
        np.maximum(m2[:, :-1], m[:, 1:], out=m2[:, :-1])
        src = np.where(src >= 0, src, m2)
    return src


def _apply_fill(img: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Gather ``img`` (H, W, C) through a :func:`_fill_index` map (texels it leaves -1 keep their value)."""
    h, w, c = img.shape
    idx = np.where(src >= 0, src, np.arange(h * w, dtype=np.int64).reshape(h, w))
    return img.reshape(h * w, c)[idx.ravel()].reshape(h, w, c)


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
    # Dilate the flat index of the covered texels (separable 3 x 3 max), then gather.
    return _apply_fill(img, _fill_index(covered, iters))


#: UV rasterizations by layout: key -> (covered texels (N,), their corner vertex ids (3, N),
#: barycentrics (3, N), fill index (size, size)).
_UV_RASTER_CACHE: dict[tuple, tuple] = {}
_UV_RASTER_CACHE_SIZE = 4
#: OBJ texture-coordinate and face lines by layout (the same for every face exported with it).
_OBJ_LAYOUT_CACHE: dict[str, str] = {}


def _layout_digest(faces: Tensor, uv: Tensor, face_uv: Tensor) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for t in (faces, uv, face_uv):
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _uv_raster(faces: Tensor, uv: Tensor, face_uv: Tensor, size: int, key: str | None = None) -> tuple:
    """The mesh rasterized in UV space, as (covered texel ids (N,), their triangles' mesh-vertex ids
    (3, N), perspective-correct barycentrics (3, N), fill index (size, size)), cached per (layout
    content, size, device)."""
    from face3dkit.render import rasterize

    dev = uv.device
    key = (key or _layout_digest(faces, uv, face_uv), int(size), str(dev))
    hit = _UV_RASTER_CACHE.get(key)
    if hit is not None:
        return hit
    uvf = uv.to(torch.float32)
    screen = torch.stack([uvf[:, 0] * size, (1 - uvf[:, 1]) * size, torch.ones_like(uvf[:, 0])], -1)[None]
    owner = uv_vertex_map(faces.to(dev), face_uv.to(dev), uv.shape[0])
    with torch.no_grad():
        frags = rasterize(screen, face_uv.to(dev), size)
    p2f = frags.pix_to_face.reshape(-1)
    idx = (p2f >= 0).nonzero().squeeze(1)
    vid = owner.clamp_min(0)[face_uv.to(dev).long().index_select(0, p2f.index_select(0, idx)).t()]  # (3, N)
    bary = frags.bary.reshape(-1, 3).index_select(0, idx).t()  # (3, N)
    covered = (p2f >= 0).reshape(size, size).cpu().numpy()
    if len(_UV_RASTER_CACHE) >= _UV_RASTER_CACHE_SIZE:
        _UV_RASTER_CACHE.pop(next(iter(_UV_RASTER_CACHE)))
    _UV_RASTER_CACHE[key] = (idx, vid, bary, _fill_index(covered))
    return _UV_RASTER_CACHE[key]


def bake_uv_texture(colors: Tensor, faces: Tensor, uv: Tensor, face_uv: Tensor, size: int = 1024,
                    _key: str | None = None) -> np.ndarray:
    """Bake per-vertex colours into a UV texture by rasterizing the mesh in UV space.

    The texel colours are those of :func:`face3dkit.render.interpolate` on the UV rasterization
    (the same arithmetic); the rasterization is cached per layout, so a bake is one gather.

    Args:
        colors: (N, 3) per-vertex colours in [0, 1].
        faces: (F, 3) vertex indices.
        uv: (T, 2) texture coordinates, origin bottom-left (OBJ convention).
        face_uv: (F, 3) UV indices per face corner.
        size: texture side in pixels.

    Returns:
        (size, size, 3) uint8 image (row 0 = top = v of 1).
    """
    dev = colors.device
    idx, vid, bary, fill = _uv_raster(faces.to(dev), uv.to(dev), face_uv.to(dev), size, _key)
    attr = colors.detach().to(torch.float32)
    vals = (attr[vid] * bary[..., None]).sum(0)  # (N, 3), as interpolate computes it
    tex = attr.new_zeros((size * size, 3)).index_put((idx,), vals).view(size, size, 3)
    rgb = (tex.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return _apply_fill(rgb, fill)  # copying texels commutes with the per-texel rounding


#: zlib level of the baked texture PNG: 1 encodes a 1024^2 texture several times faster than
#: PIL's default 6 for a file about 10-20 % larger (lossless either way).
_PNG_COMPRESS_LEVEL = 1

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
            if len(_OBJ_LAYOUT_CACHE) >= _UV_RASTER_CACHE_SIZE:
                _OBJ_LAYOUT_CACHE.pop(next(iter(_OBJ_LAYOUT_CACHE)))
            _OBJ_LAYOUT_CACHE[layout_key] = tail
    return head + v + tail


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
    f = faces.detach().cpu().numpy()
    if uv is not None and face_uv is not None and path.suffix.lower() == ".obj":
        key = _layout_digest(faces, uv, face_uv)
        tex = bake_uv_texture(colors.detach().cpu(), faces.cpu(), uv.cpu(), face_uv.cpu(), texture_size, key)
        owner = uv_vertex_map(faces.cpu(), face_uv.cpu(), uv.shape[0]).numpy()
        stem = path.stem
        png = io.BytesIO()
        Image.fromarray(tex).save(png, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
        tex_path = atomic_write_bytes(path.parent / f"{stem}_texture.png", png.getvalue())
        mtl_path = atomic_write_text(path.parent / f"{stem}.mtl", _MTL.format(texture=tex_path.name))
        atomic_write_text(path, _obj_text(v[owner], uv.detach().cpu().double().numpy(),
                                          face_uv.detach().cpu().numpy(), f"{stem}.mtl", key))
        return [path, mtl_path, tex_path]
    import trimesh

    col = (colors.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    mesh = trimesh.Trimesh(v, f, vertex_colors=col, process=False)
    with atomic_path(path) as tmp:
        mesh.export(tmp, file_type=path.suffix.lstrip(".").lower())
    return [path]
