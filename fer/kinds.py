"""Torch-free names of the FER models and the geometry each trains with by default (read by the
``fer`` command's ``--help`` and by :func:`fer.train.api.run_training`; ``fer.models.REGISTRY`` holds
the classes, and a test keeps the two lists equal)."""

__all__ = ["DEFAULT_GEOMETRY", "MODEL_KINDS"]

#: Model kinds of ``fer train --model`` (:data:`fer.models.MODELS`).
MODEL_KINDS = ("ggpi", "baseline", "geometry", "tdgan", "drgan", "mgln")
#: Geometry used when a run names none (TDGAN reads none; DR-GAN's pose codes come from the 3dmm yaw;
#: MGLN places its part crops at the fitted landmarks).
DEFAULT_GEOMETRY = {"ggpi": "3dmm", "baseline": "none", "geometry": "3dmm", "tdgan": "none", "drgan": "3dmm",
                    "mgln": "3dmm"}
