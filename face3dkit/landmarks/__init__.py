"""Facial landmarks: detector backends, landmark files, and the 68 -> 5 point reduction.

All points are in face3dkit pixel coordinates (x right, y down, pixel centres at +0.5;
docs/conventions.md), 68 points in iBUG order or 5 in :data:`LM5_NAMES` order.

- :class:`FaceLandmarks` — ``points (K, 2)``, ``box (x0, y0, x1, y1)``, ``score``, ``source``.
- :class:`LandmarkDetector` — protocol ``detect(image uint8 (H, W, 3), path=None) -> list[FaceLandmarks]``.
- :class:`DlibDetector` — dlib HOG/CNN face detector + 68-point shape predictor (optional dependency:
  ``pip install dlib-bin face_recognition_models``).
- :class:`MTCNNDetector` — MTCNN (P-Net, R-Net, O-Net; facenet-pytorch's weights, optional:
  ``pip install --no-deps facenet-pytorch``): boxes + 5 points, dlib's 68 points where they agree.
- :func:`nms`, :func:`box_overlap` — box overlap and greedy non-maximum suppression in torch.
- :class:`FileLandmarks` — ``.pts`` / ``.txt`` / ``.npy`` files next to the images, in a
  ``detections/`` folder (Deng et al.) or in a landmarks folder.
- :func:`lm68_to_lm5` — Deng et al.'s 5 points (eye centres, nose tip, mouth corners).
- :func:`make_detector` — a backend by name (``'dlib'``, ``'dlib-cnn'``, ``'mtcnn'``, ``'file'``).
"""

from __future__ import annotations

from typing import Any

from face3dkit.landmarks.base import (
    LM5_NAMES,
    SELECT_CHOICES,
    DetectorUnavailableError,
    FaceLandmarks,
    LandmarkDetector,
    LandmarkError,
    lm68_to_lm5,
    select_faces,
)
from face3dkit.landmarks.boxes import batched_nms, box_overlap, nms, square_boxes
from face3dkit.landmarks.dlib_backend import DlibDetector, dlib_available, find_dlib_model
from face3dkit.landmarks.files import LANDMARK_SUFFIXES, FileLandmarks, read_landmark_file, write_landmark_file
from face3dkit.landmarks.mtcnn import MTCNNDetector

__all__ = [
    "LM5_NAMES",
    "LANDMARK_SUFFIXES",
    "SELECT_CHOICES",
    "BACKENDS",
    "DetectorUnavailableError",
    "DlibDetector",
    "FaceLandmarks",
    "FileLandmarks",
    "LandmarkDetector",
    "LandmarkError",
    "MTCNNDetector",
    "batched_nms",
    "box_overlap",
    "dlib_available",
    "find_dlib_model",
    "lm68_to_lm5",
    "make_detector",
    "nms",
    "read_landmark_file",
    "select_faces",
    "square_boxes",
    "write_landmark_file",
]

BACKENDS = ("dlib", "dlib-cnn", "mtcnn", "file")


def make_detector(name: str = "dlib", **kwargs: Any) -> LandmarkDetector:
    """A landmark backend by name.

    Args:
        name: ``'dlib'`` (HOG detector, upsample 0 and 1 merged), ``'dlib-cnn'`` (MMOD CNN detector),
            ``'mtcnn'`` (:class:`MTCNNDetector`) or ``'file'``.
        **kwargs: passed to :class:`DlibDetector` (``upsample``, ``predictor_path``, ``select``, ...),
            :class:`MTCNNDetector` (``weights``, ``points``, ``device``, ...) or :class:`FileLandmarks`
            (``landmarks_dir``, ``image_root``, ``select``, ...).

    Raises:
        DetectorUnavailableError: dlib, the MTCNN weights or a model file is missing (one line with
            the install hint).
        ValueError: an unknown name.
    """
    if name == "dlib":
        return DlibDetector(detector="hog", **kwargs)
    if name == "dlib-cnn":
        return DlibDetector(detector="cnn", **kwargs)
    if name == "mtcnn":
        return MTCNNDetector(**kwargs)
    if name == "file":
        return FileLandmarks(**kwargs)
    raise ValueError(f"unknown landmark backend {name!r}; choose one of {', '.join(BACKENDS)}")
