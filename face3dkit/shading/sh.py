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

__all__ = ["SH_CONSTANTS", "sh_basis", "sh_shade", "SHShader", "AMBIENT_INIT"]

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


class SHShader(nn.Module):
    """Thin module around :func:`sh_shade` (holds the ambient initialisation)."""

    def __init__(self, ambient: float = AMBIENT_INIT) -> None:
        super().__init__()
        self.ambient = ambient

    def forward(self, albedo: Tensor, normals: Tensor, gamma: Tensor) -> Tensor:
        return sh_shade(albedo, normals, gamma, self.ambient)
