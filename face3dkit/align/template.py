"""The 5-point 3D template that Deng et al.'s alignment fits to the detected 5 points.

Deng et al. use ``BFM/similarity_Lm3D_all.mat`` (68 3D landmarks of the BFM mean face, not
redistributable) reduced to 5 points with ``load_lm3d``. face3dkit derives the same kind of
template from any :class:`~face3dkit.MorphableModel` (its mean shape's 68 landmark vertices,
reduced with :func:`~face3dkit.landmarks.lm68_to_lm5`, in model units: decimetres for BFM and the
default model), and still reads Deng et al.'s file when the user has it.

The template's origin is the point that lands on the crop centre; for a model template that is the
model origin (the mean-shape centroid), so a face reconstructed with ``trans = 0`` under the
default camera (``u = 112 + 1015 x / (10 - z)``) overlays the aligned crop.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from face3dkit.landmarks.base import lm68_to_lm5

if TYPE_CHECKING:
    from face3dkit.model.morphable import MorphableModel

__all__ = ["TemplateError", "default_template", "load_deng_template", "template_5p_from_model", "as_template"]


class TemplateError(ValueError):
    """A template file could not be used; one line ``'<file>: <problem>'``."""


def template_5p_from_model(model: MorphableModel, eyes: Literal["corners", "contour"] = "corners") -> Tensor:
    """The 5-point alignment template of a morphable model.

    Args:
        model: the morphable model (its mean shape, re-centred on the mean-shape centroid, and its
            68 ``landmark_idx``).
        eyes: eye-centre definition of :func:`~face3dkit.landmarks.lm68_to_lm5`.

    Returns:
        (5, 3) model-space points (model units, +y up, +z toward the camera) in
        :data:`~face3dkit.landmarks.LM5_NAMES` order, on the model's device and dtype.
    """
    with torch.no_grad():
        lm68 = model.landmarks(model.shape())[0]
    if lm68.shape[0] != 68:
        raise ValueError(f"model has {lm68.shape[0]} landmarks, expected 68 (iBUG)")
    return lm68_to_lm5(lm68, eyes=eyes).clone()


def load_deng_template(path: str | os.PathLike) -> Tensor:
    """Deng et al.'s template from their ``BFM/similarity_Lm3D_all.mat`` (key ``lm``, 68 x 3).

    Reduced exactly like Deng et al.'s ``load_lm3d``: eyes as the mean of the corner pairs (1-based
    37/40 and 43/46), nose 31, mouth corners 49 and 55.

    Returns:
        (5, 3) float64 tensor (BFM decimetres).

    Raises:
        TemplateError: one line naming the file and the problem.
    """
    from scipy.io import loadmat

    p = Path(path)
    if not p.is_file():
        raise TemplateError(f"{p}: no such file")
    try:
        mat = loadmat(str(p))
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/MatReadError for bad files
        raise TemplateError(f"{p}: not a readable .mat file ({' '.join(str(e).split())})") from None
    if "lm" not in mat:
        raise TemplateError(f"{p}: no 'lm' variable (expected Deng et al.'s similarity_Lm3D_all.mat)")
    lm = np.asarray(mat["lm"], dtype=np.float64)
    if lm.shape != (68, 3):
        raise TemplateError(f"{p}: 'lm' has shape {lm.shape}, expected (68, 3)")
    return torch.from_numpy(lm68_to_lm5(lm, eyes="corners").copy())


@functools.lru_cache(maxsize=1)
def _default_template_cpu() -> Tensor:
    from face3dkit.model import load_model

    return template_5p_from_model(load_model("default")).detach().to("cpu", torch.float64)


def default_template() -> Tensor:
    """(5, 3) float64 CPU template of the embedded default model (loaded once, then cached)."""
    return _default_template_cpu().clone()


def as_template(template: MorphableModel | Tensor | np.ndarray | str | os.PathLike | None) -> Tensor:
    """Normalise the accepted template forms to a (5, 3) tensor.

    Args:
        template: None (:func:`default_template`), a :class:`~face3dkit.MorphableModel`, a path to
            Deng et al.'s ``similarity_Lm3D_all.mat``, or a (5, 3) / (68, 3) array or tensor
            (68 points are reduced with :func:`~face3dkit.landmarks.lm68_to_lm5`).
    """
    if template is None:
        return default_template()
    if isinstance(template, (str, os.PathLike)):
        return load_deng_template(template)
    if isinstance(template, torch.nn.Module):
        return template_5p_from_model(template)  # type: ignore[arg-type]
    t = template if isinstance(template, Tensor) else torch.as_tensor(np.asarray(template, dtype=np.float64))
    if t.shape == (68, 3):
        t = lm68_to_lm5(t)
    if t.shape != (5, 3):
        raise ValueError(f"template must be (5, 3) or (68, 3), got {tuple(t.shape)}")
    return t
