"""The coefficient vector of a morphable face: identity, expression, albedo, pose, lighting.

For the Basel Face Model in Deng et al.'s layout this is the 257-vector
``[id 80 | exp 64 | tex 80 | angles 3 | gamma 27 | trans 3]``; other models have their own
``n_id, n_exp, n_tex`` (read from the model file) and the same tail of 33 values.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

__all__ = ["Coefficients", "CoefficientLayout", "N_ANGLES", "N_GAMMA", "N_TRANS"]

N_ANGLES = 3
N_GAMMA = 27
N_TRANS = 3


@dataclass(frozen=True)
class CoefficientLayout:
    """Sizes of the coefficient blocks, in vector order.

    Attributes:
        n_id: identity (shape) coefficients.
        n_exp: expression coefficients.
        n_tex: albedo (texture) coefficients.
    """

    n_id: int
    n_exp: int
    n_tex: int

    @property
    def sizes(self) -> tuple[int, ...]:
        """Block sizes in order (id, exp, tex, angles, gamma, trans)."""
        return (self.n_id, self.n_exp, self.n_tex, N_ANGLES, N_GAMMA, N_TRANS)

    @property
    def total(self) -> int:
        """Length of the flat vector (257 for BFM in Deng et al.'s layout)."""
        return sum(self.sizes)

    def slices(self) -> dict[str, slice]:
        """Slice of each block in the flat vector, e.g. ``{'id': slice(0, 80), ...}``."""
        out, start = {}, 0
        for name, size in zip(("id", "exp", "tex", "angles", "gamma", "trans"), self.sizes, strict=True):
            out[name] = slice(start, start + size)
            start += size
        return out


@dataclass
class Coefficients:
    """Per-face coefficients, each a (B, k) tensor.

    Attributes:
        id: (B, n_id) identity coefficients (~N(0, 1) for BFM and the default model).
        exp: (B, n_exp) expression coefficients.
        tex: (B, n_tex) albedo coefficients (~N(0, 1)).
        angles: (B, 3) (pitch, yaw, roll) radians.
        gamma: (B, 27) spherical-harmonics lighting, (R 0..8, G 0..8, B 0..8).
        trans: (B, 3) translation in model units.
    """

    id: Tensor
    exp: Tensor
    tex: Tensor
    angles: Tensor
    gamma: Tensor
    trans: Tensor

    @classmethod
    def split(cls, vector: Tensor, layout: CoefficientLayout) -> Coefficients:
        """Split a flat (B, layout.total) vector into blocks (views, no copy)."""
        if vector.ndim != 2 or vector.shape[-1] != layout.total:
            raise ValueError(
                f"coefficient vector must have shape (B, {layout.total}) for layout {layout.sizes}, "
                f"got {tuple(vector.shape)}"
            )
        parts = torch.split(vector, list(layout.sizes), dim=-1)
        return cls(*parts)

    def join(self) -> Tensor:
        """Concatenate the blocks into a flat (B, total) vector."""
        return torch.cat([getattr(self, f.name) for f in fields(self)], -1)

    @classmethod
    def zeros(cls, layout: CoefficientLayout, batch_size: int = 1, *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> Coefficients:
        """All-zero coefficients: the mean face, frontal, ambient light of 0.8, at the origin."""
        return cls.split(torch.zeros(batch_size, layout.total, device=device, dtype=dtype), layout)

    @property
    def batch_size(self) -> int:
        return self.id.shape[0]

    def to(self, *args, **kwargs) -> Coefficients:
        """Move every block (``torch.Tensor.to`` arguments)."""
        return Coefficients(*(getattr(self, f.name).to(*args, **kwargs) for f in fields(self)))

    def detach(self) -> Coefficients:
        return Coefficients(*(getattr(self, f.name).detach() for f in fields(self)))

    def clone(self) -> Coefficients:
        """A copy of every block (``torch.Tensor.clone``)."""
        return Coefficients(*(getattr(self, f.name).clone() for f in fields(self)))

    def __getitem__(self, index: int | slice | Tensor) -> Coefficients:
        """The faces ``index`` of the batch (an int keeps a batch of one: ``c[i]`` is (1, k) blocks)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Coefficients(*(getattr(self, f.name)[index] for f in fields(self)))

    def as_dict(self) -> dict[str, Tensor]:
        """``{'id': ..., 'exp': ..., ...}`` (Deng et al.'s .mat key names are produced by the writers)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
