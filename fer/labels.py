"""The canonical expression label order, mappings from each dataset's own order, and yaw bins.

Every ``fer`` dataset returns labels in :data:`EXPRESSIONS` order::

    0 neutral  1 anger  2 disgust  3 fear  4 happiness  5 sadness  6 surprise

Dataset orders (index in the dataset's own files -> canonical name):

==========  ===================================================================================
FER2013     0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral
RAF-DB      1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral (1-based)
AffectNet   0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt
==========  ===================================================================================

Folder names (CK+48, KDEF, AffectNet/RAF-DB exports) are matched case-insensitively against
:data:`NAME_SYNONYMS` (``happy``, ``HA``, ``angry``, ``afraid``, ...). Classes outside the seven
(``contempt``) map to ``None``: such samples are reported and skipped.

Yaw bins (the pose classes of the GGPI pose head and the rows of the per-yaw accuracy table) are
centred on 0, ±15, ±30, ±45 degrees (Multi-PIE's FER poses) with edges at ±7.5, ±22.5, ±37.5; the
outer bins take everything beyond ±37.5 (the synthetic set goes to ±60). Yaw follows face3dkit's
convention: positive yaw turns the face toward image right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "EXPRESSIONS",
    "NUM_CLASSES",
    "FER2013_ORDER",
    "RAFDB_ORDER",
    "AFFECTNET_ORDER",
    "NAME_SYNONYMS",
    "LABEL_SCHEMES",
    "canonical_index",
    "scheme_mapping",
    "YAW_BIN_EDGES",
    "YAW_BIN_NAMES",
    "NUM_YAW_BINS",
    "yaw_bin",
]

#: The canonical label order of every fer dataset, model head and report.
EXPRESSIONS: tuple[str, ...] = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
NUM_CLASSES = len(EXPRESSIONS)

#: FER2013 ``emotion`` column 0..6 -> canonical name.
FER2013_ORDER: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: RAF-DB basic labels 1..7 -> canonical name (index 0 is label 1).
RAFDB_ORDER: tuple[str, ...] = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
#: AffectNet expression 0..7 -> canonical name (``None``: contempt, not one of the seven).
AFFECTNET_ORDER: tuple[str | None, ...] = (
    "neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", None,
)

#: Lower-case folder/label names -> canonical name (None: a known class outside the seven).
NAME_SYNONYMS: dict[str, str | None] = {
    **{n: n for n in EXPRESSIONS},
    "ne": "neutral", "neu": "neutral", "calm": "neutral",
    "an": "anger", "ang": "anger", "angry": "anger", "mad": "anger",
    "di": "disgust", "dis": "disgust", "disgusted": "disgust",
    "af": "fear", "fea": "fear", "afraid": "fear", "fearful": "fear", "scared": "fear",
    "ha": "happiness", "hap": "happiness", "happy": "happiness", "joy": "happiness",
    "sa": "sadness", "sad": "sadness",
    "su": "surprise", "sur": "surprise", "surprised": "surprise",
    "contempt": None, "co": None,
}

#: Named numeric label schemes for ``label_scheme=`` arguments: scheme -> (first label value, order).
LABEL_SCHEMES: dict[str, tuple[int, Sequence[str | None]]] = {
    "fer2013": (0, FER2013_ORDER),
    "rafdb": (1, RAFDB_ORDER),
    "affectnet": (0, AFFECTNET_ORDER),
    "canonical": (0, EXPRESSIONS),
}


def canonical_index(name: str) -> int | None:
    """Canonical index of a label name or synonym (case-insensitive); None for known non-basic classes.

    Raises:
        KeyError: an unknown name.
    """
    key = name.strip().lower()
    if key not in NAME_SYNONYMS:
        raise KeyError(f"unknown expression name {name!r}")
    n = NAME_SYNONYMS[key]
    return None if n is None else EXPRESSIONS.index(n)


def scheme_mapping(scheme: str | Mapping[int, str | None]) -> dict[int, int | None]:
    """Dataset label value -> canonical index (None = skip) for a named scheme or an explicit mapping.

    Args:
        scheme: ``'fer2013'``, ``'rafdb'``, ``'affectnet'``, ``'canonical'``, or a mapping from label
            value to an expression name (synonyms allowed) or None.
    """
    if isinstance(scheme, str):
        if scheme not in LABEL_SCHEMES:
            raise ValueError(f"unknown label scheme {scheme!r}; known: {', '.join(LABEL_SCHEMES)}")
        start, order = LABEL_SCHEMES[scheme]
        return {start + i: (None if n is None else EXPRESSIONS.index(n)) for i, n in enumerate(order)}
    return {int(k): (None if v is None else canonical_index(v)) for k, v in scheme.items()}


#: Yaw-bin edges in degrees (bins: < -37.5, [-37.5, -22.5), ..., >= 37.5).
YAW_BIN_EDGES: tuple[float, ...] = (-37.5, -22.5, -7.5, 7.5, 22.5, 37.5)
#: Names of the yaw bins (their centres), in bin order.
YAW_BIN_NAMES: tuple[str, ...] = ("-45", "-30", "-15", "0", "+15", "+30", "+45")
NUM_YAW_BINS = len(YAW_BIN_NAMES)


def yaw_bin(yaw_degrees: np.ndarray | float) -> np.ndarray:
    """Yaw in degrees (any shape) -> int64 bin index in ``[0, NUM_YAW_BINS)``; NaN yaw -> -1."""
    y = np.asarray(yaw_degrees, dtype=np.float64)
    out = np.searchsorted(np.asarray(YAW_BIN_EDGES), y, side="right").astype(np.int64)
    return np.where(np.isfinite(y), out, -1)
