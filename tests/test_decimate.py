"""Mesh decimation on a vertex subset (face3dkit.model.decimate) and model levels of detail (lod)."""

import numpy as np
import pytest
import torch

from face3dkit.model import MorphableModel, decimate_mesh, lod_faces
from face3dkit.model import lod as lod_module


def _icosphere(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere (outward, counter-clockwise seen from outside), written here from the icosahedron."""
    t = (1 + 5 ** 0.5) / 2
    v = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10),
         (8, 6, 7), (9, 8, 1)]
    verts = [np.array(p, float) / np.linalg.norm(p) for p in v]
    faces = list(f)
    for _ in range(levels):
        mid: dict[tuple[int, int], int] = {}

        def m(a, b, mid=mid):
            k = (min(a, b), max(a, b))
            if k not in mid:
                p = verts[a] + verts[b]
                verts.append(p / np.linalg.norm(p))
                mid[k] = len(verts) - 1
            return mid[k]

        faces = [g for a, b, c in faces for g in ((a, m(a, b), m(c, a)), (b, m(b, c), m(a, b)),
                                                  (c, m(c, a), m(b, c)), (m(a, b), m(b, c), m(c, a)))]
    return np.array(verts), np.array(faces)


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n+1)^2 vertices of a unit square, 2 n^2 counter-clockwise triangles (z = 0)."""
    ii, jj = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    verts = np.stack([jj.ravel() / n, ii.ravel() / n, np.zeros(ii.size)], 1)
    idx = lambda i, j: i * (n + 1) + j  # noqa: E731
    faces = []
    for i in range(n):
        for j in range(n):
            faces += [(idx(i, j), idx(i, j + 1), idx(i + 1, j + 1)), (idx(i, j), idx(i + 1, j + 1), idx(i + 1, j))]
    return verts, np.array(faces)


def _edge_counts(faces: np.ndarray) -> dict[tuple[int, int], int]:
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    u, c = np.unique(e, axis=0, return_counts=True)
    return {tuple(map(int, k)): int(n) for k, n in zip(u, c, strict=True)}


def _boundary_edges(faces: np.ndarray) -> set[tuple[int, int]]:
    return {k for k, n in _edge_counts(faces).items() if n == 1}


def test_sphere_stays_a_closed_outward_manifold_on_original_vertices():
    verts, faces = _icosphere(3)  # 642 vertices, 1280 triangles
    out = decimate_mesh(verts, faces, 300)
    assert 290 <= out.shape[0] <= 300
    used = np.unique(out)
    assert used.min() >= 0 and used.max() < len(verts)
    counts = _edge_counts(out)
    assert set(counts.values()) == {2}  # closed, manifold
    assert len(used) - len(counts) + out.shape[0] == 2  # Euler characteristic of the sphere
    p = verts[out]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert (np.einsum("fk,fk->f", normal, p.mean(1)) > 0).all()  # still outward (no flips)
    # The coarse sphere still approximates the sphere: every triangle centroid near radius 1, and
    # the enclosed volume (divergence theorem) near 4/3 pi.
    assert np.linalg.norm(p.mean(1), axis=1).min() > 0.9
    volume = np.einsum("fk,fk->f", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6
    assert 0.9 * 4 / 3 * np.pi < volume <= 4 / 3 * np.pi


def test_boundaries_labels_and_locked_vertices_are_kept():
    verts, faces = _grid(16)
    # a square hole in the middle: drop the triangles inside it
    centre = verts[faces].mean(1)
    hole = (np.abs(centre[:, 0] - 0.5) < 0.15) & (np.abs(centre[:, 1] - 0.5) < 0.15)
    faces = faces[~hole]
    labels = (verts[:, 0] > 0.26).astype(int)  # two regions, border along x ~ 0.26-0.31
    locked = np.zeros(len(verts), bool)
    locked[[20, 150]] = True
    before = _boundary_edges(faces)
    out = decimate_mesh(verts, faces, 120, labels=labels, locked=locked)
    assert out.shape[0] < 0.4 * faces.shape[0]
    assert _boundary_edges(out) == before  # outline and hole exactly as they were
    border = np.zeros(len(verts), bool)  # every vertex next to another label stays
    e = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    cross = labels[e[:, 0]] != labels[e[:, 1]]
    border[e[cross].ravel()] = True
    used = np.zeros(len(verts), bool)
    used[out.ravel()] = True
    assert used[border].all() and used[locked].all()
    # triangles keep counter-clockwise orientation (z up) and positive area
    p = verts[out]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area2 = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    assert (area2 > 0).all()
    # a face never has corners of both labels unless all its corners sit on the border
    mixed = labels[out].min(1) != labels[out].max(1)
    assert border[out[mixed]].all()


def test_decimate_errors_and_no_op():
    verts, faces = _icosphere(1)
    assert np.array_equal(decimate_mesh(verts, faces, faces.shape[0]), faces)
    with pytest.raises(ValueError, match="verts must be"):
        decimate_mesh(verts[:, :2], faces, 10)
    with pytest.raises(ValueError, match="face indices"):
        decimate_mesh(verts, faces + len(verts), 10)
    # an edge of three triangles (a fin on the sphere): its vertices stay, the rest is decimated
    fin = np.vstack([faces, [[faces[0, 0], faces[0, 1], len(verts)]]])
    out = decimate_mesh(np.vstack([verts, [[2.0, 2.0, 2.0]]]), fin, 40)
    assert out.shape[0] < fin.shape[0] and {int(faces[0, 0]), int(faces[0, 1]), len(verts)} <= set(out.ravel().tolist())


def _sphere_model() -> MorphableModel:
    verts, faces = _icosphere(3)
    n = len(verts)
    g = np.random.default_rng(0)
    front = verts[:, 2] > 0
    return MorphableModel(verts, g.normal(size=(n, 3, 2)) * 0.01, g.normal(size=(n, 3, 1)) * 0.01,
                          np.full((n, 3), 0.5), np.zeros((n, 3, 1)), faces, np.arange(68) % n,
                          front_mask=front, recenter=False)


def test_lod_faces_caches_on_disk_and_keeps_the_front_border(tmp_path, monkeypatch):
    monkeypatch.setenv("FACE3DKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(lod_module, "_MEMO", {})
    m = _sphere_model()
    assert lod_faces(m, 10**6) is m.faces
    out = lod_faces(m, 400)
    assert out.dtype == torch.long and 390 <= out.shape[0] <= 400
    files = list((tmp_path / "lod").glob("*-400.npy"))
    assert len(files) == 1 and np.array_equal(np.load(files[0]), out.numpy())
    # the front-face region keeps its border: the front faces' outline is unchanged
    front = m.front_mask.numpy()
    before = _boundary_edges(m.faces.numpy()[front[m.faces.numpy()].all(1)])
    fo = out.numpy()
    assert _boundary_edges(fo[front[fo].all(1)]) == before
    # read back from the file, not recomputed
    monkeypatch.setattr(lod_module, "_MEMO", {})
    monkeypatch.setattr(lod_module, "decimate_mesh", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(lod_faces(m, 400), out)
    # a damaged file is recomputed and rewritten
    files[0].write_bytes(b"not an npy file")
    monkeypatch.setattr(lod_module, "_MEMO", {})
    monkeypatch.setattr(lod_module, "decimate_mesh", decimate_mesh)
    assert torch.equal(lod_faces(m, 400), out)
    assert np.array_equal(np.load(files[0]), out.numpy())
    with pytest.raises(ValueError, match="target_faces"):
        lod_faces(m, 0)


def _interpolate_on(points: np.ndarray, verts: np.ndarray, faces: np.ndarray, attr: np.ndarray) -> np.ndarray:
    """Brute force: the attribute a planar (z = 0) mesh interpolates at each 2D point."""
    out = np.full(len(points), np.nan)
    for f in faces:
        a, b, c = verts[f, :2]
        m = np.array([b - a, c - a]).T
        lam = np.linalg.solve(m, (points - a).T).T  # (P, 2): weights of b and c
        w = np.column_stack([1 - lam.sum(1), lam])
        inside = (w >= -1e-9).all(1) & np.isnan(out)
        out[inside] = w[inside] @ attr[f, 0]
    return out


def test_attributes_keep_their_detail():
    """With the attribute term a colour edge across a flat sheet (no geometric error anywhere) is
    kept: the coarse mesh interpolates the colour at the removed vertices closer to their own."""
    verts, faces = _grid(16)
    colour = (verts[:, 0] + 0.3 * verts[:, 1] > 0.55).astype(float)[:, None]
    err = {}
    for w in (0.0, 1.0):
        out = decimate_mesh(verts, faces, 100, attributes=colour if w else None, attribute_weight=w)
        assert out.shape[0] <= 100
        got = _interpolate_on(verts[:, :2], verts, out, colour)
        assert not np.isnan(got).any()  # the outline is kept: every point is still covered
        err[w] = np.abs(got - colour[:, 0]).mean()
    assert err[1.0] < 0.5 * err[0.0], err
