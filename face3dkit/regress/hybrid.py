"""Deng et al.'s weakly-supervised hybrid loss for a coefficient regressor (R-Net), and one
training step.

The loss is the fitter's (:mod:`face3dkit.fit`) applied to predicted rather than optimised
coefficients: the skin-attention-weighted photometric loss on the front-face pixels of
:func:`face3dkit.render.render_face`, the landmark loss with Deng et al.'s point weights, the
identity perceptual loss when an identity network is given, and the coefficient, light and
albedo-variance priors, weighted by :class:`face3dkit.losses.LossWeights` (the paper's values).
On synthetic renders, whose true coefficients are known, a supervised term (mean squared error of
the coefficient vector) can be added.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from face3dkit.align.arcface import arcface_matrix
from face3dkit.losses import (
    LossWeights,
    image_loss_terms,
    landmark_loss,
    landmark_weights,
    skin_attention,
)
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel
from face3dkit.render.face import render_face

__all__ = ["HybridLossConfig", "hybrid_loss", "rnet_train_step"]


@dataclass
class HybridLossConfig:
    """Settings of :func:`hybrid_loss`.

    Attributes:
        weights: term weights (Deng et al.'s by default).
        skin_model: skin-colour model of the photometric attention (None: no attention).
        supervised: weight of the coefficient-supervision term (synthetic data with known
            coefficients; 0 = off, Deng et al.'s weakly-supervised loss alone).
    """

    weights: LossWeights = field(default_factory=LossWeights)
    skin_model: str | None = "jones_rehg"
    supervised: float = 0.0


def hybrid_loss(model: MorphableModel, coeffs: Coefficients, images: Tensor, lm2d: Tensor, camera: Any,
                cfg: HybridLossConfig | None = None, perceptual: Any = None,
                true_coeffs: Coefficients | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The hybrid loss of predicted coefficients.

    Args:
        model: the morphable model.
        coeffs: B predicted coefficients (differentiable).
        images: (B, H, W, 3) aligned crops in [0, 1].
        lm2d: (B, 68, 2) landmarks in crop pixels.
        camera: the crop's camera (Deng et al.'s for the crop size).
        cfg: :class:`HybridLossConfig`.
        perceptual: optional :class:`face3dkit.losses.PerceptualLoss`.
        true_coeffs: true coefficients for the supervised term (used when ``cfg.supervised > 0``).

    Returns:
        (total loss, the unweighted terms by name: photometric, landmark, coefficient, gamma,
        reflectance, and perceptual / supervised when used).
    """
    cfg = cfg or HybridLossConfig()
    w = cfg.weights
    r = render_face(model, coeffs, camera)
    with torch.no_grad():
        att = (skin_attention(images, cfg.skin_model)[..., None] if cfg.skin_model
               else torch.ones_like(images[..., :1]))
    use_perceptual = perceptual is not None and getattr(perceptual, "enabled", True)
    lm_term = landmark_loss(r.landmarks2d, lm2d, landmark_weights(68, device=lm2d.device, dtype=lm2d.dtype))
    terms = image_loss_terms(w, images, r.image, r.front_mask, att, lm_term, coeffs, r.face.albedo, model.skin_mask,
                             perceptual if use_perceptual else None, arcface_matrix(lm2d) if use_perceptual else None)
    total = w.combine(terms)[0]
    if true_coeffs is not None and cfg.supervised > 0:
        terms["supervised"] = ((coeffs.join() - true_coeffs.join().to(coeffs.id)) ** 2).mean()
        total = total + cfg.supervised * terms["supervised"]
    return total, terms


def rnet_train_step(net: torch.nn.Module, model: MorphableModel, batch: dict[str, Tensor], optimizer: Any,
                    camera: Any, cfg: HybridLossConfig | None = None, perceptual: Any = None) -> dict[str, float]:
    """One optimisation step of a coefficient regressor on a batch.

    Args:
        net: maps (B, 3, H, W) images in [0, 1] to coefficients (:class:`face3dkit.nets.RNet`).
        model: the morphable model whose layout ``net`` predicts.
        batch: ``image`` (B, H, W, 3) in [0, 1], ``landmarks`` (B, 68, 2) crop pixels, optionally
            ``coeffs`` (B, total) true coefficients (supervised term).
        optimizer: a torch optimizer over ``net``'s parameters (the paper: Adam, lr 1e-4).
        camera: the crop's camera.

    Returns:
        The loss terms and ``loss`` (the total) as floats.
    """
    net.train()
    optimizer.zero_grad(set_to_none=True)
    images = batch["image"]
    c = Coefficients.split(net(images.permute(0, 3, 1, 2)), model.layout)
    true = Coefficients.split(batch["coeffs"], model.layout) if "coeffs" in batch else None
    total, terms = hybrid_loss(model, c, images, batch["landmarks"], camera, cfg, perceptual, true)
    total.backward()
    optimizer.step()
    return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
