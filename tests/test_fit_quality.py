"""Robust landmark loss, fit-quality assessment (poor_fit) and the faster photometric stage / export."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import face3dkit
from face3dkit.fit import (
    STATUS_OK,
    STATUS_POOR,
    FitConfig,
    QualityThresholds,
    assess_fit,
    fit,
    landmark_nme,
    render_coefficients,
    yaw_pitch_roll_degrees,
)
from face3dkit.fit.fitter import _photo_camera
from face3dkit.geometry import PerspectiveCamera
from face3dkit.losses import landmark_loss, landmark_weights, robust_landmark_loss, robust_penalty

pytestmark = pytest.mark.usefixtures("one_thread")  # steady on shared, oversubscribed CPUs

JAW_SHIFT = np.array([2000.0, 1500.0])  # 2500 px: a corrupted landmark file


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


# --- the robust loss against numpy -------------------------------------------------------------


def _np_rho(d: np.ndarray, kind: str, s: float) -> np.ndarray:
    if kind == "l2":
        return d ** 2
    if kind == "huber":
        return np.where(d <= s, d ** 2, 2 * s * d - s ** 2)
    return s ** 2 * d ** 2 / (s ** 2 + d ** 2)


@pytest.mark.parametrize("kind", ["l2", "huber", "gm"])
def test_robust_landmark_loss_matches_numpy(kind):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(3, 68, 2)) * 8
    pred[1, :17] += 300.0  # far points
    target = rng.normal(size=(3, 68, 2))
    w = rng.uniform(0.5, 20, size=68)
    s = 7.5
    d = np.linalg.norm(pred - target, axis=-1)
    want = (_np_rho(d, kind, s) * w).sum() / (3 * 68)
    got = robust_landmark_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(w), kind, s)
    np.testing.assert_allclose(float(got), want, rtol=1e-12)
    # Per-point gradient magnitude: rho'(d) (numpy, analytic) times w / (B N).
    p = torch.tensor(pred, requires_grad=True)
    robust_landmark_loss(p, torch.tensor(target), torch.tensor(w), kind, s).backward()
    dr = {"l2": 2 * d, "huber": np.where(d <= s, 2 * d, 2 * s), "gm": 2 * s ** 4 * d / (s ** 2 + d ** 2) ** 2}[kind]
    np.testing.assert_allclose(p.grad.norm(dim=-1).numpy(), dr * w / (3 * 68), rtol=1e-9, atol=1e-12)


def test_robust_penalty_limits_and_l2_is_deng():
    d2 = torch.tensor([0.0, 1e-4, 1e8], dtype=torch.float64, requires_grad=True)
    for kind in ("huber", "gm"):
        rho = robust_penalty(d2, kind, 10.0)
        rho.sum().backward()
        assert torch.isfinite(d2.grad).all()
        d2.grad = None
    np.testing.assert_allclose(float(robust_penalty(torch.tensor(1e8), "gm", 10.0)), 100.0, rtol=1e-5)  # -> s^2
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 68, 2, generator=g), torch.randn(2, 68, 2, generator=g)
    w = landmark_weights()
    assert torch.equal(robust_landmark_loss(a, b, w, "l2"), landmark_loss(a, b, w))
    with pytest.raises(ValueError, match="kind"):
        robust_penalty(d2, "cauchy")
    with pytest.raises(ValueError, match="scale"):
        robust_penalty(d2, "gm", 0.0)
    with pytest.raises(ValueError, match="landmark_loss"):
        FitConfig(landmark_loss="l1")


# --- assess_fit ---------------------------------------------------------------------------------


def _face_landmarks(model) -> np.ndarray:
    with torch.no_grad():
        c = face3dkit.Coefficients.zeros(model.layout, 1)
        return model(c, camera=PerspectiveCamera()).landmarks2d[0].double().numpy()


def test_landmark_nme_against_numpy(model):
    given = _face_landmarks(model)
    rng = np.random.default_rng(2)
    fitted = given + rng.normal(size=given.shape) * 2.0
    iod = np.linalg.norm(given[36] - given[45])
    d = np.linalg.norm(fitted - given, axis=1) / iod
    nme, worst = landmark_nme(fitted, given)
    np.testing.assert_allclose([float(nme), float(worst)], [d.mean(), d.max()], rtol=1e-12)
    # Five points: normalised by the eye-centre distance; batched input gives (B,).
    five_g, five_f = given[[36, 45, 30, 48, 54]], fitted[[36, 45, 30, 48, 54]]
    nme5, _ = landmark_nme(five_f[None].repeat(2, 0), five_g[None].repeat(2, 0))
    want5 = (np.linalg.norm(five_f - five_g, axis=1) / np.linalg.norm(five_g[0] - five_g[1])).mean()
    np.testing.assert_allclose(nme5.numpy(), [want5, want5], rtol=1e-12)


def test_assess_fit_flags_each_check(model):
    given = _face_landmarks(model)
    ok = assess_fit(given + 0.5, given, (20.0, -5.0, 1.0), np.zeros(80))
    assert ok.status == STATUS_OK and ok.reason == "" and ok.metrics["landmark_nme"] < 0.02
    bad_lm = given.copy()
    bad_lm[:17] += JAW_SHIFT
    q = assess_fit(given, bad_lm, (0.0, 0.0, 0.0), np.zeros(80))  # the fit ignored the shifted jaw
    assert q.status == STATUS_POOR and "landmark NME" in q.reason and "17 of 68 landmarks" in q.reason
    iod = np.linalg.norm(given[36] - given[45])
    np.testing.assert_allclose(q.metrics["landmark_nme"], 17 * np.linalg.norm(JAW_SHIFT) / 68 / iod, rtol=1e-9)
    assert assess_fit(given, given, (110.0, 0.0, 0.0), np.zeros(80)).reason == "|yaw| 110.0 > 100 deg"
    assert assess_fit(given, given, (0.0, -75.0, 0.0), np.zeros(80)).reason == "|pitch| 75.0 > 70 deg"
    ids = np.zeros(80)
    ids[7] = -6.0
    assert "identity coefficient 6.00 > 5 sigma" in assess_fit(given, given, (0, 0, 0), ids).reason
    strict = QualityThresholds(max_nme=0.001)
    assert assess_fit(given + 0.5, given, (0, 0, 0), ids * 0, strict).status == STATUS_POOR
    nan = assess_fit(given * np.nan, given, (0, 0, 0), ids * 0)
    assert nan.status == STATUS_POOR


# --- robust fitting: a shifted jaw does not move the pose, and is marked -----------------------


def _scene(model, size=224, yaws=(-35.0, 40.0), seed=3):
    g = torch.Generator().manual_seed(seed)
    c = model.sample(len(yaws), generator=g, id_scale=0.7, tex_scale=0.7)
    c.angles[:, 1] = torch.tensor(yaws) * math.pi / 180
    c.angles[:, 0] = 0.1
    c.gamma[:, [2, 11, 20]] = 0.25
    cam = PerspectiveCamera.for_image_size(size)
    with torch.no_grad():
        img, _, cov, lm = render_coefficients(model, c, cam)
    return c, cam, torch.where(cov > 0, img, torch.full_like(img, 0.4)).clamp(0, 1), lm


def test_shifted_jaw_keeps_pose_and_is_poor_fit(model):
    c, cam, img, lm = _scene(model)
    bad = lm.clone()
    bad[:, :17] += torch.tensor(JAW_SHIFT, dtype=lm.dtype)
    cfg = FitConfig(landmark_iters=80, photo_iters=0, contour_marching=False)  # fixed-vertex landmarks
    clean = fit(model, img, lm, cfg, camera=cam)
    robust = fit(model, img, bad, cfg, camera=cam)
    plain = fit(model, img, bad, FitConfig(landmark_iters=80, photo_iters=0, contour_marching=False,
                                           landmark_loss="l2"), camera=cam)
    ypr_clean = yaw_pitch_roll_degrees(clean.coeffs.angles)
    ypr_robust = yaw_pitch_roll_degrees(robust.coeffs.angles)
    assert (ypr_robust - ypr_clean).abs().max() < 3.0, (ypr_robust, ypr_clean)
    assert (ypr_clean[:, 0] - c.angles[:, 1] * 180 / math.pi).abs().max() < 3.0
    # Without the robust loss the same landmarks wreck the pose.
    assert (yaw_pitch_roll_degrees(plain.coeffs.angles) - ypr_clean).abs().max() > 20.0
    for i in range(len(lm)):
        pose = tuple(float(x) for x in ypr_robust[i])
        q_bad = assess_fit(robust.landmarks2d[i], bad[i], pose, robust.coeffs.id[i])
        assert q_bad.status == STATUS_POOR and "17 of 68 landmarks" in q_bad.reason, q_bad
        q_clean = assess_fit(clean.landmarks2d[i], lm[i], tuple(float(x) for x in ypr_clean[i]), clean.coeffs.id[i])
        assert q_clean.status == STATUS_OK, q_clean


def _photo(tmp_path, model, shift_jaw: bool):
    c = model.sample(1, generator=torch.Generator().manual_seed(4), id_scale=0.6, tex_scale=0.6)
    c.angles[:, 1] = math.radians(20.0)
    c.trans[:, 2] = -4.0
    cam = PerspectiveCamera(focal=1015 * 320 / 224, cx=165.0, cy=155.0, image_size=(320, 320))
    from face3dkit.viz import render_faces

    Image.fromarray(render_faces(model, c, camera=cam, background=0.5)[0]).save(tmp_path / "face.png")
    with torch.no_grad():
        lm = model(c, camera=cam).landmarks2d[0].numpy().astype(np.float64)
    if shift_jaw:
        lm[:17] += JAW_SHIFT
    np.save(tmp_path / "face.npy", lm)
    return tmp_path / "face.png"


@pytest.mark.parametrize("shift_jaw", [False, True])
def test_reconstruct_marks_poor_fit_and_strict_exit(model, tmp_path, shift_jaw):
    from face3dkit._cli.face3dkit_cmd import main

    photo = _photo(tmp_path, model, shift_jaw)
    out = tmp_path / "out"
    args = ["reconstruct", str(photo), "-o", str(out), "--landmarks", "file", "--landmark-iters", "50", "--iters",
            "0", "--save", "pose", "--no-progress", "--contour", "3d"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output  # a poor fit is reported, not an error, unless --strict
    summary = json.loads((out / "summary.json").read_text())
    face = summary["faces_detail"][0]
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0] == ("image,face_index,yaw,pitch,roll,landmark_error_px,status,reason,folder,settings,finished_utc,"
                      "landmark_nme")
    done = json.loads((out / "face" / "face.done.json").read_text())
    if shift_jaw:
        assert face["status"] == "poor_fit" and "17 of 68 landmarks" in face["reason"], face
        assert summary["poor_fit"] == 1 and ",poor_fit," in csv[1] and done["status"] == "poor_fit"
        assert abs(face["yaw"] - 20.0) < 4.0  # the robust fit kept the pose
        assert "poor fit" in r.output
        r2 = CliRunner().invoke(main, [*args, "--strict", "--no-resume"])
        assert r2.exit_code == 3, r2.output
    else:
        assert face["status"] == "ok" and face["reason"] == "" and face["landmark_nme"] < 0.05
        assert summary["poor_fit"] == 0 and ",ok," in csv[1] and done["status"] == "ok"
        r2 = CliRunner().invoke(main, [*args, "--strict", "--no-resume"])
        assert r2.exit_code == 0, r2.output


# --- speed: photometric stage at reduced size, cached UV bake ----------------------------------


def test_photo_camera_scales_projection_and_area_averages():
    cam = PerspectiveCamera.for_image_size(224)
    img = torch.rand(2, 224, 224, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    small_cam, small, f = _photo_camera(cam, img, 112)
    assert f == 0.5 and small.shape == (2, 112, 112, 3) and small_cam.height_width == (112, 112)
    want = img.numpy().reshape(2, 112, 2, 112, 2, 3).mean((2, 4))
    np.testing.assert_allclose(small.numpy(), want, rtol=1e-12)
    pts = torch.randn(2, 50, 3, dtype=torch.float64)
    np.testing.assert_allclose(small_cam.project(pts).numpy(), 0.5 * cam.project(pts).numpy(), rtol=1e-12)
    assert _photo_camera(cam, img, None)[0] is cam and _photo_camera(cam, img, 224)[1] is img


def test_photometric_stage_at_half_size_matches_full(model):
    c, cam, img, lm = _scene(model, size=112, yaws=(-20.0, 25.0), seed=5)
    # 10 steps: with the closed-form starting light the photometric term moves the pose from the
    # first step (Adam: ~lr per step), so the few-step transient is compared past its start.
    half = fit(model, img, lm, FitConfig(landmark_iters=40, photo_iters=10, contour_marching=False, photo_size=56),
               camera=cam)
    full = fit(model, img, lm, FitConfig(landmark_iters=40, photo_iters=10, contour_marching=False,
                                         photo_size=None), camera=cam)
    assert half.render.shape == full.render.shape == (2, 112, 112, 3)  # the final render is full size
    ypr_h, ypr_f = yaw_pitch_roll_degrees(half.coeffs.angles), yaw_pitch_roll_degrees(full.coeffs.angles)
    assert (ypr_h - ypr_f).abs().max() < 1.0
    assert half.losses["photometric"][-1] < 1.15 * full.losses["photometric"][-1]
    assert set(half.timings) == {"init", "landmark", "photometric", "final_render"}


def test_uv_bake_cache_gives_the_uncached_texture(model):
    """The cached bake equals the direct one: rasterize in UV space, interpolate, fill, round."""
    from face3dkit.render import interpolate, rasterize
    from face3dkit.render import uv as export

    size = 128
    g = torch.Generator().manual_seed(0)
    cols = [torch.rand(model.mean_shape.shape[0], 3, generator=g) for _ in range(2)]
    uv = model.uv.float()
    screen = torch.stack([uv[:, 0] * size, (1 - uv[:, 1]) * size, torch.ones_like(uv[:, 0])], -1)[None]
    owner = export.uv_vertex_map(model.faces, model.face_uv, uv.shape[0])
    frags = rasterize(screen, model.face_uv, size)
    covered = (frags.pix_to_face[0].reshape(size, size, -1)[..., 0] >= 0).numpy()
    export._UV_RASTER_CACHE.clear()
    for col in cols:
        tex = interpolate(col[owner.clamp_min(0)][None], frags, model.face_uv)[0].clamp(0, 1).numpy()
        want = (export._fill_background(tex, covered) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(export.bake_uv_texture(col, model.faces, model.uv, model.face_uv, size), want)
    assert len(export._UV_RASTER_CACHE) == 1  # one layout, rasterized once


def test_adam_matches_torch_optim():
    from face3dkit.fit.fitter import _Adam

    g = torch.Generator().manual_seed(0)
    a = [torch.randn(3, 5, generator=g, dtype=torch.float64), torch.randn(7, generator=g, dtype=torch.float64)]
    b = [x.clone() for x in a]
    for x in a + b:
        x.requires_grad_(True)
    ours, ref = _Adam(a, lr=0.05), torch.optim.Adam(b, lr=0.05)
    for _ in range(25):
        for params, opt in ((a, ours), (b, ref)):
            opt.zero_grad(set_to_none=True)
            ((params[0] ** 3).sum() + (params[1].sin() * params[0][0, :1]).sum()).backward()
            opt.step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-13)


# --- eye landmark weight ------------------------------------------------------------------------


def test_fit_landmark_weights_compose_deng_contour_and_eyes():
    from face3dkit.fit import fit_landmark_weights

    want = np.ones(68)
    want[[28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67]] = 20.0  # Deng et al.: nose and inner mouth
    want[:17] *= 0.5
    want[36:48] *= 7.0
    got = fit_landmark_weights(FitConfig(contour_weight=0.5, eye_weight=7.0), dtype=torch.float64)
    np.testing.assert_array_equal(got.numpy(), want)
    want[36:48] /= 7.0  # the landmark stage: Deng et al.'s eyes
    got = fit_landmark_weights(FitConfig(contour_weight=0.5, eye_weight=7.0), dtype=torch.float64, stage="landmark")
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(fit_landmark_weights(FitConfig(), 5).numpy(), np.ones(5))
    with pytest.raises(ValueError, match="eye_weight"):
        FitConfig(eye_weight=-1.0)


def _eye_gap(lm: torch.Tensor) -> torch.Tensor:
    """(B,) mean lid gap of (B, 68, 2) landmarks (pairs 37-41, 38-40, 43-47, 44-46)."""
    return torch.stack([(lm[:, a] - lm[:, b]).norm(dim=-1) for a, b in ((37, 41), (38, 40), (43, 47), (44, 46))],
                       -1).mean(-1)


def test_eye_weight_keeps_the_detected_eye_opening_in_the_photometric_stage(model):
    """A photo with half-closed eyes and landmarks with wide-open ones (the lids of a real photo that
    the skin-attended photometric term cannot see): the eye weight decides which one wins."""
    names = list(model.exp_names)
    c, cam, _, _ = _scene(model, yaws=(0.0,))
    lids = face3dkit.Coefficients(**{k: v.clone() for k, v in c.as_dict().items()})
    c.exp[:, [names.index("eyeBlink_L"), names.index("eyeBlink_R")]] = 0.6
    lids.exp[:, [names.index("eyeWide_L"), names.index("eyeWide_R")]] = 1.0
    with torch.no_grad():
        img, _, cov, _ = render_coefficients(model, c, cam)
        lm_open = render_coefficients(model, lids, cam)[3]
    img = torch.where(cov > 0, img, torch.full_like(img, 0.4)).clamp(0, 1)
    gaps = {}
    for w in (1.0, 20.0):
        cfg = FitConfig(landmark_iters=60, photo_iters=30, contour_marching=False, eye_weight=w, photo_size=None)
        gaps[w] = float(_eye_gap(fit(model, img, lm_open, cfg, camera=cam).landmarks2d)[0])
    target = float(_eye_gap(lm_open)[0])
    # Measured: weight 1 closes the eyes to a third of the landmarks' gap, 20 keeps 85 % of it.
    assert gaps[1.0] < 0.5 * target, (gaps, target)
    assert abs(gaps[20.0] - target) < 0.25 * target, (gaps, target)


# --- the photometric stage's render ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "makehuman"])
def test_photometric_renderer_equals_the_full_render(name):
    """Only the front-face vertices (and their one-ring) carry gradients in the photometric stage; the
    image, the front-face mask and every coefficient gradient equal the full render's."""
    from face3dkit.fit.fitter import _PhotometricRenderer
    from face3dkit.losses import photometric_loss

    m = face3dkit.load_model(name)
    g = torch.Generator().manual_seed(4)
    c = m.sample(3, generator=g)
    c.angles[:, 1] = torch.tensor([-0.9, 0.0, 0.7])
    c.gamma[:, [2, 11, 20]] = 0.2
    if m.exp_range is not None:
        c.exp = torch.rand(3, m.n_exp, generator=g) * 0.4
    cam = PerspectiveCamera.for_image_size(96)
    target = torch.rand(3, 96, 96, 3, generator=g)
    out = {}
    for kind in ("full", "fast"):
        p = {k: v.detach().clone().requires_grad_(True) for k, v in c.as_dict().items()}
        cc = face3dkit.Coefficients(**p)
        img, mask = render_coefficients(m, cc, cam)[:2] if kind == "full" else _PhotometricRenderer(m)(cc, cam)
        photometric_loss(target, img, mask).backward()
        out[kind] = (img.detach() * mask, mask, {k: v.grad for k, v in p.items()})
    (img_a, mask_a, grad_a), (img_b, mask_b, grad_b) = out["full"], out["fast"]
    assert mask_a.sum() > 500
    assert torch.equal(mask_a, mask_b)
    assert torch.equal(img_a, img_b)
    for k in grad_a:
        torch.testing.assert_close(grad_b[k], grad_a[k], rtol=1e-5, atol=1e-7 * float(grad_a[k].abs().max()))


def test_model_rows_equal_the_sliced_full_evaluation(model):
    g = torch.Generator().manual_seed(0)
    c = model.sample(2, generator=g)
    c.exp = torch.rand(2, model.n_exp, generator=g)
    rows = torch.tensor([5, 0, 9000, 21000, 17])
    torch.testing.assert_close(model.rows(rows).shape(c.id, c.exp), model.shape(c.id, c.exp)[:, rows])
    torch.testing.assert_close(model.shape(c.id, c.exp, rows=rows), model.shape(c.id, c.exp)[:, rows])
    torch.testing.assert_close(model.albedo(c.tex, rows=rows), model.albedo(c.tex)[:, rows])
    torch.testing.assert_close(model.albedo(None, 3, rows=rows), model.mean_albedo[rows].expand(3, -1, -1))


def test_photometric_renderer_back_face_culling_keeps_the_default_models_pixels(model):
    """FitConfig.cull_backfaces: the default model's mesh is closed and consistently wound, so over
    a sweep of poses, identities and expressions dropping back faces leaves (almost) every
    front-face pixel and its colour as the full rasterization has them."""
    from face3dkit.fit.fitter import _PhotometricRenderer

    yaw, pitch = torch.meshgrid(torch.tensor([-80.0, -50, -25, 0, 25, 50, 80]), torch.tensor([-35.0, 0, 35]),
                                indexing="ij")
    n = yaw.numel()
    g = torch.Generator().manual_seed(2)
    c = model.sample(n, generator=g)
    c.angles = torch.stack([pitch.reshape(-1), yaw.reshape(-1), torch.zeros(n)], 1) * math.pi / 180
    c.exp = torch.rand(n, model.n_exp, generator=g) * 0.5
    cam = PerspectiveCamera.for_image_size(64)
    with torch.no_grad():
        img_a, mask_a = _PhotometricRenderer(model)(c, cam)
        img_b, mask_b = _PhotometricRenderer(model, cull_backfaces=True)(c, cam)
    differ = (mask_a != mask_b).sum() + ((img_a != img_b).any(-1, keepdim=True) & (mask_a > 0) & (mask_b > 0)).sum()
    assert mask_a.sum() > 20 * n * 50 and differ <= 1e-4 * mask_a.sum(), (int(differ), int(mask_a.sum()))


def test_photometric_renderer_reused_visibility_follows_the_current_vertices(model):
    """FitConfig.photo_raster_every: with the previous rasterization's visibility kept, every pixel
    that the same triangle covers in a fresh rasterization has the fresh render's colour (the
    barycentrics are recomputed from the moved vertices); only pixels near moved edges differ."""
    from face3dkit.fit.fitter import _PhotometricRenderer

    g = torch.Generator().manual_seed(5)
    c = model.sample(2, generator=g)
    c.angles[:, 1] = torch.tensor([-0.5, 0.3])
    c.gamma[:, [2, 11, 20]] = 0.2
    cam = PerspectiveCamera.for_image_size(64)
    r = _PhotometricRenderer(model, cull_backfaces=True)
    with torch.no_grad():
        img0, mask0 = r(c, cam)
        same_img, same_mask = r(c, cam, reuse=True)
        assert torch.equal(same_img, img0) and torch.equal(same_mask, mask0)
        stale_p2f = r._last[2].pix_to_face
        moved = face3dkit.Coefficients(**{k: v.clone() for k, v in c.as_dict().items()})
        moved.angles[:, 1] += 0.01  # about one Adam step of the photometric stage
        moved.trans[:, 0] += 0.002
        img_reuse, mask_reuse = r(moved, cam, reuse=True)
        assert torch.equal(mask_reuse, mask0)
        img_new, mask_new = _PhotometricRenderer(model, cull_backfaces=True)(moved, cam)
        fresh = _PhotometricRenderer(model, cull_backfaces=True)
        fresh(moved, cam)
        same_face = (fresh._last[2].pix_to_face == stale_p2f) & (mask_new[..., 0] > 0) & (mask0[..., 0] > 0)
    assert same_face.sum() > 0.5 * mask_new.sum()  # the triangles are smaller than a pixel here
    torch.testing.assert_close(img_reuse[same_face], img_new[same_face], rtol=0, atol=1e-5)
    # elsewhere the kept triangle's colours are extrapolated a fraction of a pixel: close, not equal
    both = (mask_new[..., 0] > 0) & (mask0[..., 0] > 0)
    err_reuse = (img_reuse - img_new).abs()[both].mean()
    err_stale = (img0 - img_new).abs()[both].mean()
    assert err_reuse < 0.5 * err_stale  # much closer to the moved render than the unmoved image is


def test_photometric_renderer_on_a_decimated_mesh_keeps_mask_and_colours(model):
    """FitConfig.photo_faces: the default model decimated to 10,000 triangles (its vertices a subset,
    front border, regions and holes kept) renders nearly the same front-face mask and colours as
    the full mesh over yaw -70..70 at the photometric stage's size."""
    from face3dkit.fit.fitter import _PhotometricRenderer
    from face3dkit.model import lod_faces

    g = torch.Generator().manual_seed(6)
    n = 6
    c = model.sample(n, generator=g)
    c.angles[:, 1] = torch.linspace(-1.2, 1.2, n)
    c.exp = (torch.rand(n, model.n_exp, generator=g) < 0.15).float() * 0.6
    c.gamma[:, [2, 11, 20]] = 0.2
    cam = PerspectiveCamera.for_image_size(64)
    faces = lod_faces(model, 10000)
    assert faces.shape[0] <= 10000 and int(faces.max()) < model.n_verts
    lod = _PhotometricRenderer(model, cull_backfaces=True, faces=faces)
    assert lod.rows.numel() + lod.others.rows.numel() == torch.unique(faces).numel()
    with torch.no_grad():
        img_a, mask_a = _PhotometricRenderer(model, cull_backfaces=True)(c, cam)
        img_b, mask_b = lod(c, cam)
    a, b = mask_a[..., 0] > 0, mask_b[..., 0] > 0
    iou = (a & b).sum() / (a | b).sum()
    diff = (img_a - img_b).abs().mean(-1)[a & b]
    assert iou > 0.99, float(iou)
    assert diff.mean() < 0.02, float(diff.mean())  # measured 0.007 (per channel; 0.58 mean intensity)


def test_fit_on_a_decimated_mesh_with_reused_visibility_matches_the_full_fit(model):
    """The fast photometric stage (64 px, 10,000-triangle mesh, rasterized every 4th step) recovers
    the renders' shape and landmarks as well as the default stage (112 px, full mesh, every step)."""
    g = torch.Generator().manual_seed(7)
    c = model.sample(3, generator=g, id_scale=0.7, tex_scale=0.7)
    c.angles[:, 1] = torch.tensor([-40.0, 0.0, 30.0]) * math.pi / 180
    c.gamma[:, [2, 11, 20]] = 0.25
    cam = PerspectiveCamera.for_image_size(224)
    with torch.no_grad():
        img, _, cov, lm = render_coefficients(model, c, cam)
    img = torch.where(cov > 0, img, torch.full_like(img, 0.4)).clamp(0, 1)
    base = FitConfig(landmark_convention="3d", landmark_iters=60, photo_iters=24)
    out = {}
    for name, cfg in (("full", base), ("fast", dataclasses.replace(base, photo_size=64, photo_faces=10000,
                                                                      photo_raster_every=4))):
        r = fit(model, img, lm, cfg)
        with torch.no_grad():
            shape_mm = 100 * (model.shape(r.coeffs.id, r.coeffs.exp) - model.shape(c.id, c.exp)).norm(dim=-1).mean(1)
        out[name] = (shape_mm, r.landmark_error, r.losses["photometric"])
    (s_full, l_full, _), (s_fast, l_fast, losses) = out["full"], out["fast"]
    assert losses[-1] < losses[0]
    assert (s_fast <= 1.1 * s_full + 0.2).all(), (s_fast, s_full)
    assert (l_fast <= l_full + 0.3).all(), (l_fast, l_full)
