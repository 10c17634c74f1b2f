"""Closed-form initial light and albedo for the photometric stage.

After the landmark stage the geometry (shape, pose) is close; what the photometric stage starts
without is the appearance: Deng et al. start from zero albedo coefficients and the ambient-only
light, and spend their first iterations on it (on the default model the photometric loss falls from
0.62 to 0.20 in the first 15 of 50 Adam steps, with the geometry barely moving). With the geometry
fixed, the render is linear in the SH light for a fixed albedo and linear in the albedo
coefficients for a fixed light, so both have closed-form weighted least-squares solutions on the
visible face pixels. :func:`closed_form_appearance` alternates them (light with the mean albedo,
then albedo, then light again); the photometric stage starts there.

The squared colour error is used where the photometric loss is the (non-squared) colour
distance: a starting point, which the Adam steps then refine under the true loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from face3dkit.shading.sh import AMBIENT_INIT, solve_sh_lighting

__all__ = ["closed_form_appearance", "solve_albedo_coefficients"]


def solve_albedo_coefficients(features: Tensor, base: Tensor, target: Tensor, weights: Tensor,
                              ridge: float = 1e-4) -> Tensor:
    """Weighted ridge least squares for the albedo (texture) coefficients under a fixed light.

    At sample ``n`` of image ``b`` the rendered colour is ``base[b, n] + features[b, n] @ t[b]``
    (the shaded mean albedo plus the shaded basis). Solves, per image,

        min_t  sum_n w_bn ||base_bn + F_bn t - target_bn||^2 / sum_n w_bn  +  ridge * ||t||^2

    (the albedo prior: coefficients in units of the basis' standard deviations).

    Args:
        features: (B, N, 3, K) shaded basis at the samples.
        base: (B, N, 3) shaded mean albedo at the samples.
        target: (B, N, 3) observed colours.
        weights: (B, N) non-negative sample weights.
        ridge: weight of the prior relative to the mean squared colour error.

    Returns:
        (B, K) coefficients.
    """
    if features.ndim != 4 or features.shape[2] != 3:
        raise ValueError(f"features must be (B, N, 3, K), got {tuple(features.shape)}")
    b, n, _, k = features.shape
    if base.shape != (b, n, 3) or target.shape != (b, n, 3) or weights.shape != (b, n):
        raise ValueError(f"base and target must be (B, N, 3) and weights (B, N) with (B, N) = {(b, n)}")
    w = weights.to(features.dtype) / weights.sum(1, keepdim=True).clamp_min(1e-12).to(features.dtype)
    f = features.reshape(b, n * 3, k)
    fw = f * w.repeat_interleave(3, 1)[..., None]
    a = fw.transpose(1, 2) @ f  # (B, K, K)
    rhs = fw.transpose(1, 2) @ (target - base).to(features.dtype).reshape(b, n * 3, 1)
    eye = torch.eye(k, dtype=features.dtype, device=features.device)
    return torch.linalg.solve(a + ridge * eye, rhs)[..., 0]


def closed_form_appearance(sh: Tensor, mean_albedo: Tensor, albedo_basis: Tensor, corners: Tensor,
                           bary: Tensor, target: Tensor, weights: Tensor, ridge: float = 1e-4,
                           ambient: float = AMBIENT_INIT) -> tuple[Tensor, Tensor]:
    """Initial SH light and albedo coefficients of images whose geometry is fixed.

    Solves the light with the mean albedo (:func:`~face3dkit.shading.solve_sh_lighting`), the
    albedo under that light (:func:`solve_albedo_coefficients`), and the light again under that
    albedo. Rendered colour at a pixel: ``sum_k bary_k * albedo_k * (sh_k . g)``, the corners ``k``
    of its visible triangle.

    Args:
        sh: (B, M, 9) :func:`~face3dkit.shading.sh_basis` at the M vertices' posed unit normals.
        mean_albedo: (M, 3) mean albedo of the M vertices.
        albedo_basis: (M, 3, K) albedo basis of the M vertices.
        corners: (B, P, 3) int64 vertex ids (into the M) of the triangle seen at each of P pixels.
        bary: (B, P, 3) perspective-correct barycentrics of the pixels.
        target: (B, P, 3) observed colours at the pixels.
        weights: (B, P) non-negative pixel weights (mask x skin attention; 0 = unused pixel).
        ridge: prior weight of both solves (relative to the mean squared colour error).
        ambient: Deng et al.'s DC offset of the light.

    Returns:
        gamma (B, 27), tex (B, K).
    """
    b = corners.shape[0]
    k = albedo_basis.shape[-1]
    if b == 0:
        return sh.new_zeros(0, 27), sh.new_zeros(0, k)
    # One image at a time: the per-pixel albedo-basis features are (P, 3, K), up to 240 floats a
    # pixel for the BFM (a batched gather would hold B times that).
    out = [_appearance_one(sh[i], mean_albedo, albedo_basis, corners[i], bary[i], target[i], weights[i], ridge,
                           ambient) for i in range(b)]
    return torch.stack([g for g, _ in out]), torch.stack([t for _, t in out])


def _appearance_one(sh: Tensor, mean_albedo: Tensor, albedo_basis: Tensor, corners: Tensor, bary: Tensor,
                    target: Tensor, weights: Tensor, ridge: float, ambient: float) -> tuple[Tensor, Tensor]:
    """:func:`closed_form_appearance` of one image (no batch dimension): gamma (27,), tex (K,)."""
    dt = sh.dtype
    keep = (weights > 0).nonzero().squeeze(1)
    cid = corners.index_select(0, keep)  # (n, 3)
    lam = bary.index_select(0, keep).to(dt)  # (n, 3)
    t = target.index_select(0, keep).to(dt)[None]  # (1, n, 3)
    w = weights.index_select(0, keep).to(dt)[None]  # (1, n)
    y = sh[cid]  # (n, 3 corners, 9)
    mean = mean_albedo[cid].to(dt)  # (n, 3 corners, 3 channels)
    basis = albedo_basis[cid].to(dt)  # (n, 3 corners, 3 channels, K)

    def light(alb: Tensor) -> Tensor:
        feat = torch.einsum("nk,nkc,nki->nci", lam, alb, y)[None]  # (1, n, 3, 9)
        return solve_sh_lighting(feat, t, w, ridge, ambient).reshape(3, 9)

    g = light(mean)
    if basis.shape[-1] == 0:
        return g.reshape(27), sh.new_zeros(0)
    g_full = g.clone()
    g_full[:, 0] += ambient
    irr = torch.einsum("nki,ci->nkc", y, g_full)  # (n, 3 corners, 3 channels) irradiance
    feat_t = torch.einsum("nk,nkc,nkcj->ncj", lam, irr, basis)[None]  # (1, n, 3, K)
    base = torch.einsum("nk,nkc,nkc->nc", lam, irr, mean)[None]
    tex = solve_albedo_coefficients(feat_t, base, t, w, ridge)[0]
    g = light(mean + (basis @ tex[:, None])[..., 0])
    return g.reshape(27), tex
