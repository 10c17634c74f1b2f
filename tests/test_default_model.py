"""Sanity of the embedded models: the default (v2: ICT-FaceKit Light shape and ARKit blendshapes,
eyes, teeth, mouth interior, MakeHuman CC0 albedo) and the MakeHuman CC0 model (v1)."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

import face3dkit

MODELS = ("default", "makehuman")


@pytest.fixture(scope="module", params=MODELS)
def model(request):
    return face3dkit.load_model(request.param)


@pytest.fixture(scope="module")
def v2():
    return face3dkit.load_model("default")


def _groups(model):
    lm = model.mean_shape[model.landmark_idx].numpy()
    return {"eye-left": lm[42:48], "eye-right": lm[36:42], "brow-left": lm[22:27], "brow-right": lm[17:22],
            "mouth": lm[48:68], "nose": lm[31:36], "chin": lm[6:11]}


def _moves_own_region(model, units: dict[str, str]) -> None:
    """Each named unit's most-displaced vertices sit nearest the landmark group it belongs to."""
    groups = _groups(model)
    face = model.region_mask("face").numpy()
    v = model.mean_shape.numpy()
    for name, own in units.items():
        disp = np.linalg.norm(model.exp_basis[:, :, model.exp_names.index(name)].numpy(), axis=1) * face
        assert disp.max() > 0.01, name
        moved = v[disp > 0.5 * disp.max()].mean(0)[:2]
        dist = {g: np.linalg.norm(moved - p[:, :2].mean(0)) for g, p in groups.items()}
        assert min(dist, key=dist.get) == own, (name, dist)


# ---------------------------------------------------------------------------------------------
# both models
# ---------------------------------------------------------------------------------------------
def test_mean_shape_outward_normals(model):
    n = model.vertex_normals(model.mean_shape[None])[0]
    assert n[model.landmark_idx[30], 2] > 0.7  # nose tip normal points toward +z (the camera)
    assert n[model.landmark_idx[8], 2] > 0.1  # chin too (it faces down and forward)


def test_landmarks_lie_on_the_face_in_order(model):
    lm = model.mean_shape[model.landmark_idx].numpy()
    x, y = lm[:, 0], lm[:, 1]
    # iBUG: 0-16 jaw from the subject's right (-x) to left (+x); eyes above the nose tip above
    # the mouth above the chin.
    assert np.all(np.diff(x[0:17]) > 0)
    assert x[36] < x[39] < x[42] < x[45]
    assert y[37] > y[30] > y[51] > y[57] > y[8]
    assert y[19] > y[37] and y[24] > y[44]  # brows above the eyes
    assert lm[30, 2] > lm[27, 2]  # nose tip is forward
    assert np.all(np.diff(y[27:31]) < 0)  # nose bridge goes down


def test_left_right_symmetry(model):
    v = model.mean_shape.numpy().astype(np.float64)
    d, _ = cKDTree(v).query(v * [-1, 1, 1])
    width = np.ptp(v[:, 0])
    assert np.median(d) < 0.01 * width and np.percentile(d, 95) < 0.03 * width
    lm = v[model.landmark_idx.numpy()]
    for a, b in ((0, 16), (36, 45), (39, 42), (48, 54), (17, 26), (31, 35)):
        assert np.linalg.norm(lm[a] * [-1, 1, 1] - lm[b]) < 0.05 * width, (a, b)


def test_identity_basis_orthogonal_and_sorted(model):
    b = model.id_basis.reshape(-1, model.n_id).double()
    g = b.T @ b
    d = torch.sqrt(torch.diag(g))
    corr = g / (d[:, None] * d[None])
    off = corr - torch.eye(model.n_id, dtype=torch.float64)
    assert off.abs().max() < 1e-3  # float16 storage of the v2 basis costs ~1e-5
    assert torch.all(d[1:] <= d[:-1] * (1 + 1e-3))  # sorted by variance


def test_skin_and_front_masks(model):
    skin, front = model.skin_mask, model.front_mask
    assert 0.1 * model.n_verts < skin.sum() < front.sum() <= model.n_verts
    assert not bool(skin[model.landmark_idx[36:48]].any())  # eye corners are not skin
    assert not bool(skin[model.landmark_idx[48:68]].any())  # nor the lips
    assert bool(skin[model.landmark_idx[29]])  # the nose is
    assert bool(front[model.region_mask("face")].any()) and not bool(front[~model.region_mask("face")].any())


def test_mean_albedo_range(model):
    a = model.albedo(None)
    assert 0.05 < a.mean() < 0.9 and a.min() >= 0 and a.max() <= 1


# ---------------------------------------------------------------------------------------------
# the MakeHuman model (v1)
# ---------------------------------------------------------------------------------------------
def test_makehuman_model_still_loads():
    m = face3dkit.load_model("makehuman")
    assert (m.n_id, m.n_exp, m.n_tex) == (80, 34, 17) and m.n_verts == 12382
    assert "mouth-corner-puller" in m.exp_names and "CC0" in m.meta["licence"] and m.region_names == ["face"]
    np.testing.assert_allclose(m.mean_shape.double().mean(0).numpy(), 0, atol=1e-5)
    _moves_own_region(m, {"eye-left-closure": "eye-left", "eye-right-closure": "eye-right",
                          "eye-left-slit": "eye-left", "eyebrows-left-up": "brow-left",
                          "eyebrows-right-up": "brow-right", "eyebrows-left-down": "brow-left",
                          "eyebrows-right-inner-up": "brow-right", "mouth-corner-puller": "mouth",
                          "mouth-pursing": "mouth", "nose-left-dilatation": "nose", "nose-right-elevation": "nose"})


# ---------------------------------------------------------------------------------------------
# the default model (v2)
# ---------------------------------------------------------------------------------------------
def test_v2_sizes_names_licence(v2):
    assert (v2.n_id, v2.n_exp, v2.n_tex) == (100, 53, 19)
    assert v2.layout.total == 100 + 53 + 19 + 33
    assert v2.exp_range == (0.0, 1.0) and v2.has_uv and v2.face_uv.shape == v2.faces.shape
    for name in ("jawOpen", "eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "mouthSmile_R", "eyeWide_L", "noseSneer_R"):
        assert name in v2.exp_names
    assert v2.tex_names[-2:] == ["brow_darkness", "brow_thickness"]
    assert "MIT" in v2.meta["licence"] and "CC0" in v2.meta["licence"]
    assert v2.region_names == ["face", "eye_socket", "eyeball", "mouth_interior", "teeth"]


def test_v2_front_region_is_centred(v2):
    np.testing.assert_allclose(v2.mean_shape[v2.front_mask].double().mean(0).numpy(), 0, atol=1e-5)
    lm = v2.mean_shape[v2.landmark_idx].numpy()
    assert 1.3 < np.linalg.norm(lm[0] - lm[16]) < 1.7  # face width in decimetres (~15 cm)


def test_v2_each_unit_moves_its_own_region_left_right_correct(v2):
    _moves_own_region(v2, {
        "eyeBlink_L": "eye-left", "eyeBlink_R": "eye-right", "eyeWide_L": "eye-left", "eyeSquint_R": "eye-right",
        "browInnerUp_L": "brow-left", "browInnerUp_R": "brow-right", "browDown_L": "brow-left",
        "browOuterUp_R": "brow-right", "mouthSmile_L": "mouth", "mouthPucker": "mouth", "mouthPress_R": "mouth",
        "noseSneer_L": "nose", "jawOpen": "mouth"})
    # _L is the subject's left (+x): the left blink moves vertices at x > 0 only
    for name, sign in (("eyeBlink_L", 1), ("eyeBlink_R", -1), ("mouthSmile_L", 1), ("mouthSmile_R", -1)):
        disp = np.linalg.norm(v2.exp_basis[:, :, v2.exp_names.index(name)].numpy(), axis=1)
        x = v2.mean_shape[:, 0].numpy()
        assert np.sign(np.average(x, weights=disp)) == sign, name


def test_v2_eyes_open_blink_and_jaw(v2):
    def lid_gap(exp):
        lm = v2.shape(None, exp)[0][v2.landmark_idx].numpy()
        return (lm[[43, 44], 1].mean() - lm[[47, 46], 1].mean()), (lm[[37, 38], 1].mean() - lm[[41, 40], 1].mean())

    neutral = torch.zeros(1, v2.n_exp)
    left, right = lid_gap(neutral)
    assert left > 0.05 and right > 0.05  # eyes open at rest: > 5 mm between the lids
    bl, br = lid_gap(v2.expression_vector({"eyeBlink_L": 1.0}))
    assert bl < 0.25 * left and br > 0.9 * right  # only the subject's left eye closes
    wl, _ = lid_gap(v2.expression_vector({"eyeWide_L": 1.0}))
    assert wl > 1.1 * left
    chin = v2.shape(None, v2.expression_vector({"jawOpen": 1.0}))[0][v2.landmark_idx[8], 1]
    assert float(v2.mean_shape[v2.landmark_idx[8], 1] - chin) > 0.1  # the jaw drops > 1 cm
    lower_teeth = v2.region_mask("teeth") & (v2.mean_shape[:, 1] < v2.mean_shape[v2.landmark_idx[62], 1])
    d_teeth = v2.exp_basis[lower_teeth, 1, v2.exp_names.index("jawOpen")].mean()
    assert float(d_teeth) < -0.05  # the lower teeth move with the jaw


def test_v2_regions_sit_where_they_belong(v2):
    v = v2.mean_shape.numpy()
    lm = v[v2.landmark_idx.numpy()]
    for name in v2.region_names:
        assert int(v2.region_mask(name).sum()) > 100, name
    eyes = v[v2.region_mask("eyeball").numpy()]
    for side, ids in ((1, range(42, 48)), (-1, range(36, 42))):
        ball = eyes[np.sign(eyes[:, 0]) == side]
        c = ball.mean(0)
        box = lm[list(ids)]
        assert box[:, 0].min() < c[0] < box[:, 0].max() and abs(c[1] - box[:, 1].mean()) < 0.05
        assert ball[:, 2].max() < lm[30, 2]  # behind the nose tip
    teeth = v[v2.region_mask("teeth").numpy()]
    assert abs(teeth[:, 0].mean()) < 0.01 and lm[4, 0] < teeth[:, 0].min() < 0 < teeth[:, 0].max() < lm[12, 0]
    front_teeth = teeth[teeth[:, 2] > np.percentile(teeth[:, 2], 90)]
    assert lm[48, 0] < front_teeth[:, 0].min() and front_teeth[:, 0].max() < lm[54, 0]  # incisors between the corners
    assert lm[57, 1] - 0.05 < teeth[:, 1].mean() < lm[51, 1] + 0.05 and teeth[:, 2].max() < lm[62, 2] + 0.01
    mouth = v[v2.region_mask("mouth_interior").numpy()]
    assert mouth[:, 2].mean() < lm[62, 2]  # the mouth interior is behind the lips
    # the photometric (front) region is skin only, holds every landmark; renders include the inner regions
    assert bool(v2.front_mask[v2.landmark_idx].all())
    assert not bool(v2.front_mask[~v2.region_mask("face")].any())
    assert v2.region_faces("face", "eyeball", "teeth", "mouth_interior", "eye_socket").shape == v2.faces.shape


def test_v2_albedo_in_range_for_3_sigma_and_brows_visible(v2):
    for k in range(v2.n_tex):
        for s in (-3.0, 3.0):
            t = torch.zeros(1, v2.n_tex)
            t[0, k] = s
            a = v2.albedo(t)
            assert float(a.min()) >= -1e-3 and float(a.max()) <= 1 + 1e-3, (v2.tex_names[k], s)
    g = torch.Generator().manual_seed(0)
    a = v2.albedo(torch.randn(500, v2.n_tex, generator=g).clamp(-3, 3))
    assert float(((a < -0.01) | (a > 1.01)).float().mean()) < 1e-4
    # brows darker than the forehead above them, for the mean and at +3 sigma darkness
    v = v2.mean_shape
    lm = v[v2.landmark_idx]
    brow_v = cKDTree(v.numpy()).query((lm[[19, 24]] - torch.tensor([0, 0.03, 0])).numpy())[1]
    forehead_v = cKDTree(v.numpy()).query((lm[[19, 24]] + torch.tensor([0, 0.25, 0])).numpy())[1]
    lum = v2.albedo(None)[0].mean(-1)
    assert float(lum[brow_v].mean()) < 0.8 * float(lum[forehead_v].mean())
    dark = torch.zeros(1, v2.n_tex)
    dark[0, v2.tex_names.index("brow_darkness")] = 3.0
    assert float(v2.albedo(dark)[0].mean(-1)[brow_v].mean()) < float(lum[brow_v].mean())


def test_v2_float16_basis_error_is_negligible(v2):
    """The bases are stored as float16: each entry is within 2^-11 (relative) of its float32
    value, so for N(0, 1) coefficients a vertex moves by at most 2^-11 * sqrt(sum_k b_k^2) (std)."""
    from face3dkit.model.files import default_model_path

    with np.load(default_model_path()) as z:
        assert z["id_basis"].dtype == np.float16 and z["exp_basis"].dtype == np.float16
    per_vertex_std = torch.sqrt((v2.id_basis.double() ** 2).sum(-1)).max()
    bound_mm = float(per_vertex_std) * 2 ** -11 * 100  # decimetres -> mm
    assert bound_mm < 0.05  # well below the scan noise (and ~0.3 px in a 224 crop)
    exp_bound_mm = float(v2.exp_basis.double().abs().sum(-1).max()) * 2 ** -11 * 100  # all units at 1
    assert exp_bound_mm < 0.2
