"""The expression classifier shared by every FER model: a CNN backbone, FC 1024, dropout, heads.

Backbones: the project's torchvision-compatible ResNets (``resnet18/34/50/101``; ImageNet weights
load from a user path with :func:`face3dkit.nets.load_torchvision_weights`), ``cnn`` (a VGG-style
net that keeps half resolution in its first stage, for small faces on CPU) and ``tiny`` (four
stride-2 conv-BN-ReLU blocks, for tests).
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from face3dkit.nets.resnet import imagenet_normalize, load_torchvision_weights, resnet18, resnet34, resnet50, resnet101

__all__ = ["BACKBONES", "SmallCNN", "TinyBackbone", "build_backbone", "ExpressionClassifier"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "cnn", "tiny")


class SmallCNN(nn.Module):
    """VGG-style CPU backbone: stages of two 3x3 conv-BN-ReLU, 2x2 max-pool between stages, global average.

    The first convolution has stride 2; unlike a ResNet stem (stride 4 before the first stage) it
    keeps half resolution in the first stage, which matters for 48-96 px faces.
    (B, 3, H, W) -> (B, widths[-1]).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for j in range(2):
                stride = 2 if i == 0 and j == 0 else 1
                layers += [nn.Conv2d(c, w, 3, stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features)."""
        return self.features(x).mean((2, 3))


class TinyBackbone(nn.Module):
    """Four stride-2 3x3 conv-BN-ReLU blocks + global average pooling: (B, 3, H, W) -> (B, widths[-1])."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features = c

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, num_features)."""
        return self.features(x).mean((2, 3))


def build_backbone(name: str, weights: str | os.PathLike | None = None) -> nn.Module:
    """A feature extractor with ``forward_features`` and ``num_features``.

    Args:
        name: one of :data:`BACKBONES`.
        weights: optional torchvision ImageNet ``state_dict`` file for a ResNet (``fc`` is skipped).
    """
    makers = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}
    if name in ("tiny", "cnn"):
        if weights is not None:
            raise ValueError(f"the '{name}' backbone has no pretrained weights")
        return TinyBackbone() if name == "tiny" else SmallCNN()
    if name not in makers:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    net = makers[name](return_features=True)
    if weights is not None:
        load_torchvision_weights(net, weights, exclude=("fc.",))
    return net


class ExpressionClassifier(nn.Module):
    """Backbone -> FC 1024 -> ReLU -> dropout -> expression head (+ pose head).

    Input ``(B, 3, H, W)`` RGB in ``[0, 1]`` (ImageNet-normalised inside); outputs
    ``(B, num_classes)`` expression logits and ``(B, num_poses)`` pose logits (None if no pose head).

    Args:
        backbone: name in :data:`BACKBONES`.
        num_classes: expression classes.
        num_poses: pose classes (0: no pose head).
        hidden: width of the FC layer (1024 in GGPI).
        dropout: dropout probability after it (0.5 in GGPI).
        weights: torchvision weights file for the backbone.
    """

    def __init__(self, backbone: str = "resnet50", num_classes: int = 7, num_poses: int = 0, hidden: int = 1024,
                 dropout: float = 0.5, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.backbone = build_backbone(backbone, weights)
        self.fc = nn.Sequential(nn.Linear(self.backbone.num_features, hidden), nn.ReLU(inplace=True),
                                nn.Dropout(dropout))
        self.expression = nn.Linear(hidden, num_classes)
        self.pose = nn.Linear(hidden, num_poses) if num_poses > 0 else None

    def features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, hidden) features after the FC layer and its dropout."""
        return self.fc(self.backbone.forward_features(imagenet_normalize(x)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.features(x)
        return self.expression(h), (self.pose(h) if self.pose is not None else None)
