"""MTCNN face detector (Zhang et al. 2016): image pyramid → P-Net proposals → R-Net → O-Net, 5 points.

The three nets are :mod:`face3dkit.nets.mtcnn` with the weights facenet-pytorch ships
(``pip install --no-deps facenet-pytorch``; MIT licence; located without importing the package).
Everything else — pyramid, proposal decoding, box regression, NMS, crops — is done here in torch,
on the detector's device.

Coordinates (docs/conventions.md): boxes are corners ``(x0, y0, x1, y1)`` in face3dkit pixels. A
P-Net cell ``(i, j)`` of a pyramid level resized by ``(sx, sy)`` is the window
``[2 j, 2 j + 12) x [2 i, 2 i + 12)`` of that level, i.e. ``[2 j / sx, (2 j + 12) / sx) x ...`` of the
image. Regression offsets move each corner by a fraction of the box size
(``x0 + r0 w, y0 + r1 h, x1 + r2 w, y1 + r3 h``); P-Net's proposals are regressed before their
non-maximum suppression (IoU 0.5 within a pyramid level, 0.7 across levels; the original code
suppresses the raw cells first), R-Net's after theirs (0.7), O-Net's before a final suppression by
intersection over the smaller box (0.7). Crops for R-Net / O-Net are the box rounded to whole
pixels, edge-padded where it leaves the image (:func:`crop_boxes`), area-resampled to 24² / 48².
O-Net's points are fractions of its crop: ``x = x0 + p w`` (corner convention, so no +0.5 is added).

Five points come in :data:`face3dkit.landmarks.LM5_NAMES` order (image-left eye, image-right eye,
nose tip, image-left and image-right mouth corner) — the layout of Deng et al.'s ``detections/``
files, which the aligner and the fitter take as ``(B, 5, 2)``.

68 points (``points='68'`` or ``'auto'`` with dlib installed): dlib's 68-point predictor is run in
a box placed where dlib's HOG detector puts its box (:func:`mtcnn_to_hog_box`: centred on MTCNN's 5
points, sized by its box; the predictor was trained on HOG boxes). Its result is kept only where it
agrees with MTCNN's own 5 points (mean distance of its 68 → 5 reduction ≤ :data:`AGREEMENT` × MTCNN's
eye distance); otherwise the face keeps MTCNN's 5 points and is fitted from those (5-point fit), with
``source`` saying so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from face3dkit.landmarks.base import DetectorUnavailableError, FaceLandmarks, Select, lm68_to_lm5, select_faces
from face3dkit.landmarks.boxes import nms, square_boxes
from face3dkit.nets.mtcnn import load_mtcnn_nets, mtcnn_normalize

__all__ = ["AGREEMENT", "MTCNN_TO_HOG_BOX", "MTCNNDetector", "crop_boxes", "mtcnn_scales",
           "mtcnn_to_hog_box"]

#: Where dlib's HOG detector puts its (square) box, from MTCNN's result for the same face
#: ``(dx, dy, s)``: centre = mean of the 5 points + ``(dx, dy)`` · eye-to-mouth distance (eye midpoint
#: to mouth-corner midpoint), side = ``s`` · MTCNN box width. Medians over the 19 faces of the seed-1
#: renders both found (``benchmarks/detect.py --fit-boxes --per-bin 6 --seed 1``, HOG boxes of the
#: best-scoring run); the 5-point centre varies 3.6 % of the side horizontally against 13 % for a
#: shift of MTCNN's box centre. Refitted to the upsample-1-first HOG boxes of today's merge they
#: read (-0.045, -0.122, 1.082), with a slightly worse predictor NME (8.76 % vs 8.60 %): kept.
MTCNN_TO_HOG_BOX = (-0.027, -0.089, 1.110)
#: Largest mean distance between dlib's 68 → 5 points and MTCNN's 5 points, in MTCNN eye distances,
#: for the 68 points to be kept.
AGREEMENT = 0.25


def mtcnn_scales(height: int, width: int, min_face_size: float = 20.0, factor: float = 0.709) -> list[float]:
    """Pyramid scales: ``12 / min_face_size · factor^k`` while the shorter side stays ≥ 12 px."""
    if min_face_size <= 0 or not 0 < factor < 1:
        raise ValueError(f"need min_face_size > 0 and 0 < factor < 1, got {min_face_size}, {factor}")
    s, scales = 12.0 / min_face_size, []
    while min(height, width) * s >= 12:
        scales.append(s)
        s *= factor
    return scales


def crop_boxes(image: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Crops of ``boxes`` resampled to ``size × size``.

    Args:
        image: (C, H, W) float image.
        boxes: (N, 4) corners; rounded to whole pixels. Parts outside the image repeat the nearest
            edge pixel (the box keeps its shape; the original MATLAB code pads with zeros,
            facenet-pytorch stretches the part inside: edge padding found the most faces of the three
            on the seed-1 renders of ``benchmarks/detect.py``, 21 / 19 / 18 of 36).
        size: output side in pixels.

    Returns:
        (N, C, size, size), area-resampled (an average over each output pixel's footprint).
    """
    c, h, w = image.shape
    out = image.new_zeros((boxes.shape[0], c, size, size))
    ib = boxes.detach().round().to(torch.long).cpu().tolist()
    for k, (x0, y0, x1, y1) in enumerate(ib):
        if x1 <= x0 or y1 <= y0:
            continue
        ys = torch.arange(y0, y1, device=image.device).clamp_(0, h - 1)
        xs = torch.arange(x0, x1, device=image.device).clamp_(0, w - 1)
        patch = image.index_select(1, ys).index_select(2, xs)
        out[k] = F.interpolate(patch[None], size=(size, size), mode="area")[0]
    return out


def mtcnn_to_hog_box(box: np.ndarray, lm5: np.ndarray,
                     shift: tuple[float, float, float] = MTCNN_TO_HOG_BOX) -> np.ndarray:
    """The square box dlib's HOG detector would give, from an MTCNN box (4,) and its 5 points (5, 2).

    See :data:`MTCNN_TO_HOG_BOX`. Returns (4,) corners (x0, y0, x1, y1), not rounded.
    """
    dx, dy, s = shift
    box, lm5 = np.asarray(box, np.float64), np.asarray(lm5, np.float64)
    d = float(np.linalg.norm((lm5[3] + lm5[4]) / 2 - (lm5[0] + lm5[1]) / 2))
    c = lm5.mean(0) + np.array([dx, dy]) * d
    half = s * (box[2] - box[0]) / 2
    return np.r_[c - half, c + half]


def _regress(boxes: Tensor, reg: Tensor) -> Tensor:
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + reg * wh


class MTCNNDetector:
    """MTCNN face detector with 5 points, optionally dlib's 68 points in its boxes.

    Args:
        weights: folder with ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (default: the installed
            facenet-pytorch, or ``$FACE3DKIT_MTCNN_DIR``).
        min_face_size: smallest face searched, pixels (sets the first pyramid scale).
        thresholds: face-probability thresholds of P-Net, R-Net, O-Net.
        factor: pyramid step (each level ``factor`` times the previous).
        device: where the nets run (``'cpu'``, ``'cuda'``...).
        points: ``'5'`` (MTCNN's points), ``'68'`` (dlib's predictor in the MTCNN box where it agrees
            with MTCNN's points, else the 5 points; needs dlib) or ``'auto'`` (68 when dlib and its
            predictor are installed, else 5).
        predictor_path: dlib 68-point ``.dat`` (default: from ``face_recognition_models``).
        select: ``'all'``, ``'largest'`` or ``'center'`` (see :func:`select_faces`).

    Raises:
        DetectorUnavailableError: the weights (or, for ``points='68'``, dlib) are missing; one line.
    """

    def __init__(self, weights: str | os.PathLike | None = None, min_face_size: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 device: str | torch.device = "cpu", points: Literal["5", "68", "auto"] = "auto",
                 predictor_path: str | os.PathLike | None = None, select: Select = "all") -> None:
        if points not in ("5", "68", "auto"):
            raise ValueError(f"points must be '5', '68' or 'auto', got {points!r}")
        mtcnn_scales(12, 12, min_face_size, factor)  # validates
        self.min_face_size = float(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.device = torch.device(device)
        self.select: Select = select
        try:
            self.pnet, self.rnet, self.onet = load_mtcnn_nets(weights, device=self.device)
        except FileNotFoundError as e:
            raise DetectorUnavailableError(str(e)) from None
        self._dlib = self._predictor = None
        if points != "5":
            from face3dkit.landmarks.dlib_backend import PREDICTOR_68, _import_dlib, _model_path

            try:
                dlib = _import_dlib()
                path = _model_path(predictor_path, PREDICTOR_68, "68-point shape predictor")
                self._predictor = dlib.shape_predictor(str(path))
                self._dlib = dlib
            except (DetectorUnavailableError, RuntimeError):
                if points == "68":
                    raise
        self.points = "68" if self._predictor is not None else "5"

    def __repr__(self) -> str:
        return (f"MTCNNDetector(min_face_size={self.min_face_size}, thresholds={self.thresholds}, "
                f"points={self.points!r}, device={str(self.device)!r}, select={self.select!r})")

    @torch.no_grad()
    def detect_boxes(self, image: np.ndarray | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The MTCNN cascade on one image.

        Args:
            image: (H, W, 3) uint8 RGB (numpy or tensor).

        Returns:
            boxes (K, 4) corners, scores (K,) O-Net face probability, points (K, 5, 2) in
            :data:`LM5_NAMES` order; float32 on the detector's device, best score first.
        """
        img = image if isinstance(image, Tensor) else torch.tensor(np.asarray(image))
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"MTCNNDetector expects an (H, W, 3) RGB image, got {tuple(img.shape)}")
        x = img.to(self.device, torch.float32).permute(2, 0, 1).contiguous()  # (3, H, W), 0..255
        h, w = x.shape[1:]
        empty = (x.new_zeros((0, 4)), x.new_zeros((0,)), x.new_zeros((0, 5, 2)))
        t_p, t_r, t_o = self.thresholds

        # Stage 1: P-Net over the pyramid.
        props, scores = [], []
        for s in mtcnn_scales(h, w, self.min_face_size, self.factor):
            hs, ws = max(12, math.ceil(h * s)), max(12, math.ceil(w * s))
            sy, sx = hs / h, ws / w
            reg, prob = self.pnet(mtcnn_normalize(F.interpolate(x[None], size=(hs, ws), mode="area")))
            iy, ix = torch.nonzero(prob[0, 1] >= t_p, as_tuple=True)
            if iy.numel() == 0:
                continue
            cell = torch.stack([ix * 2 / sx, iy * 2 / sy, (ix * 2 + 12) / sx, (iy * 2 + 12) / sy], 1).float()
            cell = _regress(cell, reg[0, :, iy, ix].T)
            sc = prob[0, 1, iy, ix]
            keep = nms(cell, sc, 0.5)
            props.append(cell[keep])
            scores.append(sc[keep])
        if not props:
            return empty
        boxes, sc = torch.cat(props), torch.cat(scores)
        keep = nms(boxes, sc, 0.7)
        boxes = square_boxes(boxes[keep])

        # Stage 2: R-Net on 24 x 24 crops.
        reg, prob = self.rnet(mtcnn_normalize(crop_boxes(x, boxes, 24)))
        ok = prob[:, 1] > t_r
        boxes, sc, reg = boxes[ok], prob[ok, 1], reg[ok]
        if boxes.shape[0] == 0:
            return empty
        keep = nms(boxes, sc, 0.7)
        boxes = square_boxes(_regress(boxes[keep], reg[keep]))

        # Stage 3: O-Net on 48 x 48 crops: final boxes and 5 points.
        reg, pts, prob = self.onet(mtcnn_normalize(crop_boxes(x, boxes, 48)))
        ok = prob[:, 1] > t_o
        boxes, sc, reg, pts = boxes[ok], prob[ok, 1], reg[ok], pts[ok]
        if boxes.shape[0] == 0:
            return empty
        wh = boxes[:, 2:] - boxes[:, :2]
        points = torch.stack([pts[:, :5], pts[:, 5:]], -1) * wh[:, None] + boxes[:, None, :2]
        boxes = _regress(boxes, reg)
        keep = nms(boxes, sc, 0.7, mode="min")
        return boxes[keep], sc[keep], points[keep]

    def _predict68(self, img: np.ndarray, box: np.ndarray, lm5: np.ndarray) -> np.ndarray | None:
        x0, y0, x1, y1 = (int(round(v)) for v in mtcnn_to_hog_box(box, lm5))
        rect = self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1)  # dlib: inclusive pixel indices
        shape = self._predictor(img, rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], np.float64) + 0.5
        if pts.shape[0] != 68:
            return None
        eye = float(np.linalg.norm(lm5[1] - lm5[0]))
        if eye <= 0 or np.linalg.norm(lm68_to_lm5(pts) - lm5, axis=1).mean() > AGREEMENT * eye:
            return None
        return pts

    def detect(self, image: np.ndarray, path: str | Path | None = None) -> list[FaceLandmarks]:
        """Faces in ``image``: (H, W, 3) uint8 RGB; ``path`` is ignored.

        Returns:
            best score first (or one face with ``select='largest'`` / ``'center'``); ``points``
            (68, 2) where dlib's predictor agreed (``source='mtcnn+dlib68'``), else MTCNN's (5, 2)
            (``source='mtcnn'``).
        """
        img = np.ascontiguousarray(np.asarray(image))
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"MTCNNDetector expects an (H, W, 3) uint8 image, got {img.dtype} {img.shape}")
        boxes, scores, points = (t.double().cpu().numpy() for t in self.detect_boxes(img))
        faces = []
        for box, score, lm5 in zip(boxes, scores, points, strict=True):
            pts, source = lm5, "mtcnn"
            if self._predictor is not None:
                p68 = self._predict68(img, box, lm5)
                if p68 is not None:
                    pts, source = p68, "mtcnn+dlib68"
            faces.append(FaceLandmarks(points=pts, box=tuple(float(v) for v in box), score=float(score),
                                       source=source))
        return select_faces(faces, self.select, img.shape[:2])

