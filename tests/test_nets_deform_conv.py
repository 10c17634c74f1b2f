"""Deformable convolution v1/v2 against plain conv2d and a brute-force numpy reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from face3dkit.nets import DeformConv2d, DeformConv2dPack, ModulatedDeformConv2dPack, deform_conv2d


def _bilinear_zero_pad(img: np.ndarray, y: float, x: float) -> float:
    """torchvision's deform-conv bilinear sample of a (H, W) map: 0 outside (-1, H) x (-1, W),
    out-of-range corners contribute 0."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    ly, lx = y - y0, x - x0
    val = 0.0
    for yy, xx, wt in (
        (y0, x0, (1 - ly) * (1 - lx)),
        (y0, x0 + 1, (1 - ly) * lx),
        (y0 + 1, x0, ly * (1 - lx)),
        (y0 + 1, x0 + 1, ly * lx),
    ):
        if 0 <= yy < h and 0 <= xx < w:
            val += wt * img[yy, xx]
    return val


def _deform_conv_bruteforce(inp, offset, weight, bias, stride, pad, dil, mask):
    b, c, h, w = inp.shape
    o, cpg, kh, kw = weight.shape
    groups = c // cpg
    sh, sw = stride
    ph, pw = pad
    dh, dw = dil
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    k = kh * kw
    g_off = offset.shape[1] // (2 * k)
    out = np.zeros((b, o, ho, wo))
    for n, oc, y, x in itertools.product(range(b), range(o), range(ho), range(wo)):
        g = oc // (o // groups)
        acc = 0.0 if bias is None else bias[oc]
        for ci in range(cpg):
            cin = g * cpg + ci
            og = cin // (c // g_off)
            for i, j in itertools.product(range(kh), range(kw)):
                kk = i * kw + j
                dy = offset[n, og * 2 * k + 2 * kk, y, x]
                dx = offset[n, og * 2 * k + 2 * kk + 1, y, x]
                py = y * sh - ph + i * dh + dy
                px = x * sw - pw + j * dw + dx
                v = _bilinear_zero_pad(inp[n, cin], py, px)
                if mask is not None:
                    v *= mask[n, og * k + kk, y, x]
                acc += weight[oc, ci, i, j] * v
        out[n, oc, y, x] = acc
    return out


CASES = [
    # (C_in, C_out, k, stride, pad, dil, groups, offset_groups, modulated)
    (2, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False),
    (4, 2, (3, 2), (2, 1), (1, 0), (1, 2), 2, 2, True),
    (4, 4, (2, 2), (1, 2), (0, 1), (2, 1), 1, 4, True),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_bruteforce_numpy(case):
    cin, cout, (kh, kw), stride, pad, dil, groups, g_off, modulated = case
    g = torch.Generator().manual_seed(CASES.index(case))
    b, h, w = 2, 5, 6
    inp = torch.randn(b, cin, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(cout, cin // groups, kh, kw, generator=g, dtype=torch.float64)
    bias = torch.randn(cout, generator=g, dtype=torch.float64)
    ho = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    # offsets up to +-2.5 px: many samples fall partly or wholly outside the image
    offset = torch.rand(b, 2 * g_off * kh * kw, ho, wo, generator=g, dtype=torch.float64)
    offset = (offset - 0.5) * 5
    mask = torch.rand(b, g_off * kh * kw, ho, wo, generator=g, dtype=torch.float64)
    mask = mask if modulated else None
    out = deform_conv2d(inp, offset, weight, bias, stride, pad, dil, mask)
    ref = _deform_conv_bruteforce(
        inp.numpy(), offset.numpy(), weight.numpy(), bias.numpy(), stride, pad, dil,
        None if mask is None else mask.numpy(),
    )
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-10)
    # float32 agrees too (normalised-grid round trip costs ~1e-6)
    out32 = deform_conv2d(
        inp.float(), offset.float(), weight.float(), bias.float(), stride, pad, dil,
        None if mask is None else mask.float(),
    )
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("stride", "pad", "dil", "groups"),
    [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 4), ((2, 1), (0, 1), (1, 2), 1)],
)
def test_zero_offsets_equal_conv2d(stride, pad, dil, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 9, 11)
    layer = DeformConv2d(8, 4, 3, stride, pad, dil, groups)
    ho, wo = F.conv2d(x, layer.weight, None, stride, pad, dil, groups).shape[-2:]
    offset = torch.zeros(2, 2 * 9, ho, wo)
    ref = F.conv2d(x, layer.weight, layer.bias, stride, pad, dil, groups)
    torch.testing.assert_close(layer(x, offset), ref, rtol=1e-5, atol=1e-5)
    ones = torch.ones(2, 9, ho, wo)
    torch.testing.assert_close(layer(x, offset, ones), ref, rtol=1e-5, atol=1e-5)


def test_integer_offset_is_a_shift():
    """An offset of exactly (+1 row, 0 col) on every tap reads x[y + i] instead of x[y - 1 + i]:
    a conv2d with asymmetric zero padding (top 0, bottom 2)."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 7, 7, dtype=torch.float64)
    wgt = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    off = torch.zeros(1, 18, 7, 7, dtype=torch.float64)
    off[:, 0::2] = 1.0
    ref = F.conv2d(F.pad(x, (1, 1, 0, 2)), wgt)
    torch.testing.assert_close(deform_conv2d(x, off, wgt, padding=1), ref)


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    off = (torch.rand(1, 2 * 4, 3, 3, generator=g, dtype=torch.float64) - 0.5).mul(1.3)
    off.requires_grad_(True)
    mask = torch.rand(1, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], 1, 0, 1, a[4]), (x, off, w, b, mask)
    )


def test_pack_modules_param_names_and_init():
    torch.manual_seed(0)
    v1 = DeformConv2dPack(4, 6, 3, padding=1, deform_groups=2)
    v2 = ModulatedDeformConv2dPack(4, 6, 3, stride=2, padding=1, deform_groups=2)
    shapes1 = {k: tuple(v.shape) for k, v in v1.state_dict().items()}
    shapes2 = {k: tuple(v.shape) for k, v in v2.state_dict().items()}
    assert shapes1 == {
        "weight": (6, 4, 3, 3),
        "conv_offset.weight": (2 * 2 * 9, 4, 3, 3),
        "conv_offset.bias": (36,),
    }
    assert shapes2 == {
        "weight": (6, 4, 3, 3),
        "bias": (6,),
        "conv_offset.weight": (3 * 2 * 9, 4, 3, 3),
        "conv_offset.bias": (54,),
    }
    x = torch.randn(2, 4, 8, 8)
    # zero-initialised offsets: v1 == conv2d, v2 == 0.5 * conv2d (mask = sigmoid(0)) + bias
    torch.testing.assert_close(v1(x), F.conv2d(x, v1.weight, None, 1, 1), rtol=1e-5, atol=1e-5)
    ref2 = 0.5 * F.conv2d(x, v2.weight, None, 2, 1) + v2.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(v2(x), ref2, rtol=1e-5, atol=1e-5)
    # the offset branch is trainable through the sampling
    with torch.no_grad():
        v2.conv_offset.weight.normal_(0, 0.1)
    v2(x).square().sum().backward()
    assert v2.conv_offset.weight.grad is not None
    assert v2.conv_offset.weight.grad.abs().sum() > 0 and torch.isfinite(v2.weight.grad).all()


def test_pack_offset_layout_matches_functional():
    """mmcv layout: conv_offset output = [o1 | o2 | m]; offset = cat(o1, o2), mask = sigmoid(m)."""
    torch.manual_seed(3)
    layer = ModulatedDeformConv2dPack(3, 2, 3, padding=1)
    with torch.no_grad():
        layer.conv_offset.weight.normal_(0, 0.2)
        layer.conv_offset.bias.normal_(0, 0.5)
    x = torch.randn(1, 3, 6, 5)
    raw = layer.conv_offset(x)
    offset, mask = raw[:, :18], torch.sigmoid(raw[:, 18:])
    ref = deform_conv2d(x, offset, layer.weight, layer.bias, 1, 1, 1, mask)
    torch.testing.assert_close(layer(x), ref)


def test_shape_errors():
    x = torch.randn(1, 4, 5, 5)
    w = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), w)
    with pytest.raises(ValueError, match="mask shape"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, mask=torch.ones(1, 18, 3, 3))
    with pytest.raises(ValueError, match="multiple of"):
        deform_conv2d(x, torch.zeros(1, 17, 3, 3), w)
