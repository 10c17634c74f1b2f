"""Euler angles and rigid transforms (Deng et al. 2019 conventions, see docs/conventions.md)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "euler_to_rotation",
    "rotation_to_euler",
    "rotate",
    "rigid_transform",
    "yaw_pitch_roll_degrees",
]


def euler_to_rotation(angles: Tensor) -> Tensor:
    """Rotation matrices from Euler angles.

    ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` with right-handed rotations about the x, y and z axes.

    Args:
        angles: (..., 3) radians, ordered (pitch, yaw, roll) = rotation about (x, y, z), the
            order of the ``angles`` slice of Deng et al.'s coefficient vector.

    Returns:
        (..., 3, 3) rotation matrices acting on column vectors; with row vectors use
        :func:`rotate` (``v @ R.T``).
    """
    if angles.shape[-1] != 3:
        raise ValueError(f"angles must have a last dimension of 3, got shape {tuple(angles.shape)}")
    x, y, z = angles.unbind(-1)
    cx, sx = torch.cos(x), torch.sin(x)
    cy, sy = torch.cos(y), torch.sin(y)
    cz, sz = torch.cos(z), torch.sin(z)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1)
    shape = angles.shape[:-1] + (3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def rotation_to_euler(rot: Tensor) -> Tensor:
    """Inverse of :func:`euler_to_rotation`.

    Args:
        rot: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) (pitch, yaw, roll) in radians; yaw in [-pi/2, pi/2]. At gimbal lock
        (|yaw| = pi/2) roll is set to 0.
    """
    # R = Rz Ry Rx: R[2,0] = -sin(yaw), R[2,1] = cos(yaw) sin(pitch), R[2,2] = cos(yaw) cos(pitch),
    # R[1,0] = sin(roll) cos(yaw), R[0,0] = cos(roll) cos(yaw).
    sy = (-rot[..., 2, 0]).clamp(-1.0, 1.0)
    yaw = torch.asin(sy)
    cos_yaw = torch.sqrt(rot[..., 2, 1] ** 2 + rot[..., 2, 2] ** 2)
    locked = cos_yaw < 1e-6
    pitch = torch.where(
        locked, torch.atan2(-rot[..., 1, 2], rot[..., 1, 1]), torch.atan2(rot[..., 2, 1], rot[..., 2, 2])
    )
    roll = torch.where(locked, torch.zeros_like(yaw), torch.atan2(rot[..., 1, 0], rot[..., 0, 0]))
    return torch.stack([pitch, yaw, roll], -1)


def rotate(points: Tensor, rot: Tensor) -> Tensor:
    """Rotate row-vector points: ``points @ rot.T``.

    Args:
        points: (B, N, 3).
        rot: (B, 3, 3) or (3, 3) rotation matrices (column-vector convention).

    Returns:
        (B, N, 3) rotated points.
    """
    return points @ rot.transpose(-1, -2)


def rigid_transform(points: Tensor, angles: Tensor, trans: Tensor, *,
                    return_rotation: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Rigid transform of Deng et al.: ``v @ R(angles).T + t`` (the one pose of the library:
    :meth:`face3dkit.MorphableModel.posed_points` and the model's forward use it).

    Args:
        points: (B, N, 3) model-space points.
        angles: (B, 3) (pitch, yaw, roll) radians.
        trans: (B, 3) translation, model units.
        return_rotation: also return the rotations.

    Returns:
        (B, N, 3) world (camera-frame) points, and with ``return_rotation`` R (B, 3, 3).
    """
    rot = euler_to_rotation(angles.to(points.dtype))
    out = rotate(points, rot) + trans.to(points.dtype)[:, None, :]
    return (out, rot) if return_rotation else out


def degrees(angles: Tensor) -> Tensor:
    """Radians to degrees (convenience for pose reports)."""
    return angles * (180.0 / math.pi)


def yaw_pitch_roll_degrees(angles: Tensor) -> Tensor:
    """(B, 3) (pitch, yaw, roll) radians → (B, 3) (yaw, pitch, roll) degrees, the order of every
    pose report (summaries, ``pose.json``, FER geometry)."""
    return torch.stack([angles[:, 1], angles[:, 0], angles[:, 2]], -1) * (180.0 / math.pi)
