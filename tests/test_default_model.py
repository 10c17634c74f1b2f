"""Sanity of the embedded default model (built from MakeHuman CC0 assets)."""

import numpy as np
import pytest
import torch

import face3dkit


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def test_sizes(model):
    assert model.n_verts > 5000 and model.n_faces >= 15000
    assert model.n_id >= 60 and model.n_exp == 34 and model.landmark_idx.shape == (68,)
    assert model.has_uv and model.face_uv.shape == model.faces.shape
    assert "mouth-corner-puller" in model.exp_names and "eye-left-closure" in model.exp_names
    assert "CC0" in model.meta["licence"]


def test_mean_shape_is_centred_and_outward(model):
    v = model.mean_shape.double()
    np.testing.assert_allclose(v.mean(0).numpy(), 0, atol=1e-5)
    n = model.vertex_normals(v[None].float())[0]
    nose = model.landmark_idx[30]
    assert n[nose, 2] > 0.7  # nose tip normal points toward +z (the camera)


def test_landmarks_lie_on_the_face_in_order(model):
    lm = model.mean_shape[model.landmark_idx].numpy()
    x, y = lm[:, 0], lm[:, 1]
    # iBUG: 0-16 jaw from the subject's right (-x) to left (+x); eyes above the nose tip above
    # the mouth above the chin.
    assert np.all(np.diff(x[0:17]) > 0)
    assert x[36] < x[39] < x[42] < x[45]
    assert y[37] > y[30] > y[51] > y[57] > y[8]
    assert y[19] > y[37] and y[24] > y[44]  # brows above the eyes
    assert lm[30, 2] == lm[:, 2].max() or lm[30, 2] > lm[27, 2]  # nose tip is forward
    assert np.all(np.diff(y[27:31]) < 0)  # nose bridge goes down


def test_left_right_symmetry(model):
    v = model.mean_shape.numpy().astype(np.float64)
    mirrored = v * [-1, 1, 1]
    from scipy.spatial import cKDTree

    d, _ = cKDTree(v).query(mirrored)
    width = np.ptp(v[:, 0])
    assert np.median(d) < 0.01 * width and np.percentile(d, 95) < 0.03 * width
    lm = v[model.landmark_idx.numpy()]
    for a, b in ((0, 16), (36, 45), (39, 42), (48, 54), (17, 26), (31, 35)):
        assert np.linalg.norm(lm[a] * [-1, 1, 1] - lm[b]) < 0.05 * width, (a, b)


def test_identity_basis_orthogonal(model):
    b = model.id_basis.reshape(-1, model.n_id).double()
    g = b.T @ b
    d = torch.sqrt(torch.diag(g))
    corr = g / (d[:, None] * d[None])
    off = corr - torch.eye(model.n_id, dtype=torch.float64)
    assert off.abs().max() < 1e-4
    assert torch.all(d[1:] <= d[:-1] * (1 + 1e-6))  # sorted by variance


def test_each_expression_unit_moves_its_region(model):
    lm = model.mean_shape[model.landmark_idx].numpy()
    groups = {"eye-left": lm[42:48], "eye-right": lm[36:42], "brow-left": lm[22:27], "brow-right": lm[17:22],
              "mouth": lm[48:68], "nose": lm[31:36]}
    units = {"eye-left-closure": "eye-left", "eye-right-closure": "eye-right", "eye-left-slit": "eye-left",
             "eyebrows-left-up": "brow-left", "eyebrows-right-up": "brow-right",
             "eyebrows-left-down": "brow-left", "eyebrows-right-inner-up": "brow-right",
             "mouth-open": "mouth", "mouth-corner-puller": "mouth", "mouth-pursing": "mouth",
             "nose-left-dilatation": "nose", "nose-right-elevation": "nose"}
    v = model.mean_shape.numpy()
    for name, own in units.items():
        disp = np.linalg.norm(model.exp_basis[:, :, model.exp_names.index(name)].numpy(), axis=1)
        assert disp.max() > 0.01, name
        moved = v[disp > 0.5 * disp.max()].mean(0)[:2]
        dist = {g: np.linalg.norm(moved - p[:, :2].mean(0)) for g, p in groups.items()}
        assert min(dist, key=dist.get) == own, (name, dist)


def test_skin_and_front_masks(model):
    skin, front = model.skin_mask, model.front_mask
    assert 0.2 * model.n_verts < skin.sum() < front.sum() <= model.n_verts
    assert not bool(skin[model.landmark_idx[36:48]].any())  # eye corners are not skin
    assert not bool(skin[model.landmark_idx[48:68]].any())  # nor the lips
    assert bool(skin[model.landmark_idx[29]])  # the nose is


def test_albedo_range(model):
    a = model.albedo(None)
    assert 0.05 < a.mean() < 0.9 and a.min() >= 0 and a.max() <= 1
