"""One trainer for every FER model: device-agnostic, mixed precision on CUDA, exact resume, DDP.

* **Devices**: ``device='auto'`` picks CUDA when present; all tensors follow the model's device.
* **Mixed precision** (CUDA only): bf16 autocast where supported, else fp16 with a GradScaler.
* **Checkpoints** (``RUN/checkpoints/last.pt``): model, optimizers, LR schedulers, scaler, the
  RNG states of torch (CPU and CUDA), numpy and Python ``random`` of every rank, and the data
  position (epoch, batches consumed, running epoch sums). The data order is a pure function of
  (seed, epoch) (:class:`fer.train.sampler.ResumableBatchSampler`) and the DataLoader draws from its
  own generator, so resuming reproduces the next step of an uninterrupted run exactly.
* **Metrics**: per epoch into ``RUN/metrics.json`` and ``RUN/metrics.csv`` (training averages,
  images/s, learning rate, validation accuracy / macro-F1 / per-yaw-bin accuracy).
* **DDP**: under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised, each rank
  trains on its shard of every epoch, gradients are averaged after each backward pass, and rank 0
  alone logs, evaluates and writes files.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from face3dkit.io.atomic import atomic_open
from fer.data.base import collate_samples
from fer.models.base import FerModel
from fer.train import distributed
from fer.train.augment import augment_batch
from fer.train.run_folder import RunFolderWriter
from fer.train.sampler import ResumableBatchSampler

__all__ = ["TrainConfig", "LRSchedule", "Trainer", "seed_everything"]


@dataclass
class TrainConfig:
    """Settings of :class:`Trainer`.

    Attributes:
        epochs: passes over the training set.
        batch_size: samples per step on each rank.
        seed: seeds model randomness and the data order.
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:1'`` ...
        amp: ``'auto'`` (bf16/fp16 on CUDA, off on CPU), ``'off'``, ``'bf16'``, ``'fp16'``.
        lr_schedule: ``'cosine'`` (to 0 over the run), ``'constant'``, or ``'paper'`` (x0.99 every
            two epochs, the authors' code).
        num_workers: DataLoader worker processes.
        checkpoint_every: also checkpoint every that many steps (0: at epoch ends only).
        max_steps: stop after that many steps in total (checkpointing first), e.g. for tests.
        progress: tqdm progress bar (rank 0).
        eval_batch_size: batch size of the per-epoch validation.
        samples: write a grid of generated faces per epoch (models with ``generate``).
        augment: random horizontal flips and small scale/shift jitter, geometry kept consistent
            (:func:`fer.train.augment.augment_batch`).
        color_jitter: photometric augmentation (contrast and brightness within this; 0: off).
        erase: probability of random erasing per sample (0: off).
        ema: decay of an exponential moving average of the weights (0: off; e.g. 0.998). With it the
            run's ``model.pt`` and the per-epoch validation use the averaged weights (one network,
            Polyak averaging); the decay ramps up as ``min(ema, (1 + t) / (10 + t))`` at step t.
        teachers: finished run folders to distil from (:mod:`fer.train.distill`; empty: plain training).
        distill_alpha: weight of the soft (teacher) term of the classification loss.
        distill_temperature: softmax temperature of the teachers and the student's soft term.
    """

    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    lr_schedule: str = "cosine"
    num_workers: int = 0
    checkpoint_every: int = 0
    max_steps: int | None = None
    progress: bool = True
    eval_batch_size: int = 128
    samples: bool = True
    augment: bool = True
    color_jitter: float = 0.0
    erase: float = 0.0
    ema: float = 0.0
    teachers: tuple[str, ...] = ()
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0


class LRSchedule:
    """Picklable per-step LR factor for ``torch.optim.lr_scheduler.LambdaLR``."""

    def __init__(self, kind: str, total_steps: int, steps_per_epoch: int) -> None:
        if kind not in ("cosine", "constant", "paper"):
            raise ValueError(f"unknown lr schedule {kind!r}; choose cosine, constant or paper")
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def __call__(self, step: int) -> float:
        if self.kind == "constant":
            return 1.0
        if self.kind == "paper":
            return 0.99 ** (step // (2 * self.steps_per_epoch))
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    s = state["numpy"]
    np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


class _StepContext:
    """:class:`fer.models.base.StepContext` of a trainer."""

    def __init__(self, trainer: Trainer) -> None:
        self.t = trainer

    def autocast(self) -> contextlib.AbstractContextManager:
        t = self.t
        if t.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=t.device.type, dtype=t.amp_dtype)

    def step(self, name: str, loss: torch.Tensor) -> None:
        t = self.t
        opt = t.optimizers[name]
        opt.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        distributed.average_gradients(t.groups[name])
        t.scaler.step(opt)


class Trainer:
    """Trains a :class:`fer.models.FerModel` on a dataset, writing everything into ``out_dir``.

    Args:
        model: the model (moved to the trainer's device).
        train_set: training :class:`fer.data.FerDataset` (with geometry attached if the model uses it).
        out_dir: the run folder.
        config: :class:`TrainConfig`.
        val_set: optional validation dataset (evaluated after every epoch on rank 0).
        dist_info: process layout (default: :func:`fer.train.distributed.setup`).
    """

    def __init__(self, model: FerModel, train_set: Any, out_dir: str | os.PathLike, config: TrainConfig | None = None,
                 val_set: Any = None, dist_info: distributed.DistInfo | None = None) -> None:
        self.config = cfg = config or TrainConfig()
        if model.uses_geometry() and getattr(train_set, "geometry", None) is None:
            raise ValueError(f"the {model.kind} model needs geometry (landmarks and pose) on its training set: "
                             "attach a geometry table (fer train --geometry 3dmm|landmarks)")
        self.dist = dist_info or distributed.setup(cfg.device)
        self.device = self.dist.device
        self.out = Path(out_dir)
        self.writer = RunFolderWriter(self.out)  # metrics, sample grids, model.pt (the loop keeps checkpoints)
        self.model = model.to(self.device)
        distributed.broadcast_module(self.model)
        self.train_set = train_set
        self.val_set = val_set
        self.sampler = ResumableBatchSampler(len(train_set), cfg.batch_size, cfg.seed, self.dist.rank,
                                             self.dist.world_size)
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.groups = model.param_groups()
        self.optimizers = {k: torch.optim.Adam(v, **model.optimizer_settings(k)) for k, v in self.groups.items()}
        schedule = LRSchedule(cfg.lr_schedule, cfg.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, schedule) for k, o in self.optimizers.items()}
        self.amp_dtype = self._amp_dtype(cfg.amp)
        fp16 = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.sums: dict[str, float] = {}
        self.count = 0
        self.history: list[dict[str, Any]] = []
        self.ctx = _StepContext(self)
        if not (0 <= cfg.ema < 1 and cfg.color_jitter >= 0 and 0 <= cfg.erase <= 1):
            raise ValueError(f"TrainConfig: need 0 <= ema < 1, color_jitter >= 0, 0 <= erase <= 1; got ema={cfg.ema}, "
                             f"color_jitter={cfg.color_jitter}, erase={cfg.erase}")
        self.ema_model: FerModel | None = None
        if cfg.ema > 0:
            self.ema_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.teachers = None
        if cfg.teachers:
            from fer.labels import EXPRESSIONS
            from fer.train.distill import Teachers

            self.teachers = Teachers(cfg.teachers, cfg.distill_temperature, cfg.distill_alpha, EXPRESSIONS,
                                     getattr(train_set, "image_size", None), self.device)
        # Fitted expression coefficients go only to models that read them; flips permute them (augment_batch).
        self._student_exp = bool(getattr(model, "classifies_geometry", lambda: False)())
        self._keep_exp = self._student_exp or (self.teachers is not None and self.teachers.needs_geometry_features())
        self._exp_mirror = getattr(getattr(train_set, "geometry", None), "exp_mirror", None)

    # -- setup --------------------------------------------------------------------------------------
    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        if amp not in ("auto", "off", "bf16", "fp16"):
            raise ValueError(f"amp must be auto, off, bf16 or fp16, got {amp!r}")
        if self.device.type != "cuda" or amp == "off":
            return None
        if amp == "fp16":
            return torch.float16
        if amp == "bf16" or torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (RNG of this rank only; see :meth:`save_checkpoint`)."""
        return {
            "format": "fer-checkpoint-v1",
            "model_kind": self.model.kind,
            "model_config": asdict(self.model.config),
            "model": self.model.state_dict(),
            "ema_model": self.ema_model.state_dict() if self.ema_model is not None else None,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "sums": dict(self.sums),
            "count": self.count,
            "history": list(self.history),
            "train_config": asdict(self.config),
            "world_size": self.dist.world_size,
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write a checkpoint (collective under DDP: rank 0's batch-norm statistics go to every rank, each
        rank contributes its RNG state and its partial epoch metrics; rank 0 writes)."""
        distributed.broadcast_buffers(self.model)  # the in-memory model equals the saved one on every rank
        per_rank = distributed.all_gather_objects({"rng": _rng_state(self.device), "sums": dict(self.sums),
                                                   "count": self.count})
        path = Path(path) if path is not None else self.checkpoint_path
        if self.dist.is_main:
            state = self.state_dict()
            state["rng"] = [r["rng"] for r in per_rank]
            state["rank_sums"] = [r["sums"] for r in per_rank]
            state["rank_counts"] = [r["count"] for r in per_rank]
            with atomic_open(path) as f:
                torch.save(state, f)
        distributed.barrier()
        return path if self.dist.is_main else None

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by :meth:`save_checkpoint` (model, optimizers, RNG, data position)."""
        state = torch.load(path, map_location=self.device, weights_only=True)
        if state.get("format") != "fer-checkpoint-v1":
            raise ValueError(f"{path}: not a fer checkpoint")
        if state["model_kind"] != self.model.kind:
            raise ValueError(f"{path}: checkpoint of a '{state['model_kind']}' model, not '{self.model.kind}'")
        self.model.load_state_dict(state["model"])
        if self.ema_model is not None:
            if state.get("ema_model") is None:
                raise ValueError(f"{path}: a checkpoint without weight averaging (TrainConfig.ema) cannot be resumed "
                                 "with it")
            self.ema_model.load_state_dict(state["ema_model"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        self.sums = dict(state["sums"])
        self.count = int(state["count"])
        rank_sums, rank_counts = state.get("rank_sums"), state.get("rank_counts")
        if rank_sums is not None and rank_counts is not None and len(rank_sums) == self.dist.world_size:
            self.sums, self.count = dict(rank_sums[self.dist.rank]), int(rank_counts[self.dist.rank])
        self.history = list(state["history"])
        rngs = state["rng"]
        _set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0], self.device)

    # -- training -----------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _loader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate_samples,
                          num_workers=self.config.num_workers, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(self.config.seed))

    def fit(self, resume: bool | str | os.PathLike = False) -> list[dict[str, Any]]:
        """Train (or continue) to ``config.epochs``; returns the per-epoch metrics.

        Args:
            resume: False (fresh run, seeding everything), True (continue from
                ``RUN/checkpoints/last.pt`` when it exists) or a checkpoint path.
        """
        cfg = self.config
        ckpt = None
        if resume is True and self.checkpoint_path.is_file():
            ckpt = self.checkpoint_path
        elif resume not in (True, False):
            ckpt = Path(resume)  # type: ignore[arg-type]
        if ckpt is not None:
            self.load_checkpoint(ckpt)
        else:
            seed_everything(cfg.seed + self.dist.rank)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        loader = self._loader()
        main = self.dist.is_main
        from tqdm import tqdm

        while self.epoch < cfg.epochs:
            self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
            if hasattr(self.train_set, "set_epoch"):  # per-epoch data draws (TDGAN's face pairs)
                self.train_set.set_epoch(self.epoch)
            self.model.train()
            t0 = time.perf_counter()
            seen = 0
            per_step = self.sampler.batch_size * self.dist.world_size
            bar = tqdm(total=self.steps_per_epoch * per_step, initial=self.batch_in_epoch * per_step, unit="img",
                       desc=f"epoch {self.epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and main),
                       dynamic_ncols=True, leave=False)
            for batch in loader:
                if batch is not None:
                    if not self._keep_exp:
                        batch.pop("geom_exp", None)
                    batch = self._to_device(batch)
                    if cfg.augment:
                        stream = (self.global_step * self.dist.world_size + self.dist.rank) * 1_000_003
                        gen = torch.Generator().manual_seed(cfg.seed + stream)
                        batch = augment_batch(batch, gen, exp_mirror=self._exp_mirror, color=cfg.color_jitter,
                                              erase=cfg.erase)
                    if self.teachers is not None:  # soft targets on the images the student sees
                        batch = self.teachers.annotate(batch)
                        if not self._student_exp:
                            batch.pop("geom_exp", None)
                    metrics = self.model.train_step(batch, self.ctx)
                    n = int(batch["label"].shape[0])
                    for k, v in metrics.items():  # every rank must hold the same keys (all-reduced later)
                        self.sums[k] = self.sums.get(k, 0.0) + (v * n if math.isfinite(v) else 0.0)
                    self.count += n
                    seen += n
                    bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.3f}",
                                    acc=f"{metrics.get('acc', float('nan')):.2f}", refresh=False)
                    self.scaler.update()
                    self._update_ema()
                for s in self.schedulers.values():
                    s.step()
                self.global_step += 1
                self.batch_in_epoch += 1
                bar.update(per_step)
                if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                    self.save_checkpoint()
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    bar.close()
                    self.save_checkpoint()
                    return self.history
            bar.close()
            seconds = time.perf_counter() - t0
            record = self._end_epoch(seen, seconds)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.sums, self.count = {}, 0
            if main:
                self.history.append(record)
                self._write_metrics()
                tqdm.write(self._epoch_line(record))
            self.save_checkpoint()
        if main:
            self.save_model()
        return self.history

    def _update_ema(self) -> None:
        """Weight averaging after an optimisation step (every parameter and float buffer; counters copied)."""
        if self.ema_model is None:
            return
        t = self.global_step
        d = min(self.config.ema, (1 + t) / (10 + t))
        with torch.no_grad():
            for e, p in zip(self.ema_model.state_dict().values(), self.model.state_dict().values(), strict=True):
                if e.is_floating_point():
                    e.lerp_(p.detach(), 1 - d)
                else:
                    e.copy_(p)

    @property
    def eval_model(self) -> FerModel:
        """The weights that are evaluated and saved: the averaged ones with ``ema``, else the trained ones."""
        return self.ema_model if self.ema_model is not None else self.model

    def _end_epoch(self, seen: int, seconds: float) -> dict[str, Any]:
        """Epoch record: averaged training metrics (over ranks), speed, LR, validation (rank 0)."""
        distributed.broadcast_buffers(self.model)  # one set of batch-norm statistics, as DDP keeps
        keys = sorted(self.sums)
        vec = torch.tensor([self.sums[k] for k in keys] + [float(self.count), float(seen)], dtype=torch.float64,
                           device=self.device)
        vec = distributed.all_reduce_sum(vec).cpu()
        count, seen_all = float(vec[-2]), float(vec[-1])
        rec: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.global_step}
        for i, k in enumerate(keys):
            rec[f"train_{k}"] = float(vec[i]) / max(count, 1.0)
        rec["images"] = int(count)
        rec["seconds"] = round(seconds, 3)
        rec["images_per_s"] = round(seen_all / seconds, 2) if seconds > 0 else float("nan")
        rec["lr"] = next(iter(self.optimizers.values())).param_groups[0]["lr"]
        if self.dist.is_main and self.val_set is not None and len(self.val_set):
            from fer.evaluate import evaluate_model

            m = evaluate_model(self.eval_model, self.val_set, self.config.eval_batch_size, self.device)
            rec["val_accuracy"] = m["accuracy"]
            rec["val_macro_f1"] = m["macro_f1"]
            for name, v in m["per_yaw"].items():
                rec[f"val_acc_yaw{name}"] = v["accuracy"]
        if self.dist.is_main and self.config.samples and hasattr(self.model, "generate"):
            self._save_samples()
        distributed.barrier()
        return rec

    def _save_samples(self, n: int = 8) -> None:
        """Rows: input, reconstruction, re-targeted to the next face's geometry/labels."""
        from fer.data.base import collate_samples as collate

        ds = self.val_set if self.val_set is not None and len(self.val_set) >= 2 else self.train_set
        items = [s for s in (ds[i] for i in range(min(n, len(ds)))) if s is not None]
        if len(items) < 2:
            return
        batch = self._to_device(collate(items))
        was = self.model.training
        self.model.eval()
        try:
            rec, gen = self.model.generate(batch)  # type: ignore[operator]
        finally:
            self.model.train(was)
        self.writer.samples([batch["image"], rec, gen], self.epoch + 1)

    def _write_metrics(self) -> None:
        self.writer.metrics(self.history)

    @staticmethod
    def _epoch_line(r: dict[str, Any]) -> str:
        parts = [f"epoch {r['epoch']}", f"loss {r.get('train_loss', float('nan')):.3f}",
                 f"train acc {100 * r.get('train_acc', float('nan')):.1f}%"]
        if "val_accuracy" in r:
            parts += [f"val acc {100 * r['val_accuracy']:.1f}%", f"macro-F1 {100 * r['val_macro_f1']:.1f}%"]
        parts.append(f"{r['images_per_s']:.0f} img/s")
        return "  ".join(parts)

    def save_model(self, path: str | os.PathLike | None = None) -> Path:
        """Final weights for ``fer evaluate`` / ``fer predict`` (:meth:`RunFolderWriter.model`)."""
        return self.writer.model(self.eval_model, self.epoch, self.config.epochs, self.global_step, path)
