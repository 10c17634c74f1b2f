"""Closed-form light and albedo (face3dkit.fit.appearance, face3dkit.shading.solve_sh_lighting):
the solvers against numpy's least squares on the stacked (ridge-augmented) system, recovery of a
known light from a render, and the fit starting from it."""

import math

import numpy as np
import pytest
import torch

import face3dkit
from face3dkit.fit import FitConfig, fit, render_coefficients
from face3dkit.fit.appearance import closed_form_appearance, solve_albedo_coefficients
from face3dkit.fit.fitter import _photo_camera, _PhotometricRenderer
from face3dkit.geometry import PerspectiveCamera
from face3dkit.losses import photometric_loss
from face3dkit.shading import AMBIENT_INIT, solve_sh_lighting


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def _stacked_lstsq(a: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float, prior: np.ndarray,
                   total: float | None = None) -> np.ndarray:
    """argmin_x sum_n w_n (a_n x - y_n)^2 / W + ridge |x - prior|^2 (W = ``total`` or sum w) via
    numpy's lstsq on the stacked system [sqrt(w / W) a; sqrt(ridge) I] x = [sqrt(w / W) y; sqrt(ridge) prior]."""
    s = np.sqrt(w / (w.sum() if total is None else total))[:, None]
    k = a.shape[1]
    lhs = np.concatenate([s * a, math.sqrt(ridge) * np.eye(k)])
    rhs = np.concatenate([s[:, 0] * y, math.sqrt(ridge) * prior])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def test_solve_sh_lighting_matches_numpy():
    rng = np.random.default_rng(0)
    b, n, ridge = 2, 60, 1e-3
    feat = rng.normal(size=(b, n, 3, 9))
    target = rng.uniform(size=(b, n, 3))
    w = rng.uniform(size=(b, n)) * (rng.uniform(size=(b, n)) > 0.3)
    got = solve_sh_lighting(torch.tensor(feat), torch.tensor(target), torch.tensor(w), ridge).numpy()
    assert got.shape == (b, 27)
    prior = np.zeros(9)
    prior[0] = AMBIENT_INIT
    for i in range(b):
        for c in range(3):
            want = _stacked_lstsq(feat[i, :, c], target[i, :, c], w[i], ridge, prior) - prior
            np.testing.assert_allclose(got[i, 9 * c:9 * c + 9], want, rtol=1e-8, atol=1e-10)


def test_solve_albedo_coefficients_matches_numpy():
    rng = np.random.default_rng(1)
    b, n, k, ridge = 2, 40, 5, 1e-3
    feat = rng.normal(size=(b, n, 3, k))
    base = rng.uniform(size=(b, n, 3))
    target = rng.uniform(size=(b, n, 3))
    w = rng.uniform(size=(b, n))
    got = solve_albedo_coefficients(*(torch.tensor(x) for x in (feat, base, target, w)), ridge=ridge).numpy()
    for i in range(b):
        a = feat[i].reshape(n * 3, k)
        want = _stacked_lstsq(a, (target[i] - base[i]).reshape(-1), np.repeat(w[i], 3), ridge, np.zeros(k),
                              total=w[i].sum())  # the weight is per sample, shared by its 3 colours
        np.testing.assert_allclose(got[i], want, rtol=1e-8, atol=1e-10)


def test_solvers_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, N, 3, 9\)"):
        solve_sh_lighting(torch.zeros(1, 5, 3, 8), torch.zeros(1, 5, 3), torch.ones(1, 5))
    with pytest.raises(ValueError, match="weights"):
        solve_albedo_coefficients(torch.zeros(1, 5, 3, 2), torch.zeros(1, 5, 3), torch.zeros(1, 5, 3), torch.ones(2, 5))


def _scene(model, gamma_seed=0, tex_scale=0.0):
    g = torch.Generator().manual_seed(gamma_seed)
    c = model.sample(2, generator=g, id_scale=0.7)
    c.tex = c.tex * tex_scale
    c.angles[:, 1] = torch.tensor([-0.4, 0.5])
    c.gamma = 0.15 * torch.randn(2, 27, generator=g)
    cam = PerspectiveCamera.for_image_size(96)
    return c, cam


def test_closed_form_appearance_recovers_a_known_light(model):
    """With the mean albedo the render is linear in the light: the solve gives it back (float64:
    the light's higher bands are weakly determined, so float32 rounding moves them by ~1e-3)."""
    m64 = face3dkit.load_model("default").double()
    c, cam = _scene(m64)
    c = face3dkit.Coefficients(**{k: v.double() for k, v in c.as_dict().items()})
    r = _PhotometricRenderer(m64)
    with torch.no_grad():
        img, mask = r(c, cam)
    gamma, tex = r.appearance(c, cam, img, torch.ones_like(mask), ridge=1e-12)
    assert mask.sum() > 1000
    torch.testing.assert_close(gamma, c.gamma, atol=1e-7, rtol=0)
    torch.testing.assert_close(tex, torch.zeros_like(tex), atol=1e-7, rtol=0)


def test_closed_form_appearance_lowers_the_photometric_loss(model):
    """Albedo and light unknown: the closed-form start is far closer than Deng et al.'s (ambient
    light, mean albedo) and than the mean albedo under the best light alone."""
    c, cam = _scene(model, gamma_seed=3, tex_scale=1.0)
    r = _PhotometricRenderer(model)
    with torch.no_grad():
        img, mask = r(c, cam)
    att = torch.ones_like(mask)
    gamma, tex = r.appearance(c, cam, img, att)

    def loss(gamma_, tex_):
        cc = face3dkit.Coefficients(**{**c.as_dict(), "gamma": gamma_, "tex": tex_})
        with torch.no_grad():
            return float(photometric_loss(img, r(cc, cam)[0], mask))

    deng = loss(torch.zeros_like(c.gamma), torch.zeros_like(c.tex))
    # The light alone (the first solve): the same function with a zero-width albedo basis.
    sh_only = closed_form_appearance(*_inputs(r, c, cam, img, att, no_basis=True))[0]
    light_only = loss(sh_only, torch.zeros_like(c.tex))
    both = loss(gamma, tex)
    assert both < 0.9 * light_only and light_only < 0.1 * deng, (both, light_only, deng)


def _inputs(r, c, cam, img, att, no_basis=False):
    """closed_form_appearance's arguments as _PhotometricRenderer.appearance builds them."""
    from face3dkit.geometry import rotate
    from face3dkit.model.morphable import vertex_normals
    from face3dkit.shading import sh_basis

    with torch.no_grad():
        pts, rot, _, front, frags = r._raster(c, cam)
        sh = sh_basis(rotate(vertex_normals(pts, r.ring_faces), rot))
        face_id = frags.pix_to_face.clamp_min(0) % r.faces.shape[0]
        corners = torch.where(front[..., None], r.faces[face_id], 0).reshape(2, -1, 3)
    basis = r.sub.albedo_basis[..., :0] if no_basis else r.sub.albedo_basis
    w = (att[..., 0] * front).reshape(2, -1)
    return sh, r.sub.mean_albedo, basis, corners, frags.bary.clamp_min(0).reshape(2, -1, 3), img.reshape(2, -1, 3), w


def test_fit_starts_the_photometric_stage_from_the_closed_form_appearance(model):
    c, cam = _scene(model, gamma_seed=5, tex_scale=0.7)
    with torch.no_grad():
        img, _, cov, lm = render_coefficients(model, c, cam)
    img = torch.where(cov > 0, img, torch.full_like(img, 0.4)).clamp(0, 1)
    base = dict(landmark_iters=40, photo_iters=1, contour_marching=False, photo_size=None)
    with_init = fit(model, img, lm, FitConfig(**base), camera=cam)
    without = fit(model, img, lm, FitConfig(**base, appearance_init=False), camera=cam)
    assert with_init.losses["photometric"][0] < 0.5 * without.losses["photometric"][0]
    # Given starting coefficients (an R-Net's): the closed form replaces their light and albedo too...
    start = face3dkit.Coefficients(**{k: v.clone() for k, v in with_init.coeffs.as_dict().items()})
    start.gamma.zero_()
    start.tex.zero_()
    no_lm = {**base, "landmark_iters": 0}
    a = fit(model, img, lm, FitConfig(**no_lm), camera=cam, init=start)
    b = fit(model, img, lm, FitConfig(**no_lm, appearance_init=False), camera=cam, init=start)
    assert a.losses["photometric"][0] < 0.5 * b.losses["photometric"][0]
    # ...unless light or albedo is held fixed: then both are kept as given, as without it.
    for held in (("tex",), ("gamma",)):
        a = fit(model, img, lm, FitConfig(**no_lm), camera=cam, init=start, fixed=held)
        b = fit(model, img, lm, FitConfig(**no_lm, appearance_init=False), camera=cam, init=start, fixed=held)
        assert a.losses["photometric"] == b.losses["photometric"]
        assert torch.equal(getattr(a.coeffs, held[0]), getattr(start, held[0]))


def test_photo_camera_images_feed_the_appearance_at_half_size(model):
    """On the area-averaged half-size image (the photometric stage's, not exactly a render of any
    light) each solve of the alternation lowers the squared error, so the closed-form appearance
    renders the image at least as well as the true light (the light itself is weakly determined in
    its higher bands, so the render is what is compared)."""
    c, cam = _scene(model, gamma_seed=7)
    r = _PhotometricRenderer(model)
    with torch.no_grad():
        img = render_coefficients(model, c, cam)[0]
    small_cam, small, _ = _photo_camera(cam, img, 48)
    gamma, tex = r.appearance(c, small_cam, small, torch.ones_like(small[..., :1]), ridge=1e-12)

    def sq_err(gamma_, tex_):
        cc = face3dkit.Coefficients(**{**c.as_dict(), "gamma": gamma_, "tex": tex_})
        with torch.no_grad():
            out, mask = r(cc, small_cam)
        return float((((out - small) ** 2).sum(-1, keepdim=True) * mask).sum() / mask.sum()), float(mask.sum())

    err_solved, n = sq_err(gamma, tex)
    err_true, _ = sq_err(c.gamma, c.tex)
    assert n > 500 and 0 < err_solved <= err_true * (1 + 1e-4), (err_solved, err_true)
