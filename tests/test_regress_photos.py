"""face3dkit.regress.photos: photo folders aligned like ``reconstruct``, cached, batched, flipped."""

import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import face3dkit
from face3dkit.align.template import template_5p_from_model
from face3dkit.geometry import PerspectiveCamera
from face3dkit.io import load_image
from face3dkit.landmarks import FileLandmarks, dlib_available, make_detector, write_landmark_file
from face3dkit.pipeline import ReconstructConfig
from face3dkit.pipeline.run import _prepare
from face3dkit.regress.photos import (
    LM68_MIRROR,
    PhotoFaces,
    PhotoFolderError,
    flip_faces,
    mirror_landmarks,
    mixed_batch,
    photo_batch,
    prepare_photo_folder,
)
from face3dkit.render.face import render_face
from face3dkit.viz import render_faces

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "assets", "examples")


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def _face(model, seed, yaw_deg, size=200, cx=100.0, cy=96.0):
    c = model.sample(1, generator=torch.Generator().manual_seed(seed), id_scale=0.6, tex_scale=0.6)
    c.angles[:, 1] = math.radians(yaw_deg)
    c.trans[:, 2] = -3.0
    cam = PerspectiveCamera(focal=1015 * size / 224, cx=cx, cy=cy, image_size=(size, size))
    img = render_faces(model, c, camera=cam, background=0.4)[0]
    with torch.no_grad():
        lm = model(c, camera=cam).landmarks2d[0].numpy()
    return img, lm


@pytest.fixture(scope="module")
def scene(model, tmp_path_factory):
    """Three rendered faces (one in a sub-folder) with .txt landmark files, and four images that
    give no face: no landmark file, a 5-point file, a broken JPEG, a text file named .png."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for name, seed, yaw in (("a", 1, 0.0), ("b", 2, 25.0), ("sub/c", 3, -30.0)):
        img, lm = _face(model, seed, yaw)
        Image.fromarray(img).save(root / f"{name}.png")
        write_landmark_file(root / f"{name}.txt", lm)
    Image.new("RGB", (120, 90), (90, 120, 200)).save(root / "sky.png")
    img, lm = _face(model, 4, 10.0)
    Image.fromarray(img).save(root / "five.png")
    from face3dkit.landmarks import lm68_to_lm5

    write_landmark_file(root / "five.txt", lm68_to_lm5(lm))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.png").write_text("this is text\n")
    return root


class Counting:
    """A detector that counts its calls (landmark files underneath)."""

    def __init__(self):
        self.files = FileLandmarks()
        self.calls = 0

    def detect(self, image, path=None):
        self.calls += 1
        return self.files.detect(image, path)


def test_crops_and_landmarks_are_the_pipelines(scene, model, tmp_path):
    seen = []
    data = prepare_photo_folder(scene, tmp_path / "cache", detector="file", model=model,
                                progress=lambda d, t: seen.append((d, t)))
    names = [os.path.relpath(p, scene) for p in data.paths]
    assert names == ["a.png", "b.png", os.path.join("sub", "c.png")] and len(data) == 3
    assert data.images.dtype == torch.uint8 and tuple(data.images.shape) == (3, 224, 224, 3)
    assert data.landmarks.dtype == torch.float32 and tuple(data.landmarks.shape) == (3, 68, 2)
    assert seen[-1] == (7, 7) and data.processed == 7 and data.cached == 0
    skipped = {os.path.basename(p): r for p, r in data.skipped}
    assert set(skipped) == {"sky.png", "five.png", "broken.jpg", "notes.png"}
    assert "no landmark file" in skipped["sky.png"] and "68 needed" in skipped["five.png"]
    assert "corrupt" in skipped["broken.jpg"] and "not an image" in skipped["notes.png"]
    # What reconstruct's own preparation makes of each image (same detector, template, alignment).
    template = template_5p_from_model(model).detach().cpu().double()
    cfg = ReconstructConfig(landmarks="file")
    for i, p in enumerate(data.paths):
        img = load_image(p)
        face = _prepare(img, p, make_detector("file"), cfg, None, p, {}, "", template).faces[0]
        np.testing.assert_array_equal(data.images[i].numpy(), face.crop)
        np.testing.assert_allclose(data.landmarks[i].numpy(), face.lm_crop, atol=1e-4)
    # The frontal face's landmarks sit on the reconstruction camera's mean face (alignment sanity).
    assert float(data.landmarks[0, :, 0].mean()) == pytest.approx(112, abs=4)


def test_cache_hit_changed_and_removed_files(scene, model, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(scene, root)
    cache = tmp_path / "cache"
    det = Counting()
    first = prepare_photo_folder(root, cache, detector=det, model=model, shard_faces=1)
    assert len(first) == 3 and det.calls == 5  # every readable image once (the two unreadable never reach it)
    shards = sorted(p.name for p in first.cache_dir.iterdir() if p.suffix == ".npz")
    assert len(shards) == 3
    again = prepare_photo_folder(root, cache, detector=det, model=model, shard_faces=1)
    assert det.calls == 5 and again.processed == 0 and again.cached == 7
    assert torch.equal(again.images, first.images) and torch.equal(again.landmarks, first.landmarks)
    assert again.paths == first.paths and sorted(again.skipped) == sorted(first.skipped)
    # Another crop size is another cache (detects again), the first one stays.
    small = prepare_photo_folder(root, cache, size=112, detector=det, model=model)
    assert det.calls == 10 and tuple(small.images.shape[1:3]) == (112, 112) and small.cache_dir != first.cache_dir
    np.testing.assert_allclose(small.landmarks.numpy(), first.landmarks.numpy() / 2, atol=1e-3)
    # A changed image is redone (new content, same name), a removed one drops out with its shard.
    img, lm = _face(model, 9, 15.0)
    Image.fromarray(img).save(root / "b.png")
    write_landmark_file(root / "b.txt", lm)
    os.utime(root / "b.png", ns=(1, 1))  # a different mtime even on coarse clocks
    (root / "a.png").unlink()
    third = prepare_photo_folder(root, cache, detector=det, model=model, shard_faces=1)
    assert det.calls == 11 and third.processed == 1 and third.cached == 5
    assert [os.path.basename(p) for p in third.paths] == ["b.png", "c.png"]
    assert not torch.equal(third.images[0], first.images[1])
    assert torch.equal(third.images[1], first.images[2])
    assert len([p for p in third.cache_dir.iterdir() if p.suffix == ".npz"]) == 2  # a's and b's old shards gone
    # A damaged cache (shard deleted) redoes just what it lost.
    for p in third.cache_dir.glob("*.npz"):
        p.unlink()
        break
    fourth = prepare_photo_folder(root, cache, detector=det, model=model)
    assert det.calls == 12 and torch.equal(fourth.images, third.images)


def test_file_landmarks_changes_are_seen(scene, model, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(scene, root)
    cache = tmp_path / "cache"
    first = prepare_photo_folder(root, cache, detector="file", model=model)
    # a landmark file for the sky image appears: it is retried (and now a face, however odd)
    _, lm = _face(model, 1, 0.0, size=120, cx=60, cy=45)
    write_landmark_file(root / "sky.txt", lm)
    second = prepare_photo_folder(root, cache, detector="file", model=model)
    assert second.processed == 1 and len(second) == len(first) + 1
    assert "sky.png" not in {os.path.basename(p) for p, _ in second.skipped}


def test_folder_errors_name_the_folder(tmp_path, model):
    with pytest.raises(PhotoFolderError, match="missing: no such folder"):
        prepare_photo_folder(tmp_path / "missing", tmp_path / "c", detector="file", model=model)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PhotoFolderError, match="empty: no images"):
        prepare_photo_folder(tmp_path / "empty", tmp_path / "c", detector="file", model=model)
    (tmp_path / "faceless").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "faceless" / "x.png")
    with pytest.raises(PhotoFolderError, match=r"faceless: no usable face in 1 image\(s\) \(.*no landmark file"):
        prepare_photo_folder(tmp_path / "faceless", tmp_path / "c", detector="file", model=model)


def _toy(n=12, size=16):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, size, size, 3, generator=g) * 255).to(torch.uint8)
    landmarks = torch.rand(n, 68, 2, generator=g) * size
    return PhotoFaces(images, landmarks, [f"{i}.png" for i in range(n)], [0] * n)


def test_photo_batch_is_a_pure_function_and_ranks_are_disjoint():
    data = _toy()
    a, b = photo_batch(data, 5, seed=3, step=7, rank=1, world=2), photo_batch(data, 5, seed=3, step=7, rank=1, world=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["image"].dtype == torch.float32 and float(a["image"].max()) <= 1.0
    assert not torch.equal(a["index"], photo_batch(data, 5, seed=4, step=7, rank=1, world=2)["index"])
    # 12 faces, 2 ranks x 3 per step: steps 0-1 are epoch 0, steps 2-3 epoch 1; each face once per epoch.
    for epoch in range(2):
        got = torch.cat([photo_batch(data, 3, 5, s, r, 2)["index"] for s in (2 * epoch, 2 * epoch + 1) for r in (0, 1)])
        assert sorted(got.tolist()) == list(range(12))
    e0 = torch.cat([photo_batch(data, 6, 5, s)["index"] for s in (0, 1)])
    assert sorted(e0.tolist()) == list(range(12))
    # a batch across an epoch boundary: the end of epoch 0's permutation, then epoch 1's start
    across = photo_batch(data, 5, 5, 2)["index"]  # positions 10..14
    assert across[:2].tolist() == e0[10:].tolist() and len(set(across[2:].tolist())) == 3
    # flips: about half, only for the flagged samples, and none with flip=False
    big = photo_batch(data, 64, 5, 0)
    assert 16 < int(big["flipped"].sum()) < 48
    plain = photo_batch(data, 64, 5, 0, flip=False)
    assert torch.equal(plain["index"], big["index"]) and not bool(plain["flipped"].any())
    f = big["flipped"]
    assert torch.equal(big["image"][~f], plain["image"][~f])
    assert torch.equal(big["image"][f], plain["image"][f].flip(2))
    assert torch.allclose(big["landmarks"][f], mirror_landmarks(plain["landmarks"][f], 16))
    with pytest.raises(ValueError):
        photo_batch(data, 4, 0, 0, rank=2, world=2)


def test_mirror_permutation_maps_the_symmetric_mean_face_to_itself(model):
    perm = torch.tensor(LM68_MIRROR)
    assert sorted(LM68_MIRROR) == list(range(68)) and torch.equal(perm[perm], torch.arange(68))
    fixed = {i for i in range(68) if LM68_MIRROR[i] == i}
    assert fixed == {8, 27, 28, 29, 30, 33, 51, 57, 62, 66}  # the midline points
    assert LM68_MIRROR[36] == 45 and LM68_MIRROR[39] == 42 and LM68_MIRROR[40] == 47 and LM68_MIRROR[41] == 46
    c = model.sample(1, generator=torch.Generator().manual_seed(0), id_scale=0.0, tex_scale=0.0)
    cam = PerspectiveCamera.for_image_size(224)
    with torch.no_grad():
        lm = model(c, camera=cam).landmarks2d[0]
    np.testing.assert_allclose(mirror_landmarks(lm, 224).numpy(), lm.numpy(), atol=0.02)
    # not a trivial fixed point: a wrong convention (x -> S - 1 - x) or no renumbering is far off
    assert (mirror_landmarks(lm, 223) - lm).abs().max() > 0.9
    assert (lm[perm] - lm).abs().max() > 50


def test_flip_matches_the_render_of_the_mirrored_pose(model):
    """A flipped render of a symmetric face is the render of the mirrored pose (yaw, roll and x
    negated), landmarks included, through photo_batch's flips."""
    s = 96
    c = model.sample(1, generator=torch.Generator().manual_seed(0), id_scale=0.0, tex_scale=0.0)
    c.angles[:] = torch.tensor([0.1, 0.35, 0.08])
    c.trans[:] = torch.tensor([0.15, -0.05, 0.3])
    m = c.clone()
    m.angles[:] = torch.tensor([0.1, -0.35, -0.08])
    m.trans[:] = torch.tensor([-0.15, -0.05, 0.3])
    cam = PerspectiveCamera.for_image_size(s)
    with torch.no_grad():
        r, rm = render_face(model, c, cam), render_face(model, m, cam)
    img = (r.image.clamp(0, 1) * 255).round().to(torch.uint8)
    data = PhotoFaces(img, r.landmarks2d.to(torch.float32), ["x.png"], [0])
    step = next(k for k in range(50) if bool(photo_batch(data, 1, 0, k)["flipped"][0]))
    b = photo_batch(data, 1, 0, step)
    np.testing.assert_allclose(b["landmarks"][0].numpy(), rm.landmarks2d[0].numpy(), atol=0.02)
    fi, _ = flip_faces(r.coverage, r.landmarks2d)
    inter = ((fi > 0.5) & (rm.coverage > 0.5)).sum()
    union = ((fi > 0.5) | (rm.coverage > 0.5)).sum()
    assert float(inter / union) > 0.995
    both = ((fi > 0.5) & (rm.coverage > 0.5))[..., 0]
    diff = (b["image"][0] - rm.image[0].clamp(0, 1)).abs()[both[0]]
    assert float(diff.mean()) < 0.01


def test_mixed_batch_joins_photos_and_renders():
    data = _toy(size=16)

    def synth(n, seed, step, rank):
        g = torch.Generator().manual_seed(seed * 100 + step)
        return {"image": torch.rand(n, 16, 16, 3, generator=g), "landmarks": torch.rand(n, 68, 2, generator=g),
                "coeffs": torch.rand(n, 5, generator=g)}

    b = mixed_batch(data, synth, 8, 0.25, seed=1, step=3)
    assert tuple(b["image"].shape) == (8, 16, 16, 3) and b["is_photo"].tolist() == [True] * 2 + [False] * 6
    assert tuple(b["coeffs"].shape) == (6, 5)
    assert torch.equal(b["image"][:2], photo_batch(data, 2, 1, 3)["image"])
    assert torch.equal(mixed_batch(data, synth, 8, 0.25, seed=1, step=3)["image"], b["image"])
    assert "coeffs" not in mixed_batch(data, synth, 4, 1.0, 1, 3)


@pytest.mark.skipif(not dlib_available(), reason="dlib or face_recognition_models not installed")
def test_dlib_on_the_example_photos(model, tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("astronaut.jpg", "grace_hopper.jpg"):
        shutil.copy(os.path.join(EXAMPLES, name), root / name)
    data = prepare_photo_folder(root, tmp_path / "cache", detector="dlib", model=model)
    assert len(data) == 2 and not data.skipped
    template = template_5p_from_model(model).detach().cpu().double()
    det = make_detector("dlib")
    for i, p in enumerate(data.paths):
        face = _prepare(load_image(p), p, det, ReconstructConfig(), None, p, {}, "", template).faces[0]
        np.testing.assert_array_equal(data.images[i].numpy(), face.crop)
        np.testing.assert_allclose(data.landmarks[i].numpy(), face.lm_crop, atol=1e-4)
        # Deng et al.'s alignment puts the eyes and mouth in roughly the same place on every face
        lm = data.landmarks[i]
        assert 60 < float(lm[36:48, 1].mean()) < 120 and 90 < float(lm[:, 0].mean()) < 134
