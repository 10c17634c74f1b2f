"""Batch pipeline of the main job: photos → landmarks → alignment → fit → outputs (:func:`reconstruct`)."""

from face3dkit.pipeline.outputs import OUTPUT_KINDS, face_stem, write_face_outputs
from face3dkit.pipeline.run import FaceResult, Failure, ReconstructConfig, RunSummary, reconstruct, shard

__all__ = [
    "OUTPUT_KINDS",
    "FaceResult",
    "Failure",
    "ReconstructConfig",
    "RunSummary",
    "face_stem",
    "reconstruct",
    "shard",
    "write_face_outputs",
]
