"""Jaw-contour landmark marching and sliding (face3dkit.fit.contour, FitConfig.contour_*)."""

import math

import numpy as np
import pytest
import torch

import face3dkit
from face3dkit.fit import FitConfig, fit
from face3dkit.fit.contour import contour_candidates, contour_sliding_fn, marched_landmarks
from face3dkit.geometry import PerspectiveCamera, euler_to_rotation
from face3dkit.render import rasterize


@pytest.fixture(scope="module", params=["default", "makehuman"])
def model(request):
    return face3dkit.load_model(request.param)


def test_candidates_are_the_inward_strip(model):
    v = model.mean_shape.numpy()
    lm = v[model.landmark_idx.numpy()]
    cand = contour_candidates(model.mean_shape, model.landmark_idx, band=0.035, inner=0.4, max_candidates=10**6)
    eye = np.linalg.norm(lm[36] - lm[45])
    centre = lm[:, :2].mean(0)
    for p in (0, 3, 8, 13):
        # Contour tangent by central difference, outward normal away from the landmark centroid.
        t = lm[min(p + 1, 16), :2] - lm[max(p - 1, 0), :2]
        t /= np.linalg.norm(t)
        n = np.array([t[1], -t[0]])
        if (lm[p, :2] - centre) @ n < 0:
            n = -n
        h = (lm[p, :2] - centre) @ n
        rel = v[:, :2] - lm[p, :2]
        want = set(np.nonzero((np.abs(rel @ t) <= 0.035 * eye) & (rel @ n <= 0) & (rel @ n >= -0.6 * h))[0])
        want.add(int(model.landmark_idx[p]))
        got = cand.idx[p].numpy()
        assert got[0] == model.landmark_idx[p]
        assert set(got.tolist()) == want
        assert len(want) > 20  # a real strip of the mesh


def _silhouette_case(model, yaw_deg, size=448):
    c = face3dkit.Coefficients.zeros(model.layout, 1)
    c.angles[0, 1] = math.radians(yaw_deg)
    cam = PerspectiveCamera.for_image_size(size)
    with torch.no_grad():
        out = model(c, camera=cam)
        # the default model has a neck, whose outline below the jaw is not the jaw contour: the
        # jaw's silhouette is that of the front (narrow face) region there
        faces = model.faces if model.region_names == ["face"] else model.front_faces
        frags = rasterize(cam.to_screen(out.verts_world), faces, (size, size))
        cand = contour_candidates(model.mean_shape, model.landmark_idx, mask=model.region_mask("face"))
        marched = marched_landmarks(out.verts_world, model.landmark_idx, euler_to_rotation(c.angles), cam, cand)
    cover = (frags.pix_to_face[0].reshape(size, size, -1)[..., 0] >= 0).numpy()
    return cover, marched[0].numpy(), out.landmarks2d[0].numpy()


@pytest.mark.parametrize("yaw", [-35.0, 35.0])
def test_marched_far_side_lies_on_the_rendered_silhouette(model, yaw):
    cover, marched, fixed = _silhouette_case(model, yaw)
    # The side turned away: for yaw > 0 (R = Ry(yaw), v @ R.T) the model's +x side has (R e_x)_z < 0.
    far = list(range(11, 16)) if yaw > 0 else list(range(1, 6))
    outward = np.sign(marched[far, 0] - marched[30, 0])[:, None] * np.array([1.0, 0.0])

    def covered(p):
        x, y = np.floor(p).astype(int).T
        return cover[y, x]

    # Just inside the marched point the face is rendered, just outside is background.
    assert covered(marched[far] - 3 * outward).all()
    assert not covered(marched[far] + 3 * outward).any()
    # The fixed vertices of that side are hidden well inside the outline (what marching corrects).
    moved = np.abs(marched[far, 0] - fixed[far, 0])
    assert (moved[1:] > 3).all() if yaw > 0 else (moved[:-1] > 3).all()  # all but the one nearest the chin
    # The side turned towards the camera keeps its fixed vertices.
    near = [16 - i for i in far]
    np.testing.assert_array_equal(marched[near], fixed[near])


def test_frontal_pose_marches_nothing(model):
    _, marched, fixed = _silhouette_case(model, 0.0)
    np.testing.assert_array_equal(marched, fixed)


def test_contour_sliding_distance():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 68, 2, generator=g, dtype=torch.float64) * 100
    pred = target + torch.randn(2, 68, 2, generator=g, dtype=torch.float64)
    w = 0.3
    got = contour_sliding_fn(target, w)(pred)
    tn, pn = target.numpy(), pred.numpy()
    for b in range(2):
        for i in range(68):
            d2 = np.sum((got[b, i].numpy() - tn[b, i]) ** 2)
            r = pn[b, i] - tn[b, i]
            if i >= 17:
                want = r @ r
            else:
                t = tn[b, min(i + 1, 16)] - tn[b, max(i - 1, 0)]
                t /= np.linalg.norm(t)
                n = np.array([-t[1], t[0]])
                want = (r @ n) ** 2 + w**2 * (r @ t) ** 2
            np.testing.assert_allclose(d2, want, rtol=1e-10, atol=1e-12)


def test_fit_to_outline_landmarks_recovers_yaw_with_marching(model):
    # Targets in the 2D convention: the contour of the side turned away is on the silhouette.
    yaws = torch.tensor([-40.0, 40.0])
    c = face3dkit.Coefficients.zeros(model.layout, 2)
    c.angles[:, 1] = yaws * math.pi / 180
    cam = PerspectiveCamera.for_image_size(224)
    with torch.no_grad():
        out = model(c, camera=cam)
        cand = contour_candidates(model.mean_shape, model.landmark_idx)
        target = marched_landmarks(out.verts_world, model.landmark_idx, euler_to_rotation(c.angles), cam, cand)
    img = torch.zeros(2, 224, 224, 3)
    errs = {}
    for marching in (True, False):
        cfg = FitConfig(landmark_iters=150, photo_iters=0, contour_marching=marching, contour_tangent_weight=1.0)
        res = fit(model, img, target, cfg, camera=cam)
        errs[marching] = (res.coeffs.angles[:, 1] - c.angles[:, 1]).abs().max().item() * 180 / math.pi
    assert errs[True] < 1.5, errs
    assert errs[False] > errs[True] + 1.0, errs
