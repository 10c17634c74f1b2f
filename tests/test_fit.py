"""Fitting recovers pose (and landmarks) of synthetic renders of the default model."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import face3dkit
from face3dkit.fit import (
    ARCFACE_TEMPLATE,
    FitConfig,
    arcface_matrix,
    fit,
    fit_landmarks,
    init_pose_from_landmarks,
    render_coefficients,
)
from face3dkit.geometry import PerspectiveCamera


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def _scene(model, size, yaw_deg, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = model.sample(len(yaw_deg), generator=g, id_scale=0.7, tex_scale=0.7)
    c.angles[:, 1] = torch.tensor(yaw_deg) * math.pi / 180
    c.angles[:, 0] = 0.08
    c.trans[:, 2] = 0.3
    c.gamma[:, [2, 11, 20]] = 0.25
    cam = PerspectiveCamera.for_image_size(size)
    with torch.no_grad():
        img, _, cov, lm = render_coefficients(model, c, cam)
    img = torch.where(cov > 0, img, torch.full_like(img, 0.4)).clamp(0, 1)
    return c, cam, img, lm


def test_pos_initialisation_recovers_pose(model):
    c, cam, _, lm = _scene(model, 224, [-35.0, 0.0, 25.0])
    c.id.zero_()
    c.exp.zero_()
    with torch.no_grad():
        lm = model(c, camera=cam).landmarks2d  # mean shape: POS sees exactly the model's landmarks
    ang, trans = init_pose_from_landmarks(model, lm, cam)
    np.testing.assert_allclose(ang[:, 1].numpy() * 180 / math.pi, [-35, 0, 25], atol=2.5)
    np.testing.assert_allclose(trans[:, 2].numpy(), 0.3, atol=0.4)  # weak-perspective depth


def test_fit_recovers_pose_fast(model):
    yaws = [-40.0, 10.0, 45.0]
    c, cam, img, lm = _scene(model, 112, yaws, seed=1)
    # The landmarks are projections of the fixed landmark vertices: no contour marching.
    cfg = FitConfig(landmark_iters=80, photo_iters=4, contour_marching=False)
    res = fit(model, img, lm, cfg, camera=cam)
    err = (res.coeffs.angles[:, 1] - c.angles[:, 1]).abs() * 180 / math.pi
    assert err.max() < 3.0, err
    assert res.landmark_error.max() < 1.5  # pixels at 112 px
    assert res.render.shape == (3, 112, 112, 3) and res.mask.shape == (3, 112, 112, 1)
    assert res.losses["landmark"][-1] < 0.2 * res.losses["landmark"][0]
    # Deterministic for a seed.
    res2 = fit(model, img, lm, cfg, camera=cam)
    assert torch.equal(res.coeffs.join(), res2.coeffs.join())


def test_arcface_matrix_maps_template():
    tmpl = np.array(ARCFACE_TEMPLATE)
    # 68 points whose 5-point reduction is the template mapped by a known similarity.
    s, th, t = 1.7, 0.2, np.array([30.0, -12.0])
    r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    five = (tmpl - t) @ np.linalg.inv(s * r).T  # inverse map: template = s R p + t
    lm = np.zeros((1, 68, 2))
    lm[0, 36:42] = five[0]
    lm[0, 42:48] = five[1]
    lm[0, 30], lm[0, 48], lm[0, 54] = five[2], five[3], five[4]
    m = arcface_matrix(torch.tensor(lm))[0].numpy()
    np.testing.assert_allclose(m[:, :2], s * r, atol=1e-8)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-8)


def test_fit_with_five_points(model):
    from face3dkit.landmarks import lm68_to_lm5

    c, cam, img, lm = _scene(model, 112, [-20.0, 30.0], seed=2)
    res = fit(model, img, lm68_to_lm5(lm), FitConfig(landmark_iters=80, photo_iters=2), camera=cam)
    err = (res.coeffs.angles[:, 1] - c.angles[:, 1]).abs() * 180 / math.pi
    assert err.max() < 6.0, err  # five points constrain yaw less than 68
    assert res.landmarks2d.shape == (2, 68, 2)


def test_fit_leaves_the_global_random_state_alone():
    """The fit neither reseeds nor draws from torch's global generator (it used to reseed it)."""
    model = face3dkit.load_model("default")
    c = model.sample(1, generator=torch.Generator().manual_seed(0))
    cam = PerspectiveCamera.for_image_size(64)
    with torch.no_grad():
        img, _, _, lm = render_coefficients(model, c, cam)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    fit(model, img, lm, FitConfig(landmark_iters=2, photo_iters=1, seed=7), camera=cam)
    assert torch.equal(torch.get_rng_state(), before)


def test_fit_landmarks_equals_the_landmark_stage_of_fit_and_3d_convention_fixes_the_contour():
    """fit_landmarks (no image) gives what fit gives with photo_iters=0 on any image of that size;
    landmark_convention='3d' is the fixed-contour preset (no marching, point-to-point distances)."""
    model = face3dkit.load_model("default")
    g = torch.Generator().manual_seed(3)
    c = model.sample(2, generator=g, id_scale=0.7)
    c.angles[:, 1] = torch.tensor([-0.5, 0.4])
    cam = PerspectiveCamera.for_image_size(96)
    with torch.no_grad():
        lm = model(c, camera=cam).landmarks2d
    for conv in ("2d", "3d"):
        cfg = FitConfig(landmark_iters=30, photo_iters=5, landmark_convention=conv)
        a = fit_landmarks(model, lm, 96, cfg)
        b = fit(model, torch.rand(2, 96, 96, 3, generator=g), lm, dataclasses.replace(cfg, photo_iters=0))
        assert a.render is None and a.losses["photometric"] == []
        for k, v in a.coeffs.as_dict().items():
            assert torch.equal(v, b.coeffs.as_dict()[k]), k
    preset = FitConfig(landmark_iters=30, photo_iters=0, landmark_convention="3d")
    assert not preset.marching and preset.tangent_weight == 1.0
    manual = FitConfig(landmark_iters=30, photo_iters=0, contour_marching=False, contour_tangent_weight=1.0)
    x, y = fit_landmarks(model, lm, 96, preset), fit_landmarks(model, lm, 96, manual)
    assert torch.equal(x.coeffs.angles, y.coeffs.angles) and torch.equal(x.coeffs.exp, y.coeffs.exp)
    with pytest.raises(ValueError, match="landmark_convention"):
        FitConfig(landmark_convention="2.5d")


def test_fit_holds_fixed_blocks_at_their_start(model):
    """fixed=('id', 'tex'): the identity and albedo of the start come back bit for bit, the other
    blocks are fitted (the pose moves towards the truth); bad block names / no init are refused."""
    c, cam, img, lm = _scene(model, 112, [-20.0, 15.0], seed=2)
    start = type(c)(*(v.clone() for v in c.as_dict().values()))
    start.angles = start.angles + torch.tensor([0.0, 0.15, 0.0])  # off by ~9 degrees of yaw
    start.id = start.id * 0.5
    cfg = FitConfig(landmark_iters=40, photo_iters=3, contour_marching=False)
    res = fit(model, img, lm, cfg, camera=cam, init=start, fixed=("id", "tex"))
    assert torch.equal(res.coeffs.id, start.id) and torch.equal(res.coeffs.tex, start.tex)
    before = (start.angles[:, 1] - c.angles[:, 1]).abs()
    after = (res.coeffs.angles[:, 1] - c.angles[:, 1]).abs()
    assert (after < 0.5 * before).all(), (before, after)
    free = fit(model, img, lm, cfg, camera=cam, init=start)
    assert not torch.equal(free.coeffs.id, start.id)
    with pytest.raises(ValueError, match="fixed blocks"):
        fit(model, img, lm, cfg, camera=cam, init=start, fixed=("shape",))
    with pytest.raises(ValueError, match="need init"):
        fit(model, img, lm, cfg, camera=cam, fixed=("id",))


def test_landmark_prior_scale_keeps_the_landmark_stage_shape_nearer_the_mean(model):
    """FitConfig.landmark_prior_scale multiplies the identity / expression priors of the landmark
    stage only: the fitted shape coefficients shrink, the landmarks are still followed."""
    c, _, _, lm = _scene(model, 224, [20.0], seed=3)
    out = {}
    for scale in (1.0, 100.0):
        r = fit_landmarks(model, lm, 224, FitConfig(landmark_iters=80, landmark_convention="3d",
                                                   landmark_prior_scale=scale))
        out[scale] = (float(r.coeffs.id.norm() + r.coeffs.exp.norm()), float(r.landmark_error.mean()))
    assert out[100.0][0] < 0.5 * out[1.0][0], out
    assert out[100.0][1] < 6.0, out  # pixels of a 224 crop: the pose still fits
    with pytest.raises(ValueError, match="landmark_prior_scale"):
        FitConfig(landmark_prior_scale=0.0)


def test_photo_shape_shrink_scales_the_landmark_stage_shape_but_not_fixed_blocks(model):
    """FitConfig.photo_shape_shrink multiplies the landmark stage's identity and expression before
    the photometric stage (here one step at a negligible learning rate, so the result is the start)."""
    c, cam, img, lm = _scene(model, 112, [15.0], seed=5)
    base = FitConfig(landmark_iters=40, photo_iters=1, lr_photo=1e-12, landmark_convention="3d", photo_size=None)
    lm_only = fit_landmarks(model, lm, 112, dataclasses.replace(base, photo_iters=0))
    r = fit(model, img, lm, dataclasses.replace(base, photo_shape_shrink=0.25))
    torch.testing.assert_close(r.coeffs.id, 0.25 * lm_only.coeffs.id, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.coeffs.exp, 0.25 * lm_only.coeffs.exp, rtol=1e-4, atol=1e-6)
    start = face3dkit.Coefficients(**{k: v.clone() for k, v in lm_only.coeffs.as_dict().items()})
    start.id = torch.full_like(start.id, 0.3)
    r = fit(model, img, lm, dataclasses.replace(base, photo_shape_shrink=0.0), init=start, fixed=("id",))
    assert torch.equal(r.coeffs.id, start.id)  # held fixed: not shrunk
    assert float(r.coeffs.exp.abs().max()) < 1e-6
    with pytest.raises(ValueError, match="photo_shape_shrink"):
        FitConfig(photo_shape_shrink=1.5)


def test_landmark_refinement_gives_far_faces_the_long_stage_and_leaves_the_others(model):
    """FitConfig.landmark_refine_iters: faces whose residual after the short stage is above the
    threshold end exactly where the long stage takes them in the whole batch; the others exactly
    where the short stage left them. The residual is the mean landmark distance recomputed here
    from the short fit's coefficients (3D convention: plain projections), in 224-crop pixels."""
    c, cam, _, lm = _scene(model, 112, [-30.0, 0.0, 20.0, 35.0], seed=7)
    g = torch.Generator().manual_seed(1)
    lm = lm + torch.randn(lm.shape, generator=g) * torch.tensor([0.2, 3.0, 0.2, 3.0])[:, None, None]
    base = FitConfig(landmark_iters=10, landmark_convention="3d")
    short = fit_landmarks(model, lm, 112, base)
    long = fit_landmarks(model, lm, 112, dataclasses.replace(base, landmark_iters=60))
    with torch.no_grad():
        resid = (model(short.coeffs, camera=cam).landmarks2d - lm).norm(dim=-1).mean(-1) * 2.0  # 112 -> 224 px
    torch.testing.assert_close(short.landmark_stage_error, resid, rtol=1e-4, atol=1e-4)
    thr = float(resid.sort().values[1:3].mean())  # two faces above, two below
    cfg = dataclasses.replace(base, landmark_refine_iters=50, landmark_refine_above=thr)
    ref = fit_landmarks(model, lm, 112, cfg)
    far = resid > thr
    assert far.sum() == 2 and torch.equal(ref.refined, far)
    for k in ("id", "exp", "angles", "trans"):
        a = getattr(ref.coeffs, k)
        torch.testing.assert_close(a[far], getattr(long.coeffs, k)[far], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a[~far], getattr(short.coeffs, k)[~far], rtol=0, atol=0)
    torch.testing.assert_close(ref.landmark_stage_error, short.landmark_stage_error)
    assert len(ref.losses["landmark_refine"]) == 50 and not short.refined.any()
    with pytest.raises(ValueError, match="landmark_refine"):
        FitConfig(landmark_refine_iters=-1)


def test_shared_identity_of_copies_is_the_fit_of_one_photo(model):
    """fit(shared=('id', 'tex')) on one person's photos: every term a mean over the photos, the shared
    blocks' prior as in a one-photo fit (times shared_prior_weight). So B copies of one photo give
    what that photo alone gives (every block, the shared ones bit-equal across rows), and a batch of
    one is the plain fit."""
    c, cam, img, lm = _scene(model, 112, [20.0], seed=11)
    base = FitConfig(landmark_iters=30, photo_iters=6, photo_size=None, contour_marching=False)
    b = 3
    joint = fit(model, img.expand(b, -1, -1, -1), lm.expand(b, -1, -1), base, camera=cam, shared=("id", "tex"))
    plain = fit(model, img, lm, base, camera=cam)
    assert torch.equal(joint.coeffs.id, joint.coeffs.id[:1].expand(b, -1))
    assert torch.equal(joint.coeffs.tex, joint.coeffs.tex[:1].expand(b, -1))
    for k, v in joint.coeffs.as_dict().items():  # per-photo blocks: equal up to batched arithmetic
        torch.testing.assert_close(v, v[:1].expand(b, -1), rtol=1e-3, atol=5e-4, msg=k)
        torch.testing.assert_close(v[:1], getattr(plain.coeffs, k), rtol=1e-3, atol=5e-4, msg=k)
    assert plain.coeffs.id.abs().max() > 0.05  # the identity was fitted (not left at the mean)
    one = fit(model, img, lm, base, camera=cam, shared=("id", "tex"))
    assert torch.equal(one.coeffs.join(), plain.coeffs.join())
    # shared_prior_weight = 1/B (the MAP weight for independent errors): B copies are the photo
    # alone with the identity and albedo prior weights divided by B (an ordinary fit here).
    joint = fit(model, img.expand(b, -1, -1, -1), lm.expand(b, -1, -1),
                dataclasses.replace(base, shared_prior_weight=1 / b), camera=cam, shared=("id", "tex"))
    w = base.weights
    ref = fit(model, img, lm, dataclasses.replace(base, weights=dataclasses.replace(
        w, coef_id=w.coef_id / b, coef_tex=w.coef_tex / b)), camera=cam)
    for k, v in joint.coeffs.as_dict().items():
        torch.testing.assert_close(v[:1], getattr(ref.coeffs, k), rtol=1e-3, atol=5e-4, msg=k)
    assert (plain.coeffs.id - ref.coeffs.id).abs().max() > 1e-2  # the prior's weight does matter here
    with pytest.raises(ValueError, match="shared_prior_weight"):
        FitConfig(shared_prior_weight=0.0)


def test_shared_identity_over_different_photos(model):
    """Photos of one person at different yaws: one identity and albedo for all, each photo its own
    pose (near its truth); a shared block that is also fixed, or not shareable, is refused."""
    c, cam, img, lm = _scene(model, 112, [-30.0, 0.0, 30.0], seed=12)
    cfg = FitConfig(landmark_iters=60, photo_iters=4, photo_size=None, contour_marching=False)
    r = fit(model, img, lm, cfg, camera=cam, shared=("id", "tex"))
    assert torch.equal(r.coeffs.id[0], r.coeffs.id[2]) and torch.equal(r.coeffs.tex[1], r.coeffs.tex[2])
    assert r.coeffs.id.is_contiguous() and r.coeffs.id.abs().max() > 1e-3
    yaw_err = (r.coeffs.angles[:, 1] - c.angles[:, 1]).abs() * 180 / math.pi
    assert yaw_err.max() < 4.0 and (r.coeffs.angles[0, 1] - r.coeffs.angles[2, 1]).abs() > 0.8, yaw_err
    with pytest.raises(ValueError, match="shared blocks"):
        fit(model, img, lm, cfg, camera=cam, init=r.coeffs, fixed=("id",), shared=("id",))
    with pytest.raises(ValueError, match="shared blocks"):
        fit(model, img, lm, cfg, camera=cam, shared=("exp",))
    with pytest.raises(ValueError, match="landmark_refine_iters"):
        fit(model, img, lm, dataclasses.replace(cfg, landmark_refine_iters=5), camera=cam, shared=("id",))
