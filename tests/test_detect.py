"""Face detection: box overlap / NMS, face selection, MTCNN nets and detector, HOG merged over
upsample counts, and a composed group photo through the pipeline with ``faces='all'``."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from face3dkit.landmarks import (
    DetectorUnavailableError,
    FaceLandmarks,
    MTCNNDetector,
    batched_nms,
    box_overlap,
    dlib_available,
    lm68_to_lm5,
    make_detector,
    nms,
    select_faces,
    square_boxes,
)
from face3dkit.landmarks.mtcnn import crop_boxes, mtcnn_scales, mtcnn_to_hog_box
from face3dkit.nets import CheckpointMismatchError
from face3dkit.nets.mtcnn import ONet, PNet, RNet, find_mtcnn_weights, load_mtcnn_nets

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
HAVE_WEIGHTS = find_mtcnn_weights() is not None
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS,
                                   reason="MTCNN weights absent (pip install --no-deps facenet-pytorch)")


needs_dlib = pytest.mark.skipif(not dlib_available(), reason="dlib or face_recognition_models not installed")


def _load(name: str) -> np.ndarray:
    return np.asarray(Image.open(EXAMPLES / name).convert("RGB"))


# --------------------------------------------------------------------------------------------- boxes
def _overlap_py(a, b, mode):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    aa = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    ab = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    den = aa + ab - inter if mode == "iou" else min(aa, ab)
    return inter / den if den > 0 else 0.0


def _random_boxes(rng, n):
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(5, 40, (n, 2))
    return np.concatenate([xy, xy + wh], 1)


@pytest.mark.parametrize("mode", ["iou", "min"])
def test_box_overlap_matches_scalar_formula(mode: str) -> None:
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    b[0] = [10, 10, 10, 30]  # empty box overlaps nothing
    got = box_overlap(torch.tensor(a), torch.tensor(b), mode).numpy()
    ref = np.array([[_overlap_py(x, y, mode) for y in b] for x in a])
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert box_overlap(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[2.0, 2, 5, 5]]), "min").item() == 1.0


def _nms_brute(boxes, scores, t, mode):
    """Reference: walk the boxes best first, keep one when it overlaps no kept box by more than t."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(_overlap_py(boxes[i], boxes[k], mode) <= t for k in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("mode,t", [("iou", 0.3), ("iou", 0.5), ("min", 0.7)])
def test_nms_matches_brute_force(mode: str, t: float) -> None:
    rng = np.random.default_rng(1)
    for trial in range(6):
        boxes = _random_boxes(rng, 60)
        scores = rng.uniform(0, 1, 60).round(2)  # ties happen
        got = nms(torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores), t, mode).tolist()
        assert got == _nms_brute(boxes, scores, t, mode), trial
    # float32 and an empty input
    assert nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), t, mode).tolist() \
        == _nms_brute(boxes.astype(np.float32), scores.astype(np.float32), t, mode)
    assert nms(torch.zeros(0, 4), torch.zeros(0), t).numel() == 0
    with pytest.raises(ValueError):
        nms(torch.zeros(3, 4), torch.zeros(2), t)


def test_batched_nms_keeps_groups_apart() -> None:
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 40)
    boxes[20:] = boxes[:20]  # group 1 repeats group 0: nothing across groups may be suppressed
    scores = rng.uniform(0, 1, 40)
    groups = np.repeat([0, 1], 20)
    got = set(batched_nms(torch.tensor(boxes), torch.tensor(scores), torch.tensor(groups), 0.4).tolist())
    ref = set(_nms_brute(boxes[:20], scores[:20], 0.4, "iou")) | {20 + i for i in _nms_brute(boxes[20:], scores[20:],
                                                                                             0.4, "iou")}
    assert got == ref


def test_square_boxes() -> None:
    out = square_boxes(torch.tensor([[10.0, 20, 30, 60], [0, 0, 8, 2]]))
    np.testing.assert_allclose(out.numpy(), [[0, 20, 40, 60], [0, -3, 8, 5]])


def test_select_faces_center_and_largest() -> None:
    pts = np.zeros((68, 2))
    faces = [FaceLandmarks(pts, (0, 0, 100, 100), 3.0), FaceLandmarks(pts, (140, 90, 180, 130), 2.0),
             FaceLandmarks(pts, (300, 0, 340, 40), 1.0)]
    assert select_faces(faces, "center", (220, 320))[0] is faces[1]  # centre (160, 110) vs (160, 110)
    assert select_faces(faces, "largest")[0] is faces[0]
    assert select_faces(faces, "all") == faces
    assert select_faces([], "center", (10, 10)) == []
    with pytest.raises(ValueError, match="image shape"):
        select_faces(faces, "center")
    with pytest.raises(ValueError):
        select_faces(faces, "middle")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- MTCNN nets
def _conv_np(x, w, b):
    """x (N, C, H, W), w (O, C, kh, kw): valid cross-correlation as a sum over kernel offsets."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o, h - kh + 1, wd - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + h - kh + 1, j:j + wd - kw + 1]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


def _prelu_np(x, a):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.where(x > 0, x, a.reshape(shape) * x)


def _pool_np(x, k, s):
    """Max pooling with ceil mode: windows may run past the end but must start inside."""
    n, c, h, w = x.shape

    def size(m):
        out = math.ceil((m - k) / s) + 1
        return out - 1 if (out - 1) * s >= m else out

    oh, ow = size(h), size(w)
    out = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    return out


def _softmax_np(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def _p(sd, name):
    return sd[name].double().numpy()


def _pnet_np(sd, x):
    x = _pool_np(_prelu_np(_conv_np(x, _p(sd, "conv1.weight"), _p(sd, "conv1.bias")), _p(sd, "prelu1.weight")), 2, 2)
    x = _prelu_np(_conv_np(x, _p(sd, "conv2.weight"), _p(sd, "conv2.bias")), _p(sd, "prelu2.weight"))
    x = _prelu_np(_conv_np(x, _p(sd, "conv3.weight"), _p(sd, "conv3.bias")), _p(sd, "prelu3.weight"))
    reg = _conv_np(x, _p(sd, "conv4_2.weight"), _p(sd, "conv4_2.bias"))
    return reg, _softmax_np(_conv_np(x, _p(sd, "conv4_1.weight"), _p(sd, "conv4_1.bias")))


def _dense_np(x, sd, name):
    return x @ _p(sd, name + ".weight").T + _p(sd, name + ".bias")


def _flatten_whc_np(x):
    # element order: width slowest, then height, then channel (the TF/Caffe layout of the weights)
    n, c, h, w = x.shape
    return np.stack([x[k].transpose(2, 1, 0).ravel() for k in range(n)])


def _rnet_np(sd, x):
    for i, (k, s) in ((1, (3, 2)), (2, (3, 2))):
        x = _pool_np(_prelu_np(_conv_np(x, _p(sd, f"conv{i}.weight"), _p(sd, f"conv{i}.bias")),
                               _p(sd, f"prelu{i}.weight")), k, s)
    x = _prelu_np(_conv_np(x, _p(sd, "conv3.weight"), _p(sd, "conv3.bias")), _p(sd, "prelu3.weight"))
    x = _prelu_np(_dense_np(_flatten_whc_np(x), sd, "dense4"), _p(sd, "prelu4.weight"))
    return _dense_np(x, sd, "dense5_2"), _softmax_np(_dense_np(x, sd, "dense5_1"))


def _onet_np(sd, x):
    for i, (k, s) in ((1, (3, 2)), (2, (3, 2)), (3, (2, 2))):
        x = _pool_np(_prelu_np(_conv_np(x, _p(sd, f"conv{i}.weight"), _p(sd, f"conv{i}.bias")),
                               _p(sd, f"prelu{i}.weight")), k, s)
    x = _prelu_np(_conv_np(x, _p(sd, "conv4.weight"), _p(sd, "conv4.bias")), _p(sd, "prelu4.weight"))
    x = _prelu_np(_dense_np(_flatten_whc_np(x), sd, "dense5"), _p(sd, "prelu5.weight"))
    return _dense_np(x, sd, "dense6_2"), _dense_np(x, sd, "dense6_3"), _softmax_np(_dense_np(x, sd, "dense6_1"))


def _randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) * (0.5 if "prelu" in name else 0.4) - (0 if "prelu" in name
                                                                                                else 0.2))
    return net.double().eval()


def test_mtcnn_nets_match_explicit_numpy_ops() -> None:
    rng = np.random.default_rng(3)
    pnet, rnet, onet = _randomize(PNet(), 0), _randomize(RNet(), 1), _randomize(ONet(), 2)
    x = rng.uniform(-1, 1, (2, 3, 27, 33))  # odd sizes: ceil-mode pooling runs past the edge
    with torch.no_grad():
        reg, prob = pnet(torch.tensor(x))
    rr, pr = _pnet_np(pnet.state_dict(), x)
    assert reg.shape == (2, 4, math.ceil(25 / 2) - 4, math.ceil(31 / 2) - 4)
    np.testing.assert_allclose(reg.numpy(), rr, atol=1e-10)
    np.testing.assert_allclose(prob.numpy(), pr, atol=1e-10)
    x = rng.uniform(-1, 1, (3, 3, 24, 24))
    with torch.no_grad():
        out = rnet(torch.tensor(x))
    for a, b in zip(out, _rnet_np(rnet.state_dict(), x), strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-10)
    x = rng.uniform(-1, 1, (2, 3, 48, 48))
    with torch.no_grad():
        out = onet(torch.tensor(x))
    assert [tuple(t.shape) for t in out] == [(2, 4), (2, 10), (2, 2)]
    for a, b in zip(out, _onet_np(onet.state_dict(), x), strict=True):
        np.testing.assert_allclose(a.numpy(), b, atol=1e-10)


#: Keys and shapes of facenet-pytorch 2.6.0's data/{pnet,rnet,onet}.pt (read from the files).
_PUBLISHED = {
    "pnet": {"conv1.weight": (10, 3, 3, 3), "conv1.bias": (10,), "prelu1.weight": (10,),
             "conv2.weight": (16, 10, 3, 3), "conv2.bias": (16,), "prelu2.weight": (16,),
             "conv3.weight": (32, 16, 3, 3), "conv3.bias": (32,), "prelu3.weight": (32,),
             "conv4_1.weight": (2, 32, 1, 1), "conv4_1.bias": (2,), "conv4_2.weight": (4, 32, 1, 1),
             "conv4_2.bias": (4,)},
    "rnet": {"conv1.weight": (28, 3, 3, 3), "conv1.bias": (28,), "prelu1.weight": (28,),
             "conv2.weight": (48, 28, 3, 3), "conv2.bias": (48,), "prelu2.weight": (48,),
             "conv3.weight": (64, 48, 2, 2), "conv3.bias": (64,), "prelu3.weight": (64,),
             "dense4.weight": (128, 576), "dense4.bias": (128,), "prelu4.weight": (128,),
             "dense5_1.weight": (2, 128), "dense5_1.bias": (2,), "dense5_2.weight": (4, 128), "dense5_2.bias": (4,)},
    "onet": {"conv1.weight": (32, 3, 3, 3), "conv1.bias": (32,), "prelu1.weight": (32,),
             "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,), "prelu2.weight": (64,),
             "conv3.weight": (64, 64, 3, 3), "conv3.bias": (64,), "prelu3.weight": (64,),
             "conv4.weight": (128, 64, 2, 2), "conv4.bias": (128,), "prelu4.weight": (128,),
             "dense5.weight": (256, 1152), "dense5.bias": (256,), "prelu5.weight": (256,),
             "dense6_1.weight": (2, 256), "dense6_1.bias": (2,), "dense6_2.weight": (4, 256), "dense6_2.bias": (4,),
             "dense6_3.weight": (10, 256), "dense6_3.bias": (10,)},
}


def test_mtcnn_state_dict_layout_is_the_published_one(tmp_path: Path) -> None:
    for key, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        assert {k: tuple(v.shape) for k, v in cls().state_dict().items()} == _PUBLISHED[key]
    # a folder of files with those keys loads strictly and runs the whole cascade
    for key, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        torch.save(_randomize(cls(), 7).float().state_dict(), tmp_path / f"{key}.pt")
    assert find_mtcnn_weights(tmp_path) == {k: tmp_path / f"{k}.pt" for k in ("pnet", "rnet", "onet")}
    det = MTCNNDetector(weights=tmp_path, points="5", thresholds=(0.0, 0.0, 0.0))
    boxes, scores, pts = det.detect_boxes(np.full((40, 50, 3), 100, np.uint8))
    assert boxes.shape[1:] == (4,) and pts.shape[1:] == (5, 2) and scores.shape == boxes.shape[:1]
    assert bool((scores[:-1] >= scores[1:]).all())
    faces = det.detect(np.full((40, 50, 3), 100, np.uint8))
    assert all(f.points.shape == (5, 2) and f.source == "mtcnn" for f in faces)
    # a wrong file is named in one line; a missing folder gives the install hint
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "rnet.pt")
    with pytest.raises(CheckpointMismatchError) as err:
        load_mtcnn_nets(tmp_path)
    assert str(tmp_path / "rnet.pt") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DetectorUnavailableError) as err2:
        MTCNNDetector(weights=tmp_path / "nope")
    assert "pip install --no-deps facenet-pytorch" in str(err2.value) and "\n" not in str(err2.value)


def test_mtcnn_scales_and_crops() -> None:
    s = mtcnn_scales(100, 240, min_face_size=20, factor=0.709)
    ref, v = [], 12 / 20
    while 100 * v >= 12:
        ref.append(v)
        v *= 0.709
    np.testing.assert_allclose(s, ref)
    with pytest.raises(ValueError):
        mtcnn_scales(10, 10, factor=1.2)
    rng = np.random.default_rng(4)
    img = rng.uniform(0, 255, (3, 30, 40))
    # box [-4, 36) x [-2, 6) : 40 x 8 pixels, 2x2 area means onto 20 x 4 ... resampled to 4 x 4 here
    boxes = torch.tensor([[-4.0, -2.0, 36.0, 38.0], [10.2, 5.8, 18.4, 13.6]])
    out = crop_boxes(torch.tensor(img), boxes, 4).numpy()
    ys, xs = np.clip(np.arange(-2, 38), 0, 29), np.clip(np.arange(-4, 36), 0, 39)
    patch = img[:, ys][:, :, xs]  # edge-padded 40 x 40
    ref0 = patch.reshape(3, 4, 10, 4, 10).mean(axis=(2, 4))
    np.testing.assert_allclose(out[0], ref0, atol=1e-9)
    ref1 = img[:, 6:14, 10:18].reshape(3, 4, 2, 4, 2).mean(axis=(2, 4))  # rounded to [10, 18) x [6, 14)
    np.testing.assert_allclose(out[1], ref1, atol=1e-9)


def test_mtcnn_to_hog_box_arithmetic() -> None:
    lm5 = np.array([[40.0, 50], [60, 50], [50, 60], [42, 70], [58, 70]])  # eye-mouth distance 20
    box = np.array([30.0, 35, 70, 80])
    got = mtcnn_to_hog_box(box, lm5, (0.1, -0.2, 1.5))
    c = lm5.mean(0) + np.array([0.1, -0.2]) * 20
    np.testing.assert_allclose(got, np.r_[c - 30, c + 30])


# --------------------------------------------------------------------------------------------- real weights
@pytest.fixture(scope="module")
def dlib_detectors():
    """dlib HOG at upsample 0 and MTCNN with dlib's 68 points (the predictor file is loaded once each)."""
    if not dlib_available():
        return None
    from face3dkit.landmarks import DlibDetector

    return DlibDetector(upsample=0, select="largest"), MTCNNDetector(points="68")


@needs_weights
def test_mtcnn_finds_the_face_in_the_example_photos(dlib_detectors) -> None:
    det = MTCNNDetector(points="5")
    for name in ("grace_hopper.jpg", "astronaut.jpg"):
        img = _load(name)
        boxes, scores, pts = det.detect_boxes(img)
        assert boxes.shape[0] == 1 and float(scores[0]) > 0.99, name
        b, p = boxes[0].numpy(), pts[0].numpy()
        assert (p[:, 0] > b[0]).all() and (p[:, 0] < b[2]).all() and (p[:, 1] > b[1]).all() and (p[:, 1] < b[3]).all()
        le, re_, nose, ml, mr = p
        assert le[0] < nose[0] < re_[0] and ml[0] < mr[0]  # image-left before image-right
        assert max(le[1], re_[1]) < nose[1] < min(ml[1], mr[1])  # eyes above nose above mouth
        if dlib_detectors is None:
            continue
        # an independent detector: dlib HOG + 68-point predictor, reduced to the 5 points
        hog, mtcnn68 = dlib_detectors
        ref = hog.detect(img)[0]
        eye = np.linalg.norm(ref.lm5[1] - ref.lm5[0])
        err = np.linalg.norm(p - ref.lm5, axis=1)
        assert err.mean() < 0.15 * eye, (name, err / eye)
        faces = mtcnn68.detect(img)
        assert len(faces) == 1 and faces[0].source == "mtcnn+dlib68" and faces[0].points.shape == (68, 2)
        assert np.linalg.norm(lm68_to_lm5(faces[0].points) - ref.lm5, axis=1).mean() < 0.1 * eye, name


# --------------------------------------------------------------------------------------------- group photo
@functools.lru_cache(maxsize=1)
def _turned_render() -> tuple[np.ndarray, np.ndarray]:
    """The MakeHuman model's seed-0 face at 60 deg yaw, 240 px: dlib HOG at upsample 1 misses it, upsample 0
    finds it (dlib 20.0; the default model's face at that pose is found by both). Returns the image and
    its true (68, 2) landmarks."""
    import face3dkit
    from face3dkit.viz import render_faces

    m = face3dkit.load_model("makehuman")
    c = m.sample(1, generator=torch.Generator().manual_seed(0))
    c.exp.zero_()
    c.angles[:, 1] = math.radians(60)
    img = render_faces(m, c, size=240, background=0.5)[0]
    cam = face3dkit.PerspectiveCamera.for_image_size(240)
    with torch.no_grad():
        lm = m(c, camera=cam).landmarks2d[0].double().numpy()
    return img, lm


@functools.lru_cache(maxsize=1)
def _compose() -> tuple[np.ndarray, list[np.ndarray]]:
    """A 'group photo': grace_hopper at 0.5 scale, astronaut's face region at 1.0, the turned render;
    returns the canvas and each pasted face's expected region (x0, y0, x1, y1)."""
    canvas = np.full((420, 900, 3), 120, np.uint8)
    regions = []
    gh = Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB")
    gh = np.asarray(gh.resize((gh.width // 2, gh.height // 2), Image.BILINEAR))[:260]  # 256 x 260 tile
    canvas[40:40 + gh.shape[0], 20:20 + gh.shape[1]] = gh
    # union of the MTCNN (176, 116, 347, 333) and HOG (161, 137, 377, 353) boxes at full size, halved
    regions.append(np.array([80.0, 58, 188, 176]) + [20, 40, 20, 40])
    astro = _load("astronaut.jpg")[30:230, 120:330]  # 200 x 210 tile around the face
    canvas[100:300, 320:530] = astro
    regions.append(np.array([179.0 - 120, 59 - 30, 267 - 120, 175 - 30]) + [320, 100, 320, 100])  # MTCNN/HOG box
    turned, lm = _turned_render()
    canvas[90:330, 600:840] = turned
    lo, hi = lm.min(0), lm.max(0)
    regions.append(np.r_[lo, hi] + [600, 90, 600, 90])
    return canvas, regions


def _matches(boxes: list[tuple[float, float, float, float]], regions: list[np.ndarray]) -> list[int]:
    """For each region, how many boxes have their centre inside it."""
    out = []
    for r in regions:
        out.append(sum(r[0] <= (b[0] + b[2]) / 2 <= r[2] and r[1] <= (b[1] + b[3]) / 2 <= r[3] for b in boxes))
    return out


@needs_dlib
def test_hog_merged_upsample_finds_every_face_of_a_group_photo() -> None:
    from face3dkit.fit import FitConfig
    from face3dkit.landmarks import DlibDetector
    from face3dkit.pipeline import ReconstructConfig, reconstruct

    canvas, regions = _compose()
    det = DlibDetector()  # the default: upsample (0, 1) merged
    assert det.upsample == (0, 1)
    faces = det.detect(canvas)
    assert len(faces) == 3, [f.box for f in faces]
    assert _matches([f.box for f in faces], regions) == [1, 1, 1]
    # the merge keeps a box for every face either run alone finds
    for u in (0, 1):
        det.upsample = (u,)
        for f in det.detect(canvas):
            assert max(box_overlap(torch.tensor([f.box]), torch.tensor([g.box])).item() for g in faces) > 0.3
    # the bug on the render alone: upsample 1 misses the turned face, the merged runs find it
    turned, lm = _turned_render()
    det.upsample = (1,)
    assert det.detect(turned) == []
    det.upsample = (0, 1)
    alone = det.detect(turned)
    assert len(alone) == 1 and _matches([alone[0].box], [np.r_[lm.min(0), lm.max(0)]]) == [1]
    # 'center' picks the astronaut (middle); 'largest' the turned render
    assert _matches([select_faces(faces, "center", canvas.shape)[0].box], regions) == [0, 1, 0]
    assert _matches([select_faces(faces, "largest")[0].box], regions) == [0, 0, 1]
    # the pipeline with faces='all' reconstructs all three
    cfg = ReconstructConfig(faces="all", fit=FitConfig(landmark_iters=2, photo_iters=0), batch_size=4)
    det.upsample, det.select = (0, 1), "all"
    s = reconstruct(canvas, None, cfg, detector=det)
    assert not s.failures and len(s.results) == 3
    centres = [tuple(r.detected.mean(0)) for r in s.results]
    assert _matches([(x, y, x, y) for x, y in centres], regions) == [1, 1, 1]


@needs_weights
def test_mtcnn_on_the_group_photo() -> None:
    canvas, regions = _compose()
    faces = make_detector("mtcnn", points="5").detect(canvas)
    got = _matches([f.box for f in faces], regions)
    assert got[:2] == [1, 1], [f.box for f in faces]  # the two photographed faces, once each
    assert len(faces) == sum(got)  # nothing else


def test_cli_faces_center_and_detector_alias(tmp_path: Path) -> None:
    """`--faces center` keeps the face nearest the image centre (here not the largest one)."""
    from click.testing import CliRunner

    import face3dkit
    from face3dkit._cli.face3dkit_cmd import main
    from face3dkit.viz import render_faces

    m = face3dkit.load_model("default")
    c = m.sample(1, generator=torch.Generator().manual_seed(4), id_scale=0.6, tex_scale=0.6)
    cam = face3dkit.PerspectiveCamera.for_image_size(256)
    img = render_faces(m, c, camera=cam, background=0.5)[0]
    with torch.no_grad():
        lm = m(c, camera=cam).landmarks2d[0].double().numpy()
    photos = tmp_path / "p"
    photos.mkdir()
    Image.fromarray(img).save(photos / "two.png")
    big = (lm - lm.mean(0)) * 1.3 + lm.mean(0) + [110.0, 0.0]  # larger, off centre (partly outside)
    np.save(photos / "two.npy", np.stack([big, lm]) - 0.5)  # 0-based indices in the file
    for faces, expected in (("center", lm), ("largest", big)):
        out = tmp_path / faces
        r = CliRunner().invoke(main, ["reconstruct", str(photos), "-o", str(out), "--detector", "file", "--faces",
                                      faces, "--landmark-iters", "10", "--iters", "0", "--save", "lm",
                                      "--no-progress"])
        assert r.exit_code == 0, r.output
        files = sorted((out / "two").glob("*lm68*.txt"))
        assert files, list((out / "two").iterdir())
        fitted = np.loadtxt(files[0])[:, :2]
        assert np.linalg.norm(fitted.mean(0) - expected.mean(0)) < 15.0, (faces, fitted.mean(0), expected.mean(0))
