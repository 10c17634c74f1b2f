"""Rasterizer output container and small shared helpers (see docs/conventions.md)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Fragments", "image_hw", "pack_faces", "ndc_to_screen", "screen_to_ndc", "pixel_centers"]


class Fragments(NamedTuple):
    """Per-pixel output of :func:`~face3dkit.render.rasterize` (PyTorch3D's meaning with K = 1).

    Attributes:
        pix_to_face: (B, H, W) int64, index of the visible face in the *packed* face list
            (``b * F + f``), -1 for background.
        bary: (B, H, W, 3) perspective-correct barycentric coordinates of the pixel centre with
            respect to the face's vertices ``faces[f, 0..2]``; -1 for background (as PyTorch3D).
            Not differentiable; use :func:`~face3dkit.render.barycentrics` for gradients.
        zbuf: (B, H, W) depth ``d`` of the visible surface at the pixel centre (model units), -1 for
            background.
        faces_per_mesh: F, the number of faces per batch element (to unpack ``pix_to_face``).
    """

    pix_to_face: Tensor
    bary: Tensor
    zbuf: Tensor
    faces_per_mesh: int

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return (int(self.pix_to_face.shape[1]), int(self.pix_to_face.shape[2]))

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a face is visible."""
        return self.pix_to_face >= 0

    @property
    def face_index(self) -> Tensor:
        """(B, H, W) int64, *unpacked* visible face index ``f`` in ``[0, F)``, -1 for background."""
        p2f = self.pix_to_face
        return torch.where(p2f >= 0, p2f % max(self.faces_per_mesh, 1), p2f)


def image_hw(image_size: int | tuple[int, int] | list[int] | torch.Size) -> tuple[int, int]:
    """Normalise ``image_size`` (int for square, or (H, W)) to a ``(H, W)`` tuple of ints."""
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        hw = (int(image_size[0]), int(image_size[1]))
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


def pack_faces(faces: Tensor, batch_size: int, num_verts: int) -> Tensor:
    """Faces indexing the packed vertex list ``verts.reshape(B * V, 3)``.

    Args:
        faces: (F, 3) shared across the batch, or (B, F, 3) per batch element; integer vertex ids
            in ``[0, V)``.
        batch_size: B.
        num_verts: V, vertices per batch element.

    Returns:
        (B * F, 3) int64, row ``b * F + f`` holds ``faces[(b,) f] + b * V``.
    """
    if faces.ndim == 2:
        faces = faces.unsqueeze(0).expand(batch_size, -1, -1)
    elif faces.ndim != 3 or faces.shape[0] != batch_size:
        raise ValueError(f"faces must be (F, 3) or (B={batch_size}, F, 3), got {tuple(faces.shape)}")
    if faces.shape[-1] != 3:
        raise ValueError(f"faces must have 3 vertex ids per face, got {tuple(faces.shape)}")
    offs = torch.arange(batch_size, device=faces.device, dtype=torch.long) * num_verts
    return (faces.long() + offs[:, None, None]).reshape(-1, 3)


def pixel_centers(
    image_size: int | tuple[int, int], device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(H, W, 2) pixel-centre coordinates ``(u, v) = (j + 0.5, i + 0.5)`` (pixels, y down)."""
    h, w = image_hw(image_size)
    v = torch.arange(h, device=device, dtype=dtype) + 0.5
    u = torch.arange(w, device=device, dtype=dtype) + 0.5
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), -1)


def ndc_to_screen(verts_ndc: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """PyTorch3D NDC vertices -> face3dkit screen-space vertices ``(u, v, d)``.

    PyTorch3D's NDC has +X left, +Y up, the shorter image side spanning [-1, 1] (the longer one
    [-s, s], s = long / short), pixel (row i, col j) centred at
    ``x = (W - 2 (j + 0.5)) / min(H, W)``, ``y = (H - 2 (i + 0.5)) / min(H, W)``. Hence
    ``u = (W - x min(H, W)) / 2``, ``v = (H - y min(H, W)) / 2``; z (view-space depth, which
    PyTorch3D's ``MeshRasterizer`` keeps in the z channel) is passed through as ``d``.

    Args:
        verts_ndc: (..., 3) PyTorch3D NDC points (x, y, z).
        image_size: int or (H, W).

    Returns:
        (..., 3) ``(u, v, d)``: pixels (x right), pixels (y down), depth.
    """
    h, w = image_hw(image_size)
    s = float(min(h, w))
    x, y, z = verts_ndc.unbind(-1)
    return torch.stack([(w - x * s) * 0.5, (h - y * s) * 0.5, z], -1)


def screen_to_ndc(verts_screen: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """Inverse of :func:`ndc_to_screen`: (..., 3) ``(u, v, d)`` -> (..., 3) PyTorch3D NDC."""
    h, w = image_hw(image_size)
    s = float(min(h, w))
    u, v, d = verts_screen.unbind(-1)
    return torch.stack([(w - 2.0 * u) / s, (h - 2.0 * v) / s, d], -1)
