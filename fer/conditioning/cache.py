"""On-disk geometry cache: one ``.npz`` per provider setting, rows keyed by sample content hash.

A dataset is fitted once: the key of a row is the sha256 of the sample's content (image bytes, plus
the known landmarks when the dataset supplies them), and the file is named by the provider name and
a digest of its settings, so changing either the image or the settings recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from face3dkit.io.atomic import atomic_open
from face3dkit.io.digest import user_cache_dir
from fer.conditioning.table import GeometryTable

__all__ = ["GeometryCache", "default_cache_dir", "settings_digest"]


def _n_exp(exp: np.ndarray | None) -> int | None:
    return None if exp is None else int(exp.shape[1])


def default_cache_dir() -> Path:
    """``$FER_CACHE_DIR``, else ``$XDG_CACHE_HOME/fer``, else ``~/.cache/fer``."""
    return user_cache_dir("fer", "FER_CACHE_DIR")


def settings_digest(settings: dict[str, Any]) -> str:
    """16-hex digest of a JSON-serialisable settings dict (key order irrelevant)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class GeometryCache:
    """Geometry rows stored under ``root/geometry/<provider>-<settings digest>.npz``.

    Args:
        root: cache folder (default :func:`default_cache_dir`).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, settings: dict[str, Any]) -> Path:
        """The file holding rows for ``settings`` (which must include ``'provider'``)."""
        return self.root / "geometry" / f"{settings.get('provider', 'geometry')}-{settings_digest(settings)}.npz"

    def _read(self, settings: dict[str, Any]) -> dict[str, np.ndarray] | None:
        p = self.path(settings)
        if not p.is_file():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in ("keys", "pose", "landmarks", "valid")}
                if "exp" in z.files:
                    data["exp"] = z["exp"]
        except (OSError, ValueError, KeyError):
            return None  # a damaged cache file is recomputed, never trusted
        return data

    def lookup(self, keys: list[str], settings: dict[str, Any]) -> tuple[np.ndarray, GeometryTable]:
        """Cached rows for ``keys``.

        Returns:
            found (N,) bool and a table whose rows are filled where found.
        """
        table = GeometryTable.empty(len(keys))
        found = np.zeros(len(keys), bool)
        data = self._read(settings)
        if data is None:
            return found, table
        if "exp" in data:
            table.exp = np.zeros((len(keys), data["exp"].shape[1]), np.float32)
        where = {k: i for i, k in enumerate(data["keys"].tolist())}
        for j, k in enumerate(keys):
            i = where.get(k)
            if i is not None:
                found[j] = True
                table.pose[j] = data["pose"][i]
                table.landmarks[j] = data["landmarks"][i]
                table.valid[j] = data["valid"][i]
                if table.exp is not None:
                    table.exp[j] = data["exp"][i]
        return found, table

    def store(self, keys: list[str], table: GeometryTable, settings: dict[str, Any]) -> Path:
        """Add (or replace) rows, merging with what the file holds; written atomically."""
        p = self.path(settings)
        p.parent.mkdir(parents=True, exist_ok=True)
        data = self._read(settings)
        new = {k: j for j, k in enumerate(keys)}
        if data is not None and _n_exp(data.get("exp")) != _n_exp(table.exp):
            data = None  # rows of another layout (expression coefficients or not) are replaced, never mixed
        if data is not None:
            old_keys = data["keys"].tolist()
            old_keep = [i for i, k in enumerate(old_keys) if k not in new]
            all_keys = [old_keys[i] for i in old_keep] + list(keys)
            pose = np.concatenate([data["pose"][old_keep], table.pose])
            lms = np.concatenate([data["landmarks"][old_keep], table.landmarks])
            valid = np.concatenate([data["valid"][old_keep], table.valid])
            exp = None if table.exp is None else np.concatenate([data["exp"][old_keep], table.exp])
        else:
            all_keys, pose, lms, valid, exp = list(keys), table.pose, table.landmarks, table.valid, table.exp
        extra = {} if exp is None else {"exp": exp.astype(np.float32)}
        with atomic_open(p) as f:
            np.savez(f, keys=np.asarray(all_keys, dtype=str), pose=pose.astype(np.float32),
                     landmarks=lms.astype(np.float32), valid=valid.astype(bool),
                     settings=np.asarray(json.dumps(settings, sort_keys=True, default=str)), **extra)
        return p
