"""POS: similarity (scaled orthographic) pose from 2D-3D landmark correspondences.

Deng et al. 2019 align photos with the POS estimate of a 5-point 3D template to the detected
5 points; the same solver works with 68 points. Model: ``p = s * P @ R @ X + t`` where ``P``
keeps the first two rows, solved by linear least squares for the 8 entries of the affine camera
``[[sR1, tx], [sR2, ty]]`` and then projected onto a similarity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["PosResult", "pos_similarity"]


class PosResult(NamedTuple):
    """Result of :func:`pos_similarity`.

    Attributes:
        scale: (B,) pixels per model unit (mean of the two affine row norms, as in Deng et al.).
        rotation: (B, 3, 3) nearest rotation to the affine rows (column-vector convention,
            rows 0 and 1 map model x/y/z to the 2D frame's x and y).
        trans: (B, 2) translation of the model origin in the 2D frame.
        affine: (B, 2, 4) the raw least-squares affine camera ``[sR | t]``.
    """

    scale: Tensor
    rotation: Tensor
    trans: Tensor
    affine: Tensor


def pos_similarity(points2d: Tensor, points3d: Tensor, weights: Tensor | None = None) -> PosResult:
    """Estimate a similarity from 2D landmarks to their 3D model points (POS).

    The 2D frame must have the same handedness as the model's x/y: for image pixel coordinates
    (y down) flip y first (e.g. ``v' = H - v``), as Deng et al. do before calling POS.

    Args:
        points2d: (B, N, 2) or (N, 2) 2D landmarks, N >= 4 (5 or 68 typical).
        points3d: (B, N, 3) or (N, 3) corresponding model points.
        weights: optional (B, N) or (N,) non-negative weights of the correspondences.

    Returns:
        :class:`PosResult` with batch dimension B (1 when the inputs had none).
    """
    if points2d.ndim == 2:
        points2d = points2d[None]
    if points3d.ndim == 2:
        points3d = points3d[None].expand(points2d.shape[0], -1, -1)
    b, n, _ = points2d.shape
    if points3d.shape[:2] != (b, n) or points2d.shape[-1] != 2 or points3d.shape[-1] != 3:
        raise ValueError(
            f"pos_similarity: expected (B,N,2) and (B,N,3) landmarks, got {tuple(points2d.shape)} "
            f"and {tuple(points3d.shape)}"
        )
    if n < 4:
        raise ValueError(f"pos_similarity needs at least 4 correspondences, got {n}")
    dtype = torch.promote_types(points2d.dtype, torch.float64)
    x2 = points2d.to(dtype)
    xh = torch.cat([points3d.to(dtype), torch.ones_like(points3d[..., :1], dtype=dtype)], -1)  # (B,N,4)
    if weights is not None:
        w = weights.to(dtype)
        if w.ndim == 1:
            w = w[None].expand(b, -1)
        sw = w.clamp_min(0).sqrt()[..., None]
        xh, x2 = xh * sw, x2 * sw
    # The two rows decouple: solve xh @ k_r = x2[..., r] for r in {0, 1} with one lstsq.
    k = torch.linalg.lstsq(xh, x2).solution  # (B, 4, 2)
    affine = k.transpose(1, 2)  # (B, 2, 4)
    r1, r2 = affine[:, 0, :3], affine[:, 1, :3]
    scale = 0.5 * (r1.norm(dim=-1) + r2.norm(dim=-1))
    trans = affine[:, :, 3]
    r3 = torch.linalg.cross(r1, r2, dim=-1)
    m = torch.stack([r1 / r1.norm(dim=-1, keepdim=True), r2 / r2.norm(dim=-1, keepdim=True),
                     r3 / r3.norm(dim=-1, keepdim=True).clamp_min(1e-12)], 1)
    u, _, vh = torch.linalg.svd(m)
    d = torch.sign(torch.linalg.det(u @ vh))
    corr = torch.ones_like(m[:, 0])
    corr[:, 2] = d
    rot = u @ torch.diag_embed(corr) @ vh
    out_dtype = points2d.dtype
    return PosResult(scale.to(out_dtype), rot.to(out_dtype), trans.to(out_dtype), affine.to(out_dtype))
