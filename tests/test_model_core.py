"""MorphableModel core: coefficients, shape/albedo formulas, normals, devices (tiny synthetic models)."""

import numpy as np
import pytest
import torch

from face3dkit.model import (
    CoefficientLayout,
    Coefficients,
    MorphableModel,
    build_vertex_faces,
    vertex_normals,
)

OCTA_V = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float)
# Counter-clockwise seen from outside.
OCTA_F = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])


def tiny_model(n=6, k=(3, 2, 2), seed=0, faces=OCTA_F, verts=OCTA_V, **kw):
    rng = np.random.default_rng(seed)
    return MorphableModel(
        verts + 5.0, rng.normal(size=(n, 3, k[0])), rng.normal(size=(n, 3, k[1])), rng.uniform(size=(n, 3)),
        rng.normal(size=(n, 3, k[2])) * 0.1, faces, np.arange(n) % n, **kw,
    )


def test_layout_and_split_join_bfm():
    layout = CoefficientLayout(80, 64, 80)
    assert layout.total == 257
    sl = layout.slices()
    assert (sl["id"], sl["exp"], sl["tex"]) == (slice(0, 80), slice(80, 144), slice(144, 224))
    assert (sl["angles"], sl["gamma"], sl["trans"]) == (slice(224, 227), slice(227, 254), slice(254, 257))
    v = torch.arange(2 * 257, dtype=torch.float32).reshape(2, 257)
    c = Coefficients.split(v, layout)
    assert c.id.shape == (2, 80) and c.gamma.shape == (2, 27) and c.trans.shape == (2, 3)
    assert torch.equal(c.angles, v[:, 224:227])
    assert torch.equal(c.join(), v)
    with pytest.raises(ValueError, match="257"):
        Coefficients.split(torch.zeros(2, 256), layout)


def test_shape_and_albedo_formula():
    m = tiny_model()
    rng = np.random.default_rng(1)
    a, b, d = rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    s = m.shape(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)).numpy()
    mean = OCTA_V + 5.0
    mean = mean - mean.mean(0)  # Deng et al. re-centre the mean shape
    rng2 = np.random.default_rng(0)
    idb, exb = rng2.normal(size=(6, 3, 3)), rng2.normal(size=(6, 3, 2))
    alb_mean, texb = rng2.uniform(size=(6, 3)), rng2.normal(size=(6, 3, 2)) * 0.1
    for i in range(2):
        np.testing.assert_allclose(s[i], mean + idb @ a[i] + exb @ b[i], atol=1e-5)
    t = m.albedo(torch.tensor(d, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(t[1], alb_mean + texb @ d[1], atol=1e-6)


def test_vertex_normals_octahedron_and_grid():
    faces = torch.tensor(OCTA_F)
    vf = torch.tensor(build_vertex_faces(OCTA_F, 6))
    n = vertex_normals(torch.tensor(OCTA_V[None]), faces, vf)[0].numpy()
    np.testing.assert_allclose(n, OCTA_V, atol=1e-12)  # symmetric one-rings: the radial direction
    # A flat z = 0 grid (CCW seen from +z) has normals +z everywhere.
    xs, ys = np.meshgrid(np.arange(4.0), np.arange(3.0))
    grid = np.stack([xs.ravel(), ys.ravel(), np.zeros(12)], 1)
    f = []
    for r in range(2):
        for c in range(3):
            i = r * 4 + c
            f += [[i, i + 1, i + 5], [i, i + 5, i + 4]]
    f = np.array(f)
    n = vertex_normals(torch.tensor(grid[None]), torch.tensor(f), torch.tensor(build_vertex_faces(f, 12)))[0]
    np.testing.assert_allclose(n.numpy(), np.tile([0, 0, 1.0], (12, 1)), atol=1e-12)


def test_vertex_normals_match_numpy_on_random_mesh():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(6, 3))
    n = vertex_normals(torch.tensor(v[None]), torch.tensor(OCTA_F), torch.tensor(build_vertex_faces(OCTA_F, 6)))[0]
    fn = np.cross(v[OCTA_F[:, 1]] - v[OCTA_F[:, 0]], v[OCTA_F[:, 2]] - v[OCTA_F[:, 0]])
    fn /= np.linalg.norm(fn, axis=1, keepdims=True)
    ref = np.zeros_like(v)
    for fi, tri in enumerate(OCTA_F):
        for vi in tri:
            ref[vi] += fn[fi]
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(n.numpy(), ref, atol=1e-12)
    # Without a table the face normals are scattered onto their corners: the same normals.
    n_scatter = vertex_normals(torch.tensor(v[None]), torch.tensor(OCTA_F))[0]
    np.testing.assert_allclose(n_scatter.numpy(), ref, atol=1e-12)


def test_forward_pose_and_landmarks():
    m = tiny_model()
    c = Coefficients.zeros(m.layout, 2)
    c.angles[1, 1] = np.pi / 2
    c.trans[:] = torch.tensor([0.1, -0.2, 0.3])
    out = m(c)
    base = out.verts[0].numpy()
    np.testing.assert_allclose(out.verts_world[0].numpy(), base + [0.1, -0.2, 0.3], atol=1e-6)
    # yaw 90: (x, y, z) -> (z, y, -x)
    rot = np.stack([base[:, 2], base[:, 1], -base[:, 0]], 1) + [0.1, -0.2, 0.3]
    np.testing.assert_allclose(out.verts_world[1].numpy(), rot, atol=1e-5)
    assert out.landmarks3d.shape == (2, 6, 3)
    np.testing.assert_allclose(out.landmarks3d.numpy(), out.verts_world[:, m.landmark_idx].numpy())


def test_dtype_and_device_follow_module():
    m = tiny_model().to(torch.float64)
    c = Coefficients.zeros(m.layout, 1, dtype=torch.float64)
    out = m(c)
    assert out.verts_world.dtype == torch.float64 and out.color.dtype == torch.float64
    assert m.faces.dtype == torch.long and m.skin_mask.dtype == torch.bool
    names = {n for n, _ in m.named_buffers()}
    assert {"mean_shape", "id_basis", "exp_basis", "faces", "vertex_faces", "landmark_idx"} <= names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward():
    m = tiny_model().to("cuda")
    out = m(Coefficients.zeros(m.layout, 2, device="cuda"))
    assert out.color.is_cuda and out.landmarks3d.is_cuda


def test_bad_shapes_one_line_error():
    with pytest.raises(ValueError) as e:
        MorphableModel(np.zeros((6, 3)), np.zeros((5, 3, 2)), np.zeros((6, 3, 1)), np.zeros((6, 3)),
                       np.zeros((6, 3, 1)), OCTA_F, np.zeros(68, int), meta={"source": "x.npz"})
    assert "id_basis" in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith("x.npz")
    with pytest.raises(ValueError, match="faces must be"):
        tiny_model(faces=OCTA_F + 1)


def test_a_files_own_adjacency_table_is_used_only_when_it_differs_from_the_faces():
    derived = build_vertex_faces(OCTA_F, 6)
    shuffled = derived[:, ::-1].copy()  # same faces per vertex, other order
    assert not tiny_model(vertex_faces=shuffled).normals_from_table
    assert not tiny_model().normals_from_table
    partial = derived.copy()
    partial[0, 0] = -1  # vertex 0 leaves one face out: the table decides its normal
    m = tiny_model(vertex_faces=partial)
    assert m.normals_from_table
    v = m.mean_shape[None]
    torch.testing.assert_close(m.vertex_normals(v), vertex_normals(v, m.faces, torch.as_tensor(partial)))
    assert not torch.allclose(m.vertex_normals(v)[0, 0], vertex_normals(v, m.faces)[0, 0])


def test_coefficients_index_and_clone():
    """c[i] keeps a batch of one (every block sliced alike), c[a:b] / c[tensor] select faces, clone copies."""
    from face3dkit.model.coefficients import CoefficientLayout, Coefficients

    lay = CoefficientLayout(n_id=4, n_exp=3, n_tex=2)
    c = Coefficients.split(torch.arange(5 * lay.total, dtype=torch.float32).view(5, -1), lay)
    one = c[2]
    assert one.batch_size == 1 and torch.equal(one.join(), c.join()[2:3])
    assert torch.equal(c[-1].join(), c.join()[-1:]) and torch.equal(c[-2].join(), c.join()[-2:-1])
    assert torch.equal(c[1:3].join(), c.join()[1:3])
    assert torch.equal(c[torch.tensor([4, 0])].join(), c.join()[[4, 0]])
    d = c.clone()
    d.id += 1
    assert not torch.equal(d.id, c.id) and torch.equal(d.exp, c.exp)
