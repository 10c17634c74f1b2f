"""Deng et al. 2019's image alignment (``util/preprocess.py: align_img``) as one affine transform.

Deng et al. fit a 5-point 3D template to the detected 5 points with POS (after flipping image y
so the 2D frame is y-up like the model), giving the template origin's position ``t`` and a scale
``s_pos`` (pixels per model unit); they resize the photo by ``s = rescale_factor / s_pos`` and cut
``target_size`` pixels around ``t``. Here this is the single transform (image pixels -> crop
pixels, face3dkit coordinates: pixel centres at +0.5, y down)::

    crop = s * R(-angle) @ (p - c) + target_size / 2

with ``c`` the template origin's image position and ``angle = 0`` (Deng et al.) or, with
``upright=True``, the in-plane angle of the template's x axis (removes head roll). The image is
warped once with ``torch.nn.functional.grid_sample`` (bilinear; for downscaling the source region
is first reduced with an antialiased resize so small crops of large photos do not alias). So
every output maps back to the photo exactly (:meth:`Alignment.crop_to_image`).

Differences from Deng et al.'s code, all sub-pixel: no integer truncation of the resized size
and the crop corner; and their crop centre sits half an *original* pixel off ``t`` (their
``H - 1 - y`` flip and PIL's pixel-corner grid meet at different origins); here ``c`` is exactly
where POS puts the template origin.

``rescale_factor = 102`` (Deng et al.) makes the crop hold ``102`` pixels per model unit, matching
the reconstruction camera's ``focal / camera_distance = 1015 / 10`` at ``z = 0``; keep it for
BFM-unit models (BFM, the default model); scale it with the model's units otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from face3dkit.align.template import as_template
from face3dkit.geometry.pos import pos_similarity
from face3dkit.landmarks.base import FaceLandmarks, lm68_to_lm5

if TYPE_CHECKING:
    from face3dkit.model.morphable import MorphableModel

__all__ = [
    "DENG_RESCALE_FACTOR",
    "DENG_TARGET_SIZE",
    "Alignment",
    "AlignmentTransform",
    "align_image",
    "alignment_transform",
    "apply_affine",
    "invert_affine",
    "warp_affine",
]

DENG_TARGET_SIZE = 224
DENG_RESCALE_FACTOR = 102.0


class AlignmentTransform(NamedTuple):
    """Result of :func:`alignment_transform` (batch B).

    Attributes:
        matrix: (B, 2, 3) image pixels -> crop pixels, ``[A | b]`` with ``crop = A @ p + b``.
        center: (B, 2) image position of the template origin (lands on the crop centre).
        scale: (B,) crop pixels per image pixel (Deng et al.'s ``s``).
        angle: (B,) rotation removed, radians in image coordinates (0 unless ``upright``).
        pos_scale: (B,) POS scale, image pixels per model unit.
    """

    matrix: Tensor
    center: Tensor
    scale: Tensor
    angle: Tensor
    pos_scale: Tensor


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse of (..., 2, 3) affine maps ``p -> A p + b``: ``[A^-1 | -A^-1 b]``."""
    a_inv = torch.linalg.inv(matrix[..., :2])
    return torch.cat([a_inv, -(a_inv @ matrix[..., 2:])], -1)


def apply_affine(points: Tensor, matrix: Tensor) -> Tensor:
    """Map (..., K, 2) points by (..., 2, 3) affines (batch dims broadcast): ``p @ A^T + b``."""
    m = matrix.to(points.dtype)
    return points @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]


def alignment_transform(lm5: Tensor, template: Tensor, target_size: int = DENG_TARGET_SIZE,
                        rescale_factor: float = DENG_RESCALE_FACTOR, upright: bool = False) -> AlignmentTransform:
    """Deng et al.'s crop transform from 5 image points.

    Args:
        lm5: (B, 5, 2) or (5, 2) image points in :data:`~face3dkit.landmarks.LM5_NAMES` order,
            face3dkit pixel coordinates (y down).
        template: (5, 3) model-space template (see :mod:`face3dkit.align.template`).
        target_size: crop side in pixels.
        rescale_factor: crop pixels per model unit.
        upright: also rotate so the template's x axis is horizontal (not in Deng et al.).

    Returns:
        :class:`AlignmentTransform` with batch B (1 for unbatched input), float64 on ``lm5``'s device.
    """
    if lm5.ndim == 2:
        lm5 = lm5[None]
    if lm5.shape[-2:] != (5, 2) or template.shape != (5, 3):
        raise ValueError(f"expected (B, 5, 2) points and a (5, 3) template, got {tuple(lm5.shape)} "
                         f"and {tuple(template.shape)}")
    p = lm5.to(torch.float64).clone()
    p[..., 1] = -p[..., 1]  # y up; Deng et al.'s H - 1 - y differs by a constant that cancels in t
    pos = pos_similarity(p, template.to(p))
    pos_scale = pos.scale
    s = rescale_factor / pos_scale
    center = torch.stack([pos.trans[:, 0], -pos.trans[:, 1]], -1)
    if upright:
        r = pos.rotation  # rows map model axes to the y-up 2D frame
        angle = torch.atan2(-r[:, 1, 0], r[:, 0, 0])  # model x axis direction in image coordinates
    else:
        angle = torch.zeros_like(s)
    cos, sin = torch.cos(-angle), torch.sin(-angle)
    a = s[:, None, None] * torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    b = target_size / 2.0 - (a @ center[..., None])[..., 0]
    matrix = torch.cat([a, b[..., None]], -1)
    return AlignmentTransform(matrix, center, s, angle, pos_scale)


def _sample(img: Tensor, inv: Tensor, out_hw: tuple[int, int], region: tuple[int, int, int, int],
            padding_mode: str) -> Tensor:
    """grid_sample (B, C, h, w) from ``img`` (B, C, h', w') that holds the source pixel region
    ``(x0, y0, x1, y1)`` (possibly resized): crop pixel centres mapped by ``inv`` (B, 2, 3)."""
    h, w = out_hw
    x0, y0, x1, y1 = region
    dev = img.device
    ys = torch.arange(h, device=dev, dtype=torch.float64) + 0.5
    xs = torch.arange(w, device=dev, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy], -1).reshape(1, -1, 2)
    src = apply_affine(pts, inv.to(torch.float64))  # (B, h*w, 2) source pixel coordinates
    nx = 2.0 * (src[..., 0] - x0) / (x1 - x0) - 1.0
    ny = 2.0 * (src[..., 1] - y0) / (y1 - y0) - 1.0
    grid = torch.stack([nx, ny], -1).reshape(-1, h, w, 2).to(img.dtype)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _round_half_up(v: float) -> int:
    """``v`` rounded half up, >= 1, stable at .5: ``round`` rounds 110.5 to 110 and 110.50000000000004
    to 111, and which of the two a product lands on depends on the last bits of the matrix (they vary
    with how the alignment was batched) -- a one-pixel change of the antialiasing resize that moves
    every output value."""
    return max(1, math.floor(v + 0.5 + 1e-9))


def _snap(v: float, tol: float = 1e-6) -> float:
    """``v`` rounded to the nearest integer when within ``tol`` of it, else ``v``: the source region's
    integer bounds must not flip with the last bits of the matrix inverse (which vary with how it was
    batched), because the region's size sets the antialiasing resize and so every output value."""
    r = round(v)
    return float(r) if abs(v - r) < tol else v


def warp_affine(images: Tensor, matrix: Tensor, out_size: int | tuple[int, int], antialias: bool = True,
                padding_mode: Literal["zeros", "border", "reflection"] = "zeros") -> Tensor:
    """Warp images by affine maps from source pixels to output pixels (face3dkit coordinates).

    Output pixel centre ``q`` takes the bilinear sample at ``p = matrix^-1 q`` of the source.

    Args:
        images: (B, H, W, C) or (1, H, W, C) (one photo, B crops) float (any range) or uint8
            tensor, any device.
        matrix: (B, 2, 3) or (2, 3) source -> output pixel maps.
        out_size: output side, or (h, w).
        antialias: when an image is shrunk by more than 1.25x, first reduce the source region
            needed with an antialiased bilinear resize (exactly the same geometry).
        padding_mode: ``grid_sample``'s: ``'zeros'`` (black outside the photo, like Deng et
            al.'s PIL crop), ``'border'`` or ``'reflection'``.

    Returns:
        (B, h, w, C) of the input's dtype (uint8 rounded) and device.
    """
    h, w = (out_size, out_size) if isinstance(out_size, int) else (int(out_size[0]), int(out_size[1]))
    if images.ndim != 4:
        raise ValueError(f"warp_affine expects (B, H, W, C) images, got {tuple(images.shape)}")
    n_img, hh, ww, _ = images.shape
    if matrix.ndim == 2:
        matrix = matrix[None].expand(n_img, -1, -1)
    bsz = matrix.shape[0]
    if n_img not in (1, bsz):
        raise ValueError(f"warp_affine: {n_img} images but {bsz} matrices")
    is_uint8 = images.dtype == torch.uint8
    work_dtype = torch.float32 if not images.is_floating_point() else images.dtype
    m64 = matrix.to(device=images.device, dtype=torch.float64)
    inv = invert_affine(m64)
    scales = torch.sqrt(torch.abs(torch.linalg.det(m64[:, :, :2]))).tolist()
    corners = torch.tensor([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]], dtype=torch.float64, device=images.device)
    outs = []
    for i, sc in enumerate(scales):
        src = images[i if n_img > 1 else 0]
        # Only the source region the crop covers (+ a margin for the filters) is converted and
        # sampled: big photos stay cheap. Clamped to the photo, so 'zeros'/'border' padding still
        # refer to the photo's edges; every in-photo sample and its footprint lie inside it.
        c = apply_affine(corners, inv[i])
        margin = 2.0 / min(sc, 1.0) + 2.0
        x0 = max(0, math.floor(_snap(float(c[:, 0].min()) - margin)))
        y0 = max(0, math.floor(_snap(float(c[:, 1].min()) - margin)))
        x1 = min(ww, math.ceil(_snap(float(c[:, 0].max()) + margin)))
        y1 = min(hh, math.ceil(_snap(float(c[:, 1].max()) + margin)))
        if padding_mode == "reflection" or x1 <= x0 or y1 <= y0:
            x0, y0, x1, y1 = 0, 0, ww, hh
        sub = src[y0:y1, x0:x1].permute(2, 0, 1)[None].to(work_dtype)
        if antialias and sc < 0.8:
            size = (_round_half_up((y1 - y0) * sc), _round_half_up((x1 - x0) * sc))
            sub = F.interpolate(sub, size=size, mode="bilinear", antialias=True, align_corners=False)
        outs.append(_sample(sub, inv[i:i + 1], (h, w), (x0, y0, x1, y1), padding_mode))
    out = torch.cat(outs, 0).permute(0, 2, 3, 1)
    if is_uint8:
        return out.round().clamp(0, 255).to(torch.uint8)
    return out.to(images.dtype)


@dataclass
class Alignment:
    """An aligned crop and the transform that made it.

    All transforms are in face3dkit pixel coordinates (x right, y down, pixel centres at +0.5) of
    the original photo and of the crop. Fields are batched (leading B) when :func:`align_image`
    was given several faces or images, unbatched otherwise.

    Attributes:
        image: (S, S, C) / (B, S, S, C) crop; a numpy array of the input's dtype for numpy input
            (uint8 for photos), else a tensor on the input's device.
        matrix: (2, 3) / (B, 2, 3) image -> crop affine ``[A | b]``.
        inverse: (2, 3) / (B, 2, 3) crop -> image affine.
        landmarks: (K, 2) / (B, K, 2) the given landmarks (68 or 5) in crop pixels.
        lm5: (5, 2) / (B, 5, 2) the 5 alignment points in crop pixels.
        scale: () / (B,) crop pixels per image pixel.
        center: (2,) / (B, 2) image position of the crop centre (template origin).
        angle: () / (B,) rotation removed (radians; 0 unless ``upright``).
        size: crop side S in pixels.
    """

    image: np.ndarray | Tensor
    matrix: Tensor
    inverse: Tensor
    landmarks: Tensor
    lm5: Tensor
    scale: Tensor
    center: Tensor
    angle: Tensor
    size: int

    @staticmethod
    def _map(points: np.ndarray | Tensor, m: Tensor) -> np.ndarray | Tensor:
        if isinstance(points, Tensor):
            return apply_affine(points, m.to(points.device))
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return apply_affine(pts, m.detach().cpu().to(torch.float64)).numpy()

    def image_to_crop(self, points: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Map (..., K, 2) original-image points to crop pixels (batch dims broadcast with B)."""
        return self._map(points, self.matrix)

    def crop_to_image(self, points: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Map (..., K, 2) crop points (e.g. a reconstruction's projected landmarks) to the photo."""
        return self._map(points, self.inverse)


def _landmark_array(landmarks: np.ndarray | Tensor | FaceLandmarks | list[FaceLandmarks]) -> Tensor:
    if isinstance(landmarks, FaceLandmarks):
        return torch.as_tensor(landmarks.points, dtype=torch.float64)
    if isinstance(landmarks, (list, tuple)) and landmarks and isinstance(landmarks[0], FaceLandmarks):
        counts = {f.points.shape[0] for f in landmarks}
        if len(counts) != 1:
            return torch.stack([torch.as_tensor(f.lm5, dtype=torch.float64) for f in landmarks])
        return torch.stack([torch.as_tensor(f.points, dtype=torch.float64) for f in landmarks])
    if isinstance(landmarks, Tensor):
        return landmarks
    return torch.as_tensor(np.asarray(landmarks, dtype=np.float64))


def align_image(image: np.ndarray | Tensor, landmarks: np.ndarray | Tensor | FaceLandmarks | list[FaceLandmarks],
                template: MorphableModel | Tensor | np.ndarray | str | os.PathLike | None = None, *,
                target_size: int = DENG_TARGET_SIZE, rescale_factor: float = DENG_RESCALE_FACTOR,
                upright: bool = False, eyes: Literal["corners", "contour"] = "corners", antialias: bool = True,
                padding_mode: Literal["zeros", "border", "reflection"] = "zeros") -> Alignment:
    """Crop faces like Deng et al. 2019's ``align_img`` (POS of a 5-point template, rescale, 224 crop).

    Args:
        image: (H, W, C) photo (numpy uint8 as :func:`face3dkit.io.load_image` gives, or a tensor),
            or a (B, H, W, C) tensor batch (uint8 or float).
        landmarks: (K, 2) for one face, (F, K, 2) for F faces of one image or one face per image of
            a batch; K = 68 (iBUG) or 5 (:data:`~face3dkit.landmarks.LM5_NAMES`); face3dkit pixel
            coordinates. A :class:`~face3dkit.landmarks.FaceLandmarks` or a list of them also works.
        template: the 5-point 3D template: None (the default model's), a
            :class:`~face3dkit.MorphableModel`, a path to Deng et al.'s ``similarity_Lm3D_all.mat``,
            or a (5, 3) / (68, 3) array (see :mod:`face3dkit.align.template`).
        target_size: crop side (Deng et al.: 224).
        rescale_factor: crop pixels per model unit (Deng et al.: 102).
        upright: also remove the in-plane rotation (Deng et al. do not).
        eyes: 68 -> 5 eye definition (must match how the template was reduced).
        antialias: prefilter strong downscaling (see :func:`warp_affine`).
        padding_mode: fill outside the photo (see :func:`warp_affine`).

    Returns:
        :class:`Alignment` (batched when ``landmarks`` has a face dimension or ``image`` a batch one).
    """
    lm = _landmark_array(landmarks)
    batched = lm.ndim == 3
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[-1] != 2 or lm.shape[-2] not in (5, 68):
        raise ValueError(f"landmarks must be (K, 2) or (F, K, 2) with K = 68 or 5, got {tuple(lm.shape)}")
    numpy_in = isinstance(image, np.ndarray)
    if numpy_in:
        arr = np.ascontiguousarray(image)
        img = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # e.g. np.asarray(PIL image)
    else:
        img = image
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim == 3:
        img = img[None]  # one photo, F faces: warp_affine broadcasts it without copies
    elif img.ndim == 4:
        batched = True
        if lm.shape[0] != img.shape[0]:
            raise ValueError(f"{img.shape[0]} images but {lm.shape[0]} landmark sets")
    else:
        raise ValueError(f"image must be (H, W, C) or (B, H, W, C), got {tuple(img.shape)}")
    out_dtype = lm.dtype if lm.is_floating_point() else torch.float64
    lm = lm.to(img.device)
    lm5 = lm if lm.shape[-2] == 5 else lm68_to_lm5(lm, eyes=eyes)
    tmpl = as_template(template).to(device=img.device, dtype=torch.float64)
    tr = alignment_transform(lm5.to(torch.float64), tmpl, target_size, rescale_factor, upright)
    crops = warp_affine(img, tr.matrix, target_size, antialias=antialias, padding_mode=padding_mode)
    inverse = invert_affine(tr.matrix)
    lm_crop = apply_affine(lm.to(torch.float64), tr.matrix)
    lm5_crop = apply_affine(lm5.to(torch.float64), tr.matrix)

    def fin(t: Tensor) -> Tensor:
        t = t.to(out_dtype)
        return t if batched else t[0]

    crop_out: np.ndarray | Tensor = crops if batched else crops[0]
    if numpy_in:
        crop_out = crop_out.cpu().numpy()
    return Alignment(image=crop_out, matrix=fin(tr.matrix), inverse=fin(inverse), landmarks=fin(lm_crop),
                     lm5=fin(lm5_crop), scale=fin(tr.scale), center=fin(tr.center), angle=fin(tr.angle),
                     size=int(target_size))
