"""Checkpoint reading and strict, one-line-error state_dict loading shared by the ``nets`` modules.

The public entry point is :func:`load_checked_state_dict`; every loader in :mod:`face3dkit.nets`
(``load_iresnet``, ``load_torchvision_weights``) goes through it so that a checkpoint that does
not fit the model fails with a single line naming the file and the mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = [
    "CheckpointMismatchError",
    "read_state_dict",
    "state_dict_mismatch",
    "load_checked_state_dict",
]

# Keys that a checkpoint may legitimately lack: BatchNorm's step counter is absent from very old
# PyTorch checkpoints and is never used in eval mode.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)
_MAX_LISTED = 4


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or tensor shapes do not fit the model (message is one line)."""


def _fmt_keys(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    more = len(keys) - _MAX_LISTED
    return f"({len(keys)}) [{shown}{f', ... (+{more} more)' if more > 0 else ''}]"


def read_state_dict(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> dict[str, torch.Tensor]:
    """Read a plain ``state_dict`` saved with ``torch.save``.

    Accepts a bare ``{name: tensor}`` mapping (what insightface's ``backbone.pth`` and
    torchvision's ``*.pth`` files are) and, leniently, a dict wrapping it under ``"state_dict"``
    or ``"model"``. A ``"module."`` prefix left by ``nn.DataParallel`` is stripped. Only tensors
    are read (``weights_only=True``): no code in the file is executed.

    Raises:
        CheckpointMismatchError: the file does not hold a mapping of tensors (one-line message).
        FileNotFoundError: ``path`` does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised as a one-line error naming the file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointMismatchError(f"{path}: cannot read checkpoint ({msg})") from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatchError(
            f"{path}: not a state_dict (expected a mapping of parameter names to tensors, "
            f"got {type(obj).__name__})"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        out[key[len("module."):] if key.startswith("module.") else key] = value
    return out


def state_dict_mismatch(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], ignore: Iterable[str] = ()
) -> str | None:
    """Describe how ``state_dict`` fails to fit ``model`` in one line, or return ``None``.

    Args:
        model: the target module.
        state_dict: the candidate tensors.
        ignore: key prefixes excluded from the comparison on both sides (e.g. ``("fc.",)``).
    """
    ignore = tuple(ignore)

    def kept(k: str) -> bool:
        return not (ignore and k.startswith(ignore))

    expected = {k: v for k, v in model.state_dict().items() if kept(k)}
    given = {k: v for k, v in state_dict.items() if kept(k)}
    missing = [k for k in expected if k not in given and not k.endswith(_OPTIONAL_SUFFIXES)]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in given and tuple(given[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {_fmt_keys(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_fmt_keys(unexpected)}")
    if shapes:
        parts.append(f"shape mismatch {_fmt_keys(shapes)}")
    return "; ".join(parts) if parts else None


def load_checked_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    what: str,
    ignore: Iterable[str] = (),
) -> nn.Module:
    """Load ``state_dict`` into ``model`` after checking keys and shapes; returns ``model``.

    Args:
        model: the target module (modified in place).
        state_dict: tensors to load.
        source: where the tensors came from (file path), used in the error message.
        what: a short name of the architecture, used in the error message (e.g. ``"iresnet r50"``).
        ignore: key prefixes that are neither required nor loaded (e.g. ``("fc.",)`` to keep a
            freshly initialised classifier head).

    Raises:
        CheckpointMismatchError: one line, ``"<source>: checkpoint does not fit <what>: ..."``.
    """
    ignore = tuple(ignore)
    problem = state_dict_mismatch(model, state_dict, ignore)
    if problem is not None:
        raise CheckpointMismatchError(f"{source}: checkpoint does not fit {what}: {problem}")
    to_load = {k: v for k, v in state_dict.items() if not (ignore and k.startswith(ignore))}
    try:
        model.load_state_dict(to_load, strict=not ignore)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[1:2] or lines[:1])
        raise CheckpointMismatchError(f"{source}: cannot load into {what}: {detail}") from exc
    return model
