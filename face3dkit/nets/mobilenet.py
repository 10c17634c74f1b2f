"""torchvision-compatible MobileNetV2 written in plain torch (Sandler et al. 2018).

Parameter and buffer names and shapes are those of ``torchvision.models.mobilenet_v2`` so that
ImageNet checkpoints such as ``mobilenet_v2-b0353104.pth`` load with
:func:`face3dkit.nets.load_torchvision_weights`::

    features.0.{0,1}           3x3/2 conv 3 -> 32, BN (ReLU6)
    features.{1..17}.conv.*    inverted residual blocks (expand 1x1, depthwise 3x3, linear 1x1)
    features.18.{0,1}          1x1 conv 320 -> 1280, BN (ReLU6)
    classifier.1               Linear 1280 -> num_classes (after dropout 0.2)

3.5 M parameters with 1000 classes (ResNet-18: 11.7 M) and ~0.3 GFLOP at 224 px (ResNet-18:
1.8): the R-Net backbone for CPUs and for weights small enough to ship.

Input ``(B, 3, H, W)`` RGB; output ``(B, num_classes)`` logits, or the ``(B, 1280 * width)``
globally average-pooled features with ``return_features=True``. :meth:`MobileNetV2.forward_stages`
also returns the stride-16 feature map (``(B, 96 * width, H/16, W/16)``; what Deng et al.'s C-Net
reads from the R-Net).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2"]

#: (expansion t, output channels c, repeats n, first stride s) of each stage, as the paper's Table 2.
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                         (6, 160, 3, 2), (6, 320, 1, 1))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without going more than 10 % below ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BN + ReLU6; keys ``0.weight``, ``1.*`` (torchvision's Conv2dNormActivation)."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1x1, unless ``expand_ratio`` is 1), depthwise 3x3 with ``stride``, linear 1x1
    projection; a residual connection when shape is kept. ``(B, inp, H, W) -> (B, oup, H/s, W/s)``."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual stride must be 1 or 2, got {stride}")
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision-layout MobileNetV2.

    Args:
        num_classes: size of ``classifier.1`` (1000 for ImageNet checkpoints).
        width_mult: channel multiplier (1.0 for the published checkpoints).
        return_features: ``forward`` returns the pooled features instead of logits (the
            classifier is still built so checkpoints keep loading).
        dropout: dropout before the classifier.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, return_features: bool = False,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.return_features = return_features
        cin = _make_divisible(32 * width_mult)
        self.num_features = _make_divisible(1280 * max(1.0, width_mult))
        feats: list[nn.Module] = [_conv_bn_relu6(3, cin, stride=2)]
        #: index into ``features`` of the last block at stride 16 (the C-Net's feature map).
        self.stride16_index = 0
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
            if c == 96:
                self.stride16_index = len(feats) - 1
                self.stride16_channels = cout
        feats.append(_conv_bn_relu6(cin, self.num_features, kernel=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.num_features, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` -> (stride-16 map ``(B, stride16_channels, H/16, W/16)``, pooled
        ``(B, num_features)`` features)."""
        k = self.stride16_index + 1
        mid = self.features[:k](x)
        out = self.features[k:](mid)
        return mid, torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled ``(B, num_features)`` features."""
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``, or pooled features if ``return_features``."""
        feats = self.forward_features(x)
        return feats if self.return_features else self.classifier(feats)


def mobilenet_v2(num_classes: int = 1000, return_features: bool = False, width_mult: float = 1.0) -> MobileNetV2:
    """MobileNetV2 (3,504,872 parameters with 1000 classes and width 1.0, as torchvision)."""
    return MobileNetV2(num_classes, width_mult, return_features)
