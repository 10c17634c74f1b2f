"""Coarser triangle sets of a morphable model (levels of detail) for cheaper rendering.

:func:`lod_faces` decimates a model's mesh on its mean shape (:func:`face3dkit.model.decimate.decimate_mesh`)
keeping a subset of its vertices, so the model's bases, coefficients and landmarks are unchanged
and only fewer triangles are drawn. Region borders, the front-face (photometric) border and the
skin mask are kept (vertices on them never move), as are the mesh's holes (mouth, eyes); the mean
albedo is part of the error, so colour detail (brows, lips, irises) keeps vertices.

The decimation takes seconds, so results are memoised per process and cached on disk under
``$FACE3DKIT_CACHE_DIR`` (else ``$XDG_CACHE_HOME/face3dkit``, else ``~/.cache/face3dkit``) in
``lod/<model digest>-<faces>.npy``, written atomically; an unwritable cache only costs the time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from face3dkit.io.atomic import atomic_write
from face3dkit.io.digest import tensors_sha256, user_cache_dir
from face3dkit.model.decimate import decimate_mesh

if TYPE_CHECKING:
    from face3dkit.model.morphable import MorphableModel

__all__ = ["cache_dir", "lod_faces", "lod_labels"]

_MEMO: dict[tuple[str, int], np.ndarray] = {}
_VERSION = 3  # bump when the decimation changes: old cache files are then not read
#: Weight of the mean albedo's attribute quadrics in the decimation's error (:func:`decimate_mesh`'s
#: ``attribute_weight``): on the default model's 10,000-triangle level it keeps the brows, lips and
#: irises and lowers the mean colour difference to the full mesh's render from 0.012 (geometry
#: alone) to 0.0066 per channel (99th percentile 0.081 to 0.039) over yaw -70..70 at 64 px.
ALBEDO_WEIGHT = 1.0


def cache_dir() -> Path:
    """``$FACE3DKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/face3dkit``, else ``~/.cache/face3dkit``."""
    return user_cache_dir("face3dkit", "FACE3DKIT_CACHE_DIR")


def lod_labels(model: MorphableModel) -> np.ndarray:
    """(V,) int vertex labels whose borders a decimation keeps: region x front mask x skin mask."""
    region = model.vertex_region.detach().cpu().numpy().astype(np.int64)
    front = model.front_mask.detach().cpu().numpy().astype(np.int64)
    skin = model.skin_mask.detach().cpu().numpy().astype(np.int64)
    return region * 4 + front * 2 + skin


def _digest(model: MorphableModel) -> str:
    names = ("mean_shape", "faces", "vertex_region", "front_mask", "skin_mask")
    return tensors_sha256([(f"lod-v{_VERSION}", torch.zeros(0))] +
                          [(k, getattr(model, k)) for k in names])[:20]


def lod_faces(model: MorphableModel, target_faces: int, cache: bool = True) -> Tensor:
    """(F', 3) long triangles on ``model``'s vertices, at most ``target_faces`` of them (on the
    model's device): the model's own faces when ``target_faces >= model.n_faces``.

    Args:
        model: the morphable model.
        target_faces: the number of triangles wanted (> 0).
        cache: read and write the on-disk cache (:func:`cache_dir`).
    """
    if target_faces <= 0:
        raise ValueError(f"lod_faces: target_faces must be > 0, got {target_faces}")
    dev = model.faces.device
    if target_faces >= model.n_faces:
        return model.faces
    key = (_digest(model), int(target_faces))
    out = _MEMO.get(key)
    path = cache_dir() / "lod" / f"{key[0]}-{key[1]}.npy"
    if out is None and cache and path.is_file():
        try:
            loaded = np.load(path)
            if loaded.ndim == 2 and loaded.shape[1] == 3 and loaded.size and loaded.max() < model.n_verts:
                out = loaded.astype(np.int64)
        except (OSError, ValueError):
            out = None  # a damaged cache file: recompute (and overwrite it)
    if out is None:
        out = decimate_mesh(model.mean_shape.detach().cpu().numpy(), model.faces.detach().cpu().numpy(),
                            target_faces, labels=lod_labels(model),
                            attributes=model.mean_albedo.detach().cpu().numpy(), attribute_weight=ALBEDO_WEIGHT)
        if cache:
            _write_atomic(path, out)
    _MEMO[key] = out
    return torch.from_numpy(out).to(dev)


def _write_atomic(path: Path, arr: np.ndarray) -> None:
    try:
        atomic_write(path, lambda fh: np.save(fh, arr.astype(np.int32)))
    except OSError:
        pass  # a read-only home: the decimation is only recomputed next time
