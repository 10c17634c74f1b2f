"""nn.Module wrappers around the functional rasterizer: :class:`MeshRasterizer`, :class:`MeshRenderer`."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ._raster_torch import DEFAULT_MAX_CANDIDATES
from .antialias import EdgeTopology, antialias, edge_topology
from .fragments import Fragments, image_hw
from .interpolate import _interpolate_with_depth
from .rasterize import rasterize

__all__ = ["Camera", "MeshRasterizer", "MeshRenderer", "RenderOutput"]


@runtime_checkable
class Camera(Protocol):
    """Anything with ``to_screen((B, N, 3) world) -> (B, N, 3) (u, v, d)`` and ``image_size``.

    ``image_size`` is an int (square) or (H, W); :class:`face3dkit.geometry.camera.PerspectiveCamera`
    qualifies.
    """

    image_size: Any

    def to_screen(self, points: Tensor) -> Tensor: ...


def default_camera() -> Camera:
    """Deng et al.'s camera (focal 1015, centre (112, 112), distance 10, 224 px) from geometry."""
    from face3dkit.geometry.camera import PerspectiveCamera

    return PerspectiveCamera()


def camera_hw(camera: Any) -> tuple[int, int]:
    """(H, W) of a camera: its ``height_width`` if present, else its ``image_size``."""
    hw = getattr(camera, "height_width", None)
    if hw is not None:
        return image_hw(tuple(hw))
    return image_hw(camera.image_size)


class RenderOutput(NamedTuple):
    """Output of :class:`MeshRenderer`.

    Attributes:
        image: (B, H, W, 3) rendered colours (background composited, antialiased if enabled).
        mask: (B, H, W, 1) float coverage, 1 where the mesh is visible, else 0 (not differentiable).
        region_mask: (B, H, W, 1) float, 1 where a face of the configured region is the visible
            one (occlusion-aware), or None when no region is configured.
        depth: (B, H, W, 1) depth ``d`` of the visible surface (model units), 0 for background;
            differentiable w.r.t. the vertices.
        fragments: the rasterizer output (:class:`~face3dkit.render.Fragments`).
    """

    image: Tensor
    mask: Tensor
    region_mask: Tensor | None
    depth: Tensor
    fragments: Fragments


class MeshRasterizer(nn.Module):
    """Module form of :func:`~face3dkit.render.rasterize` with fixed settings.

    Args:
        image_size: int or (H, W).
        cull_backfaces, near, backend, max_candidates: see :func:`~face3dkit.render.rasterize`.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        *,
        cull_backfaces: bool = False,
        near: float = 1e-3,
        backend: str | None = None,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
    ) -> None:
        super().__init__()
        self.image_size = image_hw(image_size)
        self.cull_backfaces = cull_backfaces
        self.near = near
        self.backend = backend
        self.max_candidates = max_candidates

    def forward(self, verts: Tensor, faces: Tensor) -> Fragments:
        """(B, V, 3) screen vertices ``(u, v, d)``, (F, 3) / (B, F, 3) faces -> :class:`Fragments`."""
        return rasterize(
            verts,
            faces,
            self.image_size,
            cull_backfaces=self.cull_backfaces,
            near=self.near,
            backend=self.backend,
            max_candidates=self.max_candidates,
        )


class MeshRenderer(nn.Module):
    """Render world-space meshes with per-vertex (already lit) colours, as Deng et al.'s renderer.

    Pipeline: ``camera.to_screen`` -> :func:`~face3dkit.render.rasterize` ->
    :func:`~face3dkit.render.interpolate` (gradients to colours and to vertex positions via the
    barycentrics) -> background compositing -> optional :func:`~face3dkit.render.antialias`
    (silhouette gradients).

    Args:
        camera: object with ``to_screen(points (B, N, 3)) -> (B, N, 3)`` ``(u, v, d)`` and
            ``image_size`` (int or (H, W)); default :class:`face3dkit.geometry.camera.PerspectiveCamera`.
        faces: (F, 3) default faces (can be overridden per call).
        cull_backfaces: drop back faces (front = counter-clockwise seen from the camera).
        near: near-plane depth (faces with a vertex closer are dropped).
        antialias: enable analytic silhouette antialiasing (edge gradients). Off by default, as in
            Deng et al. (their nvdiffrast renderer does not antialias).
        region_faces: optional face subset for ``region_mask`` (e.g. Deng et al.'s front-face
            region): (K,) face indices or (F,) bool.
        region_vertices: alternatively a vertex subset ((K,) indices or (V,) bool); the region is
            the faces whose three vertices are all in it.
        backend: rasterizer backend (see :func:`~face3dkit.render.get_backend`).
    """

    def __init__(
        self,
        camera: Camera | None = None,
        faces: Tensor | None = None,
        *,
        cull_backfaces: bool = False,
        near: float = 1e-3,
        antialias: bool = False,
        region_faces: Tensor | None = None,
        region_vertices: Tensor | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        if region_faces is not None and region_vertices is not None:
            raise ValueError("give region_faces or region_vertices, not both")
        self.camera = camera if camera is not None else default_camera()
        self.cull_backfaces = cull_backfaces
        self.near = near
        self.antialias = antialias
        self.backend = backend
        self.register_buffer("faces", None if faces is None else faces.long(), persistent=False)
        self.register_buffer(
            "region_faces", None if region_faces is None else torch.as_tensor(region_faces), persistent=False
        )
        self.register_buffer(
            "region_vertices",
            None if region_vertices is None else torch.as_tensor(region_vertices),
            persistent=False,
        )
        self._topo_key: tuple | None = None
        self._topo: EdgeTopology | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the camera."""
        return camera_hw(self.camera)

    def _topology(self, faces: Tensor) -> EdgeTopology:
        key = (faces.data_ptr(), tuple(faces.shape), faces._version, faces.device)
        if self._topo is None or self._topo_key != key:
            self._topo = edge_topology(faces)
            self._topo_key = key
        return self._topo

    def _region_face_mask(self, faces: Tensor, num_verts: int) -> Tensor | None:
        """(F,) or (B, F) bool lookup of the region faces, or None."""
        F = faces.shape[-2]
        if self.region_faces is not None:
            r = self.region_faces.to(faces.device)
            if r.dtype == torch.bool:
                if r.shape[-1] != F:
                    raise ValueError(f"region_faces bool mask has {r.shape[-1]} entries, F = {F}")
                return r
            m = torch.zeros(F, dtype=torch.bool, device=faces.device)
            m[r.long()] = True
            return m
        if self.region_vertices is not None:
            r = self.region_vertices.to(faces.device)
            if r.dtype != torch.bool:
                vm = torch.zeros(num_verts, dtype=torch.bool, device=faces.device)
                vm[r.long()] = True
                r = vm
            return r[faces.long()].all(-1)
        return None

    def forward(
        self,
        verts: Tensor,
        colors: Tensor,
        faces: Tensor | None = None,
        *,
        camera: Camera | None = None,
        background: Tensor | float | None = None,
    ) -> RenderOutput:
        """Render.

        Args:
            verts: (B, N, 3) world-space vertices (after the rigid transform), model units.
            colors: (B, N, C) per-vertex colours (C = 3 usually), already lit, in [0, 1].
            faces: (F, 3) or (B, F, 3); defaults to the faces given at construction.
            camera: overrides the module's camera for this call.
            background: optional background composited before antialiasing: a float, a (C,) colour
                or a (B, H, W, C) image (e.g. the input photo). Default: 0.

        Returns:
            :class:`RenderOutput` (image (B, H, W, C), mask (B, H, W, 1), region_mask, depth
            (B, H, W, 1), fragments).
        """
        faces = faces if faces is not None else self.faces
        if faces is None:
            raise ValueError("no faces given (pass faces= to the constructor or to forward)")
        faces = faces.to(verts.device).long()
        cam = camera if camera is not None else self.camera
        hw = camera_hw(cam)
        B, N, _ = verts.shape
        screen = cam.to_screen(verts)
        frags = rasterize(
            screen, faces, hw, cull_backfaces=self.cull_backfaces, near=self.near, backend=self.backend
        )
        H, W = hw
        image, depth = _interpolate_with_depth(colors, frags, faces, screen)
        depth = depth[..., None]
        mask = frags.mask[..., None].to(colors.dtype)
        if background is not None:
            bg = torch.as_tensor(background, dtype=colors.dtype, device=colors.device)
            image = image + (1.0 - mask) * bg
        if self.antialias:
            image = antialias(image, frags, screen, faces, topology=self._topology(faces))
        region = self._region_face_mask(faces, N)
        region_mask = None
        if region is not None:
            fi = frags.face_index
            if region.ndim == 1:
                hit = region[fi.clamp(min=0)]
            else:
                hit = torch.gather(region, 1, fi.clamp(min=0).reshape(B, -1)).view(B, H, W)
            region_mask = (hit & frags.mask)[..., None].to(colors.dtype)
        return RenderOutput(image, mask, region_mask, depth, frags)
