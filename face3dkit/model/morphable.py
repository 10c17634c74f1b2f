"""The 3D morphable face model (Blanz & Vetter; Deng et al. 2019 layout), readable in one file.

Shape:   ``S(alpha, beta) = S_mean + B_id alpha + B_exp beta``            (B, N, 3), model units
Albedo:  ``T(delta)       = T_mean + B_tex delta``                       (B, N, 3), nominal [0, 1]
Pose:    ``S_world = S @ R(angles)^T + t``                              (docs/conventions.md)
Colour:  ``C = T * (H(n_world) gamma)`` with 9 SH bands per channel       (face3dkit.shading)

All arrays are registered buffers, so ``model.to(device, dtype)`` moves the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from face3dkit.geometry.rotation import rigid_transform, rotate
from face3dkit.model.coefficients import CoefficientLayout, Coefficients
from face3dkit.shading.sh import AMBIENT_INIT, sh_shade

__all__ = ["MorphableModel", "ModelRows", "FaceOutput", "pose_points", "vertex_normals", "face_normals",
           "build_vertex_faces"]


def face_normals(verts: Tensor, faces: Tensor, normalize: bool = True) -> Tensor:
    """Per-face normals ``(v1 - v0) x (v2 - v0)``.

    Args:
        verts: (B, N, 3).
        faces: (F, 3) long, counter-clockwise seen from the outside.
        normalize: return unit normals (Deng et al. normalise before averaging).

    Returns:
        (B, F, 3).
    """
    b, f = verts.shape[0], faces.shape[0]
    # index_select (backward: index_add) rather than advanced indexing (backward: a serial
    # accumulating index_put, the largest cost of a photometric step on the CPU).
    tri = verts.index_select(1, faces.reshape(-1)).view(b, f, 3, 3)
    v0, v1, v2 = tri.unbind(2)
    n = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    return nn.functional.normalize(n, dim=-1, eps=1e-12) if normalize else n


def vertex_normals(verts: Tensor, faces: Tensor, vertex_faces: Tensor | None = None) -> Tensor:
    """Unit vertex normals: normalised sum of the unit normals of the one-ring faces.

    Args:
        verts: (B, N, 3).
        faces: (F, 3) long.
        vertex_faces: optional (N, M) long table of the faces adjacent to each vertex, padded
            with -1 (a model file's own table, e.g. Deng et al.'s ``point_buf``); None = every
            face adjacent to each of its three corners (scattered, the fast path).

    Returns:
        (B, N, 3) unit normals (zero for isolated vertices).
    """
    fn = face_normals(verts, faces)
    if vertex_faces is None:
        b, n = verts.shape[:2]
        vn = fn.new_zeros(b, n, 3)
        for k in range(3):  # the three corners: scatter each face normal onto its vertices
            vn = vn.index_add(1, faces[:, k], fn)
        return nn.functional.normalize(vn, dim=-1, eps=1e-12)
    fn = torch.cat([fn, torch.zeros_like(fn[:, :1])], 1)  # index F (and -1 -> F) is a zero normal
    idx = torch.where(vertex_faces < 0, torch.full_like(vertex_faces, faces.shape[0]), vertex_faces)
    vn = fn.index_select(1, idx.reshape(-1)).view(fn.shape[0], *idx.shape, 3).sum(2)
    return nn.functional.normalize(vn, dim=-1, eps=1e-12)


def _same_adjacency(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two -1-padded (N, M) adjacency tables list the same faces per vertex (any order)."""
    if a.ndim != 2 or a.shape[0] != b.shape[0]:
        return False
    m = max(a.shape[1], b.shape[1])
    pad = lambda t: np.sort(np.pad(t, ((0, 0), (0, m - t.shape[1])), constant_values=-1), 1)  # noqa: E731
    return bool(np.array_equal(pad(a), pad(b)))


def build_vertex_faces(faces: np.ndarray | Tensor, n_verts: int) -> np.ndarray:
    """(N, M) int64 table of faces adjacent to each vertex, padded with -1 (M = max valence)."""
    f = np.asarray(faces, dtype=np.int64)
    vid = f.reshape(-1)
    fid = np.repeat(np.arange(len(f)), 3)
    order = np.argsort(vid, kind="stable")
    vid, fid = vid[order], fid[order]
    counts = np.bincount(vid, minlength=n_verts)
    m = max(int(counts.max()) if len(counts) else 0, 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(vid)) - starts[vid]
    out = -np.ones((n_verts, m), dtype=np.int64)
    out[vid, slot] = fid
    return out


@dataclass
class FaceOutput:
    """Everything :meth:`MorphableModel.forward` computes for a batch of faces.

    Attributes:
        verts: (B, N, 3) model-space shape (identity + expression).
        verts_world: (B, N, 3) after rotation and translation.
        normals_world: (B, N, 3) unit vertex normals after rotation.
        albedo: (B, N, 3) reflectance.
        color: (B, N, 3) SH-lit colour.
        landmarks3d: (B, 68, 3) world-space landmark vertices.
        landmarks2d: (B, 68, 2) pixels, when a camera was given, else None.
        rotation: (B, 3, 3).
    """

    verts: Tensor
    verts_world: Tensor
    normals_world: Tensor
    albedo: Tensor
    color: Tensor
    landmarks3d: Tensor
    landmarks2d: Tensor | None
    rotation: Tensor


def _linear(mean: Tensor, terms: list[tuple[Tensor, Tensor | None]], batch_size: int = 1) -> Tensor:
    """``mean + sum_k basis_k @ coeff_k``: (N, 3) mean, (N, 3, K) bases, (B, K) coefficients (or
    None: zeros) → (B, N, 3)."""
    out = mean.expand(batch_size, -1, -1)
    for basis, coeff in terms:
        if coeff is None:
            continue
        n, _, k = basis.shape
        if coeff.ndim != 2 or coeff.shape[-1] != k:
            raise ValueError(f"expected coefficients of shape (B, {k}), got {tuple(coeff.shape)}")
        out = out + (coeff.to(basis.dtype) @ basis.reshape(n * 3, k).T).reshape(-1, n, 3)
    return out


class ModelRows:
    """A morphable model's mean and bases restricted to some vertices (see :meth:`MorphableModel.rows`).

    Attributes:
        rows: (M,) vertex ids.
    """

    def __init__(self, model: MorphableModel, rows: Tensor) -> None:
        self.rows = rows.to(model.mean_shape.device).long()
        pick = lambda t: t.index_select(0, self.rows)  # noqa: E731
        self.mean_shape, self.id_basis, self.exp_basis = pick(model.mean_shape), pick(model.id_basis), pick(
            model.exp_basis)
        self.mean_albedo, self.albedo_basis = pick(model.mean_albedo), pick(model.albedo_basis)

    def shape(self, id_coeff: Tensor | None = None, exp_coeff: Tensor | None = None) -> Tensor:
        """(B, M, 3) model-space shape of the rows (as :meth:`MorphableModel.shape`)."""
        return _shape(self, id_coeff, exp_coeff)

    def albedo(self, tex_coeff: Tensor | None = None, batch_size: int = 1) -> Tensor:
        """(B, M, 3) albedo of the rows (as :meth:`MorphableModel.albedo`)."""
        return _albedo(self, tex_coeff, batch_size)

    def posed_points(self, coeffs: Coefficients) -> tuple[Tensor, Tensor]:
        """Posed (camera-frame) points (B, M, 3) of the rows and the rotations (B, 3, 3): as
        :meth:`MorphableModel.posed_points`."""
        return pose_points(self.shape(coeffs.id, coeffs.exp), coeffs)


def pose_points(points: Tensor, c: Coefficients) -> tuple[Tensor, Tensor]:
    """``R(angles) @ points + trans``: (B, M, 3) model-space points → camera frame
    (:func:`face3dkit.geometry.rigid_transform` with the coefficients' pose), and R (B, 3, 3)."""
    return rigid_transform(points, c.angles, c.trans, return_rotation=True)


def _albedo(m: MorphableModel | ModelRows, tex_coeff: Tensor | None, batch_size: int) -> Tensor:
    return _linear(m.mean_albedo, [(m.albedo_basis, tex_coeff)],
                   tex_coeff.shape[0] if tex_coeff is not None else batch_size)


def _shape(m: MorphableModel | ModelRows, id_coeff: Tensor | None, exp_coeff: Tensor | None) -> Tensor:
    b = id_coeff.shape[0] if id_coeff is not None else (exp_coeff.shape[0] if exp_coeff is not None else 1)
    return _linear(m.mean_shape, [(m.id_basis, id_coeff), (m.exp_basis, exp_coeff)], b)


class MorphableModel(nn.Module):
    """A linear 3D morphable face model.

    Buffers (N vertices, F faces, ``*_basis`` of shape (N, 3, K)):
        ``mean_shape (N,3)``, ``id_basis``, ``exp_basis``, ``mean_albedo (N,3)``, ``albedo_basis``,
        ``faces (F,3)``, ``vertex_faces (N,M)`` (-1 padded), ``landmark_idx (68,)``,
        ``skin_mask (N,)`` bool, ``front_mask (N,)`` bool, ``front_faces (F2,3)``,
        ``vertex_region (N,)`` long (ids into ``region_names``), and optionally ``uv (T,2)`` and
        ``face_uv (F,3)``.

    Args:
        mean_shape, id_basis, exp_basis, mean_albedo, albedo_basis, faces, landmark_idx: arrays.
        skin_mask, front_mask: optional (N,) boolean masks (default all True).
        front_faces: optional (F2, 3) faces of the front region (default: faces whose three
            vertices are in ``front_mask``).
        uv, face_uv: optional texture coordinates (origin bottom-left) and per-face UV indices.
        exp_names, id_names, tex_names: optional component names.
        region_names, vertex_region: optional named vertex regions (default: one region ``'face'``).
        meta: free-form metadata (name, licence, provenance, units, albedo range).
        recenter: subtract the centroid of the mean shape (Deng et al.'s ``recenter``).
    """

    mean_shape: Tensor
    id_basis: Tensor
    exp_basis: Tensor
    mean_albedo: Tensor
    albedo_basis: Tensor
    faces: Tensor
    vertex_faces: Tensor
    landmark_idx: Tensor
    skin_mask: Tensor
    front_mask: Tensor
    front_faces: Tensor

    def __init__(
        self,
        mean_shape: Any,
        id_basis: Any,
        exp_basis: Any,
        mean_albedo: Any,
        albedo_basis: Any,
        faces: Any,
        landmark_idx: Any,
        *,
        skin_mask: Any = None,
        front_mask: Any = None,
        front_faces: Any = None,
        vertex_faces: Any = None,
        uv: Any = None,
        face_uv: Any = None,
        exp_names: list[str] | None = None,
        id_names: list[str] | None = None,
        tex_names: list[str] | None = None,
        meta: dict | None = None,
        recenter: bool = True,
        region_names: list[str] | None = None,
        vertex_region: Any = None,
    ) -> None:
        super().__init__()
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        i64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
        mean = f32(mean_shape)
        n = mean.shape[0]
        if recenter:
            mean = mean - mean.mean(0, keepdim=True)
        self.register_buffer("mean_shape", mean)
        self.register_buffer("id_basis", f32(id_basis))
        self.register_buffer("exp_basis", f32(exp_basis))
        self.register_buffer("mean_albedo", f32(mean_albedo))
        self.register_buffer("albedo_basis", f32(albedo_basis))
        self.register_buffer("faces", i64(faces))
        self.meta = dict(meta or {})
        fa = self.faces
        if fa.ndim != 2 or fa.shape[-1] != 3 or (fa.numel() and (int(fa.min()) < 0 or int(fa.max()) >= n)):
            raise ValueError(f"{self.meta.get('source', 'model')}: faces must be (F, 3) and index vertices "
                             f"in [0, {n}); got shape {tuple(fa.shape)}")
        derived = build_vertex_faces(self.faces.numpy(), n)
        vf = derived if vertex_faces is None else np.asarray(vertex_faces, np.int64)
        self.register_buffer("vertex_faces", i64(vf))
        # Normals by scattering face normals onto their corners, unless the file's own adjacency
        # table says something else than the faces do (then that table is used as given).
        self._own_adjacency = vertex_faces is not None and not _same_adjacency(vf, derived)
        self.register_buffer("landmark_idx", i64(landmark_idx))
        skin = np.ones(n, bool) if skin_mask is None else np.asarray(skin_mask).astype(bool).reshape(-1)
        front = np.ones(n, bool) if front_mask is None else np.asarray(front_mask).astype(bool).reshape(-1)
        self.register_buffer("skin_mask", torch.as_tensor(skin))
        self.register_buffer("front_mask", torch.as_tensor(front))
        if front_faces is None:
            fa = self.faces.numpy()
            front_faces = fa[front[fa].all(1)]
        self.register_buffer("front_faces", i64(front_faces).reshape(-1, 3))
        self.register_buffer("uv", None if uv is None else f32(uv))
        self.register_buffer("face_uv", None if face_uv is None else i64(face_uv))
        self.exp_names = list(exp_names) if exp_names is not None else None
        self.id_names = list(id_names) if id_names is not None else None
        self.tex_names = list(tex_names) if tex_names is not None else None
        if (region_names is None) != (vertex_region is None):
            raise ValueError(f"{self.meta.get('source', 'model')}: region_names and vertex_region go together")
        self.region_names = list(region_names) if region_names is not None else ["face"]
        vr = np.zeros(n, np.int64) if vertex_region is None else np.asarray(vertex_region, np.int64).reshape(-1)
        self.register_buffer("vertex_region", torch.as_tensor(vr))
        self._check()

    # ------------------------------------------------------------------------------------------
    def _check(self) -> None:
        n = self.mean_shape.shape[0]
        name = self.meta.get("source", "model")
        problems = []
        if self.mean_shape.shape != (n, 3):
            problems.append(f"mean_shape has shape {tuple(self.mean_shape.shape)}, expected (N, 3)")
        for key in ("id_basis", "exp_basis", "albedo_basis"):
            b = getattr(self, key)
            if b.ndim != 3 or b.shape[:2] != (n, 3):
                problems.append(f"{key} has shape {tuple(b.shape)}, expected ({n}, 3, K)")
        if self.mean_albedo.shape != (n, 3):
            problems.append(f"mean_albedo has shape {tuple(self.mean_albedo.shape)}, expected ({n}, 3)")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            problems.append(f"faces has shape {tuple(self.faces.shape)}, expected (F, 3)")
        elif self.faces.numel() and (int(self.faces.min()) < 0 or int(self.faces.max()) >= n):
            problems.append(f"faces index vertices outside [0, {n})")
        if self.landmark_idx.numel() and (int(self.landmark_idx.min()) < 0 or int(self.landmark_idx.max()) >= n):
            problems.append(f"landmark indices outside [0, {n})")
        if self.skin_mask.shape != (n,) or self.front_mask.shape != (n,):
            problems.append("skin/front masks must have one entry per vertex")
        if self.exp_names is not None and len(self.exp_names) != self.n_exp:
            problems.append(f"{len(self.exp_names)} expression names for {self.n_exp} components")
        if self.uv is not None and (self.face_uv is None or self.face_uv.shape != self.faces.shape):
            problems.append("uv given without face_uv of the same shape as faces")
        vr = self.vertex_region
        if vr.shape != (n,) or (n and (int(vr.min()) < 0 or int(vr.max()) >= len(self.region_names))):
            problems.append(f"vertex_region must be (N,) ids into {len(self.region_names)} region names")
        if problems:
            raise ValueError(f"{name}: " + "; ".join(problems))

    # ------------------------------------------------------------------------------------------
    @property
    def n_verts(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def n_faces(self) -> int:
        return self.faces.shape[0]

    @property
    def n_id(self) -> int:
        return self.id_basis.shape[-1]

    @property
    def n_exp(self) -> int:
        return self.exp_basis.shape[-1]

    @property
    def n_tex(self) -> int:
        return self.albedo_basis.shape[-1]

    @property
    def layout(self) -> CoefficientLayout:
        """Sizes of the coefficient blocks of this model."""
        return CoefficientLayout(self.n_id, self.n_exp, self.n_tex)

    @property
    def exp_range(self) -> tuple[float, float] | None:
        """Valid range of each expression coefficient, from ``meta['exp_range']`` (None: unbounded).

        The default model's expression units are MakeHuman sliders in [0, 1]; negative weights
        give shapes no face makes, so fitting projects the coefficients onto this range. BFM's
        PCA expression coefficients are unbounded.
        """
        r = self.meta.get("exp_range")
        return (float(r[0]), float(r[1])) if r is not None else None

    @property
    def has_uv(self) -> bool:
        return self.uv is not None

    def region_mask(self, *names: str) -> Tensor:
        """(N,) bool mask of the vertices in the named regions (see ``region_names``).

        The default model has ``'face'`` (skin of the face, ears and neck), ``'eye_socket'``,
        ``'eyeball'``, ``'mouth_interior'``, ``'teeth'`` and ``'eyelashes'``; models without
        regions (BFM, the MakeHuman model) have the single region ``'face'``.
        """
        unknown = [x for x in names if x not in self.region_names]
        if unknown:
            raise KeyError(f"unknown region(s) {', '.join(map(repr, unknown))}; known: {', '.join(self.region_names)}")
        ids = torch.tensor([self.region_names.index(x) for x in names], device=self.vertex_region.device)
        return torch.isin(self.vertex_region, ids)

    def region_faces(self, *names: str) -> Tensor:
        """(F', 3) triangles whose three vertices all lie in the named regions."""
        m = self.region_mask(*names)
        return self.faces[m[self.faces].all(-1)]

    # ------------------------------------------------------------------------------------------
    def shape(self, id_coeff: Tensor | None = None, exp_coeff: Tensor | None = None,
              rows: Tensor | None = None) -> Tensor:
        """Model-space shape ``S_mean + B_id id + B_exp exp``.

        Args:
            id_coeff: (B, n_id) or None (zeros).
            exp_coeff: (B, n_exp) or None (zeros).
            rows: optional (M,) vertex ids: evaluate only these rows of the bases (the landmarks,
                a region), the same values as ``shape(...)[:, rows]`` at a fraction of the cost.
                To evaluate the same rows many times, slice the bases once with :meth:`rows`.

        Returns:
            (B, N, 3) vertices (or (B, M, 3) with ``rows``) in model units (decimetres for BFM and
            the default model), re-centred on the centroid of the mean shape.
        """
        return _shape(self if rows is None else self.rows(rows), id_coeff, exp_coeff)

    def albedo(self, tex_coeff: Tensor | None = None, batch_size: int = 1, rows: Tensor | None = None) -> Tensor:
        """Per-vertex reflectance ``T_mean + B_tex tex``.

        Args:
            tex_coeff: (B, n_tex) or None (mean albedo).
            batch_size: B when ``tex_coeff`` is None.
            rows: optional (M,) vertex ids: evaluate only these rows (as in :meth:`shape`).

        Returns:
            (B, N, 3) (or (B, M, 3)) RGB albedo, nominally in [0, 1] (BFM's 0-255 is divided by 255
            on load); large coefficients can leave that range: clamp for display.
        """
        return _albedo(self if rows is None else self.rows(rows), tex_coeff, batch_size)

    def rows(self, rows: Tensor) -> ModelRows:
        """The model's bases restricted to the vertices ``rows`` (M,), sliced once: its
        ``shape(id, exp)`` and ``albedo(tex)`` equal this model's ``[:, rows]``."""
        return ModelRows(self, rows)

    @property
    def normals_from_table(self) -> bool:
        """Whether vertex normals use the file's own adjacency table (``vertex_faces``, given and
        different from the faces' own adjacency) rather than the faces scattered onto their corners."""
        return self._own_adjacency

    def vertex_normals(self, verts: Tensor) -> Tensor:
        """(B, N, 3) vertices → (B, N, 3) unit vertex normals from the one-ring face normals."""
        return vertex_normals(verts, self.faces, self.vertex_faces if self._own_adjacency else None)

    def landmarks(self, verts: Tensor) -> Tensor:
        """(B, N, 3) vertices → (B, 68, 3) iBUG landmark vertices."""
        return verts[:, self.landmark_idx]

    def split(self, coeffs: Tensor) -> Coefficients:
        """Flat (B, total) vector → :class:`Coefficients` for this model's layout."""
        return Coefficients.split(coeffs, self.layout)

    def posed_points(self, coeffs: Coefficients | Tensor,
                     rows: Tensor | ModelRows | None = None) -> tuple[Tensor, Tensor]:
        """Shape and pose of some vertices, evaluating only them.

        Args:
            coeffs: :class:`Coefficients` or a flat (B, total) vector (``id``, ``exp``, ``angles``,
                ``trans`` are used).
            rows: (M,) vertex ids, a :class:`ModelRows` sliced once (cheaper when called often), or
                None for every vertex.

        Returns:
            (B, M, 3) camera-frame points ``R(angles) @ shape + trans`` (model units) and the
            rotations (B, 3, 3).
        """
        c = self.split(coeffs) if isinstance(coeffs, Tensor) else coeffs
        if isinstance(rows, ModelRows):
            return rows.posed_points(c)
        return pose_points(self.shape(c.id, c.exp, rows=rows), c)

    def forward(self, coeffs: Coefficients | Tensor, camera: Any = None, ambient: float = AMBIENT_INIT) -> FaceOutput:
        """Shape, pose, albedo and SH colour of a batch of faces.

        Args:
            coeffs: :class:`Coefficients` or a flat (B, total) vector.
            camera: optional object with ``project(points (B,N,3)) -> (B,N,2)`` (e.g.
                :class:`face3dkit.geometry.PerspectiveCamera`) for 2D landmarks.
            ambient: SH ambient initialisation added to each channel's DC term.

        Returns:
            :class:`FaceOutput`.
        """
        c = self.split(coeffs) if isinstance(coeffs, Tensor) else coeffs
        verts = self.shape(c.id, c.exp)
        verts_world, rot = pose_points(verts, c)
        normals = rotate(self.vertex_normals(verts), rot)
        albedo = self.albedo(c.tex)
        color = sh_shade(albedo, normals, c.gamma.to(verts.dtype), ambient)
        lm3 = self.landmarks(verts_world)
        lm2 = camera.project(lm3) if camera is not None else None
        return FaceOutput(verts, verts_world, normals, albedo, color, lm3, lm2, rot)

    def sample(self, batch_size: int = 1, *, generator: torch.Generator | None = None, id_scale: float = 1.0,
               tex_scale: float = 1.0) -> Coefficients:
        """Random identity and albedo (N(0, scale^2)), neutral expression, frontal, at the origin."""
        dev = self.mean_shape.device
        c = Coefficients.zeros(self.layout, batch_size, device=dev, dtype=self.mean_shape.dtype)
        c.id = torch.randn(batch_size, self.n_id, generator=generator, device="cpu").to(dev) * id_scale
        c.tex = torch.randn(batch_size, self.n_tex, generator=generator, device="cpu").to(dev) * tex_scale
        return c

    def expression_vector(self, weights: dict[str, float], batch_size: int = 1) -> Tensor:
        """(B, n_exp) expression coefficients from named units, e.g. ``{'mouth-open': 0.7}``."""
        if self.exp_names is None:
            raise ValueError("this model has no expression component names")
        out = torch.zeros(batch_size, self.n_exp, device=self.mean_shape.device, dtype=self.mean_shape.dtype)
        for name, w in weights.items():
            if name not in self.exp_names:
                raise KeyError(f"unknown expression unit {name!r}; known: {', '.join(self.exp_names)}")
            out[:, self.exp_names.index(name)] = w
        return out

    def extra_repr(self) -> str:
        return (f"name={self.meta.get('name', '?')!r}, n_verts={self.n_verts}, n_faces={self.n_faces}, "
                f"n_id={self.n_id}, n_exp={self.n_exp}, n_tex={self.n_tex}, uv={self.has_uv}")
