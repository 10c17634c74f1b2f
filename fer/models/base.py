"""What the trainer needs from a FER model, and the step context it hands to the model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn

__all__ = ["FerModel", "StepContext", "frozen", "keep_running_stats"]


class StepContext(Protocol):
    """Provided by the trainer to :meth:`FerModel.train_step` (mixed precision, data parallelism).

    ``autocast()`` wraps forward passes; ``step(name, loss)`` zeroes the gradients of optimizer
    ``name``, back-propagates ``loss`` (scaled under fp16), averages gradients over DDP ranks and
    steps the optimizer.
    """

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def step(self, name: str, loss: Tensor) -> None: ...


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Temporarily stop gradients into the parameters of ``modules`` (they still pass gradients)."""
    params = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def keep_running_stats(*modules: nn.Module | None) -> Iterator[None]:
    """Batch norm inside ``modules`` still normalises with batch statistics but leaves its running
    statistics untouched (momentum 0), so that e.g. generated images do not shift the statistics a
    classifier uses at test time on real images."""
    bn_types = nn.modules.batchnorm._BatchNorm
    bns = [m for mod in modules if mod is not None for m in mod.modules() if isinstance(m, bn_types)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved, strict=True):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)


class FerModel(nn.Module):
    """Base class of FER models trained by :class:`fer.train.Trainer`.

    Subclasses define ``kind``, ``config`` (a dataclass), :meth:`param_groups`,
    :meth:`optimizer_settings`, :meth:`train_step`, :meth:`loss_terms` and :meth:`classify`.
    """

    kind = "model"
    config: Any

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimizer name -> the parameters it updates (each parameter in exactly one group)."""
        raise NotImplementedError

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        """Keyword arguments of ``torch.optim.Adam`` for optimizer ``name`` (lr, betas, weight_decay)."""
        raise NotImplementedError

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """One optimisation step on a batch; returns scalar metrics (losses, batch accuracy)."""
        raise NotImplementedError

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The training loss terms on a batch without updating anything (for tests and monitoring)."""
        raise NotImplementedError

    def classify(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, 7) expression logits (call under ``eval()``)."""
        raise NotImplementedError

    def uses_geometry(self) -> bool:
        """Whether training batches must carry geometry (landmarks, pose class)."""
        return False

    def classifies_geometry(self) -> bool:
        """Whether classifying needs each face's geometry too (:meth:`classify_batch`, not :meth:`classify`)."""
        return False

    def classify_batch(self, batch: dict[str, Any]) -> Tensor:
        """Collated batch (``image`` (B, 3, H, W), geometry fields) -> (B, 7) logits (call under ``eval()``).

        The default classifies the pixels alone (:meth:`classify`); models that
        :meth:`classifies_geometry` also read the batch's geometry.
        """
        return self.classify(batch["image"])

    @staticmethod
    def classification_loss(logits: Tensor, batch: dict[str, Any], label_smoothing: float = 0.0) -> Tensor:
        """Loss of the expression classifier on a batch: cross-entropy with ``batch['label']``, or, when
        the trainer distils from teacher runs (``batch['teacher_probs']``, ``batch['distill'] = (alpha, T)``),
        :func:`fer.train.distill.distillation_loss`. Models call it for the classifier that predicts
        expressions at test time (not for discriminators)."""
        from fer.train.distill import distillation_loss

        y = batch["label"]
        if "teacher_probs" not in batch:
            return torch.nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        alpha, temperature = batch["distill"]
        return distillation_loss(logits, y, batch["teacher_probs"], alpha, temperature, label_smoothing)

    @staticmethod
    def _accuracy(logits: Tensor, labels: Tensor) -> float:
        return float((logits.argmax(1) == labels).float().mean()) if labels.numel() else float("nan")

    @staticmethod
    def _device_of(module: nn.Module) -> torch.device:
        return next(module.parameters()).device
