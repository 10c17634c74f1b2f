"""face3dkit.regress.augment: batched JPEG against libjpeg (through PIL)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from face3dkit.regress.augment import jpeg_compress, jpeg_quant_tables, random_jpeg


def _pil_jpeg(arr: np.ndarray, quality: int) -> tuple[np.ndarray, dict]:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)  # PIL's default: 4:2:0
    im = Image.open(buf)
    return np.asarray(im.convert("RGB")).astype(np.float64), im.quantization


def _test_image(h: int = 75, w: int = 94) -> np.ndarray:
    """Smooth gradients, edges and noise (sizes not multiples of 16: the padding path)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(6 * xx) * 0.5 + 0.5, yy, (xx + yy) / 2], -1)
    img[h // 3: h // 2, w // 4: w // 2] = [0.9, 0.2, 0.1]
    img = img + rng.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("quality", [5, 30, 50, 90])
def test_quant_tables_equal_libjpeg(quality: int) -> None:
    _, tables = _pil_jpeg(np.zeros((16, 16, 3), np.uint8), quality)
    luma, chroma = jpeg_quant_tables(torch.tensor([quality]))
    np.testing.assert_array_equal(luma[0].flatten().numpy(), np.array(tables[0]))
    np.testing.assert_array_equal(chroma[0].flatten().numpy(), np.array(tables[1]))


@pytest.mark.parametrize("quality", [10, 40, 75, 95])
def test_jpeg_matches_pil(quality: int) -> None:
    arr = _test_image()
    ref, _ = _pil_jpeg(arr, quality)
    ours = jpeg_compress(torch.from_numpy(arr).float()[None] / 255, quality)[0].numpy() * 255
    err_pil = np.abs(ref - arr).mean()
    # libjpeg's integer DCT and chroma rounding vs our float DCT: ~1 grey level on average, against a
    # compression loss of 6-11 levels on this noisy image
    assert np.abs(ours - ref).mean() < 1.5
    assert abs(np.abs(ours - arr).mean() - err_pil) < 0.15 * err_pil + 0.1  # the same loss of detail


def test_jpeg_batch_per_image_quality_and_dtype() -> None:
    arr = _test_image(32, 48)
    x = torch.from_numpy(arr).double()[None].expand(3, -1, -1, -1) / 255
    out = jpeg_compress(x, torch.tensor([20, 60, 100]))
    assert out.shape == x.shape and out.dtype == torch.float64
    for i, q in enumerate([20, 60, 100]):
        torch.testing.assert_close(out[i], jpeg_compress(x[i:i + 1], q)[0])
    errs = [float((out[i] - x[i]).abs().mean()) for i in range(3)]
    assert errs[0] > errs[1] > errs[2]


def test_jpeg_errors() -> None:
    with pytest.raises(ValueError, match="RGB"):
        jpeg_compress(torch.zeros(1, 8, 8), 50)
    with pytest.raises(ValueError, match=r"\[1, 100\]"):
        jpeg_compress(torch.zeros(1, 8, 8, 3), 0)
    with pytest.raises(ValueError, match="2 qualities for 3"):
        jpeg_compress(torch.zeros(3, 8, 8, 3), torch.tensor([50, 60]))


def test_random_jpeg_draws_and_picks() -> None:
    x = torch.from_numpy(_test_image(32, 32)).float()[None].repeat(64, 1, 1, 1) / 255
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    out = random_jpeg(x, g1, p=0.5, quality=(20, 40))
    pick = torch.rand(64, generator=g2) < 0.5
    qs = torch.randint(20, 41, (64,), generator=g2)
    changed = (out != x).flatten(1).any(1)
    assert torch.equal(changed, pick) and 10 < int(pick.sum()) < 54
    i = int(pick.nonzero()[0, 0])
    torch.testing.assert_close(out[i], jpeg_compress(x[i:i + 1], int(qs[i]))[0])
    # the same number of draws whatever p is
    g3, g4 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    random_jpeg(x, g3, p=0.0)
    random_jpeg(x, g4, p=1.0)
    assert torch.equal(torch.rand(4, generator=g3), torch.rand(4, generator=g4))
