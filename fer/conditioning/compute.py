"""Geometry of a whole dataset through the cache, and attaching it to the dataset's samples."""

from __future__ import annotations

from typing import Any

import numpy as np

from fer.conditioning.cache import GeometryCache
from fer.conditioning.providers import GeometryProvider
from fer.conditioning.table import GeometryTable

__all__ = ["compute_geometry", "attach_geometry"]


def compute_geometry(dataset: Any, provider: GeometryProvider, cache: GeometryCache | None = None,
                     progress: bool = False, chunk: int = 512) -> GeometryTable:
    """Geometry of every sample of ``dataset``, computing only what the cache lacks.

    Args:
        dataset: a :class:`fer.data.FerDataset`.
        provider: the geometry provider.
        cache: on-disk cache (None: compute everything, store nothing).
        progress: tqdm bar over the samples to compute.
        chunk: samples computed (and stored) per step, so an interrupted run keeps its work.

    Returns:
        A table aligned with the dataset, ``stats = {'provider', 'cached', 'computed', 'failed'}``.
    """
    n = len(dataset)
    if not provider.cacheable:
        table = provider.compute(dataset, list(range(n)))
        table.stats = {"provider": provider.name, "cached": 0, "computed": n, "failed": int((~table.valid).sum())}
        return table
    settings = provider.settings()
    keys = [dataset.content_key(i) for i in range(n)]
    if cache is not None:
        found, table = cache.lookup(keys, settings)
    else:
        found, table = np.zeros(n, bool), GeometryTable.empty(n)
    todo = np.flatnonzero(~found).tolist()
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"geometry ({provider.name})", unit="img", disable=not progress or not todo)
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        sub = provider.compute(dataset, part)
        table.put(part, sub)
        if cache is not None:
            cache.store([keys[i] for i in part], sub, settings)
        bar.update(len(part))
    bar.close()
    table.stats = {"provider": provider.name, "cached": int(found.sum()), "computed": len(todo),
                   "failed": int((~table.valid).sum())}
    if table.exp is not None:
        table.exp_mirror = provider.exp_mirror()
    return table


def attach_geometry(dataset: Any, table: GeometryTable) -> None:
    """Make ``dataset`` samples carry ``landmarks``, ``geom_pose`` and ``pose_class`` from ``table``."""
    if len(table) != len(dataset):
        raise ValueError(f"geometry has {len(table)} rows for a dataset of {len(dataset)} samples")
    dataset.geometry = table
