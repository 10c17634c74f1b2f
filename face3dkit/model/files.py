"""Reading and writing morphable-model files.

:func:`load_model` takes a known name (``'default'``) or a path and detects the format from the
file's content (the extension is only used for messages):

- ``.npz`` — face3dkit's own format (below), e.g. the embedded default model;
- ``BFM_model_front.mat`` — the Basel Face Model in Deng et al. 2019's layout (MATLAB v5 file,
  read with :func:`scipy.io.loadmat`); see :mod:`face3dkit.model.bfm` to build it from the raw
  BFM 2009 files.

Every problem with a file (missing, truncated, not a model, wrong keys or shapes) raises
:class:`ModelFileError` (a :class:`ValueError`) whose message is one line starting with the path.

The formats: :mod:`face3dkit.model.npz_format` (face3dkit's own, with its key table) and
:mod:`face3dkit.model.mat_format` (Deng et al.'s ``.mat``).
"""

from __future__ import annotations

import copy
import os
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.model._common import ModelFileError, _atomic_write, _one_line, detect_format
from face3dkit.model.mat_format import DENG_META, DENG_OPTIONAL_KEYS, DENG_REQUIRED_KEYS, deng_model_kwargs, read_mat
from face3dkit.model.morphable import MorphableModel
from face3dkit.model.npz_format import FORMAT_NAME, FORMAT_VERSION, model_arrays, npz_model_kwargs, read_npz

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
    "DENG_META",
    "DENG_OPTIONAL_KEYS",
    "DENG_REQUIRED_KEYS",
    "read_mat",
]

#: Model names :func:`load_model` understands, with a one-line description.
KNOWN_MODELS: dict[str, str] = {
    "default": "face3dkit's embedded default model v2: ICT-FaceKit Light shape (MIT) with 53 ARKit "
               "blendshapes, eyes, teeth, mouth interior, and a MakeHuman CC0 albedo (default_model.npz)",
    "makehuman": "the MakeHuman CC0 model (v1 default: 34 MakeHuman expression units, face surface only; "
                 "makehuman_model.npz)",
}
#: Asset file of each known model name.
_MODEL_FILES = {"default": "default_model.npz", "makehuman": "makehuman_model.npz"}


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
        return npz_model_kwargs(path, read_npz(path))
    return deng_model_kwargs(path, read_mat(path))


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
    arrays = model_arrays(model)
    return _atomic_write(Path(path).expanduser(), lambda f: np.savez_compressed(f, **arrays))
