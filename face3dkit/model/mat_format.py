"""Deng et al. 2019's ``BFM_model_front.mat`` (MATLAB v5, read with :func:`scipy.io.loadmat`):
the keys :func:`face3dkit.load_model` reads and their conversion to a morphable model (1-based
indices to 0-based, the albedo 0-255 to [0, 1], re-centred on the mean shape)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from face3dkit.model._common import _fail, _one_line, _Problems, _shape, detect_format

__all__ = ["DENG_META", "DENG_OPTIONAL_KEYS", "DENG_REQUIRED_KEYS", "deng_model_kwargs", "read_mat"]

#: Keys of Deng et al.'s ``BFM_model_front.mat`` that :func:`load_model` needs.
DENG_REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints")
#: Keys it uses when present (all are in Deng et al.'s file).
DENG_OPTIONAL_KEYS = ("point_buf", "frontmask2_idx", "tri_mask2", "skinmask")

DENG_META = {
    "name": "BFM (Deng et al. 2019 front layout)",
    "format": "deng2019-bfm-front-mat",
    "units": "decimetres (BFM 2009 micrometres / 1e5), re-centred on the mean-shape centroid",
    "albedo_range": [0.0, 1.0],
    "albedo_scale": "BFM 0-255 albedo divided by 255",
    "licence": "Basel Face Model 2009 licence: non-commercial research use, not redistributable",
    "provenance": "Deng et al. 2019 transferBFM09: BFM 2009 identity and albedo PCs scaled by "
                  "their standard deviations, Guo et al. 2018 expression basis, cropped to the "
                  "front face",
    "landmarks": "iBUG 68",
}


def read_mat(path: str | os.PathLike, required: Iterable[str] = (), hint: str = "") -> dict:
    """:func:`scipy.io.loadmat` with one-line :class:`ModelFileError` messages.

    Args:
        path: a MATLAB v5 .mat file.
        required: variable names that must be present.
        hint: appended to the missing-keys message, e.g. ``'not a BFM_model_front.mat?'``.

    Returns:
        The ``loadmat`` dictionary (arrays 2-D, as MATLAB stores them).
    """
    from scipy.io import loadmat

    path = Path(path)
    if detect_format(path) != "mat":
        raise _fail(path, "not a MATLAB .mat file (it is a zip/.npz archive)")
    try:
        data = loadmat(path)
    except MemoryError:
        raise _fail(path, "corrupt .mat file (implausible array sizes)") from None
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/zlib.error on bad files
        raise _fail(path, f"truncated or corrupt .mat file ({type(e).__name__}: "
                          f"{_one_line(e, 120)})") from None
    missing = [k for k in required if k not in data]
    if missing:
        raise _fail(path, f"missing keys {', '.join(missing)}" + (f" ({hint})" if hint else ""))
    return data


def _numeric(p: _Problems, data: dict, key: str) -> np.ndarray | None:
    a = data.get(key)
    if a is None:
        return None
    try:
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError
    except (TypeError, ValueError):
        p.add(f"{key} is not a numeric array")
        return None
    return a


def _one_based(p: _Problems, key: str, a: np.ndarray | None, hi: int, what: str,
               allow_zero: bool = False) -> np.ndarray | None:
    """1-based integer-valued ids in [1, hi] (or [0, hi]) -> int64 0-based, or a problem."""
    if a is None:
        return None
    if a.size and not np.array_equal(a, np.round(a)):
        p.add(f"{key} must hold integer {what} ids")
        return None
    a = a.astype(np.int64)
    lo = 0 if allow_zero else 1
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        p.add(f"{key} out of range (1-based {what} ids must be in [{lo}, {hi}]; found "
              f"{int(a.min())}..{int(a.max())})")
        return None
    return a - 1


def deng_model_kwargs(path: Path, data: dict) -> dict[str, Any]:
    """Convert the arrays of a ``BFM_model_front.mat`` to MorphableModel arguments."""
    if "meanshape" not in data and "shapeMU" in data and "shapePC" in data:
        raise _fail(path, "this is the raw BFM 2009 file (01_MorphableModel.mat); convert it to "
                          "Deng et al.'s front layout first with "
                          "face3dkit.model.bfm.convert_bfm2009 (python -m face3dkit.model.bfm)")
    missing = [k for k in DENG_REQUIRED_KEYS if k not in data]
    if missing:
        raise _fail(path, f"missing keys {', '.join(missing)} (not a BFM_model_front.mat?)")
    p = _Problems(path)
    a = {k: _numeric(p, data, k) for k in DENG_REQUIRED_KEYS + DENG_OPTIONAL_KEYS}
    p.raise_if_any()
    mean = a["meanshape"]
    assert mean is not None
    if mean.size == 0 or mean.size % 3 or sum(s > 1 for s in mean.shape) > 1:
        raise _fail(path, f"meanshape has shape {_shape(mean)}, expected (1, 3N)")
    n = mean.size // 3
    bases = {}
    for key in ("idBase", "exBase", "texBase"):
        b = a[key]
        assert b is not None
        if b.ndim != 2 or b.shape[0] != 3 * n:
            p.add(f"{key} has shape {_shape(b)} but meanshape has {n} vertices "
                  f"(expected ({3 * n}, K))")
        else:
            bases[key] = b.astype(np.float32).reshape(n, 3, b.shape[1])
    tex = a["meantex"]
    assert tex is not None
    if tex.size != 3 * n:
        p.add(f"meantex has shape {_shape(tex)} but meanshape has {n} vertices "
              f"(expected (1, {3 * n}))")
    tri = a["tri"]
    assert tri is not None
    faces = None
    if tri.ndim != 2 or tri.shape[1] != 3:
        p.add(f"tri has shape {_shape(tri)}, expected (F, 3)")
    else:
        faces = _one_based(p, "tri", tri, n, "vertex")
    n_faces = tri.shape[0] if tri.ndim == 2 else 0
    kp = a["keypoints"]
    assert kp is not None
    lm = None
    if kp.size != 68:
        p.add(f"keypoints has shape {_shape(kp)}, expected (1, 68)")
    else:
        lm = _one_based(p, "keypoints", kp.reshape(-1), n, "vertex")
    vf = None
    if a["point_buf"] is not None:
        pb = a["point_buf"]
        if pb.ndim != 2 or pb.shape[0] != n:
            p.add(f"point_buf has shape {_shape(pb)} but meanshape has {n} vertices "
                  f"(expected ({n}, M))")
        elif faces is not None:
            vf = _one_based(p, "point_buf", pb, n_faces + 1, "face", allow_zero=True)
            if vf is not None:  # F+1 (and 0) is Deng's padding -> the appended zero normal
                vf[(vf < 0) | (vf >= n_faces)] = -1
    front = None
    if a["frontmask2_idx"] is not None:
        idx = _one_based(p, "frontmask2_idx", a["frontmask2_idx"].reshape(-1), n, "vertex")
        if idx is not None:
            front = np.zeros(n, bool)
            front[idx] = True
    front_faces = None
    if a["tri_mask2"] is not None:
        tm = a["tri_mask2"]
        if tm.size and (tm.ndim != 2 or tm.shape[1] != 3):
            p.add(f"tri_mask2 has shape {_shape(tm)}, expected (F2, 3)")
        else:
            front_faces = _one_based(p, "tri_mask2", tm.reshape(-1, 3), n, "vertex")
    skin = None
    if a["skinmask"] is not None:
        sm = a["skinmask"]
        if sm.size != n:
            p.add(f"skinmask has shape {_shape(sm)} but meanshape has {n} vertices")
        else:
            skin = sm.reshape(-1) != 0
    p.raise_if_any()
    assert tex is not None
    meta = dict(DENG_META, source=str(path))
    return dict(
        mean_shape=mean.astype(np.float32).reshape(n, 3),
        id_basis=bases["idBase"],
        exp_basis=bases["exBase"],
        mean_albedo=(tex.astype(np.float64).reshape(n, 3) / 255.0).astype(np.float32),
        albedo_basis=(bases["texBase"].astype(np.float64) / 255.0).astype(np.float32),
        faces=faces, landmark_idx=lm, skin_mask=skin, front_mask=front, front_faces=front_faces,
        vertex_faces=vf, meta=meta, recenter=True,
    )
