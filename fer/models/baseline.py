"""The plain CNN baseline: GGPI's classifier (backbone, FC 1024, dropout, expression head); no GAN, no geometry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from fer.labels import NUM_CLASSES
from fer.models.backbone import ExpressionClassifier
from fer.models.base import FerModel, StepContext

__all__ = ["BaselineConfig", "BaselineModel"]


@dataclass
class BaselineConfig:
    """Settings of :class:`BaselineModel` (optimizer as GGPI's classifier D_acc for a fair comparison).

    Attributes:
        backbone: classifier backbone (``resnet50`` as GGPI; ``resnet18``/``tiny`` for CPU runs).
        backbone_weights: torchvision ImageNet weights file for the backbone (None: from scratch).
        hidden, dropout: the FC layer and its dropout.
        lr, beta1, beta2, weight_decay: Adam settings.
        label_smoothing: cross-entropy label smoothing.
    """

    backbone: str = "resnet50"
    backbone_weights: str | None = None
    hidden: int = 1024
    dropout: float = 0.5
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.0
    label_smoothing: float = 0.0


class BaselineModel(FerModel):
    """Expression classifier trained with cross-entropy on real images only."""

    kind = "baseline"

    def __init__(self, config: BaselineConfig | None = None) -> None:
        super().__init__()
        self.config = config or BaselineConfig()
        c = self.config
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        self.classifier = ExpressionClassifier(c.backbone, NUM_CLASSES, 0, c.hidden, c.dropout, weights)
        self.ce = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"cls": list(self.classifier.parameters())}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2), "weight_decay": c.weight_decay}

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits, _ = self.classifier(batch["image"])
        return {"cls_real": self.ce(logits.float(), batch["label"]), "_logits": logits}

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            terms = self.loss_terms(batch)
        ctx.step("cls", terms["cls_real"])
        return {"loss": float(terms["cls_real"].detach()), "acc": self._accuracy(terms["_logits"], batch["label"])}

    def classify(self, images: Tensor) -> Tensor:
        return self.classifier(images)[0]
