"""dlib face detection (HOG or CNN/MMOD) + the 68-point shape predictor.

dlib and the model files are optional: ``pip install dlib-bin face_recognition_models`` (or
``pip install 'face3dkit[landmarks]'``). The ``.dat`` files are found inside the installed
``face_recognition_models`` package *without importing it* (its ``__init__`` needs
``pkg_resources``, gone from recent setuptools), or given explicitly.

dlib reports integer pixel indices; face3dkit pixel centres are at +0.5 (docs/conventions.md), so
``+0.5`` is added to every point, and a dlib rectangle ``[left, right] x [top, bottom]`` (inclusive
pixel indices) becomes the box ``(left, top, right + 1, bottom + 1)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from face3dkit.landmarks.base import SELECT_CHOICES, DetectorUnavailableError, FaceLandmarks, Select, select_faces
from face3dkit.landmarks.boxes import nms

__all__ = ["CNN_TO_HOG_BOX", "DlibDetector", "INSTALL_HINT", "cnn_to_hog_rect", "dlib_available", "find_dlib_model"]

INSTALL_HINT = "install them with `pip install dlib-bin face_recognition_models` or use `--landmarks file`"

PREDICTOR_68 = "shape_predictor_68_face_landmarks.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"

#: Box of the HOG detector in terms of the MMOD CNN detector's box of the same face: centre shifted
#: right by 0.022 and down by 0.064 box widths, side 1.093 times larger. dlib's 68-point predictor
#: was trained on HOG boxes and places the points worse inside the CNN's boxes. Medians over the 41
#: faces of 50 renders of the default model that both detectors found (``benchmarks/dlib_boxes.py
#: --seed 1``); checked on the independent scenes of the reconstruction benchmark (seed 0).
CNN_TO_HOG_BOX = (0.022, 0.064, 1.093)


def find_dlib_model(name: str) -> Path | None:
    """Path of ``name`` (e.g. ``shape_predictor_68_face_landmarks.dat``) in the installed
    ``face_recognition_models`` package's ``models/`` folder, or None when absent.

    The package is located with :func:`importlib.util.find_spec` and never imported.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    if not locations and spec.origin:
        locations = [str(Path(spec.origin).parent)]
    for loc in locations:
        p = Path(loc) / "models" / name
        if p.is_file():
            return p
    return None


def dlib_available() -> bool:
    """True when dlib imports and its 68-point shape predictor file is found (:func:`find_dlib_model`):
    the ``'dlib'`` backend can run."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return find_dlib_model("shape_predictor_68_face_landmarks.dat") is not None


def _import_dlib() -> Any:
    try:
        return importlib.import_module("dlib")
    except ImportError as e:
        raise DetectorUnavailableError(f"dlib is not installed ({e}); {INSTALL_HINT}") from None


def _model_path(given: str | os.PathLike | None, name: str, what: str) -> Path:
    if given is not None:
        p = Path(given)
        if not p.is_file():
            raise DetectorUnavailableError(f"{p}: {what} file not found")
        return p
    p = find_dlib_model(name)
    if p is None:
        raise DetectorUnavailableError(
            f"dlib {what} {name} not found (package face_recognition_models missing); {INSTALL_HINT}"
        )
    return p


class DlibDetector:
    """dlib's frontal face detector + 68-point shape predictor (the default landmark backend).

    Args:
        detector: ``'hog'`` (``dlib.get_frontal_face_detector()``, fast, frontal to ~45 deg yaw) or
            ``'cnn'`` (``mmod_human_face_detector.dat``, more robust, slow on CPU).
        upsample: times the image is upsampled before detection (finds faces smaller than ~80 px at
            0, ~40 px at 1; each step costs ~4x time), or several such counts: the detector runs at
            each and the detections are merged by :func:`~face3dkit.landmarks.boxes.nms` (IoU
            ``merge_iou``; of overlapping boxes the one from the most upsampled run is kept, as
            dlib's predictor works best in it; faces only a less upsampled run finds are added).
            Default: ``(0, 1)`` for HOG (dlib's
            pyramid steps by 5/6 from each start, so the two runs interleave; a face turned ~60° that
            upsample 1 misses is found at 0, and small faces only at 1: ``benchmarks/detect.py``), 1
            for the CNN (each CNN run costs seconds on a CPU).
        scales: extra image resize factors (e.g. ``(1.5,)``), each run at upsample 0 and merged the
            same way; boxes and points are mapped back to the original image.
        merge_iou: overlap above which two detections are the same face.
        predictor_path: a 68-point ``shape_predictor`` ``.dat``; default: the one in
            ``face_recognition_models``.
        cnn_model_path: the MMOD ``.dat`` for ``detector='cnn'``; default: from
            ``face_recognition_models``.
        select: ``'all'`` faces (best score first), the ``'largest'`` one or the ``'center'`` one (box
            centre closest to the image centre).
        threshold: HOG ``adjust_threshold`` (lower finds more, less certain faces) / minimum CNN
            confidence.
        cnn_box_correction: give the shape predictor the CNN box mapped to where the HOG detector
            puts its box (:data:`CNN_TO_HOG_BOX`); the reported ``box`` stays the detector's.

    Raises:
        DetectorUnavailableError: dlib or a model file is missing (one line with the install hint).
    """

    def __init__(self, detector: Literal["hog", "cnn"] = "hog", upsample: int | Sequence[int] | None = None,
                 predictor_path: str | os.PathLike | None = None, cnn_model_path: str | os.PathLike | None = None,
                 select: Select = "all", threshold: float = 0.0, cnn_box_correction: bool = True,
                 scales: Sequence[float] = (), merge_iou: float = 0.3) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        if select not in SELECT_CHOICES:
            raise ValueError(f"select must be one of {', '.join(SELECT_CHOICES)}, got {select!r}")
        self.kind = detector
        if upsample is None:
            upsample = (0, 1) if detector == "hog" else 1
        ups = (upsample,) if isinstance(upsample, int) else tuple(upsample)
        if not ups or any(int(u) != u or u < 0 for u in ups):
            raise ValueError(f"upsample must be a count >= 0 or several, got {upsample!r}")
        self.upsample: tuple[int, ...] = tuple(int(u) for u in ups)
        self.scales = tuple(float(f) for f in scales)
        if any(f <= 0 for f in self.scales):
            raise ValueError(f"scales must be > 0, got {scales!r}")
        self.merge_iou = float(merge_iou)
        self.select: Select = select
        self.threshold = float(threshold)
        self.cnn_box_correction = bool(cnn_box_correction)
        dlib = _import_dlib()
        self._dlib = dlib
        self.predictor_path = _model_path(predictor_path, PREDICTOR_68, "68-point shape predictor")
        try:
            self._predictor = dlib.shape_predictor(str(self.predictor_path))
        except RuntimeError as e:
            raise DetectorUnavailableError(f"{self.predictor_path}: not a dlib shape predictor ({e})") from None
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
            self.cnn_model_path = None
        else:
            self.cnn_model_path = _model_path(cnn_model_path, CNN_DETECTOR, "CNN face detector")
            try:
                self._detector = dlib.cnn_face_detection_model_v1(str(self.cnn_model_path))
            except RuntimeError as e:
                raise DetectorUnavailableError(f"{self.cnn_model_path}: not a dlib MMOD model ({e})") from None

    def __repr__(self) -> str:
        return (f"DlibDetector(detector={self.kind!r}, upsample={self.upsample}, scales={self.scales}, "
                f"select={self.select!r})")

    def _run(self, image: np.ndarray, upsample: int) -> list[tuple[Any, float]]:
        """One detector run: (dlib rectangle, score) pairs."""
        if self.kind == "hog":
            rects, scores, _ = self._detector.run(image, upsample, self.threshold)
            return list(zip(rects, (float(s) for s in scores), strict=True))
        dets = self._detector(image, upsample)
        return [(d.rect, float(d.confidence)) for d in dets if float(d.confidence) >= self.threshold]

    def _rects(self, image: np.ndarray) -> list[tuple[Any, float]]:
        """Detections of every upsample count and extra scale, merged: one (rectangle, score) per face,
        best score first."""
        # Where runs overlap, the box of the run with the most upsampling wins (then the extra scales,
        # largest first), whatever the scores: dlib's predictor places the points better in those
        # boxes (benchmarks/reconstruct.py seed 0: yaw error 2.51 deg with upsample-1 boxes, 2.76 deg
        # when the best score picked upsample-0 boxes); faces only another run finds are added.
        found: list[tuple[Any, float]] = []
        rank: list[int] = []
        for k, u in enumerate(sorted(self.upsample, reverse=True)):
            new = self._run(image, u)
            found += new
            rank += [k] * len(new)
        for k, f in enumerate(sorted(self.scales, reverse=True), start=len(self.upsample)):
            h, w = image.shape[:2]
            size = (max(1, round(w * f)), max(1, round(h * f)))
            resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            fx, fy = w / size[0], h / size[1]
            for r, sc in self._run(np.ascontiguousarray(resized), 0):
                found.append((self._dlib.rectangle(int(round(r.left() * fx)), int(round(r.top() * fy)),
                                                   int(round((r.right() + 1) * fx)) - 1,
                                                   int(round((r.bottom() + 1) * fy)) - 1), sc))
                rank.append(k)
        if len(self.upsample) + len(self.scales) == 1 or len(found) <= 1:
            return sorted(found, key=lambda d: -d[1])
        boxes = torch.tensor([_corners(r) for r, _ in found], dtype=torch.float64)
        scores = torch.tensor([s for _, s in found], dtype=torch.float64)
        # priority: run rank first, score within a run (scores span a few units, so 1e3 separates ranks)
        keep = nms(boxes, scores - 1e3 * torch.tensor(rank, dtype=torch.float64), self.merge_iou)
        return sorted((found[i] for i in keep.tolist()), key=lambda d: -d[1])

    def _predictor_box(self, rect: Any) -> Any:
        """The rectangle handed to the shape predictor (the CNN box mapped to a HOG-like box)."""
        if self.kind != "cnn" or not self.cnn_box_correction:
            return rect
        return cnn_to_hog_rect(rect, self._dlib)

    def detect(self, image: np.ndarray, path: str | Path | None = None) -> list[FaceLandmarks]:
        """Detect faces and their 68 landmarks.

        Args:
            image: (H, W, 3) uint8 RGB or (H, W) uint8 grayscale.
            path: ignored (protocol compatibility).

        Returns:
            faces, best detector score first (or only the largest with ``select='largest'``);
            ``points`` (68, 2) in face3dkit pixel coordinates.
        """
        img = np.asarray(image)
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"DlibDetector expects an (H, W, 3) or (H, W) uint8 image, got {img.dtype} {img.shape}")
        img = np.ascontiguousarray(img)
        faces = []
        for rect, score in self._rects(img):
            shape = self._predictor(img, self._predictor_box(rect))
            if shape.num_parts != 68:
                raise DetectorUnavailableError(
                    f"{self.predictor_path}: the shape predictor gives {shape.num_parts} points, expected 68 (iBUG)")
            pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
            box = _corners(rect)
            faces.append(FaceLandmarks(points=pts + 0.5, box=box, score=score, source=f"dlib-{self.kind}"))
        faces.sort(key=lambda f: -f.score)
        return select_faces(faces, self.select, img.shape[:2])


def _corners(rect: Any) -> tuple[float, float, float, float]:
    """A dlib rectangle (inclusive pixel indices) as corners (x0, y0, x1, y1)."""
    return (float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1))


def cnn_to_hog_rect(rect: Any, dlib: Any, shift: tuple[float, float, float] = CNN_TO_HOG_BOX) -> Any:
    """Map a dlib rectangle of the CNN detector to the HOG detector's box of the same face.

    With ``(dx, dy, s) = shift`` and the rectangle's centre ``(cx, cy)`` and width ``w`` (dlib's
    inclusive ``right - left``), the new square box has centre ``(cx + dx w, cy + dy w)`` and width
    ``s w``, rounded to whole pixels.
    """
    dx, dy, s = shift
    w = rect.right() - rect.left()
    cx, cy = (rect.left() + rect.right()) / 2 + dx * w, (rect.top() + rect.bottom()) / 2 + dy * w
    half = s * w / 2
    return dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)), int(round(cy + half)))
