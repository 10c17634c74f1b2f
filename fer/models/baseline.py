"""The plain CNN baseline: GGPI's classifier (backbone, FC 1024, dropout, expression head); no GAN.

With ``fuse_geometry=True`` (``fer train --model baseline --geometry 3dmm``) it is the "3D-face-first"
baseline: the CNN's FC features (B, hidden) are concatenated with a
:class:`fer.models.geometry.GeometryEncoder` code of the face's fitted expression coefficients and
pose (B, geo_hidden[-1]) before a linear expression head. Without geometry the model is exactly the
plain classifier (same parameters, same checkpoints as before).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fer.labels import NUM_CLASSES
from fer.models.backbone import ExpressionClassifier
from fer.models.base import FerModel, StepContext
from fer.models.geometry import GeometryEncoder

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
        fuse_geometry: fuse the fitted-geometry code with the CNN features (batches must carry the
            ``3dmm`` provider's ``geom_exp``, ``geom_pose``, ``geom_valid``).
        n_exp: expression coefficients per face (fusion only; set from the data by ``fer train``).
        geo_use_landmarks, geo_hidden, geo_dropout: the geometry encoder (fusion only; defaults as
            :class:`fer.models.geometry.GeometryConfig`'s).
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
    fuse_geometry: bool = False
    n_exp: int = 34
    geo_use_landmarks: bool = True
    geo_hidden: tuple[int, ...] = (128,)
    geo_dropout: float = 0.5


class BaselineModel(FerModel):
    """Expression classifier trained with cross-entropy on real images only (optionally + fitted geometry)."""

    kind = "baseline"

    def __init__(self, config: BaselineConfig | None = None) -> None:
        super().__init__()
        self.config = config or BaselineConfig()
        c = self.config
        c.geo_hidden = tuple(int(h) for h in c.geo_hidden)
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        self.classifier = ExpressionClassifier(c.backbone, NUM_CLASSES, 0, c.hidden, c.dropout, weights)
        if c.fuse_geometry:
            self.geometry = GeometryEncoder(c.n_exp, c.geo_use_landmarks, c.geo_hidden, c.geo_dropout)
            # the fused head replaces the classifier's pixel-only head
            self.classifier.expression = nn.Linear(c.hidden + self.geometry.num_features, NUM_CLASSES)
        else:
            self.geometry = None

    def uses_geometry(self) -> bool:
        return self.geometry is not None

    def classifies_geometry(self) -> bool:
        return self.geometry is not None

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"cls": list(self.classifier.parameters())
                + ([] if self.geometry is None else list(self.geometry.parameters()))}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2), "weight_decay": c.weight_decay}

    def classify_batch(self, batch: dict[str, Any]) -> Tensor:
        """Collated batch -> (B, 7) logits (pixels, plus the fitted geometry when fused)."""
        if self.geometry is None:
            return self.classifier(batch["image"])[0]
        h = self.classifier.features(batch["image"])
        g = self.geometry(batch).to(h.dtype)
        return self.classifier.expression(torch.cat([h, g], 1))

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = self.classify_batch(batch)
        return {"cls_real": self.classification_loss(logits, batch, self.config.label_smoothing), "_logits": logits}

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            terms = self.loss_terms(batch)
        ctx.step("cls", terms["cls_real"])
        return {"loss": float(terms["cls_real"].detach()), "acc": self._accuracy(terms["_logits"], batch["label"])}

    def classify(self, images: Tensor) -> Tensor:
        if self.geometry is not None:
            raise ValueError("this baseline fuses fitted geometry: call classify_batch on a batch with geometry "
                             "attached (geom_exp, geom_pose)")
        return self.classifier(images)[0]
