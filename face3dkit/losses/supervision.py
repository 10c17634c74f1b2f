"""Supervision of predicted coefficients by known ones (synthetic renders): in coefficient space,
or in the space the coefficients act on.

The coefficients of a linear basis are not equally important: the default model's first identity
mode carries 43 % of its shape variance, its 100th a fraction of a per cent, yet a mean squared
error over the coefficient vector weighs them alike (Zhu et al., 3DDFA, CVPR 2016, call this the
parameter distance cost and replace it by a vertex distance or a weighted one). The vertex-space
form here measures each linear block where it acts: the mean over vertices of the squared
displacement the coefficient error causes, ``||B d||^2 / V = dᵀ (BᵀB / V) d`` (identity and
expression: shape; albedo: colour), exactly and cheaply through the (k, k) Gram matrix of the basis,
normalised by its trace so that an error of one prior standard deviation in every coefficient
scores 1 (then each block weighs the same whatever its units).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from face3dkit.model.coefficients import Coefficients

__all__ = ["SUPERVISION_SPACES", "basis_gram", "coefficient_supervision", "vertex_space_supervision"]

#: The spaces :func:`face3dkit.regress.hybrid.hybrid_loss` can supervise coefficients in.
SUPERVISION_SPACES = ("coefficients", "vertices")

#: id(basis) -> (a weak reference to it, its version when computed, its Gram matrix).
_GRAMS: dict[int, tuple[weakref.ref, int, Tensor]] = {}


def basis_gram(basis: Tensor) -> Tensor:
    """The (k, k) Gram matrix ``BᵀB / V`` of a (V, 3, k) linear basis (computed in float64, returned
    in the basis' dtype; cached per basis tensor until it is modified in place): ``dᵀ G d`` is the
    mean over the V vertices of the squared length of the displacement ``B d``."""
    if basis.ndim != 3:
        raise ValueError(f"basis_gram takes a (V, 3, k) basis, got {tuple(basis.shape)}")
    key = id(basis)
    hit = _GRAMS.get(key)
    if hit is not None and hit[0]() is basis and hit[1] == basis._version:
        return hit[2]
    flat = basis.detach().reshape(-1, basis.shape[-1]).double()
    gram = (flat.T @ flat / basis.shape[0]).to(basis.dtype)
    _GRAMS[key] = (weakref.ref(basis, lambda _, k=key: _GRAMS.pop(k, None)), basis._version, gram)
    return gram


def coefficient_supervision(pred: Coefficients, true: Coefficients) -> Tensor:
    """Mean squared error over every entry of the joined (B, total) coefficient vectors (a scalar)."""
    return ((pred.join() - true.join().to(pred.id)) ** 2).mean()


def vertex_space_supervision(model: object, pred: Coefficients, true: Coefficients) -> Tensor:
    """The mean of six block errors of (B, ·) predicted vs true coefficients (a scalar):

    identity, expression and albedo each ``dᵀ G d / trace(G)`` with ``G`` the
    :func:`basis_gram` of the model's ``id_basis`` / ``exp_basis`` / ``albedo_basis`` (the mean
    squared vertex displacement, or colour change, the error causes, relative to that of a unit
    error in every coefficient), averaged over the batch; angles (radians), SH light and
    translation (model units) as their mean squared coefficient error.

    Args:
        model: a :class:`face3dkit.MorphableModel` (its three bases).
        pred, true: predicted and true coefficients of B faces.
    """
    true = true.to(pred.id)
    terms = []
    for name, basis in (("id", model.id_basis), ("exp", model.exp_basis), ("tex", model.albedo_basis)):
        gram = basis_gram(basis).to(pred.id)
        d = getattr(pred, name) - getattr(true, name)
        terms.append(((d @ gram) * d).sum(1).mean() / gram.diagonal().sum().clamp_min(1e-30))
    for name in ("angles", "gamma", "trans"):
        terms.append((getattr(pred, name) - getattr(true, name)).pow(2).mean())
    return torch.stack(terms).mean()
