"""(Expression image, face image) pairs for TDGAN, identity-labelled face sets, subject ids from file names.

* :func:`subject_ids_from_names` / :func:`attach_subject_identities` - identities parsed from file
  names (CK+ ``S<subject>_<sequence>_<frame>.png``: the default pattern).
* :class:`IdentityFolderDataset` - a face set ``root/<identity>/**/*.png`` (one folder per person,
  no expression labels).
* :class:`PairedDataset` - every sample of a FER set with a face image of a known identity drawn
  from a face set; the draw is a pure function of (seed, epoch, index), so a resumed run sees the
  same pairs as an uninterrupted one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from face3dkit.io import IMAGE_EXTENSIONS
from fer.data.base import FerDataset
from fer.data.formats import _check_image, _FileImages

__all__ = ["SUBJECT_PATTERN", "IdentityFolderDataset", "PairedDataset", "attach_subject_identities",
           "subject_ids_from_names"]

#: CK+ file names: ``S005_001_00000011.png`` -> subject 5.
SUBJECT_PATTERN = r"^S(\d+)_"


def subject_ids_from_names(paths: list[str], pattern: str = SUBJECT_PATTERN) -> np.ndarray:
    """(N,) int64 subject ids: group 1 of ``pattern`` matched against each file name (-1: no match)."""
    rx = re.compile(pattern)
    out = np.full(len(paths), -1, np.int64)
    for i, p in enumerate(paths):
        m = rx.search(Path(p).name)
        if m is not None:
            out[i] = int(m.group(1))
    return out


def attach_subject_identities(dataset: FerDataset, pattern: str = SUBJECT_PATTERN) -> int:
    """Fill the unknown (-1) ``identities`` of a file-based dataset from its file names, in place.

    Returns the number of samples with a known identity afterwards.
    """
    paths = getattr(dataset, "paths", None)
    if paths is not None and len(paths) == len(dataset):
        parsed = subject_ids_from_names(list(paths), pattern)
        unknown = dataset.identities < 0
        dataset.identities = np.where(unknown, parsed, dataset.identities).astype(np.int64)
    return int((dataset.identities >= 0).sum())


class IdentityFolderDataset(_FileImages):
    """A face set: ``root/<identity folder>/**/<image>`` (e.g. a CASIA-WebFace or VGGFace2 export).

    Identities are the folders' positions in sorted order; labels are -1 (no expression).
    Unreadable files are reported (``file: reason``) and skipped.

    Args:
        root: folder of identity folders.
        image_size: side of returned images.
        check_images: verify each file's header while indexing.
    """

    name = "faces"

    def __init__(self, root: str | Path, image_size: int | None = None, check_images: bool = True) -> None:
        super().__init__(image_size)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise ValueError(f"{root}: no identity folders (expected root/<identity>/<image>)")
        self.paths = []
        ids: list[int] = []
        self.identity_names = [d.name for d in folders]
        for k, d in enumerate(folders):
            for p in sorted(q for q in d.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS):
                bad = _check_image(p) if check_images else None
                if bad is not None:
                    self.report.add(str(p), None, bad)
                    continue
                self.paths.append(str(p))
                ids.append(k)
        n = len(self.paths)
        self.labels = -np.ones(n, np.int64)
        self.identities = np.asarray(ids, np.int64)
        self.sources = list(self.paths)
        self.true_pose = np.full((n, 3), np.nan, np.float32)
        self._finish()


class PairedDataset(Dataset):
    """A FER set whose samples carry a face image of a known identity from a face set.

    Sample ``i`` is the FER set's sample ``i`` (see :mod:`fer.data.base`) plus

    * ``face_image`` (3, S, S) float32 RGB in [0, 1] - a face-set image,
    * ``face_identity`` int64 in ``[0, num_identities)`` - its identity, renumbered contiguously,
    * ``face_label`` int64 - its expression label (-1 when the face set has none).

    The face image of sample ``i`` in epoch ``e`` is drawn uniformly from the face set's samples
    with a known identity by ``numpy.random.default_rng([seed, e, i])``; the trainer calls
    :meth:`set_epoch`. Other attributes (``labels``, ``geometry``, ``report`` ...) are the FER set's.

    Args:
        expressions: the FER set.
        faces: the face set (may be the FER set itself); samples with identity -1 are not drawn.
        seed: seed of the draws.
    """

    def __init__(self, expressions: FerDataset, faces: FerDataset, seed: int = 0) -> None:
        if len(expressions) == 0:
            raise ValueError(f"{expressions.name}: no expression images to pair")
        known = np.flatnonzero(faces.identities >= 0)
        if len(known) == 0:
            raise ValueError(f"{faces.name}: the face set has no image with a known identity "
                             "(CK+-style names S<subject>_..., a synthetic set, or root/<identity>/ folders)")
        if expressions.image_size is not None and faces.image_size is not None \
                and expressions.image_size != faces.image_size:
            raise ValueError(f"{faces.name}: face images are {faces.image_size} px, expression images "
                             f"{expressions.image_size} px; open both with the same image_size")
        self.expressions = expressions
        self.faces = faces
        self.seed = int(seed)
        self.epoch = 0
        self.pool = known
        self.identity_values, self.pool_identity = np.unique(faces.identities[known], return_inverse=True)

    @property
    def num_identities(self) -> int:
        """Number K of distinct face identities."""
        return len(self.identity_values)

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch``."""
        self.epoch = int(epoch)

    def face_index(self, i: int) -> tuple[int, int]:
        """(face-set index, contiguous identity) paired with sample ``i`` in the current epoch."""
        j = int(np.random.default_rng([self.seed, self.epoch, int(i)]).integers(len(self.pool)))
        return int(self.pool[j]), int(self.pool_identity[j])

    def __len__(self) -> int:
        return len(self.expressions)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        sample = self.expressions[i]
        if sample is None:
            return None
        j, k = self.face_index(i)
        face = self.faces[j]
        if face is None:  # unreadable face image: reported by the face set; the sample is dropped
            return None
        sample["face_image"] = face["image"]
        sample["face_identity"] = k
        sample["face_label"] = int(face["label"])
        return sample

    def __getattr__(self, name: str) -> Any:
        if name in ("expressions", "faces", "__setstate__"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.expressions, name)
