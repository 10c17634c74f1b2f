"""Face alignment: Deng et al. 2019's 5-point POS crop (224 x 224) as one invertible affine map.

- :func:`align_image` — photo + landmarks -> :class:`Alignment` (crop, image->crop ``matrix``,
  ``inverse``, landmarks in the crop, ``scale``, ``crop_to_image`` / ``image_to_crop``).
- :func:`alignment_transform` — the (B, 2, 3) transform only; :func:`warp_affine` — batched
  ``grid_sample`` warp (CPU/CUDA) with antialiased downscaling.
- templates: :func:`template_5p_from_model` (any morphable model), :func:`load_deng_template`
  (Deng et al.'s ``similarity_Lm3D_all.mat``), :func:`default_template` (the default model).
"""

from face3dkit.align.arcface import ARCFACE_TEMPLATE, arcface_matrix
from face3dkit.align.deng import (
    DENG_RESCALE_FACTOR,
    DENG_TARGET_SIZE,
    Alignment,
    AlignmentTransform,
    align_image,
    alignment_transform,
    apply_affine,
    invert_affine,
    warp_affine,
)
from face3dkit.align.template import (
    TemplateError,
    as_template,
    default_template,
    load_deng_template,
    template_5p_from_model,
)

__all__ = [
    "ARCFACE_TEMPLATE",
    "arcface_matrix",
    "DENG_RESCALE_FACTOR",
    "DENG_TARGET_SIZE",
    "Alignment",
    "AlignmentTransform",
    "TemplateError",
    "align_image",
    "alignment_transform",
    "apply_affine",
    "as_template",
    "default_template",
    "invert_affine",
    "load_deng_template",
    "template_5p_from_model",
    "warp_affine",
]
