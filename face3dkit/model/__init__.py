"""Morphable face models: the model module, its coefficients, and the model file formats.

- :class:`MorphableModel` / :class:`FaceOutput` — the linear 3DMM (``morphable.py``).
- :class:`Coefficients` / :class:`CoefficientLayout` — the coefficient vector.
- :func:`load_model` / :func:`save_model` — ``'default'``, face3dkit ``.npz`` files and Deng et
  al.'s ``BFM_model_front.mat`` (``io.py``; errors are :class:`ModelFileError`).
- :func:`convert_bfm2009` — raw BFM 2009 + expression basis → ``BFM_model_front.mat``
  (``bfm.py``, also ``python -m face3dkit.model.bfm``).
- :func:`decimate_mesh` / :func:`lod_faces` — coarser triangle sets on a subset of a model's
  vertices (quadric-error half-edge collapse; ``decimate.py``, ``lod.py``).
"""

from __future__ import annotations

from typing import Any

from face3dkit.model.coefficients import CoefficientLayout, Coefficients
from face3dkit.model.decimate import decimate_mesh
from face3dkit.model.files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    KNOWN_MODELS,
    ModelFileError,
    default_model_path,
    detect_format,
    load_model,
    read_model_file,
    save_model,
)
from face3dkit.model.lod import lod_faces
from face3dkit.model.morphable import (
    FaceOutput,
    ModelRows,
    MorphableModel,
    build_vertex_faces,
    face_normals,
    vertex_normals,
)

__all__ = [
    "MorphableModel",
    "ModelRows",
    "FaceOutput",
    "Coefficients",
    "CoefficientLayout",
    "vertex_normals",
    "face_normals",
    "build_vertex_faces",
    "decimate_mesh",
    "lod_faces",
    "load_model",
    "save_model",
    "read_model_file",
    "detect_format",
    "default_model_path",
    "ModelFileError",
    "KNOWN_MODELS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "convert_bfm2009",
]


def __getattr__(name: str) -> Any:
    # imported lazily so that `python -m face3dkit.model.bfm` does not find the module already
    # imported by its package (runpy's RuntimeWarning)
    if name == "convert_bfm2009":
        from face3dkit.model.bfm import convert_bfm2009

        return convert_bfm2009
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
