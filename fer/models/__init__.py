"""FER models: GGPI (:mod:`fer.models.ggpi`), the plain CNN baseline (:mod:`fer.models.baseline`) and
MGLN (:mod:`fer.models.mgln`, sequences of frames with landmark-placed part crops).

:func:`build_model` makes either from a kind, a size profile and overrides; the profile picks
sizes that fit the hardware:

* ``paper`` - GGPI as published: ResNet-50 classifier, 64 encoder / 1024 generator channels.
* ``small`` - for CPU runs: the VGG-style ``cnn`` classifier (keeps resolution at 64 px, trains
  in minutes), 16 encoder / 128 generator channels, and D_acc's pose loss weighted 0.1 instead of
  1 (trained from scratch on a few thousand faces, the easy pose task otherwise dominates the
  first epochs: held-out accuracy after 5 epochs 22% with weight 1, 37% without the pose loss).
  ``--backbone resnet18`` is the torchvision alternative (slower, and its stride-4 stem loses
  detail on 64 px faces).
* ``auto`` - ``paper`` on CUDA, ``small`` otherwise.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fer.models.backbone import BACKBONES, ExpressionClassifier, build_backbone
from fer.models.base import FerModel, StepContext
from fer.models.baseline import BaselineConfig, BaselineModel
from fer.models.ggpi import GGPIConfig, GGPIModel
from fer.models.mgln import MGLNConfig, MGLNModel

__all__ = [
    "BACKBONES",
    "CONFIGS",
    "MODELS",
    "SEQUENCE_MODELS",
    "PROFILES",
    "BaselineConfig",
    "BaselineModel",
    "ExpressionClassifier",
    "FerModel",
    "GGPIConfig",
    "GGPIModel",
    "MGLNConfig",
    "MGLNModel",
    "StepContext",
    "build_backbone",
    "build_model",
    "model_from_config",
    "resolve_profile",
]

MODELS = ("ggpi", "baseline", "mgln")
#: Models trained on sequences of frames (:class:`fer.data.SequenceDataset`).
SEQUENCE_MODELS = ("mgln",)
#: Config class of each model kind.
CONFIGS: dict[str, type] = {"ggpi": GGPIConfig, "baseline": BaselineConfig, "mgln": MGLNConfig}

#: Profiles: fields set on the model config (unknown fields for a model are ignored).
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"backbone": "resnet50", "enc_channels": 64, "gen_channels": 1024},
    "small": {"backbone": "cnn", "enc_channels": 16, "gen_channels": 128, "w_pose": 0.1},
}


def resolve_profile(profile: str, device: str) -> str:
    """``'auto'`` -> ``'paper'`` on CUDA, ``'small'`` elsewhere; other names are checked and returned."""
    if profile == "auto":
        return "paper" if str(device).startswith("cuda") else "small"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose auto, {', '.join(PROFILES)}")
    return profile


def build_model(kind: str, profile: str = "paper", **overrides: Any) -> FerModel:
    """A model of ``kind`` (``'ggpi'``, ``'baseline'`` or ``'mgln'``) with a profile and config overrides.

    Overrides set config fields by name (e.g. ``image_size=64, use_geometry=False, backbone='tiny'``);
    fields the model does not have are ignored, None values keep the default.
    """
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    cls_cfg = CONFIGS[kind]
    names = {f.name for f in dataclasses.fields(cls_cfg)}
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {k: v for k, v in {**PROFILES[profile], **given}.items() if k in names}
    return model_from_config(kind, dataclasses.asdict(cls_cfg(**values)))


def model_from_config(kind: str, config: dict[str, Any]) -> FerModel:
    """Rebuild a model from ``kind`` and ``dataclasses.asdict(config)`` (as stored in a run)."""
    if kind == "ggpi":
        cfg = GGPIConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        return GGPIModel(cfg)
    if kind == "baseline":
        return BaselineModel(BaselineConfig(**config))
    if kind == "mgln":
        def tup(v: Any) -> Any:
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

        return MGLNModel(MGLNConfig(**{k: tup(v) for k, v in config.items()}))
    raise ValueError(f"unknown model {kind!r}")
