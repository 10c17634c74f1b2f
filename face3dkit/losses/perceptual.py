"""Identity-feature perceptual loss (Deng et al. 2019) and affine face cropping.

Deng et al. crop input and rendering to the 112x112 ArcFace template with an affine matrix
``M`` (``warp_affine``; kornia in their PyTorch release), map ``[0, 1] -> [-1, 1]``, embed both
with a frozen face-recognition network (insightface iResNet-50 in the PyTorch release) and
penalise ``1 - cos`` of the L2-normalised embeddings, averaged over the batch.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from face3dkit.nets.iresnet import load_iresnet

__all__ = ["warp_affine_crop", "identity_features", "perceptual_loss", "PerceptualLoss"]


def warp_affine_crop(
    image: Tensor, M: Tensor, size: int | tuple[int, int] = 112, half_pixel_centers: bool = False
) -> Tensor:
    """Warp ``image`` with per-sample affine matrices into a ``size`` crop (bilinear, zero pad).

    ``M`` maps **source** pixel coordinates to **destination** pixel coordinates,
    ``[u, v] = M[:, :2] @ [x, y] + M[:, 2]`` - the ``cv2.warpAffine`` / ``kornia.geometry.
    warp_affine`` convention (result equal to kornia's default ``align_corners=True``), which is
    what insightface's ``estimate_norm`` and Deng et al.'s ``estimate_norm_torch`` produce.

    Args:
        image: ``(B, C, H, W)``.
        M: ``(B, 2, 3)`` (or ``(2, 3)``, shared).
        size: output ``S`` or ``(H_out, W_out)``.
        half_pixel_centers: False: pixel centres at integer coordinates (cv2/kornia). True:
            centres at ``+0.5`` (``docs/conventions.md``), for ``M`` estimated from landmarks in
            face3dkit pixel coordinates.

    Returns:
        ``(B, C, H_out, W_out)``, differentiable w.r.t. ``image`` and ``M``.
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    h_out, w_out = (size, size) if isinstance(size, int) else size
    M = M.to(image.dtype)
    if M.dim() == 2:
        M = M.unsqueeze(0).expand(b, 2, 3)
    if M.shape != (b, 2, 3):
        raise ValueError(f"M must be (B, 2, 3) with B={b}, got {tuple(M.shape)}")
    a_inv = torch.linalg.inv(M[:, :, :2])  # (B, 2, 2)
    t = M[:, :, 2]
    half = 0.5 if half_pixel_centers else 0.0
    vs = torch.arange(h_out, device=image.device, dtype=image.dtype) + half
    us = torch.arange(w_out, device=image.device, dtype=image.dtype) + half
    dst = torch.stack(torch.meshgrid(us, vs, indexing="xy"), dim=-1)  # (H_out, W_out, 2) (u, v)
    src = torch.einsum("bij,bhwj->bhwi", a_inv, dst.unsqueeze(0) - t.view(b, 1, 1, 2)) - half
    # Pixel index p -> grid_sample coordinate with align_corners=False: (2p + 1) / size - 1.
    scale = torch.tensor([w, h], device=image.device, dtype=image.dtype)
    grid = (2.0 * src + 1.0) / scale - 1.0
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def identity_features(net: nn.Module, image: Tensor, M: Tensor, size: int = 112) -> Tensor:
    """Deng et al.'s recognition preprocessing + embedding.

    Args:
        net: ``(B, 3, S, S)`` in ``[-1, 1]`` -> ``(B, D)`` (e.g. :class:`face3dkit.nets.IResNet`).
        image: ``(B, H, W, 3)`` RGB in ``[0, 1]``.
        M: ``(B, 2, 3)`` crop matrix (see :func:`warp_affine_crop`).
        size: crop side ``S`` (112 for ArcFace).

    Returns:
        ``(B, D)`` L2-normalised embeddings.
    """
    x = warp_affine_crop(image.permute(0, 3, 1, 2), M, size)
    return F.normalize(net(2.0 * x - 1.0), p=2, dim=-1)


def perceptual_loss(feat_a: Tensor, feat_b: Tensor, normalize: bool = True) -> Tensor:
    """``mean_b (1 - cos(f_a, f_b))`` (Deng et al.: ``sum(1 - cos) / B``).

    Args:
        feat_a, feat_b: ``(B, D)`` features.
        normalize: L2-normalise first (a no-op for already normalised features).

    Returns:
        Scalar in ``[0, 2]``.
    """
    if normalize:
        feat_a = F.normalize(feat_a, p=2, dim=-1)
        feat_b = F.normalize(feat_b, p=2, dim=-1)
    cos = (feat_a * feat_b).sum(-1)
    return (1.0 - cos).sum() / cos.shape[0]


class PerceptualLoss(nn.Module):
    """Identity perceptual loss with a frozen recognition network; off when there is none.

    Args:
        net: feature extractor ``(B, 3, S, S)`` in ``[-1, 1]`` -> ``(B, D)``; its parameters are
            frozen (``requires_grad=False``) and it is kept in eval mode (BatchNorm frozen, as
            Deng et al.). None disables the term.
        input_size: crop side ``S`` (112).
        enabled: force on/off; None = ``net is not None``.

    When disabled, ``forward`` returns a zero scalar and warns **once per instance**
    (``UserWarning``) that the perceptual term is off.
    """

    def __init__(
        self, net: nn.Module | None = None, input_size: int = 112, enabled: bool | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.input_size = input_size
        self.enabled = (net is not None) if enabled is None else bool(enabled)
        if self.enabled and net is None:
            raise ValueError("PerceptualLoss(enabled=True) needs a feature network")
        if net is not None:
            net.requires_grad_(False)
            net.eval()
        self._warned = False

    @classmethod
    def from_iresnet(
        cls,
        path: str | os.PathLike[str],
        arch: str | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> PerceptualLoss:
        """Build with an insightface ``backbone.pth`` (see :func:`face3dkit.nets.load_iresnet`)."""
        return cls(load_iresnet(path, arch=arch, map_location=map_location))

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        if self.net is not None:
            self.net.eval()
        return self

    def forward(
        self, image: Tensor, render: Tensor, M: Tensor, M_render: Tensor | None = None
    ) -> Tensor:
        """Loss between the identities of ``image`` and ``render``.

        Args:
            image: ``(B, H, W, 3)`` input, RGB in ``[0, 1]``.
            render: ``(B, H, W, 3)`` rendering, RGB in ``[0, 1]``.
            M: ``(B, 2, 3)`` crop matrix of ``image`` (e.g. from the detected landmarks).
            M_render: crop matrix of ``render`` (Deng: from the projected landmarks); None = ``M``.

        Returns:
            Scalar (0 on ``image``'s device/dtype when the term is off).
        """
        if not self.enabled or self.net is None:
            if not self._warned:
                warnings.warn(
                    "PerceptualLoss: no identity network given, the perceptual term is off "
                    "(returns 0); pass a face-recognition net, e.g. "
                    "PerceptualLoss.from_iresnet('backbone.pth')",
                    UserWarning,
                    stacklevel=2,
                )
                self._warned = True
            return image.new_zeros(())
        self.net.eval()
        fa = identity_features(self.net, image, M, self.input_size)
        m_render = M if M_render is None else M_render
        fb = identity_features(self.net, render, m_render, self.input_size)
        return perceptual_loss(fa, fb, normalize=False)
