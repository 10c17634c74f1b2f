"""Deng et al. 2019's confidence network (C-Net): identity aggregation over a set of photos of one person.

Section 4 of "Accurate 3D Face Reconstruction with Weakly-Supervised Learning: From Single Image to
Image Set": a light-weight network reads the R-Net's intermediate feature map of each image and
outputs a positive confidence for every identity (shape) and albedo coefficient; the set's
coefficients are the confidence-weighted mean over its images (:func:`aggregate`). It is trained
with the R-Net frozen (:mod:`face3dkit.regress.cnet`).

Here: two 3 x 3 convolutions (the second of stride 2) with ReLU on the R-Net's stride-16 map
(:meth:`face3dkit.nets.RNet.forward_with_features`), global average pooling and one linear layer to
``n_id + n_tex`` values, made positive by a softplus. The linear layer starts with zero weights and
the bias that makes every confidence 1, so an untrained C-Net aggregates by the plain mean.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._checkpoint import CheckpointMismatchError, load_checked_state_dict

__all__ = ["CNET_FORMAT", "CNet", "aggregate"]

#: ``format`` of the checkpoints :meth:`CNet.save` writes.
CNET_FORMAT = "face3dkit-cnet-v1"

# softplus(_UNIT_BIAS) == 1: the initial confidence of every coefficient.
_UNIT_BIAS = math.log(math.e - 1.0)


def aggregate(values: Tensor, confidences: Tensor, eps: float = 1e-8) -> Tensor:
    """Confidence-weighted mean over each set, elementwise: ``y = sum_j c_j y_j / sum_j c_j``.

    Args:
        values: (S, K, D) coefficients of S sets of K images.
        confidences: (S, K, D) positive confidences of the same shape (or broadcastable to it).
        eps: added to the denominator (confidences that all underflow to 0 give 0, not NaN).

    Returns:
        (S, D) aggregated coefficients.
    """
    if values.ndim != 3:
        raise ValueError(f"aggregate takes (S, K, D) values, got {tuple(values.shape)}")
    c = confidences.to(values.dtype).expand_as(values)
    return (c * values).sum(1) / (c.sum(1) + eps)


class CNet(nn.Module):
    """Per-coefficient confidences of an image's identity and albedo coefficients.

    Args:
        feature_channels: channels of the R-Net's stride-16 map (:attr:`face3dkit.nets.RNet.feature_channels`).
        n_id: identity coefficients (the model's ``layout.n_id``).
        n_tex: albedo coefficients (``layout.n_tex``).
        width: channels of the two convolutions.
    """

    def __init__(self, feature_channels: int, n_id: int, n_tex: int, width: int = 128) -> None:
        super().__init__()
        if min(feature_channels, n_id, n_tex, width) < 1:
            raise ValueError(f"CNet sizes must be >= 1, got feature_channels={feature_channels}, n_id={n_id}, "
                             f"n_tex={n_tex}, width={width}")
        self.feature_channels, self.n_id, self.n_tex, self.width = int(feature_channels), int(n_id), int(n_tex), \
            int(width)
        self.features = nn.Sequential(
            nn.Conv2d(self.feature_channels, self.width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(self.width, self.width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(self.width, self.n_id + self.n_tex)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, _UNIT_BIAS)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, feature_channels, h, w) R-Net stride-16 map -> (identity (B, n_id), albedo (B, n_tex))
        positive confidences (unitless; 1 for every coefficient at initialisation)."""
        if features.ndim != 4 or features.shape[1] != self.feature_channels:
            raise ValueError(f"C-Net takes (B, {self.feature_channels}, h, w) feature maps, got "
                             f"{tuple(features.shape)}")
        z = self.head(self.features(features).mean((2, 3)))
        conf = F.softplus(z)
        return conf[:, :self.n_id], conf[:, self.n_id:]

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write ``{'format', 'feature_channels', 'n_id', 'n_tex', 'width', 'state_dict', **extra}``
        atomically (what :meth:`load` reads)."""
        from face3dkit.io.atomic import atomic_open

        with atomic_open(path) as f:
            torch.save({"format": CNET_FORMAT, "feature_channels": self.feature_channels, "n_id": self.n_id,
                        "n_tex": self.n_tex, "width": self.width, "state_dict": self.state_dict(), **extra}, f)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CNet:
        """A C-Net from a checkpoint written by :meth:`save`. Errors are one line naming the file."""
        source = os.fspath(path)
        try:
            raw = torch.load(source, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointMismatchError(f"{source}: no such C-Net checkpoint") from None
        except Exception as e:  # not a torch file, truncated, pickled objects
            raise CheckpointMismatchError(f"{source}: not a readable C-Net checkpoint "
                                          f"({' '.join(str(e).split())[:200]})") from None
        if not isinstance(raw, dict) or raw.get("format") != CNET_FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise CheckpointMismatchError(f"{source}: not a C-Net checkpoint (format {got!r}, expected "
                                          f"{CNET_FORMAT!r})")
        try:
            net = cls(int(raw["feature_channels"]), int(raw["n_id"]), int(raw["n_tex"]), int(raw.get("width", 128)))
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointMismatchError(f"{source}: bad C-Net checkpoint header ({e})") from None
        load_checked_state_dict(net, raw["state_dict"], source, f"C-Net ({net.n_id} + {net.n_tex} coefficients)")
        return net
