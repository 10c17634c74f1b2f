"""torchvision-compatible ResNet-18/34/50/101 written in plain torch.

Parameter and buffer names and shapes are those of ``torchvision.models.resnet`` (ResNet v1.5:
the stride of a bottleneck sits on its 3x3 conv), so ImageNet checkpoints such as
``resnet50-0676ba61.pth`` or ``resnet18-f37072fd.pth`` load with
:func:`load_torchvision_weights`::

    conv1 (7x7/2)  bn1  layer{1..4}.{i}.conv1/bn1/conv2/bn2[/conv3/bn3]
    layer{2..4}.0.downsample.0 (1x1 conv)  layer{2..4}.0.downsample.1 (BN)  (+ layer1.0 for
    bottleneck nets)   fc (Linear 512*expansion -> num_classes)

Input ``(B, 3, H, W)`` RGB in ``[0, 1]`` normalised with the ImageNet statistics
(:func:`imagenet_normalize`). Output ``(B, num_classes)`` logits, or the ``(B, 512*expansion)``
globally average-pooled features with ``return_features=True`` (the FER classifier backbone).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from ._checkpoint import load_checked_state_dict, read_state_dict

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "imagenet_normalize",
    "load_torchvision_weights",
]

#: ImageNet channel statistics used by every torchvision classification checkpoint (RGB, [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: Tensor) -> Tensor:
    """``(B, 3, H, W)`` RGB in ``[0, 1]`` -> ImageNet-normalised, same device/dtype."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


class BasicBlock(nn.Module):
    """Two 3x3 convs plus residual (ResNet-18/34): ``(B, Cin, H, W) -> (B, planes, H/s, W/s)``."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 bottleneck (ResNet-50/101). Output channels ``4 * planes``."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-layout ResNet.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        num_classes: size of ``fc`` (1000 for ImageNet checkpoints).
        return_features: if True, ``forward`` returns the pooled ``(B, 512 * expansion)`` features
            instead of logits (``fc`` is still built so checkpoints keep loading).
        zero_init_residual: zero the last BN of each residual branch (torchvision option).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        num_classes: int = 1000,
        return_features: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.return_features = return_features
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1)
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.num_features = 512 * block.expansion
        #: channels of ``layer3``'s output (:meth:`forward_stages`).
        self.stride16_channels = 256 * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0.0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0.0)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward_stages(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` -> (``layer3``'s stride-16 map ``(B, stride16_channels, H/16, W/16)``,
        pooled ``(B, 512 * expansion)`` features)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        mid = self.layer3(self.layer2(self.layer1(x)))
        return mid, torch.flatten(self.avgpool(self.layer4(mid)), 1)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` (ImageNet-normalised) -> pooled ``(B, 512 * expansion)`` features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)``, or pooled features if ``return_features``."""
        feats = self.forward_features(x)
        return feats if self.return_features else self.fc(feats)


def resnet18(num_classes: int = 1000, return_features: bool = False) -> ResNet:
    """ResNet-18 (11,689,512 parameters with 1000 classes, as torchvision)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, return_features)


def resnet34(num_classes: int = 1000, return_features: bool = False) -> ResNet:
    """ResNet-34 (21,797,672 parameters with 1000 classes)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, return_features)


def resnet50(num_classes: int = 1000, return_features: bool = False) -> ResNet:
    """ResNet-50 v1.5 (25,557,032 parameters with 1000 classes)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, return_features)


def resnet101(num_classes: int = 1000, return_features: bool = False) -> ResNet:
    """ResNet-101 v1.5 (44,549,160 parameters with 1000 classes)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, return_features)


def load_torchvision_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    exclude: Iterable[str] = (),
) -> nn.Module:
    """Load a torchvision ``state_dict`` file into ``model`` (a :class:`ResNet` or ``VGG``).

    Args:
        model: target network, modified in place and returned.
        path: ``*.pth`` file holding a plain ``state_dict``.
        map_location: passed to ``torch.load``.
        exclude: key prefixes to skip, e.g. ``("fc.",)`` to load an ImageNet backbone into a model
            whose classifier has a different number of classes (kept at its initialisation).

    Raises:
        CheckpointMismatchError: one line naming ``path`` and the missing/unexpected keys or shape
            mismatch.
    """
    source = os.fspath(path)
    state_dict = read_state_dict(source, map_location)
    load_checked_state_dict(model, state_dict, source, type(model).__name__, ignore=exclude)
    return model
