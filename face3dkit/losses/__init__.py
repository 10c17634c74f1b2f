"""Losses of Deng et al. 2019 ("Accurate 3D Face Reconstruction with Weakly-Supervised Learning")
and the skin-colour model behind their photometric attention.

One small pure function per term (plus a thin ``nn.Module`` where state is useful):

* :func:`photometric_loss` - skin-attention-weighted RGB distance inside the face mask.
* :func:`landmark_loss` - 68-point weighted squared distance (nose / inner mouth x20);
  :func:`robust_landmark_loss` - its Huber / Geman-McClure forms (outliers down-weighted).
* :func:`perceptual_loss`, :class:`PerceptualLoss` - 1 - cosine of identity embeddings.
* :func:`coefficient_regularization`, :func:`gamma_regularization` - 3DMM / lighting priors.
* :func:`reflectance_loss` - albedo variance over the skin region.
* :func:`coefficient_supervision`, :func:`vertex_space_supervision` - known coefficients
  (synthetic renders) as a supervised term, in coefficient or in vertex / colour space.
* :class:`LossWeights` - the paper's weights; :meth:`LossWeights.combine` sums weighted terms.
* :func:`skin_probability`, :func:`skin_attention`, :func:`fit_skin_gmm`,
  :class:`SkinColorModel` - naive-Bayes skin colour model of two :class:`GaussianMixtureModel`
  (:mod:`face3dkit.losses.gmm`).

Images are ``(B, H, W, 3)`` RGB in ``[0, 1]`` (``docs/conventions.md``).
"""

from .landmark import (
    DENG_HIGH_WEIGHT_INDICES,
    ROBUST_KINDS,
    ROBUST_SCALE_PX,
    LandmarkLoss,
    landmark_loss,
    landmark_weights,
    robust_landmark_loss,
    robust_penalty,
)
from .perceptual import PerceptualLoss, identity_features, perceptual_loss, warp_affine_crop
from .photometric import PhotometricLoss, photometric_loss
from .regularization import (
    ReflectanceLoss,
    coefficient_regularization,
    gamma_regularization,
    reflectance_loss,
)
from .skin import (
    SKIN_MODELS,
    GaussianMixtureModel,
    SkinColorModel,
    fit_skin_gmm,
    load_skin_model,
    rgb_to_ycbcr_bt601,
    skin_attention,
    skin_probability,
)
from .supervision import SUPERVISION_SPACES, basis_gram, coefficient_supervision, vertex_space_supervision
from .weights import LossWeights, image_loss_terms

__all__ = [
    "SUPERVISION_SPACES",
    "basis_gram",
    "coefficient_supervision",
    "vertex_space_supervision",
    "LossWeights",
    "image_loss_terms",
    "photometric_loss",
    "PhotometricLoss",
    "DENG_HIGH_WEIGHT_INDICES",
    "landmark_weights",
    "landmark_loss",
    "LandmarkLoss",
    "ROBUST_KINDS",
    "ROBUST_SCALE_PX",
    "robust_landmark_loss",
    "robust_penalty",
    "warp_affine_crop",
    "identity_features",
    "perceptual_loss",
    "PerceptualLoss",
    "coefficient_regularization",
    "gamma_regularization",
    "reflectance_loss",
    "ReflectanceLoss",
    "GaussianMixtureModel",
    "SkinColorModel",
    "SKIN_MODELS",
    "load_skin_model",
    "rgb_to_ycbcr_bt601",
    "skin_probability",
    "skin_attention",
    "fit_skin_gmm",
]
