"""Subject-disjoint validation splits carved out of a training set.

Datasets such as CK+48 ship a train/test split only. Choosing epochs or settings on the test
images leaks the test set into the model selection; the honest protocol holds out a fraction of
the *training subjects* as a validation set, selects on it, and reads the test split once. The
split must be subject-disjoint (frames of one person are near-duplicates), and every class of
the training set should appear on both sides.

* :func:`subject_split` - indices of a seeded, subject-disjoint split of ``identities``.
* :func:`holdout_subjects` - the same on a :class:`fer.data.FerDataset`: two datasets.
"""

from __future__ import annotations

import copy

import numpy as np

from fer.data.base import FerDataset
from fer.data.pairs import attach_subject_identities

__all__ = ["holdout_subjects", "subject_split"]

#: Subject permutations tried before giving up on a split with every class on both sides.
MAX_TRIES = 200


def subject_split(identities: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``round(fraction * n_subjects)`` whole subjects (at least one, at most all but one).

    Subjects are drawn by a seeded permutation; the first permutation (of up to :data:`MAX_TRIES`)
    under which every class present in ``labels`` appears on both sides is used, else the first one
    (a class with a single subject cannot be on both sides).

    Args:
        identities: (N,) int subject id per sample; -1 (unknown) is refused.
        labels: (N,) int class per sample.
        fraction: share of the subjects to hold out, in (0, 1).
        seed: seed of the permutation.

    Returns:
        (train_idx, val_idx): sorted int64 sample indices, disjoint, covering all samples, no subject
        on both sides.

    Raises:
        ValueError: ``fraction`` outside (0, 1), unknown identities, or fewer than two subjects.
    """
    identities = np.asarray(identities, np.int64)
    labels = np.asarray(labels, np.int64)
    if identities.shape != labels.shape or identities.ndim != 1:
        raise ValueError(f"identities {identities.shape} and labels {labels.shape} must be (N,) arrays of one length")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out subject fraction must be in (0, 1), got {fraction}")
    if (identities < 0).any():
        raise ValueError(f"{int((identities < 0).sum())} of {len(identities)} samples have no subject id (CK+ names "
                         "S<subject>_<sequence>_<frame>, or an identity-labelled format, are needed)")
    subjects = np.unique(identities)
    if len(subjects) < 2:
        raise ValueError(f"a subject-disjoint split needs at least two subjects, got {len(subjects)}")
    k = int(min(max(round(fraction * len(subjects)), 1), len(subjects) - 1))
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    first: np.ndarray | None = None
    for _ in range(MAX_TRIES):
        held = rng.permutation(subjects)[:k]
        val_mask = np.isin(identities, held)
        if first is None:
            first = val_mask
        if (np.isin(classes, labels[val_mask]).all() and np.isin(classes, labels[~val_mask]).all()):
            break
    else:
        val_mask = first
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def holdout_subjects(dataset: FerDataset, fraction: float, seed: int = 0, where: str | None = None,
                     ) -> tuple[FerDataset, FerDataset]:
    """Split ``dataset`` into (train, validation) datasets by :func:`subject_split`.

    Unknown identities of a file-based dataset are first filled from CK+-style file names
    (:func:`fer.data.attach_subject_identities`). ``dataset`` itself is left as it was; the two
    results are independent copies (decoded images and attached geometry included).

    Args:
        dataset: the training set.
        fraction, seed: as :func:`subject_split`.
        where: the dataset's path, for error messages.

    Raises:
        ValueError: as :func:`subject_split` (the message names ``where``).
    """
    work = copy.deepcopy(dataset)
    attach_subject_identities(work)
    try:
        train_idx, val_idx = subject_split(work.identities, work.labels, fraction, seed)
    except ValueError as e:
        raise ValueError(f"{where or dataset.name}: {e}") from None
    val = copy.deepcopy(work)
    work.subset(train_idx)
    val.subset(val_idx)
    return work, val
