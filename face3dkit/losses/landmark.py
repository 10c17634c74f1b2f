"""Weighted 68-point landmark loss (Deng et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DENG_HIGH_WEIGHT_INDICES", "landmark_weights", "landmark_loss", "LandmarkLoss"]

#: 0-based iBUG-68 indices weighted 20 by Deng et al.: nose 28-30 and inner mouth 60-67
#: (``weight[28:31] = 20; weight[-8:] = 20`` in their ``landmark_loss``).
DENG_HIGH_WEIGHT_INDICES: tuple[int, ...] = (28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67)


def landmark_weights(
    n_points: int = 68,
    high: float = 20.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Deng et al.'s per-landmark weights ``(68,)``: ``high`` (20) on nose 28-30 and inner mouth
    60-67 (0-based), 1 elsewhere."""
    if n_points != 68:
        raise ValueError("Deng et al.'s weights are defined for the 68-point iBUG layout")
    w = torch.ones(n_points, device=device, dtype=dtype or torch.get_default_dtype())
    w[list(DENG_HIGH_WEIGHT_INDICES)] = high
    return w


def landmark_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean squared landmark distance.

    ``L = sum_{b,n} w_n * ||p_bn - q_bn||^2 / (B * N)``, exactly Deng et al.'s normalisation
    (TF ``Landmark_loss`` divides by ``68 * batch``; PyTorch ``landmark_loss`` by
    ``B * 68``). Coordinates are **not** rescaled: with their 224x224 crops the loss is in
    pixels^2, which the small weight ``w_lan = 1.6e-3`` compensates.

    Args:
        pred: ``(B, N, 2)`` projected model landmarks (pixels).
        target: ``(B, N, 2)`` detected landmarks (pixels).
        weights: ``(N,)`` or ``(B, N)``; None = :func:`landmark_weights` (requires N = 68).

    Returns:
        Scalar tensor (pixels^2).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must be (B, N, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if weights is None:
        weights = landmark_weights(pred.shape[1], device=pred.device, dtype=pred.dtype)
    sq = ((pred - target) ** 2).sum(-1)  # (B, N)
    return (sq * weights.to(pred.dtype)).sum() / (pred.shape[0] * pred.shape[1])


class LandmarkLoss(nn.Module):
    """Module form of :func:`landmark_loss` holding the ``(N,)`` weights as a buffer."""

    def __init__(self, weights: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weights", landmark_weights() if weights is None else weights.clone())

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return landmark_loss(pred, target, self.weights)
