"""UV-space rendering: baking per-vertex colours into a texture by rasterizing the mesh in UV space.

The UV rasterization and the background-fill map depend only on the UV layout and the texture
size, not on the colours: they are computed once per layout and reused for every face baked with
it, so a bake is one gather. The OBJ / MTL writers are :mod:`face3dkit.io.mesh`; bake + write is
:func:`face3dkit.export.export_mesh`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

__all__ = ["bake_uv_texture", "layout_digest", "uv_vertex_map"]


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


def layout_digest(faces: Tensor, uv: Tensor, face_uv: Tensor) -> str:
    """Content digest of a UV layout (faces, UVs, UV faces): the key of the per-layout caches."""
    digest = hashlib.blake2b(digest_size=16)
    for t in (faces, uv, face_uv):
        digest.update(str((t.dtype, tuple(t.shape))).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _uv_raster(faces: Tensor, uv: Tensor, face_uv: Tensor, size: int, key: str | None = None) -> tuple:
    """The mesh rasterized in UV space, as (covered texel ids (N,), their triangles' mesh-vertex ids
    (3, N), perspective-correct barycentrics (3, N), fill index (size, size)), cached per (layout
    content, size, device)."""
    from face3dkit.render.rasterize import rasterize

    dev = uv.device
    key = (key or layout_digest(faces, uv, face_uv), int(size), str(dev))
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
