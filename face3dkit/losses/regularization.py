"""Coefficient, lighting and reflectance regularisers (Deng et al. 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "coefficient_regularization",
    "gamma_regularization",
    "reflectance_loss",
    "ReflectanceLoss",
]


def coefficient_regularization(
    id_coeff: Tensor,
    exp_coeff: Tensor,
    tex_coeff: Tensor,
    w_id: float = 1.0,
    w_exp: float = 0.8,
    w_tex: float = 1.7e-3,
) -> Tensor:
    """``(w_id ||alpha||^2 + w_exp ||beta||^2 + w_tex ||delta||^2)``, summed, averaged over batch.

    As Deng et al.'s ``reg_loss`` (PyTorch) / ``Regulation_loss`` (TF, ``2 * l2_loss / B``):
    squared L2 norms without square root, divided by the batch size.

    Args:
        id_coeff: ``(B, 80)`` identity (shape) coefficients ``alpha``.
        exp_coeff: ``(B, 64)`` expression coefficients ``beta``.
        tex_coeff: ``(B, 80)`` texture (albedo) coefficients ``delta``.
        w_id, w_exp, w_tex: relative weights (paper: 1.0, 0.8, 1.7e-3; released code uses
            1.7e-2 for texture).

    Returns:
        Scalar tensor.
    """
    b = id_coeff.shape[0]
    total = (
        w_id * (id_coeff**2).sum() + w_exp * (exp_coeff**2).sum() + w_tex * (tex_coeff**2).sum()
    )
    return total / b


def gamma_regularization(gamma: Tensor) -> Tensor:
    """Penalise coloured light: mean squared deviation of each SH coefficient from its mean over
    the three colour channels (Deng et al.'s ``gamma_loss``, weight ``w_gamma = 10`` in their
    code; not described in the paper).

    Args:
        gamma: ``(B, 27)`` SH lighting coefficients laid out ``(3, 9)`` = (R, G, B) x 9
            (``docs/conventions.md``), or already ``(B, 3, 9)``.

    Returns:
        Scalar: ``mean_{b,c,k} (gamma_bck - mean_c gamma_bck)^2``.
    """
    g = gamma.reshape(gamma.shape[0], 3, 9)
    return ((g - g.mean(dim=1, keepdim=True)) ** 2).mean()


def reflectance_loss(albedo: Tensor, skin_mask: Tensor) -> Tensor:
    """Albedo-variance (uniform skin reflectance) loss of Deng et al.

    For a shared ``(N,)`` mask this is exactly their ``reflectance_loss``::

        mean_b = sum_n(m_n * a_bn) / sum_n(m_n)            # (B, 3)
        L = sum_{b,n,c} ((a_bnc - mean_bc) * m_n)^2 / (B * sum_n m_n)

    A per-sample ``(B, N)`` mask uses each sample's own mask sum (identical when masks agree).

    Args:
        albedo: ``(B, N, 3)`` per-vertex albedo (reflectance) in ``[0, 1]`` (the TF release used
            0-255 and divided by 255, which is the same quantity).
        skin_mask: ``(N,)`` or ``(B, N)`` weights, 1 on the predefined skin region.

    Returns:
        Scalar tensor (albedo units squared).
    """
    if albedo.dim() != 3 or albedo.shape[-1] != 3:
        raise ValueError(f"albedo must be (B, N, 3), got {tuple(albedo.shape)}")
    m = skin_mask.to(albedo.dtype)
    if m.dim() == 1:
        m = m.unsqueeze(0)
    if m.shape[-1] != albedo.shape[1] or m.dim() != 2:
        raise ValueError(f"skin_mask must be (N,) or (B, N) with N={albedo.shape[1]}")
    m = m.unsqueeze(-1)  # (1|B, N, 1)
    msum = m.sum(dim=1, keepdim=True)  # (1|B, 1, 1)
    mean = (m * albedo).sum(dim=1, keepdim=True) / msum
    per_sample = (((albedo - mean) * m) ** 2).sum(dim=(1, 2), keepdim=True) / msum
    return per_sample.sum() / albedo.shape[0]


class ReflectanceLoss(nn.Module):
    """Module form of :func:`reflectance_loss` holding the model's ``(N,)`` skin mask."""

    def __init__(self, skin_mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("skin_mask", torch.as_tensor(skin_mask).clone())

    def forward(self, albedo: Tensor) -> Tensor:
        return reflectance_loss(albedo, self.skin_mask)
