"""Differentiable mesh rasterizer and renderer (pure PyTorch, optional PyTorch3D backend).

Functional core (PyTorch3D / nvdiffrast style)::

    frags = rasterize(verts_screen, faces, image_size)          # discrete, no gradients
    color = interpolate(colors, frags, faces, verts=verts_screen)  # grads to colors and positions
    color = antialias(color, frags, verts_screen, faces)        # opt-in silhouette gradients

Module wrapper: :class:`MeshRenderer` (world-space vertices + camera -> image, masks, depth).
Conventions (pixel centres at half-integers, y down, ``(u, v, d)`` screen vertices, PyTorch3D
meaning of ``pix_to_face`` / ``bary`` / ``zbuf``): docs/conventions.md.
"""

from face3dkit.io.image import save_image

from .antialias import EdgeTopology, antialias, edge_topology
from .backend import ENV_VAR, available_backends, get_backend, pytorch3d_available
from .fragments import Fragments, ndc_to_screen, pixel_centers, screen_to_ndc
from .interpolate import barycentrics, interpolate
from .rasterize import rasterize
from .renderer import Camera, MeshRasterizer, MeshRenderer, RenderOutput

__all__ = [
    "ENV_VAR",
    "Camera",
    "EdgeTopology",
    "Fragments",
    "MeshRasterizer",
    "MeshRenderer",
    "RenderOutput",
    "antialias",
    "available_backends",
    "barycentrics",
    "edge_topology",
    "get_backend",
    "interpolate",
    "ndc_to_screen",
    "pixel_centers",
    "pytorch3d_available",
    "rasterize",
    "save_image",
    "screen_to_ndc",
]
