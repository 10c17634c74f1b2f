"""Geometry: rotations, rigid transforms, cameras and POS pose estimation (docs/conventions.md)."""

from face3dkit.geometry.camera import (
    PerspectiveCamera,
    WeakPerspectiveCamera,
    intrinsics_matrix,
    perspective_project,
    weak_perspective_project,
)
from face3dkit.geometry.pos import PosResult, pos_similarity
from face3dkit.geometry.rotation import (
    degrees,
    euler_to_rotation,
    rigid_transform,
    rotate,
    rotation_to_euler,
    yaw_pitch_roll_degrees,
)

__all__ = [
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "intrinsics_matrix",
    "perspective_project",
    "weak_perspective_project",
    "PosResult",
    "pos_similarity",
    "degrees",
    "euler_to_rotation",
    "rigid_transform",
    "yaw_pitch_roll_degrees",
    "rotate",
    "rotation_to_euler",
]
