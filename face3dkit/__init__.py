"""face3dkit: differentiable 3D face reconstruction in PyTorch.

Quick start::

    import face3dkit
    model = face3dkit.load_model("default")          # or a BFM_model_front.mat / .npz path
    c = model.sample(4)                              # Coefficients (id, exp, tex, angles, gamma, trans)
    out = model(c, camera=face3dkit.PerspectiveCamera())
    out.verts_world, out.color, out.landmarks2d      # (4, N, 3), (4, N, 3), (4, 68, 2)
"""

from face3dkit.geometry import PerspectiveCamera, WeakPerspectiveCamera
from face3dkit.model import (
    CoefficientLayout,
    Coefficients,
    FaceOutput,
    ModelFileError,
    MorphableModel,
    load_model,
    save_model,
)

__version__ = "0.1.0"


def reconstruct(*args, **kwargs):  # noqa: ANN002, ANN003 - thin lazy wrapper
    """Reconstruct faces from photos; see :func:`face3dkit.pipeline.reconstruct`."""
    from face3dkit.pipeline.run import reconstruct as _reconstruct

    return _reconstruct(*args, **kwargs)

__all__ = [
    "Coefficients",
    "CoefficientLayout",
    "FaceOutput",
    "ModelFileError",
    "MorphableModel",
    "PerspectiveCamera",
    "WeakPerspectiveCamera",
    "load_model",
    "reconstruct",
    "save_model",
    "__version__",
]
