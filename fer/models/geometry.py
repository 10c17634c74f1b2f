"""The geometry-coefficient model: an MLP on face3dkit's fitted expression coefficients, pose and landmarks.

The ``3dmm`` geometry provider (:class:`fer.conditioning.ThreeDMMProvider`) fits the morphable model to
the 68 landmarks of every face; its table gives per sample the fitted expression coefficients
(``geom_exp``, (K,) with K the model's ``n_exp``), the head pose (``geom_pose``, yaw/pitch/roll in
degrees), the fitted model's landmarks re-projected into the crop (``landmarks``) and whether the fit
succeeded (``geom_valid``). :class:`GeometryEncoder` turns them into a feature vector:

* expression coefficients as fitted (K values),
* pose as ``(sin, cos)`` of yaw, pitch and roll (6 values: continuous across +-180 degrees),
* the 136 fitted landmark coordinates, centred on their mean and divided by their RMS radius
  (translation and scale removed; ``use_landmarks``, on by default),
* a validity flag; the features of a failed fit are zeros,

standardised by a batch norm without affine parameters (running mean/variance as the test-time
standardisation), then FC-BN-ReLU-dropout blocks.

:class:`GeometryModel` (``fer train --model geometry``) classifies from these features alone - the
"3D-face-first" floor: what the fitted 3D face says about the expression, whatever the pixels say.
:class:`fer.models.baseline.BaselineModel` with ``fuse_geometry=True`` (``--model baseline --geometry
3dmm``) concatenates the encoder's output with its CNN features before the expression head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fer.labels import NUM_CLASSES
from fer.models.base import FerModel, StepContext

__all__ = ["GeometryConfig", "GeometryEncoder", "GeometryModel", "geometry_features", "geometry_feature_dim"]


def geometry_feature_dim(n_exp: int, use_landmarks: bool) -> int:
    """Length of :func:`geometry_features`' vector: K coefficients + 6 pose + (136 landmarks) + 1 flag."""
    return int(n_exp) + 6 + (136 if use_landmarks else 0) + 1


def geometry_features(batch: dict[str, Any], n_exp: int, use_landmarks: bool = False) -> Tensor:
    """(B, F) geometry feature vectors of a collated batch (F = :func:`geometry_feature_dim`).

    Args:
        batch: with ``geom_pose`` (B, 3) degrees, ``geom_valid`` (B,) bool (optional: the pose being
            finite), ``geom_exp`` (B, n_exp) when ``n_exp > 0``, ``landmarks`` (B, 68, 2) crop-normalised
            when ``use_landmarks``.
        n_exp: number of expression coefficients the model was built for (0: none).
        use_landmarks: append the centred, scale-normalised landmarks.

    Raises:
        ValueError: a field is missing or has another size than the model was built for.
    """
    if "geom_pose" not in batch:
        raise ValueError("batch has no geometry (geom_pose): attach a geometry provider's table to the dataset")
    pose = batch["geom_pose"]
    b = pose.shape[0]
    valid = batch.get("geom_valid")
    valid = torch.isfinite(pose).all(1) if valid is None else valid.to(pose.device).bool()
    valid = valid & torch.isfinite(pose).all(1)
    rad = torch.nan_to_num(pose.float(), nan=0.0) * (math.pi / 180.0)
    parts = [torch.sin(rad), torch.cos(rad)]
    if n_exp > 0:
        exp = batch.get("geom_exp")
        if exp is None:
            raise ValueError(f"batch has no fitted expression coefficients (geom_exp); the model expects {n_exp} "
                             "from the '3dmm' geometry provider")
        if exp.shape[-1] != n_exp:
            raise ValueError(f"batch has {exp.shape[-1]} expression coefficients, the model was built for {n_exp}")
        parts.insert(0, torch.nan_to_num(exp.float(), nan=0.0))
    if use_landmarks:
        lm = batch["landmarks"].float()
        c = lm - lm.mean(1, keepdim=True)
        radius = c.square().sum(2).mean(1).sqrt().clamp_min(1e-6)
        parts.append((c / radius[:, None, None]).reshape(b, 136))
    feats = torch.cat(parts, 1) * valid[:, None].float()
    return torch.cat([feats, valid[:, None].float()], 1)


class GeometryEncoder(nn.Module):
    """Geometry features -> standardisation -> ``len(hidden)`` FC-BN-ReLU-dropout blocks: (B, hidden[-1]).

    Args:
        n_exp: expression coefficients per face (0: pose (+ landmarks) only).
        use_landmarks: also encode the landmarks.
        hidden: widths of the FC blocks.
        dropout: dropout after each block.
    """

    def __init__(self, n_exp: int, use_landmarks: bool = True, hidden: tuple[int, ...] = (128,),
                 dropout: float = 0.5) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the geometry encoder needs at least one hidden layer")
        self.n_exp = int(n_exp)
        self.use_landmarks = bool(use_landmarks)
        d = geometry_feature_dim(self.n_exp, self.use_landmarks)
        self.standardize = nn.BatchNorm1d(d, affine=False)
        layers: list[nn.Module] = []
        for w in hidden:
            layers += [nn.Linear(d, w, bias=False), nn.BatchNorm1d(w), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = w
        self.mlp = nn.Sequential(*layers)
        self.num_features = d

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Batch (see :func:`geometry_features`) -> (B, num_features)."""
        x = geometry_features(batch, self.n_exp, self.use_landmarks).to(self.standardize.running_mean.device)
        return self.mlp(self.standardize(x))


@dataclass
class GeometryConfig:
    """Settings of :class:`GeometryModel`.

    Attributes:
        n_exp: fitted expression coefficients per face (the morphable model's ``n_exp``; set from the
            data by ``fer train``); 0 uses pose (and landmarks) only.
        use_landmarks: also feed the normalised fitted landmarks (136 values).
        hidden, dropout: the MLP.

    The defaults (landmarks on, one FC 128 block, dropout 0.5, weight decay 1e-2) were picked by
    subject-disjoint 2-fold validation inside the CK+48 *training* set (held-out accuracy 85.1%
    vs 79.8% for coefficients + pose through FC 256-256, dropout 0.3, weight decay 1e-4); the
    test split was not used.
        lr, beta1, beta2, weight_decay: Adam settings.
        label_smoothing: cross-entropy label smoothing.
    """

    n_exp: int = 34
    use_landmarks: bool = True
    hidden: tuple[int, ...] = (128,)
    dropout: float = 0.5
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 1e-2
    label_smoothing: float = 0.0


class GeometryModel(FerModel):
    """Expression classifier on fitted 3DMM geometry only (see the module docstring).

    Batches must carry ``geom_pose``, ``geom_valid`` and ``geom_exp`` (``landmarks`` with
    ``use_landmarks``); the pixels are not used.
    """

    kind = "geometry"

    def __init__(self, config: GeometryConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeometryConfig()
        c = self.config
        c.hidden = tuple(int(h) for h in c.hidden)
        self.encoder = GeometryEncoder(c.n_exp, c.use_landmarks, c.hidden, c.dropout)
        self.head = nn.Linear(self.encoder.num_features, NUM_CLASSES)

    def uses_geometry(self) -> bool:
        return True

    def classifies_geometry(self) -> bool:
        return True

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"cls": list(self.parameters())}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2), "weight_decay": c.weight_decay}

    def classify_batch(self, batch: dict[str, Any]) -> Tensor:
        """Collated batch (geometry fields) -> (B, 7) expression logits."""
        return self.head(self.encoder(batch))

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        logits = self.classify_batch(batch)
        return {"cls_real": self.classification_loss(logits, batch, self.config.label_smoothing), "_logits": logits}

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            terms = self.loss_terms(batch)
        ctx.step("cls", terms["cls_real"])
        return {"loss": float(terms["cls_real"].detach()), "acc": self._accuracy(terms["_logits"], batch["label"])}

    def classify(self, images: Tensor) -> Tensor:
        """Not available: the model needs the fitted geometry of the faces (use :meth:`classify_batch`)."""
        raise ValueError("the geometry model classifies fitted geometry, not pixels: call classify_batch on a batch "
                         "with geometry attached (geom_exp, geom_pose)")
