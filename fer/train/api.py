"""One training run as a library call: :func:`run_training` (what ``fer train`` does, the CLI only
parses its arguments into a :class:`TrainRequest`).

Steps: refuse to overwrite an existing run (continue it with ``resume``, replace it with
``restart``); prepare the data (render the synthetic set when none is given; on several ranks rank
0 renders and fits first, the others then read the caches); build the model (or rebuild the run's
own on resume); train with :class:`fer.train.Trainer` (device-agnostic, DDP under torchrun); evaluate
on the held-out split and write its report into the run folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer.kinds import DEFAULT_GEOMETRY

__all__ = ["RequestError", "RunExistsError", "TrainOutcome", "TrainRequest", "metrics_summary", "run_training"]


class RequestError(ValueError):
    """Settings that contradict each other (``fer train`` shows them as usage errors)."""


class RunExistsError(ValueError):
    """The run folder already holds a run and the request neither resumes nor restarts it."""


@dataclass
class TrainRequest:
    """Everything one training run is asked for (the options of ``fer train``).

    Attributes:
        model: model kind (:data:`fer.models.MODELS`).
        geometry: ``'3dmm'``, ``'landmarks'``, ``'none'`` or None (:data:`DEFAULT_GEOMETRY` of the model).
        data: dataset path, or ``'synthetic'`` to render one (``synth_n`` images of ``synth_size`` px).
        val_data: validation dataset (default: the held-out split of ``data``).
        val_subjects: validate on this fraction of the training subjects instead, held out of training
            (a fixed, seed-0 subject-disjoint split, the same for every training seed; the dataset's own
            test split is then not read); None: off, or on resume the run's own.
        out: run folder (default ``runs/<model>-<geometry>``).
        profile: ``'auto'``, ``'small'`` or ``'paper'`` (model sizes; auto = paper on CUDA).
        image_size: training image side (default 128 for the paper profile, else 64).
        resume, restart: continue the run in ``out`` / replace it (exclusive).
        landmark_iters: landmark-fit iterations of the 3dmm geometry provider.
        sequence_length: frames per sequence of sequence models (MGLN).
        teachers: finished run folders to distil from (knowledge distillation, :mod:`fer.train.distill`).
        distill_alpha, distill_temperature: weight of the soft term and temperature (None: 0.5 and 4, or
            the resumed run's own).
        ema, color_jitter, erase: weight averaging and the photometric / erasing augmentation
            (:class:`fer.train.TrainConfig`; None: off, or the resumed run's own).
        Others: as :class:`fer.train.TrainConfig` and :func:`fer.models.build_model`.
    """

    model: str = "ggpi"
    geometry: str | None = None
    data: str = "synthetic"
    val_data: str | None = None
    val_subjects: float | None = None
    epochs: int = 16
    batch_size: int = 32
    image_size: int | None = None
    out: str | None = None
    profile: str = "auto"
    backbone: str | None = None
    backbone_weights: str | None = None
    lr: float | None = None
    lr_schedule: str = "cosine"
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    workers: int = 0
    resume: bool = False
    restart: bool = False
    checkpoint_every: int = 0
    cache_dir: str | None = None
    synth_n: int = 2100
    synth_size: int | None = None
    landmark_iters: int = 150
    sequence_length: int = 3
    teachers: tuple[str, ...] = ()
    distill_alpha: float | None = None
    distill_temperature: float | None = None
    ema: float | None = None
    color_jitter: float | None = None
    erase: float | None = None
    progress: bool = True

    def out_dir(self) -> Path:
        """The run folder: ``out``, or ``runs/<model>-<geometry>``."""
        geometry = self.geometry or DEFAULT_GEOMETRY[self.model]
        return Path(self.out) if self.out else Path("runs") / f"{self.model}-{geometry}"


@dataclass
class TrainOutcome:
    """What :func:`run_training` did: the run folder, the per-epoch history, the held-out metrics
    (None without a held-out set) and its report files, the training minutes."""

    out_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None = None
    report: dict[str, Path] = field(default_factory=dict)
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    held_out: str = ""


def _check(req: TrainRequest, geometry: str) -> None:
    if req.resume and req.restart:
        raise RequestError("--resume and --restart exclude each other")
    if req.model == "geometry" and geometry == "none":
        raise RequestError("--model geometry needs geometry: --geometry 3dmm (or landmarks)")
    if req.epochs < 1 or req.batch_size < 2:
        raise RequestError(f"epochs must be >= 1 and batch_size >= 2, got {req.epochs} and {req.batch_size}")
    if not req.teachers and (req.distill_alpha is not None or req.distill_temperature is not None):
        raise RequestError("--distill-alpha / --distill-temperature need --teacher")
    if req.val_subjects is not None and not 0.0 < req.val_subjects < 1.0:
        raise RequestError(f"--val-subjects must be in (0, 1), got {req.val_subjects}")
    if req.val_subjects and req.val_data:
        raise RequestError("--val-data and --val-subjects exclude each other")


def _distill_settings(req: TrainRequest, prev: dict[str, Any] | None) -> dict[str, Any]:
    """TrainConfig's distillation fields: the request's, or on resume the run's own (a resume that asks
    for other teachers or settings is refused)."""
    asked = {"teachers": tuple(str(t) for t in req.teachers), "distill_alpha": req.distill_alpha,
             "distill_temperature": req.distill_temperature}
    if prev is None:
        return {"teachers": asked["teachers"], "distill_alpha": 0.5 if req.distill_alpha is None else req.distill_alpha,
                "distill_temperature": 4.0 if req.distill_temperature is None else req.distill_temperature}
    train = prev.get("train", {})
    own = {"teachers": tuple(train.get("teachers", ())), "distill_alpha": float(train.get("distill_alpha", 0.5)),
           "distill_temperature": float(train.get("distill_temperature", 4.0))}
    for k, v in asked.items():
        if v not in (None, ()) and (tuple(v) if k == "teachers" else float(v)) != own[k]:
            raise RequestError(f"the run was trained with {k.replace('_', '-')} {own[k]}; a resume keeps it "
                               f"(asked: {v})")
    return own


_TRAINING_EXTRAS = ("ema", "color_jitter", "erase")


def _extra_settings(req: TrainRequest, prev: dict[str, Any] | None) -> dict[str, float]:
    """TrainConfig's weight averaging and extra augmentation: the request's (None: off), or on resume the
    run's own (a resume asking for other values is refused: they change the steps to come)."""
    if prev is None:
        return {k: float(getattr(req, k) or 0.0) for k in _TRAINING_EXTRAS}
    own = {k: float(prev.get("train", {}).get(k, 0.0)) for k in _TRAINING_EXTRAS}
    for k in _TRAINING_EXTRAS:
        v = getattr(req, k)
        if v is not None and float(v) != own[k]:
            raise RequestError(f"the run was trained with {k.replace('_', '-')} {own[k]}; a resume keeps it "
                               f"(asked: {v})")
    return own


def _val_subjects(req: TrainRequest, prev: dict[str, Any] | None) -> float:
    """The held-out subject fraction: the request's (None: 0), or on resume the run's own (a resume
    asking for another is refused: it changes the training images)."""
    if prev is None:
        return float(req.val_subjects or 0.0)
    own = float((prev["data"].get("val_subjects") or {}).get("fraction", 0.0))
    if req.val_subjects is not None and float(req.val_subjects) != own:
        raise RequestError(f"the run was trained with val-subjects {own}; a resume keeps it "
                           f"(asked: {req.val_subjects})")
    return own


def run_training(req: TrainRequest, echo: Callable[[str], None] = print) -> TrainOutcome:
    """Train (or continue) one run as ``req`` asks; see the module docstring.

    Args:
        req: the request.
        echo: where the one-line reports go (rank 0 only under DDP).

    Returns:
        :class:`TrainOutcome`.

    Raises:
        RequestError: contradictory settings.
        RunExistsError: ``out`` holds a run and neither ``resume`` nor ``restart`` is set.
        ValueError: unusable data (no samples, one class only).
    """
    import numpy as np
    import torch

    from fer.data import SynthConfig
    from fer.evaluate import evaluate_model, write_report
    from fer.labels import EXPRESSIONS
    from fer.models import SEQUENCE_MODELS, build_model, model_from_config, resolve_profile, without_weights
    from fer.train import TrainConfig, Trainer, distributed, prepare_data, seed_everything, synthetic_set, training_data
    from fer.train.run import clear_run, geometry_overrides, read_run_info, run_status, write_run_info

    t_start = time.perf_counter()
    geometry = req.geometry or DEFAULT_GEOMETRY[req.model]
    _check(req, geometry)
    out_dir = req.out_dir()
    prev = read_run_info(out_dir) if (out_dir / "run.json").is_file() and not req.restart else None
    if prev is not None and not req.resume:
        raise RunExistsError(f"{out_dir}: already holds a run ({run_status(out_dir, prev)}); add --resume to "
                             "continue it or --restart to replace it")
    dist = distributed.setup(req.device)
    say = echo if dist.is_main else (lambda *a, **k: None)
    progress = req.progress and dist.is_main
    model_kind, profile, image_size, sequence_length = req.model, req.profile, req.image_size, req.sequence_length
    if prev is not None:  # a resumed run keeps its own model, profile, size, geometry, sequence length
        model_kind, profile = prev["model"], prev["profile"]
        image_size = int(prev["image_size"])
        geometry = prev["data"]["geometry"]["provider"]
        sequence_length = int(prev["data"].get("sequence_length", sequence_length))
    val_subjects = _val_subjects(req, prev)
    steps = sequence_length if model_kind in SEQUENCE_MODELS else 0
    if model_kind in SEQUENCE_MODELS and sequence_length < 1:
        raise ValueError(f"--sequence-length must be >= 1, got {sequence_length}")
    prof = resolve_profile(profile, str(dist.device))
    size = image_size or (128 if prof == "paper" else 64)
    cfg = TrainConfig(epochs=req.epochs, batch_size=req.batch_size, seed=req.seed, device=str(dist.device),
                      amp=req.amp, lr_schedule=req.lr_schedule, num_workers=req.workers,
                      checkpoint_every=req.checkpoint_every, progress=progress, **_distill_settings(req, prev),
                      **_extra_settings(req, prev))
    # Data: rank 0 renders / fits first, the other ranks then read the caches.
    data_path = req.data
    for turn in ("main", "others"):
        if (turn == "main") == dist.is_main:
            if req.data in ("synthetic", ""):
                scfg = SynthConfig(n=req.synth_n, size=req.synth_size or max(size, min(2 * size, 128)),
                                   seed=req.seed, sequence=max(1, steps))
                data_path = str(synthetic_set(scfg, req.cache_dir, progress=progress, echo=say))
            train_set, val_set, data_info = prepare_data(
                data_path, size, geometry, req.val_data, req.cache_dir, req.landmark_iters, progress=progress,
                echo=say, sequence_length=steps, val_subjects=val_subjects)
        distributed.barrier()
    if len(train_set) == 0:
        raise ValueError(f"{data_path}: no usable training samples")
    counts = train_set.class_counts()
    if np.count_nonzero(counts) < 2:
        only = ", ".join(f"{EXPRESSIONS[k]} ({counts[k]} images)" for k in np.flatnonzero(counts))
        raise ValueError(f"{data_path}: the training set has one class only ({only}); an expression classifier "
                         "needs at least two")
    train_set, data_overrides = training_data(model_kind, train_set, req.seed)
    seed_everything(req.seed)
    if prev is not None:
        model = model_from_config(prev["model"], without_weights(prev["model_config"]))
    else:
        geo = geometry_overrides(model_kind, geometry, train_set)
        model = build_model(model_kind, prof, image_size=size, use_geometry=geometry != "none", backbone=req.backbone,
                            backbone_weights=req.backbone_weights, lr=req.lr, **geo, **data_overrides)
    nparams = sum(p.numel() for p in model.parameters())
    classifier = getattr(model.config, "backbone", "mlp")
    say(f"{model_kind} ({prof} profile: {classifier} classifier, {nparams / 1e6:.2f} M parameters), geometry "
        f"{geometry}, {size} px, batch {req.batch_size} x {dist.world_size}, {req.epochs} epochs on {dist.device}"
        + (f" ({torch.get_num_threads()} threads)" if dist.device.type == "cpu" else ""))
    trainer = Trainer(model, train_set, out_dir, cfg, val_set=val_set, dist_info=dist)
    if dist.is_main and prev is None:
        if req.restart:
            clear_run(out_dir)
        write_run_info(out_dir, model, prof, size, data_info, cfg)
    distributed.barrier()
    t_train = time.perf_counter()
    history = trainer.fit(resume=req.resume)
    outcome = TrainOutcome(out_dir, history, train_seconds=time.perf_counter() - t_train)
    if dist.is_main and val_set is not None and len(val_set):
        m = evaluate_model(trainer.eval_model, val_set, 128, dist.device)
        outcome.held_out = ("val-subjects" if data_info.get("val_subjects") else "val" if data_info.get("val_data")
                            else (data_info.get("val_split") or "val"))
        outcome.metrics = m
        outcome.report = write_report(m, out_dir / "eval" / outcome.held_out)
        say(metrics_summary(m, f"held-out {outcome.held_out} ({m['n']} {'sequences' if steps else 'images'})"))
        say(f"confusion matrix: {outcome.report['confusion']}")
    ips = [r["images_per_s"] for r in history if r.get("images_per_s")]
    outcome.total_seconds = time.perf_counter() - t_start
    say(f"trained {len(history)} epochs in {outcome.train_seconds / 60:.1f} min"
        + (f" ({sum(ips) / len(ips):.0f} training images/s)" if ips else "")
        + f"; total {outcome.total_seconds / 60:.1f} min; run saved in {out_dir}")
    distributed.cleanup()
    return outcome


def metrics_summary(m: dict[str, Any], what: str) -> str:
    """Accuracy and macro-F1, per-class and per-yaw-bin accuracy of :func:`fer.evaluate.evaluate_model`'s
    metrics, as the report lines ``fer train`` and ``fer evaluate`` print."""
    from fer.labels import EXPRESSIONS

    lines = [f"{what}: accuracy {100 * m['accuracy']:.1f}%, macro-F1 {100 * m['macro_f1']:.1f}%"]
    pc = m["per_class"]
    lines.append("  per class: " + "  ".join(f"{k} {100 * pc[k]['accuracy']:.0f}%" for k in EXPRESSIONS
                                            if pc[k]["n"]))
    if m["per_yaw"]:
        lines.append("  per yaw bin: " + "  ".join(f"{k}° {100 * v['accuracy']:.0f}% (n={v['n']})"
                                                 for k, v in m["per_yaw"].items()))
    return "\n".join(lines)
