"""ArcFace-style improved ResNet (iResNet) face-recognition backbone.

Module tree, parameter names and shapes match insightface's ``arcface_torch`` backbones
(``recognition/arcface_torch/backbones/iresnet.py`` in deepinsight/insightface), so the
``backbone.pth`` files it publishes (plain ``state_dict``\\ s, e.g. ``ms1mv3_arcface_r50_fp16``)
load directly::

    conv1.weight (64,3,3,3)   bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    prelu.weight (64,)
    layer{1..4}.{i}.bn1 / conv1 / bn2 / prelu / conv2 / bn3   (pre-activation basic block)
    layer{1..4}.0.downsample.0 (1x1 conv, stride 2)  layer{1..4}.0.downsample.1 (BatchNorm2d)
    bn2 (BatchNorm2d 512)   fc (Linear 512*7*7 -> 512)   features (BatchNorm1d 512)

Input: ``(B, 3, 112, 112)`` RGB normalised to ``[-1, 1]`` (``2 * x - 1`` for ``x`` in ``[0, 1]``),
aligned with the ArcFace 5-point template. Output: ``(B, 512)`` un-normalised identity embedding
(L2-normalise before taking cosine similarities).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from ._checkpoint import CheckpointMismatchError, load_checked_state_dict, read_state_dict

__all__ = [
    "IBasicBlock",
    "IResNet",
    "IRESNET_LAYERS",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "build_iresnet",
    "detect_iresnet_arch",
    "load_iresnet",
]

#: Blocks per stage of each published depth (insightface ``iresnet18/34/50/100``).
IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}

_ALIASES = {
    "iresnet18": "r18", "iresnet34": "r34", "iresnet50": "r50", "iresnet100": "r100",
    "18": "r18", "34": "r34", "50": "r50", "100": "r100",
}


def _canonical_arch(arch: str) -> str:
    key = arch.lower()
    key = _ALIASES.get(key, key)
    if key not in IRESNET_LAYERS:
        raise ValueError(f"unknown iresnet arch {arch!r}; expected one of {sorted(IRESNET_LAYERS)}")
    return key


class IBasicBlock(nn.Module):
    """Pre-activation basic block: BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride) -> BN.

    Shapes: ``(B, inplanes, H, W) -> (B, planes, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """ArcFace iResNet backbone (see module docstring for the key layout).

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 14, 3)`` for r50.
        num_features: embedding size (512 for every published checkpoint).
        dropout: dropout probability before ``fc`` (0 at inference).
        input_size: side of the square input; ``fc`` expects ``(input_size / 16)**2 * 512``
            inputs, so published checkpoints require 112.
    """

    def __init__(
        self,
        layers: Sequence[int],
        num_features: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
    ) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers must have 4 entries, got {tuple(layers)}")
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.layers_cfg = tuple(int(n) for n in layers)
        self.input_size = input_size
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        self.layer1 = self._make_layer(64, self.layers_cfg[0], stride=2)
        self.layer2 = self._make_layer(128, self.layers_cfg[1], stride=2)
        self.layer3 = self._make_layer(256, self.layers_cfg[2], stride=2)
        self.layer4 = self._make_layer(512, self.layers_cfg[3], stride=2)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=dropout)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False  # as in arcface_torch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=1e-5),
            )
        mods: list[nn.Module] = [IBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        mods += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` RGB in ``[-1, 1]`` (``S = input_size``) -> ``(B, num_features)``."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.input_size,) * 2:
            raise ValueError(
                f"IResNet expects (B, 3, {self.input_size}, {self.input_size}) input, "
                f"got {tuple(x.shape)}"
            )
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def build_iresnet(arch: str = "r50", **kwargs: object) -> IResNet:
    """Build an iResNet by name (``'r18' | 'r34' | 'r50' | 'r100'``, or ``'iresnet50'`` etc.)."""
    return IResNet(IRESNET_LAYERS[_canonical_arch(arch)], **kwargs)  # type: ignore[arg-type]


def iresnet18(**kwargs: object) -> IResNet:
    """iResNet-18 (2, 2, 2, 2 blocks)."""
    return build_iresnet("r18", **kwargs)


def iresnet34(**kwargs: object) -> IResNet:
    """iResNet-34 (3, 4, 6, 3 blocks)."""
    return build_iresnet("r34", **kwargs)


def iresnet50(**kwargs: object) -> IResNet:
    """iResNet-50 (3, 4, 14, 3 blocks); insightface's ``r50``."""
    return build_iresnet("r50", **kwargs)


def iresnet100(**kwargs: object) -> IResNet:
    """iResNet-100 (3, 13, 30, 3 blocks); insightface's ``r100``."""
    return build_iresnet("r100", **kwargs)


_BLOCK_KEY = re.compile(r"^layer([1-4])\.(\d+)\.")


def detect_iresnet_arch(state_dict: Mapping[str, Tensor]) -> str | tuple[int, int, int, int]:
    """Infer the depth from the block indices in the keys (``layerS.I.*``).

    Returns the arch name (``'r50'`` ...) when the block counts match a published depth, else the
    raw ``(n1, n2, n3, n4)`` tuple.
    """
    counts = [0, 0, 0, 0]
    for key in state_dict:
        m = _BLOCK_KEY.match(key)
        if m:
            stage, idx = int(m.group(1)) - 1, int(m.group(2))
            counts[stage] = max(counts[stage], idx + 1)
    layers = (counts[0], counts[1], counts[2], counts[3])
    for name, cfg in IRESNET_LAYERS.items():
        if cfg == layers:
            return name
    return layers


def load_iresnet(
    path: str | os.PathLike[str],
    arch: str | None = None,
    map_location: str | torch.device | None = "cpu",
    eval_mode: bool = True,
) -> IResNet:
    """Build an iResNet and load an insightface ``backbone.pth`` (a plain ``state_dict``).

    Args:
        path: checkpoint file.
        arch: ``'r18' | 'r34' | 'r50' | 'r100'`` (or ``'iresnet50'`` ...); ``None`` or ``'auto'``
            infers it from the keys (:func:`detect_iresnet_arch`).
        map_location: passed to ``torch.load``; the model is moved to the tensors' device.
        eval_mode: return the model in ``eval()`` mode (BatchNorm uses running statistics).

    Raises:
        CheckpointMismatchError: one line naming ``path`` and the missing/unexpected keys or the
            shape mismatch when the checkpoint does not fit the architecture.
    """
    source = os.fspath(path)
    state_dict = read_state_dict(source, map_location)
    if arch is None or arch == "auto":
        detected = detect_iresnet_arch(state_dict)
        if isinstance(detected, tuple):
            if 0 in detected:
                raise CheckpointMismatchError(
                    f"{source}: not an iresnet checkpoint (no layer1..layer4 block keys found; "
                    f"block counts {detected})"
                )
            model = IResNet(detected)
            what = f"iresnet layers={detected}"
        else:
            model = build_iresnet(detected)
            what = f"iresnet {detected}"
    else:
        name = _canonical_arch(arch)
        model = build_iresnet(name)
        what = f"iresnet {name}"
    load_checked_state_dict(model, state_dict, source, what)
    first = next(iter(state_dict.values()))
    model = model.to(first.device)
    return model.eval() if eval_mode else model
