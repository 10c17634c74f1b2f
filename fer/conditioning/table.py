"""Per-image geometry arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fer.labels import yaw_bin

__all__ = ["GeometryTable"]


@dataclass
class GeometryTable:
    """Geometry of N images.

    Attributes:
        pose: (N, 3) float32 (yaw, pitch, roll) in degrees (face3dkit convention: yaw > 0 turns the
            face toward image right); NaN where unknown.
        landmarks: (N, 68, 2) float32 iBUG landmarks normalised to the crop: ``(x / W, y / H)``,
            x right, y down, pixel centres at +0.5 before normalising; zeros where unknown.
        valid: (N,) bool, geometry available.
        exp: (N, K) float32 fitted morphable-model expression coefficients (``3dmm`` provider; K =
            the model's ``n_exp``), zeros where invalid; None for providers that fit no model.
        exp_mirror: (K,) int64 permutation taking the coefficients of a face to those of its mirror
            image (left/right components swapped), or None when the model names no such pairs.
        stats: counts of how the table was made (``cached``, ``computed``, ``failed``).
    """

    pose: np.ndarray
    landmarks: np.ndarray
    valid: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)
    exp: np.ndarray | None = None
    exp_mirror: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int, n_exp: int = 0) -> GeometryTable:
        """N invalid entries (with an all-zero (N, n_exp) ``exp`` when ``n_exp > 0``)."""
        return cls(np.full((n, 3), np.nan, np.float32), np.zeros((n, 68, 2), np.float32), np.zeros(n, bool),
                   exp=np.zeros((n, n_exp), np.float32) if n_exp > 0 else None)

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def pose_class(self) -> np.ndarray:
        """(N,) int64 yaw bin (fer.labels.yaw_bin), -1 where invalid."""
        return np.where(self.valid, yaw_bin(np.nan_to_num(self.pose[:, 0])), -1)

    def take(self, idx: np.ndarray | list[int]) -> GeometryTable:
        """Rows ``idx`` as a new table."""
        idx = np.asarray(idx, dtype=np.int64)
        return GeometryTable(self.pose[idx], self.landmarks[idx], self.valid[idx], dict(self.stats),
                             None if self.exp is None else self.exp[idx], self.exp_mirror)

    def put(self, idx: np.ndarray | list[int], other: GeometryTable) -> None:
        """Write ``other``'s rows at ``idx`` in place (``exp`` is allocated on the first rows that have it)."""
        idx = np.asarray(idx, dtype=np.int64)
        self.pose[idx] = other.pose
        self.landmarks[idx] = other.landmarks
        self.valid[idx] = other.valid
        if other.exp is not None:
            if self.exp is None:
                self.exp = np.zeros((len(self), other.exp.shape[1]), np.float32)
            if self.exp.shape[1] != other.exp.shape[1]:
                raise ValueError(f"geometry rows with {other.exp.shape[1]} expression coefficients put into a "
                                 f"table of {self.exp.shape[1]}")
            self.exp[idx] = other.exp
