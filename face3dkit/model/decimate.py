"""Mesh decimation that keeps a subset of the original vertices (quadric-error half-edge collapse).

A morphable model's shape and albedo are linear in per-vertex bases, so a coarser mesh whose
vertices are a *subset* of the model's (only the triangles change) is a coarser morphable model
for free: the same coefficients, the bases' rows picked (:meth:`MorphableModel.rows`). The fit's
photometric stage renders such a mesh (:attr:`face3dkit.fit.FitConfig.photo_faces`): at 112 px
the full default mesh has ~2.6 front triangles per face pixel, and the cost of a step (posing,
normals, rasterizing, interpolating and their backward) scales with the triangle count.

Algorithm (Garland & Heckbert 1997, the half-edge variant that moves a vertex onto a neighbour
instead of solving for a new position):

* each vertex carries the sum of the area-weighted plane quadrics of its faces on the reference
  shape; collapsing ``u`` onto its neighbour ``v`` costs ``[v, 1] (Q_u + Q_v) [v, 1]^T`` and
  leaves ``Q_v + Q_u`` on ``v``;
* the cheapest valid collapse is taken from a heap (entries made stale by a later quadric change
  are skipped) until the mesh has ``target_faces`` triangles or no collapse is valid;
* a collapse is valid when ``u`` is not locked (mesh boundaries: the mouth and eye openings, the
  neck; edges of more than two triangles; vertices whose neighbours carry another label: region
  borders, the front-face border; the caller's ``locked``), the edge passes the link condition
  (the one-rings of ``u`` and ``v`` share exactly the edge's two opposite vertices: the mesh stays
  manifold, its topology unchanged), and
  no moved triangle flips or degenerates (its normal turns by less than ~80°).

Pure numpy + a Python heap (offline work: ~10 s for the default model's 42k triangles on one core;
:func:`face3dkit.model.lod.lod_faces` caches the result per model).
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["decimate_mesh"]

_MIN_COS = 0.2  # a moved triangle's normal may turn by at most arccos(0.2) ~ 78 degrees


def decimate_mesh(verts: np.ndarray, faces: np.ndarray, target_faces: int, labels: np.ndarray | None = None,
                  locked: np.ndarray | None = None, attributes: np.ndarray | None = None,
                  attribute_weight: float = 1.0) -> np.ndarray:
    """Triangles of a coarser mesh on a subset of ``verts`` (half-edge collapses, quadric error).

    Args:
        verts: (V, 3) reference vertex positions (e.g. a model's mean shape).
        faces: (F, 3) int triangles, consistently oriented (the vertices of edges shared by more
            than two triangles, like those of boundary edges, are never moved).
        target_faces: stop when at most this many triangles remain (or no collapse is valid).
        labels: optional (V,) int vertex labels (regions, masks): a vertex with a neighbour of
            another label never moves, so every output triangle keeps the labels of its corners
            and borders between labels stay where they are.
        locked: optional (V,) bool vertices that never move (they may still be collapsed onto).
        attributes: optional (V, C) per-vertex attributes (e.g. albedo) kept too: a collapse also
            costs ``attribute_weight`` times the attribute quadrics' error (the area-weighted squared
            distance of ``v``'s attributes from each original triangle's linear attribute field at
            ``v``, summed over the triangles ``v`` then stands for), so detail in the attributes
            (brows, lips, the iris) keeps its vertices.
        attribute_weight: weight of that term against the geometric error (area x distance^2, in
            the units of ``verts``).

    Returns:
        (F', 3) int64 triangles indexing the original ``verts`` (F' <= F; unreferenced vertices are
        the removed ones), in the input's orientation.

    Raises:
        ValueError: on shapes that do not match or face indices out of range.
    """
    verts = np.asarray(verts, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    n_v = verts.shape[0]
    if verts.ndim != 2 or verts.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"decimate_mesh: verts must be (V, 3) and faces (F, 3), got {verts.shape} and {faces.shape}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_v):
        raise ValueError(f"decimate_mesh: face indices must lie in [0, {n_v}), got [{faces.min()}, {faces.max()}]")
    if target_faces >= faces.shape[0]:
        return faces.copy()

    # Edges: how many triangles share each (undirected) edge; boundary vertices are locked.
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    frozen = np.zeros(n_v, dtype=bool)
    frozen[uniq[counts != 2].reshape(-1)] = True  # boundary edges, and non-manifold ones (> 2 triangles)
    if locked is not None:
        frozen |= np.asarray(locked, dtype=bool)
    if labels is not None:
        lab = np.asarray(labels)
        cross = lab[uniq[:, 0]] != lab[uniq[:, 1]]
        frozen[uniq[cross].reshape(-1)] = True

    # Area-weighted plane quadrics (the plane's unit normal times the area: weight = area).
    p = verts[faces]
    nrm = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # |n| = 2 area
    length = np.linalg.norm(nrm, axis=1, keepdims=True)
    unit = np.divide(nrm, length, out=np.zeros_like(nrm), where=length > 0)
    plane = np.concatenate([unit, -(unit * p[:, 0]).sum(1, keepdims=True)], 1)  # (F, 4)
    kf = 0.5 * length[:, :, None] * plane[:, :, None] * plane[:, None, :]  # (F, 4, 4)
    quad = np.zeros((n_v, 4, 4))
    for k in range(3):
        np.add.at(quad, faces[:, k], kf)
    hom = np.concatenate([verts, np.ones((n_v, 1))], 1)  # (V, 4)

    tri = faces.tolist()
    alive = [True] * len(tri)
    vf: list[set[int]] = [set() for _ in range(n_v)]
    for fi, (a, b, c) in enumerate(tri):
        vf[a].add(fi)
        vf[b].add(fi)
        vf[c].add(fi)
    version = [0] * n_v

    def neighbours(x: int) -> set[int]:
        out: set[int] = set()
        for fi in vf[x]:
            out.update(tri[fi])
        out.discard(x)
        return out

    # Attribute quadrics (Garland & Heckbert 1998; Hoppe 1999): on each triangle each attribute
    # channel c is a linear field a_c(p) = g_c . p + d_c (g_c in the triangle's plane); a vertex
    # standing for the triangle costs area * (g_c . p_v + d_c - a_v,c)^2, a quadric in [p, a_c, 1].
    if attributes is not None:
        attr = np.asarray(attributes, dtype=np.float64).reshape(n_v, -1)
        n_c = attr.shape[1]
        e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        mat = np.stack([e1, e2, unit], 1)  # (F, 3, 3) rows: the two edges, the unit normal
        ok = length[:, 0] > 0
        mat[~ok] = np.eye(3)
        a_f = attr[faces]  # (F, 3, C)
        rhs = np.stack([a_f[:, 1] - a_f[:, 0], a_f[:, 2] - a_f[:, 0], np.zeros_like(a_f[:, 0])], 1)  # (F, 3, C)
        grad = np.linalg.solve(mat, rhs)  # (F, 3, C): g_c per channel
        d = a_f[:, 0] - np.einsum("fk,fkc->fc", p[:, 0], grad)  # (F, C)
        kvec = np.concatenate([grad.transpose(0, 2, 1), -np.ones((len(faces), n_c, 1)), d[:, :, None]], 2)  # (F,C,5)
        ka = (0.5 * length[:, 0] * ok)[:, None, None, None] * kvec[..., :, None] * kvec[..., None, :]  # (F,C,5,5)
        aquad = np.zeros((n_v, n_c, 5, 5))
        for k in range(3):
            np.add.at(aquad, faces[:, k], ka)
        w_attr = float(attribute_weight)

    def costs(us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """(K,) errors of collapsing each ``us[k]`` onto ``vs[k]`` (quadrics of both, at ``vs[k]``)."""
        h = hom[vs]
        c = np.einsum("ki,kij,kj->k", h, quad[us] + quad[vs], h)
        if attributes is not None:
            x = np.concatenate([np.broadcast_to(verts[vs][:, None], (len(vs), n_c, 3)), attr[vs][:, :, None],
                                np.ones((len(vs), n_c, 1))], 2)  # (K, C, 5): [p_v, a_v,c, 1]
            c = c + w_attr * np.einsum("kci,kcij,kcj->k", x, aquad[us] + aquad[vs], x)
        return c

    heap: list[tuple[float, int, int, int, int]] = []

    def push(us: np.ndarray, vs: np.ndarray) -> None:
        keep = ~frozen[us]
        us, vs = us[keep], vs[keep]
        if us.size:
            for cst, u, v in zip(costs(us, vs).tolist(), us.tolist(), vs.tolist(), strict=True):
                heap.append((cst, u, v, version[u], version[v]))

    def push_from(x: int) -> None:
        nb = np.fromiter(neighbours(x), dtype=np.int64)
        xs = np.full_like(nb, x)
        push(np.concatenate([xs, nb]), np.concatenate([nb, xs]))

    push(uniq[:, 0].copy(), uniq[:, 1].copy())  # every edge, both ways
    push(uniq[:, 1].copy(), uniq[:, 0].copy())
    heapq.heapify(heap)

    def flips(u: int, v: int) -> bool:
        pv = verts[v]
        for fi in vf[u]:
            t = tri[fi]
            if v in t:
                continue
            a, b, c = (verts[i] for i in t)
            n0 = np.cross(b - a, c - a)
            q = [pv if i == u else verts[i] for i in t]
            n1 = np.cross(q[1] - q[0], q[2] - q[0])
            l0, l1 = float(np.linalg.norm(n0)), float(np.linalg.norm(n1))
            if l1 <= 1e-12 * max(l0, 1e-30) or float(n0 @ n1) < _MIN_COS * l0 * l1:
                return True
        return False

    n_alive = len(tri)
    while n_alive > target_faces and heap:
        _, u, v, vu, vv = heapq.heappop(heap)
        if vu != version[u] or vv != version[v] or not vf[u] or not vf[v]:
            continue  # stale entry (a quadric changed) or a removed vertex
        shared = vf[u] & vf[v]
        if len(shared) != 2:
            continue  # not an interior edge any more (u is interior: its edges have two triangles)
        opposite = {i for fi in shared for i in tri[fi]} - {u, v}
        if neighbours(u) & neighbours(v) != opposite or flips(u, v):
            continue
        for fi in shared:
            alive[fi] = False
            for i in tri[fi]:
                vf[i].discard(fi)
        for fi in vf[u]:
            t = tri[fi]
            t[t.index(u)] = v
            vf[v].add(fi)
        vf[u] = set()
        n_alive -= 2
        quad[v] += quad[u]
        if attributes is not None:
            aquad[v] += aquad[u]
        version[v] += 1  # every cost onto / from v changed (the others did not: topology is checked on pop)
        push_from(v)
    out = np.array([t for t, ok in zip(tri, alive, strict=True) if ok], dtype=np.int64).reshape(-1, 3)
    return out
