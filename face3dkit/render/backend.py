"""Rasterizer backend selection.

Two backends produce the same :class:`~face3dkit.render.Fragments`:

* ``"torch"`` (default): pure PyTorch, vectorised, CPU and CUDA, any floating dtype.
* ``"pytorch3d"``: PyTorch3D's CUDA/C++ rasterizer (imported lazily; float32 only).

The backend is chosen, in order of precedence, by the ``backend=`` argument of
:func:`~face3dkit.render.rasterize` / :class:`~face3dkit.render.MeshRenderer`, by the environment
variable ``FACE3DKIT_RENDER_BACKEND``, and otherwise ``"torch"``. ``"auto"`` means
``"pytorch3d"`` when it imports and ``"torch"`` otherwise.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["BACKENDS", "ENV_VAR", "available_backends", "get_backend", "pytorch3d_available"]

#: Names accepted by ``backend=`` (besides ``"auto"``).
BACKENDS: tuple[str, ...] = ("torch", "pytorch3d")
#: Environment variable consulted when no ``backend=`` argument is given.
ENV_VAR = "FACE3DKIT_RENDER_BACKEND"

_P3D_AVAILABLE: bool | None = None


def pytorch3d_available() -> bool:
    """True when ``pytorch3d.renderer`` imports (the result is cached)."""
    global _P3D_AVAILABLE
    if _P3D_AVAILABLE is None:
        try:
            importlib.import_module("pytorch3d.renderer.mesh.rasterize_meshes")
            importlib.import_module("pytorch3d.structures")
            _P3D_AVAILABLE = True
        except Exception:  # ImportError, or a broken binary build (OSError, RuntimeError)
            _P3D_AVAILABLE = False
    return _P3D_AVAILABLE


def available_backends() -> list[str]:
    """Backends usable in this environment, e.g. ``["torch"]`` or ``["torch", "pytorch3d"]``."""
    return [b for b in BACKENDS if b == "torch" or pytorch3d_available()]


def get_backend(name: str | None = None) -> str:
    """Resolve a backend name.

    Args:
        name: ``"torch"``, ``"pytorch3d"``, ``"auto"`` or None (then ``$FACE3DKIT_RENDER_BACKEND``,
            then ``"torch"``). Case-insensitive.

    Returns:
        ``"torch"`` or ``"pytorch3d"``.

    Raises:
        ValueError: unknown name.
        ImportError: ``"pytorch3d"`` requested explicitly but PyTorch3D does not import.
    """
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip() or "torch"
    key = name.strip().lower()
    if key == "auto":
        return "pytorch3d" if pytorch3d_available() else "torch"
    if key not in BACKENDS:
        raise ValueError(f"unknown render backend {name!r}; expected one of {BACKENDS + ('auto',)}")
    if key == "pytorch3d" and not pytorch3d_available():
        raise ImportError(
            "render backend 'pytorch3d' requested but pytorch3d does not import; "
            f"install it or use backend='torch' (or unset {ENV_VAR})"
        )
    return key
