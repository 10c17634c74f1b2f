"""The common sample layout of every fer dataset, image decoding/resizing, preloading and collation.

A sample is a dict (batch-first after :func:`collate_samples`)::

    image       (3, S, S) float32 RGB in [0, 1]       S = the dataset's ``image_size``
    label       int64, canonical index (fer.labels.EXPRESSIONS)
    identity    int64, subject id (-1 unknown)
    index       int64, position in the dataset
    pose        (3,) float32 true (yaw, pitch, roll) degrees when the dataset knows it, else NaN
    landmarks   (68, 2) float32 geometry landmarks normalised to the crop ([0, 1], x right, y down)
    geom_pose   (3,) float32 (yaw, pitch, roll) degrees from the geometry provider (NaN: none)
    pose_class  int64 yaw bin of ``geom_pose`` (fer.labels.yaw_bin; -1: unknown)
    geom_valid  bool, the geometry provider succeeded on this sample
    geom_exp    (K,) float32 fitted expression coefficients (only with a table that has them: ``3dmm``)

The last five come from an attached :class:`fer.conditioning.GeometryTable` (zeros/NaN/-1/False without one).
An image that cannot be decoded is reported (file), counted in ``dataset.report`` and the sample is
dropped from its batch by :func:`collate_samples`; :meth:`FerDataset.preload` decodes everything
up front and removes such samples from the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from face3dkit.io import file_sha256
from fer.data.report import DataReport
from fer.labels import yaw_bin

__all__ = ["FerDataset", "collate_samples", "resize_rgb", "read_image_file", "file_digest"]


def file_digest(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (:func:`face3dkit.io.file_sha256`)."""
    return file_sha256(path)


def resize_rgb(image: np.ndarray, size: int | None) -> np.ndarray:
    """(H, W, 3) or (H, W) uint8 -> (size, size, 3) uint8 (bilinear, antialiased); None keeps the size."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if size is None or image.shape[:2] == (size, size):
        return np.ascontiguousarray(image)
    return np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def read_image_file(path: str | Path) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (face3dkit.io rules); raises ValueError on failure."""
    from face3dkit.io import load_image

    return load_image(path)


class FerDataset(Dataset):
    """Base class: subclasses set the per-sample arrays in ``__init__`` and implement :meth:`_decode`.

    Attributes (N samples):
        labels: (N,) int64 canonical labels.
        identities: (N,) int64 subject ids (-1 unknown).
        sources: N strings naming where each sample comes from (file or ``file:line``).
        true_pose: (N, 3) float32 (yaw, pitch, roll) degrees, NaN when unknown.
        known_landmarks: (N, 68, 2) float32 landmarks in pixels of the stored image, or None.
        landmark_convention: how the jaw contour (0-16) of ``known_landmarks`` was made: ``'2d'``
            (on the visible outline, as detectors and iBUG 300-W annotate) or ``'3d'``
            (projections of fixed 3D points, as rendered synthetic sets and 300W-LP give). The
            ``3dmm`` geometry provider fits the former with contour marching, the latter without.
        image_size: side S of returned images (None: the stored size, which must then be square
            and equal for all samples to batch them).
        report: :class:`DataReport` of skipped rows/images.
        geometry: attached :class:`fer.conditioning.GeometryTable` or None.
    """

    name = "dataset"

    def __init__(self, image_size: int | None = None) -> None:
        self.image_size = image_size
        self.report = DataReport()
        self.labels = np.zeros(0, np.int64)
        self.identities = np.zeros(0, np.int64)
        self.sources: list[str] = []
        self.true_pose = np.zeros((0, 3), np.float32)
        self.known_landmarks: np.ndarray | None = None
        self.landmark_convention = "2d"
        self.geometry: Any = None
        self._cache: np.ndarray | None = None

    # -- to implement ---------------------------------------------------------------------------
    def _decode(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 image of sample ``i`` at its stored size; raise ValueError if unreadable."""
        raise NotImplementedError

    def content_key(self, i: int) -> str:
        """Hex digest of the content of sample ``i`` (image bytes, plus known landmarks) for caches."""
        raise NotImplementedError

    def _image_file(self, i: int) -> str:
        """The file reported when sample ``i`` cannot be decoded."""
        return self.sources[i]

    def _subset_extra(self, keep: np.ndarray) -> None:
        """Subclasses: drop their own per-sample arrays to ``keep`` (indices)."""

    # -- common ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def _finish(self) -> None:
        """Subclasses call this at the end of ``__init__``."""
        self.report.loaded = len(self)

    def stored_image(self, i: int) -> np.ndarray:
        """(H, W, 3) uint8 image of sample ``i`` at the stored size (before resizing)."""
        return self._decode(i)

    def image(self, i: int) -> np.ndarray:
        """(S, S, 3) uint8 image of sample ``i`` at ``image_size``; raises ValueError if unreadable."""
        if self._cache is not None:
            return self._cache[i]
        return resize_rgb(self._decode(i), self.image_size)

    def subset(self, keep: Sequence[int] | np.ndarray) -> None:
        """Keep only the samples at ``keep`` (in that order), in place."""
        keep = np.asarray(keep, dtype=np.int64)
        self.labels = self.labels[keep]
        self.identities = self.identities[keep]
        self.sources = [self.sources[int(k)] for k in keep]
        self.true_pose = self.true_pose[keep]
        if self.known_landmarks is not None:
            self.known_landmarks = self.known_landmarks[keep]
        if self._cache is not None:
            self._cache = self._cache[keep]
        if self.geometry is not None:
            self.geometry = self.geometry.take(keep)
        self._subset_extra(keep)
        self.report.loaded = len(self)

    def preload(self, progress: bool = False) -> DataReport:
        """Decode and resize every image into memory; unreadable ones are reported and removed.

        Requires ``image_size`` (or equal stored sizes). Returns :attr:`report`.
        """
        if self._cache is not None:
            return self.report
        from tqdm import tqdm

        images: list[np.ndarray] = []
        keep: list[int] = []
        for i in tqdm(range(len(self)), desc=f"loading {self.name}", disable=not progress, leave=False):
            try:
                im = resize_rgb(self._decode(i), self.image_size)
            except (ValueError, OSError) as e:
                self.report.add(self._image_file(i), None, _reason(e, self._image_file(i)))
                continue
            if images and im.shape != images[0].shape:
                self.report.add(self._image_file(i), None,
                                f"size {im.shape[1]}x{im.shape[0]} differs from the first image; pass image_size")
                continue
            images.append(im)
            keep.append(i)
        cache = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
        if len(keep) != len(self):
            self.subset(keep)
        self._cache = cache
        self.report.loaded = len(self)
        return self.report

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        try:
            im = self.image(i)
        except (ValueError, OSError) as e:
            self.report.add(self._image_file(i), None, _reason(e, self._image_file(i)))
            return None
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div_(255.0),
            "label": int(self.labels[i]),
            "identity": int(self.identities[i]),
            "index": int(i),
            "pose": torch.from_numpy(self.true_pose[i].astype(np.float32)),
        }
        g = self.geometry
        if g is not None:
            sample["landmarks"] = torch.from_numpy(g.landmarks[i].astype(np.float32))
            sample["geom_pose"] = torch.from_numpy(g.pose[i].astype(np.float32))
            sample["pose_class"] = int(yaw_bin(g.pose[i, 0])) if g.valid[i] else -1
            sample["geom_valid"] = bool(g.valid[i])
            if g.exp is not None:
                sample["geom_exp"] = torch.from_numpy(g.exp[i].astype(np.float32))
        else:
            sample["landmarks"] = torch.zeros(68, 2)
            sample["geom_pose"] = torch.full((3,), float("nan"))
            sample["pose_class"] = -1
            sample["geom_valid"] = False
        return sample

    def class_counts(self) -> np.ndarray:
        """(7,) number of samples per canonical class."""
        from fer.labels import NUM_CLASSES

        return np.bincount(self.labels, minlength=NUM_CLASSES)


def _reason(e: BaseException, path: str) -> str:
    text = " ".join(str(e).split())
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


def collate_samples(batch: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Collate samples, dropping None (unreadable) ones; None when nothing is left."""
    items = [b for b in batch if b is not None]
    if not items:
        return None
    return default_collate(items)
