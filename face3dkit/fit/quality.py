"""Is a fit good enough to report? Fitted-vs-given landmark agreement, pose and prior checks.

A fit is only as good as the landmarks it explains. :func:`assess_fit` compares the fitted model
landmarks with the landmarks they were fitted to (detected, or read from a file) and marks the
face ``'poor_fit'`` (with a one-line reason) when any of these holds (:class:`QualityThresholds`):

* **landmark residual**: the NME (mean point distance / normaliser, see :func:`landmark_nme`)
  is above ``max_nme`` (default 0.10), or some point is farther than ``max_point_error``
  (default 0.5) normalisers from its fitted position — the given landmarks are not a face the
  model can explain (a detector failure, a wrong file, gross outliers that the robust loss
  rejected);
* **implausible pose**: ``|yaw| > max_abs_yaw`` (100°) or ``|pitch| > max_abs_pitch`` (70°);
* **implausible identity**: some identity coefficient beyond ``max_abs_id`` (5) prior standard
  deviations (the models' identity coefficients are N(0, 1) under the prior).

The normaliser is the inter-ocular distance of the **given** landmarks: outer eye corners 36-45
for 68 points (the 300-W convention), eye centres for Deng et al.'s 5 points (about 0.75 of the
corner distance, so the same thresholds are slightly stricter there), falling back to the
diagonal of the given landmarks' bounding box when the eyes coincide (< 1 px apart). The eyes are
used rather than the box because the box of corrupted landmarks is corrupted too.

On the synthetic benchmark (``benchmarks/reconstruct.py``) good fits measure NME 0.01 with the
true landmarks and ~0.03-0.05 with dlib detections; 17 jaw points 2000 px off give NME > 10.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["FitQuality", "QualityThresholds", "STATUS_OK", "STATUS_POOR", "assess_fit", "landmark_nme",
           "landmark_normaliser"]

STATUS_OK = "ok"
STATUS_POOR = "poor_fit"


@dataclass(frozen=True)
class QualityThresholds:
    """Limits of :func:`assess_fit` (see the module docstring).

    Attributes:
        max_nme: mean fitted-vs-given landmark distance, in inter-ocular distances.
        max_point_error: largest single-point distance, in inter-ocular distances.
        max_abs_yaw, max_abs_pitch: degrees.
        max_abs_id: identity coefficients, prior standard deviations.
    """

    max_nme: float = 0.10
    max_point_error: float = 0.5
    max_abs_yaw: float = 100.0
    max_abs_pitch: float = 70.0
    max_abs_id: float = 5.0


class FitQuality(NamedTuple):
    """Result of :func:`assess_fit`: ``status`` (``'ok'`` / ``'poor_fit'``), ``reason`` ('' when
    ok, else the failed checks joined by ``'; '``) and ``metrics`` (floats, JSON-ready)."""

    status: str
    reason: str
    metrics: dict[str, float]


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def landmark_normaliser(given: Tensor) -> Tensor:
    """(B, K, 2) given landmarks (K = 68 or 5) → (B,) inter-ocular distance in their pixels
    (68: outer eye corners 36-45; 5: eye centres 0-1), or the bounding-box diagonal where the
    eyes are < 1 px apart."""
    if given.shape[-2] == 68:
        iod = (given[..., 36, :] - given[..., 45, :]).norm(dim=-1)
    elif given.shape[-2] == 5:
        iod = (given[..., 0, :] - given[..., 1, :]).norm(dim=-1)
    else:
        raise ValueError(f"landmark quality: expected 68 or 5 landmarks, got {given.shape[-2]}")
    box = (given.amax(-2) - given.amin(-2)).norm(dim=-1)
    return torch.where(iod >= 1.0, iod, box.clamp_min(1e-6))


def landmark_nme(fitted: Tensor | np.ndarray, given: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Normalised fitted-vs-given landmark error.

    Args:
        fitted: (B, K, 2) or (K, 2) fitted model landmarks, pixels.
        given: the same shape: the landmarks they were fitted to, same pixels.

    Returns:
        (B,) NME (mean point distance / :func:`landmark_normaliser`) and (B,) largest point
        distance in the same units (no batch dimension for (K, 2) inputs).
    """
    f, g = _as_tensor(fitted).double(), _as_tensor(given).double()
    if f.shape != g.shape or f.shape[-1] != 2 or f.dim() not in (2, 3):
        raise ValueError(f"landmark quality: fitted and given must be (B, K, 2) or (K, 2), got {tuple(f.shape)} "
                         f"and {tuple(g.shape)}")
    one = f.dim() == 2
    if one:
        f, g = f[None], g[None]
    norm = landmark_normaliser(g)
    d = (f - g).norm(dim=-1) / norm[:, None]
    nme, worst = d.mean(-1), d.amax(-1)
    return (nme[0], worst[0]) if one else (nme, worst)


def assess_fit(fitted: Tensor | np.ndarray, given: Tensor | np.ndarray, pose_deg: tuple[float, float, float],
               id_coeff: Tensor | np.ndarray, thresholds: QualityThresholds | None = None) -> FitQuality:
    """Status of one fitted face (see the module docstring); pure, no side effects.

    Args:
        fitted: (K, 2) fitted model landmarks (K = 68, or 5 when 5 points were given), pixels.
        given: (K, 2) the landmarks they were fitted to, same pixels.
        pose_deg: (yaw, pitch, roll) degrees.
        id_coeff: (n_id,) or (1, n_id) identity coefficients (prior standard deviations).
        thresholds: :class:`QualityThresholds` (defaults when None).

    Returns:
        :class:`FitQuality` with metrics ``landmark_nme``, ``landmark_max_error`` (inter-ocular
        distances), ``landmark_outliers`` (points beyond ``max_point_error``), ``max_abs_id``.
    """
    t = thresholds or QualityThresholds()
    f, g = _as_tensor(fitted).double(), _as_tensor(given).double()
    if f.dim() != 2:
        raise ValueError(f"assess_fit: expected (K, 2) landmarks of one face, got {tuple(f.shape)}")
    if f.shape != g.shape or f.shape[-1] != 2:
        raise ValueError(f"assess_fit: fitted and given must both be (K, 2), got {tuple(f.shape)} and {tuple(g.shape)}")
    dist = (f - g).norm(dim=-1) / landmark_normaliser(g[None])[0]
    nme, worst = float(dist.mean()), float(dist.max())
    outliers = int((dist > t.max_point_error).sum())
    max_id = float(_as_tensor(id_coeff).double().abs().max()) if _as_tensor(id_coeff).numel() else 0.0
    yaw, pitch = float(pose_deg[0]), float(pose_deg[1])
    reasons = []
    if not math.isfinite(nme) or nme > t.max_nme:
        reasons.append(f"landmark NME {nme:.3g} > {t.max_nme:g} inter-ocular")
    if outliers:
        reasons.append(f"{outliers} of {f.shape[0]} landmarks > {t.max_point_error:g} inter-ocular off "
                       f"(worst {worst:.3g})")
    if not math.isfinite(yaw) or abs(yaw) > t.max_abs_yaw:
        reasons.append(f"|yaw| {abs(yaw):.1f} > {t.max_abs_yaw:g} deg")
    if not math.isfinite(pitch) or abs(pitch) > t.max_abs_pitch:
        reasons.append(f"|pitch| {abs(pitch):.1f} > {t.max_abs_pitch:g} deg")
    if not math.isfinite(max_id) or max_id > t.max_abs_id:
        reasons.append(f"identity coefficient {max_id:.2f} > {t.max_abs_id:g} sigma")
    metrics = {"landmark_nme": nme, "landmark_max_error": worst, "landmark_outliers": outliers,
               "max_abs_id": max_id}
    return FitQuality(STATUS_POOR if reasons else STATUS_OK, "; ".join(reasons), metrics)
