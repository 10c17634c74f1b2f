"""The default-model build script's pieces (assets/build/build_default_model.py) on tiny inputs the
tests write: the ICT-FaceKit OBJ reader, triangulation, closest points, similarity."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "assets" / "build" / "build_default_model.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("build_default_model", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NEUTRAL = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0], [2, 1, 0]], float)


def _write_obj(path: Path, verts: np.ndarray, faces: bool = True) -> None:
    lines = ["# tiny ICT-style mesh", *(f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts)]
    if faces:
        lines += ["vt 0 0", "vt 1 0", "vt 1 1", "vt 0 1", "vt 0.5 0.5", "usemtl M_Face",
                  "f 1/1 2/2 3/3 4/4", "usemtl M_Teeth", "f 2/2 5/5 6/3", "f 2/2 6/3 3/4"]
    path.write_text("\n".join(lines) + "\n")


def _tiny_ict(root: Path, n_id: int = 3) -> tuple[np.ndarray, np.ndarray]:
    fx = root / "FaceXModel"
    fx.mkdir(parents=True)
    _write_obj(fx / "generic_neutral_mesh.obj", NEUTRAL)
    rng = np.random.default_rng(0)
    ids = rng.normal(0, 0.1, (n_id, 6, 3))
    exps = rng.normal(0, 0.1, (2, 6, 3))
    for i in range(n_id):
        _write_obj(fx / f"identity{i:03d}.obj", NEUTRAL + ids[i], faces=False)
    for name, d in zip(("jawOpen", "eyeBlink_L"), exps, strict=True):
        _write_obj(fx / f"{name}.obj", NEUTRAL + d, faces=False)
    (fx / "vertex_indices.json").write_text(json.dumps({"expressions": ["jawOpen", "eyeBlink_L"],
                                                        "idx_to_landmark_verts": [0, 1]}))
    return ids, exps


def test_ict_reader_on_tiny_obj_files(build, tmp_path):
    ids, exps = _tiny_ict(tmp_path)
    ict = build.read_ict(tmp_path, n_identities=3, check_landmarks=False)
    np.testing.assert_allclose(ict["verts"], NEUTRAL)
    # bases are the differences to the neutral mesh, (N, 3, K), in file order / json order
    np.testing.assert_allclose(ict["ids"], ids.transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_allclose(ict["exps"], exps.transpose(1, 2, 0), atol=1e-6)
    assert ict["exp_names"] == ["jawOpen", "eyeBlink_L"]
    assert ict["polys"] == [[0, 1, 2, 3], [1, 4, 5], [1, 5, 2]] and ict["mats"] == ["M_Face", "M_Teeth", "M_Teeth"]
    assert ict["tpolys"][0] == [0, 1, 2, 3] and ict["uv"].shape == (5, 2)
    tris, src = build.triangulate(ict["polys"])
    np.testing.assert_array_equal(tris, [[0, 1, 2], [0, 2, 3], [1, 4, 5], [1, 5, 2]])
    np.testing.assert_array_equal(src, [0, 0, 1, 2])


def test_ict_reader_rejects_bad_clones(build, tmp_path):
    with pytest.raises(SystemExit, match="not an ICT-FaceKit clone"):
        build.read_ict(tmp_path)
    _tiny_ict(tmp_path)
    with pytest.raises(SystemExit, match="expected 100 identityNNN.obj files, found 3"):
        build.read_ict(tmp_path)
    _write_obj(tmp_path / "FaceXModel" / "jawOpen.obj", NEUTRAL[:5], faces=False)
    with pytest.raises(SystemExit, match="jawOpen.obj: 5 vertices, the neutral mesh has 6"):
        build.read_ict(tmp_path, n_identities=3, check_landmarks=False)


def test_closest_point_triangle_matches_brute_force(build):
    rng = np.random.default_rng(1)
    tri = rng.normal(size=(200, 3, 3))
    p = rng.normal(size=(200, 3)) * 2
    q, bary = build.closest_point_triangle(p, tri[:, 0], tri[:, 1], tri[:, 2])
    # brute force: a dense barycentric grid over each triangle
    u, v = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    keep = (u + v) <= 1
    w = np.stack([1 - u[keep] - v[keep], u[keep], v[keep]], 1)  # (G, 3)
    pts = np.einsum("gk,tkc->tgc", w, tri)
    d_brute = np.linalg.norm(pts - p[:, None], axis=-1).min(1)
    d = np.linalg.norm(q - p, axis=1)
    assert np.all(d <= d_brute + 1e-9) and np.all(d_brute - d < 0.02 * np.ptp(tri, axis=1).max(1))
    np.testing.assert_allclose(bary.sum(1), 1, atol=1e-9)
    assert (bary >= -1e-9).all()
    np.testing.assert_allclose(np.einsum("tk,tkc->tc", bary, tri), q, atol=1e-9)


def test_oriented_closest_on_mesh_skips_back_facing_surfaces(build):
    # two parallel unit squares 1 apart, the back one facing away: a query near the back one with
    # a +z normal must land on the front one
    sq = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    verts = np.concatenate([sq, sq - [0, 0, 1]])
    faces = np.array([[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]])  # back pair wound the other way
    pts = np.array([[0.5, 0.5, -0.9]])
    q, d, tri, _ = build.closest_on_mesh(verts, faces, pts, k=4)
    assert tri[0] in (2, 3) and abs(d[0] - 0.1) < 1e-9
    q, d, tri, _ = build.closest_on_mesh(verts, faces, pts, np.array([[0.0, 0, 1]]), k=4)
    assert tri[0] in (0, 1) and abs(d[0] - 0.9) < 1e-9 and abs(q[0, 2]) < 1e-12


def test_umeyama_recovers_a_similarity(build):
    rng = np.random.default_rng(2)
    src = rng.normal(size=(50, 3))
    a = rng.normal(size=(3, 3))
    r, _ = np.linalg.qr(a)
    r *= np.sign(np.linalg.det(r))
    dst = 1.7 * src @ r.T + [0.3, -1, 2]
    s, r2, t = build.umeyama(src, dst)
    assert abs(s - 1.7) < 1e-9
    np.testing.assert_allclose(r2, r, atol=1e-9)
    np.testing.assert_allclose(t, [0.3, -1, 2], atol=1e-9)
