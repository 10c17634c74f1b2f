"""Default loss weights of Deng et al. 2019 and a helper to combine weighted terms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["LossWeights", "image_loss_terms"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the hybrid loss of Deng et al., "Accurate 3D Face Reconstruction with
    Weakly-Supervised Learning: From Single Image to Image Set" (CVPRW 2019).

    Defaults are the paper's values: ``w_photo = 1.9``, ``w_lan = 1.6e-3``,
    ``w_per = 0.2``, ``w_coef = 3e-4`` with relative weights ``1.0 / 0.8 / 1.7e-3`` for identity /
    expression / texture coefficients, ``w_tex = 5`` for the reflectance (albedo-variance) loss.
    ``gamma = 10`` is the lighting (SH) regulariser ``w_gamma`` of their released code (both the
    TensorFlow ``options.py`` and the PyTorch ``facerecon_model.py``); the paper does not list it.
    :meth:`released_code` gives the released code's values (``w_color = 1.92``,
    ``w_tex`` relative texture weight ``1.7e-2``).

    Attributes are multiplied with the unweighted terms by :meth:`combine`:

    ``photometric`` - :func:`photometric_loss`; ``landmark`` - :func:`landmark_loss`;
    ``perceptual`` - :func:`perceptual_loss`; ``coefficient`` - :func:`coefficient_regularization`
    (which itself applies ``coef_id``, ``coef_exp``, ``coef_tex``); ``gamma`` -
    :func:`gamma_regularization`; ``reflectance`` - :func:`reflectance_loss`.
    """

    photometric: float = 1.9
    landmark: float = 1.6e-3
    perceptual: float = 0.2
    coefficient: float = 3e-4
    coef_id: float = 1.0
    coef_exp: float = 0.8
    coef_tex: float = 1.7e-3
    reflectance: float = 5.0
    gamma: float = 10.0

    @classmethod
    def paper(cls) -> LossWeights:
        """The paper's weights (the defaults)."""
        return cls()

    @classmethod
    def released_code(cls) -> LossWeights:
        """Weights of Deng et al.'s released training code (TF ``options.py``; PyTorch
        ``Deep3DFaceRecon_pytorch`` ``facerecon_model.py``): photometric 1.92, texture 1.7e-2."""
        return cls(photometric=1.92, coef_tex=1.7e-2)

    def term_weight(self, name: str) -> float:
        """Weight of a named term (``photometric``, ``landmark``, ``perceptual``,
        ``coefficient``, ``gamma``, ``reflectance``)."""
        if name not in _TERMS:
            raise KeyError(f"unknown loss term {name!r}; expected one of {_TERMS}")
        return float(getattr(self, name))

    def combine(self, terms: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sum of the unweighted scalar terms present in ``terms``.

        Returns:
            ``(total, weighted)`` where ``weighted[name] = weight * terms[name]``.
        """
        if not terms:
            raise ValueError("no loss terms given")
        weighted = {name: self.term_weight(name) * value for name, value in terms.items()}
        total = sum(weighted.values())
        assert isinstance(total, Tensor)
        return total, weighted


_TERMS = ("photometric", "landmark", "perceptual", "coefficient", "gamma", "reflectance")


def image_loss_terms(weights: LossWeights, images: Tensor, render: Tensor, mask: Tensor, attention: Tensor | None,
                     landmark: Tensor, coeffs: Any, albedo: Tensor, skin_mask: Tensor, perceptual: Any = None,
                     crop_matrix: Tensor | None = None) -> dict[str, Tensor]:
    """The unweighted terms of Deng et al.'s hybrid loss for rendered coefficients, in the order
    :meth:`LossWeights.combine` sums them (the fitter's photometric stage and the R-Net's loss).

    Args:
        weights: for the coefficient prior's per-block weights.
        images, render: (B, H, W, 3) target crops and the render; mask (B, H, W, 1) front-face
            pixels; attention (B, H, W, 1) skin attention or None.
        landmark: the landmark term, already computed (each caller has its own loss and weights).
        coeffs: :class:`face3dkit.model.Coefficients` (``id``, ``exp``, ``tex``, ``gamma``).
        albedo, skin_mask: (B, N, 3) albedo and its (N,) skin mask for the reflectance prior.
        perceptual, crop_matrix: optional identity loss and the (B, 2, 3) ArcFace crops; the
            render is composited over the image inside the mask.

    Returns:
        ``photometric, landmark, coefficient, gamma, reflectance`` (+ ``perceptual``).
    """
    from face3dkit.losses.photometric import photometric_loss
    from face3dkit.losses.regularization import coefficient_regularization, gamma_regularization, reflectance_loss

    w = weights
    terms = {"photometric": photometric_loss(images, render, mask, attention), "landmark": landmark,
             "coefficient": coefficient_regularization(coeffs.id, coeffs.exp, coeffs.tex, w.coef_id, w.coef_exp,
                                                       w.coef_tex),
             "gamma": gamma_regularization(coeffs.gamma),
             "reflectance": reflectance_loss(albedo, skin_mask)}
    if perceptual is not None and crop_matrix is not None:
        terms["perceptual"] = perceptual(images, render * mask + images * (1 - mask), crop_matrix)
    return terms
