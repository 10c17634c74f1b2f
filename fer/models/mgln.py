"""MGLN: the multi-task global-local network for expression sequences (Yu, Zheng, Peng, Dong and Du,
"Facial expression recognition based on a multi-task global-local network", Pattern Recognition
Letters 2020).

The network (``S`` = image side, ``T`` = frames per sequence, onset -> peak; ``K`` = 7 classes):

* **Shared shallow module**: the first 10 layers of VGG-16 (conv1_1 .. pool2, torchvision keys
  ``features.0 .. features.9``; with ``shared_batch_norm`` the VGG-16-BN layout, ``features.0 ..
  features.13``). ImageNet weights load from a user file (``backbone_weights``, e.g. torchvision's
  ``vgg16-397923af.pth``; the deeper layers and the classifier in the file are skipped). Every frame
  ``(B*T, 3, S, S)`` -> ``(B*T, 128, S/4, S/4)``.
* **Global face module** (on the peak frame's shared features): ``len(global_channels)`` deformable
  3x3 convolutions (:class:`face3dkit.nets.DeformConv2dPack`, offsets predicted from the input,
  zero-initialised) with batch norm, ReLU and 2x2 max-pooling, dropout, then a 1x1 convolution with
  one channel per class and global average pooling -> logits ``z_g`` (B, K).
* **Part-based module**: three regions placed by the 68 iBUG landmarks of each frame - eyes (brows
  and eyes, points 17-26 and 36-47), nose (27-35), mouth (48-67). Each region's box is the points'
  bounding box grown by ``part_margin`` of its size on every side and at least ``part_min_size`` of
  the image; it is cut out of the frame's shared feature map by differentiable affine sampling
  (:func:`crop_boxes`, one batched ``grid_sample`` per part) at ``part_sizes`` cells. Each part has
  its own two conv-BN-ReLU layers and global average pooling; the three part vectors of a frame are
  concatenated and an LSTM runs over the T frames; its last output -> dropout -> linear -> ``z_p``.
  Frames without landmarks (all zeros) use :data:`TEMPLATE_BOXES`, boxes of a centred, aligned
  face crop (CK+48, FER2013-style crops).
* **Weighted decision fusion**: ``p = w softmax(z_g) + (1 - w) softmax(z_p)`` (:func:`fuse`).
  ``fusion='learned'``: ``w = sigmoid(a)`` with a scalar parameter ``a`` (starting at
  ``logit(fusion_weight)``), fitted by its own Adam optimizer (``fusion_lr``; at the network's
  learning rate a scalar would barely move in a few hundred steps) on ``NLL(log p, y)`` with the two
  modules' decisions held fixed (detached); ``fusion='fixed'``: ``w = fusion_weight``. The
  model's logits are ``log p``.

Multi-task loss of the network: ``w_global CE(z_g, y) + w_part CE(z_p, y) + w_fused NLL(log p, y)``
(each module is supervised on its own, as in the paper's multi-task training, and the fusion on
top).

Batches: ``frames`` (B, T, 3, S, S) and ``frame_landmarks`` (B, T, 68, 2) from
:class:`fer.data.SequenceDataset`; single-image batches (``image`` (B, 3, S, S), ``landmarks``
(B, 68, 2)) are sequences of one frame. :meth:`MGLNModel.classify` (images only, no landmarks,
e.g. ``fer predict``) returns the global face module's logits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from face3dkit.nets._checkpoint import load_checked_state_dict, read_state_dict
from face3dkit.nets.deform_conv import DeformConv2dPack
from face3dkit.nets.resnet import imagenet_normalize
from face3dkit.nets.vgg import VGG
from fer.labels import NUM_CLASSES
from fer.models.base import FerModel, StepContext

__all__ = [
    "PARTS",
    "PART_POINTS",
    "TEMPLATE_BOXES",
    "MGLNConfig",
    "MGLNModel",
    "crop_boxes",
    "fuse",
    "part_boxes",
    "shared_shallow_module",
]

#: The part regions, in the order of the part-based module.
PARTS: tuple[str, ...] = ("eyes", "nose", "mouth")
#: iBUG-68 indices of each part (eyes include the brows).
PART_POINTS: dict[str, tuple[int, ...]] = {
    "eyes": tuple(range(17, 27)) + tuple(range(36, 48)),
    "nose": tuple(range(27, 36)),
    "mouth": tuple(range(48, 68)),
}
#: Fallback boxes ``(x0, y0, x1, y1)`` in crop-normalised coordinates ([0, 1], x right, y down) for
#: frames without landmarks: the parts of a centred, aligned face crop.
TEMPLATE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "eyes": (0.08, 0.14, 0.92, 0.50),
    "nose": (0.30, 0.30, 0.70, 0.70),
    "mouth": (0.20, 0.58, 0.80, 0.92),
}

#: VGG-16 configuration of the shared shallow module: conv1_1, conv1_2, pool1, conv2_1, conv2_2, pool2.
SHALLOW_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M")


@dataclass
class MGLNConfig:
    """Settings of :class:`MGLNModel`.

    Attributes:
        backbone_weights: torchvision ``vgg16`` (or ``vgg16_bn`` with ``shared_batch_norm``)
            ImageNet ``state_dict`` file for the shared module; None: from scratch.
        shared_batch_norm: VGG-16-BN layout for the shared module (batch norm after each conv);
            None: the layout of ``backbone_weights`` when given, else True (from scratch on a few
            hundred sequences, the plain VGG layers train far slower than with batch norm).
        global_channels: widths of the global module's deformable convolutions.
        part_channels: width of each part's two convolutions.
        part_sizes: output (height, width) in feature-map cells of the eyes, nose and mouth crops.
        part_margin: each part box grows by this fraction of its size on every side.
        part_min_size: minimum box side as a fraction of the image.
        lstm_hidden: hidden size of the LSTM over frames.
        dropout: dropout before the class layers.
        fusion: ``'learned'`` (w = sigmoid(a), a trained) or ``'fixed'`` (w = ``fusion_weight``).
        fusion_weight: weight of the global module in the fusion (fixed, or the learned start).
        fusion_lr: Adam learning rate of the learned fusion weight's logit.
        w_global, w_part, w_fused: weights of the three cross-entropy terms.
        label_smoothing: label smoothing of the two module losses.
        lr, beta1, beta2, weight_decay: Adam settings (one optimizer for the whole network).
    """

    backbone_weights: str | None = None
    shared_batch_norm: bool | None = None
    global_channels: tuple[int, ...] = (256, 256)
    part_channels: int = 128
    part_sizes: tuple[tuple[int, int], ...] = ((6, 14), (8, 8), (6, 10))
    part_margin: float = 0.15
    part_min_size: float = 0.12
    lstm_hidden: int = 128
    dropout: float = 0.5
    fusion: str = "learned"
    fusion_weight: float = 0.5
    fusion_lr: float = 1e-2
    w_global: float = 1.0
    w_part: float = 1.0
    w_fused: float = 1.0
    label_smoothing: float = 0.0
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 1e-4

    @property
    def backbone(self) -> str:
        """Name of the shared module's network (for logs)."""
        return "vgg16_bn[:14]" if resolve_batch_norm(self) else "vgg16[:10]"


def resolve_batch_norm(config: MGLNConfig) -> bool:
    """The shared module's layout: ``shared_batch_norm``, else the weights file's, else batch norm."""
    if config.shared_batch_norm is not None:
        return bool(config.shared_batch_norm)
    if config.backbone_weights:
        keys = read_state_dict(os.fspath(config.backbone_weights), "cpu").keys()
        return any(k.endswith("running_mean") and k.startswith("features.") for k in keys)
    return True


def fuse(z_global: Tensor, z_part: Tensor, w: Tensor | float) -> Tensor:
    """Weighted decision fusion: ``log(w softmax(z_global) + (1 - w) softmax(z_part))``, (B, K) float32."""
    p = w * torch.softmax(z_global.float(), 1) + (1 - w) * torch.softmax(z_part.float(), 1)
    return torch.log(p).clamp(min=-100.0)


def shared_shallow_module(batch_norm: bool = False, weights: str | os.PathLike | None = None) -> VGG:
    """The first 10 layers of VGG-16 (14 with batch norm) as a :class:`face3dkit.nets.VGG` (``features`` only).

    Args:
        batch_norm: VGG-16-BN layout.
        weights: torchvision ``vgg16`` / ``vgg16_bn`` ``state_dict`` file; only ``features.N`` keys of
            the shallow layers are read (the rest of the file is skipped).

    Returns:
        A module whose ``features`` maps ``(B, 3, H, W)`` ImageNet-normalised -> ``(B, 128, H/4, W/4)``.

    Raises:
        CheckpointMismatchError: one line naming the file when the shallow keys do not fit.
    """
    net = VGG(SHALLOW_CFG, batch_norm=batch_norm, with_classifier=False)
    if weights is not None:
        source = os.fspath(weights)
        n = len(net.features)
        state = {k: v for k, v in read_state_dict(source, "cpu").items()
                 if k.startswith("features.") and int(k.split(".")[1]) < n}
        load_checked_state_dict(net, state, source, "VGG-16 shallow layers" + (" (BN)" if batch_norm else ""))
    return net


def part_boxes(landmarks: Tensor, margin: float = 0.15, min_size: float = 0.12) -> Tensor:
    """Eyes / nose / mouth boxes from 68 landmarks.

    Args:
        landmarks: ``(..., 68, 2)`` crop-normalised points ([0, 1], x right, y down); an all-zero
            set means "unknown" and gets :data:`TEMPLATE_BOXES`.
        margin: growth on each side as a fraction of the points' extent.
        min_size: minimum side as a fraction of the image.

    Returns:
        ``(..., 3, 4)`` boxes ``(x0, y0, x1, y1)`` in the same coordinates, parts in :data:`PARTS` order.
    """
    boxes = []
    for name in PARTS:
        pts = landmarks[..., list(PART_POINTS[name]), :]
        lo, hi = pts.amin(-2), pts.amax(-2)
        centre, half = (lo + hi) / 2, (hi - lo) * (0.5 + margin)
        half = half.clamp(min=min_size / 2)
        boxes.append(torch.cat([centre - half, centre + half], -1))
    out = torch.stack(boxes, -2)
    known = landmarks.abs().sum((-1, -2)) > 0
    template = torch.tensor([TEMPLATE_BOXES[n] for n in PARTS], device=out.device, dtype=out.dtype)
    return torch.where(known[..., None, None], out, template)


def crop_boxes(x: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample boxes of feature maps to a fixed grid (bilinear, differentiable in ``x`` and ``boxes``).

    Output cell ``(i, j)`` of a box ``(x0, y0, x1, y1)`` samples ``x`` at the normalised point
    ``(x0 + (j + 0.5) (x1 - x0) / w, y0 + (i + 0.5) (y1 - y0) / h)`` (``grid_sample``,
    ``align_corners=False``: 0 and 1 are the outer edges of the map; outside reads zeros). A box
    spanning exactly pixels ``[c, c + w) x [r, r + h)`` therefore returns ``x[..., r:r+h, c:c+w]``.

    Args:
        x: ``(N, C, H, W)``.
        boxes: ``(N, 4)`` boxes in crop-normalised ``[0, 1]`` coordinates.
        size: output ``(h, w)``.

    Returns:
        ``(N, C, h, w)``.
    """
    n = x.shape[0]
    x0, y0, x1, y1 = boxes.to(x.dtype).unbind(-1)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = x1 - x0  # normalised span 2 * (x1 - x0) / 2
    theta[:, 0, 2] = x0 + x1 - 1.0  # centre 2 * (x0 + x1) / 2 - 1
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1.0
    grid = F.affine_grid(theta, [n, x.shape[1], size[0], size[1]], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class GlobalFaceModule(nn.Module):
    """Deformable conv-BN-ReLU-pool stages, dropout, 1x1 conv to K channels, global average: (B, C, h, w) -> (B, K)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], num_classes: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in channels:
            layers += [DeformConv2dPack(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c = w
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.classes = nn.Conv2d(c, num_classes, 1)

    def forward(self, f: Tensor) -> Tensor:
        return self.classes(self.dropout(self.body(f))).mean((2, 3))


class PartBranch(nn.Module):
    """Two 3x3 conv-BN-ReLU layers and global average pooling: (N, C, h, w) -> (N, width)."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).mean((2, 3))


class PartBasedModule(nn.Module):
    """Landmark-placed part crops of every frame, per-part convs, an LSTM over frames: -> (B, K)."""

    def __init__(self, in_channels: int, config: MGLNConfig, num_classes: int) -> None:
        super().__init__()
        if len(config.part_sizes) != len(PARTS):
            raise ValueError(f"part_sizes needs {len(PARTS)} (height, width) pairs ({', '.join(PARTS)}), "
                             f"got {len(config.part_sizes)}")
        self.sizes = [(int(h), int(w)) for h, w in config.part_sizes]
        self.margin, self.min_size = config.part_margin, config.part_min_size
        self.branches = nn.ModuleList(PartBranch(in_channels, config.part_channels) for _ in PARTS)
        self.lstm = nn.LSTM(len(PARTS) * config.part_channels, config.lstm_hidden, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(config.lstm_hidden, num_classes)

    def boxes(self, landmarks: Tensor) -> Tensor:
        """``(..., 68, 2)`` -> ``(..., 3, 4)`` part boxes (:func:`part_boxes` with this module's margins)."""
        return part_boxes(landmarks, self.margin, self.min_size)

    def forward(self, feats: Tensor, landmarks: Tensor, steps: int) -> Tensor:
        """``feats`` (B*T, C, h, w) frame-major per sequence, ``landmarks`` (B*T, 68, 2) -> (B, K)."""
        boxes = self.boxes(landmarks.to(feats.dtype))
        vec = torch.cat([branch(crop_boxes(feats, boxes[:, p], self.sizes[p]))
                         for p, branch in enumerate(self.branches)], 1)
        out, _ = self.lstm(vec.view(-1, steps, vec.shape[1]))
        return self.fc(self.dropout(out[:, -1]))


class MGLNModel(FerModel):
    """MGLN (see the module docstring). Batches carry ``frames``/``frame_landmarks`` or ``image``/``landmarks``."""

    kind = "mgln"

    def __init__(self, config: MGLNConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MGLNConfig()
        if c.fusion not in ("learned", "fixed"):
            raise ValueError(f"MGLN fusion must be 'learned' or 'fixed', got {c.fusion!r}")
        if not 0.0 < c.fusion_weight < 1.0:
            raise ValueError(f"MGLN fusion_weight must lie in (0, 1), got {c.fusion_weight}")
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        c.shared_batch_norm = resolve_batch_norm(c)  # stored resolved: a rebuilt run has no weights file
        self.shared = shared_shallow_module(c.shared_batch_norm, weights)
        width = int(SHALLOW_CFG[-2])
        self.global_module = GlobalFaceModule(width, tuple(c.global_channels), NUM_CLASSES, c.dropout)
        self.part_module = PartBasedModule(width, c, NUM_CLASSES)
        start = torch.logit(torch.tensor(float(c.fusion_weight)))
        if c.fusion == "learned":
            self.fusion_logit = nn.Parameter(start.clone())
        else:
            self.register_buffer("fusion_logit", start.clone())

    # -- trainer interface ------------------------------------------------------------------------
    def uses_geometry(self) -> bool:
        return True

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``mgln``: the network; ``fusion``: the learned fusion logit (absent for fixed fusion)."""
        fusion = [self.fusion_logit] if isinstance(self.fusion_logit, nn.Parameter) else []
        groups = {"mgln": [p for p in self.parameters() if all(p is not q for q in fusion)]}
        if fusion:
            groups["fusion"] = fusion
        return groups

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        if name == "fusion":
            return {"lr": c.fusion_lr, "betas": (c.beta1, c.beta2), "weight_decay": 0.0}
        return {"lr": c.lr, "betas": (c.beta1, c.beta2), "weight_decay": c.weight_decay}

    # -- forward ----------------------------------------------------------------------------------
    @property
    def fusion_weight(self) -> Tensor:
        """Weight w of the global module in the decision fusion (scalar tensor in (0, 1))."""
        return torch.sigmoid(self.fusion_logit)

    def _shared(self, images: Tensor) -> Tensor:
        if images.shape[-1] < 16 or images.shape[-2] < 16:
            raise ValueError(f"MGLN needs images of at least 16 x 16 pixels, got {tuple(images.shape[-2:])}")
        return self.shared.features(imagenet_normalize(images))

    @staticmethod
    def sequence_inputs(batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """``(B, T, 3, S, S)`` frames and ``(B, T, 68, 2)`` landmarks of a batch (one frame if it has no ``frames``)."""
        if "frames" in batch:
            frames = batch["frames"]
            lm = batch.get("frame_landmarks")
        else:
            frames = batch["image"][:, None]
            lm = batch.get("landmarks")
            lm = None if lm is None else lm[:, None]
        if lm is None:
            lm = torch.zeros(*frames.shape[:2], 68, 2, device=frames.device, dtype=frames.dtype)
        return frames, lm

    def forward_modules(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        """``{'global', 'part', 'fused'}`` (B, K): module logits and the fused log-probabilities."""
        frames, lm = self.sequence_inputs(batch)
        b, t = frames.shape[:2]
        feats = self._shared(frames.flatten(0, 1))
        peak = feats.view(b, t, *feats.shape[1:])[:, -1]
        z_g = self.global_module(peak)
        z_p = self.part_module(feats, lm.flatten(0, 1), t)
        return {"global": z_g, "part": z_p, "fused": fuse(z_g, z_p, self.fusion_weight.float())}

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c = self.config
        y = batch["label"]
        out = self.forward_modules(batch)
        ce_g = self.classification_loss(out["global"], batch, c.label_smoothing)
        ce_p = self.classification_loss(out["part"], batch, c.label_smoothing)
        nll = F.nll_loss(out["fused"], y)
        total = c.w_global * ce_g + c.w_part * ce_p + c.w_fused * nll
        return {"loss": total, "ce_global": ce_g, "ce_part": ce_p, "nll_fused": nll, "_logits": out["fused"],
                "_global": out["global"], "_part": out["part"]}

    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            terms = self.loss_terms(batch)
        ctx.step("mgln", terms["loss"])
        y = batch["label"]
        if isinstance(self.fusion_logit, nn.Parameter):  # the fusion weight on the modules' fixed decisions
            fused = fuse(terms["_global"].detach(), terms["_part"].detach(), self.fusion_weight.float())
            ctx.step("fusion", F.nll_loss(fused, y))
        out = {k: float(v.detach()) for k, v in terms.items() if not k.startswith("_")}
        out["acc"] = self._accuracy(terms["_logits"], y)
        out["acc_global"] = self._accuracy(terms["_global"], y)
        out["acc_part"] = self._accuracy(terms["_part"], y)
        out["fusion_w"] = float(self.fusion_weight.detach())
        return out

    def classify(self, images: Tensor) -> Tensor:
        """Images only (no landmarks, no sequence): the global face module's logits (B, K)."""
        return self.global_module(self._shared(images))

    def classify_batch(self, batch: dict[str, Any]) -> Tensor:
        """Fused log-probabilities (B, K) of a batch with frames/landmarks (used by :mod:`fer.evaluate`)."""
        return self.forward_modules(batch)["fused"]
