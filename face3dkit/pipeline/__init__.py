"""Batch pipeline of the main job: photos → landmarks → alignment → fit → outputs (:func:`reconstruct`)."""

from face3dkit.pipeline.outputs import OUTPUT_KINDS, face_stem, output_folders, read_marker, write_face_outputs
from face3dkit.pipeline.run import (
    SUMMARY_COLUMNS,
    FaceResult,
    Failure,
    ReconstructConfig,
    RunSummary,
    face_settings,
    reconstruct,
    settings_fingerprint,
    shard,
)

__all__ = [
    "OUTPUT_KINDS",
    "SUMMARY_COLUMNS",
    "FaceResult",
    "Failure",
    "ReconstructConfig",
    "RunSummary",
    "face_settings",
    "face_stem",
    "output_folders",
    "read_marker",
    "reconstruct",
    "settings_fingerprint",
    "shard",
    "write_face_outputs",
]
