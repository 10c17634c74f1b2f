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
        stats: counts of how the table was made (``cached``, ``computed``, ``failed``).
    """

    pose: np.ndarray
    landmarks: np.ndarray
    valid: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> GeometryTable:
        """N invalid entries."""
        return cls(np.full((n, 3), np.nan, np.float32), np.zeros((n, 68, 2), np.float32), np.zeros(n, bool))

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def pose_class(self) -> np.ndarray:
        """(N,) int64 yaw bin (fer.labels.yaw_bin), -1 where invalid."""
        return np.where(self.valid, yaw_bin(np.nan_to_num(self.pose[:, 0])), -1)

    def take(self, idx: np.ndarray | list[int]) -> GeometryTable:
        """Rows ``idx`` as a new table."""
        idx = np.asarray(idx, dtype=np.int64)
        return GeometryTable(self.pose[idx], self.landmarks[idx], self.valid[idx], dict(self.stats))

    def put(self, idx: np.ndarray | list[int], other: GeometryTable) -> None:
        """Write ``other``'s rows at ``idx`` in place."""
        idx = np.asarray(idx, dtype=np.int64)
        self.pose[idx] = other.pose
        self.landmarks[idx] = other.landmarks
        self.valid[idx] = other.valid
