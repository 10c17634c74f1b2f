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

from face3dkit.io.atomic import atomic_write_text
from fer.conditioning import GeometryCache, attach_geometry, compute_geometry, default_cache_dir, get_provider
from fer.conditioning.providers import GeometryUnavailableError
from fer.data import (
    FerDataset,
    SequenceDataset,
    SynthConfig,
    generate_synthetic,
    holdout_subjects,
    is_synthetic_dir,
    open_dataset,
    open_sequence_frames,
)
from fer.labels import EXPRESSIONS, YAW_BIN_EDGES, YAW_BIN_NAMES
from fer.models import FerModel, model_from_config, without_weights

__all__ = [
    "PRELOAD_LIMIT_BYTES",
    "RUN_FILES",
    "clear_run",
    "eval_split_for",
    "geometry_overrides",
    "images_batch",
    "load_run",
    "open_for_eval",
    "prepare_data",
    "describe_weights",
    "read_run_info",
    "run_status",
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
    """(train split, validation split) names for a dataset path (:func:`fer.data.split_policy`)."""
    from fer.data import split_policy

    pol = split_policy(path)
    return pol.train, pol.val


def _preload(ds: FerDataset, progress: bool) -> None:
    size = ds.image_size or 128
    if len(ds) * size * size * 3 <= PRELOAD_LIMIT_BYTES:
        ds.preload(progress=progress)


def prepare_data(data: str | os.PathLike, image_size: int, geometry: str, val_data: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, landmark_iters: int = 150, progress: bool = True,
                 echo: Callable[[str], None] = print, sequence_length: int = 0, val_subjects: float = 0.0,
                 split_seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """Open train/validation datasets, decode images into memory, and attach geometry.

    Args:
        data: dataset path (any format of :func:`fer.data.open_dataset`).
        image_size: training image side.
        geometry: provider name (``3dmm``, ``landmarks``, ``none``).
        val_data: validation dataset (default: the held-out split of ``data`` when it has one).
        cache_dir: geometry cache root (default :func:`fer.conditioning.default_cache_dir`).
        landmark_iters: steps of the 3dmm landmark fit.
        sequence_length: > 0: every frame is loaded (geometry per frame) and the sets are
            :class:`fer.data.SequenceDataset` of that many frames (MGLN).
        val_subjects: > 0: the validation set is this fraction of the *training* subjects, held out
            of training (:func:`fer.data.holdout_subjects`, seeded by ``split_seed``); the dataset's
            own held-out split (its test set) is not opened. Excludes ``val_data``.

    Returns:
        train set, validation set (or None), and a description for ``run.json``.
    """
    path = Path(data)
    train_split, val_split = _splits_for(path)
    if val_subjects:
        if val_data is not None:
            raise ValueError("give a validation dataset or a held-out subject fraction, not both")
        if not 0.0 < val_subjects < 1.0:
            raise ValueError(f"the held-out subject fraction must be in (0, 1), got {val_subjects}")
        val_split = None  # the test split stays unread
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
    if val_subjects:  # after the geometry: one table for all training images, split with them
        train, val = holdout_subjects(train, val_subjects, split_seed, where=str(path))
        info["val_subjects"] = {"fraction": float(val_subjects), "seed": int(split_seed),
                                "subjects": sorted(int(i) for i in np.unique(val.identities))}
        whole = info["train"]  # skipped files and geometry stats: of the whole training folder
        for name, ds in (("train", train), ("val", val)):
            info[name] = {**whole, "samples": len(ds), "class_counts": ds.class_counts().tolist()}
        echo(f"validation: {len(info['val_subjects']['subjects'])} of "
             f"{len(np.unique(np.concatenate([train.identities, val.identities])))} training subjects held out "
             f"({len(val)} images; {len(train)} left to train on)")
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


def geometry_overrides(kind: str, geometry: str, train_set: FerDataset) -> dict[str, Any]:
    """Model settings that depend on the training data's geometry, for :func:`fer.models.build_model`.

    The ``geometry`` model, and the baseline with a geometry provider (fusion), read the ``3dmm``
    fit's expression coefficients (``n_exp`` from the attached table); with the ``landmarks``
    provider (no coefficients) they read the landmarks instead. Other models: nothing.

    Raises:
        ValueError: ``--model geometry`` without geometry, or a 3dmm table without coefficients.
    """
    if kind == "geometry" and geometry == "none":
        raise ValueError("the geometry model needs geometry: use the 3dmm (or landmarks) provider")
    if not (kind == "geometry" or (kind == "baseline" and geometry != "none")):
        return {}
    exp = getattr(train_set.geometry, "exp", None)
    n_exp = 0 if exp is None else int(exp.shape[1])
    if n_exp == 0 and geometry == "3dmm":
        raise ValueError("the 3dmm geometry of the training set has no expression coefficients")
    landmarks = {"use_landmarks": True, "geo_use_landmarks": True} if n_exp == 0 else {}
    return {"n_exp": n_exp, "fuse_geometry": True, **landmarks}


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
    return atomic_write_text(out / "run.json", json.dumps(info, indent=2))


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


#: What a run folder holds (``--restart`` deletes exactly these).
RUN_FILES = ("run.json", "model.pt", "metrics.json", "metrics.csv", "checkpoints", "samples", "eval")


def clear_run(run: str | os.PathLike) -> None:
    """Delete a run's files (:data:`RUN_FILES`; anything else in the folder is left alone), run.json first
    so that a half-cleared folder is never taken for a run."""
    import shutil

    root = Path(run)
    for name in RUN_FILES:
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_status(run: str | os.PathLike, info: dict[str, Any] | None = None) -> str:
    """One phrase on a run's progress from its files, e.g. ``'baseline, 3 of 16 epochs done'``."""
    root = Path(run)
    info = info if info is not None else read_run_info(run)
    planned = info.get("train", {}).get("epochs")
    try:
        done = len(json.loads((root / "metrics.json").read_text()))
    except (OSError, ValueError):
        done = 0
    state = "finished" if (root / "model.pt").is_file() and planned is not None and done >= planned else (
        "unfinished" if (root / "checkpoints" / "last.pt").is_file() else "nothing saved yet")
    return f"{info.get('model', '?')}, {done} of {planned} epochs done, {state}"


def _weights_info(state: dict[str, Any], file: str, planned: Any) -> dict[str, Any]:
    """Where loaded weights come from in the training: file, completed epochs, planned epochs, step."""
    if file == "model.pt":
        epoch, step = state.get("epoch"), state.get("global_step")
        planned = state.get("epochs", planned)
        partial = 0
    else:
        epoch, step, partial = state.get("epoch"), state.get("global_step"), int(state.get("batch_in_epoch", 0))
        planned = state.get("train_config", {}).get("epochs", planned)
    finished = file == "model.pt" and (epoch is None or planned is None or epoch >= planned)
    return {"file": file, "epoch": epoch, "epochs": planned, "step": step, "batches_into_next_epoch": partial,
            "finished": bool(finished)}


def describe_weights(w: dict[str, Any]) -> str:
    """One line on the weights :func:`load_run` loaded (``info['weights']``)."""
    if w["finished"]:
        return f"weights: {w['file']} (training finished, {w['epoch'] if w['epoch'] is not None else '?'} epochs)"
    part = f" and {w['batches_into_next_epoch']} batches" if w.get("batches_into_next_epoch") else ""
    return (f"weights: {w['file']} after epoch {w['epoch']}{part} of {w['epochs']} (step {w['step']}); "
            "the run is unfinished")


def load_run(run: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[FerModel, dict[str, Any]]:
    """The trained model of a run, in eval mode, and ``run.json`` with ``info['weights']`` saying which
    weights were loaded (:func:`describe_weights`): ``model.pt`` unless the checkpoint is further along
    (a continued run), else the latest checkpoint."""
    info = read_run_info(run)
    root = Path(run)
    try:
        model = model_from_config(info["model"], without_weights(info["model_config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{root / 'run.json'}: bad model description ({' '.join(str(e).split())})") from None
    planned = info.get("train", {}).get("epochs")
    weights, ckpt = root / "model.pt", root / "checkpoints" / "last.pt"
    # memory-mapped: only the tensors of the file used are read
    final = torch.load(weights, map_location="cpu", weights_only=True, mmap=True) if weights.is_file() else None
    last = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True) if ckpt.is_file() else None
    if final is None and last is None:
        raise FileNotFoundError(f"{run}: no model.pt or checkpoints/last.pt (training has not saved anything yet)")
    use_ckpt = last is not None and (final is None or int(last.get("global_step", -1)) > int(
        final.get("global_step", 1 << 62)))
    file, state = ("checkpoints/last.pt", last["model"]) if use_ckpt else ("model.pt", final["state_dict"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{root / file}: weights do not fit the {info['model']} model of run.json ({first})") from None
    info["weights"] = _weights_info(last if use_ckpt else final, file, planned)
    return model.to(device).eval(), info


def eval_split_for(path: str | os.PathLike) -> str | None:
    """Default split to evaluate on: the held-out split of the format (synthetic test, FER2013 PrivateTest...)."""
    from fer.data import split_policy

    return split_policy(Path(path)).evaluate


def _run_provider(info: dict[str, Any]) -> Any:
    settings = info.get("data", {}).get("geometry", {"provider": "none"})
    return get_provider(settings.get("provider", "none"), **({"landmark_iters": settings["landmark_iters"]}
                                                           if "landmark_iters" in settings else {}))


def open_for_eval(path: str | os.PathLike, info: dict[str, Any], split: str | None = "auto",
                  cache_dir: str | os.PathLike | None = None, progress: bool = False,
                  need_geometry: bool = False) -> Any:
    """A dataset for evaluating a run: its image size; the run's geometry when the model classifies
    from it (``need_geometry``: errors propagate), for sequence models (their part crops sit at the
    landmarks; errors propagate) or, for the yaw bins, when the true pose is unknown; a
    :class:`fer.data.SequenceDataset` for sequence models (``run.json`` data ``sequence_length``)."""
    sp = eval_split_for(path) if split == "auto" else split
    steps = int(info.get("data", {}).get("sequence_length", 0) or 0)
    opener = open_sequence_frames if steps > 0 else open_dataset
    ds = opener(path, split=sp, image_size=int(info["image_size"]))
    need_geometry = need_geometry or steps > 0
    provider = _run_provider(info)
    if provider.name != "none" and len(ds) and (need_geometry or np.isnan(ds.true_pose[:, 0]).any()):
        try:
            attach_geometry(ds, compute_geometry(ds, provider, GeometryCache(cache_dir), progress=progress))
        except GeometryUnavailableError as e:
            if need_geometry:
                raise
            log.warning("no per-yaw accuracy: %s", e)
    return SequenceDataset(ds, steps) if steps > 0 else ds


class _Images(FerDataset):
    """Decoded images (stored size) as a dataset, for computing their geometry."""

    name = "images"

    def __init__(self, images: list[np.ndarray], image_size: int) -> None:
        super().__init__(image_size)
        self.pixels = images
        n = len(images)
        self.labels = np.zeros(n, np.int64)
        self.identities = np.full(n, -1, np.int64)
        self.sources = [f"image {i}" for i in range(n)]
        self.true_pose = np.full((n, 3), np.nan, np.float32)
        self._finish()

    def _decode(self, i: int) -> np.ndarray:
        return self.pixels[i]

    def content_key(self, i: int) -> str:
        import hashlib

        a = np.ascontiguousarray(self.pixels[i])
        return hashlib.sha256(a.tobytes() + str(a.shape).encode()).hexdigest()


def images_batch(images: list[np.ndarray], info: dict[str, Any], cache_dir: str | os.PathLike | None = None,
                 geometry: bool = False) -> dict[str, Any]:
    """A collated batch of (H, W, 3) uint8 images at the run's image size, with the run's geometry when
    ``geometry`` (for models that classify from it; faces without landmarks get ``geom_valid`` False)."""
    from fer.data.base import collate_samples

    ds = _Images(images, int(info["image_size"]))
    if geometry:
        attach_geometry(ds, compute_geometry(ds, _run_provider(info), GeometryCache(cache_dir)))
    return collate_samples([ds[i] for i in range(len(ds))])
