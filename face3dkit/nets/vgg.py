"""torchvision-compatible VGG16 (and VGG16-BN) for perceptual features.

Keys follow ``torchvision.models.vgg``: ``features.N.{weight,bias}`` for the convolutions at
``N = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28`` (VGG16 without BN) and
``classifier.{0,3,6}.{weight,bias}`` for the three linear layers, so ``vgg16-397923af.pth`` loads
with :func:`face3dkit.nets.load_torchvision_weights`.

Input ``(B, 3, H, W)`` RGB in ``[0, 1]`` normalised with the ImageNet statistics
(:func:`face3dkit.nets.imagenet_normalize`, or ``normalize_input=True`` in
:meth:`VGG.feature_maps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .resnet import imagenet_normalize

__all__ = ["VGG", "VGG16_CFG", "vgg16", "vgg16_bn", "vgg_layer_names"]

#: Configuration "D" of Simonyan & Zisserman: conv widths, ``"M"`` = 2x2 max-pool.
VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


def vgg_layer_names(cfg: Sequence[int | str] = VGG16_CFG, batch_norm: bool = False) -> list[str]:
    """Names of the ``features`` children in order: ``conv1_1, [bn1_1,] relu1_1, ..., pool5``."""
    names: list[str] = []
    block, idx = 1, 1
    for v in cfg:
        if v == "M":
            names.append(f"pool{block}")
            block, idx = block + 1, 1
        else:
            names.append(f"conv{block}_{idx}")
            if batch_norm:
                names.append(f"bn{block}_{idx}")
            names.append(f"relu{block}_{idx}")
            idx += 1
    return names


class VGG(nn.Module):
    """torchvision-layout VGG.

    Args:
        cfg: layer configuration (default :data:`VGG16_CFG`).
        num_classes: size of the last classifier layer (1000 for ImageNet checkpoints).
        batch_norm: insert BatchNorm2d after each conv (``vgg16_bn`` layout).
        dropout: dropout probability in the classifier.
        with_classifier: build ``avgpool`` + ``classifier`` (120M parameters). False keeps only
            ``features`` for perceptual losses; load torchvision weights into such a model with
            ``load_torchvision_weights(model, path, exclude=("classifier.",))``.
    """

    def __init__(
        self,
        cfg: Sequence[int | str] = VGG16_CFG,
        num_classes: int = 1000,
        batch_norm: bool = False,
        dropout: float = 0.5,
        with_classifier: bool = True,
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        cin = 3
        for v in cfg:
            if v == "M":
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                cout = int(v)
                mods.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
                if batch_norm:
                    mods.append(nn.BatchNorm2d(cout))
                mods.append(nn.ReLU(inplace=True))
                cin = cout
        self.features = nn.Sequential(*mods)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier: nn.Sequential | None = None
        if with_classifier:
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, num_classes),
            )
        self.layer_names = vgg_layer_names(cfg, batch_norm)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` ImageNet-normalised -> ``(B, num_classes)`` logits."""
        if self.classifier is None:
            raise RuntimeError("this VGG was built with with_classifier=False; use feature_maps")
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)

    def feature_maps(
        self,
        x: Tensor,
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        normalize_input: bool = False,
    ) -> dict[str, Tensor]:
        """Intermediate activations by name (see :func:`vgg_layer_names`).

        Args:
            x: ``(B, 3, H, W)``; RGB in ``[0, 1]`` if ``normalize_input`` else ImageNet-normalised.
            layers: names to return; the forward stops after the deepest one.
            normalize_input: apply :func:`imagenet_normalize` first.

        Returns:
            ``{name: (B, C_l, H_l, W_l)}`` in the order of ``layers``.

        Note: ReLUs run out-of-place here so returned activations are not overwritten.
        """
        unknown = [n for n in layers if n not in self.layer_names]
        if unknown:
            raise ValueError(f"unknown VGG layer names {unknown}; valid: {self.layer_names}")
        wanted = set(layers)
        last = max(self.layer_names.index(n) for n in layers)
        if normalize_input:
            x = imagenet_normalize(x)
        found: dict[str, Tensor] = {}
        for i, (name, mod) in enumerate(zip(self.layer_names, self.features, strict=True)):
            x = torch.relu(x) if isinstance(mod, nn.ReLU) else mod(x)
            if name in wanted:
                found[name] = x
            if i == last:
                break
        return {n: found[n] for n in layers}


def vgg16(num_classes: int = 1000, with_classifier: bool = True) -> VGG:
    """VGG16 (138,357,544 parameters with 1000 classes, as torchvision's ``vgg16``;
    14,714,688 in ``features`` alone)."""
    return VGG(VGG16_CFG, num_classes, batch_norm=False, with_classifier=with_classifier)


def vgg16_bn(num_classes: int = 1000, with_classifier: bool = True) -> VGG:
    """VGG16 with BatchNorm (138,365,992 parameters, as torchvision's ``vgg16_bn``)."""
    return VGG(VGG16_CFG, num_classes, batch_norm=True, with_classifier=with_classifier)
