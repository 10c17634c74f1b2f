"""Expression sequences: frames of a frame dataset grouped into onset -> peak sequences.

Grouping (:func:`sequence_groups`) of the frames of a :class:`fer.data.FerDataset`:

* **CK+-style names** in a class folder: ``S<subject>_<sequence>_<frame>.png`` (CK+48:
  ``anger/S010_004_00000017.png``); frames of one (folder, subject, sequence) form a sequence,
  ordered by frame number; the subject number becomes the identity.
* **Folder of frames**: ``<class>/<sequence folder>/<frames>``; the frames of a folder form a
  sequence, ordered by the numbers in their names (``frame2`` before ``frame10``), then by name.
* **Synthetic sequences** (``fer synth --sequence T``): the ``sequence`` and ``frame`` columns of
  ``labels.csv``.
* Anything else is a sequence of one frame.

A sequence with more frames than ``length`` is subsampled evenly (first = onset, last = peak,
the middle ones evenly spaced); a shorter one repeats frames (``round(linspace(0, n - 1, T))``).
The sequence's label, identity, pose and geometry are those of its peak (last) frame.

A sample (after :func:`fer.data.collate_samples`, batch first) holds everything of a frame sample
(:mod:`fer.data.base`) for the peak frame, plus::

    frames            (T, 3, S, S) float32 RGB in [0, 1], onset -> peak
    frame_landmarks   (T, 68, 2) float32 landmarks of each frame (zeros where unknown)
    frame_index       (T,) int64 positions of the frames in the frame dataset
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fer.data.base import FerDataset
from fer.data.report import DataReport
from fer.labels import NAME_SYNONYMS

__all__ = ["CK_NAME", "SequenceDataset", "frame_positions", "sequence_groups"]

#: CK+-style frame file stem: subject, sequence, frame.
CK_NAME = re.compile(r"^S(\d+)_(\d+)_(\d+)$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def _natural_key(name: str) -> tuple[tuple[int, ...], str]:
    return tuple(int(d) for d in _DIGITS.findall(name)), name


def sequence_groups(frames: FerDataset) -> tuple[list[list[int]], np.ndarray]:
    """Group the frames of ``frames`` into sequences (see the module docstring).

    Returns:
        the sequences (lists of frame indices, onset -> peak, in order of their first frame) and
        (n_sequences,) int64 identities (the CK+ subject number, else the peak frame's identity).
    """
    n = len(frames)
    seq_col = getattr(frames, "sequence_ids", None)
    frame_col = getattr(frames, "frame_numbers", None)
    keys: list[Any] = []
    order: list[Any] = []
    subject = np.full(n, -1, np.int64)
    paths = getattr(frames, "paths", None)
    class_dirs = getattr(frames, "class_dirs", None)
    for i in range(n):
        if seq_col is not None and frame_col is not None and seq_col[i] >= 0:
            keys.append(("synthetic", int(seq_col[i])))
            order.append(((int(frame_col[i]),), ""))
            continue
        if paths is None:
            keys.append(("single", i))
            order.append(((0,), ""))
            continue
        p = Path(paths[i])
        m = CK_NAME.match(p.stem)
        parent = p.parent
        in_class_dir = (str(parent) == class_dirs[i]) if class_dirs is not None else (
            parent.name.strip().lower() in NAME_SYNONYMS)
        if not in_class_dir:
            keys.append(("folder", str(parent)))
            order.append(_natural_key(p.name))
        elif m is not None:
            subject[i] = int(m.group(1))
            keys.append(("ck", str(parent), int(m.group(1)), int(m.group(2))))
            order.append(((int(m.group(3)),), p.name))
        else:
            keys.append(("single", i))
            order.append(((0,), ""))
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        groups[k].append(i)
    seqs = [sorted(g, key=lambda i: order[i]) for g in groups.values()]
    seqs.sort(key=lambda g: min(g))
    ids = np.array([subject[g[-1]] if subject[g[-1]] >= 0 else int(frames.identities[g[-1]]) for g in seqs],
                   np.int64)
    return seqs, ids


def frame_positions(n: int, length: int) -> list[int]:
    """Which of ``n`` ordered frames make a sequence of ``length``: first, evenly spaced, last."""
    if n <= 0 or length <= 0:
        raise ValueError(f"need n > 0 frames and length > 0, got {n} and {length}")
    if length == 1:
        return [n - 1]
    return [int(round(v)) for v in np.linspace(0, n - 1, length)]


class SequenceDataset(Dataset):
    """Sequences of ``length`` frames of a frame dataset (see the module docstring).

    Args:
        frames: the frame dataset (with geometry attached when the model needs landmarks).
        length: frames per sequence T (CK+48: 3).
        groups: explicit sequences (lists of frame indices, onset -> peak); default
            :func:`sequence_groups`.

    Attributes (M sequences): ``labels``, ``identities``, ``true_pose``, ``sources`` (peak frame's
    file), ``geometry`` (the peak frames' :class:`fer.conditioning.GeometryTable` or None), ``report``
    (the frame dataset's), ``sequences`` (M, T) int64 frame indices, ``lengths`` (M,) frames found.
    """

    name = "sequences"

    def __init__(self, frames: FerDataset, length: int = 3, groups: list[list[int]] | None = None) -> None:
        if length < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        self.frames = frames
        self.length = int(length)
        if groups is None:
            groups, ids = sequence_groups(frames)
        else:
            ids = np.array([int(frames.identities[g[-1]]) for g in groups], np.int64)
        if any(len(g) == 0 for g in groups):
            raise ValueError("every sequence needs at least one frame")
        self.lengths = np.array([len(g) for g in groups], np.int64)
        self.sequences = np.array([[g[k] for k in frame_positions(len(g), self.length)] for g in groups],
                                  np.int64).reshape(len(groups), self.length)
        peak = self.sequences[:, -1] if len(groups) else np.zeros(0, np.int64)
        self.labels = frames.labels[peak]
        self.identities = ids
        self.true_pose = frames.true_pose[peak]
        self.sources = [frames.sources[int(i)] for i in peak]
        mixed = [i for i, g in enumerate(groups) if len(set(frames.labels[g].tolist())) > 1]
        if mixed:
            raise ValueError(f"{frames.sources[groups[mixed[0]][0]]}: frames of one sequence carry different labels")
        self.image_size = frames.image_size

    @property
    def report(self) -> DataReport:
        return self.frames.report

    @property
    def geometry(self) -> Any:
        g = self.frames.geometry
        return None if g is None else g.take(self.sequences[:, -1])

    def __len__(self) -> int:
        return len(self.sequences)

    def class_counts(self) -> np.ndarray:
        """(7,) number of sequences per canonical class."""
        from fer.labels import NUM_CLASSES

        return np.bincount(self.labels, minlength=NUM_CLASSES)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        items = [self.frames[int(j)] for j in self.sequences[i]]
        if any(s is None for s in items):
            return None  # an unreadable frame, reported by the frame dataset
        sample: dict[str, Any] = dict(items[-1])  # type: ignore[arg-type]
        sample["index"] = int(i)
        sample["identity"] = int(self.identities[i])
        sample["frames"] = torch.stack([s["image"] for s in items])  # type: ignore[index]
        sample["frame_landmarks"] = torch.stack([s["landmarks"] for s in items])  # type: ignore[index]
        sample["frame_index"] = torch.from_numpy(self.sequences[i].copy())
        return sample


def open_sequence_frames(path: str | Path, split: str | None = None, image_size: int | None = None) -> FerDataset:
    """Every frame of a dataset for :class:`SequenceDataset` (a synthetic sequence set with all its
    frames, not only the peaks; other formats as :func:`fer.data.open_dataset` opens them)."""
    from fer.data import detect_format, open_dataset
    from fer.data.synthetic import SyntheticDataset

    if detect_format(path) == "synthetic":
        return SyntheticDataset(path, split=split, image_size=image_size, frames="all")
    return open_dataset(path, split=split, image_size=image_size)
