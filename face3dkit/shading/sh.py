"""Spherical-harmonics Lambertian shading of Deng et al. 2019.

Irradiance is approximated with the first 9 real SH basis functions (bands 0-2) evaluated at the
unit normal, each scaled by the Lambertian kernel factor (Ramamoorthi & Hanrahan 2001):
``a0 = pi, a1 = 2 pi / sqrt(3), a2 = 2 pi / sqrt(8)`` and the basis normalisations
``c0 = 1 / sqrt(4 pi), c1 = sqrt(3) / sqrt(4 pi), c2 = 3 sqrt(5) / sqrt(12 pi)``.
Colour = albedo * (H(n) @ gamma_c) per channel c with ``gamma`` reshaped to (B, 3, 9).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SH_CONSTANTS", "sh_basis", "sh_shade", "solve_sh_lighting", "SHShader", "AMBIENT_INIT"]

AMBIENT_INIT = 0.8
"""Added to the DC coefficient of each colour (Deng et al.'s ``init_lit``)."""

_A0, _A1, _A2 = math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0)
_C0 = 1.0 / math.sqrt(4.0 * math.pi)
_C1 = math.sqrt(3.0) / math.sqrt(4.0 * math.pi)
_C2 = 3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi)
SH_CONSTANTS = {"a0": _A0, "a1": _A1, "a2": _A2, "c0": _C0, "c1": _C1, "c2": _C2}


def sh_basis(normals: Tensor) -> Tensor:
    """The 9 kernel-scaled SH basis values of Deng et al. at unit normals.

    Order: ``[a0 c0, -a1 c1 y, a1 c1 z, -a1 c1 x, a2 c2 x y, -a2 c2 y z,
    a2 c2 / (2 sqrt 3) (3 z^2 - 1), -a2 c2 x z, a2 c2 / 2 (x^2 - y^2)]``.

    Args:
        normals: (..., 3) unit normals.

    Returns:
        (..., 9) basis values.
    """
    x, y, z = normals.unbind(-1)
    return torch.stack(
        [
            torch.full_like(x, _A0 * _C0),
            -_A1 * _C1 * y,
            _A1 * _C1 * z,
            -_A1 * _C1 * x,
            _A2 * _C2 * x * y,
            -_A2 * _C2 * y * z,
            0.5 / math.sqrt(3.0) * _A2 * _C2 * (3.0 * z * z - 1.0),
            -_A2 * _C2 * x * z,
            0.5 * _A2 * _C2 * (x * x - y * y),
        ],
        -1,
    )


def sh_shade(albedo: Tensor, normals: Tensor, gamma: Tensor, ambient: float = AMBIENT_INIT) -> Tensor:
    """Per-vertex colour under SH lighting.

    Args:
        albedo: (B, N, 3) reflectance in the model's albedo range (BFM: 0-1 after Deng's /255).
        normals: (B, N, 3) unit normals in the lighting frame (world frame after rotation).
        gamma: (B, 27) SH coefficients, laid out (R 0..8, G 0..8, B 0..8).
        ambient: added to the DC coefficient of each channel (0.8 in Deng et al.).

    Returns:
        (B, N, 3) shaded colour.
    """
    if gamma.shape[-1] != 27:
        raise ValueError(f"gamma must have 27 coefficients, got shape {tuple(gamma.shape)}")
    g = gamma.reshape(gamma.shape[0], 3, 9).clone()
    g[:, :, 0] = g[:, :, 0] + ambient
    basis = sh_basis(normals)  # (B, N, 9)
    irradiance = basis @ g.transpose(1, 2)  # (B, N, 3)
    return irradiance * albedo


def solve_sh_lighting(features: Tensor, target: Tensor, weights: Tensor, ridge: float = 1e-4,
                      ambient: float = AMBIENT_INIT) -> Tensor:
    """Closed-form SH lighting: the weighted ridge least-squares ``gamma`` of Deng et al.'s shading.

    A rendered colour is linear in the light: at a sample (pixel) ``n`` of image ``b``, channel
    ``c``, ``colour = F[b, n, c] . g[b, c]`` with ``F = sum_k bary_k * albedo_kc * sh_basis(normal_k)``
    over the corners ``k`` of the visible triangle and ``g[b, c]`` the channel's 9 coefficients
    (ambient included). For each image and channel this solves

        min_g  sum_n w_bn (F_bnc . g - t_bnc)^2 / sum_n w_bn  +  ridge * ||g - g_0||^2

    with ``g_0 = (ambient, 0, ..., 0)`` (Deng et al.'s initial light), a 9 x 9 system.

    Args:
        features: (B, N, 3, 9) per-sample, per-channel shading features ``F``.
        target: (B, N, 3) observed colours (same range as the albedo's).
        weights: (B, N) non-negative sample weights (0 = unused sample).
        ridge: weight of the pull toward ``g_0`` relative to the mean squared colour error.
        ambient: the DC offset :func:`sh_shade` adds (subtracted from the result).

    Returns:
        (B, 27) SH coefficients in :func:`sh_shade`'s layout (R 0..8, G 0..8, B 0..8; DC without
        ``ambient``).
    """
    if features.ndim != 4 or features.shape[2:] != (3, 9):
        raise ValueError(f"features must be (B, N, 3, 9), got {tuple(features.shape)}")
    b, n = features.shape[:2]
    if target.shape != (b, n, 3) or weights.shape != (b, n):
        raise ValueError(f"target must be (B, N, 3) and weights (B, N) with (B, N) = {(b, n)}, got "
                         f"{tuple(target.shape)} and {tuple(weights.shape)}")
    w = weights.to(features.dtype) / weights.sum(1, keepdim=True).clamp_min(1e-12).to(features.dtype)
    wf = features * w[..., None, None]
    a = torch.einsum("bnci,bncj->bcij", wf, features)  # (B, 3, 9, 9)
    rhs = torch.einsum("bnci,bnc->bci", wf, target.to(features.dtype))  # (B, 3, 9)
    eye = torch.eye(9, dtype=features.dtype, device=features.device)
    g0 = torch.zeros(9, dtype=features.dtype, device=features.device)
    g0[0] = ambient
    g = torch.linalg.solve(a + ridge * eye, (rhs + ridge * g0)[..., None])[..., 0]
    g = g - g0  # back to sh_shade's layout (the DC term without the ambient offset)
    return g.reshape(b, 27)


class SHShader(nn.Module):
    """Thin module around :func:`sh_shade` (holds the ambient initialisation)."""

    def __init__(self, ambient: float = AMBIENT_INIT) -> None:
        super().__init__()
        self.ambient = ambient

    def forward(self, albedo: Tensor, normals: Tensor, gamma: Tensor) -> Tensor:
        return sh_shade(albedo, normals, gamma, self.ambient)
