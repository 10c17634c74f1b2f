"""Knowledge distillation (Hinton, Vinyals & Dean 2015): a student learns from finished runs.

The teachers are finished fer run folders (:func:`fer.train.run.load_run`), frozen in eval mode.
On every training batch, after augmentation (the images the student sees), the trainer adds the
teachers' mean softened probabilities ``mean_k softmax(z_k / T)`` as ``batch['teacher_probs']`` and
the settings as ``batch['distill'] = (alpha, T)``. A model's classification loss
(:meth:`fer.models.FerModel.classification_loss`) then becomes

    (1 - alpha) * CE(student logits, labels) + alpha * T^2 * KL(teacher_T || student_T),

the ``T^2`` keeping the soft term's gradients on the scale of the hard one; ``alpha = 0`` is the
plain loss exactly. Teachers run deterministically (eval mode, no gradients), so resuming a
distilled run reproduces the next step as for a plain run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Teachers", "distillation_loss", "soft_probabilities"]


def soft_probabilities(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` in float32."""
    return F.softmax(logits.float() / temperature, dim=1)


def distillation_loss(logits: Tensor, labels: Tensor, teacher_probs: Tensor, alpha: float, temperature: float,
                      label_smoothing: float = 0.0) -> Tensor:
    """``(1 - alpha) CE(logits, labels) + alpha T^2 KL(teacher_probs || softmax(logits / T))`` (batch mean)."""
    ce = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    log_q = F.log_softmax(logits.float() / temperature, dim=1)
    kl = F.kl_div(log_q, teacher_probs.float(), reduction="batchmean")
    return (1.0 - alpha) * ce + alpha * temperature**2 * kl


class Teachers:
    """Frozen teacher runs whose mean softened probabilities a student learns from.

    Args:
        runs: fer run folders (finished trainings).
        temperature: softmax temperature ``T`` (> 0).
        alpha: weight of the soft term, in [0, 1].
        labels: the student's class list; every teacher must have been trained on the same one.
        image_size: the student's image side (the teachers see the student's images).
        device: where the teachers run.

    Raises:
        ValueError: (one line) a teacher with another class list or image size, bad alpha / T.
    """

    def __init__(self, runs: Sequence[str | os.PathLike], temperature: float, alpha: float, labels: Sequence[str],
                 image_size: int | None = None, device: str | torch.device = "cpu") -> None:
        from fer.train.run import load_run

        if not runs:
            raise ValueError("distillation needs at least one teacher run")
        if not temperature > 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distillation needs temperature > 0 and alpha in [0, 1], got {temperature} and {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.runs = [str(r) for r in runs]
        self.models = []
        for run in self.runs:
            model, info = load_run(run, device)
            if list(info.get("labels", [])) != list(labels):
                raise ValueError(f"teacher {run}: trained on classes {list(info.get('labels', []))}, the student on "
                                 f"{list(labels)}")
            if image_size is not None and int(info.get("image_size", image_size)) != int(image_size):
                raise ValueError(f"teacher {run}: trained at {info['image_size']} px, the student at {image_size} px")
            for p in model.parameters():
                p.requires_grad_(False)
            self.models.append(model.eval())

    def needs_geometry_features(self) -> bool:
        """Whether some teacher classifies with the fitted geometry (the batch must keep ``geom_exp``)."""
        return any(m.classifies_geometry() for m in self.models)

    @torch.no_grad()
    def probabilities(self, batch: dict[str, Any]) -> Tensor:
        """(B, K) mean of the teachers' ``softmax(logits / T)`` on a collated batch."""
        probs = [soft_probabilities(m.classify_batch(batch), self.temperature) for m in self.models]
        return torch.stack(probs).mean(0)

    def annotate(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with ``teacher_probs`` and ``distill = (alpha, T)`` added."""
        return {**batch, "teacher_probs": self.probabilities(batch), "distill": (self.alpha, self.temperature)}
