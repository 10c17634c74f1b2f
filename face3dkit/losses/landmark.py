"""Weighted 68-point landmark loss (Deng et al. 2019) and its robust forms.

:func:`landmark_loss` is Deng et al.'s weighted mean squared distance. :func:`robust_landmark_loss`
replaces the squared distance ``d^2`` of each point by a robust penalty ``rho(d)`` with a scale
``s`` in pixels, so that a few landmarks far off (a detector failure, a corrupted landmark file)
cannot drag the fit:

* ``'l2'``: ``rho = d^2`` (exactly :func:`landmark_loss`).
* ``'huber'``: ``rho = d^2`` for ``d <= s``, ``2 s d - s^2`` beyond (linear: bounded gradient).
* ``'gm'`` (Geman-McClure): ``rho = s^2 d^2 / (s^2 + d^2)`` (bounded: a point ``d >> s`` off
  costs at most ``s^2`` and its gradient vanishes like ``2 s^4 / d^3``).

All three equal ``d^2`` to first order for ``d << s``, so Deng et al.'s weight ``w_lan`` keeps its
meaning for well-fitted points.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "DENG_HIGH_WEIGHT_INDICES",
    "ROBUST_KINDS",
    "ROBUST_SCALE_PX",
    "landmark_weights",
    "landmark_loss",
    "robust_landmark_loss",
    "robust_penalty",
    "LandmarkLoss",
]

#: Penalties of :func:`robust_landmark_loss`.
ROBUST_KINDS: tuple[str, ...] = ("l2", "huber", "gm")

#: Default robust scale ``s`` in pixels of Deng et al.'s 224 x 224 crop (the fitter rescales it
#: with the crop size): about 10 % of the outer-eye-corner distance (~90 px in that crop), three
#: to five times the fitted-vs-detected residual of a good dlib fit, far below a gross error.
ROBUST_SCALE_PX: float = 10.0

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
    return robust_landmark_loss(pred, target, weights, kind="l2")


def robust_penalty(sq_dist: Tensor, kind: str = "gm", scale: float = ROBUST_SCALE_PX) -> Tensor:
    """Robust penalty ``rho(d)`` of squared distances ``d^2`` (any shape, pixels^2; see the module).

    Args:
        sq_dist: squared point distances ``d^2`` (pixels^2), any shape.
        kind: ``'l2'``, ``'huber'`` or ``'gm'``.
        scale: ``s`` in pixels (> 0; unused by ``'l2'``).

    Returns:
        ``rho`` with the shape of ``sq_dist`` (pixels^2).
    """
    if kind == "l2":
        return sq_dist
    if not scale > 0:
        raise ValueError(f"robust landmark loss: scale must be > 0 pixels, got {scale}")
    s2 = scale * scale
    if kind == "gm":
        return s2 * sq_dist / (s2 + sq_dist)
    if kind == "huber":
        # sqrt of a value clamped to >= s^2: finite gradient in the branch torch.where discards.
        far = 2.0 * scale * sq_dist.clamp_min(s2).sqrt() - s2
        return torch.where(sq_dist <= s2, sq_dist, far)
    raise ValueError(f"robust landmark loss: kind must be one of {', '.join(ROBUST_KINDS)}, got {kind!r}")


def robust_landmark_loss(pred: Tensor, target: Tensor, weights: Tensor | None = None, kind: str = "gm",
                         scale: float = ROBUST_SCALE_PX) -> Tensor:
    """Weighted mean robust landmark penalty.

    ``L = sum_{b,n} w_n * rho(||p_bn - q_bn||) / (B * N)`` with ``rho`` of :func:`robust_penalty`
    (``kind='l2'`` is :func:`landmark_loss`).

    Args:
        pred: ``(B, N, 2)`` projected model landmarks (pixels).
        target: ``(B, N, 2)`` detected landmarks (pixels).
        weights: ``(N,)`` or ``(B, N)``; None = :func:`landmark_weights` (requires N = 68).
        kind: ``'l2'``, ``'huber'`` or ``'gm'``.
        scale: robust scale ``s`` in the pixels of ``pred`` (:data:`ROBUST_SCALE_PX` is for a
            224 px crop).

    Returns:
        Scalar tensor (pixels^2).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must be (B, N, 2), got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if weights is None:
        weights = landmark_weights(pred.shape[1], device=pred.device, dtype=pred.dtype)
    rho = robust_penalty(((pred - target) ** 2).sum(-1), kind, scale)  # (B, N)
    return (rho * weights.to(pred.dtype)).sum() / (pred.shape[0] * pred.shape[1])


class LandmarkLoss(nn.Module):
    """Module form of :func:`landmark_loss` holding the ``(N,)`` weights as a buffer."""

    def __init__(self, weights: Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weights", landmark_weights() if weights is None else weights.clone())

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return landmark_loss(pred, target, self.weights)
