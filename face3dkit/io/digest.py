"""Content digests of files and tensors (run settings, caches and provenance record them), and
the per-user cache folder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["file_sha256", "tensors_sha256", "user_cache_dir"]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 hex digest of named tensors in the given order: each ``name|dtype|shape|`` then the
    raw bytes (bfloat16 as float32), so a renamed, reshaped or retyped tensor changes it."""
    h = hashlib.sha256()
    for name, t in named:
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()


def user_cache_dir(app: str, env_var: str) -> Path:
    """``$<env_var>``, else ``$XDG_CACHE_HOME/<app>``, else ``~/.cache/<app>``."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / app
