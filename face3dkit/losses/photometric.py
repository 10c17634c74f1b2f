"""Skin-attention-weighted photometric loss (Deng et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["photometric_loss", "PhotometricLoss"]


def _as_weight_map(w: Tensor, like: Tensor, name: str) -> Tensor:
    """Accept ``(B, H, W)`` or ``(B, H, W, 1)``; return ``(B, H, W)``."""
    if w.dim() == like.dim() and w.shape[-1] == 1:
        w = w[..., 0]
    if w.shape != like.shape[:-1]:
        raise ValueError(
            f"{name} must be (B, H, W) or (B, H, W, 1) matching image {tuple(like.shape)}, "
            f"got {tuple(w.shape)}"
        )
    return w


def photometric_loss(
    image: Tensor,
    render: Tensor,
    mask: Tensor,
    attention: Tensor | None = None,
    eps: float = 1e-6,
    detach_weights: bool = True,
    min_denominator: float = 1.0,
) -> Tensor:
    """Weighted mean per-pixel colour distance.

    ``L = sum_{b,i} w_bi * sqrt(eps + ||I_bi - R_bi||^2) / max(sum_{b,i} w_bi, min_denominator)``
    with ``w = mask * attention``: the Euclidean norm over RGB (not squared), as in Deng et al.'s
    paper and both code releases (``photo_loss``: ``sqrt(eps + sum_c (A - B)^2) * mask``,
    normalised by ``max(sum(mask), 1)`` over the whole batch). ``eps`` keeps the gradient finite
    where the two images agree.

    Args:
        image: ``(B, H, W, 3)`` input image, RGB in ``[0, 1]``.
        render: ``(B, H, W, 3)`` rendered face, same range.
        mask: ``(B, H, W, 1)`` or ``(B, H, W)`` rendered-face mask (1 inside).
        attention: optional ``(B, H, W, 1)`` / ``(B, H, W)`` per-pixel weights (skin attention,
            :func:`skin_attention`); None = 1.
        eps: added under the square root.
        detach_weights: stop gradients through ``mask * attention`` (Deng et al. detach both).
        min_denominator: lower bound of the normaliser (Deng: 1.0).

    Returns:
        Scalar tensor, in colour units of ``image`` (``[0, 1]`` scale).
    """
    if image.shape != render.shape or image.shape[-1] != 3:
        raise ValueError(
            f"image and render must both be (B, H, W, 3), got {tuple(image.shape)} and "
            f"{tuple(render.shape)}"
        )
    w = _as_weight_map(mask, image, "mask").to(image.dtype)
    if attention is not None:
        w = w * _as_weight_map(attention, image, "attention").to(image.dtype)
    if detach_weights:
        w = w.detach()
    dist = torch.sqrt(eps + ((image - render) ** 2).sum(-1))
    denom = torch.clamp(w.sum(), min=min_denominator)
    return (dist * w).sum() / denom


class PhotometricLoss(nn.Module):
    """Module form of :func:`photometric_loss`: ``forward(image, render, mask, attention=None)``."""

    def __init__(self, eps: float = 1e-6, detach_weights: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.detach_weights = detach_weights

    def forward(
        self, image: Tensor, render: Tensor, mask: Tensor, attention: Tensor | None = None
    ) -> Tensor:
        return photometric_loss(
            image, render, mask, attention, eps=self.eps, detach_weights=self.detach_weights
        )
