"""Jaw-contour landmark marching: move the self-occluded contour landmarks onto the silhouette.

A 2D landmark detector (dlib, the iBUG 300-W annotation convention, Deng et al.'s detections)
puts the 17 jaw-contour points (0-based 0-16) on the *visible* outline of the cheek and jaw. When
the head turns, the outline on the side that turns away is no longer the set of vertices that
formed it in the frontal view: it slides towards the nose over the cheek. A morphable model with
fixed contour vertices then pulls the yaw towards frontal. Landmark marching (Zhu et al., "High-
Fidelity Pose and Expression Normalization for Face Recognition in the Wild", CVPR 2015; also
3DDFA) fixes this by giving each contour landmark a *line* of candidate vertices across the cheek
and, for the current pose, taking the candidate that lies on the silhouette, i.e. the one that
projects farthest outwards.

Only the contour points of the side turned away from the camera march; the side turned towards
the camera and the chin under a pure yaw keep their fixed vertices. All operations are batched; the
candidate choice is an argmax (no gradient), the chosen vertex positions carry the gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from face3dkit.geometry import PerspectiveCamera

__all__ = ["ContourCandidates", "contour_candidates", "contour_sliding_fn", "march_contour", "marched_landmarks"]

#: 0-based jaw-contour landmarks (all of them may march; which ones do depends on the pose).
MARCHING_POINTS = tuple(range(17))


@dataclass
class ContourCandidates:
    """Candidate vertex lines of the marching contour landmarks.

    Attributes:
        points: (P,) long, 0-based landmark numbers (into the 68) that may march.
        idx: (P, K) long, candidate vertex indices per landmark (padded with the landmark's own
            vertex, so padding never wins over a real candidate farther out).
        outward: (P, 3) unit outward normal of the frontal contour at each landmark, in the
            model's xy plane (z = 0).
    """

    points: Tensor
    idx: Tensor
    outward: Tensor


def contour_candidates(mean_shape: Tensor, landmark_idx: Tensor, band: float = 0.035,
                       inner: float = 0.4, max_candidates: int = 256, mask: Tensor | None = None) -> ContourCandidates:
    """Lines of candidate vertices for the jaw-contour landmarks of a model.

    The frontal contour is the polyline of the 17 landmark vertices in the model's xy plane
    (y up, z towards the camera at zero pose). At landmark ``i`` (vertex ``v_i``) it has the unit
    tangent ``t_i`` (central difference) and the outward normal ``n_i`` (pointing away from the
    centroid of the 68 landmarks). The candidates are the vertices ``p`` with
    ``|(p - v_i) . t_i| <= band * d`` and ``-(1 - inner) * h_i <= (p - v_i) . n_i <= 0``, where
    ``d`` is the outer-eye-corner distance (36-45) and ``h_i = (v_i - centroid) . n_i``: a strip
    across the cheek (horizontal at the sides, vertical at the chin) from the landmark inwards,
    the way the silhouette moves when that part of the face turns away. The landmark's own
    vertex is always a candidate.

    Args:
        mean_shape: (N, 3) model vertices.
        landmark_idx: (68,) landmark vertex indices.
        band: half-width of the strip as a fraction of the outer-eye-corner distance.
        inner: the strip reaches from the landmark to this fraction of its distance from the
            landmark centroid.
        max_candidates: keep at most this many per line (evenly spaced along the normal).
        mask: optional (N,) bool, the vertices that may be candidates (the skin surface: a model
            with eyeballs, teeth or a mouth interior passes ``model.region_mask('face')``, so no
            inner geometry is ever taken for the silhouette).

    Returns:
        :class:`ContourCandidates` on ``mean_shape``'s device.
    """
    if landmark_idx.numel() != 68:
        raise ValueError(f"contour marching needs the 68-point landmark layout, got {landmark_idx.numel()} points")
    v = mean_shape.detach()
    lm = v[landmark_idx]
    eye = float((lm[36] - lm[45]).norm())
    centre = lm[:, :2].mean(0)
    contour = lm[:17, :2]
    tang = torch.cat([contour[1:2] - contour[0:1], contour[2:] - contour[:-2], contour[-1:] - contour[-2:-1]])
    tang = tang / tang.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normal = torch.stack([tang[:, 1], -tang[:, 0]], -1)
    normal = normal * torch.sign(((contour - centre) * normal).sum(-1, keepdim=True))  # outwards
    lines = []
    for p in MARCHING_POINTS:
        rel = v[:, :2] - contour[p]
        along, across = rel @ tang[p], rel @ normal[p]
        depth = (1 - inner) * float((contour[p] - centre) @ normal[p])
        keep = (along.abs() <= band * eye) & (across <= 0) & (across >= -depth)
        if mask is not None:
            keep &= mask.to(keep.device)
        cand = torch.nonzero(keep).flatten()
        if cand.numel() > max_candidates:  # thin evenly along the normal
            order = torch.argsort(across[cand])
            pick = torch.linspace(0, cand.numel() - 1, max_candidates, device=cand.device).round().long()
            cand = cand[order[pick]]
        own = landmark_idx[p:p + 1]
        lines.append(torch.cat([own, cand[cand != own]]))
    k = max(len(line) for line in lines)
    idx = torch.stack([torch.cat([line, line[:1].expand(k - len(line))]) for line in lines])
    outward = torch.cat([normal, torch.zeros_like(normal[:, :1])], -1)[list(MARCHING_POINTS)]
    dev = mean_shape.device
    return ContourCandidates(torch.tensor(MARCHING_POINTS, device=dev, dtype=torch.long), idx.to(dev),
                             outward.to(mean_shape.dtype))


def march_contour(cand: ContourCandidates, rotation: Tensor, cand_proj: Tensor) -> Tensor:
    """Choose, per face and contour landmark, the candidate vertex on the silhouette.

    Args:
        cand: the candidate lines.
        rotation: (B, 3, 3) head rotations (row-vector convention ``v @ R.T``).
        cand_proj: (B, P, K, 2) projections of the candidates, pixels (x right, y down).

    Returns:
        (B, P) long: vertex index chosen for each landmark: the candidate that projects farthest
        along the image direction of its rotated outward normal ``R n_i`` when that normal points
        away from the camera (``(R n_i)_z < 0``, camera on +z); the landmark's own vertex otherwise.
    """
    out3 = torch.einsum("bij,pj->bpi", rotation, cand.outward)  # (B, P, 3) rotated outward normals
    d2 = torch.stack([out3[..., 0], -out3[..., 1]], -1)  # image direction (y down)
    d2 = d2 / d2.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    best = (cand_proj * d2[:, :, None, :]).sum(-1).argmax(-1)  # (B, P)
    away = out3[..., 2] < -1e-6
    best = torch.where(away, best, torch.zeros_like(best))
    return torch.gather(cand.idx.expand(best.shape[0], -1, -1), 2, best[..., None])[..., 0]


def marched_landmarks(verts_world: Tensor, landmark_idx: Tensor, rotation: Tensor, camera: PerspectiveCamera,
                      cand: ContourCandidates) -> Tensor:
    """(B, 68, 2) projected landmarks with the self-occluded contour marched to the silhouette.

    Args:
        verts_world: (B, N, 3) posed vertices (camera-aligned world frame).
        landmark_idx: (68,) landmark vertex indices.
        rotation: (B, 3, 3) head rotations.
        camera: the perspective camera.
        cand: :func:`contour_candidates` of the model.
    """
    b = verts_world.shape[0]
    flat = cand.idx.flatten()
    with torch.no_grad():  # the choice is discrete: no graph for the candidates
        cw = verts_world.index_select(1, flat).view(b, *cand.idx.shape, 3)
        chosen = march_contour(cand, rotation, camera.project(cw))
    idx = landmark_idx.expand(b, -1).clone()
    idx[:, cand.points] = chosen
    pts = torch.gather(verts_world, 1, idx[..., None].expand(-1, -1, 3))
    return camera.project(pts)


def contour_sliding_fn(target: Tensor, tangent_weight: float) -> Callable[[Tensor], Tensor]:
    """Map predicted landmarks so the landmark loss sees contour residuals mostly along the normal.

    For the jaw-contour points (0-16) of ``target`` (B, 68, 2) the unit tangent ``t`` of the
    detected polyline (central differences) and normal ``n`` are fixed; a prediction ``p`` with
    residual ``r = p - target`` is replaced by ``target + (r . n) n + w (r . t) t``, so the squared
    distance becomes ``(r . n)^2 + w^2 (r . t)^2``. Other points are unchanged. Differentiable in ``p``.
    """
    c = target[:, :17]
    tang = torch.cat([c[:, 1:2] - c[:, 0:1], c[:, 2:] - c[:, :-2], c[:, -1:] - c[:, -2:-1]], 1)
    tang = tang / tang.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    normal = torch.stack([-tang[..., 1], tang[..., 0]], -1)

    def apply(pred: Tensor) -> Tensor:
        r = pred[:, :17] - c
        rn = (r * normal).sum(-1, keepdim=True) * normal
        rt = (r * tang).sum(-1, keepdim=True) * tang
        return torch.cat([c + rn + tangent_weight * rt, pred[:, 17:]], 1)

    return apply
