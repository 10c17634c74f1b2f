"""Mesh export (face3dkit.export, render.uv, io.mesh): texture baking, seam fill, the OBJ and vertex-colour writers."""

import numpy as np
import pytest
import torch
from PIL import Image

from face3dkit.export import export_mesh
from face3dkit.render.uv import _fill_background, bake_uv_texture


def test_fill_background_against_brute_force():
    rng = np.random.default_rng(0)
    h, w, iters = 40, 50, 3
    covered = np.zeros((h, w), bool)
    covered[10:20, 12:30] = True
    covered[30, 40] = True
    img = rng.random((h, w, 3)).astype(np.float32)
    out = _fill_background(img, covered, iters)
    ys, xs = np.nonzero(covered)
    for y in range(h):
        for x in range(w):
            cheb = np.maximum(np.abs(ys - y), np.abs(xs - x)).min()
            if covered[y, x] or cheb > iters:
                np.testing.assert_array_equal(out[y, x], img[y, x])  # untouched
            else:
                # The colour of a covered texel within `iters` (Chebyshev) texels.
                near = np.maximum(np.abs(ys - y), np.abs(xs - x)) <= iters
                assert any(np.array_equal(out[y, x], img[a, b]) for a, b in zip(ys[near], xs[near], strict=True))


def test_bake_uv_texture_interpolates_vertex_colours():
    # One triangle covering the lower-left half of UV space: colour = barycentric mix.
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2]])
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    size = 16
    tex = bake_uv_texture(colors, faces, uv, faces, size)
    assert tex.shape == (size, size, 3) and tex.dtype == np.uint8
    for row in range(size):
        for col in range(size):
            u, v = (col + 0.5) / size, 1 - (row + 0.5) / size  # texel centre; row 0 = v of 1
            if u + v < 1 - 1e-9:
                want = np.array([1 - u - v, u, v]) * 255
                np.testing.assert_allclose(tex[row, col], want, atol=1.0)


def test_export_obj_with_texture(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0], [1, 0], [1, 1], [0, 1]])
    colors = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    files = export_mesh(tmp_path / "m.obj", verts, faces, colors, uv, faces, texture_size=32)
    assert {p.name for p in files} == {"m.obj", "m.mtl", "m_texture.png"}
    assert "m_texture.png" in (tmp_path / "m.mtl").read_text()
    text = (tmp_path / "m.obj").read_text()
    assert "mtllib m.mtl" in text and text.count("\nvt ") == 4 and text.count("\nf ") == 2
    mesh = trimesh.load(tmp_path / "m.obj", process=False)
    np.testing.assert_allclose(np.sort(mesh.vertices, 0), np.sort(verts.numpy(), 0))
    tex = np.asarray(Image.open(tmp_path / "m_texture.png"))
    np.testing.assert_allclose(tex[-1, 0], [255, 0, 0], atol=12)  # near uv (0, 0): vertex 0, red
    np.testing.assert_allclose(tex[0, -1], [0, 0, 255], atol=12)  # near uv (1, 1): vertex 2, blue
    assert not list(tmp_path.glob("*.tmp*"))  # atomic writes leave no temporaries


def test_export_ply_vertex_colours(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    verts = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    colors = torch.tensor([[0.0, 0.5, 1.0]] * 5)
    export_mesh(tmp_path / "m.ply", verts, faces, colors)
    mesh = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_allclose(mesh.vertices, verts.numpy(), atol=1e-6)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], [[0, 128, 255]] * 5)
