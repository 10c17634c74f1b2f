"""Fitting: analysis-by-synthesis optimisation of morphable-model coefficients."""

from face3dkit.fit.fitter import (
    ARCFACE_TEMPLATE,
    FitConfig,
    FitResult,
    arcface_matrix,
    fit,
    init_pose_from_landmarks,
    render_coefficients,
    yaw_pitch_roll_degrees,
)

__all__ = [
    "ARCFACE_TEMPLATE",
    "FitConfig",
    "FitResult",
    "arcface_matrix",
    "fit",
    "init_pose_from_landmarks",
    "render_coefficients",
    "yaw_pitch_roll_degrees",
]
