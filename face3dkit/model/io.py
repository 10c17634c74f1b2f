"""Reading and writing morphable-model files.

:func:`load_model` takes a known name (``'default'``) or a path and detects the format from the
file's content (the extension is only used for messages):

- ``.npz`` — face3dkit's own format (below), e.g. the embedded default model;
- ``BFM_model_front.mat`` — the Basel Face Model in Deng et al. 2019's layout (MATLAB v5 file,
  read with :func:`scipy.io.loadmat`); see :mod:`face3dkit.model.bfm` to build it from the raw
  BFM 2009 files.

Every problem with a file (missing, truncated, not a model, wrong keys or shapes) raises
:class:`ModelFileError` (a :class:`ValueError`) whose message is one line starting with the path.

face3dkit model file (``.npz``, format version 1)
--------------------------------------------------

A NumPy ``.npz`` archive (zip, written compressed with :func:`numpy.savez_compressed`), read with
``allow_pickle=False`` — so it holds only plain numeric, boolean and unicode-string arrays.
``N`` vertices, ``F`` triangles, ``K_id/K_exp/K_tex`` components, ``T`` UV vertices.

=================  ================  =======  ==================================================
key                shape             dtype    meaning
=================  ================  =======  ==================================================
``format``         ()                str      ``'face3dkit-morphable-model'``
``format_version`` ()                int      ``1``
``mean_shape``     (N, 3)            float32  mean shape, model units (``meta['units']``); used
                                              as stored (not re-centred on load)
``id_basis``       (N, 3, K_id)      float32  identity basis (scaled so coefficients ~ N(0, 1))
``exp_basis``      (N, 3, K_exp)     float32  expression basis
``mean_albedo``    (N, 3)            float32  mean RGB albedo, in [0, 1]
``albedo_basis``   (N, 3, K_tex)     float32  albedo basis, [0, 1] units per unit coefficient
``faces``          (F, 3)            int32    0-based vertex ids, counter-clockwise seen from
                                              outside (normals ``(v1-v0) x (v2-v0)`` point out)
``landmark_idx``   (68,)             int32    0-based vertex ids of the iBUG 68 landmarks
``skin_mask``      (N,)              bool     vertices used by the skin-albedo regulariser
``front_mask``     (N,)              bool     vertices of the front face region
``front_faces``    (F2, 3)           int32    optional; triangles of the front region (0-based
                                              ids into all N vertices); default: the faces
                                              whose three vertices are in ``front_mask``
``vertex_faces``   (N, M)            int32    optional; faces adjacent to each vertex, -1
                                              padded; default: built from ``faces``
``uv``             (T, 2)            float32  optional; texture coordinates in [0, 1], origin
                                              at the bottom-left of the texture image
``face_uv``        (F, 3)            int32    with ``uv``: 0-based ``uv`` ids per face corner
``id_names``       (K_id,)           str      optional component names
``exp_names``      (K_exp,)          str      optional, e.g. ``'jawOpen'``
``tex_names``      (K_tex,)          str      optional
``region_names``   (R,)              str      optional names of vertex regions, e.g. ``'face'``,
                                              ``'eyeball'``, ``'teeth'``, ``'mouth_interior'``
``vertex_region``  (N,)              int      with ``region_names``: region of each vertex
                                              (index into ``region_names``); default: one
                                              region ``'face'``
``meta``           ()                str      optional JSON object: ``name``, ``licence``,
                                              ``provenance``, ``units``, ``albedo_range``, ...
=================  ================  =======  ==================================================

Readers accept any floating dtype for the float arrays, any integer dtype for the index arrays
and bool or 0/1 integers for the masks; :func:`save_model` writes the dtypes above, so a
save/load round trip is exact. Unknown extra keys are ignored. On load, ``meta['source']`` is
set to the path the model was read from.
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from collections.abc import Callable, Iterable
from importlib.resources import as_file, files
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from face3dkit.io.atomic import atomic_write
from face3dkit.model.morphable import MorphableModel

__all__ = [
    "ModelFileError",
    "load_model",
    "save_model",
    "read_model_file",
    "detect_format",
    "default_model_path",
    "KNOWN_MODELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
]

FORMAT_NAME = "face3dkit-morphable-model"
FORMAT_VERSION = 1

#: Model names :func:`load_model` understands, with a one-line description.
KNOWN_MODELS: dict[str, str] = {
    "default": "face3dkit's embedded default model v2: ICT-FaceKit Light shape (MIT) with 53 ARKit "
               "blendshapes, eyes, teeth, mouth interior, and a MakeHuman CC0 albedo (default_model.npz)",
    "makehuman": "the MakeHuman CC0 model (v1 default: 34 MakeHuman expression units, face surface only; "
                 "makehuman_model.npz)",
}
#: Asset file of each known model name.
_MODEL_FILES = {"default": "default_model.npz", "makehuman": "makehuman_model.npz"}

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


class ModelFileError(ValueError):
    """A model file is missing, unreadable, or not a valid model.

    The message is a single line that starts with the file path (or the unknown model name).
    """


# ----------------------------------------------------------------------------------------------
# small helpers


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


# ----------------------------------------------------------------------------------------------
# format detection


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


# ----------------------------------------------------------------------------------------------
# face3dkit .npz


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except zipfile.BadZipFile as e:
        detail = "" if "not a zip file" in str(e) else f" ({_one_line(e, 100)})"
        raise _fail(path, f"truncated or not a zip archive{detail}") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise _fail(path, "contains object arrays (pickled data is not allowed in a model "
                              "file)") from None
        raise _fail(path, f"corrupt archive member ({_one_line(e)})") from None
    except Exception as e:  # zlib.error, EOFError, OSError, ... from a damaged archive
        raise _fail(path, f"corrupt or truncated archive ({type(e).__name__}: "
                          f"{_one_line(e)})") from None


def _npz_kwargs(path: Path, d: dict[str, np.ndarray]) -> dict[str, Any]:
    """Validate the arrays of a face3dkit .npz and turn them into MorphableModel arguments."""
    p = _Problems(path)
    if "format" not in d:
        keys = ", ".join(sorted(d)) or "none"
        raise _fail(path, f"not a face3dkit model file (no 'format' key; keys: {keys})")
    fmt = d["format"]
    if fmt.dtype.kind not in "US" or fmt.size != 1 or str(fmt.reshape(()).item()) != FORMAT_NAME:
        raise _fail(path, f"format is {_one_line(fmt.reshape(-1)[:1].tolist(), 60)}, "
                          f"expected {FORMAT_NAME!r}")
    ver = d.get("format_version")
    if ver is None or ver.dtype.kind not in "iu" or ver.size != 1:
        raise _fail(path, "format_version missing or not an integer")
    if int(ver.reshape(())) != FORMAT_VERSION:
        raise _fail(path, f"format_version {int(ver.reshape(()))} is not supported (this "
                          f"face3dkit reads version {FORMAT_VERSION})")
    required = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis", "faces",
                "landmark_idx", "skin_mask", "front_mask")
    missing = [k for k in required if k not in d]
    if missing:
        raise _fail(path, f"missing keys {', '.join(missing)}")

    def arr(key: str, kinds: str, what: str) -> np.ndarray | None:
        a = d.get(key)
        if a is None:
            return None
        if a.dtype.kind not in kinds:
            p.add(f"{key} has dtype {a.dtype}, expected {what}")
            return None
        return a

    mean = arr("mean_shape", "f", "a float array")
    if mean is not None and (mean.ndim != 2 or mean.shape[1] != 3):
        p.add(f"mean_shape has shape {_shape(mean)}, expected (N, 3)")
        mean = None
    p.raise_if_any()
    assert mean is not None
    n = mean.shape[0]
    for key in ("id_basis", "exp_basis", "albedo_basis"):
        b = arr(key, "f", "a float array")
        if b is not None and (b.ndim != 3 or b.shape[1] != 3 or b.shape[0] != n):
            p.add(f"{key} has shape {_shape(b)} but mean_shape has {n} vertices "
                  f"(expected ({n}, 3, K))")
    alb = arr("mean_albedo", "f", "a float array")
    if alb is not None and alb.shape != (n, 3):
        p.add(f"mean_albedo has shape {_shape(alb)} but mean_shape has {n} vertices")
    faces = arr("faces", "iu", "an integer array")
    n_faces = None
    if faces is not None:
        if faces.ndim != 2 or faces.shape[1] != 3:
            p.add(f"faces has shape {_shape(faces)}, expected (F, 3)")
        else:
            n_faces = faces.shape[0]
            _check_range(p, "faces", faces, 0, n, f"vertex ids must be in [0, {n})")
    lm = arr("landmark_idx", "iu", "an integer array")
    if lm is not None:
        if lm.shape != (68,):
            p.add(f"landmark_idx has shape {_shape(lm)}, expected (68,)")
        else:
            _check_range(p, "landmark_idx", lm, 0, n, f"vertex ids must be in [0, {n})")
    for key in ("skin_mask", "front_mask"):
        m = arr(key, "biu", "bool")
        if m is not None:
            if m.shape != (n,):
                p.add(f"{key} has shape {_shape(m)} but mean_shape has {n} vertices")
            elif m.dtype.kind != "b" and not np.isin(m, (0, 1)).all():
                p.add(f"{key} must be boolean (or 0/1)")
    ff = arr("front_faces", "iu", "an integer array")
    if ff is not None:
        if ff.ndim != 2 or ff.shape[1] != 3:
            p.add(f"front_faces has shape {_shape(ff)}, expected (F2, 3)")
        else:
            _check_range(p, "front_faces", ff, 0, n, f"vertex ids must be in [0, {n})")
    vf = arr("vertex_faces", "iu", "an integer array")
    if vf is not None:
        if vf.ndim != 2 or vf.shape[0] != n:
            p.add(f"vertex_faces has shape {_shape(vf)} but mean_shape has {n} vertices "
                  f"(expected ({n}, M))")
        elif n_faces is not None:
            _check_range(p, "vertex_faces", vf, -1, n_faces,
                         f"face ids must be in [0, {n_faces}) or -1 (padding)")
    uv = arr("uv", "f", "a float array")
    fuv = arr("face_uv", "iu", "an integer array")
    if ("uv" in d) != ("face_uv" in d):
        p.add("uv and face_uv must be given together")
    elif uv is not None and fuv is not None:
        if uv.ndim != 2 or uv.shape[1] != 2:
            p.add(f"uv has shape {_shape(uv)}, expected (T, 2)")
        elif faces is not None and fuv.shape != faces.shape:
            p.add(f"face_uv has shape {_shape(fuv)} but faces has shape {_shape(faces)}")
        else:
            _check_range(p, "face_uv", fuv, 0, uv.shape[0], f"uv ids must be in [0, "
                                                             f"{uv.shape[0]})")
    names: dict[str, list[str] | None] = {}
    for key, basis in (("id_names", "id_basis"), ("exp_names", "exp_basis"),
                       ("tex_names", "albedo_basis")):
        a = arr(key, "US", "strings")
        names[key] = None
        if a is None:
            continue
        k = d[basis].shape[-1] if d[basis].ndim == 3 else None
        if a.ndim != 1 or (k is not None and a.shape[0] != k):
            p.add(f"{key} has shape {_shape(a)} but {basis} has {k} components")
        else:
            names[key] = [x.decode() if isinstance(x, bytes) else str(x) for x in a.tolist()]
    regions = None
    rn, vr = arr("region_names", "US", "strings"), arr("vertex_region", "iu", "an integer array")
    if ("region_names" in d) != ("vertex_region" in d):
        p.add("region_names and vertex_region must be given together")
    elif rn is not None and vr is not None:
        if rn.ndim != 1 or vr.shape != (n,):
            p.add(f"vertex_region has shape {_shape(vr)} but mean_shape has {n} vertices")
        else:
            _check_range(p, "vertex_region", vr, 0, len(rn), f"region ids must be in [0, {len(rn)})")
            regions = ([x.decode() if isinstance(x, bytes) else str(x) for x in rn.tolist()], vr)
    meta: dict[str, Any] = {}
    if "meta" in d:
        m = d["meta"]
        if m.dtype.kind not in "US" or m.size != 1:
            p.add("meta must be a JSON string")
        else:
            text = m.reshape(()).item()
            try:
                meta = json.loads(text.decode() if isinstance(text, bytes) else text)
            except ValueError as e:
                p.add(f"meta is not valid JSON ({_one_line(e, 80)})")
            else:
                if not isinstance(meta, dict):
                    p.add("meta must be a JSON object")
                    meta = {}
    p.raise_if_any()
    meta["source"] = str(path)
    return dict(
        mean_shape=d["mean_shape"], id_basis=d["id_basis"], exp_basis=d["exp_basis"],
        mean_albedo=d["mean_albedo"], albedo_basis=d["albedo_basis"], faces=d["faces"],
        landmark_idx=d["landmark_idx"], skin_mask=d["skin_mask"], front_mask=d["front_mask"],
        front_faces=d.get("front_faces"), vertex_faces=d.get("vertex_faces"), uv=d.get("uv"),
        face_uv=d.get("face_uv"), **names, meta=meta, recenter=False,
        region_names=None if regions is None else regions[0],
        vertex_region=None if regions is None else regions[1],
    )


def _check_range(p: _Problems, key: str, a: np.ndarray, lo: int, hi: int, what: str) -> None:
    """Add a problem unless every element of ``a`` is in ``[lo, hi)``."""
    if a.size and (int(a.min()) < lo or int(a.max()) >= hi):
        p.add(f"{key} out of range ({what}; found {int(a.min())}..{int(a.max())})")


# ----------------------------------------------------------------------------------------------
# MATLAB files (Deng et al.'s BFM_model_front.mat)


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


def _deng_kwargs(path: Path, data: dict) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------------------------
# public API


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a model file without building the module.

    Args:
        path: a face3dkit ``.npz`` or a ``BFM_model_front.mat`` (detected from the content).

    Returns:
        Keyword arguments for :class:`MorphableModel` (numpy arrays, names, ``meta`` with
        ``source`` set to ``path``, and ``recenter``: False for .npz, True for Deng's .mat).

    Raises:
        ModelFileError: anything wrong with the file, as one line starting with the path.
    """
    path = Path(path).expanduser()
    fmt = detect_format(path)
    if fmt == "npz":
        return _npz_kwargs(path, _read_npz(path))
    return _deng_kwargs(path, read_mat(path))


def default_model_path(name: str = "default") -> Path:
    """Where an embedded model (``'default'`` or ``'makehuman'``) lives."""
    with as_file(_default_model_resource(name)) as p:
        return Path(p)


def _default_model_resource(name: str = "default") -> Any:
    return files("face3dkit._assets") / _MODEL_FILES[name]


_DEFAULT_CACHE: dict[tuple, dict[str, Any]] = {}


def _load_default_kwargs(name: str = "default") -> dict[str, Any]:
    """An embedded model's arguments, read once per file version (path, mtime, size)."""
    res = _default_model_resource(name)
    if not res.is_file():
        raise ModelFileError(f"default model file missing: {res} "
                             f"(run assets/build/build_default_model.py)")
    with as_file(res) as path:
        st = os.stat(path)
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in _DEFAULT_CACHE:
            kwargs = read_model_file(path)
            _DEFAULT_CACHE[key] = kwargs
        cached = _DEFAULT_CACHE[key]
    # the module's buffers may share memory with these arrays: hand out copies
    return {k: v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v)
            for k, v in cached.items()}


def _build(kwargs: dict[str, Any], source: object) -> MorphableModel:
    try:
        return MorphableModel(**kwargs)
    except (ValueError, TypeError, IndexError, RuntimeError) as e:
        msg = _one_line(e, 2000)
        prefix = f"{source}: "
        raise ModelFileError(msg if msg.startswith(prefix) else prefix + msg) from None


def load_model(name_or_path: str | os.PathLike, *, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> MorphableModel:
    """Load a morphable model by name or from a file.

    Args:
        name_or_path: ``'default'`` (see :data:`KNOWN_MODELS`) or the path of a face3dkit
            ``.npz`` or of Deng et al.'s ``BFM_model_front.mat`` (format detected from the
            content; see the module docstring). BFM is converted to the library's conventions:
            albedo divided by 255 into [0, 1], 0-based indices, mean shape re-centred.
        device: move the model there (default CPU).
        dtype: floating dtype of the float buffers (default float32); index buffers stay int64,
            masks bool.

    Returns:
        A :class:`MorphableModel` (``model.meta['source']`` is the file it came from).

    Raises:
        ModelFileError: unknown name, missing file or invalid contents (one line, starting with
            the path or name).
    """
    if dtype is not None and not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    if isinstance(name_or_path, str) and name_or_path in KNOWN_MODELS:
        kwargs = _load_default_kwargs(name_or_path)
    else:
        path = Path(name_or_path).expanduser()
        looks_like_name = (isinstance(name_or_path, str) and "/" not in name_or_path
                           and os.sep not in name_or_path and not path.suffix)
        if looks_like_name and not path.exists():
            known = ", ".join(KNOWN_MODELS)
            raise ModelFileError(f"{name_or_path}: unknown model name (known names: {known}; or "
                                 f"give the path of a .npz or BFM_model_front.mat file)")
        kwargs = read_model_file(path)
    model = _build(kwargs, kwargs["meta"]["source"])
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _model_arrays(model: MorphableModel) -> dict[str, np.ndarray]:
    """The .npz arrays of ``model`` (float32 / int32 / bool, on the CPU)."""

    def get(t: torch.Tensor, dt: type) -> np.ndarray:
        a = t.detach().cpu().numpy()
        if dt is np.int32 and a.size and (a.max() > np.iinfo(np.int32).max):
            raise ValueError("index too large for int32")
        return a.astype(dt)

    out: dict[str, np.ndarray] = {
        "format": np.asarray(FORMAT_NAME),
        "format_version": np.asarray(FORMAT_VERSION, dtype=np.int32),
    }
    for key in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis"):
        out[key] = get(getattr(model, key), np.float32)
    for key in ("faces", "landmark_idx", "front_faces", "vertex_faces"):
        out[key] = get(getattr(model, key), np.int32)
    for key in ("skin_mask", "front_mask"):
        out[key] = get(getattr(model, key), np.bool_)
    if model.uv is not None:
        out["uv"] = get(model.uv, np.float32)
        out["face_uv"] = get(model.face_uv, np.int32)
    for key in ("id_names", "exp_names", "tex_names"):
        names = getattr(model, key, None)
        if names is not None:
            out[key] = np.asarray([str(s) for s in names], dtype=str)
    if model.region_names != ["face"]:
        out["region_names"] = np.asarray(model.region_names, dtype=str)
        out["vertex_region"] = get(model.vertex_region, np.int32)
    out["meta"] = np.asarray(json.dumps(dict(model.meta), default=str, sort_keys=True))
    return out


def save_model(model: MorphableModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as a face3dkit ``.npz`` (format version 1, compressed), atomically.

    Float buffers are stored as float32, indices as int32, masks as bool; ``mean_shape`` is
    stored as it is in the model (already re-centred if the model re-centred it), so
    ``load_model(save_model(m, p))`` reproduces every buffer, the component names and ``meta``
    (except ``meta['source']``, which becomes ``p``) exactly.

    Args:
        model: the model to write.
        path: destination; written as is (no ``.npz`` is appended).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    if not isinstance(model, MorphableModel):
        raise TypeError(f"expected a MorphableModel, got {type(model).__name__}")
    arrays = _model_arrays(model)
    return _atomic_write(Path(path).expanduser(), lambda f: np.savez_compressed(f, **arrays))
