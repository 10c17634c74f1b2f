"""Convolutional encoders/decoders shared by the TDGAN and DR-GAN models, and image-space helpers.

Both work on square images whose side ``s`` is a power of two >= 16: an encoder halves the map
``log2(s) - 2`` times down to 4 x 4, a decoder doubles it back from 4 x 4. Images enter and leave
the networks in ``[-1, 1]`` with 1 (grey) or 3 (RGB) channels; :func:`to_network` and
:func:`to_unit` convert from/to the datasets' ``(B, 3, s, s)`` RGB in ``[0, 1]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ConvDecoder", "ConvEncoder", "num_stages", "to_network", "to_unit"]

#: ITU-R BT.601 luma weights (R, G, B), the grey conversion of PIL's ``convert('L')``.
_LUMA = (0.299, 0.587, 0.114)


def num_stages(size: int, what: str = "image_size") -> int:
    """Stride-2 stages between ``size`` and 4 x 4; raises ValueError unless ``size`` is a power of two >= 16."""
    n = int(round(math.log2(size))) - 2 if size > 0 else 0
    if size <= 0 or 2 ** (n + 2) != size or n < 2:
        raise ValueError(f"{what} must be a power of two >= 16, got {size}")
    return n


def to_network(images: Tensor, channels: int) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, channels, H, W) in [-1, 1] (channels 1: BT.601 grey)."""
    if channels == 3:
        return images * 2.0 - 1.0
    w = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True) * 2.0 - 1.0


def to_unit(x: Tensor) -> Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 3, H, W) in [0, 1] (grey replicated to RGB)."""
    x = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class ConvEncoder(nn.Module):
    """Stride-2 4x4 convolutions (batch norm from the second, LeakyReLU 0.2) down to 4 x 4, then a head.

    ``(B, in_ch, s, s) -> (B, out_dim)``; with ``return_features`` also the list of the stage
    outputs (used for perceptual losses). Channels are ``base * 2^i`` capped at ``max_channels``.
    The head is ``'fc'`` (flatten + linear) or ``'avg'`` (a 3x3 convolution to ``out_dim``
    channels, then global average pooling, as DR-GAN's encoder).

    Args:
        size: input side (power of two >= 16).
        in_ch: input channels.
        out_dim: output size.
        base: channels of the first stage.
        max_channels: cap of the channel doubling.
        head: ``'fc'`` or ``'avg'``.
        act: ``'lrelu'`` (LeakyReLU 0.2) or ``'elu'``.
    """

    def __init__(self, size: int, in_ch: int, out_dim: int, base: int = 32, max_channels: int = 512,
                 head: str = "fc", act: str = "lrelu") -> None:
        super().__init__()
        if head not in ("fc", "avg"):
            raise ValueError(f"encoder head must be 'fc' or 'avg', got {head!r}")
        n = num_stages(size)
        stages: list[nn.Module] = []
        c = in_ch
        for i in range(n):
            w = min(base * 2 ** i, max_channels)
            layers: list[nn.Module] = [nn.Conv2d(c, w, 4, 2, 1, bias=i == 0)]
            if i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ELU(inplace=True) if act == "elu" else nn.LeakyReLU(0.2, inplace=True))
            stages.append(nn.Sequential(*layers))
            c = w
        self.stages = nn.ModuleList(stages)
        self.head_kind = head
        self.head = nn.Linear(c * 16, out_dim) if head == "fc" else nn.Conv2d(c, out_dim, 3, 1, 1)
        self.out_dim = out_dim

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        out = self.head(x.flatten(1)) if self.head_kind == "fc" else self.head(x).mean((2, 3))
        return (out, feats) if return_features else out


class ConvDecoder(nn.Module):
    """FC to ``channels`` x 4 x 4, then stride-2 4x4 transposed convolutions (batch norm, ReLU) halving
    the channels up to the image side, then a 3x3 convolution and tanh: ``(B, in_dim) -> (B, out_ch, s, s)``
    in [-1, 1].

    Args:
        size: output side (power of two >= 16).
        in_dim: input code size.
        out_ch: image channels (1 grey, 3 RGB).
        channels: channels of the 4 x 4 map (halved per stage, at least ``min_channels``).
        min_channels: floor of the halving.
    """

    def __init__(self, size: int, in_dim: int, out_ch: int, channels: int = 512, min_channels: int = 16) -> None:
        super().__init__()
        n = num_stages(size)
        self.channels = channels
        self.fc = nn.Sequential(nn.Linear(in_dim, channels * 16), nn.BatchNorm1d(channels * 16), nn.ReLU(True))
        layers: list[nn.Module] = []
        c = channels
        for _ in range(n):
            w = max(c // 2, min_channels)
            layers += [nn.ConvTranspose2d(c, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        layers += [nn.Conv2d(c, out_ch, 3, 1, 1), nn.Tanh()]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.deconvs(self.fc(z).view(z.shape[0], self.channels, 4, 4))
