"""Geometry conditioning for FER: pose, 68 normalised landmarks and a yaw-bin pose class per image
(``face3dkit.geometry`` is the camera and rotation maths; this package turns fits into conditioning).

Providers (:func:`get_provider`):

* ``3dmm`` - face3dkit's landmark-and-pose fit of the default morphable model to the 68 landmarks
  (:func:`face3dkit.fit.fit` with ``photo_iters=0``); landmarks are the fitted model's landmarks
  re-projected into the crop, pose is the fitted head rotation, and the fitted expression
  coefficients are kept too (``GeometryTable.exp``, input of the ``geometry`` FER model).
* ``landmarks`` - the 68 2D landmarks as given/detected; pose from POS (scaled orthographic) against
  the model's mean-face landmarks.
* ``none`` - no geometry (landmarks zero, pose unknown, pose class -1).

Landmarks come from the dataset when it knows them (the synthetic set's csv), otherwise from a
``face3dkit.landmarks`` detector (imported lazily). Results are cached on disk
(:class:`GeometryCache`) keyed by each sample's content hash and the provider's settings.
"""

from fer.conditioning.cache import GeometryCache, default_cache_dir
from fer.conditioning.compute import attach_geometry, compute_geometry
from fer.conditioning.providers import (
    PROVIDERS,
    GeometryProvider,
    LandmarksProvider,
    NoGeometry,
    ThreeDMMProvider,
    get_provider,
)
from fer.conditioning.table import GeometryTable

__all__ = [
    "GeometryCache",
    "GeometryProvider",
    "GeometryTable",
    "LandmarksProvider",
    "NoGeometry",
    "PROVIDERS",
    "ThreeDMMProvider",
    "attach_geometry",
    "compute_geometry",
    "default_cache_dir",
    "get_provider",
]
