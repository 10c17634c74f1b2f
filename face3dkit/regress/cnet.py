"""Training Deng et al.'s C-Net (:class:`face3dkit.nets.CNet`) on synthetic identity sets
(:func:`train_cnet`, ``face3dkit train-cnet``).

A batch holds S sets of K renders each: within a set the identity and albedo coefficients are the
same, the expression, pose, light, background, blur and noise differ (:func:`identity_sets`). The
frozen R-Net (eval mode, no gradients) regresses every image; the C-Net's confidences aggregate
each set's identity and albedo (:func:`face3dkit.nets.aggregate`), and every image is re-rendered
with the aggregated identity / albedo and its own regressed expression, pose and light; the loss
is the hybrid loss of those renders (:func:`face3dkit.regress.hybrid.hybrid_loss`), plus, on
synthetic data, an optional supervised term: the mean squared error of the aggregated identity
and albedo against the truth (:func:`cnet_loss`).

The run folder mirrors :func:`face3dkit.regress.train_rnet`'s: ``config.json``, ``checkpoint.pt``
(C-Net, optimizer, step, metrics, config, the R-Net's SHA-256), ``metrics.csv`` and, at the end,
``cnet.pt`` (:meth:`face3dkit.nets.CNet.save`; what ``reconstruct --same-person --cnet`` loads).
Batches are a pure function of ``(seed, step)``, so a resumed run takes the steps an uninterrupted
one takes. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from face3dkit.geometry import PerspectiveCamera
from face3dkit.io import file_sha256
from face3dkit.io.atomic import atomic_open, atomic_write_text
from face3dkit.model.coefficients import Coefficients
from face3dkit.model.morphable import MorphableModel
from face3dkit.regress.hybrid import HybridLossConfig, hybrid_loss
from face3dkit.regress.synthetic import SyntheticFaces, batch_generator, render_synthetic, sample_coefficients
from face3dkit.regress.train import read_run_checkpoint, write_metrics_csv

__all__ = ["CNetRunError", "CNetTrainConfig", "aggregate_coefficients", "cnet_loss", "cnet_train_step",
           "identity_sets", "train_cnet"]


class CNetRunError(ValueError):
    """A C-Net run folder cannot be used as asked (holds a run and no resume; another R-Net)."""


@dataclass
class CNetTrainConfig:
    """Settings of :func:`train_cnet`.

    Attributes:
        rnet: the frozen R-Net's checkpoint (:meth:`face3dkit.nets.RNet.load`).
        model: morphable model of the R-Net's coefficients (name or path).
        steps, lr, seed: optimisation (Adam).
        set_size: K, images per identity set (Deng et al.: 5).
        sets_per_batch: S, identity sets per step.
        width: channels of the C-Net's convolutions.
        supervised: weight of the supervised term on the aggregated identity / albedo (0: the
            weakly-supervised hybrid loss alone).
        checkpoint_every: steps between checkpoints (and metrics.csv rewrites).
        data: the randomisation of the renders (``size`` = crop side; the R-Net's own ``input_size``
            resizes if it has one).
        device: ``'cpu'``, ``'cuda'`` ...
    """

    rnet: str = ""
    model: str = "default"
    steps: int = 500
    set_size: int = 5
    sets_per_batch: int = 2
    lr: float = 1e-4
    seed: int = 0
    width: int = 128
    supervised: float = 1.0
    checkpoint_every: int = 100
    data: SyntheticFaces = field(default_factory=SyntheticFaces)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.steps, self.set_size, self.sets_per_batch, self.checkpoint_every, self.width) < 1 \
                or not self.lr > 0 or self.supervised < 0:
            raise ValueError(f"CNetTrainConfig: steps, set_size, sets_per_batch, checkpoint_every, width must be >= 1, "
                             f"lr > 0 and supervised >= 0, got {self.steps}, {self.set_size}, {self.sets_per_batch}, "
                             f"{self.checkpoint_every}, {self.width}, {self.lr}, {self.supervised}")


def identity_sets(model: MorphableModel, cfg: SyntheticFaces, n_sets: int, set_size: int, seed: int, step: int
                  ) -> dict[str, Tensor]:
    """S = ``n_sets`` identity sets of K = ``set_size`` randomised renders: one identity and albedo
    per set, each image its own expression, pose, light and image randomisation. A pure function
    of ``(seed, step)`` (:func:`face3dkit.regress.synthetic.batch_generator`).

    Returns:
        ``image`` (S, K, H, W, 3) in [0, 1], ``landmarks`` (S, K, 68, 2) crop pixels, ``coeffs``
        (S, K, total) true coefficients (the same id / tex blocks along K).
    """
    g = batch_generator(seed, step)
    n = n_sets * set_size
    c = sample_coefficients(model, cfg, n, g)
    lay = model.layout
    # The first draw of each set is its identity (the others' id / tex draws are discarded).
    c.id = c.id.reshape(n_sets, set_size, lay.n_id)[:, :1].expand(-1, set_size, -1).reshape(n, lay.n_id)
    c.tex = c.tex.reshape(n_sets, set_size, lay.n_tex)[:, :1].expand(-1, set_size, -1).reshape(n, lay.n_tex)
    b = render_synthetic(model, c, cfg, g)
    return {k: v.reshape(n_sets, set_size, *v.shape[1:]) for k, v in b.items()}


def aggregate_coefficients(coeffs: Coefficients, conf_id: Tensor | None, conf_tex: Tensor | None, n_sets: int
                           ) -> tuple[Coefficients, Tensor, Tensor]:
    """Each set's identity and albedo replaced by their confidence-weighted mean.

    Args:
        coeffs: S * K per-image coefficients, set-major (image k of set s at s * K + k).
        conf_id, conf_tex: (S * K, n_id) / (S * K, n_tex) positive confidences; None: all equal
            (the plain mean).
        n_sets: S.

    Returns:
        (the S * K coefficients with every image's id / tex its set's aggregate and its own other
        blocks, the aggregated identity (S, n_id), albedo (S, n_tex)).
    """
    from face3dkit.nets.cnet import aggregate

    n = coeffs.batch_size
    if n % n_sets:
        raise ValueError(f"{n} images do not make {n_sets} sets of equal size")
    k = n // n_sets

    def agg(v: Tensor, c: Tensor | None) -> Tensor:
        v = v.reshape(n_sets, k, -1)
        return aggregate(v, torch.ones_like(v) if c is None else c.reshape(n_sets, k, -1))

    a_id, a_tex = agg(coeffs.id, conf_id), agg(coeffs.tex, conf_tex)
    out = Coefficients(a_id.repeat_interleave(k, 0), coeffs.exp, a_tex.repeat_interleave(k, 0), coeffs.angles,
                       coeffs.gamma, coeffs.trans)
    return out, a_id, a_tex


def cnet_loss(cnet: torch.nn.Module, rnet: Any, model: MorphableModel, batch: dict[str, Tensor], camera: Any,
              cfg: HybridLossConfig | None = None, supervised: float = 0.0, perceptual: Any = None
              ) -> tuple[Tensor, dict[str, Tensor]]:
    """The C-Net's loss on a batch of identity sets (the R-Net is run without gradients).

    Args:
        cnet: :class:`face3dkit.nets.CNet` (gradients flow into it).
        rnet: the frozen :class:`face3dkit.nets.RNet` (put in eval mode here).
        model: the morphable model of the R-Net's layout.
        batch: ``image`` (S, K, H, W, 3) in [0, 1], ``landmarks`` (S, K, 68, 2) crop pixels, and
            for the supervised term ``coeffs`` (S, K, total) true coefficients.
        camera: the crop's camera.
        cfg: the hybrid loss' settings (its own ``supervised`` is ignored: it would supervise the
            R-Net's blocks, which the C-Net does not change).
        supervised: weight of the mean squared error of the aggregated identity and albedo against
            the truth (needs ``coeffs``).
        perceptual: optional :class:`face3dkit.losses.PerceptualLoss`.

    Returns:
        (total, the terms by name: the hybrid loss' and ``supervised`` when used).
    """
    images = batch["image"]
    s, k = images.shape[:2]
    flat = images.reshape(s * k, *images.shape[2:])
    rnet.eval()
    with torch.no_grad():
        pred, feats = rnet.forward_with_features(flat.permute(0, 3, 1, 2))
    conf_id, conf_tex = cnet(feats)
    c, a_id, a_tex = aggregate_coefficients(Coefficients.split(pred, model.layout), conf_id, conf_tex, s)
    hcfg = dataclasses.replace(cfg or HybridLossConfig(), supervised=0.0)
    total, terms = hybrid_loss(model, c, flat, batch["landmarks"].reshape(s * k, -1, 2), camera, hcfg, perceptual)
    if supervised > 0 and "coeffs" in batch:
        true = Coefficients.split(batch["coeffs"][:, 0].to(a_id), model.layout)
        terms["supervised"] = torch.cat([a_id - true.id, a_tex - true.tex], 1).pow(2).mean()
        total = total + supervised * terms["supervised"]
    return total, terms


def cnet_train_step(cnet: torch.nn.Module, rnet: Any, model: MorphableModel, batch: dict[str, Tensor],
                    optimizer: Any, camera: Any, cfg: HybridLossConfig | None = None, supervised: float = 0.0,
                    perceptual: Any = None) -> dict[str, float]:
    """One optimisation step of the C-Net (:func:`cnet_loss`); returns the terms and ``loss`` as floats."""
    cnet.train()
    optimizer.zero_grad(set_to_none=True)
    total, terms = cnet_loss(cnet, rnet, model, batch, camera, cfg, supervised, perceptual)
    total.backward()
    optimizer.step()
    return {"loss": float(total.detach()), **{k: float(v.detach()) for k, v in terms.items()}}


def _config_from_dict(d: dict[str, Any]) -> CNetTrainConfig:
    d = dict(d)
    data = SyntheticFaces.from_dict(d.pop("data"))
    return CNetTrainConfig(**d, data=data)


def train_cnet(out: str | os.PathLike, cfg: CNetTrainConfig | None = None, resume: bool = False,
               progress: Callable[[int, int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train (or continue) a C-Net on a frozen R-Net in the run folder ``out``; returns the per-step metrics.

    Raises:
        CNetRunError: ``out`` holds a checkpoint and ``resume`` is False; or, resuming, the R-Net
            file is not the one the run started with.
        face3dkit.nets.CheckpointMismatchError: the R-Net checkpoint is missing or unreadable.
    """
    import face3dkit
    from face3dkit.nets import CNet, RNet

    out = Path(out)
    ckpt = out / "checkpoint.pt"
    state = read_run_checkpoint(out, resume, "a C-Net run", CNetRunError)
    if state is not None:
        cfg = _config_from_dict(state["config"])
    if cfg is None or not cfg.rnet:
        raise CNetRunError(f"{out}: a new C-Net run needs the R-Net checkpoint (CNetTrainConfig.rnet / --rnet)")
    if state is None:  # recorded absolute: a resumed run finds it from any working folder
        cfg = dataclasses.replace(cfg, rnet=os.path.abspath(cfg.rnet))
    dev = torch.device(cfg.device)
    model = face3dkit.load_model(cfg.model, device=dev)
    rnet = RNet.load(cfg.rnet)
    if rnet.layout != model.layout:
        raise CNetRunError(f"{cfg.rnet}: an R-Net for {rnet.layout.total} coefficients does not fit model "
                           f"{cfg.model!r} ({model.layout.total})")
    rnet_sha = file_sha256(cfg.rnet)
    if state is not None and state.get("rnet_sha256") != rnet_sha:
        raise CNetRunError(f"{cfg.rnet}: not the R-Net this C-Net run was started with (its SHA-256 changed)")
    rnet = rnet.to(dev).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # the initial weights follow the seed; the global generator is left alone
        torch.manual_seed(cfg.seed)
        cnet = CNet(rnet.feature_channels, model.layout.n_id, model.layout.n_tex, cfg.width).to(dev)
    opt = torch.optim.Adam(cnet.parameters(), lr=cfg.lr)
    rows: list[dict[str, float]] = []
    start = 0
    if state is not None:
        cnet.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        start, rows = int(state["step"]), list(state["metrics"])
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps({**asdict(cfg), "rnet_sha256": rnet_sha}, indent=2))
    cam = PerspectiveCamera.for_image_size(cfg.data.size)
    loss_cfg = HybridLossConfig()

    def save(step: int) -> None:
        with atomic_open(ckpt) as f:
            torch.save({"net": cnet.state_dict(), "opt": opt.state_dict(), "step": step, "metrics": rows,
                        "config": asdict(cfg), "rnet_sha256": rnet_sha}, f)
        write_metrics_csv(out / "metrics.csv", rows)

    t0 = time.perf_counter()
    for step in range(start, cfg.steps):
        batch = {k: v.to(dev) for k, v in
                 identity_sets(model, cfg.data, cfg.sets_per_batch, cfg.set_size, cfg.seed, step).items()}
        rec = {"step": step + 1, **cnet_train_step(cnet, rnet, model, batch, opt, cam, loss_cfg, cfg.supervised)}
        rows.append(rec)
        if progress is not None:
            progress(step + 1, cfg.steps, rec)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            save(step + 1)
    cnet.save(out / "cnet.pt", steps=cfg.steps, trained_seconds=round(time.perf_counter() - t0, 1),
              config=asdict(cfg), rnet_sha256=rnet_sha)
    return rows
