"""Cameras: Deng et al.'s pinhole camera and a weak-perspective (scaled orthographic) camera.

Pixel coordinates are x right, y down, pixel centres at half-integers (docs/conventions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "perspective_project",
    "weak_perspective_project",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "intrinsics_matrix",
]


def perspective_project(
    points: Tensor,
    focal: float | Tensor = 1015.0,
    center: tuple[float, float] | Tensor = (112.0, 112.0),
    camera_distance: float = 10.0,
) -> Tensor:
    """Pinhole projection of Deng et al. 2019 with the camera at ``z = camera_distance``.

    ``d = camera_distance - z``, ``u = cx + f x / d``, ``v = cy - f y / d`` (image y points down).

    Args:
        points: (B, N, 3) world points (after the rigid transform), model units.
        focal: focal length in pixels (scalar, or (B,) tensor).
        center: principal point (cx, cy) in pixels, or a (B, 2) tensor.
        camera_distance: camera position on the +z axis, model units.

    Returns:
        (B, N, 3) screen points ``(u, v, d)``: pixels, pixels, depth in model units (> 0 in front).
    """
    depth = camera_distance - points[..., 2]
    focal_t = torch.as_tensor(focal, dtype=points.dtype, device=points.device)
    center_t = torch.as_tensor(center, dtype=points.dtype, device=points.device)
    if focal_t.ndim == 1:
        focal_t = focal_t[:, None]
    if center_t.ndim == 2:
        cx, cy = center_t[:, None, 0], center_t[:, None, 1]
    else:
        cx, cy = center_t[0], center_t[1]
    u = cx + focal_t * points[..., 0] / depth
    v = cy - focal_t * points[..., 1] / depth
    return torch.stack([u, v, depth], -1)


def weak_perspective_project(points: Tensor, scale: Tensor, trans2d: Tensor, image_size: int | None = None) -> Tensor:
    """Scaled orthographic projection ``u = s x + tx``, ``v = H - (s y + ty)`` (y flipped to point down).

    Args:
        points: (B, N, 3) rotated points.
        scale: (B,) or (B, 1) pixels per model unit.
        trans2d: (B, 2) translation in pixels (y measured upward from the image bottom, as POS gives).
        image_size: image height H for the flip; if None, v is returned with y up (``s y + ty``).

    Returns:
        (B, N, 3) ``(u, v, depth)`` where depth is ``-z`` (larger is farther), for z-ordering only.
    """
    s = scale.reshape(-1, 1)
    u = s * points[..., 0] + trans2d[:, None, 0]
    v = s * points[..., 1] + trans2d[:, None, 1]
    if image_size is not None:
        v = image_size - v
    return torch.stack([u, v, -points[..., 2]], -1)


def intrinsics_matrix(focal: float, cx: float, cy: float) -> Tensor:
    """3x3 intrinsics ``K`` for the y-down pixel convention (a point ``(x, -y, d)`` maps by ``K``)."""
    return torch.tensor([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


@dataclass
class PerspectiveCamera:
    """Deng et al.'s camera: focal 1015 px, principal point (112, 112), camera at z = 10, 224 px image.

    Attributes:
        focal: focal length in pixels.
        cx, cy: principal point in pixels.
        camera_distance: camera z position in model units.
        image_size: output image side (square) or (H, W).
    """

    focal: float = 1015.0
    cx: float = 112.0
    cy: float = 112.0
    camera_distance: float = 10.0
    image_size: int | tuple[int, int] = 224

    @classmethod
    def for_image_size(cls, size: int, focal: float | None = None, camera_distance: float = 10.0) -> PerspectiveCamera:
        """The default camera rescaled to a square image of ``size`` px (focal scales with size)."""
        f = 1015.0 * size / 224.0 if focal is None else focal
        return cls(focal=f, cx=size / 2.0, cy=size / 2.0, camera_distance=camera_distance, image_size=size)

    @property
    def height_width(self) -> tuple[int, int]:
        """(H, W) of the image."""
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        return (int(self.image_size[0]), int(self.image_size[1]))

    def to_screen(self, points: Tensor) -> Tensor:
        """(B, N, 3) world points → (B, N, 3) screen points ``(u, v, d)`` (see :func:`perspective_project`)."""
        return perspective_project(points, self.focal, (self.cx, self.cy), self.camera_distance)

    def project(self, points: Tensor) -> Tensor:
        """(B, N, 3) world points → (B, N, 2) pixel coordinates."""
        return self.to_screen(points)[..., :2]


@dataclass
class WeakPerspectiveCamera:
    """Scaled orthographic camera with per-batch scale (B,) and 2D translation (B, 2) (pixels)."""

    scale: Tensor
    trans2d: Tensor
    image_size: int = 224

    @property
    def height_width(self) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def to_screen(self, points: Tensor) -> Tensor:
        """(B, N, 3) → (B, N, 3) ``(u, v, depth)``; depth is offset to stay positive for rasterizers."""
        out = weak_perspective_project(points, self.scale, self.trans2d, self.image_size)
        return torch.cat([out[..., :2], out[..., 2:] + 1e3], -1)

    def project(self, points: Tensor) -> Tensor:
        return self.to_screen(points)[..., :2]
