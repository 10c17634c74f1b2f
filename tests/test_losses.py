"""Deng et al. 2019 losses against hand computations on tiny tensors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from face3dkit.losses import (
    DENG_HIGH_WEIGHT_INDICES,
    LandmarkLoss,
    LossWeights,
    PerceptualLoss,
    PhotometricLoss,
    ReflectanceLoss,
    coefficient_regularization,
    gamma_regularization,
    identity_features,
    landmark_loss,
    landmark_weights,
    perceptual_loss,
    photometric_loss,
    reflectance_loss,
    warp_affine_crop,
)

RNG = np.random.default_rng(1234)


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


# ---------------------------------------------------------------------------- weights
def test_loss_weights_defaults_and_released_code():
    w = LossWeights()
    assert (w.photometric, w.landmark, w.perceptual, w.coefficient) == (1.9, 1.6e-3, 0.2, 3e-4)
    assert (w.coef_id, w.coef_exp, w.coef_tex, w.reflectance, w.gamma) == (1.0, 0.8, 1.7e-3, 5, 10)
    assert LossWeights.paper() == w
    rc = LossWeights.released_code()
    assert rc.photometric == 1.92 and rc.coef_tex == 1.7e-2 and rc.landmark == 1.6e-3
    total, parts = w.combine({"photometric": torch.tensor(2.0), "landmark": torch.tensor(100.0)})
    assert parts["photometric"].item() == pytest.approx(3.8)
    assert total.item() == pytest.approx(3.8 + 0.16)
    with pytest.raises(KeyError):
        w.combine({"nonsense": torch.tensor(1.0)})


# ---------------------------------------------------------------------------- photometric
def test_photometric_hand_computed():
    img = RNG.random((2, 2, 3, 3))
    ren = RNG.random((2, 2, 3, 3))
    mask = (RNG.random((2, 2, 3, 1)) > 0.3).astype(float)
    att = RNG.random((2, 2, 3, 1))
    eps = 1e-6
    dist = np.sqrt(eps + ((img - ren) ** 2).sum(-1))  # (2, 2, 3): Euclidean norm, not squared
    w = (mask * att)[..., 0]
    expected = (dist * w).sum() / max(w.sum(), 1.0)
    got = photometric_loss(_t(img), _t(ren), _t(mask), _t(att))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # (B, H, W) masks are accepted too; no attention == attention 1
    got2 = photometric_loss(_t(img), _t(ren), _t(mask[..., 0]), _t(att[..., 0]))
    assert got2.item() == pytest.approx(expected, rel=1e-12)
    no_att = (dist * mask[..., 0]).sum() / max(mask.sum(), 1.0)
    assert PhotometricLoss()(_t(img), _t(ren), _t(mask)).item() == pytest.approx(no_att)


def test_photometric_small_mask_clamps_denominator_and_grad_is_finite():
    img = np.zeros((1, 1, 2, 3))
    ren = np.zeros((1, 1, 2, 3))
    ren[0, 0, 0] = [0.3, 0.4, 0.0]  # distance 0.5 at pixel 0, 0 at pixel 1
    mask = np.array([[[[0.25], [0.25]]]])
    render = _t(ren, grad=True)
    loss = photometric_loss(_t(img), render, _t(mask))
    expected = (0.25 * np.sqrt(1e-6 + 0.25) + 0.25 * np.sqrt(1e-6)) / 1.0  # max(0.5, 1) = 1
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert torch.isfinite(render.grad).all()  # eps keeps d sqrt finite where images agree
    assert render.grad[0, 0, 1].abs().sum() == 0


def test_photometric_shape_errors():
    with pytest.raises(ValueError):
        photometric_loss(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 3))


# ---------------------------------------------------------------------------- landmarks
def test_landmark_weight_indices_exact():
    w = landmark_weights()
    assert w.shape == (68,)
    assert set(torch.nonzero(w == 20).flatten().tolist()) == {28, 29, 30, *range(60, 68)}
    assert DENG_HIGH_WEIGHT_INDICES == (28, 29, 30, 60, 61, 62, 63, 64, 65, 66, 67)
    assert (w == 1).sum() == 57 and w.sum() == 57 + 11 * 20


def test_landmark_loss_hand_computed():
    pred = RNG.random((3, 68, 2)) * 224
    gt = pred + RNG.normal(0, 2, (3, 68, 2))
    w = np.ones(68)
    w[28:31] = 20
    w[-8:] = 20
    expected = (((pred - gt) ** 2).sum(-1) * w).sum() / (3 * 68)
    p = _t(pred, grad=True)
    got = landmark_loss(p, _t(gt))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    assert torch.isfinite(p.grad).all()
    assert LandmarkLoss()(p.detach().float(), _t(gt).float()).item() == pytest.approx(
        expected, rel=1e-5
    )
    # per-sample weights (B, N)
    wb = RNG.random((3, 68))
    expected_b = (((pred - gt) ** 2).sum(-1) * wb).sum() / (3 * 68)
    assert landmark_loss(_t(pred), _t(gt), _t(wb)).item() == pytest.approx(expected_b)


# ---------------------------------------------------------------------------- regularisers
def test_coefficient_regularization_hand_computed():
    a, b, d = RNG.normal(size=(2, 80)), RNG.normal(size=(2, 64)), RNG.normal(size=(2, 80))
    expected = ((a**2).sum() + 0.8 * (b**2).sum() + 1.7e-3 * (d**2).sum()) / 2
    ta = _t(a, grad=True)
    got = coefficient_regularization(ta, _t(b), _t(d))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    np.testing.assert_allclose(ta.grad.numpy(), a)  # d/da sum(a^2)/2
    lw = LossWeights.released_code()
    got2 = coefficient_regularization(_t(a), _t(b), _t(d), lw.coef_id, lw.coef_exp, lw.coef_tex)
    assert got2.item() == pytest.approx(((a**2).sum() + 0.8 * (b**2).sum()
                                         + 1.7e-2 * (d**2).sum()) / 2)


def test_gamma_regularization_hand_computed():
    g = RNG.normal(size=(2, 27))
    g3 = g.reshape(2, 3, 9)  # (R, G, B) x 9
    expected = ((g3 - g3.mean(1, keepdims=True)) ** 2).mean()
    assert gamma_regularization(_t(g)).item() == pytest.approx(expected, rel=1e-12)
    # monochrome light is free
    mono = np.tile(RNG.normal(size=(1, 1, 9)), (2, 3, 1)).reshape(2, 27)
    assert gamma_regularization(_t(mono)).item() == pytest.approx(0.0, abs=1e-15)


def test_reflectance_loss_matches_deng_formula():
    tex = RNG.random((2, 7, 3))
    mask = np.array([1, 1, 0, 1, 0, 1, 1], dtype=float)
    m = mask.reshape(1, 7, 1)
    mean = (m * tex).sum(1, keepdims=True) / mask.sum()
    expected = (((tex - mean) * m) ** 2).sum() / (2 * mask.sum())
    t = _t(tex, grad=True)
    got = reflectance_loss(t, _t(mask))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    got.backward()
    assert torch.isfinite(t.grad).all() and (t.grad[:, mask == 0] == 0).all()
    # a (B, N) mask equal for both samples gives the same value; module form too
    assert reflectance_loss(_t(tex), _t(np.stack([mask, mask]))).item() == pytest.approx(expected)
    assert ReflectanceLoss(_t(mask))(_t(tex)).item() == pytest.approx(expected)
    # constant albedo on the skin region has zero loss
    flat = tex.copy()
    flat[:, mask == 1] = 0.6
    assert reflectance_loss(_t(flat), _t(mask)).item() == pytest.approx(0.0, abs=1e-15)


# ---------------------------------------------------------------------------- perceptual
def test_perceptual_loss_hand_computed():
    a, b = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    ta = _t(a, grad=True)
    got = perceptual_loss(ta, _t(b))
    assert got.item() == pytest.approx((1 - cos).sum() / 3, rel=1e-12)
    got.backward()
    assert torch.isfinite(ta.grad).all()
    assert perceptual_loss(_t(a), _t(a)).item() == pytest.approx(0.0, abs=1e-12)


def test_warp_affine_crop_translation_and_identity():
    img = torch.arange(2 * 1 * 5 * 6, dtype=torch.float64).reshape(2, 1, 5, 6)
    eye = torch.tensor([[1.0, 0, 0], [0, 1, 0]], dtype=torch.float64)
    for half in (False, True):
        out = warp_affine_crop(img, eye, (5, 6), half_pixel_centers=half)
        torch.testing.assert_close(out, img)
    # dst = src - (2, 1): out[v, u] = img[v + 1, u + 2], zeros outside
    M = torch.tensor([[1.0, 0, -2], [0, 1, -1]], dtype=torch.float64).expand(2, 2, 3)
    out = warp_affine_crop(img, M, 4)
    torch.testing.assert_close(out[:, :, :4, :4], img[:, :, 1:5, 2:6])
    # scale 2 about the origin with integer pixel centres: out[v, u] = img[v / 2, u / 2]
    S = torch.tensor([[2.0, 0, 0], [0, 2, 0]], dtype=torch.float64)
    out = warp_affine_crop(img, S, 3)
    expected = 0.5 * (img[:, :, 0, 0] + img[:, :, 0, 1])  # u = 1 -> x = 0.5
    torch.testing.assert_close(out[:, :, 0, 1], expected)


def test_warp_affine_crop_matches_kornia():
    kornia = pytest.importorskip("kornia")
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 40, 36, generator=g, dtype=torch.float64)
    M = torch.tensor(
        [[[0.9, 0.2, -5.0], [-0.15, 1.1, 3.0]], [[1.2, 0.0, -10.0], [0.0, 1.2, -7.0]]],
        dtype=torch.float64,
    )
    ref = kornia.geometry.warp_affine(img, M, dsize=(24, 24))
    torch.testing.assert_close(warp_affine_crop(img, M, 24), ref)


class _TinyNet(nn.Module):
    """A stand-in recognition net: (B, 3, 16, 16) -> (B, 8), with BatchNorm to test eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


def test_perceptual_module_with_network():
    torch.manual_seed(0)
    net = _TinyNet().double()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
    loss_fn = PerceptualLoss(net, input_size=16)
    loss_fn.train()  # the recognition net must stay frozen in eval mode
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    img = torch.rand(2, 20, 20, 3, dtype=torch.float64)
    render = torch.rand(2, 20, 20, 3, dtype=torch.float64, requires_grad=True)
    M = torch.tensor([[0.8, 0.0, 0.0], [0.0, 0.8, 0.0]], dtype=torch.float64).expand(2, 2, 3)
    loss = loss_fn(img, render, M)
    # reference: crop, map to [-1, 1], embed, 1 - cosine
    with torch.no_grad():
        xa = 2 * warp_affine_crop(img.permute(0, 3, 1, 2), M, 16) - 1
        xb = 2 * warp_affine_crop(render.permute(0, 3, 1, 2), M, 16) - 1
        fa, fb = net(xa).numpy(), net(xb).numpy()
    cos = (fa * fb).sum(1) / np.linalg.norm(fa, axis=1) / np.linalg.norm(fb, axis=1)
    assert loss.item() == pytest.approx((1 - cos).mean(), rel=1e-10)
    feats = identity_features(net, img, M, 16)
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(2, dtype=torch.float64))
    loss.backward()
    assert render.grad is not None and torch.isfinite(render.grad).all()
    assert render.grad.abs().sum() > 0
    # identical inputs -> 0
    assert loss_fn(img, img, M).item() == pytest.approx(0.0, abs=1e-12)


def test_perceptual_module_disabled_warns_once():
    loss_fn = PerceptualLoss()
    assert not loss_fn.enabled
    img = torch.rand(1, 8, 8, 3)
    M = torch.eye(2, 3).unsqueeze(0)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out1 = loss_fn(img, img, M)
        out2 = loss_fn(img, img, M)
    msgs = [str(r.message) for r in rec if issubclass(r.category, UserWarning)]
    assert len(msgs) == 1 and "perceptual term is off" in msgs[0]
    assert out1.item() == 0.0 and out2.item() == 0.0 and out1.dtype == img.dtype
    with pytest.raises(ValueError):
        PerceptualLoss(None, enabled=True)


def test_losses_follow_dtype():
    for dt in (torch.float32, torch.float64):
        img = torch.rand(1, 2, 2, 3, dtype=dt)
        assert photometric_loss(img, img * 0.5, torch.ones(1, 2, 2, 1, dtype=dt)).dtype == dt
        lm = torch.rand(2, 1, 68, 2, dtype=dt)
        assert landmark_loss(lm[0], lm[1]).dtype == dt
        assert reflectance_loss(torch.rand(1, 4, 3, dtype=dt), torch.ones(4)).dtype == dt
