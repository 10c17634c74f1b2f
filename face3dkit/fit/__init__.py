"""Fitting: analysis-by-synthesis optimisation of morphable-model coefficients."""

from face3dkit.align.arcface import ARCFACE_TEMPLATE, arcface_matrix
from face3dkit.fit.fitter import (
    LANDMARK_CONVENTIONS,
    FitConfig,
    FitResult,
    fit,
    fit_landmark_weights,
    fit_landmarks,
    init_pose_from_landmarks,
    render_coefficients,
)
from face3dkit.fit.quality import (
    STATUS_OK,
    STATUS_POOR,
    FitQuality,
    QualityThresholds,
    assess_fit,
    landmark_nme,
    landmark_normaliser,
)
from face3dkit.geometry import yaw_pitch_roll_degrees

__all__ = [
    "ARCFACE_TEMPLATE",
    "FitConfig",
    "FitResult",
    "FitQuality",
    "QualityThresholds",
    "STATUS_OK",
    "STATUS_POOR",
    "assess_fit",
    "landmark_nme",
    "landmark_normaliser",
    "arcface_matrix",
    "fit",
    "fit_landmark_weights",
    "fit_landmarks",
    "LANDMARK_CONVENTIONS",
    "init_pose_from_landmarks",
    "render_coefficients",
    "yaw_pitch_roll_degrees",
]
