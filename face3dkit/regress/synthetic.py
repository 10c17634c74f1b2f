"""Synthetic training batches for a coefficient regressor: renders of a morphable model with
domain randomisation, their true landmarks and coefficients.

Each batch is a pure function of ``(seed, step)`` (its own ``torch.Generator``), so a resumed run
sees exactly the batches it would have seen, and no global random state is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from face3dkit.geometry import PerspectiveCamera
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel
from face3dkit.regress.augment import random_jpeg
from face3dkit.render.face import render_face

__all__ = ["SyntheticFaces", "batch_generator", "render_synthetic", "sample_coefficients", "synthetic_batch"]


@dataclass
class SyntheticFaces:
    """Ranges of the randomisation.

    Attributes:
        size: crop side in pixels (Deng et al.'s camera for it).
        id_scale, tex_scale: standard deviations of identity / albedo coefficients.
        exp_max: expression coefficients uniform in [0, exp_max] (clamped to the model's range).
        yaw_deg, pitch_deg, roll_deg: half-ranges of the pose, degrees.
        trans: half-ranges of the translation (x, y, z), model units.
        light: standard deviation of the SH coefficients beyond the ambient term.
        blur_max: Gaussian blur sigma uniform in [0, blur_max] pixels.
        noise_max: Gaussian noise standard deviation uniform in [0, noise_max].
        texture_p: probability that an image's background is smooth random clutter (colour noise
            of a random cell size, 4 to 16 cells across) instead of a colour gradient.
        jpeg_p: probability that an image is JPEG-compressed (:func:`face3dkit.regress.augment.random_jpeg`).
        jpeg_quality: (lowest, highest) JPEG quality.
    """

    size: int = 224
    id_scale: float = 1.0
    tex_scale: float = 1.0
    exp_max: float = 0.6
    yaw_deg: float = 90.0
    pitch_deg: float = 20.0
    roll_deg: float = 15.0
    trans: tuple[float, float, float] = (0.3, 0.3, 0.8)
    light: float = 0.15
    blur_max: float = 1.0
    noise_max: float = 0.03
    texture_p: float = 0.5
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 95)

    @classmethod
    def from_dict(cls, d: dict) -> SyntheticFaces:
        """The settings ``dataclasses.asdict`` wrote (JSON / checkpoints: lists back to tuples)."""
        d = dict(d)
        for k in ("trans", "jpeg_quality"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _blur(img: Tensor, sigma: Tensor) -> Tensor:
    """(B, H, W, 3) images blurred with per-image Gaussian ``sigma`` (B,) pixels (separable, 7 taps)."""
    x = torch.arange(-3, 4, dtype=img.dtype, device=img.device)
    k = torch.exp(-0.5 * (x[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # (B, 7)
    b = img.shape[0]
    z = img.permute(3, 0, 1, 2).reshape(1, 3 * b, *img.shape[1:3])  # channels x batch as groups
    kk = k.repeat(3, 1)
    z = F.conv2d(F.pad(z, (3, 3, 0, 0), mode="replicate"), kk[:, None, None, :], groups=3 * b)
    z = F.conv2d(F.pad(z, (0, 0, 3, 3), mode="replicate"), kk[:, None, :, None], groups=3 * b)
    return z.reshape(3, b, *img.shape[1:3]).permute(1, 2, 3, 0)


def sample_coefficients(model: MorphableModel, cfg: SyntheticFaces, n: int, generator: torch.Generator
                        ) -> Coefficients:
    """``n`` random coefficients within ``cfg``'s ranges (on the CPU; draws from ``generator`` only).

    Identity and albedo from the model's prior (scaled), expression uniform in [0, exp_max]
    (clamped to the model's range), pose uniform in the half-ranges, SH light around ambient.
    """
    g = generator
    c = model.sample(n, generator=g, id_scale=cfg.id_scale, tex_scale=cfg.tex_scale)
    c.exp = torch.rand(n, model.n_exp, generator=g) * cfg.exp_max
    if model.exp_range is not None:
        c.exp = c.exp.clamp(*model.exp_range)
    half = torch.tensor([cfg.pitch_deg, cfg.yaw_deg, cfg.roll_deg]) * (math.pi / 180)
    c.angles = (2 * torch.rand(n, 3, generator=g) - 1) * half
    c.trans = (2 * torch.rand(n, 3, generator=g) - 1) * torch.tensor(cfg.trans)
    c.gamma = cfg.light * torch.randn(n, 27, generator=g)
    return c


def render_synthetic(model: MorphableModel, coeffs: Coefficients, cfg: SyntheticFaces, generator: torch.Generator
                     ) -> dict[str, Tensor]:
    """Render given coefficients with the image-level randomisation of ``cfg`` (random
    background, blur, noise, JPEG), drawing from ``generator``; no gradients.

    Returns:
        ``image`` (B, S, S, 3) in [0, 1] on the model's device, ``landmarks`` (B, 68, 2) crop
        pixels (projections of the model's landmark vertices), ``coeffs`` (B, total).
    """
    g = generator
    n = coeffs.batch_size
    dev = model.mean_shape.device
    c = coeffs.to(dev)
    cam = PerspectiveCamera.for_image_size(cfg.size)
    with torch.no_grad():
        r = render_face(model, c, cam)
        # Background: a random colour with a random linear gradient, or smooth colour clutter.
        ramp = torch.linspace(-1, 1, cfg.size, device=dev)
        yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
        base = torch.rand(n, 1, 1, 3, generator=g).to(dev)
        grad = (torch.rand(n, 1, 1, 3, generator=g).to(dev) - 0.5) * 0.6
        bg = (base + grad * (xx if bool(torch.rand(1, generator=g) < 0.5) else yy)[None, ..., None]).clamp(0, 1)
        cells = int(2 ** torch.randint(2, 5, (1,), generator=g))  # 4, 8 or 16 cells across
        clutter = F.interpolate(torch.rand(n, 3, cells, cells, generator=g).to(dev), size=(cfg.size, cfg.size),
                                mode="bicubic", align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)
        textured = (torch.rand(n, generator=g) < cfg.texture_p).to(dev)[:, None, None, None]
        bg = torch.where(textured, clutter, bg)
        img = r.image * r.coverage + bg * (1 - r.coverage)
        img = _blur(img, (torch.rand(n, generator=g) * cfg.blur_max).to(dev))
        sigma = (torch.rand(n, 1, 1, 1, generator=g) * cfg.noise_max).to(dev)
        img = img + torch.randn(img.shape, generator=g).to(dev) * sigma
        img = random_jpeg(img.clamp(0, 1), g, cfg.jpeg_p, cfg.jpeg_quality)
    return {"image": img.clamp(0, 1), "landmarks": r.landmarks2d, "coeffs": c.join()}


def batch_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of batch ``step`` of a run seeded ``seed`` on data-parallel rank ``rank``
    (rank 0 draws what a one-process run draws)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + int(rank) * 7_919_000_011)


def synthetic_batch(model: MorphableModel, cfg: SyntheticFaces, batch_size: int, seed: int, step: int,
                    rank: int = 0) -> dict[str, Tensor]:
    """A batch of randomised renders: :func:`sample_coefficients` then :func:`render_synthetic`,
    from :func:`batch_generator` of ``(seed, step, rank)``.

    Returns:
        ``image`` (B, S, S, 3) in [0, 1], ``landmarks`` (B, 68, 2) crop pixels (projections of the
        model's landmark vertices), ``coeffs`` (B, total) true coefficients.
    """
    g = batch_generator(seed, step, rank)
    return render_synthetic(model, sample_coefficients(model, cfg, batch_size, g), cfg, g)
