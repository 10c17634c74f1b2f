"""Run folders: preparing data + geometry for training, ``run.json``, loading a trained run.

A run folder holds::

    run.json              model kind and config, geometry settings, data, image size, training config
    checkpoints/last.pt   the latest checkpoint (resume with ``fer train ... --resume``)
    model.pt              final weights
    metrics.json / .csv   per-epoch metrics
    samples/epoch_*.png   GGPI: inputs, reconstructions, re-targeted faces
    eval/<name>/          ``fer evaluate`` reports (metrics.json, confusion.png)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer.data import (
    FerDataset,
    SequenceDataset,
    SynthConfig,
    generate_synthetic,
    is_synthetic_dir,
    open_dataset,
    open_sequence_frames,
)
from fer.geometry import GeometryCache, attach_geometry, compute_geometry, default_cache_dir, get_provider
from fer.geometry.providers import GeometryUnavailableError
from fer.labels import EXPRESSIONS, YAW_BIN_EDGES, YAW_BIN_NAMES
from fer.models import FerModel, model_from_config

__all__ = [
    "PRELOAD_LIMIT_BYTES",
    "eval_split_for",
    "load_run",
    "open_for_eval",
    "prepare_data",
    "read_run_info",
    "synthetic_set",
    "write_run_info",
]

log = logging.getLogger("fer.train")

#: Datasets whose resized images fit in this many bytes are decoded into memory once.
PRELOAD_LIMIT_BYTES = 4 * 2**30


def synthetic_set(config: SynthConfig, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                  echo: Callable[[str], None] = print) -> Path:
    """Folder of the synthetic set for ``config`` under ``cache_dir/synthetic/<key>``, generated if absent."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "synthetic" / f"n{config.n}-s{config.size}-seed{config.seed}-{config.key()}"
    if is_synthetic_dir(path):
        echo(f"synthetic set: {path} (cached)")
        return path
    echo(f"synthetic set: rendering {config.n} faces at {config.size} px into {path}")
    meta = generate_synthetic(path, config, progress=progress)
    echo(f"synthetic set: {meta['counts']['train']} train / {meta['counts']['test']} test images "
         f"({meta['n_identities']} identities) in {meta['seconds']:.1f} s")
    return path


def _splits_for(path: Path) -> tuple[str | None, str | None]:
    """(train split, validation split) names for a dataset path, by format."""
    from fer.data import detect_format

    fmt = detect_format(path)
    if fmt == "synthetic":
        return "train", "test"
    if fmt == "fer2013":
        return "train", "val"
    if fmt == "rafdb":
        return "train", "test"
    has = {d.name.lower() for d in path.iterdir() if d.is_dir()}
    val = next((s for s in ("val", "validation", "test") if s in has), None)
    return ("train" if "train" in has else None), (val if "train" in has else None)


def _preload(ds: FerDataset, progress: bool) -> None:
    size = ds.image_size or 128
    if len(ds) * size * size * 3 <= PRELOAD_LIMIT_BYTES:
        ds.preload(progress=progress)


def prepare_data(data: str | os.PathLike, image_size: int, geometry: str, val_data: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, landmark_iters: int = 150, progress: bool = True,
                 echo: Callable[[str], None] = print, sequence_length: int = 0,
                 ) -> tuple[Any, Any, dict[str, Any]]:
    """Open train/validation datasets, decode images into memory, and attach geometry.

    Args:
        data: dataset path (any format of :func:`fer.data.open_dataset`).
        image_size: training image side.
        geometry: provider name (``3dmm``, ``landmarks``, ``none``).
        val_data: validation dataset (default: the held-out split of ``data`` when it has one).
        cache_dir: geometry cache root (default :func:`fer.geometry.default_cache_dir`).
        landmark_iters: steps of the 3dmm landmark fit.
        sequence_length: > 0: every frame is loaded (geometry per frame) and the sets are
            :class:`fer.data.SequenceDataset` of that many frames (MGLN).

    Returns:
        train set, validation set (or None), and a description for ``run.json``.
    """
    path = Path(data)
    train_split, val_split = _splits_for(path)
    opener = open_sequence_frames if sequence_length > 0 else open_dataset
    train = opener(path, split=train_split, image_size=image_size)
    if val_data is not None:
        val: FerDataset | None = opener(val_data, split=None, image_size=image_size)
    elif val_split is not None:
        val = opener(path, split=val_split, image_size=image_size)
    else:
        val = None
    provider = get_provider(geometry, landmark_iters=landmark_iters)
    cache = GeometryCache(cache_dir)
    info: dict[str, Any] = {"path": str(path), "train_split": train_split, "val_split": val_split,
                            "val_data": None if val_data is None else str(val_data), "geometry": provider.settings()}
    for name, ds in (("train", train), ("val", val)):
        if ds is None:
            continue
        _preload(ds, progress)
        t0 = time.perf_counter()
        table = compute_geometry(ds, provider, cache, progress=progress)
        attach_geometry(ds, table)
        st = table.stats
        geo = "" if geometry == "none" else (f"; geometry {geometry}: {st['computed']} computed, {st['cached']} "
                                             f"cached, {st['failed']} without landmarks "
                                             f"({time.perf_counter() - t0:.1f} s)")
        echo(f"{name}: {ds.report.summary()}{geo}")
        info[name] = {"samples": len(ds), "skipped": ds.report.skipped, "class_counts": ds.class_counts().tolist(),
                      "geometry_stats": st}
    if sequence_length > 0:
        info["sequence_length"] = int(sequence_length)
        seqs = [None if ds is None else SequenceDataset(ds, sequence_length) for ds in (train, val)]
        for name, sq in zip(("train", "val"), seqs, strict=True):
            if sq is not None:
                info[name].update(frames=info[name]["samples"], samples=len(sq),
                                  class_counts=sq.class_counts().tolist())
                echo(f"{name}: {len(sq)} sequences of {sequence_length} frames "
                     f"(from {len(sq.frames)} frames; {int((sq.lengths < sequence_length).sum())} shorter, repeated)")
        return seqs[0], seqs[1], info
    return train, val, info


def write_run_info(out: str | os.PathLike, model: FerModel, profile: str, image_size: int, data: dict[str, Any],
                   train_config: Any) -> Path:
    """Write ``run.json`` (atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "format": "fer-run-v1",
        "model": model.kind,
        "model_config": asdict(model.config),
        "profile": profile,
        "image_size": image_size,
        "labels": list(EXPRESSIONS),
        "yaw_bins": {"edges": list(YAW_BIN_EDGES), "names": list(YAW_BIN_NAMES)},
        "data": data,
        "train": asdict(train_config),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    tmp = out / ".run.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out / "run.json")
    return out / "run.json"


def read_run_info(run: str | os.PathLike) -> dict[str, Any]:
    """``run.json`` of a run folder."""
    p = Path(run) / "run.json"
    if not p.is_file():
        raise FileNotFoundError(f"{run}: not a fer run folder (no run.json)")
    try:
        info = json.loads(p.read_text())
    except ValueError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if info.get("format") != "fer-run-v1":
        raise ValueError(f"{p}: not a fer run description")
    return info


def load_run(run: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FerModel, dict[str, Any]]:
    """The trained model of a run (``model.pt``, else the latest checkpoint), in eval mode, and ``run.json``."""
    info = read_run_info(run)
    model = model_from_config(info["model"], {**info["model_config"], "backbone_weights": None})
    weights = Path(run) / "model.pt"
    ckpt = Path(run) / "checkpoints" / "last.pt"
    if weights.is_file():
        state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    elif ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    else:
        raise FileNotFoundError(f"{run}: no model.pt or checkpoints/last.pt (training has not saved anything yet)")
    model.load_state_dict(state)
    return model.to(device).eval(), info


def eval_split_for(path: str | os.PathLike) -> str | None:
    """Default split to evaluate on: the held-out split of the format (synthetic test, FER2013 PrivateTest...)."""
    from fer.data import detect_format

    p = Path(path)
    fmt = detect_format(p)
    if fmt in ("synthetic", "rafdb"):
        return "test"
    if fmt == "fer2013":
        return "test"
    has = {d.name.lower() for d in p.iterdir() if d.is_dir()}
    return "test" if "test" in has and "train" in has else None


def open_for_eval(path: str | os.PathLike, info: dict[str, Any], split: str | None = "auto",
                  cache_dir: str | os.PathLike | None = None, progress: bool = False) -> Any:
    """A dataset for evaluating a run: its image size; geometry (for the yaw bins) when the run used some;
    a :class:`fer.data.SequenceDataset` for sequence models (``run.json`` data ``sequence_length``)."""
    sp = eval_split_for(path) if split == "auto" else split
    steps = int(info.get("data", {}).get("sequence_length", 0) or 0)
    opener = open_sequence_frames if steps > 0 else open_dataset
    ds = opener(path, split=sp, image_size=int(info["image_size"]))
    geo = info.get("data", {}).get("geometry", {}).get("provider", "none")
    # Sequence models crop parts at the landmarks: they need geometry even where the pose is known.
    if geo != "none" and len(ds) and (steps > 0 or np.isnan(ds.true_pose[:, 0]).any()):
        settings = info["data"]["geometry"]
        provider = get_provider(geo, **({"landmark_iters": settings["landmark_iters"]}
                                        if "landmark_iters" in settings else {}))
        try:
            attach_geometry(ds, compute_geometry(ds, provider, GeometryCache(cache_dir), progress=progress))
        except GeometryUnavailableError as e:
            if steps > 0:
                raise
            log.warning("no per-yaw accuracy: %s", e)
    return SequenceDataset(ds, steps) if steps > 0 else ds
