"""FER models: GGPI (:mod:`fer.models.ggpi`), the plain CNN baseline (:mod:`fer.models.baseline`,
optionally fused with fitted geometry), the geometry-coefficient MLP (:mod:`fer.models.geometry`),
TDGAN (:mod:`fer.models.tdgan`), DR-GAN (:mod:`fer.models.drgan`) and MGLN (:mod:`fer.models.mgln`,
sequences of frames with landmark-placed part crops).

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

TDGAN and DR-GAN take ``backbone`` from these profiles and their network widths from
:data:`MODEL_PROFILES` (``paper``: the papers' decoders, 512 / 320 channels; ``small``: the ``cnn``
encoder, a 16-channel face encoder, 128-channel decoders, 16-channel discriminators).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fer.models.backbone import BACKBONES, ExpressionClassifier, build_backbone
from fer.models.base import FerModel, StepContext
from fer.models.baseline import BaselineConfig, BaselineModel
from fer.models.drgan import DRGANConfig, DRGANModel
from fer.models.geometry import GeometryConfig, GeometryModel
from fer.models.ggpi import GGPIConfig, GGPIModel
from fer.models.mgln import MGLNConfig, MGLNModel
from fer.models.tdgan import TDGANConfig, TDGANModel

__all__ = [
    "BACKBONES",
    "CONFIGS",
    "MODELS",
    "MODEL_PROFILES",
    "SEQUENCE_MODELS",
    "PROFILES",
    "REGISTRY",
    "BaselineConfig",
    "BaselineModel",
    "DRGANConfig",
    "DRGANModel",
    "ExpressionClassifier",
    "FerModel",
    "GeometryConfig",
    "GeometryModel",
    "GGPIConfig",
    "GGPIModel",
    "MGLNConfig",
    "MGLNModel",
    "StepContext",
    "TDGANConfig",
    "TDGANModel",
    "build_backbone",
    "build_model",
    "model_from_config",
    "resolve_profile",
    "without_weights",
]

#: kind -> (config dataclass, model class); ``fer train --model KIND`` and :func:`build_model` accept these.
REGISTRY: dict[str, tuple[type, type[FerModel]]] = {
    "ggpi": (GGPIConfig, GGPIModel),
    "baseline": (BaselineConfig, BaselineModel),
    "geometry": (GeometryConfig, GeometryModel),
    "tdgan": (TDGANConfig, TDGANModel),
    "drgan": (DRGANConfig, DRGANModel),
    "mgln": (MGLNConfig, MGLNModel),
}
MODELS = tuple(REGISTRY)
#: Models trained on sequences of frames (:class:`fer.data.SequenceDataset`).
SEQUENCE_MODELS = ("mgln",)
#: Config class of each model kind (from :data:`REGISTRY`).
CONFIGS: dict[str, type] = {kind: cfg for kind, (cfg, _) in REGISTRY.items()}

#: Profiles: fields set on the model config (unknown fields for a model are ignored).
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"backbone": "resnet50", "enc_channels": 64, "gen_channels": 1024},
    "small": {"backbone": "cnn", "enc_channels": 16, "gen_channels": 128, "w_pose": 0.1},
}

#: Per-model profile entries, applied over :data:`PROFILES`.
MODEL_PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "tdgan": {"paper": {"enc_channels": 64, "gen_channels": 512, "disc_channels": 64},
              "small": {"enc_channels": 16, "gen_channels": 128, "disc_channels": 16}},
    "drgan": {"paper": {"gen_channels": 320, "disc_channels": 32},
              "small": {"gen_channels": 128, "disc_channels": 16}},
}


def resolve_profile(profile: str, device: str) -> str:
    """``'auto'`` -> ``'paper'`` on CUDA, ``'small'`` elsewhere; other names are checked and returned."""
    if profile == "auto":
        return "paper" if str(device).startswith("cuda") else "small"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose auto, {', '.join(PROFILES)}")
    return profile


def build_model(kind: str, profile: str = "paper", **overrides: Any) -> FerModel:
    """A model of ``kind`` (one of :data:`MODELS`) with a profile and config overrides.

    Overrides set config fields by name (e.g. ``image_size=64, use_geometry=False, backbone='tiny'``);
    fields the model does not have are ignored, None values keep the default.
    """
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    cls_cfg = REGISTRY[kind][0]
    names = {f.name for f in dataclasses.fields(cls_cfg)}
    given = {k: v for k, v in overrides.items() if v is not None}
    prof = {**PROFILES[profile], **MODEL_PROFILES.get(kind, {}).get(profile, {})}
    values = {k: v for k, v in {**prof, **given}.items() if k in names}
    return model_from_config(kind, dataclasses.asdict(cls_cfg(**values)))


def without_weights(config: dict[str, Any]) -> dict[str, Any]:
    """A stored model config with its ``backbone_weights`` path cleared (the weights are in the run)."""
    return {**config, "backbone_weights": None} if "backbone_weights" in config else dict(config)


def model_from_config(kind: str, config: dict[str, Any]) -> FerModel:
    """Rebuild a model from ``kind`` and ``dataclasses.asdict(config)`` (as stored in a run)."""
    if kind not in REGISTRY:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODELS)}")
    cls_cfg, cls = REGISTRY[kind]
    names = {f.name for f in dataclasses.fields(cls_cfg)}
    unknown = sorted(set(config) - names)
    if unknown:
        raise ValueError(f"unknown {kind} settings {', '.join(unknown)}")
    return cls(cls_cfg(**{k: _tuples(v) for k, v in config.items()}))


def _tuples(v: Any) -> Any:
    """JSON lists back to the config's (nested) tuples."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v
