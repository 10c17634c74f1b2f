"""Deng et al. 2019's reconstruction network (R-Net): a ResNet that regresses a morphable model's
coefficients from the 224 x 224 aligned crop.

Architecture as in Deng et al.'s PyTorch release (``ReconNetWrapper``): a torchvision ResNet
without its classifier (pooled features, 2048 for ResNet-50, 512 for ResNet-18; or a MobileNetV2,
1280, for CPUs and small shipped weights) and one 1 x 1
convolution per coefficient block — identity, expression, albedo, angles, SH light, translation
(x, y) and translation (z) — initialised to zero, so an untrained network predicts the mean face,
frontal, under the ambient light. Keys: ``backbone.*`` (torchvision's, ``fc`` absent) and
``final_layers.{0..6}.*``, the keys of that release's ``net_recon`` checkpoint for the BFM layout
(257 coefficients), which :meth:`RNet.load_deep3d_checkpoint` reads.

Input: (B, 3, H, W) RGB in [0, 1] (the release feeds the crop unnormalised). Output: (B, total)
coefficients in :class:`face3dkit.model.CoefficientLayout` order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from face3dkit.model.coefficients import CoefficientLayout, Coefficients

from ._checkpoint import CheckpointMismatchError, load_checked_state_dict, read_state_dict
from .mobilenet import mobilenet_v2
from .resnet import load_torchvision_weights, resnet18, resnet34, resnet50, resnet101

__all__ = ["BFM_LAYOUT", "RNET_BACKBONES", "RNET_FORMAT", "RNet"]

#: ``format`` of the checkpoints :meth:`RNet.save` writes.
RNET_FORMAT = "face3dkit-rnet-v1"

#: Deng et al.'s BFM layout: 80 identity, 64 expression, 80 albedo coefficients (257 in all).
BFM_LAYOUT = CoefficientLayout(n_id=80, n_exp=64, n_tex=80)
#: Backbone name -> (builder, pooled feature size).
RNET_BACKBONES: dict[str, tuple[Any, int]] = {
    "resnet18": (resnet18, 512),
    "resnet34": (resnet34, 512),
    "resnet50": (resnet50, 2048),
    "resnet101": (resnet101, 2048),
    "mobilenet_v2": (mobilenet_v2, 1280),
}


class RNet(nn.Module):
    """Coefficient regression network.

    Args:
        layout: the model's coefficient layout (:attr:`face3dkit.MorphableModel.layout`; 257 for
            the BFM, :data:`BFM_LAYOUT`).
        backbone: ``'resnet50'`` (the paper), ``'resnet18'`` or ``'mobilenet_v2'`` (CPU),
            ``'resnet34'``, ``'resnet101'``.
        imagenet_weights: optional torchvision ImageNet ``state_dict`` file for the backbone (its
            ``fc`` / ``classifier`` is ignored).
        input_size: when set, the network resizes its input to ``input_size`` x ``input_size``
            (bilinear, antialiased) before the backbone, so a net trained on 112 px still takes the
            224 crop (4x less compute); None feeds the crop as it is (the paper).
    """

    def __init__(self, layout: CoefficientLayout, backbone: str = "resnet50",
                 imagenet_weights: str | os.PathLike | None = None, input_size: int | None = None) -> None:
        super().__init__()
        if backbone not in RNET_BACKBONES:
            raise ValueError(f"unknown R-Net backbone {backbone!r}; choose one of {', '.join(RNET_BACKBONES)}")
        build, dim = RNET_BACKBONES[backbone]
        self.layout = layout
        self.backbone_name = backbone
        if input_size is not None and input_size < 16:
            raise ValueError(f"R-Net input_size must be >= 16 pixels, got {input_size}")
        self.input_size = input_size
        self.backbone = build(return_features=True)
        if imagenet_weights is not None:
            load_torchvision_weights(self.backbone, imagenet_weights, exclude=("fc.", "classifier."))
        # Pooled features only: no classifier keys.
        if hasattr(self.backbone, "fc"):
            self.backbone.fc = nn.Identity()
        else:
            self.backbone.classifier = nn.Identity()
        #: channels of :meth:`forward_with_features`' stride-16 feature map.
        self.feature_channels = int(self.backbone.stride16_channels)
        heads = (*layout.sizes[:5], 2, 1)  # translation as (x, y) and z, as the release
        self.final_layers = nn.ModuleList(nn.Conv2d(dim, k, 1) for k in heads)
        for layer in self.final_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _input(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"R-Net takes (B, 3, H, W) images, got {tuple(images.shape)}")
        s = self.input_size
        if s is not None and tuple(images.shape[-2:]) != (s, s):
            images = nn.functional.interpolate(images, size=(s, s), mode="bilinear", align_corners=False,
                                               antialias=True)
        return images

    def _heads(self, pooled: Tensor) -> Tensor:
        feats = pooled[:, :, None, None]
        return torch.cat([layer(feats) for layer in self.final_layers], 1).flatten(1)

    def pooled_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, D) the backbone's pooled features, what the
        coefficient heads read (D = 512 for ResNet-18/34, 2048 for ResNet-50/101, 1280 for
        MobileNetV2; e.g. for a linear probe)."""
        return self.backbone(self._input(images))

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, layout.total) coefficients."""
        return self._heads(self.pooled_features(images))

    def forward_with_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, H, W) RGB in [0, 1] -> ((B, layout.total) coefficients, the backbone's stride-16
        feature map (B, feature_channels, h, w)), from one pass (the C-Net's input)."""
        mid, pooled = self.backbone.forward_stages(self._input(images))
        return self._heads(pooled), mid

    def coefficients(self, images: Tensor) -> Coefficients:
        """:meth:`forward` split into :class:`~face3dkit.model.Coefficients`."""
        return Coefficients.split(self(images), self.layout)

    def load_deep3d_checkpoint(self, path: str | os.PathLike) -> RNet:
        """Load the ``net_recon`` weights of a Deep3DFaceRecon_pytorch checkpoint (``epoch_20.pth``;
        a bare ``state_dict`` of the same keys works too). One-line error naming the file when the
        keys or shapes do not fit (e.g. a BFM checkpoint into another model's layout)."""
        source = os.fspath(path)
        raw = torch.load(source, map_location="cpu", weights_only=True)
        state = raw.get("net_recon", raw) if isinstance(raw, dict) else raw
        if not isinstance(state, dict):
            state = read_state_dict(source)
        load_checked_state_dict(self, state, source, f"R-Net {self.backbone_name} ({self.layout.total} coefficients)")
        return self

    def save(self, path: str | os.PathLike, **extra: Any) -> Path:
        """Write ``{'format', 'backbone', 'layout', 'state_dict', **extra}`` atomically (what
        :meth:`load` reads)."""
        from face3dkit.io.atomic import atomic_open

        lay = self.layout
        with atomic_open(path) as f:
            torch.save({"format": RNET_FORMAT, "backbone": self.backbone_name, "input_size": self.input_size,
                        "layout": [lay.n_id, lay.n_exp, lay.n_tex], "state_dict": self.state_dict(), **extra}, f)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RNet:
        """An R-Net from a checkpoint: one written by :meth:`save` (its backbone and layout), or a
        Deep3DFaceRecon_pytorch ``epoch_*.pth`` / bare ``net_recon`` state_dict (ResNet-50, BFM
        layout); ``'default'``: the R-Net shipped for the default model (:func:`default_rnet_path`).
        Errors are one line naming the file."""
        source = os.fspath(path)
        if source == "default" and not os.path.exists(source):
            source = os.fspath(default_rnet_path())
        try:
            raw = torch.load(source, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointMismatchError(f"{source}: no such R-Net checkpoint") from None
        except Exception as e:  # not a torch file, truncated, pickled objects
            raise CheckpointMismatchError(f"{source}: not a readable R-Net checkpoint "
                                          f"({' '.join(str(e).split())[:200]})") from None
        if isinstance(raw, dict) and raw.get("format") == RNET_FORMAT:
            try:
                size = raw.get("input_size")
                net = cls(CoefficientLayout(*(int(k) for k in raw["layout"])), str(raw["backbone"]),
                          input_size=None if size is None else int(size))
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointMismatchError(f"{source}: bad R-Net checkpoint header ({e})") from None
            load_checked_state_dict(net, raw["state_dict"], source, f"R-Net {net.backbone_name}")
            return net
        return cls(BFM_LAYOUT, "resnet50").load_deep3d_checkpoint(source)


def default_rnet_path() -> Path:
    """The R-Net shipped for the default model (``assets/rnet_default.pt``, float16 weights; how it
    was trained: ``assets/README.md``). Raises FileNotFoundError when the install lacks it."""
    from importlib.resources import files

    p = Path(str(files("face3dkit._assets") / "rnet_default.pt"))
    if not p.is_file():
        raise FileNotFoundError(f"{p}: the shipped R-Net is missing from this install")
    return p
