"""face3dkit.landmarks: 68 -> 5 reduction, landmark files, file backend, dlib backend."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from face3dkit.landmarks import (
    LM5_NAMES,
    DetectorUnavailableError,
    DlibDetector,
    FaceLandmarks,
    FileLandmarks,
    LandmarkDetector,
    LandmarkError,
    dlib_available,
    lm68_to_lm5,
    make_detector,
    read_landmark_file,
    write_landmark_file,
)


def _deng_extract_5p(lm: np.ndarray) -> np.ndarray:
    """Deng et al.'s util/preprocess.py extract_5p, re-typed: 1-based indices, then reordered."""
    idx = np.array([31, 37, 40, 43, 46, 49, 55]) - 1
    p = np.stack([lm[idx[0]], lm[idx[[1, 2]]].mean(0), lm[idx[[3, 4]]].mean(0), lm[idx[5]], lm[idx[6]]])
    return p[[1, 2, 0, 3, 4]]


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# ---------------------------------------------------------------------------------------------
def test_lm68_to_lm5_matches_deng() -> None:
    lm = np.random.default_rng(0).normal(100, 30, (3, 68, 2))
    expected = np.stack([_deng_extract_5p(x) for x in lm])
    np.testing.assert_allclose(lm68_to_lm5(lm), expected, atol=1e-12)
    t = torch.from_numpy(lm).float()
    out = lm68_to_lm5(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 5, 2)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    contour = lm68_to_lm5(lm[0], eyes="contour")
    np.testing.assert_allclose(contour[0], lm[0, 36:42].mean(0))
    np.testing.assert_allclose(contour[1], lm[0, 42:48].mean(0))
    np.testing.assert_allclose(contour[2:], lm[0, [30, 48, 54]])
    assert lm68_to_lm5(np.zeros((68, 3))).shape == (5, 3)
    assert LM5_NAMES == ("left_eye", "right_eye", "nose_tip", "mouth_left", "mouth_right")
    with pytest.raises(ValueError):
        lm68_to_lm5(np.zeros((5, 2)))


def _pts_text(p: np.ndarray, n: int | None = None) -> str:
    body = "\n".join(f"{x} {y}" for x, y in p)
    return f"version: 1\nn_points: {len(p) if n is None else n}\n{{\n{body}\n}}\n"


def test_pts_file_is_one_based(tmp_path: Path) -> None:
    p = np.random.default_rng(1).uniform(1, 300, (68, 2)).round(3)
    f = tmp_path / "face.pts"
    f.write_text(_pts_text(p))
    out = read_landmark_file(f)
    assert out.shape == (1, 68, 2)
    np.testing.assert_allclose(out[0], p - 0.5)  # 1-based pixel centres -> centres at +0.5
    np.testing.assert_allclose(read_landmark_file(f, pts_one_based=False)[0], p + 0.5)
    bad = {
        "count.pts": _pts_text(p, n=67),
        "close.pts": _pts_text(p).replace("}", ""),
        "open.pts": _pts_text(p).replace("{", ""),
        "nan.pts": _pts_text(p).replace(f"{p[3, 0]} ", "abc ", 1),
        "n39.pts": _pts_text(p[:39]),
        "three.pts": _pts_text(p).replace(f"{p[5, 1]}", f"{p[5, 1]} 7", 1),
    }
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LandmarkError) as err:
            read_landmark_file(tmp_path / name)
        _one_line(err, tmp_path / name)


@pytest.mark.parametrize("n", [68, 5])
def test_txt_file(tmp_path: Path, n: int) -> None:
    p = np.random.default_rng(n).uniform(0, 200, (n, 2)).round(4)
    f = tmp_path / "x.txt"
    f.write_text("# comment\n" + "\n".join(f"{x}\t{y}" for x, y in p) + "\n\n")
    out = read_landmark_file(f)
    np.testing.assert_allclose(out[0], p + 0.5)  # 0-based pixel indices
    np.testing.assert_allclose(read_landmark_file(f, index_offset=0.0)[0], p)
    f.write_text("\n".join(f"{x},{y}" for x, y in p))
    np.testing.assert_allclose(read_landmark_file(f)[0], p + 0.5)


def test_txt_file_errors(tmp_path: Path) -> None:
    rows = [f"{i} {i + 1}" for i in range(68)]
    cases = {
        "short.txt": "\n".join(rows[:67]),
        "three.txt": "\n".join(rows[:4] + ["1 2 3"] + rows[5:]),
        "word.txt": "\n".join(rows[:10] + ["12 twelve"] + rows[11:]),
        "inf.txt": "\n".join(rows[:10] + ["12 inf"] + rows[11:]),
        "empty.txt": "",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LandmarkError) as err:
            read_landmark_file(tmp_path / name)
        _one_line(err, tmp_path / name)
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(LandmarkError):
        read_landmark_file(tmp_path / "bin.txt")
    with pytest.raises(LandmarkError, match="unknown landmark file type"):
        (tmp_path / "a.json").write_text("{}")
        read_landmark_file(tmp_path / "a.json")


def test_npy_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for shape in [(68, 2), (5, 2), (3, 68, 2), (2, 5, 2)]:
        a = rng.uniform(0, 100, shape).astype(np.float32)
        np.save(tmp_path / "a.npy", a)
        out = read_landmark_file(tmp_path / "a.npy")
        expected = (a if a.ndim == 3 else a[None]).astype(np.float64) + 0.5
        np.testing.assert_allclose(out, expected)
    bad = {
        "shape.npy": lambda p: np.save(p, np.zeros((68, 3))),
        "count.npy": lambda p: np.save(p, np.zeros((10, 2))),
        "str.npy": lambda p: np.save(p, np.array([["a", "b"]] * 68)),
        "nan.npy": lambda p: np.save(p, np.full((5, 2), np.nan)),
        "obj.npy": lambda p: np.save(p, np.array([None] * 3, dtype=object), allow_pickle=True),
        "junk.npy": lambda p: p.write_bytes(b"not numpy at all"),
    }
    for name, make in bad.items():
        make(tmp_path / name)
        with pytest.raises(LandmarkError) as err:
            read_landmark_file(tmp_path / name)
        _one_line(err, tmp_path / name)


def test_write_read_roundtrip(tmp_path: Path) -> None:
    p = np.random.default_rng(3).uniform(0, 100, (68, 2))
    for name in ("a.txt", "a.pts", "a.npy"):
        write_landmark_file(tmp_path / name, p)
        np.testing.assert_allclose(read_landmark_file(tmp_path / name)[0], p, atol=1e-5)
    q = np.random.default_rng(4).uniform(0, 100, (2, 5, 2))
    write_landmark_file(tmp_path / "many.npy", q)
    np.testing.assert_allclose(read_landmark_file(tmp_path / "many.npy"), q)


def test_file_landmarks_search_order(tmp_path: Path) -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    photos = tmp_path / "photos"
    (photos / "detections").mkdir(parents=True)
    Image.fromarray(img).save(photos / "a.jpg")
    Image.fromarray(img).save(photos / "b.png")
    Image.fromarray(img).save(photos / "c.png")
    five = np.array([[50.0, 40], [90, 41], [70, 60], [55, 80], [85, 80]])
    (photos / "detections" / "a.txt").write_text("\n".join(f"{x} {y}" for x, y in five))  # Deng layout
    lm68 = np.random.default_rng(5).uniform(20, 100, (68, 2))
    (photos / "b.pts").write_text(_pts_text(lm68))
    det = FileLandmarks()
    assert isinstance(det, LandmarkDetector)
    fa = det.detect(img, photos / "a.jpg")
    assert len(fa) == 1 and fa[0].points.shape == (5, 2) and fa[0].source.endswith("a.txt")
    np.testing.assert_allclose(fa[0].lm5, five + 0.5)
    np.testing.assert_allclose(fa[0].box, (50.5, 40.5, 90.5, 80.5))
    fb = det.detect(img, photos / "b.png")
    np.testing.assert_allclose(fb[0].points, lm68 - 0.5)
    np.testing.assert_allclose(fb[0].lm5, _deng_extract_5p(lm68 - 0.5))
    # the same-folder file wins over detections/
    np.save(photos / "a.npy", five + 1)
    np.testing.assert_allclose(det.detect(img, photos / "a.jpg")[0].points, five + 1.5)
    with pytest.raises(LandmarkError) as err:
        det.detect(img, photos / "c.png")
    _one_line(err, photos / "c.png")
    assert FileLandmarks(missing="empty").detect(img, photos / "c.png") == []
    with pytest.raises(ValueError):
        det.detect(img)
    # landmarks lying outside the image are rejected
    np.save(photos / "c.npy", five + 1000)
    with pytest.raises(LandmarkError, match="outside"):
        det.detect(img, photos / "c.png")


def test_file_landmarks_dir_and_select(tmp_path: Path) -> None:
    img = np.zeros((300, 300, 3), np.uint8)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(img).save(root / "sub" / "x.png")
    lmdir = tmp_path / "lms"
    base = np.random.default_rng(6).uniform(-1, 1, (68, 2))
    faces = np.stack([100 + 10 * base, 150 + 40 * base, 60 + 20 * base])  # face 1 is the largest
    (lmdir / "sub").mkdir(parents=True)
    np.save(lmdir / "sub" / "x.npy", faces)
    got = FileLandmarks(lmdir, image_root=root).detect(img, root / "sub" / "x.png")
    assert len(got) == 3
    largest = FileLandmarks(lmdir, image_root=root, select="largest").detect(img, root / "sub" / "x.png")
    assert len(largest) == 1
    np.testing.assert_allclose(largest[0].points, faces[1] + 0.5)
    # flat landmarks folder, no image_root
    np.save(lmdir / "x.npy", faces[:1])
    flat = FileLandmarks(lmdir).detect(img, root / "sub" / "x.png")
    np.testing.assert_allclose(flat[0].points, faces[0] + 0.5)
    assert isinstance(make_detector("file", landmarks_dir=lmdir), FileLandmarks)
    with pytest.raises(ValueError):
        make_detector("nope")


def test_face_landmarks_box_and_area() -> None:
    f = FaceLandmarks(points=np.array([[1.0, 2.0], [5.0, 10.0]] * 34), box=(0.0, 0.0, 4.0, 5.0))
    assert f.area == 20.0
    assert FaceLandmarks.box_of(f.points) == (1.0, 2.0, 5.0, 10.0)


# ---------------------------------------------------------------------------------------------
def test_dlib_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError
    with pytest.raises(DetectorUnavailableError) as err:
        DlibDetector()
    msg = str(err.value)
    assert "\n" not in msg and "pip install dlib-bin face_recognition_models" in msg and "--landmarks file" in msg


def test_dlib_missing_model_file(tmp_path: Path) -> None:
    pytest.importorskip("dlib")
    with pytest.raises(DetectorUnavailableError) as err:
        DlibDetector(predictor_path=tmp_path / "nope.dat")
    _one_line(err, tmp_path / "nope.dat")


@pytest.mark.skipif(not dlib_available(), reason="dlib or face_recognition_models not installed")
def test_dlib_on_rendered_default_face() -> None:
    import face3dkit
    from face3dkit.viz import render_faces

    model = face3dkit.load_model("default")
    c = model.sample(1, generator=torch.Generator().manual_seed(0))
    c.id.zero_()
    c.tex.zero_()
    cam = face3dkit.PerspectiveCamera.for_image_size(300)
    image = render_faces(model, c, size=300, background=0.5, camera=cam)[0]
    truth = model(c, camera=cam).landmarks2d[0].double().numpy()

    det = DlibDetector(upsample=0, select="largest")
    faces = det.detect(image)
    assert len(faces) == 1
    f = faces[0]
    assert f.points.shape == (68, 2) and f.score > 0 and f.source == "dlib-hog"
    x0, y0, x1, y1 = f.box
    assert x0 < truth[:, 0].mean() < x1 and y0 < truth[:, 1].mean() < y1
    err = np.linalg.norm(f.points - truth, axis=1)
    inter_ocular = np.linalg.norm(truth[45] - truth[36])
    nme = err.mean() / inter_ocular
    assert err.mean() < 4.0, err.mean()  # pixels (measured ~2 px)
    assert nme < 0.04, nme
    inner = np.r_[17:68]  # eyebrows, nose, eyes, mouth: no jaw-silhouette ambiguity
    assert err[inner].mean() < 3.0
    blank = np.full((200, 200, 3), 128, np.uint8)
    assert det.detect(blank) == []
    # two faces: 'all' finds both (best score first), 'largest' keeps the big one
    two = np.full((300, 600, 3), 128, np.uint8)
    two[:, :300] = image
    two[75:225, 375:525] = np.asarray(Image.fromarray(image).resize((150, 150), Image.BILINEAR))
    det.select = "all"
    both = det.detect(two)
    assert len(both) == 2 and both[0].score >= both[1].score
    det.select = "largest"
    big = det.detect(two)
    assert len(big) == 1 and big[0].box[2] < 300
    np.testing.assert_allclose(big[0].points, f.points, atol=2.0)


def test_cnn_to_hog_rect_arithmetic() -> None:
    dlib = pytest.importorskip("dlib")
    from face3dkit.landmarks.dlib_backend import cnn_to_hog_rect

    r = dlib.rectangle(100, 50, 200, 150)  # centre (150, 100), width 100
    out = cnn_to_hog_rect(r, dlib, (0.1, 0.05, 1.2))
    # centre (150 + 10, 100 + 5), side 120 -> [100, 220] x [45, 165]
    assert (out.left(), out.top(), out.right(), out.bottom()) == (100, 45, 220, 165)
    same = cnn_to_hog_rect(r, dlib, (0.0, 0.0, 1.0))
    assert (same.left(), same.top(), same.right(), same.bottom()) == (100, 50, 200, 150)


def test_cnn_detector_maps_its_box_for_the_predictor() -> None:
    pytest.importorskip("dlib")
    from face3dkit.landmarks.dlib_backend import CNN_TO_HOG_BOX, DlibDetector

    try:
        det = DlibDetector("cnn")
    except DetectorUnavailableError as e:
        pytest.skip(str(e))
    seen = []

    class Spy:
        def __call__(self, img, rect):
            seen.append((rect.left(), rect.top(), rect.right(), rect.bottom()))
            raise StopIteration  # enough: only the rectangle handed over is checked

    import dlib

    rect = dlib.rectangle(40, 60, 140, 160)
    det._rects = lambda img: [(rect, 1.0)]
    det._predictor = Spy()
    img = np.zeros((200, 200, 3), np.uint8)
    for correction, expected in ((True, None), (False, (40, 60, 140, 160))):
        det.cnn_box_correction = correction
        seen.clear()
        with pytest.raises(StopIteration):
            det.detect(img)
        if expected is None:
            dx, dy, s = CNN_TO_HOG_BOX
            cx, cy, half = 90 + dx * 100, 110 + dy * 100, s * 50
            expected = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
        assert seen == [expected]
