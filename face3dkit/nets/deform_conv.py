"""Deformable convolution v1 and v2 (modulated) in pure, vectorised torch.

Semantics and tensor layouts follow ``torchvision.ops.deform_conv2d`` (and mmcv's DCN ops, which
share the original CUDA kernels' layout):

* ``offset``: ``(B, 2 * offset_groups * kh * kw, H_out, W_out)``; for offset group ``g`` and kernel
  tap ``k = i * kw + j`` (row-major), channel ``g * 2K + 2k`` is the **y (row)** displacement and
  ``g * 2K + 2k + 1`` the **x (column)** displacement, in input pixels.
* ``mask`` (v2 only): ``(B, offset_groups * kh * kw, H_out, W_out)``, channel ``g * K + k``.
* Input channel ``c`` uses offset group ``c // (C_in / offset_groups)``.
* Tap ``(i, j)`` of output ``(y, x)`` samples the input at
  ``(y * stride_h - pad_h + i * dil_h + dy, x * stride_w - pad_w + j * dil_w + dx)`` with bilinear
  interpolation; samples outside the image read zeros (per corner), as in torchvision.

Sampling uses ``grid_sample`` (differentiable w.r.t. input, offsets and mask); the weighted sum is
one batched matrix product (im2col style), so memory is ``O(B * C_in * kh * kw * H_out * W_out)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["deform_conv2d", "DeformConv2d", "DeformConv2dPack", "ModulatedDeformConv2dPack"]

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable 2-D convolution (v1 when ``mask`` is None, v2/modulated otherwise).

    Args:
        input: ``(B, C_in, H, W)``.
        offset: ``(B, 2 * G_off * kh * kw, H_out, W_out)`` displacements in input pixels (y, x
            interleaved per tap, see module docstring).
        weight: ``(C_out, C_in / groups, kh, kw)``; ``groups`` is ``C_in / weight.shape[1]``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: as ``torch.nn.functional.conv2d``.
        mask: ``(B, G_off * kh * kw, H_out, W_out)`` modulation scalars, or None.

    Returns:
        ``(B, C_out, H_out, W_out)``, same device and dtype as ``input``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    b, c, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c % c_per_group:
        raise ValueError(f"input channels {c} not divisible by weight.shape[1]={c_per_group}")
    groups = c // c_per_group
    if c_out % groups:
        raise ValueError(f"output channels {c_out} not divisible by groups={groups}")
    k = kh * kw
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if offset.shape[1] % (2 * k) or offset.shape[1] == 0:
        raise ValueError(f"offset has {offset.shape[1]} channels, expected a multiple of 2*{k}")
    g_off = offset.shape[1] // (2 * k)
    if c % g_off:
        raise ValueError(f"input channels {c} not divisible by offset groups {g_off}")
    if tuple(offset.shape) != (b, 2 * g_off * k, h_out, w_out):
        raise ValueError(
            f"offset shape {tuple(offset.shape)} != expected {(b, 2 * g_off * k, h_out, w_out)}"
        )
    if mask is not None and tuple(mask.shape) != (b, g_off * k, h_out, w_out):
        expected = (b, g_off * k, h_out, w_out)
        raise ValueError(f"mask shape {tuple(mask.shape)} != expected {expected}")

    dev, dt = input.device, input.dtype
    # Regular sampling grid (K, H_out, W_out) in input pixel coordinates.
    tap_y = (torch.arange(kh, device=dev, dtype=dt) * dh).view(kh, 1, 1, 1)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) * dw).view(1, kw, 1, 1)
    out_y = (torch.arange(h_out, device=dev, dtype=dt) * sh - ph).view(1, 1, h_out, 1)
    out_x = (torch.arange(w_out, device=dev, dtype=dt) * sw - pw).view(1, 1, 1, w_out)
    base_y = (tap_y + out_y).expand(kh, kw, h_out, w_out).reshape(k, h_out, w_out)
    base_x = (tap_x + out_x).expand(kh, kw, h_out, w_out).reshape(k, h_out, w_out)

    off = offset.view(b, g_off, k, 2, h_out, w_out)
    py = base_y + off[:, :, :, 0]  # (B, G_off, K, H_out, W_out)
    px = base_x + off[:, :, :, 1]
    # Pixel index p -> normalised coordinate for align_corners=False: (2p + 1) / size - 1.
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    grid = grid.view(b * g_off, k * h_out, w_out, 2)
    sampled = F.grid_sample(
        input.reshape(b * g_off, c // g_off, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (B*G_off, C/G_off, K*H_out, W_out)
    sampled = sampled.view(b, g_off, c // g_off, k, h_out, w_out)
    if mask is not None:
        sampled = sampled * mask.view(b, g_off, 1, k, h_out, w_out)
    cols = sampled.reshape(b, groups, c_per_group * k, h_out * w_out)
    wmat = weight.reshape(groups, c_out // groups, c_per_group * k)
    out = torch.einsum("gok,bgkl->bgol", wmat, cols).reshape(b, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Deformable convolution layer taking external offsets (``torchvision.ops.DeformConv2d``).

    Parameters: ``weight (C_out, C_in / groups, kh, kw)``, ``bias (C_out,)`` (or None).
    ``forward(input, offset, mask=None)``; see :func:`deform_conv2d` for shapes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError("in_channels and out_channels must be divisible by groups")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight and fan-in uniform bias (the ``nn.Conv2d`` / torchvision init)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            input, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


class DeformConv2dPack(DeformConv2d):
    """Deformable convolution that predicts its own offsets (mmcv ``DeformConv2dPack`` layout).

    Holds ``conv_offset``, a regular ``nn.Conv2d`` with the same kernel/stride/padding/dilation
    producing ``2 * deform_groups * kh * kw`` offset channels (``3 *`` for the modulated variant:
    two offset thirds followed by a mask third passed through a sigmoid, as mmcv's
    ``ModulatedDeformConv2dPack``). ``conv_offset`` is zero-initialised, so a fresh v1 layer
    equals a plain convolution and a fresh v2 layer equals half of it (mask = sigmoid(0)).

    ``forward(x)``: ``(B, C_in, H, W) -> (B, C_out, H_out, W_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = False,
        modulated: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        if in_channels % deform_groups:
            raise ValueError("in_channels must be divisible by deform_groups")
        self.deform_groups = deform_groups
        self.modulated = modulated
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.conv_offset = nn.Conv2d(
            in_channels,
            (3 if modulated else 2) * deform_groups * taps,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        out = self.conv_offset(x)
        mask = None
        if self.modulated:
            o1, o2, m = torch.chunk(out, 3, dim=1)
            offset = torch.cat((o1, o2), dim=1)
            mask = torch.sigmoid(m)
        else:
            offset = out
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )


class ModulatedDeformConv2dPack(DeformConv2dPack):
    """Modulated (v2) :class:`DeformConv2dPack`; bias on by default as in mmcv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        deform_groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            deform_groups, bias, modulated=True,
        )
