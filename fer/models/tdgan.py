"""TDGAN: the two-branch disentangled GAN for FER (Xie, Hu & Chen, IEEE TCSVT 2020).

Every training sample is a pair: an *expression image* ``x_e`` with its expression label ``y_e``
(the FER set) and a *face image* ``x_f`` with its identity ``k_f`` (a face set: any
identity-labelled images; :class:`fer.data.PairedDataset` builds the pairs). The generator
transfers the expression of ``x_e`` onto the face of ``x_f``; its two encoders are thereby pushed
to carry only identity (face branch) and only expression (expression branch), and the expression
branch's classifier is the FER model used at test time.

Networks (``s`` = image side, a power of two; ``c`` = 1 grey (the paper) or 3 RGB):

* **E_f** (face encoder): :class:`fer.models.gan_blocks.ConvEncoder` - stride-2 4x4 convolutions
  ``enc_channels * 2^i`` down to 4 x 4, FC -> face code (B, face_dim). Its stage outputs are the
  features of the perceptual loss.
* **E_e** (expression encoder): a backbone of :mod:`fer.models.backbone` (``cnn`` / ResNet, on
  the grey image replicated to RGB), FC ``exp_dim`` + ReLU -> expression code (B, exp_dim);
  **C** (expression classifier): dropout + linear on that code -> (B, 7) logits (test time).
* **G** (decoder): ``[face code, expression code, noise (noise_dim, N(0, 1))]`` ->
  :class:`fer.models.gan_blocks.ConvDecoder` -> (B, c, s, s) in [-1, 1].
* **D_f** (face discriminator): conv encoder -> (B, K + 1) logits: the K face-set identities
  plus one *fake* class.
* **D_e** (expression discriminator): conv encoder -> (B, 7) expression logits (no fake class:
  the authors weight its fake term 0).

Losses of one step, ``x_g = G(E_f(x_f), E_e(x_e), z)``:

* D_f: ``w_d_face_real CE(D_f(x_f), k_f) + w_d_face_fake CE(D_f(x_g), fake)``; D_e:
  ``CE(D_e(x_e), y_e)`` (each updated every ``d_face_every`` / ``d_exp_every`` steps, the
  authors' 5 and 10).
* E_f, E_e, G, C: ``w_g_face CE(D_f(x_g), k_f)`` (adversarial: real and of the face's identity)
  ``+ w_g_exp CE(D_e(x_g), y_e)`` (expression-transfer classification)
  ``+ w_per_face mean_i MSE(E_f^i(x_g), E_f^i(x_f))`` (perceptual, face-encoder stage features)
  ``+ w_per_exp MSE(E_e(x_g), E_e(x_e))``
  ``+ w_dic_face L1(G(E_f(x_g), E_e(x_f), z), x_f) + w_dic_exp L1(G(E_f(x_e), E_e(x_g), z), x_e)``
  (dual-image consistency: the codes of the generated image re-generate both inputs)
  ``+ w_cls CE(C(E_e(x_e)), y_e)``.

Defaults are the authors' public code (``hpar_dict``): noise 256, loss weights 0.2 / 0.8 / 1 / 0 / 5
/ 5, discriminator weights 1 / 1, Adam lr 1e-4, grey 128 px images. Layer sizes are this
implementation's (the paper's networks are not fully specified); see :data:`fer.models.PROFILES`
for the CPU-sized ``small`` profile.
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
from fer.models.base import FerModel, StepContext, frozen, keep_running_stats
from fer.models.gan_blocks import ConvDecoder, ConvEncoder, num_stages, to_network, to_unit

__all__ = ["ExpressionEncoder", "TDGANConfig", "TDGANModel"]


@dataclass
class TDGANConfig:
    """Architecture, loss weights and optimizer settings of :class:`TDGANModel` (the authors' defaults).

    Attributes:
        image_size: input/output side, a power of two >= 16 (128 in the paper).
        channels: generated/discriminated image channels: 1 grey (the paper), 3 RGB.
        num_identities: K, identities of the face set (D_f has K + 1 classes; set from the data).
        backbone, backbone_weights: expression-encoder backbone and its torchvision weights file.
        exp_dim: expression code size (the FC after the backbone).
        cls_dropout: dropout before the expression classifier.
        face_dim: face code size.
        noise_dim: noise size (256 in the authors' code).
        enc_channels: first-stage channels of E_f (doubling per stage).
        gen_channels: channels of G's 4 x 4 map (halving per stage).
        disc_channels: first-stage channels of D_f and D_e.
        w_g_face, w_g_exp: adversarial face-identity and expression-transfer weights of the generator.
        w_per_face, w_per_exp: perceptual weights (face-encoder stages; expression code).
        w_dic_face, w_dic_exp: dual-image consistency (L1) weights.
        w_cls: expression-classifier cross-entropy weight.
        w_d_face_real, w_d_face_fake: D_f's real-identity and fake-class terms.
        d_face_every, d_exp_every: update D_f / D_e every that many steps (the authors' 5 and 10).
        lr, beta1, beta2: Adam settings of every network.
    """

    image_size: int = 128
    channels: int = 1
    num_identities: int = 20
    backbone: str = "resnet50"
    backbone_weights: str | None = None
    exp_dim: int = 512
    cls_dropout: float = 0.5
    face_dim: int = 512
    noise_dim: int = 256
    enc_channels: int = 64
    gen_channels: int = 512
    disc_channels: int = 64
    w_g_face: float = 0.2
    w_g_exp: float = 0.8
    w_per_face: float = 1.0
    w_per_exp: float = 0.0
    w_dic_face: float = 5.0
    w_dic_exp: float = 5.0
    w_cls: float = 1.0
    w_d_face_real: float = 1.0
    w_d_face_fake: float = 1.0
    d_face_every: int = 5
    d_exp_every: int = 10
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999


class ExpressionEncoder(nn.Module):
    """E_e + C: backbone -> FC ``exp_dim`` -> ReLU (the code) -> dropout -> linear (the logits).

    Input (B, 3, s, s) RGB in [0, 1] (grey inputs replicated to RGB); outputs the code
    (B, exp_dim) and the logits (B, num_classes).
    """

    def __init__(self, backbone: str, exp_dim: int, num_classes: int = NUM_CLASSES, dropout: float = 0.5,
                 weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, weights)
        self.fc = nn.Sequential(nn.Linear(self.backbone.num_features, exp_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(exp_dim, num_classes))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        code = self.fc(self.backbone.forward_features(imagenet_normalize(images)))
        return code, self.head(code)


class TDGANModel(FerModel):
    """TDGAN (see the module docstring). Training batches must carry ``face_image`` and ``face_identity``
    (:class:`fer.data.PairedDataset`); :meth:`classify` needs only the expression branch."""

    kind = "tdgan"

    def __init__(self, config: TDGANConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or TDGANConfig()
        num_stages(c.image_size)
        if c.channels not in (1, 3):
            raise ValueError(f"TDGAN channels must be 1 (grey) or 3 (RGB), got {c.channels}")
        if c.num_identities < 1:
            raise ValueError(f"TDGAN needs at least one face identity, got num_identities={c.num_identities}")
        weights = os.fspath(c.backbone_weights) if c.backbone_weights else None
        self.E_e = ExpressionEncoder(c.backbone, c.exp_dim, NUM_CLASSES, c.cls_dropout, weights)
        self.E_f = ConvEncoder(c.image_size, c.channels, c.face_dim, c.enc_channels)
        self.G = ConvDecoder(c.image_size, c.face_dim + c.exp_dim + c.noise_dim, c.channels, c.gen_channels)
        self.D_f = ConvEncoder(c.image_size, c.channels, c.num_identities + 1, c.disc_channels)
        self.D_e = ConvEncoder(c.image_size, c.channels, NUM_CLASSES, c.disc_channels)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # discriminator schedule
        # The latest discriminator losses (reported on steps that skip the update; checkpointed).
        self.register_buffer("last_d", torch.full((2,), float("nan")))

    # -- trainer interface ------------------------------------------------------------------------
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"d_face": list(self.D_f.parameters()), "d_exp": list(self.D_e.parameters()),
                "gen": [*self.E_f.parameters(), *self.E_e.parameters(), *self.G.parameters()]}

    def optimizer_settings(self, name: str) -> dict[str, Any]:
        c = self.config
        return {"lr": c.lr, "betas": (c.beta1, c.beta2)}

    @property
    def fake_class(self) -> int:
        """Index of D_f's fake class (K)."""
        return self.config.num_identities

    # -- pieces -----------------------------------------------------------------------------------
    def _as_expr_input(self, x: Tensor) -> Tensor:
        """Network image (B, c, s, s) in [-1, 1] -> the expression encoder's RGB [0, 1] input."""
        return to_unit(x)

    def encode_expression(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, s, s) RGB in [0, 1] -> expression code (B, exp_dim), logits (B, 7) (grey first if c = 1)."""
        return self.E_e(to_unit(to_network(images, self.config.channels)))

    def decode(self, face_code: Tensor, exp_code: Tensor, noise: Tensor | None = None) -> Tensor:
        """Codes (B, face_dim), (B, exp_dim) [, noise (B, noise_dim)] -> image (B, c, s, s) in [-1, 1]."""
        if noise is None:
            noise = torch.randn(face_code.shape[0], self.config.noise_dim, device=face_code.device,
                                dtype=face_code.dtype)
        return self.G(torch.cat([face_code, exp_code.to(face_code.dtype), noise.to(face_code.dtype)], 1))

    def _check_batch(self, batch: dict[str, Any]) -> None:
        if "face_image" not in batch or "face_identity" not in batch:
            raise ValueError("tdgan: training batches need 'face_image' and 'face_identity' (wrap the FER set in "
                             "fer.data.PairedDataset with a face set)")
        k = batch["face_identity"]
        if bool((k < 0).any()) or bool((k >= self.config.num_identities).any()):
            raise ValueError(f"tdgan: face identities must lie in 0..{self.config.num_identities - 1} "
                             f"(num_identities), got {int(k.min())}..{int(k.max())}")

    def _forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        c = self.config
        x_e = to_network(batch["image"], c.channels)
        x_f = to_network(batch["face_image"], c.channels)
        b = x_e.shape[0]
        noise = torch.randn(b, c.noise_dim, device=x_e.device)
        f_f, feats_f = self.E_f(x_f, return_features=True)
        h_e, logits = self.E_e(to_unit(x_e))
        x_g = self.decode(f_f, h_e, noise)
        return {"x_e": x_e, "x_f": x_f, "f_f": f_f, "feats_f": feats_f, "h_e": h_e, "logits": logits,
                "x_g": x_g, "noise": noise}

    def _gen_loss(self, batch: dict[str, Any], fw: dict[str, Tensor]) -> dict[str, Tensor]:
        c = self.config
        y, k = batch["label"], batch["face_identity"]
        x_g = fw["x_g"]
        adv_face = F.cross_entropy(self.D_f(x_g).float(), k)
        adv_exp = F.cross_entropy(self.D_e(x_g).float(), y)
        f_g, feats_g = self.E_f(x_g, return_features=True)
        per_face = torch.stack([F.mse_loss(a.float(), t.detach().float())
                                for a, t in zip(feats_g, fw["feats_f"], strict=True)]).mean()
        with keep_running_stats(self.E_e):  # the test-time classifier keeps real-image statistics
            h_g, _ = self.E_e(self._as_expr_input(x_g))
        zero = torch.zeros((), device=x_g.device)
        per_exp = F.mse_loss(h_g.float(), fw["h_e"].detach().float()) if c.w_per_exp else zero
        # Dual-image consistency: (face of x_g, expression of x_f) -> x_f; (face of x_e, expression of x_g) -> x_e.
        h_f, _ = self.E_e(self._as_expr_input(fw["x_f"]))
        f_e = self.E_f(fw["x_e"])
        both = self.G(torch.cat([torch.cat([f_g, f_e]), torch.cat([h_f, h_g]).to(f_g.dtype),
                                 torch.cat([fw["noise"], fw["noise"]]).to(f_g.dtype)], 1))
        b = x_g.shape[0]
        dic_face = (both[:b].float() - fw["x_f"].float()).abs().mean()
        dic_exp = (both[b:].float() - fw["x_e"].float()).abs().mean()
        cls = self.classification_loss(fw["logits"], batch)
        total = (c.w_g_face * adv_face + c.w_g_exp * adv_exp + c.w_per_face * per_face + c.w_per_exp * per_exp
                 + c.w_dic_face * dic_face + c.w_dic_exp * dic_exp + c.w_cls * cls)
        return {"g": total, "adv_face": adv_face, "adv_exp": adv_exp, "per_face": per_face, "per_exp": per_exp,
                "dic_face": dic_face, "dic_exp": dic_exp, "cls_real": cls}

    def _d_face_loss(self, batch: dict[str, Any], fw: dict[str, Tensor]) -> Tensor:
        c = self.config
        real = F.cross_entropy(self.D_f(fw["x_f"]).float(), batch["face_identity"])
        fake_logits = self.D_f(fw["x_g"].detach()).float()
        fake = F.cross_entropy(fake_logits, torch.full_like(batch["face_identity"], self.fake_class))
        return c.w_d_face_real * real + c.w_d_face_fake * fake

    def _d_exp_loss(self, batch: dict[str, Any], fw: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(self.D_e(fw["x_e"]).float(), batch["label"])

    # -- training ---------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        self._check_batch(batch)
        c = self.config
        step = int(self.steps_done)
        with ctx.autocast():
            fw = self._forward(batch)
        if step % max(1, c.d_face_every) == 0:
            with ctx.autocast():
                d_face = self._d_face_loss(batch, fw)
            ctx.step("d_face", d_face)
            self.last_d[0] = d_face.detach()
        if step % max(1, c.d_exp_every) == 0:
            with ctx.autocast():
                d_exp = self._d_exp_loss(batch, fw)
            ctx.step("d_exp", d_exp)
            self.last_d[1] = d_exp.detach()
        out = {"d_face": float(self.last_d[0]), "d_exp": float(self.last_d[1])}
        with frozen(self.D_f, self.D_e), ctx.autocast():
            g = self._gen_loss(batch, fw)
        ctx.step("gen", g["g"])
        self.steps_done += 1
        out.update({k: float(v.detach()) for k, v in g.items()})
        out["loss"] = out["g"]
        out["acc"] = self._accuracy(fw["logits"], batch["label"])
        return out

    def loss_terms(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        self._check_batch(batch)
        fw = self._forward(batch)
        g = self._gen_loss(batch, fw)
        return {"d_face": self._d_face_loss(batch, fw), "d_exp": self._d_exp_loss(batch, fw), **g,
                "_logits": fw["logits"]}

    def classify(self, images: Tensor) -> Tensor:
        return self.encode_expression(images)[1]

    @torch.no_grad()
    def transfer(self, expression_images: Tensor, face_images: Tensor, noise: Tensor | None = None) -> Tensor:
        """The expression of each ``expression_images[i]`` on the face of ``face_images[i]``.

        Both (B, 3, s, s) RGB in [0, 1]; returns (B, 3, s, s) in [0, 1] (grey replicated when c = 1).
        """
        c = self.config
        h_e, _ = self.encode_expression(expression_images)
        f_f = self.E_f(to_network(face_images, c.channels))
        return to_unit(self.decode(f_f, h_e, noise))

    @torch.no_grad()
    def generate(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Trainer samples: each image re-generated from its own codes, and its expression on the next
        image's face (a roll of the batch, or the paired ``face_image``). Both (B, 3, s, s) in [0, 1]."""
        x = batch["image"]
        faces = batch.get("face_image", torch.roll(x, 1, 0))
        return self.transfer(x, x), self.transfer(x, faces)
