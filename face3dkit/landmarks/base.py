"""Landmark data types, the detector protocol and the 68 -> 5 point reduction.

Coordinates are face3dkit pixel coordinates (docs/conventions.md): x right, y down, origin at the
top-left *corner* of the image, the centre of pixel (row i, column j) at ``(j + 0.5, i + 0.5)``.
Tools that report integer pixel indices (dlib, OpenCV, MTCNN, Deng et al.'s ``detections/``)
place that centre at ``(j, i)``; their values get ``+ 0.5`` on the way in.

The 68 points follow the iBUG 300-W / Multi-PIE mark-up (0-based here): jaw 0-16, eyebrows
17-26, nose 27-35, eyes 36-47 (36-41 image-left eye, 42-47 image-right eye), mouth 48-67.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LM5_NAMES",
    "SELECT_CHOICES",
    "FaceLandmarks",
    "LandmarkDetector",
    "LandmarkError",
    "DetectorUnavailableError",
    "lm68_to_lm5",
    "select_faces",
]

#: Order of the 5 points everywhere in face3dkit (Deng et al.'s ``extract_5p`` order).
LM5_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")

Select = Literal["all", "largest", "center"]

#: Names accepted by :func:`select_faces` (``--faces``).
SELECT_CHOICES: tuple[str, ...] = ("all", "largest", "center")


class LandmarkError(ValueError):
    """Landmarks could not be obtained (bad landmark file, no file for an image, ...); one line."""


class DetectorUnavailableError(LandmarkError):
    """A detection backend is missing (e.g. dlib or its model files are not installed); one line."""


@dataclass
class FaceLandmarks:
    """Landmarks of one face in one image.

    Attributes:
        points: (K, 2) float64 pixel coordinates (face3dkit convention: pixel centres at +0.5),
            K = 68 (iBUG order) or 5 (:data:`LM5_NAMES` order, e.g. Deng et al.'s detection files).
        box: (x0, y0, x1, y1) face box in pixels, corners (x1, y1 exclusive: a box covering
            pixel columns 10..19 is ``x0 = 10, x1 = 20``).
        score: detector confidence (dlib HOG: SVM margin, CNN: MMOD confidence; files: 1.0).
        source: where the landmarks came from, e.g. ``'dlib-hog'`` or the landmark file path.
    """

    points: np.ndarray
    box: tuple[float, float, float, float]
    score: float = 1.0
    source: str = field(default="")

    @property
    def lm5(self) -> np.ndarray:
        """(5, 2) the five alignment points in :data:`LM5_NAMES` order (see :func:`lm68_to_lm5`)."""
        if self.points.shape[0] == 5:
            return self.points
        return lm68_to_lm5(self.points)

    @property
    def area(self) -> float:
        """Area of :attr:`box` in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    @staticmethod
    def box_of(points: np.ndarray) -> tuple[float, float, float, float]:
        """Tight (x0, y0, x1, y1) box of (K, 2) points."""
        lo, hi = points.min(0), points.max(0)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


@runtime_checkable
class LandmarkDetector(Protocol):
    """Anything that finds faces and their landmarks in an image.

    ``detect(image, path=None)`` takes an (H, W, 3) uint8 RGB array (as :func:`face3dkit.io.load_image`
    returns) and, for backends that read files next to the image, the image's path; it returns one
    :class:`FaceLandmarks` per face (possibly none), best first.
    """

    def detect(self, image: np.ndarray, path: str | Path | None = None) -> list[FaceLandmarks]:
        """Faces found in ``image``; see the class docstring."""
        ...


def select_faces(faces: list[FaceLandmarks], select: Select,
                 image_shape: tuple[int, ...] | None = None) -> list[FaceLandmarks]:
    """Keep ``'all'`` faces, the ``'largest'`` (largest box area) or the ``'center'`` one.

    ``'center'`` keeps the face whose box centre is closest to the image centre (the usual choice for
    portraits and passport-style photos); it needs ``image_shape`` ``(H, W, ...)``. Ties keep the
    earlier face (detectors list faces best score first).
    """
    if select == "all":
        return list(faces)
    if select not in ("largest", "center"):
        raise ValueError(f"select must be one of {', '.join(SELECT_CHOICES)}, got {select!r}")
    if not faces:
        return []
    if select == "largest":
        best = max(range(len(faces)), key=lambda i: (faces[i].area, -i))
        return [faces[best]]
    if image_shape is None or len(image_shape) < 2:
        raise ValueError("select='center' needs the image shape (H, W)")
    cy, cx = image_shape[0] / 2.0, image_shape[1] / 2.0

    def dist2(f: FaceLandmarks) -> float:
        x0, y0, x1, y1 = f.box
        return ((x0 + x1) / 2 - cx) ** 2 + ((y0 + y1) / 2 - cy) ** 2

    best = min(range(len(faces)), key=lambda i: (dist2(faces[i]), i))
    return [faces[best]]


# 0-based iBUG indices used by the reduction.
_LEFT_EYE_CORNERS = (36, 39)
_RIGHT_EYE_CORNERS = (42, 45)
_LEFT_EYE_ALL = (36, 37, 38, 39, 40, 41)
_RIGHT_EYE_ALL = (42, 43, 44, 45, 46, 47)
_NOSE_TIP = 30
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54


def lm68_to_lm5(points: np.ndarray | Tensor, eyes: Literal["corners", "contour"] = "corners") -> np.ndarray | Tensor:
    """Reduce 68 iBUG landmarks to the 5 alignment points of Deng et al. 2019.

    Order (:data:`LM5_NAMES`): image-left eye centre, image-right eye centre, nose tip, image-left
    mouth corner, image-right mouth corner. With 0-based iBUG indices:

    - ``eyes='corners'`` (default, exactly Deng et al.'s ``extract_5p`` / ``load_lm3d``: 1-based
      ``[31, 37, 40, 43, 46, 49, 55]``): eyes = mean of the two corners ``(36, 39)`` and
      ``(42, 45)``; nose tip 30; mouth corners 48 and 54.
    - ``eyes='contour'``: eyes = mean of all six eye-contour points 36-41 and 42-47 (the same up
      to a small vertical shift; use it only with a template reduced the same way).

    Args:
        points: (..., 68, 2) or (..., 68, 3) numpy array or tensor (any device/dtype).
        eyes: eye-centre definition, see above.

    Returns:
        (..., 5, D) of the same type, dtype and device.
    """
    if points.shape[-2] != 68:
        raise ValueError(f"lm68_to_lm5 expects (..., 68, D) landmarks, got {tuple(points.shape)}")
    if eyes == "corners":
        le, re_ = _LEFT_EYE_CORNERS, _RIGHT_EYE_CORNERS
    elif eyes == "contour":
        le, re_ = _LEFT_EYE_ALL, _RIGHT_EYE_ALL
    else:
        raise ValueError(f"eyes must be 'corners' or 'contour', got {eyes!r}")
    if isinstance(points, Tensor):
        return torch.stack([
            points[..., list(le), :].mean(-2),
            points[..., list(re_), :].mean(-2),
            points[..., _NOSE_TIP, :],
            points[..., _MOUTH_LEFT, :],
            points[..., _MOUTH_RIGHT, :],
        ], dim=-2)
    p = np.asarray(points)
    return np.stack([
        p[..., list(le), :].mean(-2),
        p[..., list(re_), :].mean(-2),
        p[..., _NOSE_TIP, :],
        p[..., _MOUTH_LEFT, :],
        p[..., _MOUTH_RIGHT, :],
    ], axis=-2)
