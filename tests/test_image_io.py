"""face3dkit.io.image: robust image loading and input listing, on files the tests write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from face3dkit.io import IMAGE_EXTENSIONS, ImageReadError, list_images, load_image


def _quadrants(h: int = 32, w: int = 64) -> np.ndarray:
    """(h, w, 3) uint8 with four flat, distinct quadrants (JPEG-friendly: 16 px blocks)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (220, 30, 30)
    a[: h // 2, w // 2:] = (30, 220, 30)
    a[h // 2:, : w // 2] = (30, 30, 220)
    a[h // 2:, w // 2:] = (230, 230, 40)
    return a


def _assert_one_line_error(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: ")
    assert len(msg) > len(f"{path}: ")


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (7, 9, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


def test_grayscale_and_bilevel(tmp_path: Path) -> None:
    g = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.stack([g] * 3, -1))
    b = np.array([[0, 1, 1], [1, 0, 0]], bool)
    Image.fromarray(b).convert("1").save(tmp_path / "b.png")
    expected = np.where(b, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "b.png"), np.stack([expected] * 3, -1))


def test_rgba_and_la_composited_on_white(tmp_path: Path) -> None:
    rgba = np.array([[[10, 20, 30, 128], [200, 100, 0, 0]], [[5, 250, 60, 255], [90, 90, 90, 1]]], np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    a = rgba[..., 3:4].astype(np.float64) / 255.0
    expected = np.round(rgba[..., :3] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), expected)

    la = np.array([[[100, 0], [100, 255], [0, 51]]], np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    a = la[..., 1].astype(np.float64) / 255.0
    g = np.round(la[..., 0] * a + 255.0 * (1.0 - a)).astype(np.uint8)
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), np.stack([g] * 3, -1))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_scaled_to_8bit(tmp_path: Path, fmt: str) -> None:
    v = np.array([[0, 128, 257, 1000], [32896, 40000, 65279, 65535]], np.uint16)
    path = tmp_path / f"d16.{fmt.lower()}"
    Image.fromarray(v).save(path, format=fmt)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # really a 16-bit file
    expected = np.array([[0, 0, 1, 4], [128, 156, 254, 255]], np.uint8)  # round(v * 255 / 65535)
    assert np.array_equal(expected, np.round(v / 65535.0 * 255.0).astype(np.uint8))
    np.testing.assert_array_equal(load_image(path), np.stack([expected] * 3, -1))


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = [255, 0, 0, 0, 255, 0, 0, 0, 255, 17, 34, 51]
    idx = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette(pal + [0] * (768 - len(pal)))
    im.save(tmp_path / "p.png")
    lut = np.array(pal, np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), lut[idx])
    im.save(tmp_path / "pt.png", transparency=1)  # index 1 fully transparent -> white
    expected = lut[idx].copy()
    expected[idx == 1] = 255
    np.testing.assert_array_equal(load_image(tmp_path / "pt.png"), expected)


def test_bmp_and_webp(tmp_path: Path) -> None:
    a = _quadrants()
    Image.fromarray(a).save(tmp_path / "q.bmp")
    np.testing.assert_array_equal(load_image(tmp_path / "q.bmp"), a)
    if not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    Image.fromarray(a).save(tmp_path / "q.webp", lossless=True)
    np.testing.assert_array_equal(load_image(tmp_path / "q.webp"), a)


@pytest.mark.parametrize("orientation,k", [(1, 0), (3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied(tmp_path: Path, orientation: int, k: int) -> None:
    """EXIF 6 = stored rotated: display after a 90 deg clockwise turn (np.rot90 k=-1); 8: anticlockwise."""
    a = _quadrants()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "r.jpg"
    Image.fromarray(a).save(path, format="JPEG", quality=95, exif=exif)
    out = load_image(path)
    expected = np.rot90(a, k)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 6.0


def test_cmyk_jpeg(tmp_path: Path) -> None:
    a = _quadrants()
    Image.fromarray(a).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_image(tmp_path / "c.jpg")
    assert out.shape == a.shape and np.abs(out.astype(int) - a.astype(int)).mean() < 8.0


def test_bad_files_raise_one_line(tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    good = tmp_path / "good.png"
    Image.fromarray(noise).save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    Image.fromarray(noise).save(tmp_path / "good.jpg", quality=90)
    jdata = (tmp_path / "good.jpg").read_bytes()
    truncated_jpg = tmp_path / "truncated.jpg"
    truncated_jpg.write_bytes(jdata[: len(jdata) // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    header_only = tmp_path / "header.png"
    header_only.write_bytes(data[:40])
    for path in (truncated, truncated_jpg, text, empty, header_only, tmp_path / "missing.png", tmp_path):
        with pytest.raises(ImageReadError) as err:
            load_image(path)
        _assert_one_line_error(err, path)
        assert isinstance(err.value, ValueError)
    with pytest.raises(ImageReadError, match="empty file"):
        load_image(empty)
    with pytest.raises(ImageReadError, match="not an image"):
        load_image(text)


def test_list_images_folder(tmp_path: Path) -> None:
    img = Image.new("RGB", (2, 2))
    names = ["b.JPG", "a.png", "sub/c.Png", "sub/deeper/d.webp", "sub/e.tiff"]
    for n in names:
        p = tmp_path / n
        p.parent.mkdir(parents=True, exist_ok=True)
        img.save(p, format={"jpg": "JPEG", "png": "PNG", "webp": "PNG", "tiff": "TIFF"}[p.suffix[1:].lower()])
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub" / "landmarks.npy").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / ".cache").mkdir()
    img.save(tmp_path / ".cache" / "f.png")
    expected = sorted(tmp_path / n for n in names)
    assert list_images(tmp_path) == expected
    assert list_images(str(tmp_path), recursive=False) == sorted([tmp_path / "a.png", tmp_path / "b.JPG"])
    assert list_images(tmp_path / "sub" / "c.Png") == [tmp_path / "sub" / "c.Png"]
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    with pytest.raises(ImageReadError) as err:
        list_images(tmp_path / "nope")
    _assert_one_line_error(err, tmp_path / "nope")


def test_list_images_list_file(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for n in ("x.png", "y.jpg"):
        Image.new("RGB", (2, 2)).save(tmp_path / "imgs" / n)
    other = tmp_path / "elsewhere"
    other.mkdir()
    Image.new("RGB", (2, 2)).save(other / "z.bmp")
    lists = tmp_path / "lists"
    lists.mkdir()
    lst = lists / "inputs.txt"
    lst.write_text(f"# my inputs\n\n../imgs/y.jpg\n   ../imgs/x.png  \n# {other}/skip.png\n{other / 'z.bmp'}\n")
    assert list_images(lst) == [lists / "../imgs/y.jpg", lists / "../imgs/x.png", other / "z.bmp"]
    bad = lists / "bad.lst"
    bad.write_text("../imgs/x.png\n../imgs/missing.png\n")
    with pytest.raises(ImageReadError, match="line 2") as err:
        list_images(bad)
    _assert_one_line_error(err, bad)
