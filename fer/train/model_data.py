"""The training data a model kind needs: TDGAN trains on (expression, face) pairs, DR-GAN's
multi-image fusion groups by subject; both read CK+-style subject ids from file names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fer.data import FerDataset, open_dataset
from fer.data.pairs import IdentityFolderDataset, PairedDataset, attach_subject_identities

__all__ = ["open_face_set", "training_data"]


def open_face_set(path: str | os.PathLike, image_size: int, progress: bool = False) -> FerDataset:
    """A face set for TDGAN, decoded into memory: a FER dataset with identities (synthetic set, CK+-style
    ``S<subject>_...`` file names), else a folder of identity folders (``root/<identity>/<image>``)."""
    p = Path(path)
    try:
        ds: FerDataset = open_dataset(p, split="train" if (p / "train").is_dir() else None, image_size=image_size)
        attach_subject_identities(ds)
        if not (ds.identities >= 0).any():
            raise ValueError("no identities")
    except (ValueError, KeyError):  # identity folders are not expression names, or no subject ids
        ds = IdentityFolderDataset(p, image_size=image_size)
    ds.preload(progress=progress)
    return ds


def training_data(kind: str, train_set: FerDataset, seed: int = 0, face_set: FerDataset | None = None
                  ) -> tuple[Any, dict[str, Any]]:
    """(training set for ``kind``, model-config overrides it implies).

    * ``tdgan``: a :class:`fer.data.PairedDataset` of ``train_set`` with ``face_set`` (default: the
      training set itself, its identities from the synthetic labels or CK+-style file names), and
      ``{'num_identities': K}``.
    * ``drgan``: ``train_set`` with identities filled from file names (for the multi-image fusion).
    * others: ``train_set`` unchanged.
    """
    if kind in ("tdgan", "drgan"):
        attach_subject_identities(train_set)
    if kind == "tdgan":
        pairs = PairedDataset(train_set, face_set if face_set is not None else train_set, seed)
        return pairs, {"num_identities": pairs.num_identities}
    return train_set, {}
