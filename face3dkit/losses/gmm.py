"""Gaussian mixture models with diagonal or full covariances: log-density in torch (batched, any
device), fitting by EM (scikit-learn), JSON serialisation. The skin-colour model of
:mod:`face3dkit.losses.skin` is two of them."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["CovarianceType", "GaussianMixtureModel"]

CovarianceType = Literal["diag", "full"]


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class GaussianMixtureModel:
    """A Gaussian mixture density with diagonal or full covariances (float64 numpy storage).

    Attributes:
        weights: ``(K,)`` mixing weights (renormalised to sum 1 when evaluated).
        means: ``(K, D)``.
        covariances: ``(K, D)`` per-dimension variances (``"diag"``) or ``(K, D, D)`` (``"full"``).
        covariance_type: ``"diag"`` or ``"full"``.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance_type: CovarianceType = "diag"

    def __post_init__(self) -> None:
        self.weights = _as_numpy(self.weights).reshape(-1)
        self.means = _as_numpy(self.means)
        self.covariances = _as_numpy(self.covariances)
        k = self.weights.shape[0]
        if self.means.ndim != 2 or self.means.shape[0] != k:
            raise ValueError(f"means must be (K={k}, D), got {self.means.shape}")
        d = self.means.shape[1]
        if self.covariance_type == "diag":
            if self.covariances.shape != (k, d):
                raise ValueError(f"diag covariances must be {(k, d)}, got {self.covariances.shape}")
            if np.any(self.covariances <= 0):
                raise ValueError("diag covariances (variances) must be positive")
        elif self.covariance_type == "full":
            if self.covariances.shape != (k, d, d):
                raise ValueError(
                    f"full covariances must be {(k, d, d)}, got {self.covariances.shape}"
                )
            try:
                np.linalg.cholesky(self.covariances)
            except np.linalg.LinAlgError as exc:
                raise ValueError("full covariances must be positive definite") from exc
        else:
            raise ValueError(
                f"covariance_type must be 'diag' or 'full', got {self.covariance_type!r}"
            )
        if np.any(self.weights < 0) or self.weights.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def log_prob(self, x: Tensor) -> Tensor:
        """Log density ``log sum_k w_k N(x; mu_k, Sigma_k)``.

        Args:
            x: ``(..., D)`` floating tensor.

        Returns:
            ``(...)``, same device and dtype as ``x`` (computed with ``logsumexp``).
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f"last dim of x must be {self.dim}, got {tuple(x.shape)}")
        dev, dt = x.device, x.dtype
        w = self.weights / self.weights.sum()
        log_w = torch.as_tensor(np.log(np.maximum(w, 1e-300)), device=dev, dtype=dt)
        mu = torch.as_tensor(self.means, device=dev, dtype=dt)
        diff = x.unsqueeze(-2) - mu  # (..., K, D)
        d = self.dim
        if self.covariance_type == "diag":
            var = torch.as_tensor(self.covariances, device=dev, dtype=dt)
            maha = (diff * diff / var).sum(-1)
            log_det = torch.as_tensor(np.log(self.covariances).sum(-1), device=dev, dtype=dt)
        else:
            # Precision Cholesky U (lower) with U U^T = Sigma^-1: maha = ||diff @ U||^2.
            prec_chol = np.linalg.cholesky(np.linalg.inv(self.covariances))
            u = torch.as_tensor(prec_chol, device=dev, dtype=dt)
            z = torch.einsum("...kd,kde->...ke", diff, u)
            maha = (z * z).sum(-1)
            log_det = torch.as_tensor(
                -2.0 * np.log(np.diagonal(prec_chol, axis1=-2, axis2=-1)).sum(-1),
                device=dev,
                dtype=dt,
            )
        log_comp = log_w - 0.5 * (maha + log_det + d * math.log(2.0 * math.pi))
        return torch.logsumexp(log_comp, dim=-1)

    def prob(self, x: Tensor) -> Tensor:
        """Density ``(...)`` at ``x (..., D)``; see :meth:`log_prob`."""
        return self.log_prob(x).exp()

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """Draw ``n`` samples ``(n, D)`` (float64 numpy)."""
        rng = np.random.default_rng(seed)
        w = self.weights / self.weights.sum()
        comp = rng.choice(self.n_components, size=n, p=w)
        if self.covariance_type == "diag":
            noise = rng.standard_normal((n, self.dim)) * np.sqrt(self.covariances[comp])
        else:
            chol = np.linalg.cholesky(self.covariances)[comp]
            noise = np.einsum("nde,ne->nd", chol, rng.standard_normal((n, self.dim)))
        return self.means[comp] + noise

    @classmethod
    def fit(
        cls,
        samples: Any,
        n_components: int = 16,
        covariance_type: CovarianceType = "diag",
        seed: int | None = 0,
        max_iter: int = 200,
        n_init: int = 1,
        reg_covar: float = 1e-6,
    ) -> GaussianMixtureModel:
        """Fit by EM with scikit-learn's ``GaussianMixture`` (k-means initialisation).

        Args:
            samples: ``(N, D)`` array or tensor.
            n_components, covariance_type, max_iter, n_init, reg_covar: as scikit-learn.
            seed: ``random_state`` for reproducibility.
        """
        from sklearn.mixture import GaussianMixture

        if covariance_type not in ("diag", "full"):
            raise ValueError(f"covariance_type must be 'diag' or 'full', got {covariance_type!r}")
        x = _as_numpy(samples)
        if x.ndim != 2:
            raise ValueError(f"samples must be (N, D), got {x.shape}")
        gm = GaussianMixture(
            n_components=n_components,
            covariance_type=covariance_type,
            random_state=seed,
            max_iter=max_iter,
            n_init=n_init,
            reg_covar=reg_covar,
        ).fit(x)
        return cls(gm.weights_, gm.means_, gm.covariances_, covariance_type)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``covariance_type``, ``weights``, ``means``, ``covariances``."""
        return {
            "covariance_type": self.covariance_type,
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GaussianMixtureModel:
        """Inverse of :meth:`to_dict` (extra keys are ignored)."""
        return cls(d["weights"], d["means"], d["covariances"], d.get("covariance_type", "diag"))

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """Serialise to JSON text; also write it to ``path`` (atomically) if given."""
        return _dump_json(self.to_dict(), path)

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> GaussianMixtureModel:
        """Read from a JSON file path, or from JSON text (a string starting with ``{``)."""
        return cls.from_dict(_read_json(source))


def _dump_json(d: Mapping[str, Any], path: str | os.PathLike[str] | None, indent: int | None = None) -> str:
    """JSON text of ``d``, also written atomically to ``path`` when given."""
    from face3dkit.io.atomic import atomic_write_text

    text = json.dumps(d, indent=indent)
    if path is not None:
        atomic_write_text(path, text)
    return text


def _read_json(source: str | os.PathLike[str]) -> dict[str, Any]:
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return json.loads(source)
    with open(source, encoding="utf-8") as f:
        return json.load(f)
