"""Training an R-Net on synthetic renders (:func:`train_rnet`, ``face3dkit train-rnet``).

A run folder holds ``config.json``, ``checkpoint.pt`` (network, optimizer, step; written every
``checkpoint_every`` steps and at the end), ``metrics.csv`` (one row per step: the total and every
loss term) and, at the end, ``rnet.pt`` (:meth:`face3dkit.nets.RNet.save`; what ``reconstruct --rnet``
loads). Batches are a pure function of the seed and the step (:mod:`face3dkit.regress.synthetic`), so
a resumed run reproduces the steps an uninterrupted one takes. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from face3dkit.geometry import PerspectiveCamera
from face3dkit.io.atomic import atomic_open, atomic_write_text
from face3dkit.regress.hybrid import HybridLossConfig, rnet_train_step
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
        checkpoint_every: steps between checkpoints (and metrics.csv rewrites).
        data: the randomisation of the renders (:class:`SyntheticFaces`; ``size`` = crop side).
        device: ``'cpu'``, ``'cuda'`` ...
    """

    model: str = "default"
    backbone: str = "resnet18"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0
    supervised: float = 1.0
    checkpoint_every: int = 100
    data: SyntheticFaces = field(default_factory=SyntheticFaces)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or not self.lr > 0:
            raise ValueError(f"RNetTrainConfig: steps, batch_size, checkpoint_every must be >= 1 and lr > 0, got "
                             f"{self.steps}, {self.batch_size}, {self.checkpoint_every}, {self.lr}")


def _write_metrics(path: Path, rows: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def train_rnet(out: str | os.PathLike, cfg: RNetTrainConfig | None = None, resume: bool = False,
               progress: Callable[[int, int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train (or continue) an R-Net in the run folder ``out``; returns the per-step metrics.

    Raises:
        RunExistsError: ``out`` holds a checkpoint and ``resume`` is False.
    """
    import face3dkit
    from face3dkit.nets import RNet

    out = Path(out)
    ckpt = out / "checkpoint.pt"
    state: dict[str, Any] | None = None
    if ckpt.exists():
        if not resume:
            raise RunExistsError(f"{out}: already holds an R-Net run (checkpoint.pt); add --resume to continue it")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        cfg = _config_from_dict(state["config"])
    cfg = cfg or RNetTrainConfig()
    dev = torch.device(cfg.device)
    model = face3dkit.load_model(cfg.model, device=dev)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the seed; the global generator is left alone
        torch.manual_seed(cfg.seed)
        net = RNet(model.layout, cfg.backbone).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    rows: list[dict[str, float]] = []
    start = 0
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        start, rows = int(state["step"]), list(state["metrics"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=2))
    cam = PerspectiveCamera.for_image_size(cfg.data.size)
    loss_cfg = HybridLossConfig(supervised=cfg.supervised)

    def save(step: int) -> None:
        with atomic_open(ckpt) as f:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "metrics": rows,
                        "config": asdict(cfg)}, f)
        _write_metrics(out / "metrics.csv", rows)

    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        batch = {k: v.to(dev) for k, v in synthetic_batch(model, cfg.data, cfg.batch_size, cfg.seed, step).items()}
        rec = {"step": step + 1, **rnet_train_step(net, model, batch, opt, cam, loss_cfg)}
        rows.append(rec)
        if progress is not None:
            progress(step + 1, cfg.steps, rec)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save(step + 1)
    net.save(out / "rnet.pt", steps=cfg.steps, trained_seconds=round(time.perf_counter() - t0, 1),
             config=asdict(cfg))
    return rows


def _config_from_dict(d: dict[str, Any]) -> RNetTrainConfig:
    d = dict(d)
    data = dict(d.pop("data"))
    data["trans"] = tuple(data["trans"])
    return RNetTrainConfig(**d, data=SyntheticFaces(**data))
