"""DR-GAN: the disentangled-representation GAN (Tran, Yin & Liu, CVPR 2017 / TPAMI 2018), for FER.

The generator is an encoder-decoder: the encoder maps a face to a pose-invariant representation
``f(x)``; the decoder renders ``[f(x), pose code c, noise z]`` as the same face at the pose of
``c``. The discriminator classifies an image into ``Nd + 1`` classes (here the ``Nd = 7``
expressions, or identities, plus one *fake* class) and into ``Np`` pose classes. Since the
decoder must produce the input's class at any requested pose, ``f(x)`` is pushed to carry the
class and not the pose; the expression head on ``f(x)`` is the FER model used at test time.

Pose classes come from the geometry provider's yaw (``geom_pose``, face3dkit's 3DMM fit with
``--geometry 3dmm``): bins of ``yaw_step`` degrees centred on 0, ±15, ..., ±``yaw_max``
(:func:`drgan_pose_class`; yaw beyond goes to the outer bins; unknown yaw, -1, is left out of the
pose losses). This is where face3dkit's geometry conditions the model; without geometry
(``use_geometry=False``) there is no pose code and no pose head (the no-geometry twin).

Networks (``s`` = image side, a power of two; ``c`` = 3 RGB or 1 grey):

* **G_enc**: a backbone of :mod:`fer.models.backbone` (``cnn`` / ResNet; CASIA-Net in the paper),
  then a linear layer to ``feat_dim + 1``: ``f(x)`` (B, feat_dim) and, for the multi-image variant,
  the confidence ``w(x) = sigmoid(.)`` (B,).
* **G_dec**: ``[f, one-hot pose (Np), z ~ U[-1, 1]^noise_dim]`` ->
  :class:`fer.models.gan_blocks.ConvDecoder` -> (B, c, s, s) in [-1, 1].
* **D**: :class:`fer.models.gan_blocks.ConvEncoder` (ELU, average-pooled convolution head) ->
  ``Nd + 1`` class logits and ``Np`` pose logits.
* **expression head**: dropout + linear on ``f(x)`` -> (B, 7).

One step on a batch (x, expression y, pose class p), target poses ``t`` drawn uniformly:

* D: ``CE_d(D(x), y) + w_pose_adv CE_p(D(x), p) + CE_d(D(x_g), fake)`` with ``x_g = G_dec(f(x), t, z)``;
* G (encoder, decoder, head): ``w_adv CE_d(D(x_g), y) + w_pose_adv CE_p(D(x_g), t) + w_cls CE(head(f(x)), y)``
  (+ ``w_rec L1(G_dec(f(x), p, z), x)``, an option outside the paper, off by default).

Multi-image variant (``multi_image=True``): images of the batch sharing expression and (when
known) identity are fused, ``f_fused = sum_i w_i f(x_i) / sum_i w_i``; one image is generated
from every fused group of two or more at a random pose and enters both losses like the
single-image ones, as in the paper's joint single- and multi-image training.

Defaults follow the paper: f of 320 dimensions, noise 50 (uniform in [-1, 1]), Adam lr 2e-4 with
beta1 0.5; the paper's images are 96 px (here a power of two, 128 by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from face3dkit.nets.resnet import imagenet_normalize
from fer.labels import NUM_CLASSES
from fer.models.backbone import build_backbone
from fer.models.base import FerModel, StepContext, frozen
from fer.models.gan_blocks import ConvDecoder, ConvEncoder, num_stages, to_network, to_unit

__all__ = ["DRGANConfig", "DRGANModel", "DRGANEncoder", "drgan_pose_class", "fuse_by_group"]


@dataclass
class DRGANConfig:
    """Architecture, loss weights and optimizer settings of :class:`DRGANModel` (paper defaults).

    Attributes:
        image_size: input/output side, a power of two >= 16 (96 in the paper).
        channels: generated/discriminated image channels (3 RGB, 1 grey).
        use_geometry: pose codes from the geometry's yaw (False: no pose code, no pose head).
        yaw_step, yaw_max: pose bins of ``yaw_step`` degrees centred on 0 up to ±``yaw_max``.
        backbone, backbone_weights: the encoder's backbone and its torchvision weights file.
        feat_dim: size of the representation f(x) (320 in the paper).
        noise_dim: noise size (50, uniform in [-1, 1]).
        gen_channels: channels of the decoder's 4 x 4 map (halving per stage).
        disc_channels: first-stage channels of D (doubling per stage).
        cls_dropout: dropout before the expression head.
        multi_image: also train the confidence-weighted multi-image fusion.
        target_poses: ``'uniform'`` (the paper: every pose bin equally) or ``'data'`` (a random
            permutation of the batch's known pose classes, uniform where none is known): for data
            without the full pose range, e.g. CK+'s frontal faces, where uniform targets ask D's
            pose head for poses it has never seen.
        w_rec: weight of an L1 reconstruction of each input from ``G_dec(f(x), its own pose, z)``
            (not in the paper, 0 by default; it gives the decoder a pixel signal in short runs).
        w_adv, w_pose_adv, w_cls: generator weights of the class, pose and expression-head terms
            (``w_pose_adv`` also weights D's pose term).
        lr, beta1, beta2: Adam settings of every network.
    """

    image_size: int = 128
    channels: int = 3
    use_geometry: bool = True
    yaw_step: float = 15.0
    yaw_max: float = 60.0
    backbone: str = "resnet50"
    backbone_weights: str | None = None
    feat_dim: int = 320
    noise_dim: int = 50
    gen_channels: int = 320
    disc_channels: int = 32
    cls_dropout: float = 0.5
    multi_image: bool = False
    target_poses: str = "uniform"
    w_rec: float = 0.0
    w_adv: float = 1.0
    w_pose_adv: float = 1.0
    w_cls: float = 1.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999


def num_pose_bins(yaw_step: float, yaw_max: float) -> int:
    """Number of yaw bins centred on 0, ±step, ..., ±max."""
    n = yaw_max / yaw_step
    if yaw_step <= 0 or yaw_max < 0 or abs(n - round(n)) > 1e-6:
        raise ValueError(f"DR-GAN yaw_max must be a non-negative multiple of yaw_step > 0, got {yaw_max} and "
                         f"{yaw_step}")
    return 2 * int(round(n)) + 1


def drgan_pose_class(yaw_degrees: Tensor, yaw_step: float = 15.0, yaw_max: float = 60.0) -> Tensor:
    """Yaw (any shape, degrees) -> int64 pose class: the nearest of the centres ``-max, ..., 0, ..., +max``
    (``round((yaw + max) / step)`` clipped to the outer bins); NaN -> -1."""
    n = num_pose_bins(yaw_step, yaw_max)
    finite = torch.isfinite(yaw_degrees)
    idx = torch.floor((torch.nan_to_num(yaw_degrees) + yaw_max) / yaw_step + 0.5).clamp(0, n - 1).long()
    return torch.where(finite, idx, torch.full_like(idx, -1))


def fuse_by_group(f: Tensor, w: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Confidence-weighted mean of the features of every group with at least two members.

    Args:
        f: (B, D) features; w: (B,) positive confidences; groups: (B,) int group ids.

    Returns:
        fused (G, D) ``sum w_i f_i / sum w_i`` per group, the group ids (G,), and for each fused
        group the index of its first member (G,) (to look up labels).
    """
    uniq, inv, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    num = torch.zeros(len(uniq), f.shape[1], device=f.device, dtype=f.dtype).index_add_(0, inv, f * w[:, None])
    den = torch.zeros(len(uniq), device=f.device, dtype=f.dtype).index_add_(0, inv, w)
    first = torch.full((len(uniq),), f.shape[0], device=f.device, dtype=torch.long)
    first = first.scatter_reduce(0, inv, torch.arange(f.shape[0], device=f.device), reduce="amin")
    keep = counts >= 2
    return (num / den[:, None])[keep], uniq[keep], first[keep]


class DRGANEncoder(nn.Module):
    """G_enc: (B, 3, s, s) RGB in [0, 1] -> f (B, feat_dim), confidence (B,) in (0, 1)."""

    def __init__(self, backbone: str, feat_dim: int, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, weights)
        self.fc = nn.Linear(self.backbone.num_features, feat_dim + 1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        h = self.fc(self.backbone.forward_features(imagenet_normalize(images)))
        return h[:, :-1], torch.sigmoid(h[:, -1])


class DRGANModel(FerModel):
    """DR-GAN for FER (see the module docstring). With geometry, batches carry ``geom_pose``."""

    kind = "drgan"

    def __init__(self, config: DRGANConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or DRGANConfig()
        num_stages(c.image_size)
        if c.channels not in (1, 3):
            raise ValueError(f"DR-GAN channels must be 1 (grey) or 3 (RGB), got {c.channels}")
        if c.target_poses not in ("uniform", "data"):
            raise ValueError(f"DR-GAN target_poses must be 'uniform' or 'data', got {c.target_poses!r}")
        self.num_poses = num_pose_bins(c.yaw_step, c.yaw_max) if c.use_geometry else 0
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        self.enc = DRGANEncoder(c.backbone, c.feat_dim, weights)
        self.dec = ConvDecoder(c.image_size, c.feat_dim + self.num_poses + c.noise_dim, c.channels, c.gen_channels)
        self.head = nn.Sequential(nn.Dropout(c.cls_dropout), nn.Linear(c.feat_dim, NUM_CLASSES))
        self.D = ConvEncoder(c.image_size, c.channels, NUM_CLASSES + 1 + self.num_poses, c.disc_channels,
                             head="avg", act="elu")

    # -- trainer interface ------------------------------------------------------------------------
    def uses_geometry(self) -> bool:
        return self.config.use_geometry

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"disc": list(self.D.parameters()),
                "gen": [*self.enc.parameters(), *self.dec.parameters(), *self.head.parameters()]}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2)}

    @property
    def fake_class(self) -> int:
        """Index of D's fake class (Nd = 7)."""
        return NUM_CLASSES

    # -- pieces -----------------------------------------------------------------------------------
    def pose_class(self, batch: dict[str, Any]) -> Tensor:
        """(B,) pose class of every sample from the geometry yaw (-1 unknown, all -1 without geometry)."""
        y = batch["label"]
        if not self.num_poses or "geom_pose" not in batch:
            return torch.full_like(y, -1)
        c = self.config
        return drgan_pose_class(batch["geom_pose"][:, 0].float(), c.yaw_step, c.yaw_max).to(y.device)

    def pose_code(self, pose_class: Tensor) -> Tensor:
        """(B,) pose classes -> (B, Np) one-hot (zeros for -1; (B, 0) without geometry)."""
        known = pose_class >= 0
        code = F.one_hot(pose_class.clamp(min=0), max(self.num_poses, 1)).float()[:, :self.num_poses]
        return code * known[:, None].float()

    def decode(self, f: Tensor, pose_class: Tensor, noise: Tensor | None = None) -> Tensor:
        """f (B, feat_dim), target pose classes (B,) [, noise (B, noise_dim)] -> (B, c, s, s) in [-1, 1]."""
        if noise is None:
            noise = torch.rand(f.shape[0], self.config.noise_dim, device=f.device) * 2.0 - 1.0
        return self.dec(torch.cat([f, self.pose_code(pose_class).to(f.dtype), noise.to(f.dtype)], 1))

    def _disc(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        out = self.D(x).float()
        return out[:, :NUM_CLASSES + 1], (out[:, NUM_CLASSES + 1:] if self.num_poses else None)

    def _random_poses(self, n: int, device: torch.device, known: Tensor | None = None) -> Tensor:
        """(n,) target pose classes: uniform, or (``target_poses='data'``) drawn from ``known`` classes."""
        if not self.num_poses:
            return torch.full((n,), -1, dtype=torch.long, device=device)
        uniform = torch.randint(0, self.num_poses, (n,), device=device)
        if self.config.target_poses == "data" and known is not None:
            pool = known[known >= 0]
            if len(pool):
                return pool[torch.randint(0, len(pool), (n,), device=device)]
        return uniform

    def _groups(self, batch: dict[str, Any]) -> Tensor:
        """Group id per sample for fusion: the expression, and the identity when known."""
        y = batch["label"]
        ident = batch.get("identity", torch.full_like(y, -1))
        return (ident.clamp(min=-1) + 1) * (NUM_CLASSES + 1) + y

    def _forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c = self.config
        images = batch["image"]
        y = batch["label"]
        f, w = self.enc(images)
        own = self.pose_class(batch)
        t = self._random_poses(y.shape[0], y.device, own)
        x_g = self.decode(f, t)
        out = {"x": to_network(images, c.channels), "f": f, "logits": self.head(f), "x_g": x_g, "t": t, "y_g": y}
        if c.w_rec:
            front = torch.full_like(own, self.num_poses // 2 if self.num_poses else -1)
            out["x_rec"] = self.decode(f, torch.where(own >= 0, own, front))
        if c.multi_image:
            fused, _, first = fuse_by_group(f, w, self._groups(batch))
            if len(fused):
                t_m = self._random_poses(len(fused), y.device, own)
                out["x_g"] = torch.cat([x_g, self.decode(fused, t_m)])
                out["t"] = torch.cat([t, t_m])
                out["y_g"] = torch.cat([y, y[first]])
        return out

    def _pose_ce(self, logits: Tensor | None, p: Tensor) -> Tensor:
        if logits is None or not bool((p >= 0).any()):
            return torch.zeros((), device=p.device)
        return F.cross_entropy(logits, p, ignore_index=-1)

    def _disc_loss(self, batch: dict[str, Any], fw: dict[str, Tensor]) -> dict[str, Tensor]:
        c = self.config
        cls_real, pose_real = self._disc(fw["x"])
        cls_fake, _ = self._disc(fw["x_g"].detach())
        real = F.cross_entropy(cls_real, batch["label"])
        pose = self._pose_ce(pose_real, self.pose_class(batch))
        fake = F.cross_entropy(cls_fake, torch.full_like(fw["y_g"], self.fake_class))
        return {"d": real + c.w_pose_adv * pose + fake, "d_real": real, "d_pose": pose, "d_fake": fake}

    def _gen_loss(self, batch: dict[str, Any], fw: dict[str, Tensor]) -> dict[str, Tensor]:
        c = self.config
        cls_fake, pose_fake = self._disc(fw["x_g"])
        adv = F.cross_entropy(cls_fake, fw["y_g"])
        pose = self._pose_ce(pose_fake, fw["t"])
        cls = self.classification_loss(fw["logits"], batch)
        rec = (fw["x_rec"].float() - fw["x"].float()).abs().mean() if "x_rec" in fw else torch.zeros_like(cls)
        return {"g": c.w_adv * adv + c.w_pose_adv * pose + c.w_cls * cls + c.w_rec * rec, "g_adv": adv,
                "g_pose": pose, "cls_real": cls, "rec": rec}

    # -- training ---------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        with ctx.autocast():
            fw = self._forward(batch)
            d = self._disc_loss(batch, fw)
        ctx.step("disc", d["d"])
        with frozen(self.D), ctx.autocast():
            g = self._gen_loss(batch, fw)
        ctx.step("gen", g["g"])
        out = {k: float(v.detach()) for k, v in {**d, **g}.items()}
        out["loss"] = out["g"]
        out["acc"] = self._accuracy(fw["logits"], batch["label"])
        return out

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        fw = self._forward(batch)
        return {**self._disc_loss(batch, fw), **self._gen_loss(batch, fw), "_logits": fw["logits"]}

    def classify(self, images: Tensor) -> Tensor:
        return self.head(self.enc(images)[0])

    @torch.no_grad()
    def rotate(self, images: Tensor, yaw_degrees: float | Tensor, noise: Tensor | None = None) -> Tensor:
        """Re-render faces at a yaw: (B, 3, s, s) RGB in [0, 1] -> (B, 3, s, s) in [0, 1].

        ``yaw_degrees`` (scalar or (B,)) picks the nearest pose bin; ``yaw_degrees=0`` frontalises.
        ``noise`` (B, noise_dim) defaults to zeros (the centre of the noise prior) for a deterministic result.
        """
        if not self.num_poses:
            raise ValueError("drgan: this model was trained without geometry (no pose code); it cannot change the pose")
        c = self.config
        f, _ = self.enc(images)
        yaw = torch.as_tensor(yaw_degrees, dtype=torch.float32, device=f.device).expand(f.shape[0])
        if noise is None:
            noise = torch.zeros(f.shape[0], c.noise_dim, device=f.device)
        return to_unit(self.decode(f, drgan_pose_class(yaw, c.yaw_step, c.yaw_max), noise))

    @torch.no_grad()
    def generate(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Trainer samples: each face re-rendered at its own pose (frontal when unknown), and frontalised."""
        f, _ = self.enc(batch["image"])
        zeros = torch.zeros(f.shape[0], self.config.noise_dim, device=f.device)
        own = self.pose_class(batch)
        front = torch.full_like(own, self.num_poses // 2 if self.num_poses else -1)
        own = torch.where(own >= 0, own, front)
        return to_unit(self.decode(f, own, zeros)), to_unit(self.decode(f, front, zeros))

    @staticmethod
    def pose_bin_centres(yaw_step: float = 15.0, yaw_max: float = 60.0) -> list[float]:
        """Yaw (degrees) of the pose-bin centres, in class order."""
        n = num_pose_bins(yaw_step, yaw_max)
        return [-yaw_max + i * yaw_step for i in range(n)]

