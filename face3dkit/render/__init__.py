"""Differentiable mesh rasterizer and renderer (pure PyTorch, optional PyTorch3D backend).

Functional core (PyTorch3D / nvdiffrast style)::

    frags = rasterize(verts_screen, faces, image_size)          # discrete, no gradients
    color = interpolate(colors, frags, faces, verts=verts_screen)  # grads to colors and positions
    color = antialias(color, frags, verts_screen, faces)        # opt-in silhouette gradients

The one render path: :func:`render_mesh` (world-space vertices + colours + camera -> image,
coverage, depth); :func:`render_face` (a morphable model's coefficients -> image, coverage, front /
display masks, landmarks); module wrapper :class:`MeshRenderer`.
Conventions (pixel centres at half-integers, y down, ``(u, v, d)`` screen vertices, PyTorch3D
meaning of ``pix_to_face`` / ``bary`` / ``zbuf``): docs/conventions.md.
"""

from face3dkit.io.image import save_image

from .antialias import EdgeTopology, antialias, edge_topology
from .backend import ENV_VAR, available_backends, get_backend, pytorch3d_available
from .face import FaceRender, render_face
from .fragments import Fragments, ndc_to_screen, pixel_centers, screen_to_ndc
from .interpolate import barycentrics, interpolate
from .rasterize import rasterize
from .renderer import Camera, MeshRasterizer, MeshRenderer, RenderOutput, render_mesh

__all__ = [
    "ENV_VAR",
    "Camera",
    "EdgeTopology",
    "FaceRender",
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
    "render_face",
    "render_mesh",
    "save_image",
    "screen_to_ndc",
]
