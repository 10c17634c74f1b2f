"""Skin-colour probability from two Gaussian mixtures and Deng et al.'s skin attention.

A naive-Bayes (two-class generative) classifier: with skin and non-skin colour densities
``p(x | skin)``, ``p(x | non-skin)`` (Gaussian mixtures) and a prior ``P(skin)``,

    P(skin | x) = P(skin) p(x|skin) / (P(skin) p(x|skin) + (1 - P(skin)) p(x|non-skin)),

evaluated per pixel in log space (a sigmoid of the log-likelihood ratio), so it never divides
0 by 0 for colours far from both mixtures.

Shipped models (``assets/``, loaded with :func:`load_skin_model`):

* ``"jones_rehg"`` (default) - the 16-component RGB skin / non-skin mixtures with diagonal
  covariances of Jones & Rehg ("Statistical Color Models with Application to Skin Detection",
  CRL 98/11 1998, IJCV 2002), prior 0.5.
* ``"deng2019"`` - the 4-component full-covariance YCbCr mixtures released with Deng et al.'s
  Deep3DFaceReconstruction (``skin.py``), prior 0.8 as in their code.

Deng et al. (CVPRW 2019, robust photometric loss) weight the photometric loss per pixel by
``A_i = 1 if P_i > 0.5 else P_i`` (:func:`skin_attention` with ``mode="paper"``). Their released
code (TF and PyTorch) instead feeds the raw posterior ``P_i`` (prior 0.8) as the attention mask
(``mode="posterior"``).

Images follow ``docs/conventions.md``: ``(B, H, W, 3)`` RGB, float in ``[0, 1]`` (or 0-255 /
uint8, see ``input_range``). Outputs keep the input's device and (floating) dtype.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from face3dkit.losses.gmm import CovarianceType, GaussianMixtureModel, _as_numpy, _dump_json, _read_json

__all__ = [
    "GaussianMixtureModel",
    "SkinColorModel",
    "SKIN_MODELS",
    "load_skin_model",
    "rgb_to_ycbcr_bt601",
    "skin_probability",
    "skin_attention",
    "fit_skin_gmm",
]

#: Shipped skin models: name -> JSON file in ``face3dkit._assets`` (the repository's ``assets/``).
SKIN_MODELS: dict[str, str] = {
    "jones_rehg": "skin_gmm_jones_rehg.json",
    "deng2019": "skin_gmm_deng2019.json",
}

ColorSpace = Literal["rgb", "ycbcr_bt601"]
_COLOR_SPACES = ("rgb", "ycbcr_bt601")

# ITU-R BT.601 RGB(0-255) -> Y'CbCr "studio swing" matrix, as in Deng et al.'s ``_rgb2ycbcr``
# (MATLAB rgb2ycbcr): Y in [16, 235], Cb/Cr in [16, 240].
_YCBCR_M = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_YCBCR_OFFSET = (16.0, 128.0, 128.0)


def rgb_to_ycbcr_bt601(rgb255: Tensor) -> Tensor:
    """``(..., 3)`` RGB in 0-255 -> ``(..., 3)`` BT.601 Y'CbCr in 0-255 (studio swing)."""
    m = torch.tensor(_YCBCR_M, device=rgb255.device, dtype=rgb255.dtype) / 255.0
    off = torch.tensor(_YCBCR_OFFSET, device=rgb255.device, dtype=rgb255.dtype)
    return rgb255 @ m.T + off


@dataclass
class SkinColorModel:
    """Skin and non-skin colour mixtures plus the prior and colour space they live in.

    Attributes:
        skin, nonskin: the class-conditional densities.
        prior_skin: ``P(skin)`` used when no prior is passed to :meth:`probability`.
        color_space: ``"rgb"`` or ``"ycbcr_bt601"`` (Deng et al.'s BT.601 studio-swing Y'CbCr).
        value_range: the mixtures' colour scale (255: channels in 0-255).
        name, source: provenance (citation of the published numbers).
    """

    skin: GaussianMixtureModel
    nonskin: GaussianMixtureModel
    prior_skin: float = 0.5
    color_space: ColorSpace = "rgb"
    value_range: float = 255.0
    name: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.color_space not in _COLOR_SPACES:
            raise ValueError(
                f"color_space must be one of {_COLOR_SPACES}, got {self.color_space!r}"
            )
        if not 0.0 < self.prior_skin < 1.0:
            raise ValueError(f"prior_skin must be in (0, 1), got {self.prior_skin}")
        if self.skin.dim != 3 or self.nonskin.dim != 3:
            raise ValueError("skin colour mixtures must be 3-dimensional")

    def features(self, image: Tensor, input_range: float | None = None) -> Tensor:
        """Map RGB pixels ``(..., 3)`` to the mixtures' colour space and scale (floating)."""
        x, scale = _to_float_image(image, input_range)
        rgb = x * (255.0 / scale)
        feats = rgb_to_ycbcr_bt601(rgb) if self.color_space == "ycbcr_bt601" else rgb
        return feats * (self.value_range / 255.0)

    def log_likelihood_ratio(self, image: Tensor, input_range: float | None = None) -> Tensor:
        """``log p(x|skin) - log p(x|non-skin)`` per pixel: ``(..., 3) -> (...)``."""
        f = self.features(image, input_range)
        return self.skin.log_prob(f) - self.nonskin.log_prob(f)

    def probability(
        self, image: Tensor, prior: float | None = None, input_range: float | None = None
    ) -> Tensor:
        """Posterior ``P(skin | colour)`` per pixel: ``(..., 3) -> (...)`` in ``[0, 1]``."""
        p = self.prior_skin if prior is None else float(prior)
        if not 0.0 < p < 1.0:
            raise ValueError(f"prior must be in (0, 1), got {p}")
        llr = self.log_likelihood_ratio(image, input_range)
        return torch.sigmoid(llr + math.log(p / (1.0 - p)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (see ``assets/skin_gmm_*.json`` for the layout)."""
        d: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "color_space": self.color_space,
            "value_range": self.value_range,
            "prior_skin": self.prior_skin,
        }
        d.update(self.extra)
        d["skin"] = self.skin.to_dict()
        d["nonskin"] = self.nonskin.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SkinColorModel:
        """Inverse of :meth:`to_dict`; unknown top-level keys are kept in ``extra``."""
        known = {"name", "source", "color_space", "value_range", "prior_skin", "skin", "nonskin"}
        return cls(
            skin=GaussianMixtureModel.from_dict(d["skin"]),
            nonskin=GaussianMixtureModel.from_dict(d["nonskin"]),
            prior_skin=float(d.get("prior_skin", 0.5)),
            color_space=d.get("color_space", "rgb"),
            value_range=float(d.get("value_range", 255.0)),
            name=str(d.get("name", "")),
            source=str(d.get("source", "")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Serialise to JSON text; also write it to ``path`` (atomically) if given."""
        return _dump_json(self.to_dict(), path, indent=1)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> SkinColorModel:
        """Read from a JSON file path, or from JSON text (a string starting with ``{``)."""
        return cls.from_dict(_read_json(source))


def _to_float_image(image: Tensor, input_range: float | None) -> tuple[Tensor, float]:
    """Return ``(float image, its full-scale value)``; integer images are read as 0-255."""
    if not torch.is_floating_point(image):
        return image.to(torch.float32), 255.0 if input_range is None else float(input_range)
    if input_range is None:
        # Heuristic: float images whose maximum is <= 1 are taken as [0, 1], otherwise 0-255.
        input_range = 1.0 if image.numel() == 0 or float(image.detach().max()) <= 1.0 else 255.0
    return image, float(input_range)


@functools.cache
def _load_shipped(name: str) -> SkinColorModel:
    fname = SKIN_MODELS[name]
    text = importlib.resources.files("face3dkit._assets").joinpath(fname).read_text("utf-8")
    return SkinColorModel.from_dict(json.loads(text))


def load_skin_model(name: str | os.PathLike[str] = "jones_rehg") -> SkinColorModel:
    """Load a shipped model by name (:data:`SKIN_MODELS`) or a JSON file by path.

    Shipped models are cached; treat the returned object as read-only.
    """
    if isinstance(name, str) and name in SKIN_MODELS:
        return _load_shipped(name)
    if isinstance(name, str) and not os.path.exists(name):
        raise ValueError(f"unknown skin model {name!r}; shipped: {sorted(SKIN_MODELS)} or a path")
    return SkinColorModel.from_json(name)


def _resolve(gmm: SkinColorModel | str | None) -> SkinColorModel:
    if gmm is None:
        return load_skin_model("jones_rehg")
    if isinstance(gmm, SkinColorModel):
        return gmm
    return load_skin_model(gmm)


def skin_probability(
    image: Tensor,
    gmm: SkinColorModel | str | None = None,
    prior: float | None = None,
    input_range: float | None = None,
) -> Tensor:
    """Per-pixel skin posterior ``P(skin | colour)``.

    Args:
        image: ``(B, H, W, 3)`` RGB (any leading dims work). Float in ``[0, 1]`` or 0-255, or an
            integer (uint8) image in 0-255.
        gmm: a :class:`SkinColorModel`, a shipped model name, a JSON path, or None for
            ``"jones_rehg"``.
        prior: ``P(skin)``; None uses the model's ``prior_skin`` (0.5 for Jones-Rehg).
        input_range: full-scale value of ``image`` (1.0 or 255.0). None: integer images are 0-255,
            float images are ``[0, 1]`` if their maximum is <= 1 and 0-255 otherwise.

    Returns:
        ``(B, H, W)`` probabilities in ``[0, 1]``; device/dtype of ``image`` (float32 for ints).
    """
    if image.shape[-1] != 3:
        raise ValueError(f"image must be (..., 3) RGB, got {tuple(image.shape)}")
    return _resolve(gmm).probability(image, prior, input_range)


def skin_attention(
    image: Tensor,
    gmm: SkinColorModel | str | None = None,
    prior: float | None = None,
    input_range: float | None = None,
    mode: Literal["paper", "posterior"] = "paper",
    threshold: float = 0.5,
) -> Tensor:
    """Deng et al.'s skin attention for the photometric loss.

    ``mode="paper"``: ``A = 1 where P > threshold (0.5), else P`` (Deng et al. 2019 paper).
    ``mode="posterior"``: ``A = P`` - what their released code uses (with ``gmm="deng2019"``,
    whose prior is 0.8).

    Args: as :func:`skin_probability`, plus ``mode`` and ``threshold``.

    Returns:
        ``(B, H, W)`` weights in ``[0, 1]`` (pass to :func:`photometric_loss` as ``attention``).
    """
    p = skin_probability(image, gmm, prior, input_range)
    if mode == "posterior":
        return p
    if mode != "paper":
        raise ValueError(f"mode must be 'paper' or 'posterior', got {mode!r}")
    return torch.where(p > threshold, torch.ones_like(p), p)


def fit_skin_gmm(
    skin_pixels: Any,
    nonskin_pixels: Any,
    n_components: int = 16,
    covariance_type: CovarianceType = "diag",
    seed: int | None = 0,
    prior_skin: float = 0.5,
    color_space: ColorSpace = "rgb",
    input_range: float = 255.0,
    max_iter: int = 200,
) -> SkinColorModel:
    """Fit skin and non-skin mixtures (scikit-learn EM) to labelled pixels.

    Args:
        skin_pixels: ``(N, 3)`` RGB samples of skin, in ``[0, input_range]``.
        nonskin_pixels: ``(M, 3)`` RGB samples of everything else.
        n_components: components per class (16 as Jones & Rehg).
        covariance_type: ``"diag"`` or ``"full"``.
        seed: ``random_state`` of the EM initialisation.
        prior_skin: stored ``P(skin)`` (e.g. ``N / (N + M)`` for the empirical prior).
        color_space: fit in ``"rgb"`` or ``"ycbcr_bt601"``; mixtures are stored in 0-255 units.
        input_range: full-scale value of the given pixels (255 or 1).
        max_iter: EM iterations.

    Returns:
        A :class:`SkinColorModel` usable by :func:`skin_probability`.
    """
    holder = SkinColorModel(
        _placeholder_gmm(), _placeholder_gmm(), prior_skin, color_space, 255.0, name="fitted"
    )
    fitted = []
    for px in (skin_pixels, nonskin_pixels):
        t = torch.as_tensor(_as_numpy(px))
        if t.ndim != 2 or t.shape[1] != 3:
            raise ValueError(f"pixels must be (N, 3), got {tuple(t.shape)}")
        feats = holder.features(t, input_range).numpy()
        fitted.append(
            GaussianMixtureModel.fit(feats, n_components, covariance_type, seed, max_iter)
        )
    holder.skin, holder.nonskin = fitted
    holder.source = (
        f"fit_skin_gmm: scikit-learn GaussianMixture, {n_components} {covariance_type} components "
        f"per class, seed {seed}"
    )
    return holder


def _placeholder_gmm() -> GaussianMixtureModel:
    return GaussianMixtureModel(np.ones(1), np.zeros((1, 3)), np.ones((1, 3)), "diag")
