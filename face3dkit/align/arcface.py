"""ArcFace alignment: the similarity that maps five face points onto insightface's 112 x 112
template (the crop the perceptual identity loss embeds)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ARCFACE_TEMPLATE", "arcface_matrix"]


#: insightface's 5-point template of a 112 x 112 ArcFace crop (eyes, nose tip, mouth corners).
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041),
)


def arcface_matrix(lm68: Tensor, five_points: bool = False) -> Tensor:
    """(B, 68, 2) landmarks (or (B, 5, 2) with ``five_points``) → (B, 2, 3) similarity to the
    112 x 112 ArcFace crop (least squares)."""
    from face3dkit.landmarks import lm68_to_lm5

    five = lm68 if five_points else lm68_to_lm5(lm68)
    dst = torch.tensor(ARCFACE_TEMPLATE, dtype=lm68.dtype, device=lm68.device).expand_as(five)
    # Similarity [a -b tx; b a ty]: linear least squares in (a, b, tx, ty).
    x, y = five[..., 0], five[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, -y, one, zero], -1)
    rows_v = torch.stack([y, x, zero, one], -1)
    a = torch.cat([rows_u, rows_v], 1)
    rhs = torch.cat([dst[..., 0], dst[..., 1]], 1)[..., None]
    sol = torch.linalg.lstsq(a, rhs).solution[..., 0]
    aa, bb, tx, ty = sol.unbind(-1)
    return torch.stack([torch.stack([aa, -bb, tx], -1), torch.stack([bb, aa, ty], -1)], 1)
