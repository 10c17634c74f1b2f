"""Skin-colour Gaussian mixtures: shipped tables, direct density evaluation, fitting, attention."""

from __future__ import annotations

import importlib.resources
import json

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from face3dkit.losses import (
    GaussianMixtureModel,
    SkinColorModel,
    fit_skin_gmm,
    load_skin_model,
    skin_attention,
    skin_probability,
)


def _diag_mixture_density(x: np.ndarray, w, mu, var) -> np.ndarray:
    """sum_k w_k prod_c N(x_c; mu_kc, var_kc), written out (x: (N, 3))."""
    w, mu, var = np.asarray(w), np.asarray(mu), np.asarray(var)
    w = w / w.sum()
    d = x[:, None, :] - mu[None]  # (N, K, 3)
    norm = (2 * np.pi) ** 1.5 * np.sqrt(var.prod(-1))  # (K,)
    return (w * np.exp(-0.5 * (d**2 / var).sum(-1)) / norm).sum(-1)


# ------------------------------------------------------------------ shipped Jones-Rehg model
def test_shipped_jones_rehg_table():
    m = load_skin_model()
    assert m.name == "jones_rehg" and m.color_space == "rgb" and m.prior_skin == 0.5
    assert "Jones" in m.source and "Rehg" in m.source
    for g in (m.skin, m.nonskin):
        assert g.n_components == 16 and g.covariance_type == "diag"
        assert g.weights.sum() == pytest.approx(1.0, abs=1e-3)
        assert (g.covariances > 0).all()
    # spot values of the published table (first / last kernels of each class)
    np.testing.assert_array_equal(m.skin.means[0], [73.53, 29.94, 17.76])
    np.testing.assert_array_equal(m.skin.covariances[0], [765.40, 121.44, 112.80])
    assert m.skin.weights[10] == 0.1100
    np.testing.assert_array_equal(m.nonskin.means[0], [254.37, 254.41, 253.82])
    np.testing.assert_array_equal(m.nonskin.covariances[5], [2502.24, 1383.53, 237.18])
    assert m.nonskin.weights[9] == 0.1189


def test_typical_skin_and_blue():
    rgb = torch.tensor([[[[224, 172, 105], [0, 0, 255]]]], dtype=torch.float32)  # (1, 1, 2, 3)
    p = skin_probability(rgb / 255.0)
    assert p.shape == (1, 1, 2)
    assert p[0, 0, 0] > 0.5 and p[0, 0, 1] < 0.5
    # 0-255 floats, uint8 and explicit range all agree
    torch.testing.assert_close(skin_probability(rgb), p)
    torch.testing.assert_close(skin_probability(rgb.to(torch.uint8)), p)
    torch.testing.assert_close(skin_probability(rgb / 255.0, input_range=1.0), p)


def test_probability_matches_direct_numpy_evaluation():
    m = load_skin_model("jones_rehg")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(200, 3))
    x[:50] = rng.normal([200, 140, 110], 15, size=(50, 3)).clip(0, 255)  # skin-like colours
    ps = _diag_mixture_density(x, m.skin.weights, m.skin.means, m.skin.covariances)
    pn = _diag_mixture_density(x, m.nonskin.weights, m.nonskin.means, m.nonskin.covariances)
    for prior in (0.5, 0.3):
        expected = prior * ps / (prior * ps + (1 - prior) * pn)
        got = skin_probability(torch.tensor(x).view(4, 5, 10, 3), m, prior=prior, input_range=255)
        assert got.shape == (4, 5, 10) and got.dtype == torch.float64
        np.testing.assert_allclose(got.reshape(-1).numpy(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        m.skin.prob(torch.tensor(x)).numpy(), ps, rtol=1e-9
    )
    # float32 path agrees to float32 precision
    got32 = skin_probability(torch.tensor(x, dtype=torch.float32), m, input_range=255)
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), 0.5 * ps / (0.5 * ps + 0.5 * pn), atol=2e-5)


# ------------------------------------------------------------------ shipped Deng et al. model
def test_shipped_deng2019_model_matches_their_published_form():
    """Evaluate Deng et al.'s GMMs exactly as their skin.py does (published inverse covariances
    and determinants, YCbCr via their matrix, prior 0.8) and compare."""
    m = load_skin_model("deng2019")
    assert m.color_space == "ycbcr_bt601" and m.prior_skin == 0.8
    asset = importlib.resources.files("face3dkit._assets") / "skin_gmm_deng2019.json"
    raw = json.loads(asset.read_text(encoding="utf-8"))

    def lh(data, g):
        out = np.zeros(len(data))
        for w, mu, inv, det in zip(g["weights"], g["means"], g["precisions_published"],
                                   g["covariance_determinants_published"], strict=True):
            d = data - np.array(mu)
            power = -0.5 * ((d @ np.array(inv)) * d).sum(1)
            out += w * np.exp(power) / ((2 * np.pi) ** 1.5 * det**0.5)
        return out

    for g in ("skin", "nonskin"):
        dets = np.linalg.det(getattr(m, g).covariances)
        np.testing.assert_allclose(dets, raw[g]["covariance_determinants_published"], rtol=1e-6)
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 255, size=(300, 3))
    mat = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112], [112, -93.786, -18.214]])
    ycc = rgb @ mat.T / 255.0 + np.array([16.0, 128.0, 128.0])
    t1, t2 = 0.8 * lh(ycc, raw["skin"]), 0.2 * lh(ycc, raw["nonskin"])
    keep = (t1 + t2) > 1e-300  # their formula is 0/0 far from both mixtures
    expected = t1[keep] / (t1[keep] + t2[keep])
    got = skin_probability(torch.tensor(rgb), "deng2019", input_range=255).numpy()[keep]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    p = skin_probability(torch.tensor([[224.0, 172.0, 105.0], [0.0, 0.0, 255.0]]), "deng2019")
    assert p[0] > 0.5 and p[1] < 0.5


# ------------------------------------------------------------------ container + attention
def test_full_covariance_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(2, 3, 3))
    cov = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(3)
    g = GaussianMixtureModel([0.3, 0.7], rng.normal(size=(2, 3)), cov, "full")
    x = rng.normal(size=(50, 3))
    expected = np.log(
        0.3 * multivariate_normal(g.means[0], cov[0]).pdf(x)
        + 0.7 * multivariate_normal(g.means[1], cov[1]).pdf(x)
    )
    np.testing.assert_allclose(g.log_prob(torch.tensor(x)).numpy(), expected, rtol=1e-10)


def test_json_round_trips(tmp_path):
    m = load_skin_model("deng2019")
    path = tmp_path / "model.json"
    m.to_json(path)
    m2 = SkinColorModel.from_json(path)
    assert m2.name == m.name and m2.prior_skin == m.prior_skin and m2.color_space == m.color_space
    np.testing.assert_array_equal(m2.skin.covariances, m.skin.covariances)
    g = load_skin_model().nonskin
    g2 = GaussianMixtureModel.from_json(g.to_json())
    np.testing.assert_array_equal(g2.means, g.means)
    np.testing.assert_array_equal(g2.weights, g.weights)
    with pytest.raises(ValueError):
        GaussianMixtureModel([1.0], [[0.0, 0.0, 0.0]], [[1.0, -1.0, 1.0]], "diag")


def test_skin_attention_modes():
    img = torch.rand(2, 4, 5, 3, dtype=torch.float64)
    img[0, 0, 0] = torch.tensor([224, 172, 105]) / 255.0
    p = skin_probability(img)
    a = skin_attention(img)
    assert a.shape == (2, 4, 5)
    torch.testing.assert_close(a[p > 0.5], torch.ones_like(a[p > 0.5]))
    torch.testing.assert_close(a[p <= 0.5], p[p <= 0.5])
    assert a[0, 0, 0] == 1.0
    torch.testing.assert_close(skin_attention(img, mode="posterior"), p)
    with pytest.raises(ValueError):
        skin_attention(img, mode="other")


# ------------------------------------------------------------------ fitting
def test_fit_recovers_known_two_component_mixture():
    true = GaussianMixtureModel(
        [0.35, 0.65], [[200.0, 140.0, 110.0], [90.0, 60.0, 40.0]],
        [[120.0, 60.0, 80.0], [300.0, 150.0, 90.0]], "diag",
    )
    x = true.sample(6000, seed=0)
    fit = GaussianMixtureModel.fit(x, n_components=2, covariance_type="diag", seed=0)
    order = np.argsort(-fit.means[:, 0])
    np.testing.assert_allclose(fit.weights[order], true.weights, atol=0.02)
    np.testing.assert_allclose(fit.means[order], true.means, atol=1.5)
    np.testing.assert_allclose(fit.covariances[order], true.covariances, rtol=0.12)


def test_fit_skin_gmm_end_to_end():
    skin_true = GaussianMixtureModel([0.5, 0.5], [[210, 150, 120], [160, 100, 70]],
                                     [[150, 150, 150], [200, 150, 120]], "diag")
    bg_true = GaussianMixtureModel([0.5, 0.5], [[40, 60, 200], [60, 160, 60]],
                                   [[300, 300, 300], [250, 250, 250]], "diag")
    model = fit_skin_gmm(skin_true.sample(2000, 1), bg_true.sample(2000, 2),
                         n_components=2, covariance_type="full", seed=0)
    assert model.skin.covariance_type == "full" and model.skin.n_components == 2
    probe = torch.tensor([[210.0, 150.0, 120.0], [40.0, 60.0, 200.0]]) / 255.0
    p = skin_probability(probe, model)
    assert p[0] > 0.99 and p[1] < 0.01
    # fitting in [0, 1] inputs gives the same mixtures (stored in 0-255 units)
    model01 = fit_skin_gmm(skin_true.sample(2000, 1) / 255, bg_true.sample(2000, 2) / 255,
                           n_components=2, covariance_type="full", seed=0, input_range=1.0)
    np.testing.assert_allclose(model01.skin.means, model.skin.means, rtol=1e-6)
