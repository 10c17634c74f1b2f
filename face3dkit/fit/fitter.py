"""Analysis-by-synthesis fitting of a morphable model to aligned face crops (Deng et al.'s losses).

Stages (batched over faces, CPU or CUDA, deterministic for a seed):

1. **Initialisation** — POS similarity of the 68 detected landmarks to the model's mean-shape
   landmarks gives rotation, scale and 2D position, turned into Deng et al.'s perspective camera
   pose (depth from the scale: ``d = f / s``). With a robust landmark loss (the default) POS is
   iteratively reweighted (Geman-McClure weights, starting from the 51 inner points), so gross
   outliers among the given landmarks do not set the starting pose.
2. **Landmarks and pose** (coarse) — Adam on pose, identity and expression with the landmark loss
   (robust by default: :func:`face3dkit.losses.robust_landmark_loss`) and the coefficient prior;
   only the 68 landmark vertices are evaluated, so this stage is cheap.
3. **Photometric** (fine) — all coefficients (adding albedo and SH lighting) with the
   skin-attention-weighted photometric loss through the differentiable rasterizer, plus the
   landmark, coefficient, lighting, reflectance and (when an identity network is given)
   perceptual terms, weighted as in the paper (:class:`face3dkit.losses.LossWeights`). By default
   this stage renders at half the crop resolution (``photo_size = 112`` for 224 crops: the crop is
   area-averaged and the camera scaled, a quarter of the pixels to rasterize, interpolate and
   backpropagate); the landmark terms stay in crop pixels, and the final render is at full size.
   It starts from the closed-form SH light and albedo of the landmark stage's geometry
   (:mod:`face3dkit.fit.appearance`), not from the ambient light and mean albedo, and takes 40 Adam
   steps (Deng et al.'s start needed 50 for the same accuracy: ``benchmarks/reconstruct.py --previous``).
   :meth:`FitConfig.fast` makes a step ~3x cheaper: the render at 64 px, on the model decimated to
   10,000 triangles (a subset of its vertices, so the same coefficients:
   :func:`face3dkit.model.lod_faces`) and rasterized every 4th step only (the visibility kept
   between, the barycentrics recomputed from the moving vertices).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

from face3dkit.align.arcface import arcface_matrix
from face3dkit.fit.contour import ContourCandidates, contour_candidates, contour_sliding_fn, marched_landmarks
from face3dkit.geometry import (
    PerspectiveCamera,
    PosResult,
    pos_similarity,
    rotate,
    rotation_to_euler,
)
from face3dkit.losses import (
    LossWeights,
    PerceptualLoss,
    coefficient_regularization,
    image_loss_terms,
    landmark_weights,
    robust_landmark_loss,
    skin_attention,
)
from face3dkit.losses.landmark import ROBUST_KINDS, ROBUST_SCALE_PX
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel, pose_points

if TYPE_CHECKING:
    from face3dkit.render import Fragments

__all__ = [
    "FitConfig",
    "FitResult",
    "LANDMARK_CONVENTIONS",
    "fit",
    "fit_landmark_weights",
    "fit_landmarks",
    "init_pose_from_landmarks",
    "render_coefficients",
]


#: Jaw-contour conventions of given landmarks (:attr:`FitConfig.landmark_convention`).
LANDMARK_CONVENTIONS = ("2d", "3d")


@dataclass
class FitConfig:
    """Settings of :func:`fit`.

    Attributes:
        landmark_iters: Adam steps of the landmark/pose stage.
        photo_iters: Adam steps of the photometric stage (0 = landmarks and pose only; 40 from the
            closed-form appearance reach the accuracy 50 reached from Deng et al.'s start).
        photo_size: height in pixels at which the photometric stage renders and compares (the
            crop is area-averaged to it and the camera scaled); None = the crop's own size. The
            photometric loss is a mean over face pixels, so its weight does not depend on it.
        photo_faces: triangles of the mesh the photometric stage renders (a decimation of the
            model's on a subset of its vertices, :func:`face3dkit.model.lod_faces`: same
            coefficients, same landmarks), or None for the model's own mesh. The final render uses
            the full mesh. A step's cost follows the triangle count once the image is small.
        photo_raster_every: rasterize the photometric stage's mesh at every k-th step only and keep
            that visibility (which triangle covers each pixel, the front-face mask) for the steps
            between; the image and its gradients still follow the current vertices (barycentrics are
            recomputed). 1 = every step (exact). Ignored with ``antialias`` and for models with
            their own normals table.
        landmark_prior_scale: factor on the identity and expression priors in the landmark stage
            only (1 = the paper's weights): larger keeps the shape nearer the mean while the pose is
            fitted to the landmarks, leaving the shape to the photometric stage.
        photo_shape_shrink: factor on the identity and expression coefficients the landmark stage
            found, applied before the photometric stage (shrinkage towards the prior mean; 1 = keep
            them; blocks held ``fixed`` are not touched). The landmark stage also fits the detector's
            errors; the photometric stage then re-fits the shape from nearer the mean.
        lr_landmark, lr_photo: Adam learning rates of the two stages.
        weights: loss weights (paper defaults).
        skin_model: skin colour model name for the photometric attention (``'jones_rehg'`` or
            ``'deng2019'``), or None for no attention.
        fit_identity_in_landmark_stage: also fit identity and expression in stage 2.
        antialias: analytic silhouette antialiasing in the photometric render (edge gradients).
        seed: seed of a local ``torch.Generator`` for anything random in the fit (nothing is random
            today: the fit is a deterministic function of its inputs). The global RNG is never
            reseeded or drawn from.
        contour_weight: weight of the 17 jaw-contour landmarks (0-16) relative to Deng et al.'s
            weights (1 = the paper). Detectors place contour points on the visible silhouette,
            which slides over the face with yaw while the model's contour vertices are fixed;
            a lower weight trusts the contour less.
        eye_weight: weight of the 12 eye landmarks (36-47) in the photometric stage relative to
            Deng et al.'s weights (1 in the paper; 20 by default, the weight the paper gives the nose
            and inner-mouth points). The landmark stage keeps the paper's weights: there the lids
            would pull the pose of a model that cannot open or close its eyes (the MakeHuman model).
            The eye aperture is carried by the lid points alone: the photometric term barely sees
            it (the lids border sclera, iris and lashes, which skin attention gives almost no
            weight, and coverage has no gradient), and at weight 1 the photometric stage closed
            the eyes the landmark stage had opened (correlation of fitted vs detected eye opening
            on real photos 0.28; 0.97 with 20 — ``benchmarks/expressions.py``).
        landmark_convention: what the given jaw-contour points (0-16) are: ``'2d'`` (the default),
            points on the visible outline (dlib, iBUG 300-W, Deng et al.'s detections; the contour
            marches and slides as ``contour_marching`` / ``contour_tangent_weight`` say), or
            ``'3d'``, projections of fixed 3D points (a model's own landmarks, the synthetic sets,
            AFLW2000-3D): no marching and point-to-point distances, whatever those two fields say.
        contour_marching: move the jaw-contour landmarks (0-16) of the side turned away from
            the camera onto the model's silhouette at each step (landmark marching, Zhu et al.
            2015; see :mod:`face3dkit.fit.contour`). Right for 2D landmarks that follow the
            visible outline (dlib, iBUG 300-W, Deng et al.'s detections); turn it off for landmarks
            that are projections of fixed 3D points. Needs 68 points; ignored with 5.
        contour_tangent_weight: weight (on distance, so its square on the loss) of the component
            of each jaw-contour residual along the detected contour (0-16), 1 = the paper's
            point-to-point distance. Detectors spread the 17 points evenly along the visible
            outline, which slides along the jaw as the head turns; with a small weight the contour
            constrains the outline (its normal component) but hardly where on it each point is.
            Needs 68 points; ignored with 5.
        landmark_loss: per-point penalty of the landmark terms: ``'l2'`` (Deng et al.'s squared
            distance), ``'huber'`` or ``'gm'`` (Geman-McClure, the default; see
            :mod:`face3dkit.losses.landmark`). With ``'huber'`` / ``'gm'`` the POS initialisation is
            reweighted the same way, so landmarks far off (a detector failure, a corrupted file)
            neither set the starting pose nor pull the fit.
        landmark_scale: robust scale ``s`` in pixels of a 224 x 224 crop (rescaled with the crop
            size): points much closer than ``s`` count as in ``'l2'``, points much farther hardly.
        landmark_refine_iters: after the ``landmark_iters`` steps, this many more for the faces
            whose mean landmark residual (:attr:`FitResult.landmark_stage_error`) is above
            ``landmark_refine_above``, each continuing its own optimiser state as if the others were
            still in the batch (0 = no refinement). A short landmark stage from a good pose
            (``rnet+fit``) keeps the shape near the prior, which suits faces the model describes
            and leaves the others far from their points; those get the long stage.
        landmark_refine_above: the residual threshold, pixels of a 224 x 224 crop (rescaled
            with the crop); 0 refines every face.
        shared_prior_weight: factor on the identity / albedo prior of blocks a batch shares
            (``fit(..., shared=...)``: one person's photos), relative to a one-photo fit. 1 (the
            default) suits detected landmarks, whose errors on one person's photos are alike and do
            not average out; ``1 / B`` is the MAP weight for B photos with independent landmark
            errors (better with clean landmarks: docs/benchmarks.md).
        appearance_init: start the photometric stage from the closed-form SH light and albedo of the
            landmark stage's geometry (:mod:`face3dkit.fit.appearance`: weighted least squares on
            the front-face pixels) instead of Deng et al.'s ambient light and mean albedo, or
            instead of the light and albedo of ``init`` coefficients (e.g. an R-Net's regression);
            skipped when ``gamma`` or ``tex`` is ``fixed``. The photometric loss then starts
            near where the paper's first 15 steps take it, so fewer steps reach the same fit.
        cull_backfaces: the photometric stage rasterizes only the triangles that face the camera
            (counter-clockwise on screen). A closed, consistently wound mesh never shows a back
            face, so the image is the same for a quarter less rasterizer work; on the default model
            2 of 305,027 front-face pixels differ over 65 poses (yaw ±90°, pitch ±45°, random
            identity and expression, 112 px); where the mesh intersects itself (the MakeHuman
            model's lids and lips: 0.5 % of the pixels) the surface seen from inside is dropped.
            Ignored with ``antialias`` and for models with their own normals table (which render
            through :func:`render_coefficients`). The final render keeps every triangle.
        deterministic: run with ``torch.use_deterministic_algorithms(True, warn_only=True)``
            (restored afterwards) so a fit is bitwise reproducible; without it the order of
            parallel float reductions (``index_add`` in the rasterizer's backward) varies by ~1e-9.
    """

    landmark_iters: int = 150
    photo_iters: int = 40
    photo_size: int | None = 112
    photo_faces: int | None = None
    photo_raster_every: int = 1
    landmark_prior_scale: float = 1.0
    photo_shape_shrink: float = 1.0
    lr_landmark: float = 0.05
    lr_photo: float = 0.01
    weights: LossWeights = field(default_factory=LossWeights)
    skin_model: str | None = "jones_rehg"
    fit_identity_in_landmark_stage: bool = True
    antialias: bool = False
    seed: int = 0
    deterministic: bool = True
    contour_weight: float = 1.0
    eye_weight: float = 20.0
    landmark_convention: str = "2d"
    contour_marching: bool = True
    contour_tangent_weight: float = 0.3
    landmark_loss: str = "gm"
    landmark_scale: float = ROBUST_SCALE_PX
    landmark_refine_iters: int = 0
    landmark_refine_above: float = 0.0
    shared_prior_weight: float = 1.0
    appearance_init: bool = True
    cull_backfaces: bool = True

    def __post_init__(self) -> None:
        if self.landmark_convention not in LANDMARK_CONVENTIONS:
            raise ValueError(f"FitConfig.landmark_convention must be one of {', '.join(LANDMARK_CONVENTIONS)}, "
                             f"got {self.landmark_convention!r}")
        if self.landmark_convention == "3d":  # the fields then say what is in effect (and settings record it)
            self.contour_marching, self.contour_tangent_weight = False, 1.0
        if self.landmark_loss not in ROBUST_KINDS:
            raise ValueError(f"FitConfig.landmark_loss must be one of {', '.join(ROBUST_KINDS)}, "
                             f"got {self.landmark_loss!r}")
        if self.photo_size is not None and self.photo_size < 16:
            raise ValueError(f"FitConfig.photo_size must be None or >= 16 pixels, got {self.photo_size}")
        if self.photo_faces is not None and self.photo_faces < 1:
            raise ValueError(f"FitConfig.photo_faces must be None or >= 1 triangles, got {self.photo_faces}")
        if not 0.0 <= self.photo_shape_shrink <= 1.0:
            raise ValueError(f"FitConfig.photo_shape_shrink must be in [0, 1], got {self.photo_shape_shrink}")
        if not self.landmark_prior_scale > 0:
            raise ValueError(f"FitConfig.landmark_prior_scale must be > 0, got {self.landmark_prior_scale}")
        if self.photo_raster_every < 1:
            raise ValueError(f"FitConfig.photo_raster_every must be >= 1 steps, got {self.photo_raster_every}")
        if not (self.eye_weight >= 0 and self.contour_weight >= 0):
            raise ValueError(f"FitConfig.eye_weight and contour_weight must be >= 0, got {self.eye_weight} and "
                             f"{self.contour_weight}")
        if self.landmark_refine_iters < 0 or not self.landmark_refine_above >= 0:
            raise ValueError(f"FitConfig.landmark_refine_iters and landmark_refine_above must be >= 0, got "
                             f"{self.landmark_refine_iters} and {self.landmark_refine_above}")
        if not self.landmark_scale > 0:
            raise ValueError(f"FitConfig.landmark_scale must be > 0 pixels, got {self.landmark_scale}")
        if not self.shared_prior_weight > 0:
            raise ValueError(f"FitConfig.shared_prior_weight must be > 0, got {self.shared_prior_weight}")

    @classmethod
    def fast(cls, **overrides: object) -> FitConfig:
        """The fast photometric stage: 64 px, the model decimated to 10,000 triangles, rasterized
        every 4th step (:attr:`photo_size`, :attr:`photo_faces`, :attr:`photo_raster_every`); about
        2.5x less time per face than the defaults for a few per cent of landmark and shape
        accuracy on the benchmark (docs/benchmarks.md). ``overrides``: any other fields."""
        return cls(**{"photo_size": 64, "photo_faces": 10000, "photo_raster_every": 4, **overrides})

    @property
    def marching(self) -> bool:
        """Whether the contour marches (``contour_marching`` with the ``'2d'`` convention)."""
        return self.contour_marching and self.landmark_convention == "2d"

    @property
    def tangent_weight(self) -> float:
        """The contour's tangent weight in use (``contour_tangent_weight`` with ``'2d'``, else 1)."""
        return self.contour_tangent_weight if self.landmark_convention == "2d" else 1.0


@dataclass
class FitResult:
    """Output of :func:`fit` for B faces.

    Attributes:
        coeffs: fitted :class:`Coefficients` (detached).
        landmarks2d: (B, 68, 2) model landmarks projected into the crop, pixels (with the
            self-occluded contour marched to the silhouette when ``contour_marching``).
        render: (B, H, W, 3) final render in [0, 1] (None when ``photo_iters == 0``).
        mask: (B, H, W, 1) coverage of the front-face region in the final render.
        losses: per-stage list of total-loss values (for plots/tests): ``'landmark'``,
            ``'photometric'`` and, when faces were refined, ``'landmark_refine'`` (their subset's).
        landmark_error: (B,) mean landmark distance in crop pixels.
        display_mask: (B, H, W, 1) coverage of what an overlay shows: the front face plus the
            eyes, teeth and mouth interior of models that have them (None without a render).
        timings: wall-clock seconds of the stages (``init``, ``landmark``, ``photometric``,
            ``final_render``) for the whole batch (CUDA synchronised at each stage boundary).
        landmark_stage_error: (B,) mean distance, pixels of a 224 x 224 crop, between the given
            landmarks and the model's (as the landmark term compares them: contour slid, or reduced
            to 5 points) after the ``landmark_iters`` steps, before any refinement (None when no
            block was fitted in that stage).
        refined: (B,) bool, the faces that got ``landmark_refine_iters`` more landmark steps.
    """

    coeffs: Coefficients
    landmarks2d: Tensor
    render: Tensor | None
    mask: Tensor | None
    losses: dict[str, list[float]]
    landmark_error: Tensor
    timings: dict[str, float] = field(default_factory=dict)
    display_mask: Tensor | None = None
    landmark_stage_error: Tensor | None = None
    refined: Tensor | None = None


def fit_landmark_weights(cfg: FitConfig, n_points: int = 68, device: torch.device | str | None = None,
                         dtype: torch.dtype | None = None, stage: str = "photometric") -> Tensor:
    """(N,) per-landmark weights of the fit's landmark terms: Deng et al.'s (20 on the nose 28-30
    and inner mouth 60-67, else 1) with the jaw contour 0-16 times ``cfg.contour_weight`` and, in
    the photometric stage (``stage``), the eyes 36-47 times ``cfg.eye_weight``; all ones for 5
    points."""
    if stage not in ("landmark", "photometric"):
        raise ValueError(f"stage must be 'landmark' or 'photometric', got {stage!r}")
    if n_points == 5:
        return torch.ones(5, device=device, dtype=dtype or torch.get_default_dtype())
    lw = landmark_weights(n_points, device=device, dtype=dtype)
    lw[:17] *= cfg.contour_weight
    if stage == "photometric":
        lw[36:48] *= cfg.eye_weight
    return lw


def init_pose_from_landmarks(model: MorphableModel, lm2d: Tensor, camera: PerspectiveCamera,
                             robust_scale: float | None = None, robust_iters: int = 4) -> tuple[Tensor, Tensor]:
    """Pose that puts the mean face's landmarks on ``lm2d`` (POS + depth from scale).

    Args:
        model: the morphable model.
        lm2d: (B, 68, 2) landmarks in pixels of the camera's image (or (B, 5, 2) in Deng et al.'s
            5-point order).
        camera: the perspective camera.
        robust_scale: None for plain POS; else iteratively reweighted POS with Geman-McClure
            weights ``(s^2 / (s^2 + r^2))^2`` of each point's residual ``r`` (pixels) for the
            scale ``s`` (pixels), starting (with 68 points) from the 51 inner points 17-67.
        robust_iters: reweighted POS solves after the first.

    Returns:
        angles (B, 3) radians and trans (B, 3) model units.
    """
    dtype = lm2d.dtype
    mean_lm = model.mean_shape[model.landmark_idx].to(dtype)  # (68, 3)
    if lm2d.shape[-2] == 5:
        mean_lm = _to_five(mean_lm[None])[0]
    # To a y-up frame centred on the principal point.
    xy = torch.stack([lm2d[..., 0] - camera.cx, camera.cy - lm2d[..., 1]], -1)
    res = pos_similarity(xy, mean_lm) if robust_scale is None else _robust_pos(xy, mean_lm, robust_scale, robust_iters)
    angles = rotation_to_euler(res.rotation)
    depth = camera.focal / res.scale  # s = f / d for a weak-perspective view at depth d
    tz = camera.camera_distance - depth
    # POS translation is of the model origin; after rotation that origin projects to
    # f * t_xy / d, so t_xy = trans2d * d / f.
    txy = res.trans * (depth / camera.focal)[:, None]
    return angles, torch.cat([txy, tz[:, None]], -1)


def _robust_pos(xy: Tensor, mean_lm: Tensor, scale: float, iters: int) -> PosResult:
    """Iteratively reweighted POS (Geman-McClure weights; see :func:`init_pose_from_landmarks`)."""
    b, n, _ = xy.shape
    w = torch.ones(b, n, dtype=torch.float64, device=xy.device)
    if n == 68:
        w[:, :17] = 0.0  # the jaw contour is the least reliable part of a detection: start without it
    x64, m64, s2 = xy.to(torch.float64), mean_lm.to(torch.float64), float(scale) ** 2
    res = pos_similarity(xy, mean_lm, w)
    for _ in range(iters):
        rot = res.rotation.to(torch.float64)
        proj = res.scale.to(torch.float64)[:, None, None] * (m64 @ rot[:, :2].transpose(1, 2)) + res.trans.to(
            torch.float64)[:, None]
        r2 = ((proj - x64) ** 2).sum(-1)
        w = (s2 / (s2 + r2)) ** 2
        w = w / w.amax(-1, keepdim=True).clamp_min(1e-300)
        res = pos_similarity(xy, mean_lm, w)
    return res


class _PhotometricRenderer:
    """The photometric stage's render: the same image and front-face mask as
    :func:`render_coefficients`, with gradients computed only where the loss can use them.

    The loss sees only pixels of front-face triangles, whose colours are interpolated from their
    own three vertices. So the differentiable part (shape, vertex normals, albedo, SH shading)
    is evaluated on the front-face vertices and the one-ring of faces around them (exact normals
    there); every other vertex (ears, neck, eyeballs, teeth, mouth interior: the occluders) is
    posed without gradients, and all faces are rasterized for visibility. On the default model this
    differentiates about a third of the vertices and faces (the photometric step was 3x the cost
    of the rest, most of it in the backward of the vertex normals).
    """

    def __init__(self, model: MorphableModel, cull_backfaces: bool = False, faces: Tensor | None = None) -> None:
        """``faces``: (F', 3) triangles on the model's vertices to render instead of ``model.faces``
        (a decimated mesh: :func:`face3dkit.model.lod_faces`); vertices they do not use are skipped."""
        faces = model.faces if faces is None else faces.to(model.faces.device).long()
        self.model = model
        self.cull_backfaces = cull_backfaces
        self.front = model.front_mask[faces].all(-1)  # (F,) faces in the loss
        keep = torch.zeros(model.n_verts, dtype=torch.bool, device=faces.device)
        keep[faces[self.front].reshape(-1)] = True
        ring = keep[faces].any(-1)  # faces touching a loss vertex: the one-ring for its normal
        self.rows = torch.unique(faces[ring])  # (R,) vertices evaluated with gradients
        local = torch.full((model.n_verts,), -1, dtype=torch.long, device=faces.device)
        local[self.rows] = torch.arange(self.rows.numel(), device=faces.device)
        self.ring_faces = local[faces[ring]]  # (Fr, 3) in the rows' numbering
        self.sub = model.rows(self.rows)
        used = torch.zeros(model.n_verts, dtype=torch.bool, device=faces.device)
        used[faces.reshape(-1)] = True
        self.others = model.rows((used & (local < 0)).nonzero().squeeze(1))  # posed without gradients
        # The render's vertices are [rows, others] (no scatter back into the model's order): the
        # faces renumbered to match, in their own order (same face ids, same depth-tie rule).
        order = torch.cat([self.rows, self.others.rows])
        new_id = torch.full((model.n_verts,), -1, dtype=torch.long, device=order.device)
        new_id[order] = torch.arange(order.numel(), device=order.device)
        self.faces = new_id[faces]
        self._last: tuple[Tensor, Tensor, Fragments] | None = None  # visibility of the last rasterization

    def _raster(self, c: Coefficients, camera: PerspectiveCamera, reuse: bool = False
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Fragments]:
        """Posed row points (B, R, 3) (differentiable), rotation (B, 3, 3), screen vertices in render
        order (B, V, 3), the (B, H, W) bool front-face mask, and the rasterized fragments.

        ``reuse``: keep the previous call's visibility (which face covers each pixel, the mask and
        the occluders' screen positions) instead of rasterizing again; the barycentrics, and so the
        image and its gradients, are still those of the current vertices (see
        :func:`face3dkit.render.interpolate`). Needs a previous call with the same batch and camera.
        """
        from face3dkit.render import rasterize

        pts = self.sub.shape(c.id, c.exp)  # (B, R, 3)
        world, rot = pose_points(pts, c)
        screen_rows = camera.to_screen(world)
        if reuse and self._last is not None and self._last[0].shape[0] == pts.shape[0]:
            screen_others, front, frags = self._last
        else:
            with torch.no_grad():
                screen_others = camera.to_screen(self.others.posed_points(c)[0])
                screen = torch.cat([screen_rows.detach(), screen_others], 1)
                frags = rasterize(screen, self.faces, camera.height_width, cull_backfaces=self.cull_backfaces)
                face_id = frags.pix_to_face.clamp_min(0) % self.faces.shape[0]
                front = (frags.pix_to_face >= 0) & self.front[face_id]
            self._last = (screen_others, front, frags)
        screen = torch.cat([screen_rows, screen_others], 1)
        return pts, rot, screen, front, frags

    def __call__(self, c: Coefficients, camera: PerspectiveCamera, reuse: bool = False) -> tuple[Tensor, Tensor]:
        """Image (B, H, W, 3) and front-face mask (B, H, W, 1): inside the mask as
        :func:`render_coefficients`, 0 outside (only masked pixels are interpolated). ``reuse``:
        the previous call's visibility (:meth:`_raster`)."""
        from face3dkit.model.morphable import vertex_normals
        from face3dkit.render import interpolate
        from face3dkit.shading.sh import sh_shade

        pts, rot, screen, front, frags = self._raster(c, camera, reuse)
        normals = rotate(vertex_normals(pts, self.ring_faces), rot)
        color = sh_shade(self.sub.albedo(c.tex), normals, c.gamma.to(pts.dtype))
        color_all = torch.cat([color, color.new_zeros((color.shape[0], screen.shape[1] - color.shape[1], 3))], 1)
        in_mask = frags._replace(pix_to_face=torch.where(front, frags.pix_to_face, -1))
        img = interpolate(color_all, in_mask, self.faces, verts=screen)
        return img, front[..., None].to(img.dtype)

    @torch.no_grad()
    def appearance(self, c: Coefficients, camera: PerspectiveCamera, images: Tensor, weights: Tensor,
                   ridge: float = 1e-4) -> tuple[Tensor, Tensor]:
        """Closed-form SH light (B, 27) and albedo coefficients (B, K) for the current geometry
        (:func:`face3dkit.fit.appearance.closed_form_appearance` on the front-face pixels).

        Args:
            images: (B, H, W, 3) the photometric stage's images.
            weights: (B, H, W, 1) per-pixel weights (skin attention), multiplied by the mask.
        """
        from face3dkit.fit.appearance import closed_form_appearance
        from face3dkit.model.morphable import vertex_normals
        from face3dkit.shading.sh import sh_basis

        pts, rot, _, front, frags = self._raster(c, camera)
        b = pts.shape[0]
        sh = sh_basis(rotate(vertex_normals(pts, self.ring_faces), rot))  # (B, R, 9)
        nf = self.faces.shape[0]
        face_id = frags.pix_to_face.clamp_min(0) % nf
        corners = torch.where(front[..., None], self.faces[face_id], 0).reshape(b, -1, 3)  # front faces: ids < R
        w = (weights[..., 0] * front.to(weights.dtype)).reshape(b, -1)
        bary = frags.bary.clamp_min(0).reshape(b, -1, 3)
        return closed_form_appearance(sh, self.sub.mean_albedo, self.sub.albedo_basis, corners, bary,
                                      images.reshape(b, -1, 3), w, ridge)


class _LandmarkProjector:
    """Projected model landmarks (B, 68, 2) from coefficients, evaluating only the rows needed:
    the 68 landmark vertices, plus the contour candidates when marching."""

    def __init__(self, model: MorphableModel, camera: PerspectiveCamera, marching: bool) -> None:
        self.model, self.camera = model, camera
        self.cand: ContourCandidates | None = None
        self.rows = model.landmark_idx
        if marching:
            cand = contour_candidates(model.mean_shape, model.landmark_idx, mask=model.region_mask("face"))
            n_lm = model.landmark_idx.numel()
            # Neighbouring contour points share most candidates: evaluate each vertex once.
            self.rows, local = torch.unique(torch.cat([model.landmark_idx, cand.idx.flatten()]), return_inverse=True)
            self.cand = ContourCandidates(cand.points, local[n_lm:].view_as(cand.idx), cand.outward)
            self.local_lm = local[:n_lm]
        self.sub = model.rows(self.rows)

    def __call__(self, c: Coefficients) -> Tensor:
        world, rot = self.sub.posed_points(c)
        if self.cand is None:
            return self.camera.project(world)
        return marched_landmarks(world, self.local_lm, rot, self.camera, self.cand)


def render_coefficients(model: MorphableModel, c: Coefficients, camera: PerspectiveCamera,
                        antialias: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Differentiable render of faces (:func:`face3dkit.render.face.render_face`).

    Returns:
        image (B, H, W, 3), front-face mask (B, H, W, 1), coverage (B, H, W, 1), landmarks (B, 68, 2).
    """
    from face3dkit.render.face import render_face

    r = render_face(model, c, camera, antialias=antialias, display=False)
    return r.image, r.front_mask, r.coverage, r.landmarks2d


class _Adam:
    """Adam (Kingma & Ba; no weight decay, no AMSGrad), the same arithmetic in the same order as
    ``torch.optim.Adam``'s single-tensor path, without ``torch.optim``'s import of
    ``torch._dynamo`` (about 1.4 s once per process on 2 cores, a second per face for a few photos)."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1 ** self.t)
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(self.eps), value=-step_size)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    _set_deterministic(True, warn_only=True)
    try:
        yield
    finally:
        _set_deterministic(prev, warn_only=prev_warn)


def _set_deterministic(mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms`` without its import of ``torch._inductor`` (1.4 s, once
    per process, for a flag that only compiled graphs read) unless inductor is already loaded."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


#: The coefficient blocks :func:`fit` can hold fixed (``fixed=``).
_BLOCKS = ("id", "exp", "tex", "angles", "gamma", "trans")
#: The blocks one person's photos can share in a joint fit (``shared=``).
_SHAREABLE = ("id", "tex")


def fit(
    model: MorphableModel,
    images: Tensor,
    lm2d: Tensor,
    config: FitConfig | None = None,
    camera: PerspectiveCamera | None = None,
    perceptual: PerceptualLoss | None = None,
    init: Coefficients | None = None,
    fixed: Sequence[str] = (),
    shared: Sequence[str] = (),
) -> FitResult:
    """Fit coefficients to aligned crops.

    Args:
        model: morphable model (on the device to use).
        images: (B, H, W, 3) aligned crops in [0, 1] (224 x 224 for Deng et al.'s camera).
        lm2d: (B, 68, 2) landmarks in crop pixels (x right, y down), or (B, 5, 2) five points
            (eye centres, nose tip, mouth corners; Deng et al.'s detection files): then the
            landmark terms use the model landmarks reduced the same way.
        config: :class:`FitConfig`.
        camera: defaults to Deng et al.'s camera for the crop size.
        perceptual: optional identity-feature loss (:class:`face3dkit.losses.PerceptualLoss`).
        init: optional starting coefficients (else POS initialisation).
        fixed: coefficient blocks (``'id'``, ``'exp'``, ``'tex'``, ``'angles'``, ``'gamma'``,
            ``'trans'``) held at their ``init`` values (needs ``init``): e.g. an identity and albedo
            aggregated over several photos of one person (``reconstruct --same-person``).
        shared: blocks among ``'id'`` and ``'tex'`` that every face of the batch shares: the batch
            is photos of one person, and one identity (and albedo) is fitted to all of them jointly,
            each photo keeping its own expression, pose, light and translation (multi-image
            analysis-by-synthesis). The shared value starts from the mean of ``init``'s rows (zero
            without ``init``; with ``appearance_init`` the albedo from the mean of the per-photo
            closed forms). Every term stays a mean over the photos, so each photo counts equally
            and the shared blocks' prior weighs as in a one-photo fit times
            :attr:`FitConfig.shared_prior_weight` (1 by default, not the 1 / B of the MAP estimate
            for independent landmark errors: a detector's errors on one person's photos are alike,
            and on dlib's landmarks the weaker prior fits their common bias into the identity;
            docs/benchmarks.md). The returned rows are equal.
            Not with ``landmark_refine_iters`` > 0 (a refined subset would move a shared value).

    Returns:
        :class:`FitResult`.
    """
    cfg = config or FitConfig()
    bad = sorted(set(fixed) - set(_BLOCKS))
    if bad or (fixed and init is None):
        raise ValueError(f"fit: fixed blocks must be among {', '.join(_BLOCKS)} and need init coefficients, "
                         f"got fixed={tuple(fixed)}, init={'given' if init is not None else None}")
    bad_shared = sorted(set(shared) - set(_SHAREABLE))
    if bad_shared or set(shared) & set(fixed) or (shared and cfg.landmark_refine_iters > 0):
        raise ValueError(f"fit: shared blocks must be among {', '.join(_SHAREABLE)}, not also fixed, and not "
                         f"with landmark_refine_iters > 0; got shared={tuple(shared)}, fixed={tuple(fixed)}, "
                         f"landmark_refine_iters={cfg.landmark_refine_iters}")
    with _deterministic(cfg.deterministic):
        return _fit(model, images, lm2d, cfg, camera, perceptual, init, fixed=tuple(fixed), shared=tuple(shared))


def fit_landmarks(
    model: MorphableModel,
    lm2d: Tensor,
    image_size: int | tuple[int, int],
    config: FitConfig | None = None,
    camera: PerspectiveCamera | None = None,
    init: Coefficients | None = None,
) -> FitResult:
    """Fit pose, identity and expression to landmarks alone (the initialisation and landmark stage
    of :func:`fit`; no image, no photometric stage: ``config.photo_iters`` is not used).

    Args:
        model: morphable model.
        lm2d: (B, 68, 2) or (B, 5, 2) landmarks in pixels of a crop of ``image_size``.
        image_size: the crop's size, ``S`` or ``(H, W)`` pixels (Deng et al.'s camera for it unless
            ``camera`` is given; the robust landmark scale is relative to it).
        config, camera, init: as :func:`fit`.

    Returns:
        :class:`FitResult` with ``render`` and ``mask`` None.
    """
    cfg = dataclasses.replace(config or FitConfig(), photo_iters=0)
    hw = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    with _deterministic(cfg.deterministic):
        return _fit(model, None, lm2d, cfg, camera, None, init, hw)


def _fit(model: MorphableModel, images: Tensor | None, lm2d: Tensor, cfg: FitConfig, camera: PerspectiveCamera | None,
         perceptual: PerceptualLoss | None, init: Coefficients | None,
         image_hw: tuple[int, int] | None = None, fixed: tuple[str, ...] = (), shared: tuple[str, ...] = ()
         ) -> FitResult:
    dev, dtype = model.mean_shape.device, model.mean_shape.dtype
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock[0]
        clock[0] = now

    lm2d = lm2d.to(dev, dtype)
    if images is not None:
        images = images.to(dev, dtype)
        b, h, w, _ = images.shape
    else:  # landmarks only (fit_landmarks)
        b, h = lm2d.shape[0], image_hw[0]
    if lm2d.shape not in ((b, 68, 2), (b, 5, 2)):
        raise ValueError(f"lm2d must be (B, 68, 2) or (B, 5, 2) with B = {b}, got {tuple(lm2d.shape)}")
    five = lm2d.shape[1] == 5
    cam = camera or PerspectiveCamera.for_image_size(h)
    wts = cfg.weights
    lw = fit_landmark_weights(cfg, lm2d.shape[1], device=dev, dtype=dtype, stage="landmark")
    lw_photo = fit_landmark_weights(cfg, lm2d.shape[1], device=dev, dtype=dtype, stage="photometric")
    def reduction(target: Tensor) -> Callable[[Tensor], Tensor]:
        """What the landmark terms compare with ``target``: 5 points, or the contour slid along it."""
        if five:
            return _to_five
        return contour_sliding_fn(target, cfg.tangent_weight) if cfg.tangent_weight != 1.0 else (lambda x: x)

    reduce = reduction(lm2d)
    project_lm = _LandmarkProjector(model, cam, cfg.marching and not five)
    robust = cfg.landmark_loss != "l2"
    lm_scale = cfg.landmark_scale * h / 224.0  # the scale is given in pixels of a 224 crop

    def landmark_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
        return robust_landmark_loss(pred, target, weights, cfg.landmark_loss, lm_scale)

    def prior_view(c: Coefficients) -> Coefficients:
        """``c`` as the coefficient prior sees it: the shared blocks scaled by the square root of
        ``cfg.shared_prior_weight`` (the prior is quadratic), the others as they are."""
        if not shared or cfg.shared_prior_weight == 1.0:
            return c
        d = c.as_dict()
        for k in shared:
            d[k] = d[k] * cfg.shared_prior_weight ** 0.5
        return Coefficients(**d)

    def priors(c: Coefficients, scale: float = 1.0) -> dict[str, Tensor]:
        c = prior_view(c)
        return {"coefficient": coefficient_regularization(c.id, c.exp, c.tex, scale * wts.coef_id,
                                                          scale * wts.coef_exp, wts.coef_tex)}

    if init is None:
        c = Coefficients.zeros(model.layout, b, device=dev, dtype=dtype)
        c.angles, c.trans = init_pose_from_landmarks(model, lm2d, cam, lm_scale if robust else None)
    else:
        c = init.detach().clone().to(dev, dtype)
    # The optimised blocks; a shared one is a single (1, k) row that every face's block is a view of.
    params = {k: (v.detach().mean(0, keepdim=True) if k in shared else v) for k, v in c.as_dict().items()
              if k not in fixed}
    for v in params.values():
        v.requires_grad_(True)
    for k in shared:
        setattr(c, k, params[k].expand(b, -1))
    losses: dict[str, list[float]] = {"landmark": [], "photometric": []}
    exp_range = model.exp_range

    def project(cs: Coefficients = c) -> None:
        if exp_range is not None:
            with torch.no_grad():
                cs.exp.clamp_(*exp_range)

    def landmark_steps(cs: Coefficients, target: Tensor, red: Callable[[Tensor], Tensor], opt_: _Adam, n: int,
                       share: float, log: list[float]) -> None:
        # ``share``: this batch's part of the whole (a refined subset), so that each face's gradient,
        # and with it its Adam trajectory, is what it would be in the whole batch (all terms are
        # means over the batch).
        for _ in range(n):
            opt_.zero_grad(set_to_none=True)
            loss = wts.combine({"landmark": landmark_loss(red(project_lm(cs)), target, lw),
                                **priors(cs, cfg.landmark_prior_scale)})[0]
            (loss * share if share != 1.0 else loss).backward()
            opt_.step()
            project(cs)
            log.append(float(loss.detach()))

    lap("init")
    # Stage 2: landmarks and pose.
    stage2_keys = [k for k in ("angles", "trans") if k in params]
    if cfg.fit_identity_in_landmark_stage:
        stage2_keys += [k for k in ("id", "exp") if k in params]
    opt = _Adam([params[k] for k in stage2_keys], lr=cfg.lr_landmark) if stage2_keys else None
    stage_err = refined = None
    if opt is not None:
        landmark_steps(c, lm2d, reduce, opt, cfg.landmark_iters, 1.0, losses["landmark"])
        with torch.no_grad():  # mean residual the landmark term saw, in pixels of a 224 crop
            stage_err = (reduce(project_lm(c)) - lm2d).norm(dim=-1).mean(-1) * (224.0 / h)
        refined = (stage_err > cfg.landmark_refine_above if cfg.landmark_refine_iters > 0
                   else torch.zeros_like(stage_err, dtype=torch.bool))
        sel = refined.nonzero().squeeze(1)
        if sel.numel() > 0:
            # More steps for the faces the short stage left far from their landmarks: the same
            # optimiser (its moments and step count) continued on their rows only.
            sub = Coefficients(**{k: v.detach()[sel].clone() for k, v in c.as_dict().items()})
            sub_params = [getattr(sub, k).requires_grad_(True) for k in stage2_keys]
            sub_opt = _Adam(sub_params, lr=cfg.lr_landmark)
            sub_opt.m, sub_opt.v, sub_opt.t = [m[sel].clone() for m in opt.m], [v[sel].clone() for v in opt.v], opt.t
            target = lm2d[sel]
            losses["landmark_refine"] = []
            landmark_steps(sub, target, reduction(target), sub_opt, cfg.landmark_refine_iters, sel.numel() / b,
                           losses["landmark_refine"])
            with torch.no_grad():
                for k, v in zip(stage2_keys, sub_params, strict=True):
                    params[k].index_copy_(0, sel, v.detach())

    lap("landmark")
    if cfg.photo_iters > 0 and cfg.photo_shape_shrink != 1.0:
        with torch.no_grad():  # towards the prior mean: the landmark stage fits the detector's errors too
            for k in ("id", "exp"):
                if k in params:
                    params[k].mul_(cfg.photo_shape_shrink)
    render = mask = display = None
    if cfg.photo_iters > 0:
        photo_cam, photo_images, f = _photo_camera(cam, images, cfg.photo_size)
        with torch.no_grad():
            att = (skin_attention(photo_images, cfg.skin_model)[..., None] if cfg.skin_model
                   else torch.ones_like(photo_images[..., :1]))
            crop_m = (arcface_matrix(lm2d * f, five_points=five) if perceptual is not None and perceptual.enabled
                      else None)
        # The photometric renderer restricted to the loss's vertices; also used (its normals from the
        # faces, a starting point) for the closed-form appearance of models with their own normals table.
        lod = None
        if cfg.photo_faces is not None:
            from face3dkit.model.lod import lod_faces

            lod = lod_faces(model, cfg.photo_faces)  # the model's own faces at or above its count
        rows_render = _PhotometricRenderer(model, cull_backfaces=cfg.cull_backfaces, faces=lod)
        fast = None if cfg.antialias or model.normals_from_table else rows_render
        if cfg.appearance_init and not {"gamma", "tex"} & set(fixed):
            gamma, tex = rows_render.appearance(c, photo_cam, photo_images, att)
            with torch.no_grad():
                params["gamma"].copy_(gamma)
                params["tex"].copy_(tex.mean(0, keepdim=True) if "tex" in shared else tex)
        opt = _Adam(list(params.values()), lr=cfg.lr_photo)
        # The reflectance prior sees the skin vertices only (exactly: it is masked to them).
        skin_rows = model.rows(model.skin_mask.nonzero().squeeze(1))
        skin = torch.ones(skin_rows.rows.numel(), dtype=torch.bool, device=dev)
        for step in range(cfg.photo_iters):
            opt.zero_grad(set_to_none=True)
            if fast is not None:
                img, mask = fast(c, photo_cam, reuse=step % cfg.photo_raster_every != 0)
            else:
                img, mask, _, _ = render_coefficients(model, c, photo_cam, cfg.antialias)
            terms = image_loss_terms(wts, photo_images, img, mask, att,
                                     landmark_loss(reduce(project_lm(c)), lm2d, lw_photo), prior_view(c),
                                     skin_rows.albedo(c.tex), skin, perceptual, crop_m)
            loss = wts.combine(terms)[0]  # Deng et al.'s weighted sum (LossWeights), in this order
            loss.backward()
            opt.step()
            project()
            losses["photometric"].append(float(loss.detach()))
        lap("photometric")
        with torch.no_grad():
            from face3dkit.render.face import render_face

            final_render = render_face(model, c, cam)
            render, mask, display = final_render.image, final_render.front_mask, final_render.display_mask
    with torch.no_grad():
        final = Coefficients(**{k: v.detach().contiguous() for k, v in c.as_dict().items()})  # shared rows copied out
        lm_fit = project_lm(final)
        err = ((_to_five(lm_fit) if five else lm_fit) - lm2d).norm(dim=-1).mean(-1)
    lap("final_render")
    return FitResult(final, lm_fit, render, mask, losses, err, timings, display, stage_err, refined)


def _photo_camera(cam: PerspectiveCamera, images: Tensor, size: int | None) -> tuple[PerspectiveCamera, Tensor, float]:
    """Camera and (B, h, w, 3) images of the photometric stage at height ``size`` (area average),
    and the scale factor ``size / H`` (crop pixels → photometric pixels; pixel centres at +0.5 map
    exactly under it). Unchanged when ``size`` is None or not smaller than the crop."""
    h, w = images.shape[1:3]
    if size is None or size >= h or not dataclasses.is_dataclass(cam):
        return cam, images, 1.0
    f = size / h
    hw = (size, max(1, round(w * f)))
    small = F.interpolate(images.permute(0, 3, 1, 2), size=hw, mode="area").permute(0, 2, 3, 1).contiguous()
    small_cam = dataclasses.replace(cam, focal=cam.focal * f, cx=cam.cx * f, cy=cam.cy * f, image_size=hw)
    return small_cam, small, f


def _to_five(lm68: Tensor) -> Tensor:
    """(B, 68, 2) → (B, 5, 2) in Deng et al.'s 5-point order (see face3dkit.landmarks.lm68_to_lm5)."""
    from face3dkit.landmarks import lm68_to_lm5

    return lm68_to_lm5(lm68)
