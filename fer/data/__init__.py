"""FER datasets with one sample layout (see :mod:`fer.data.base`) and canonical labels (:mod:`fer.labels`).

* :class:`ImageFolderDataset` - class-per-folder trees (RAF-DB, CK+48, KDEF, AffectNet exports).
* :class:`Fer2013Dataset` - the FER2013 csv (``emotion,pixels,Usage``).
* :class:`RafDbDataset` - RAF-DB's ``list_patition_label.txt``.
* :class:`SyntheticDataset` / :func:`generate_synthetic` - expressions rendered with face3dkit.
* :class:`PairedDataset` / :class:`IdentityFolderDataset` - (expression, face) pairs for TDGAN
  (:mod:`fer.data.pairs`).
* :class:`SequenceDataset` - frames grouped into onset -> peak sequences (CK+ file names,
  folder-of-frames layouts, ``fer synth --sequence T``), for MGLN.
* :func:`holdout_subjects` / :func:`subject_split` - subject-disjoint validation splits of a training set.
* :func:`open_dataset` - any of the above from a path, detected from its content.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fer.data.base import FerDataset, collate_samples, resize_rgb
from fer.data.formats import FER2013_SPLITS, RAFDB_LABEL_FILE, Fer2013Dataset, ImageFolderDataset, RafDbDataset
from fer.data.pairs import IdentityFolderDataset, PairedDataset, attach_subject_identities, subject_ids_from_names
from fer.data.report import DataReport, Problem
from fer.data.sequences import SequenceDataset, open_sequence_frames, sequence_groups
from fer.data.split import holdout_subjects, subject_split
from fer.data.synthetic import (
    ARKIT_EXPRESSION_UNITS,
    EXPRESSION_UNITS,
    MAKEHUMAN_EXPRESSION_UNITS,
    SynthConfig,
    SyntheticDataset,
    expression_units_for,
    expression_weights,
    generate_synthetic,
    is_synthetic_dir,
)

__all__ = [
    "DataReport",
    "ARKIT_EXPRESSION_UNITS",
    "EXPRESSION_UNITS",
    "MAKEHUMAN_EXPRESSION_UNITS",
    "expression_units_for",
    "FER2013_SPLITS",
    "Fer2013Dataset",
    "FerDataset",
    "IdentityFolderDataset",
    "PairedDataset",
    "ImageFolderDataset",
    "Problem",
    "RAFDB_LABEL_FILE",
    "RafDbDataset",
    "SequenceDataset",
    "SynthConfig",
    "SyntheticDataset",
    "attach_subject_identities",
    "collate_samples",
    "detect_format",
    "expression_weights",
    "generate_synthetic",
    "is_synthetic_dir",
    "open_dataset",
    "open_sequence_frames",
    "SPLIT_POLICIES",
    "SplitPolicy",
    "split_policy",
    "resize_rgb",
    "sequence_groups",
    "subject_ids_from_names",
    "subject_split",
    "holdout_subjects",
]


def detect_format(path: str | Path) -> str:
    """``'synthetic'``, ``'fer2013'``, ``'rafdb'`` or ``'folder'`` from what ``path`` holds."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_file():
        if p.name == RAFDB_LABEL_FILE or p.suffix == ".txt":
            return "rafdb"
        return "fer2013"
    if is_synthetic_dir(p):
        return "synthetic"
    if (p / "EmoLabel" / RAFDB_LABEL_FILE).is_file() or (p / RAFDB_LABEL_FILE).is_file():
        return "rafdb"
    csvs = sorted(p.glob("*.csv"))
    if csvs and not any(d.is_dir() for d in p.iterdir()):
        return "fer2013"
    return "folder"


@dataclass(frozen=True)
class SplitPolicy:
    """Which split of a dataset trains, which validates during training, which a run is evaluated on
    by default (None: the whole set / none)."""

    train: str | None
    val: str | None
    evaluate: str | None


#: The policy of each format with fixed split names (class-folder trees: :func:`split_policy`).
SPLIT_POLICIES: dict[str, SplitPolicy] = {
    "synthetic": SplitPolicy("train", "test", "test"),  # held-out identities
    "fer2013": SplitPolicy("train", "val", "test"),  # Training / PublicTest / PrivateTest
    "rafdb": SplitPolicy("train", "test", "test"),
}


def split_policy(path: str | Path) -> SplitPolicy:
    """The :class:`SplitPolicy` of the dataset at ``path``: by format (:data:`SPLIT_POLICIES`); a
    class-folder tree with a ``train`` folder validates on ``val``, ``validation`` or ``test`` (the
    first present) and is evaluated on ``test``; without one, it is one set."""
    p = Path(path)
    fmt = detect_format(p)
    if fmt in SPLIT_POLICIES:
        return SPLIT_POLICIES[fmt]
    has = {d.name.lower() for d in p.iterdir() if d.is_dir()}
    if "train" not in has:
        return SplitPolicy(None, None, None)
    return SplitPolicy("train", next((s for s in ("val", "validation", "test") if s in has), None),
                       "test" if "test" in has else None)


def open_dataset(path: str | Path, split: str | None = None, image_size: int | None = None,
                 label_scheme: str = "auto") -> FerDataset:
    """Open a dataset of any supported format (detected by :func:`detect_format`).

    Args:
        path: a synthetic-set folder, a FER2013 csv (or a folder holding one), a RAF-DB folder or
            label file, or a class-per-folder tree.
        split: ``'train'``, ``'val'``, ``'test'`` or None; its meaning per format is documented on
            each class (a folder tree without split folders ignores ``'test'``-less requests by
            raising).
        image_size: side of returned images.
        label_scheme: numeric label scheme for folder trees with numbered class folders.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "synthetic":
        return SyntheticDataset(p, split=split, image_size=image_size)
    if fmt == "fer2013":
        if p.is_dir():
            p = sorted(p.glob("*.csv"))[0]
        return Fer2013Dataset(p, split=split, image_size=image_size)
    if fmt == "rafdb":
        return RafDbDataset(p, split=split, image_size=image_size)
    return ImageFolderDataset(p, split=split, image_size=image_size, label_scheme=label_scheme)
