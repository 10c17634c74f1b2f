"""GGPI: the geometry-guided pose-invariant FER GAN (Zhang et al., IEEE TIP 2020).

Networks (``s`` = image size, ``L = log2(s) - 2`` stride-2 stages, so the smallest map is 4 x 4):

* **E** (image encoder): ``L`` conv 5x5/2 + ReLU with ``enc_channels * 2^i`` channels, FC, tanh ->
  identity code ``f`` (B, code_dim) in [-1, 1].
* **E_p** (geometry encoder): the 136-d landmark vector (68 x 2, normalised to the crop, centred)
  through FC 128-64-32 with batch norm (ReLU, tanh on the code) -> geometry code (B, 32).
* **G** (generator): ``[f, condition]`` -> FC to ``gen_channels`` x 4 x 4 -> ``L`` transposed conv
  5x5/2 halving the channels -> two stride-1 transposed convs -> tanh image (B, 3, s, s) in [-1, 1].
  The condition is the geometry code of the *target* landmarks; with ``use_geometry=False``
  (``--geometry none``) it is the tiled ±1 one-hot expression and pose labels, as in the authors'
  earlier model (Zhang et al., CVPR 2018).
* **geometry decoder**: FC 64-128-136 reconstructing the landmarks from the geometry code.
* **D_acc** (expression + pose classifier): :class:`fer.models.backbone.ExpressionClassifier`
  (ResNet-50, torchvision ImageNet weights from a user path; FC 1024, dropout 0.5; expression
  head and pose head). It is the FER model used at test time.
* **D_i** (identity-code discriminator): FC 64-32-16-1 with batch norm; real samples are drawn
  from the prior U[-1, 1]^code_dim.
* **D_att** (image discriminator conditioned on pose): conv 5x5/2 16-32-64-128 with batch norm, the
  ±1 one-hot pose class tiled onto the map after the first convolution, FC 1024, FC 1.

One training step on a batch (x, expression y, pose class p, landmarks l), with a random
permutation pi of the batch giving every face a target geometry (l[pi], y[pi], p[pi]):

1. ``f = E(x)``; ``x_rec = G(f, c(l))``; ``x_gen = G(f, c(l[pi]))``.
2. discriminators: ``BCE(D_att(x, p), 1) + BCE(D_att(x_rec|x_gen, p|p[pi]), 0)`` and
   ``BCE(D_i(u), 1) + BCE(D_i(f), 0)``, u ~ U[-1, 1].
3. E, E_p, G, decoder: ``w_rec L1(x_rec, x) + w_adv_img BCE(D_att(fakes), 1) + w_adv_id BCE(D_i(f), 1)
   + w_tv TV(fakes) + w_geo MSE(dec(E_p(l)), l) + w_cls_gen_g CE(D_acc(x_gen), y[pi], p[pi])``.
4. D_acc: ``CE(D_acc(x), y) + w_pose CE_pose(D_acc(x), p) + w_cls_gen (the same on x_gen, targets
   y[pi], p[pi])``, the generated-image term ramped in over ``cls_gen_warmup_steps``. Unknown pose
   classes (-1) are ignored.

Defaults follow the authors' released code of the model family (CVPR 2018 JPEM, which GGPI
extends): L1 weight 1, both adversarial terms 1e-4, total variation 1e-4, Adam lr 2e-4 with
beta1 0.5, f of 50 dimensions, 5x5 kernels, 64 encoder / 1024 generator channels. The geometry
reconstruction and generated-image classification weights and the warm-up of the latter are this
implementation's choices.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fer.labels import NUM_CLASSES, NUM_YAW_BINS
from fer.models.backbone import ExpressionClassifier
from fer.models.base import FerModel, StepContext, frozen, keep_running_stats

__all__ = [
    "GGPIConfig",
    "GGPIModel",
    "ImageEncoder",
    "GeometryEncoder",
    "GeometryDecoder",
    "Generator",
    "IdentityDiscriminator",
    "PoseConditionedDiscriminator",
    "total_variation",
]


@dataclass
class GGPIConfig:
    """Architecture, loss weights and optimizer settings of :class:`GGPIModel` (paper defaults).

    Attributes:
        image_size: input/output side; a power of two >= 16 (128 in the paper).
        use_geometry: condition G on landmark geometry (False: on label codes, ``--geometry none``).
        backbone, backbone_weights: D_acc's backbone and its torchvision weights file.
        cls_hidden, cls_dropout: D_acc's FC layer and dropout.
        code_dim: size of the identity code f.
        enc_channels: channels of E's first conv (doubling per stage).
        gen_channels: channels of G's 4 x 4 map (halving per stage).
        kernel: conv kernel size of E, G and D_att.
        ep_dims, dec_dims: E_p and geometry-decoder hidden sizes (E_p's last is the code size).
        di_dims: D_i hidden sizes.
        datt_channels, datt_fc: D_att conv channels and FC size.
        num_poses: pose classes (yaw bins, fer.labels).
        tile_ratio: label-code tiling relative to code_dim (label conditioning only).
        w_rec, w_adv_img, w_adv_id, w_tv, w_geo: E/G loss weights.
        w_cls_gen_g: weight of D_acc's classification of generated images in the E/G loss.
        w_pose: weight of pose classification in D_acc's loss.
        w_cls_gen: weight of generated images in D_acc's loss.
        cls_gen_warmup_steps: ``w_cls_gen`` ramps linearly from 0 over that many steps, so that the
            classifier does not learn from the generator's first, featureless images (0: off).
        lr, beta1, beta2: Adam settings of every network.
        generator_steps: E/G updates per step (the authors' code runs 5; 1 keeps CPU runs fast).
    """

    image_size: int = 128
    use_geometry: bool = True
    backbone: str = "resnet50"
    backbone_weights: str | None = None
    cls_hidden: int = 1024
    cls_dropout: float = 0.5
    code_dim: int = 50
    enc_channels: int = 64
    gen_channels: int = 1024
    kernel: int = 5
    ep_dims: tuple[int, ...] = (128, 64, 32)
    dec_dims: tuple[int, ...] = (64, 128)
    di_dims: tuple[int, ...] = (64, 32, 16)
    datt_channels: tuple[int, ...] = (16, 32, 64, 128)
    datt_fc: int = 1024
    num_poses: int = NUM_YAW_BINS
    tile_ratio: float = 1.0
    w_rec: float = 1.0
    w_adv_img: float = 1e-4
    w_adv_id: float = 1e-4
    w_tv: float = 1e-4
    w_geo: float = 1.0
    w_cls_gen_g: float = 1e-2
    w_pose: float = 1.0
    w_cls_gen: float = 1.0
    cls_gen_warmup_steps: int = 1000
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    generator_steps: int = 1


def _stages(size: int) -> int:
    n = int(round(math.log2(size))) - 2
    if 2 ** (n + 2) != size or n < 2:
        raise ValueError(f"GGPI image_size must be a power of two >= 16, got {size}")
    return n


class ImageEncoder(nn.Module):
    """E: (B, 3, s, s) in [-1, 1] -> (B, code_dim) in [-1, 1]."""

    def __init__(self, size: int, code_dim: int, channels: int, kernel: int) -> None:
        super().__init__()
        n = _stages(size)
        layers: list[nn.Module] = []
        c = 3
        for i in range(n):
            layers += [nn.Conv2d(c, channels * 2 ** i, kernel, 2, kernel // 2), nn.ReLU(inplace=True)]
            c = channels * 2 ** i
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c * 4 * 4, code_dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.fc(self.convs(x).flatten(1)))


class GeometryEncoder(nn.Module):
    """E_p: (B, 136) centred landmarks -> (B, dims[-1]) code in [-1, 1] (FC + batch norm)."""

    def __init__(self, dims: tuple[int, ...] = (128, 64, 32), in_dim: int = 136) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_dim
        for i, d in enumerate(dims):
            layers += [nn.Linear(c, d), nn.BatchNorm1d(d)]
            if i < len(dims) - 1:
                layers.append(nn.ReLU(inplace=True))
            c = d
        self.net = nn.Sequential(*layers)
        self.out_dim = c

    def forward(self, lm: Tensor) -> Tensor:
        return torch.tanh(self.net(lm))


class GeometryDecoder(nn.Module):
    """(B, code) -> (B, 136) reconstructed centred landmarks (FC 64-128-136)."""

    def __init__(self, code_dim: int = 32, dims: tuple[int, ...] = (64, 128), out_dim: int = 136) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = code_dim
        for d in dims:
            layers += [nn.Linear(c, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
            c = d
        layers.append(nn.Linear(c, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, code: Tensor) -> Tensor:
        return self.net(code)


class Generator(nn.Module):
    """G: (B, in_dim) -> (B, 3, s, s) in [-1, 1]."""

    def __init__(self, size: int, in_dim: int, channels: int, kernel: int) -> None:
        super().__init__()
        n = _stages(size)
        self.channels = channels
        self.fc = nn.Linear(in_dim, channels * 4 * 4)
        layers: list[nn.Module] = []
        c = channels
        p = kernel // 2
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, max(c // 2, 1), kernel, 2, p, output_padding=1), nn.ReLU(inplace=True)]
            c = max(c // 2, 1)
        layers += [nn.ConvTranspose2d(c, max(c // 2, 1), kernel, 1, p), nn.ReLU(inplace=True),
                   nn.ConvTranspose2d(max(c // 2, 1), 3, kernel, 1, p)]
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.fc(z)).view(z.shape[0], self.channels, 4, 4)
        return torch.tanh(self.deconvs(h))


class IdentityDiscriminator(nn.Module):
    """D_i: (B, code_dim) -> (B,) logits (FC 64-32-16-1 with batch norm)."""

    def __init__(self, code_dim: int, dims: tuple[int, ...] = (64, 32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = code_dim
        for d in dims:
            layers += [nn.Linear(c, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
            c = d
        layers.append(nn.Linear(c, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, f: Tensor) -> Tensor:
        return self.net(f).squeeze(1)


class PoseConditionedDiscriminator(nn.Module):
    """D_att: image (B, 3, s, s) in [-1, 1] + pose code (B, P) -> (B,) logits."""

    def __init__(self, size: int, num_poses: int, channels: tuple[int, ...] = (16, 32, 64, 128), fc: int = 1024,
                 kernel: int = 5) -> None:
        super().__init__()
        p = kernel // 2
        self.first = nn.Sequential(nn.Conv2d(3, channels[0], kernel, 2, p), nn.BatchNorm2d(channels[0]),
                                   nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = channels[0] + num_poses
        for w in channels[1:]:
            layers += [nn.Conv2d(c, w, kernel, 2, p), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.rest = nn.Sequential(*layers)
        side = size // 2 ** len(channels)
        self.fc = nn.Sequential(nn.Linear(c * side * side, fc), nn.LeakyReLU(0.2, inplace=True), nn.Linear(fc, 1))

    def forward(self, x: Tensor, pose_code: Tensor) -> Tensor:
        h = self.first(x)
        tiled = pose_code[:, :, None, None].to(h.dtype).expand(-1, -1, h.shape[2], h.shape[3])
        return self.fc(self.rest(torch.cat([h, tiled], 1)).flatten(1)).squeeze(1)


def total_variation(x: Tensor) -> Tensor:
    """The authors' TV term: ``(l2(dy) / H + l2(dx) / W) / B`` with ``l2(t) = sum(t^2) / 2``; x (B, C, H, W)."""
    b, _, h, w = x.shape
    dy = (x[:, :, 1:] - x[:, :, :-1]).float().pow(2).sum() / 2
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).float().pow(2).sum() / 2
    return (dy / h + dx / w) / b


def signed_one_hot(labels: Tensor, n: int) -> Tensor:
    """(B,) int labels -> (B, n) with +1 at the label and -1 elsewhere; all zeros where label < 0."""
    known = labels >= 0
    out = -torch.ones(labels.shape[0], n, device=labels.device)
    out[known, labels[known]] = 1.0
    return out * known[:, None].float()


class GGPIModel(FerModel):
    """GGPI (see the module docstring). Batches must carry ``landmarks`` and ``pose_class``."""

    kind = "ggpi"

    def __init__(self, config: GGPIConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GGPIConfig()
        self.E = ImageEncoder(c.image_size, c.code_dim, c.enc_channels, c.kernel)
        if c.use_geometry:
            self.E_p: GeometryEncoder | None = GeometryEncoder(tuple(c.ep_dims))
            self.geo_decoder: GeometryDecoder | None = GeometryDecoder(self.E_p.out_dim, tuple(c.dec_dims))
            cond_dim = self.E_p.out_dim
        else:
            self.E_p = None
            self.geo_decoder = None
            self._dup_e = max(1, int(c.code_dim * c.tile_ratio / NUM_CLASSES))
            self._dup_p = max(1, int(c.code_dim * c.tile_ratio / c.num_poses))
            cond_dim = NUM_CLASSES * self._dup_e + c.num_poses * self._dup_p
        self.G = Generator(c.image_size, c.code_dim + cond_dim, c.gen_channels, c.kernel)
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        self.D_acc = ExpressionClassifier(c.backbone, NUM_CLASSES, c.num_poses, c.cls_hidden, c.cls_dropout, weights)
        self.D_i = IdentityDiscriminator(c.code_dim, tuple(c.di_dims))
        self.D_att = PoseConditionedDiscriminator(c.image_size, c.num_poses, tuple(c.datt_channels), c.datt_fc,
                                                  c.kernel)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # drives the warm-up; checkpointed

    # -- trainer interface ------------------------------------------------------------------------
    def uses_geometry(self) -> bool:
        return True

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        gen = [*self.E.parameters(), *self.G.parameters()]
        if self.E_p is not None and self.geo_decoder is not None:
            gen += [*self.E_p.parameters(), *self.geo_decoder.parameters()]
        return {"disc": [*self.D_att.parameters(), *self.D_i.parameters()], "gen": gen,
                "cls": list(self.D_acc.parameters())}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2)}

    # -- pieces -----------------------------------------------------------------------------------
    @staticmethod
    def _landmark_vector(lm: Tensor) -> Tensor:
        """(B, 68, 2) crop-normalised landmarks -> (B, 136) centred on the crop, in about [-1, 1]."""
        return (lm.flatten(1) - 0.5) * 2.0

    def condition(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        """Per-sample generator condition (B, cond_dim) and the geometry code (None without geometry)."""
        if self.E_p is not None:
            code = self.E_p(self._landmark_vector(batch["landmarks"]))
            return code, code
        y = signed_one_hot(batch["label"], NUM_CLASSES).repeat_interleave(self._dup_e, 1)
        p = signed_one_hot(batch["pose_class"], self.config.num_poses).repeat_interleave(self._dup_p, 1)
        return torch.cat([y, p], 1), None

    def _classify_generated(self, x_gen: Tensor) -> tuple[Tensor, Tensor | None]:
        """D_acc on generated images (in [-1, 1]); its batch-norm running statistics stay those of real images."""
        with keep_running_stats(self.D_acc):
            return self.D_acc((x_gen + 1.0) * 0.5)

    def _cls_loss(self, logits: Tensor, pose_logits: Tensor | None, y: Tensor, p: Tensor,
                  batch: dict[str, Any] | None = None) -> Tensor:
        """Expression (+ pose) loss; with ``batch`` (real images in batch order), the expression term is
        :meth:`classification_loss` (distillation when the trainer has teachers)."""
        loss = F.cross_entropy(logits.float(), y) if batch is None else self.classification_loss(logits, batch)
        if pose_logits is not None and bool((p >= 0).any()):
            loss = loss + self.config.w_pose * F.cross_entropy(pose_logits.float(), p, ignore_index=-1)
        return loss

    def _forward_all(self, batch: dict[str, Any], perm: Tensor) -> dict[str, Tensor]:
        x = batch["image"] * 2.0 - 1.0
        f = self.E(x)
        cond, geo_code = self.condition(batch)
        x_both = self.G(torch.cat([torch.cat([f, f]), torch.cat([cond, cond[perm]])], 1))
        b = x.shape[0]
        out = {"x": x, "f": f, "x_rec": x_both[:b], "x_gen": x_both[b:], "x_fake": x_both}
        if geo_code is not None and self.geo_decoder is not None:
            out["geo"] = F.mse_loss(self.geo_decoder(geo_code).float(), self._landmark_vector(batch["landmarks"]))
        return out

    def _gen_loss(self, batch: dict[str, Any], fw: dict[str, Tensor], perm: Tensor) -> dict[str, Tensor]:
        c = self.config
        p = batch["pose_class"]
        pose_fake = signed_one_hot(torch.cat([p, p[perm]]), c.num_poses)
        adv_img = F.binary_cross_entropy_with_logits(
            self.D_att(fw["x_fake"], pose_fake).float(), torch.ones(fw["x_fake"].shape[0], device=p.device))
        d_f = self.D_i(fw["f"]).float()
        adv_id = F.binary_cross_entropy_with_logits(d_f, torch.ones_like(d_f))
        rec = (fw["x_rec"].float() - fw["x"].float()).abs().mean()
        tv = total_variation(fw["x_fake"])
        lg, lp = self._classify_generated(fw["x_gen"])
        cls_gen = self._cls_loss(lg, lp, batch["label"][perm], p[perm])
        geo = fw.get("geo", torch.zeros((), device=p.device))
        total = (c.w_rec * rec + c.w_adv_img * adv_img + c.w_adv_id * adv_id + c.w_tv * tv + c.w_geo * geo
                 + c.w_cls_gen_g * cls_gen)
        return {"g": total, "rec": rec, "adv_img": adv_img, "adv_id": adv_id, "tv": tv, "geo": geo,
                "cls_gen_g": cls_gen}

    def _disc_loss(self, batch: dict[str, Any], fw: dict[str, Tensor], perm: Tensor) -> Tensor:
        c = self.config
        p = batch["pose_class"]
        b = p.shape[0]
        d_real = self.D_att(fw["x"], signed_one_hot(p, c.num_poses)).float()
        d_fake = self.D_att(fw["x_fake"].detach(), signed_one_hot(torch.cat([p, p[perm]]), c.num_poses)).float()
        prior = torch.rand(b, c.code_dim, device=p.device) * 2.0 - 1.0
        d_prior = self.D_i(prior).float()
        d_f = self.D_i(fw["f"].detach()).float()
        bce = F.binary_cross_entropy_with_logits
        return (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))
                + bce(d_prior, torch.ones_like(d_prior)) + bce(d_f, torch.zeros_like(d_f)))

    def _classifier_loss(self, batch: dict[str, Any], x_gen: Tensor, perm: Tensor) -> dict[str, Tensor]:
        p, y = batch["pose_class"], batch["label"]
        lg, lp = self.D_acc(batch["image"])  # real and generated images are normalised separately
        lg_gen, lp_gen = self._classify_generated(x_gen.detach())
        real = self._cls_loss(lg, lp, y, p, batch)
        gen = self._cls_loss(lg_gen, lp_gen, y[perm], p[perm])
        c = self.config
        ramp = min(1.0, float(self.steps_done) / c.cls_gen_warmup_steps) if c.cls_gen_warmup_steps > 0 else 1.0
        return {"c": real + ramp * c.w_cls_gen * gen, "cls_real": real, "cls_gen": gen, "_logits": lg}

    # -- training ---------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        b = batch["label"].shape[0]
        perm = torch.randperm(b, device=batch["label"].device)
        with ctx.autocast():
            fw = self._forward_all(batch, perm)
            d_loss = self._disc_loss(batch, fw, perm)
        ctx.step("disc", d_loss)
        for k in range(max(1, self.config.generator_steps)):
            if k > 0:
                with ctx.autocast():
                    fw = self._forward_all(batch, perm)
            with frozen(self.D_att, self.D_i, self.D_acc), ctx.autocast():
                g = self._gen_loss(batch, fw, perm)
            ctx.step("gen", g["g"])
        with ctx.autocast():
            cl = self._classifier_loss(batch, fw["x_gen"], perm)
        ctx.step("cls", cl["c"])
        self.steps_done += 1
        out = {k: float(v.detach()) for k, v in {**g, **cl}.items() if not k.startswith("_")}
        out["d"] = float(d_loss.detach())
        out["loss"] = out["c"]
        out["acc"] = self._accuracy(cl["_logits"], batch["label"])
        return out

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        b = batch["label"].shape[0]
        perm = torch.randperm(b, device=batch["label"].device)
        fw = self._forward_all(batch, perm)
        d = self._disc_loss(batch, fw, perm)
        g = self._gen_loss(batch, fw, perm)
        cl = self._classifier_loss(batch, fw["x_gen"], perm)
        return {"d": d, **g, **cl}

    def classify(self, images: Tensor) -> Tensor:
        return self.D_acc(images)[0]

    @torch.no_grad()
    def generate(self, batch: dict[str, Any], perm: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Reconstructions and re-targeted faces (B, 3, s, s) in [0, 1] (targets: ``perm``, default a roll)."""
        b = batch["label"].shape[0]
        perm = perm if perm is not None else torch.roll(torch.arange(b, device=batch["label"].device), 1)
        fw = self._forward_all(batch, perm)
        return (fw["x_rec"] + 1) * 0.5, (fw["x_gen"] + 1) * 0.5
