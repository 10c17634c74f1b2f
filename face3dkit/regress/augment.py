"""Image-level augmentations of training crops that the renderer cannot produce: JPEG compression.

:func:`jpeg_compress` runs baseline JPEG's lossy path on a batch in torch, as libjpeg (and so
PIL / OpenCV) does it with 4:2:0 chroma subsampling: JFIF RGB -> YCbCr, 2 x 2 chroma averaging,
level shift, 8 x 8 DCT-II, quantisation by the IJG tables (ITU-T T.81 Annex K) scaled to the
quality, dequantisation, inverse DCT, "fancy" (triangle) chroma upsampling and YCbCr -> RGB, with
the integer rounding of each stage. Entropy coding is lossless and skipped. Every image of the
batch has its own quality. Not differentiable (rounding): an augmentation of the data, not a layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["jpeg_compress", "jpeg_quant_tables", "random_jpeg"]

# ITU-T T.81 Annex K.1: luminance and chrominance quantisation tables (quality 50), row-major.
_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)
_CHROMA = (
    17, 18, 24, 47, 99, 99, 99, 99,
    18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99,
    *(99,) * 32,
)


def jpeg_quant_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """IJG quality scaling of the Annex K tables (libjpeg's ``jpeg_quality_scaling``, baseline).

    Args:
        quality: (B,) integer qualities in [1, 100].

    Returns:
        (luma, chroma) tables, each (B, 8, 8) float, entries in [1, 255].
    """
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, torch.floor(5000 / q), 200 - 2 * q)  # percent
    out = []
    for base in (_LUMA, _CHROMA):
        t = torch.tensor(base, dtype=torch.float64, device=quality.device).reshape(1, 8, 8)
        out.append(torch.floor((t * scale[:, None, None] + 50) / 100).clamp(1, 255).to(torch.float32))
    return out[0], out[1]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    """(8, 8) orthonormal DCT-II matrix D: coefficients = D @ block @ D.T."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * 0.5
    d[0] = math.sqrt(1 / 8)
    return d.to(dtype=dtype, device=device)


def _to_blocks(z: Tensor) -> Tensor:
    """(B, C, h, w) with h, w multiples of 8 -> (B, C, h/8, w/8, 8, 8)."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)


def _from_blocks(z: Tensor) -> Tensor:
    b, c, nh, nw = z.shape[:4]
    return z.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * 8, nw * 8)


def _lossy(planes: Tensor, table: Tensor, d: Tensor) -> Tensor:
    """Quantise and reconstruct (B, C, h, w) 0..255 planes with (B, 8, 8) tables; same shape out."""
    blk = _to_blocks(planes) - 128
    coef = d @ blk @ d.T
    t = table[:, None, None, None]
    rec = d.T @ (torch.round(coef / t) * t) @ d + 128
    return torch.round(_from_blocks(rec)).clamp(0, 255)


def jpeg_compress(images: Tensor, quality: int | Tensor) -> Tensor:
    """JPEG-compress and decode a batch (4:2:0, IJG tables), as libjpeg does up to its integer DCT.

    Args:
        images: (B, H, W, 3) RGB in [0, 1], any float dtype and device.
        quality: an int in [1, 100] for every image, or (B,) per-image qualities.

    Returns:
        (B, H, W, 3) decoded images in [0, 1] (multiples of 1/255), the input's dtype and device.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"jpeg_compress takes (B, H, W, 3) RGB images, got {tuple(images.shape)}")
    b, h, w, _ = images.shape
    dev = images.device
    q = torch.as_tensor(quality, device=dev).reshape(-1).expand(b) if not isinstance(quality, Tensor) \
        or quality.numel() == 1 else quality.to(dev).reshape(-1)
    if q.shape[0] != b:
        raise ValueError(f"jpeg_compress: {q.shape[0]} qualities for {b} images")
    if bool(((q < 1) | (q > 100)).any()):
        raise ValueError(f"jpeg_compress: qualities must be in [1, 100], got {q.tolist()}")
    luma_t, chroma_t = jpeg_quant_tables(q)
    x = torch.round(images.detach().to(torch.float32).clamp(0, 1) * 255).permute(0, 3, 1, 2)  # (B, 3, H, W)
    r, g, bl = x[:, 0], x[:, 1], x[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    cb = -0.168735892 * r - 0.331264108 * g + 0.5 * bl + 128
    cr = 0.5 * r - 0.418687589 * g - 0.081312411 * bl + 128
    ycc = torch.round(torch.stack([y, cb, cr], 1)).clamp(0, 255)
    # The MCU of 4:2:0 is 16 x 16: pad by replicating the last row / column (as libjpeg's encoder).
    ph, pw = (-h) % 16, (-w) % 16
    ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
    d = _dct_matrix(torch.float32, dev)
    y_rec = _lossy(ycc[:, :1], luma_t, d)
    chroma = torch.floor(F.avg_pool2d(ycc[:, 1:], 2) + 0.5)  # libjpeg's h2v2 average (alternating bias ~ +0.5)
    hc, wc = chroma.shape[-2:]
    cph, cpw = (-hc) % 8, (-wc) % 8
    chroma = F.pad(chroma, (0, cpw, 0, cph), mode="replicate")
    c_rec = _lossy(chroma, chroma_t, d)[..., :hc, :wc]
    # libjpeg's fancy upsampling: the triangle filter = bilinear x2 with half-pixel centres.
    c_up = torch.round(F.interpolate(c_rec, scale_factor=2, mode="bilinear", align_corners=False))
    y_, cb_, cr_ = y_rec[:, 0], c_up[:, 0] - 128, c_up[:, 1] - 128
    rgb = torch.stack([y_ + 1.402 * cr_, y_ - 0.344136286 * cb_ - 0.714136286 * cr_, y_ + 1.772 * cb_], -1)
    rgb = torch.round(rgb).clamp(0, 255)[:, :h, :w]
    return (rgb / 255).to(images.dtype)


def random_jpeg(images: Tensor, generator: torch.Generator, p: float = 0.5, quality: tuple[int, int] = (30, 95)
                ) -> Tensor:
    """Compress each image with probability ``p`` at a quality uniform in ``quality`` (inclusive).

    Draws exactly two (B,) vectors from ``generator`` (CPU) whatever ``p`` is, so the draws of later
    augmentations do not depend on which images were compressed.

    Args:
        images: (B, H, W, 3) RGB in [0, 1].
        generator: CPU ``torch.Generator``.
        p: probability of compressing an image.
        quality: (lowest, highest) quality, in [1, 100].

    Returns:
        (B, H, W, 3): compressed images where drawn, the others unchanged.
    """
    lo, hi = int(quality[0]), int(quality[1])
    if not 1 <= lo <= hi <= 100 or not 0 <= p <= 1:
        raise ValueError(f"random_jpeg: need 0 <= p <= 1 and 1 <= low <= high <= 100, got p={p}, quality={quality}")
    b = images.shape[0]
    pick = torch.rand(b, generator=generator) < p
    qs = torch.randint(lo, hi + 1, (b,), generator=generator)
    if not bool(pick.any()):
        return images
    idx = pick.nonzero()[:, 0].to(images.device)
    out = images.clone()
    out[idx] = jpeg_compress(images[idx], qs[pick].to(images.device))
    return out
