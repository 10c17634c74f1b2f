"""Deng et al.'s weakly-supervised hybrid loss for a coefficient regressor (R-Net), and one
training step.

The loss is the fitter's (:mod:`face3dkit.fit`) applied to predicted rather than optimised
coefficients: the skin-attention-weighted photometric loss on the front-face pixels of
:func:`face3dkit.render.render_face`, the landmark loss with Deng et al.'s point weights, the
identity perceptual loss when an identity network is given, and the coefficient, light and
albedo-variance priors, weighted by :class:`face3dkit.losses.LossWeights` (the paper's values).
On synthetic renders, whose true coefficients are known, a supervised term can be added: the mean
squared error of the coefficient vector, or of the shape and colour the coefficients make
(:mod:`face3dkit.losses.supervision`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from face3dkit.align.arcface import arcface_matrix
from face3dkit.losses import (
    SUPERVISION_SPACES,
    LossWeights,
    coefficient_supervision,
    image_loss_terms,
    landmark_loss,
    landmark_weights,
    skin_attention,
    vertex_space_supervision,
)
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel
from face3dkit.render.face import render_face

__all__ = ["HybridLossConfig", "autocast_dtype", "hybrid_loss", "rnet_loss", "rnet_train_step"]


@dataclass
class HybridLossConfig:
    """Settings of :func:`hybrid_loss`.

    Attributes:
        weights: term weights (Deng et al.'s by default).
        skin_model: skin-colour model of the photometric attention (None: no attention).
        supervised: weight of the coefficient-supervision term (synthetic data with known
            coefficients; 0 = off, Deng et al.'s weakly-supervised loss alone).
        supervised_space: where that term compares: ``'coefficients'`` (the mean squared error of
            the coefficient vector, :func:`face3dkit.losses.coefficient_supervision`) or
            ``'vertices'`` (each linear block by the mean squared vertex / colour displacement its
            error causes, :func:`face3dkit.losses.vertex_space_supervision`).
    """

    weights: LossWeights = field(default_factory=LossWeights)
    skin_model: str | None = "jones_rehg"
    supervised: float = 0.0
    supervised_space: str = "coefficients"

    def __post_init__(self) -> None:
        if self.supervised_space not in SUPERVISION_SPACES:
            raise ValueError(f"supervised_space must be one of {', '.join(SUPERVISION_SPACES)}, "
                             f"got {self.supervised_space!r}")


def hybrid_loss(model: MorphableModel, coeffs: Coefficients, images: Tensor, lm2d: Tensor, camera: Any,
                cfg: HybridLossConfig | None = None, perceptual: Any = None,
                true_coeffs: Coefficients | None = None, supervised_rows: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """The hybrid loss of predicted coefficients.

    Args:
        model: the morphable model.
        coeffs: B predicted coefficients (differentiable).
        images: (B, H, W, 3) aligned crops in [0, 1].
        lm2d: (B, 68, 2) landmarks in crop pixels.
        camera: the crop's camera (Deng et al.'s for the crop size).
        cfg: :class:`HybridLossConfig`.
        perceptual: optional :class:`face3dkit.losses.PerceptualLoss`.
        true_coeffs: true coefficients for the supervised term (used when ``cfg.supervised > 0``):
            of every row, or of the rows ``supervised_rows`` selects.
        supervised_rows: (B,) bool, the rows with known coefficients (renders in a batch mixed with
            photos); None = every row.

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
        pred = coeffs if supervised_rows is None else coeffs[supervised_rows.to(coeffs.id.device)]
        terms["supervised"] = (vertex_space_supervision(model, pred, true_coeffs)
                               if cfg.supervised_space == "vertices" else coefficient_supervision(pred, true_coeffs))
        total = total + cfg.supervised * terms["supervised"]
    return total, terms


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an AMP setting on ``device``: ``'off'`` -> None; ``'bf16'`` / ``'fp16'``;
    ``'auto'`` -> bf16 on a CUDA device that supports it, fp16 on an older one, None on the CPU."""
    if amp not in ("off", "auto", "bf16", "fp16"):
        raise ValueError(f"amp must be 'off', 'auto', 'bf16' or 'fp16', got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def rnet_loss(net: torch.nn.Module, model: MorphableModel, batch: dict[str, Tensor], camera: Any,
              cfg: HybridLossConfig | None = None, perceptual: Any = None, amp_dtype: torch.dtype | None = None
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """The hybrid loss of a regressor's coefficients for a batch (differentiable in ``net``).

    Args:
        net: maps (B, 3, H, W) images in [0, 1] to coefficients (:class:`face3dkit.nets.RNet`).
        model: the morphable model whose layout ``net`` predicts.
        batch: ``image`` (B, H, W, 3) in [0, 1], ``landmarks`` (B, 68, 2) crop pixels, optionally
            ``coeffs`` true coefficients (supervised term): (B, total), or, with ``is_photo`` (B,)
            bool (:func:`face3dkit.regress.photos.mixed_batch`), those of the rows that are not photos.
        camera: the crop's camera.
        cfg, perceptual: as :func:`hybrid_loss`.
        amp_dtype: run the network's forward pass under autocast with this dtype (None: off); the
            coefficients are cast to float32 before rendering, so the renderer and the loss stay fp32.

    Returns:
        (total, the terms by name).
    """
    images = batch["image"]
    x = images.permute(0, 3, 1, 2)
    if amp_dtype is None:
        out = net(x)
    else:
        with torch.autocast(images.device.type, dtype=amp_dtype):
            out = net(x)
    c = Coefficients.split(out.float(), model.layout)
    true = Coefficients.split(batch["coeffs"], model.layout) if "coeffs" in batch else None
    rows = ~batch["is_photo"] if "is_photo" in batch else None
    return hybrid_loss(model, c, images, batch["landmarks"], camera, cfg, perceptual, true, rows)


def rnet_train_step(net: torch.nn.Module, model: MorphableModel, batch: dict[str, Tensor], optimizer: Any,
                    camera: Any, cfg: HybridLossConfig | None = None, perceptual: Any = None, *,
                    amp_dtype: torch.dtype | None = None, scaler: Any = None,
                    after_backward: Callable[[], None] | None = None) -> dict[str, float]:
    """One optimisation step of a coefficient regressor on a batch (:func:`rnet_loss`).

    Args:
        net, model, batch, camera, cfg, perceptual, amp_dtype: as :func:`rnet_loss`.
        optimizer: a torch optimizer over ``net``'s parameters (the paper: Adam, lr 1e-4).
        scaler: a ``torch.amp.GradScaler`` for fp16 autocast (None: plain backward / step).
        after_backward: called between the backward pass and the optimizer step (data-parallel
            gradient averaging: :func:`face3dkit.distributed.average_gradients`).

    Returns:
        The loss terms and ``loss`` (the total) as floats.
    """
    net.train()
    optimizer.zero_grad(set_to_none=True)
    total, terms = rnet_loss(net, model, batch, camera, cfg, perceptual, amp_dtype)
    if scaler is None:
        total.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
    else:
        scaler.scale(total).backward()
        if after_backward is not None:
            after_backward()
        scaler.step(optimizer)
        scaler.update()
    return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}
