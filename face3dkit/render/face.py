"""The one render of a morphable-model face: :func:`render_face` (coefficients + camera → image,
coverage, region masks, landmarks). The fitter's renders (:func:`face3dkit.fit.render_coefficients`),
previews (:func:`face3dkit.viz.render_faces`) and the FER synthetic set go through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from torch import Tensor

from .fragments import Fragments
from .renderer import render_mesh

if TYPE_CHECKING:
    from face3dkit.model.coefficients import Coefficients
    from face3dkit.model.morphable import FaceOutput, MorphableModel

__all__ = ["FaceRender", "display_face_mask", "render_face"]


class FaceRender(NamedTuple):
    """Output of :func:`render_face`.

    Attributes:
        image: (B, H, W, 3) shaded face (:func:`~face3dkit.render.renderer.render_mesh`: background
            composited when one is given, else 0 there, then antialiased if asked);
            differentiable w.r.t. the coefficients (colours and, through the barycentrics, positions).
        coverage: (B, H, W, 1) float, 1 where the mesh is visible.
        front_mask: (B, H, W, 1) float, 1 where a front-face triangle (the model's ``front_mask``
            region: what the photometric loss compares) is the visible one.
        display_mask: (B, H, W, 1) float, 1 where :func:`display_face_mask` triangles are visible
            (overlays: the front face and eyes, teeth, mouth interior; not ears, neck, scalp);
            None with ``display=False``.
        landmarks2d: (B, 68, 2) projected landmarks, pixels.
        fragments: the rasterizer output.
        face: the model's :class:`~face3dkit.model.morphable.FaceOutput` (vertices, normals, colours).
    """

    image: Tensor
    coverage: Tensor
    front_mask: Tensor
    display_mask: Tensor | None
    landmarks2d: Tensor
    fragments: Fragments
    face: FaceOutput


def display_face_mask(model: MorphableModel) -> Tensor:
    """(F,) bool: the triangles an overlay shows — the front face and every non-skin region (eyes,
    teeth, mouth interior), not the ears, neck or scalp."""
    skin = model.region_mask("face")[model.faces].all(-1)
    return model.front_mask[model.faces].all(-1) | ~skin


def render_face(model: MorphableModel, coeffs: Coefficients, camera: Any, *, antialias: bool = False,
                background: float | Tensor | None = None, display: bool = True) -> FaceRender:
    """Render faces of ``model`` with Deng et al.'s shading.

    Args:
        model: the morphable model.
        coeffs: B faces' coefficients.
        camera: e.g. :class:`face3dkit.geometry.PerspectiveCamera` (``to_screen``, ``project``,
            ``height_width``).
        antialias: analytic silhouette antialiasing (edge gradients).
        background: composited where no triangle is visible (a grey level, an RGB colour or a
            (B, H, W, 3) image); None leaves 0 there.
        display: also compute ``display_mask`` (else None: the fitter's per-step renders skip it).

    Returns:
        :class:`FaceRender`.
    """
    out = model(coeffs, camera=camera)
    img, cov, _, frags = render_mesh(out.verts_world, out.color, model.faces, camera, antialias=antialias,
                                     background=background)
    covered = frags.pix_to_face >= 0
    face_id = frags.pix_to_face.clamp_min(0) % model.faces.shape[0]
    front = model.front_mask[model.faces].all(-1)
    mask = (covered & front[face_id])[..., None].to(img.dtype)
    shown = (covered & display_face_mask(model)[face_id])[..., None].to(img.dtype) if display else None
    return FaceRender(img, cov, mask, shown, out.landmarks2d, frags, out)
