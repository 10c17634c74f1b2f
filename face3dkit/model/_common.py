"""Shared by the model-file readers: format detection, the one-line :class:`ModelFileError`,
problem collection, and the durable atomic writer of model files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from face3dkit.io.atomic import atomic_write

__all__ = ["ModelFileError", "detect_format"]


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not a valid model.

    The message is a single line that starts with the file path (or the unknown model name).
    """




def _one_line(text: object, limit: int = 300) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _fail(path: object, what: str) -> ModelFileError:
    return ModelFileError(_one_line(f"{path}: {what}", limit=2000))


def _shape(a: np.ndarray) -> str:
    return str(tuple(int(s) for s in a.shape))


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """:func:`face3dkit.io.atomic.atomic_write`, durable, into an existing folder (a model file's
    folder is not created: a mistyped path is an error)."""
    return atomic_write(path, write, parents=False, durable=True)


class _Problems:
    """Collects what is wrong with a file, to raise it as one line."""

    def __init__(self, path: object) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def raise_if_any(self) -> None:
        if self.items:
            raise _fail(self.path, "; ".join(self.items))


def _check_range(p: _Problems, key: str, a: np.ndarray, lo: int, hi: int, what: str) -> None:
    """Add a problem unless every element of ``a`` is in ``[lo, hi)``."""
    if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
        p.add(f"{key} out of range ({what}; found {int(a.min())}..{int(a.max())})")


# ----------------------------------------------------------------------------------------------
# MATLAB files (Deng et al.'s BFM_model_front.mat)


def detect_format(path: str | os.PathLike) -> str:
    """Detect a model file's format from its first bytes.

    Returns:
        ``'npz'`` (a zip archive) or ``'mat'`` (a MATLAB v5 .mat file).

    Raises:
        ModelFileError: missing, empty, a directory, a MATLAB v7.3 (HDF5) file, or neither.
    """
    path = Path(path)
    if path.is_dir():
        raise _fail(path, "is a directory, not a model file")
    try:
        with open(path, "rb") as f:
            head = f.read(128)
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except OSError as e:
        raise _fail(path, f"cannot read ({e.strerror or e})") from None
    if not head:
        raise _fail(path, "empty file")
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"MATLAB 7.3") or head.startswith(b"\x89HDF"):
        raise _fail(path, "MATLAB v7.3 (HDF5) .mat files are not supported; re-save it in "
                          "MATLAB with save(..., '-v7')")
    if head.startswith(b"MATLAB"):
        return "mat"
    suffix = path.suffix.lower()
    if suffix == ".npz" or head[:2] == b"PK":
        raise _fail(path, "truncated or not a zip archive (a .npz model file is a zip archive)")
    if suffix == ".mat":
        raise _fail(path, f"not a MATLAB v5 .mat file (no 'MATLAB' header; starts with "
                          f"{head[:16]!r})")
    raise _fail(path, f"unrecognised model file (neither a face3dkit .npz nor a MATLAB .mat "
                      f"file; starts with {head[:16]!r})")
