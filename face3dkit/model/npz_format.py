"""face3dkit model file (``.npz``, format version 1)
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

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.model._common import _check_range, _fail, _one_line, _Problems, _shape
from face3dkit.model.morphable import MorphableModel

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "NPZ_SCHEMA", "model_arrays", "npz_model_kwargs", "read_npz"]

FORMAT_NAME = "face3dkit-morphable-model"
FORMAT_VERSION = 1


#: The schema of the file: key -> (required, dtype kinds accepted, what the kinds mean in messages).
#: Readers check presence and dtype from it; shapes and index ranges (which refer to each other:
#: N from ``mean_shape``, F from ``faces``, ...) are checked by :func:`npz_model_kwargs` as the
#: table in the module docstring says.
NPZ_SCHEMA: dict[str, tuple[bool, str, str]] = {
    "format": (True, "US", "a string"),
    "format_version": (True, "iu", "an integer"),
    "mean_shape": (True, "f", "a float array"),
    "id_basis": (True, "f", "a float array"),
    "exp_basis": (True, "f", "a float array"),
    "mean_albedo": (True, "f", "a float array"),
    "albedo_basis": (True, "f", "a float array"),
    "faces": (True, "iu", "an integer array"),
    "landmark_idx": (True, "iu", "an integer array"),
    "skin_mask": (True, "biu", "bool"),
    "front_mask": (True, "biu", "bool"),
    "front_faces": (False, "iu", "an integer array"),
    "vertex_faces": (False, "iu", "an integer array"),
    "uv": (False, "f", "a float array"),
    "face_uv": (False, "iu", "an integer array"),
    "id_names": (False, "US", "strings"),
    "exp_names": (False, "US", "strings"),
    "tex_names": (False, "US", "strings"),
    "region_names": (False, "US", "strings"),
    "vertex_region": (False, "iu", "an integer array"),
    "meta": (False, "US", "a JSON string"),
}


def read_npz(path: Path) -> dict[str, np.ndarray]:
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


def npz_model_kwargs(path: Path, d: dict[str, np.ndarray]) -> dict[str, Any]:
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
    required = [k for k, (req, _, _) in NPZ_SCHEMA.items() if req and k not in ("format", "format_version")]
    missing = [k for k in required if k not in d]
    if missing:
        raise _fail(path, f"missing keys {', '.join(missing)}")

    def arr(key: str) -> np.ndarray | None:
        """The array ``key`` if present and of a dtype the schema accepts (else None, and a problem)."""
        _, kinds, what = NPZ_SCHEMA[key]
        a = d.get(key)
        if a is None:
            return None
        if a.dtype.kind not in kinds:
            p.add(f"{key} has dtype {a.dtype}, expected {what}")
            return None
        return a

    mean = arr("mean_shape")
    if mean is not None and (mean.ndim != 2 or mean.shape[1] != 3):
        p.add(f"mean_shape has shape {_shape(mean)}, expected (N, 3)")
        mean = None
    p.raise_if_any()
    assert mean is not None
    n = mean.shape[0]
    for key in ("id_basis", "exp_basis", "albedo_basis"):
        b = arr(key)
        if b is not None and (b.ndim != 3 or b.shape[1] != 3 or b.shape[0] != n):
            p.add(f"{key} has shape {_shape(b)} but mean_shape has {n} vertices "
                  f"(expected ({n}, 3, K))")
    alb = arr("mean_albedo")
    if alb is not None and alb.shape != (n, 3):
        p.add(f"mean_albedo has shape {_shape(alb)} but mean_shape has {n} vertices")
    faces = arr("faces")
    n_faces = None
    if faces is not None:
        if faces.ndim != 2 or faces.shape[1] != 3:
            p.add(f"faces has shape {_shape(faces)}, expected (F, 3)")
        else:
            n_faces = faces.shape[0]
            _check_range(p, "faces", faces, 0, n, f"vertex ids must be in [0, {n})")
    lm = arr("landmark_idx")
    if lm is not None:
        if lm.shape != (68,):
            p.add(f"landmark_idx has shape {_shape(lm)}, expected (68,)")
        else:
            _check_range(p, "landmark_idx", lm, 0, n, f"vertex ids must be in [0, {n})")
    for key in ("skin_mask", "front_mask"):
        m = arr(key)
        if m is not None:
            if m.shape != (n,):
                p.add(f"{key} has shape {_shape(m)} but mean_shape has {n} vertices")
            elif m.dtype.kind != "b" and not np.isin(m, (0, 1)).all():
                p.add(f"{key} must be boolean (or 0/1)")
    ff = arr("front_faces")
    if ff is not None:
        if ff.ndim != 2 or ff.shape[1] != 3:
            p.add(f"front_faces has shape {_shape(ff)}, expected (F2, 3)")
        else:
            _check_range(p, "front_faces", ff, 0, n, f"vertex ids must be in [0, {n})")
    vf = arr("vertex_faces")
    if vf is not None:
        if vf.ndim != 2 or vf.shape[0] != n:
            p.add(f"vertex_faces has shape {_shape(vf)} but mean_shape has {n} vertices "
                  f"(expected ({n}, M))")
        elif n_faces is not None:
            _check_range(p, "vertex_faces", vf, -1, n_faces,
                         f"face ids must be in [0, {n_faces}) or -1 (padding)")
    uv = arr("uv")
    fuv = arr("face_uv")
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
        a = arr(key)
        names[key] = None
        if a is None:
            continue
        k = d[basis].shape[-1] if d[basis].ndim == 3 else None
        if a.ndim != 1 or (k is not None and a.shape[0] != k):
            p.add(f"{key} has shape {_shape(a)} but {basis} has {k} components")
        else:
            names[key] = [x.decode() if isinstance(x, bytes) else str(x) for x in a.tolist()]
    regions = None
    rn, vr = arr("region_names"), arr("vertex_region")
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


def model_arrays(model: MorphableModel) -> dict[str, np.ndarray]:
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
