"""Batch augmentation that keeps geometry consistent: horizontal flips and small similarity jitter
(and, optional, photometric jitter and random erasing, which leave the geometry alone).

A flip mirrors the image, mirrors the 68 landmarks (x -> 1 - x with the iBUG left/right
permutation) and negates yaw and roll, so the pose class moves to the mirrored yaw bin. The
jitter (scale and translation, ``grid_sample`` with border padding) moves the landmarks with the
image. Fitted expression coefficients (``geom_exp``) are mirrored with the model's left/right
permutation; without one, samples carrying them are not flipped. Sequence batches (``frames``
(B, T, 3, H, W), ``frame_landmarks`` (B, T, 68, 2)) get the same transform for every frame of a
sample. Randomness comes from a generator seeded by (seed, step): a resumed run augments exactly
as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fer.labels import NUM_YAW_BINS

__all__ = ["IBUG_FLIP", "augment_batch", "color_jitter", "mirror_batch", "random_erase"]


def _ibug_flip() -> list[int]:
    """Index permutation mapping each iBUG-68 point to its mirror-image counterpart."""
    pairs = [(i, 16 - i) for i in range(8)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(5)]  # eyebrows
    pairs += [(31, 35), (32, 34)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]  # mouth
    perm = list(range(68))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


#: Mirror permutation of the iBUG 68 points (self-mirrored points map to themselves).
IBUG_FLIP: list[int] = _ibug_flip()


def augment_batch(batch: dict[str, Any], generator: torch.Generator, flip: bool = True, scale: float = 0.08,
                  shift: float = 0.06, exp_mirror: Any = None, color: float = 0.0, erase: float = 0.0
                  ) -> dict[str, Any]:
    """Augmented copy of a batch (``image`` (B, 3, H, W) in [0, 1], optional geometry fields).

    Args:
        batch: collated samples (see :mod:`fer.data.base`).
        generator: CPU generator driving every random choice.
        flip: mirror half of the samples.
        scale: zoom drawn from U(1 - scale, 1 + scale).
        shift: translation drawn from U(-shift, shift) of the image side, per axis.
        exp_mirror: (K,) permutation of ``geom_exp`` under a flip
            (:attr:`fer.conditioning.GeometryTable.exp_mirror`); None with ``geom_exp`` present: no flips.
        color: photometric jitter (:func:`color_jitter`): contrast and brightness of each sample
            within ``color`` (0: off). Geometry is not touched.
        erase: probability of erasing one random rectangle of a sample (:func:`random_erase`,
            Zhong et al. 2020; 0: off). Geometry is not touched.

    With ``color`` and ``erase`` at 0 the draws (and so the batches) are those of the geometric
    augmentation alone; their draws come after it.
    """
    b = batch["image"].shape[0]
    do_flip = (torch.rand(b, generator=generator) < 0.5) if flip else torch.zeros(b, dtype=torch.bool)
    s = 1.0 + (torch.rand(b, generator=generator) * 2 - 1) * scale
    t = (torch.rand(b, 2, generator=generator) * 2 - 1) * shift * 2  # normalised coordinates span 2
    if "geom_exp" in batch and exp_mirror is None:
        do_flip = torch.zeros_like(do_flip)  # the coefficients of a mirrored face are unknown
    out = _transform_batch(batch, do_flip, s, t, exp_mirror)
    keys = [k for k in ("image", "frames") if k in out]
    if color > 0:
        c = 1.0 + (torch.rand(b, generator=generator) * 2 - 1) * color
        d = (torch.rand(b, generator=generator) * 2 - 1) * color / 2
        for k in keys:
            out[k] = color_jitter(out[k], c, d)
    if erase > 0:
        boxes = _erase_boxes(b, out["image"].shape[-2:], erase, generator)
        for k in keys:
            out[k] = random_erase(out[k], *boxes)
    return out


def color_jitter(images: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor) -> torch.Tensor:
    """Per-sample contrast (about the sample's mean) and brightness, clamped to [0, 1].

    Args:
        images: (B, C, H, W) or (B, T, C, H, W) frames (the same change for every frame of a sample).
        contrast: (B,) factors (1 = unchanged).
        brightness: (B,) offsets (0 = unchanged).
    """
    shape = (-1,) + (1,) * (images.dim() - 1)
    mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
    c = contrast.to(images).view(shape)
    return ((images - mean) * c + mean + brightness.to(images).view(shape)).clamp(0, 1)


def _erase_boxes(b: int, hw: Any, p: float, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(B,) pick, (B, 4) boxes (y0, y1, x0, x1) of 2-20 % of the image, aspect 0.3-3.3, and (B,) fill values."""
    h, w = int(hw[0]), int(hw[1])
    pick = torch.rand(b, generator=g) < p
    area = (0.02 + 0.18 * torch.rand(b, generator=g)) * h * w
    aspect = torch.exp(torch.empty(b).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g))
    bh = torch.sqrt(area * aspect).round().clamp(1, h)
    bw = torch.sqrt(area / aspect).round().clamp(1, w)
    y0 = (torch.rand(b, generator=g) * (h - bh + 1)).floor()
    x0 = (torch.rand(b, generator=g) * (w - bw + 1)).floor()
    fill = torch.rand(b, generator=g)
    return pick, torch.stack([y0, y0 + bh, x0, x0 + bw], 1).long(), fill


def random_erase(images: torch.Tensor, pick: torch.Tensor, boxes: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images with the rectangle ``boxes[i]`` = (y0, y1, x0, x1) (pixels, end exclusive) set to
    ``fill[i]`` where ``pick[i]``; (B, C, H, W) or (B, T, C, H, W) (every frame of a sample alike)."""
    h, w = images.shape[-2:]
    dev = images.device
    ys = torch.arange(h, device=dev)
    xs = torch.arange(w, device=dev)
    bx = boxes.to(dev)
    inside = ((ys[None, :, None] >= bx[:, 0, None, None]) & (ys[None, :, None] < bx[:, 1, None, None])
              & (xs[None, None, :] >= bx[:, 2, None, None]) & (xs[None, None, :] < bx[:, 3, None, None]))
    inside = inside & pick.to(dev)[:, None, None]  # (B, H, W)
    shape = (images.shape[0],) + (1,) * (images.dim() - 3) + (h, w)
    fill_v = fill.to(images).view((-1,) + (1,) * (images.dim() - 1))
    return torch.where(inside.view(shape), fill_v, images)


def mirror_batch(batch: dict[str, Any], exp_mirror: Any = None) -> dict[str, Any]:
    """Every sample of a batch mirrored left-right, nothing else changed (test-time flip): images
    and frames flipped exactly, landmarks mirrored and re-ordered, yaw and roll negated, pose
    classes and ``geom_exp`` mirrored (``exp_mirror`` required when the batch has ``geom_exp``)."""
    b = batch["image"].shape[0]
    if "geom_exp" in batch and exp_mirror is None:
        raise ValueError("mirror_batch: the batch has geom_exp but no exp_mirror permutation was given")
    return _transform_batch(batch, torch.ones(b, dtype=torch.bool), torch.ones(b), torch.zeros(b, 2), exp_mirror)


def _transform_batch(batch: dict[str, Any], do_flip: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
                     exp_mirror: Any) -> dict[str, Any]:
    """Copy of ``batch`` with sample i flipped where ``do_flip[i]`` (B,), zoomed by ``s[i]`` (B,) and
    shifted by ``t[i]`` (B, 2) in normalised coordinates."""
    img = batch["image"]
    b, dev = img.shape[0], img.device
    out = dict(batch)
    do_flip, s, t = do_flip.to(dev), s.to(dev, img.dtype), t.to(dev, img.dtype)
    fx = torch.where(do_flip, -1.0, 1.0).to(img.dtype)
    # output u_out samples the input at u_in = s * (fx * u_out) + t  (x); v_in = s * v_out + t_y
    theta = torch.zeros(b, 2, 3, device=dev, dtype=img.dtype)
    theta[:, 0, 0] = s * fx
    theta[:, 1, 1] = s
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    out["image"] = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if "frames" in batch:
        fr = batch["frames"]
        steps = fr.shape[1]
        out["frames"] = F.grid_sample(fr.flatten(0, 1), grid.repeat_interleave(steps, 0), mode="bilinear",
                                      padding_mode="border", align_corners=False).view_as(fr)
    perm = torch.tensor(IBUG_FLIP, device=dev)

    def move(lm: torch.Tensor) -> torch.Tensor:
        """(B, ..., 68, 2) landmarks through the flip and jitter of their sample."""
        shape = (b,) + (1,) * (lm.dim() - 1)
        flipped = torch.where(do_flip.view(shape), lm[..., perm, :], lm)
        u = flipped * 2 - 1  # to normalised coordinates
        tx, ty = t[:, 0].view(shape[:-1]), t[:, 1].view(shape[:-1])
        sv, fv = s.view(shape[:-1]), fx.view(shape[:-1])
        u_out = torch.stack([(u[..., 0] - tx) / (sv * fv), (u[..., 1] - ty) / sv], -1)
        known = (flipped.abs().sum((-1, -2)) > 0)[..., None, None]
        return torch.where(known, (u_out + 1) / 2, lm)

    if "landmarks" in batch:
        out["landmarks"] = move(batch["landmarks"])
    if "frame_landmarks" in batch:
        out["frame_landmarks"] = move(batch["frame_landmarks"])
    if "pose_class" in batch:
        p = batch["pose_class"]
        out["pose_class"] = torch.where(do_flip & (p >= 0), NUM_YAW_BINS - 1 - p, p)
    if "geom_exp" in batch and exp_mirror is not None:
        e = batch["geom_exp"]
        perm = torch.as_tensor(exp_mirror, dtype=torch.long, device=e.device)
        out["geom_exp"] = torch.where(do_flip[:, None], e[:, perm], e)
    for key in ("pose", "geom_pose"):
        if key in batch:
            q = batch[key].clone()
            q[:, 0] = torch.where(do_flip, -q[:, 0], q[:, 0])
            q[:, 2] = torch.where(do_flip, -q[:, 2], q[:, 2])
            out[key] = q
    return out
