"""Training an R-Net on synthetic renders (:func:`train_rnet`, ``face3dkit train-rnet``).

A run folder holds ``config.json``, ``checkpoint.pt`` (network, optimizer, step; written every
``checkpoint_every`` steps and at the end), ``metrics.csv`` (one row per step: the total and every
loss term) and, at the end, ``rnet.pt`` (:meth:`face3dkit.nets.RNet.save`; what ``reconstruct --rnet``
loads). Batches are a pure function of the seed, the step and the rank
(:mod:`face3dkit.regress.synthetic`), so a resumed run reproduces the steps an uninterrupted one
takes. Every file is written atomically.

Data parallelism: under ``torchrun --nproc-per-node N`` (``WORLD_SIZE`` > 1) every process draws
its own ``batch_size`` renders (rank ``r``'s of :func:`face3dkit.regress.synthetic.batch_generator`),
the gradients are averaged after each backward pass
(:func:`face3dkit.distributed.average_gradients`), rank 0's batch-norm statistics are broadcast
before every checkpoint, and rank 0 alone writes the run folder; the logged terms are the mean
over ranks. One process is rank 0 of a world of one: the same code path.

AMP (``amp``): the network's forward pass under autocast (bf16, or fp16 with a gradient scaler),
the renderer and every loss term in float32; ``'auto'`` = bf16 / fp16 on CUDA, off on the CPU.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from face3dkit import distributed
from face3dkit.geometry import PerspectiveCamera
from face3dkit.io.atomic import atomic_open, atomic_write_text
from face3dkit.regress.hybrid import HybridLossConfig, autocast_dtype, rnet_train_step
from face3dkit.regress.synthetic import SyntheticFaces, synthetic_batch

__all__ = ["RNetTrainConfig", "RunExistsError", "train_rnet"]


class RunExistsError(ValueError):
    """The run folder holds a run and ``resume`` was not asked for."""


@dataclass
class RNetTrainConfig:
    """Settings of :func:`train_rnet` (Deng et al.: Adam, lr 1e-4, ResNet-50; ResNet-18 for CPUs).

    Attributes:
        model: morphable model whose coefficients the network predicts (name or path).
        backbone: :data:`face3dkit.nets.RNET_BACKBONES` name.
        steps, batch_size, lr, seed: optimisation.
        supervised: weight of the coefficient-supervision term (the renders' true coefficients).
        supervised_space: ``'coefficients'`` or ``'vertices'``
            (:attr:`face3dkit.regress.hybrid.HybridLossConfig.supervised_space`).
        checkpoint_every: steps between checkpoints (and metrics.csv rewrites).
        data: the randomisation of the renders (:class:`SyntheticFaces`; ``size`` = crop side).
        photos: a folder of face photos to train on (:func:`face3dkit.regress.photos.prepare_photo_folder`:
            detected, aligned like ``reconstruct`` does, cached), or None: renders only.
        photo_fraction: with ``photos``, the share of each batch that is photos (the rest renders,
            which add the supervised term); 1 = photos only.
        photo_cache: the photo cache folder (None: ``<run>/photo-cache``).
        detector: the landmark detector of the photos (``'dlib'``, ``'mtcnn'``, ``'file'`` ...).
        input_size: the R-Net's own input side (it resizes any crop to it: :class:`face3dkit.nets.RNet`);
            None = the crop as given.
        identity_net: an insightface ``backbone.pth`` (ArcFace iResNet) for Deng et al.'s perceptual
            identity term (:class:`face3dkit.losses.PerceptualLoss`); None: the term is off.
        imagenet: ImageNet weights of the backbone (a torchvision checkpoint path) or None.
        init: an R-Net checkpoint (:meth:`face3dkit.nets.RNet.load`: a path or ``'default'``, the
            shipped one) whose weights start the run (fine-tuning; a fresh optimiser); its backbone,
            coefficient layout and input size must be this run's. None: random (or ``imagenet``).
        amp: ``'auto'``, ``'off'``, ``'bf16'``, ``'fp16'`` (:func:`face3dkit.regress.hybrid.autocast_dtype`).
        device: ``'cpu'``, ``'cuda'``, ``'auto'`` ... (under torchrun: each rank's own GPU).
    """

    model: str = "default"
    backbone: str = "resnet18"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    supervised: float = 1.0
    supervised_space: str = "coefficients"
    checkpoint_every: int = 100
    data: SyntheticFaces = field(default_factory=SyntheticFaces)
    photos: str | None = None
    photo_fraction: float = 1.0
    photo_cache: str | None = None
    detector: str = "dlib"
    input_size: int | None = None
    imagenet: str | None = None
    init: str | None = None
    identity_net: str | None = None
    amp: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        autocast_dtype(self.amp, torch.device("cpu"))  # validates the name
        HybridLossConfig(supervised_space=self.supervised_space)  # validates the space
        if not 0 <= self.photo_fraction <= 1:
            raise ValueError(f"RNetTrainConfig: photo_fraction must be in [0, 1], got {self.photo_fraction}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or not self.lr > 0:
            raise ValueError(f"RNetTrainConfig: steps, batch_size, checkpoint_every must be >= 1 and lr > 0, got "
                             f"{self.steps}, {self.batch_size}, {self.checkpoint_every}, {self.lr}")


def read_run_checkpoint(out: Path, resume: bool, what: str, error: type[Exception]) -> dict[str, Any] | None:
    """The state in ``out/checkpoint.pt`` (None when there is none); a run there without ``resume``
    raises ``error`` in one line (``what``: e.g. ``'an R-Net run'``)."""
    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        return None
    if not resume:
        raise error(f"{out}: already holds {what} (checkpoint.pt); add --resume to continue it")
    return torch.load(ckpt, map_location="cpu", weights_only=True)


def write_metrics_csv(path: Path, rows: list[dict[str, float]]) -> None:
    """Write per-step metric rows atomically as CSV (the union of their keys, in first-seen order)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def train_rnet(out: str | os.PathLike, cfg: RNetTrainConfig | None = None, resume: bool = False,
               progress: Callable[[int, int, dict[str, float]], None] | None = None, steps: int | None = None
               ) -> list[dict[str, float]]:
    """Train (or continue) an R-Net in the run folder ``out``; returns the per-step metrics (the mean
    over data-parallel ranks; every rank returns them).

    ``steps`` (resuming) extends the run's plan to that many steps in all; a longer run resumed
    from a checkpoint takes the steps an uninterrupted run of that length takes.

    Raises:
        RunExistsError: ``out`` holds a checkpoint and ``resume`` is False.
    """
    import face3dkit
    from face3dkit.nets import RNet

    out = Path(out)
    ckpt = out / "checkpoint.pt"
    state = read_run_checkpoint(out, resume, "an R-Net run", RunExistsError)
    if state is not None:
        cfg = _config_from_dict(state["config"])
        if steps is not None:
            if steps < int(state["step"]):
                raise RunExistsError(f"{out}: has {state['step']} steps done, more than the {steps} asked for")
            cfg.steps = int(steps)
    cfg = cfg or RNetTrainConfig()
    info = distributed.setup(cfg.device)
    dev = info.device
    amp_dtype = autocast_dtype(cfg.amp, dev)
    model = face3dkit.load_model(cfg.model, device=dev)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the seed; the global generator is left alone
        torch.manual_seed(cfg.seed)
        net = RNet(model.layout, cfg.backbone, imagenet_weights=cfg.imagenet, input_size=cfg.input_size).to(dev)
    if state is None and cfg.init is not None:
        _load_init(net, cfg.init)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    scaler = torch.amp.GradScaler(dev.type) if amp_dtype == torch.float16 else None
    rows: list[dict[str, float]] = []
    start = 0
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, rows = int(state["step"]), list(state["metrics"])
    elif info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps({**asdict(cfg), "world_size": info.world_size}, indent=2))
    distributed.broadcast_module(net)
    params = list(net.parameters())
    photos = None
    if cfg.photos and cfg.photo_fraction > 0:
        from face3dkit.regress.photos import prepare_photo_folder

        cache = Path(cfg.photo_cache) if cfg.photo_cache else out / "photo-cache"
        for turn in (True, False):  # rank 0 detects and caches, then the others read the cache
            if info.is_main == turn:
                photos = prepare_photo_folder(cfg.photos, cache, size=cfg.data.size, detector=cfg.detector,
                                              model=model)
            distributed.barrier()
        assert photos is not None
        if info.is_main and photos.skipped:
            log = logging.getLogger("face3dkit.regress")
            log.warning("%d photo(s) of %s not used: %s", len(photos.skipped), cfg.photos,
                        "; ".join(f"{p}: {why}" for p, why in photos.skipped[:5])
                        + (" ..." if len(photos.skipped) > 5 else ""))

    def batch_at(step: int) -> dict[str, torch.Tensor]:
        if photos is None:
            b = synthetic_batch(model, cfg.data, cfg.batch_size, cfg.seed, step, rank=info.rank)
        else:
            from face3dkit.regress.photos import mixed_batch

            b = mixed_batch(photos, lambda n, s, k, r: synthetic_batch(model, cfg.data, n, s, k, r), cfg.batch_size,
                            cfg.photo_fraction, cfg.seed, step, info.rank, info.world_size)
        return {k: v.to(dev) for k, v in b.items()}
    cam = PerspectiveCamera.for_image_size(cfg.data.size)
    loss_cfg = HybridLossConfig(supervised=cfg.supervised, supervised_space=cfg.supervised_space)
    perceptual = None
    if cfg.identity_net:
        from face3dkit.losses import PerceptualLoss

        perceptual = PerceptualLoss.from_iresnet(cfg.identity_net).to(dev)

    def save(step: int) -> None:
        distributed.broadcast_buffers(net)
        if info.is_main:
            with atomic_open(ckpt) as f:
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "metrics": rows,
                            "config": asdict(cfg), "world_size": info.world_size,
                            "scaler": scaler.state_dict() if scaler is not None else None}, f)
            write_metrics_csv(out / "metrics.csv", rows)
        distributed.barrier()

    t0 = time.perf_counter()
    try:
        for step in range(start, cfg.steps):
            batch = batch_at(step)
            rec = rnet_train_step(net, model, batch, opt, cam, loss_cfg, perceptual, amp_dtype=amp_dtype, scaler=scaler,
                                  after_backward=lambda: distributed.average_gradients(params))
            if info.distributed:
                keys = sorted(rec)
                vals = distributed.all_reduce_sum(torch.tensor([rec[k] for k in keys], dtype=torch.float64,
                                                               device=dev)) / info.world_size
                rec = dict(zip(keys, vals.tolist(), strict=True))
            rec = {"step": step + 1, **rec}
            rows.append(rec)
            if progress is not None and info.is_main:
                progress(step + 1, cfg.steps, rec)
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                save(step + 1)
        if info.is_main:
            net.save(out / "rnet.pt", steps=cfg.steps, trained_seconds=round(time.perf_counter() - t0, 1),
                     config=asdict(cfg), world_size=info.world_size)
        distributed.barrier()
    finally:
        distributed.cleanup()
    return rows


def _load_init(net: Any, source: str) -> None:
    """Copy the weights of the R-Net checkpoint ``source`` into ``net`` (same backbone, layout and
    input size, else a one-line error naming the file)."""
    from face3dkit.nets import RNet
    from face3dkit.nets._checkpoint import CheckpointMismatchError

    start = RNet.load(source)
    mine = (net.backbone_name, tuple(net.layout.sizes), net.input_size)
    theirs = (start.backbone_name, tuple(start.layout.sizes), start.input_size)
    if mine != theirs:
        raise CheckpointMismatchError(f"{source}: R-Net (backbone, coefficient blocks, input size) {theirs} does not "
                                      f"match this run's {mine}")
    net.load_state_dict(start.state_dict())  # copied into net's own tensors (dtype and device kept)


def _config_from_dict(d: dict[str, Any]) -> RNetTrainConfig:
    d = dict(d)
    data = SyntheticFaces.from_dict(d.pop("data"))
    return RNetTrainConfig(**d, data=data)
