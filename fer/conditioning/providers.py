"""Geometry providers: ``3dmm`` (face3dkit landmark+pose fit), ``landmarks`` (2D + POS pose), ``none``."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from fer.conditioning.table import GeometryTable

__all__ = [
    "PROVIDERS",
    "GeometryProvider",
    "GeometryUnavailableError",
    "LandmarksProvider",
    "NoGeometry",
    "ThreeDMMProvider",
    "get_provider",
    "load_detector",
]

PROVIDERS = ("3dmm", "landmarks", "none")


class GeometryUnavailableError(RuntimeError):
    """Geometry cannot be computed (e.g. no landmark detector for real images); one line."""


def load_detector() -> Any:
    """A 68-point landmark detector from ``face3dkit.landmarks`` (imported lazily), largest face only.

    Raises:
        GeometryUnavailableError: the package or its backend (dlib + model files) is missing.
    """
    hint = ("the 'landmarks' and '3dmm' geometry of real images needs a 68-point detector from "
            "face3dkit.landmarks (pip install 'face3dkit[landmarks]'); use --geometry none otherwise")
    try:
        from face3dkit.landmarks import DlibDetector
    except ImportError as e:
        raise GeometryUnavailableError(f"face3dkit.landmarks is not available ({e}); {hint}") from None
    try:
        return DlibDetector(select="largest")
    except (ValueError, RuntimeError, OSError) as e:
        raise GeometryUnavailableError(f"landmark detector unavailable: {' '.join(str(e).split())}") from None


class GeometryProvider(ABC):
    """Computes a :class:`GeometryTable` for samples of a :class:`fer.data.FerDataset`."""

    name: str = "geometry"
    version: int = 1

    def settings(self) -> dict[str, Any]:
        """Everything that changes the result (names the cache file)."""
        return {"provider": self.name, "version": self.version}

    @property
    def cacheable(self) -> bool:
        """Whether results are worth caching."""
        return True

    def exp_mirror(self) -> np.ndarray | None:
        """(K,) permutation of the expression coefficients under a horizontal flip (None: no coefficients)."""
        return None

    @abstractmethod
    def compute(self, dataset: Any, indices: list[int]) -> GeometryTable:
        """Geometry of ``dataset`` samples ``indices`` (rows in that order)."""


class NoGeometry(GeometryProvider):
    """``none``: no landmarks, unknown pose."""

    name = "none"

    @property
    def cacheable(self) -> bool:
        return False

    def compute(self, dataset: Any, indices: list[int]) -> GeometryTable:
        return GeometryTable.empty(len(indices))


class _LandmarkBased(GeometryProvider):
    """Shared: 68 landmarks from the dataset (``known_landmarks``) or a detector; cameras per image size."""

    def __init__(self, model: str = "default", batch_size: int = 256) -> None:
        self.model_name = model
        self.batch_size = int(batch_size)
        self._model: Any = None
        self._detector: Any = None

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "model": self.model_name}

    def model(self) -> Any:
        """The morphable model (loaded once, float32 CPU)."""
        if self._model is None:
            import face3dkit

            self._model = face3dkit.load_model(self.model_name)
        return self._model

    def _landmarks(self, dataset: Any, indices: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, 68, 2) pixel landmarks, (B, 2) image (H, W), (B,) found."""
        b = len(indices)
        lms = np.zeros((b, 68, 2), np.float64)
        hw = np.zeros((b, 2), np.int64)
        ok = np.zeros(b, bool)
        known = getattr(dataset, "known_landmarks", None)
        for j, i in enumerate(indices):
            if known is not None:
                lms[j] = known[i]
                hw[j] = _stored_hw(dataset, i)
                ok[j] = True
                continue
            try:
                image = dataset.stored_image(i)
            except (ValueError, OSError):
                continue
            hw[j] = image.shape[:2]
            if self._detector is None:
                self._detector = load_detector()
            faces = self._detector.detect(image)
            if faces and np.asarray(faces[0].points).shape == (68, 2):
                lms[j] = faces[0].points
                ok[j] = True
        return lms, hw, ok

    @staticmethod
    def _camera(h: int, w: int) -> Any:
        from face3dkit.geometry import PerspectiveCamera

        if h == w:
            return PerspectiveCamera.for_image_size(h)
        return PerspectiveCamera(focal=1015.0 * h / 224.0, cx=w / 2.0, cy=h / 2.0, image_size=(h, w))

    #: Whether :meth:`_solve` also returns expression coefficients (and how many: ``model().n_exp``).
    fits_expression = False

    def compute(self, dataset: Any, indices: list[int]) -> GeometryTable:
        out = GeometryTable.empty(len(indices), self.model().n_exp if self.fits_expression else 0)
        # Known landmarks keep the dataset's contour convention; detected ones follow the outline.
        known = getattr(dataset, "known_landmarks", None) is not None
        convention = getattr(dataset, "landmark_convention", "2d") if known else "2d"
        for start in range(0, len(indices), self.batch_size):
            chunk = list(range(start, min(start + self.batch_size, len(indices))))
            lms, hw, ok = self._landmarks(dataset, [indices[j] for j in chunk])
            groups: dict[tuple[int, int], list[int]] = defaultdict(list)
            for k in np.flatnonzero(ok):
                groups[(int(hw[k, 0]), int(hw[k, 1]))].append(int(k))
            for (h, w), ks in groups.items():
                pose, lm_px, *exp = self._solve(torch.as_tensor(lms[ks], dtype=torch.float32), h, w, convention)
                rows = [chunk[k] for k in ks]
                valid = np.isfinite(pose).all(1)
                out.pose[rows] = pose
                out.landmarks[rows] = lm_px / np.array([w, h], np.float32)
                out.valid[rows] = valid
                if out.exp is not None and exp:
                    valid &= np.isfinite(exp[0]).all(1)
                    out.valid[rows] = valid
                    out.exp[rows] = np.where(valid[:, None], exp[0], 0.0)
        return out

    @abstractmethod
    def _solve(self, lm2d: torch.Tensor, h: int, w: int, convention: str) -> tuple[np.ndarray, ...]:
        """(B, 68, 2) pixel landmarks of (h, w) images -> (B, 3) yaw/pitch/roll degrees, (B, 68, 2) pixels
        (and (B, n_exp) expression coefficients when :attr:`fits_expression`).

        ``convention`` is the jaw contour's: ``'2d'`` (visible outline) or ``'3d'`` (fixed points).
        """


def _stored_hw(dataset: Any, i: int) -> tuple[int, int]:
    """(H, W) of the stored image of sample ``i`` without decoding pixels where possible."""
    path = getattr(dataset, "paths", None)
    if path is not None:
        from PIL import Image

        with Image.open(path[i]) as im:
            return im.height, im.width
    return tuple(dataset.stored_image(i).shape[:2])  # type: ignore[return-value]


#: Side suffixes of ARKit / ICT-FaceKit style names (``eyeBlink_L`` / ``eyeBlink_R``), swapped by a mirror.
_SIDE_SUFFIX = re.compile(r"(?<=[_.\-])([LRlr])$")


def _mirror_name(name: str) -> str | None:
    """The name of ``name``'s mirror component, or None for a name without a side.

    Sides are the words left / right anywhere in the name (any case: ``eye-left-closure``,
    ``mouthLeft``, ``LEFT_EYE``) or a one-letter ``_L`` / ``_R`` (also ``.L``, ``-L``, lower case)
    suffix (``eyeBlink_L``, ARKit naming of the subject's left / right).
    """
    low = name.lower()
    for a, b in (("left", "right"), ("right", "left")):
        if a in low:
            return name.replace(a, b).replace(a.capitalize(), b.capitalize()).replace(a.upper(), b.upper())
    m = _SIDE_SUFFIX.search(name)
    if m:
        side = m.group(1)
        other = {"L": "R", "R": "L", "l": "r", "r": "l"}[side]
        return name[:m.start(1)] + other
    return None


def mirror_permutation(names: list[str]) -> np.ndarray | None:
    """Permutation swapping left and right components (others map to themselves).

    For a blendshape-style expression basis this maps a face's coefficients to its mirror image's:
    MakeHuman-style ``eye-left-closure`` / ``eye-right-closure``, ARKit-style ``mouthLeft`` /
    ``mouthRight`` and ``eyeBlink_L`` / ``eyeBlink_R`` (the default ICT-FaceKit model). None when no
    name has a side (e.g. a PCA basis, whose mirror is not a permutation) or a side component has
    no partner.
    """
    index = {n: i for i, n in enumerate(names)}
    perm = np.arange(len(names), dtype=np.int64)
    found = False
    for i, n in enumerate(names):
        other = _mirror_name(n)
        if other is None:
            continue
        j = index.get(other)
        if j is None:
            return None  # an unpaired side component: the mirror is no permutation
        perm[i], found = j, True
    return perm if found else None


def _ypr_degrees(angles: torch.Tensor) -> np.ndarray:
    """(B, 3) (pitch, yaw, roll) radians -> (B, 3) float32 (yaw, pitch, roll) degrees."""
    from face3dkit.geometry import yaw_pitch_roll_degrees

    return yaw_pitch_roll_degrees(angles.detach().cpu().float()).numpy()  # float32 arithmetic, as before


class LandmarksProvider(_LandmarkBased):
    """``landmarks``: the 68 2D landmarks as they are; pose from POS against the mean-face landmarks."""

    name = "landmarks"

    def _solve(self, lm2d: torch.Tensor, h: int, w: int, convention: str) -> tuple[np.ndarray, np.ndarray]:
        from face3dkit.fit import init_pose_from_landmarks

        angles, _ = init_pose_from_landmarks(self.model(), lm2d, self._camera(h, w))
        return _ypr_degrees(angles), lm2d.numpy().astype(np.float32)


class ThreeDMMProvider(_LandmarkBased):
    """``3dmm``: face3dkit's landmark-and-pose fit (POS start, then Adam on pose, identity, expression).

    The table carries the fitted pose, the fitted model's re-projected landmarks and its
    expression coefficients (:attr:`GeometryTable.exp`, (N, n_exp) of the morphable model).

    Detected landmarks (and a dataset's known landmarks in the ``'2d'`` convention) are fitted with
    jaw-contour marching and sliding (face3dkit's defaults for 2D detections); known landmarks in
    the ``'3d'`` convention (the synthetic set's projections of fixed vertices) with fixed contour
    correspondences.

    Args:
        model: morphable model name or path (default: the embedded default model).
        landmark_iters: Adam steps of the landmark stage.
        batch_size: faces fitted together.
    """

    name = "3dmm"
    # 2: contour convention of the landmarks honoured (marching for 2D detections only);
    # 3: the fitted expression coefficients are kept (GeometryTable.exp).
    version = 3
    fits_expression = True

    def __init__(self, model: str = "default", landmark_iters: int = 150, batch_size: int = 256) -> None:
        super().__init__(model, batch_size)
        self.landmark_iters = int(landmark_iters)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "landmark_iters": self.landmark_iters}

    def exp_mirror(self) -> np.ndarray | None:
        names = getattr(self.model(), "exp_names", None)
        return None if not names else mirror_permutation(list(names))

    def _solve(self, lm2d: torch.Tensor, h: int, w: int, convention: str) -> tuple[np.ndarray, ...]:
        from face3dkit.fit import FitConfig, fit_landmarks

        cfg = FitConfig(landmark_iters=self.landmark_iters, photo_iters=0, landmark_convention=convention)
        res = fit_landmarks(self.model(), lm2d, (h, w), cfg, camera=self._camera(h, w))
        return (_ypr_degrees(res.coeffs.angles), res.landmarks2d.detach().cpu().numpy().astype(np.float32),
                res.coeffs.exp.detach().cpu().numpy().astype(np.float32))


def get_provider(name: str, **kwargs: Any) -> GeometryProvider:
    """Provider by name: ``'3dmm'``, ``'landmarks'`` or ``'none'`` (kwargs go to its constructor)."""
    if name == "3dmm":
        return ThreeDMMProvider(**kwargs)
    if name == "landmarks":
        return LandmarksProvider(**{k: v for k, v in kwargs.items() if k != "landmark_iters"})
    if name == "none":
        return NoGeometry()
    raise ValueError(f"unknown geometry provider {name!r}; choose one of {', '.join(PROVIDERS)}")
