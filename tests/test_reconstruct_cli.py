"""`face3dkit reconstruct` on a temp folder: good image, corrupt file, non-image, face-less image."""

import json
import math

import numpy as np
import pytest
import scipy.io
import torch
from click.testing import CliRunner
from PIL import Image

import face3dkit
from face3dkit._cli.face3dkit_cmd import main
from face3dkit.geometry import PerspectiveCamera
from face3dkit.viz import render_faces


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A rendered face in a 320 px photo with its true landmarks written next to it."""
    root = tmp_path_factory.mktemp("photos")
    m = face3dkit.load_model("default")
    c = m.sample(1, generator=torch.Generator().manual_seed(4), id_scale=0.6, tex_scale=0.6)
    c.angles[:, 1] = math.radians(25.0)
    c.trans[:, 2] = -4.0
    cam = PerspectiveCamera(focal=1015 * 320 / 224, cx=170.0, cy=150.0, image_size=(320, 320))
    img = render_faces(m, c, camera=cam, background=0.5)[0]
    Image.fromarray(img).save(root / "face.png")
    with torch.no_grad():
        lm = m(c, camera=cam).landmarks2d[0].numpy()
    np.save(root / "face.npy", lm)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt.png").write_text("this is text\n")
    Image.new("RGB", (200, 150), (90, 120, 200)).save(root / "sky.png")  # no landmarks: no face
    return root, lm


def test_reconstruct_folder_reports_and_resumes(scene, tmp_path):
    root, lm_true = scene
    out = tmp_path / "out"
    args = ["reconstruct", str(root), "-o", str(out), "--landmarks", "file", "--landmark-iters", "60",
            "--iters", "3", "--no-progress"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output  # three inputs failed
    assert "1 face(s) reconstructed from 4 image(s)" in r.output and "3 failed" in r.output
    summary = json.loads((out / "summary.json").read_text())
    failed = {f["image"].split("/")[-1]: f["reason"] for f in summary["failures"]}
    assert set(failed) == {"broken.jpg", "notes.txt.png", "sky.png"}
    assert "sky.png" in failed and "landmark" in failed["sky.png"].lower()
    face = out / "face"
    for name in ("face.obj", "face.mtl", "face_texture.png", "face.mat", "face.npz", "face_lm68.txt",
                 "face_pose.json", "face.png", "face.done.json"):
        assert (face / name).exists(), name
    assert Image.open(face / "face_texture.png").size == (512, 512)  # ReconstructConfig.texture_size
    mat = scipy.io.loadmat(face / "face.mat")
    m = face3dkit.load_model("default")
    assert mat["id"].shape == (1, m.n_id) and mat["angle"].shape == (1, 3) and mat["lm68"].shape == (68, 2)
    lm = np.loadtxt(face / "face_lm68.txt")
    assert np.abs(lm - lm_true).mean() < 3.0  # back in original-image pixels
    pose = json.loads((face / "face_pose.json").read_text())
    assert abs(pose["yaw"] - 25.0) < 4.0
    # the named expression weights, in the model's order, equal to the .mat's exp row, in [0, 1]
    blend = json.loads((face / "face_blendshapes.json").read_text())
    assert list(blend) == m.exp_names and "jawOpen" in blend
    np.testing.assert_allclose(list(blend.values()), mat["exp"][0], atol=1e-5)
    assert all(0.0 <= w <= 1.0 for w in blend.values())
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("image,face_index,yaw") and len(csv) == 5
    # Second run: the finished face is skipped, failures are reported again.
    stamp = (face / "face.obj").stat().st_mtime_ns
    r2 = CliRunner().invoke(main, args)
    assert r2.exit_code == 1 and "0 face(s) reconstructed" in r2.output and "1 already done" in r2.output
    assert (face / "face.obj").stat().st_mtime_ns == stamp


def test_reconstruct_all_good_exits_zero(scene, tmp_path):
    root, _ = scene
    r = CliRunner().invoke(main, ["reconstruct", str(root / "face.png"), "-o", str(tmp_path / "o"), "--landmarks",
                                  "file", "--landmark-iters", "30", "--iters", "0", "--save", "pose,lm",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "o" / "face").iterdir()) == [
        "face.done.json", "face_lm68.txt", "face_pose.json"]


def test_reconstruct_fast_photometric_stage_is_recorded(scene, tmp_path):
    """--fast sets FitConfig.fast's photometric stage (and the explicit options override it); a run
    without it records no photo_faces / photo_raster_every, so results made before those fields
    existed keep their settings fingerprint."""
    root, lm_true = scene
    base = ["reconstruct", str(root / "face.png"), "--landmarks", "file", "--landmark-iters", "30", "--iters", "8",
            "--save", "pose,lm", "--no-progress"]
    r = CliRunner().invoke(main, base + ["-o", str(tmp_path / "fast"), "--fast", "--raster-every", "2"])
    assert r.exit_code == 0, r.output
    fit_settings = json.loads((tmp_path / "fast" / "face" / "face.done.json").read_text())["settings"]["fit"]
    got = (fit_settings["photo_size"], fit_settings["photo_faces"], fit_settings["photo_raster_every"])
    assert got == (64, 10000, 2)
    assert np.abs(np.loadtxt(tmp_path / "fast" / "face" / "face_lm68.txt") - lm_true).mean() < 3.0
    r = CliRunner().invoke(main, base + ["-o", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    fit_settings = json.loads((tmp_path / "plain" / "face" / "face.done.json").read_text())["settings"]["fit"]
    assert fit_settings["photo_size"] == 112 and "photo_faces" not in fit_settings
    assert "photo_raster_every" not in fit_settings


def test_reconstruct_bad_options(tmp_path):
    r = CliRunner().invoke(main, ["reconstruct", str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "missing: no such file" in r.output
    r = CliRunner().invoke(main, ["reconstruct", str(tmp_path), "--save", "obj,bogus"])
    assert r.exit_code == 2 and "bogus" in r.output


def test_python_api_returns_results(scene):
    root, lm_true = scene
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig

    cfg = ReconstructConfig(landmarks="file", fit=FitConfig(landmark_iters=40, photo_iters=0))
    s = face3dkit.reconstruct([root / "face.png"], None, cfg)
    assert s.ok and len(s.results) == 1
    r = s.results[0]
    n_id = face3dkit.load_model("default").n_id
    assert r.coeffs.id.shape == (1, n_id) and np.abs(r.landmarks - lm_true).mean() < 3.0


def test_progress_counts_inputs_when_their_faces_are_fitted(scene):
    """Progress advances when an input is finished: a failed input at once, a face when its batch is
    fitted (not when it is detected), the same file given twice counted twice."""
    root, _ = scene
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig

    calls, fitted = [], []
    cfg = ReconstructConfig(landmarks="file", batch_size=2, fit=FitConfig(landmark_iters=3, photo_iters=0))
    import face3dkit.pipeline.run as run_mod

    real_fit_batch = run_mod._fit_batch

    def spy(m, pending, *a, **k):
        fitted.append(len(calls))  # progress calls made before this batch was fitted
        return real_fit_batch(m, pending, *a, **k)

    inputs = [root / "face.png", root / "sky.png", root / "face.png", root / "broken.jpg", root / "face.png"]
    try:
        run_mod._fit_batch = spy
        s = face3dkit.reconstruct(inputs, None, cfg, progress=lambda done, total: calls.append((done, total)))
    finally:
        run_mod._fit_batch = real_fit_batch
    assert len(s.results) == 3 and len(s.failures) == 2
    # sky fails (1), the batch of faces 1 and 3 is fitted (3), broken fails (4), the last face's batch (5).
    assert calls == [(1, 5), (3, 5), (4, 5), (5, 5)]
    assert fitted == [1, 3]  # each batch was fitted before the progress it completes was reported


def test_reconstruct_photo_with_dlib(tmp_path):
    pytest.importorskip("dlib")
    from pathlib import Path

    from face3dkit.landmarks import DetectorUnavailableError, make_detector

    try:
        make_detector("dlib")
    except DetectorUnavailableError as e:
        pytest.skip(str(e))
    photo = Path(__file__).resolve().parents[1] / "assets" / "examples" / "grace_hopper.jpg"
    r = CliRunner().invoke(main, ["reconstruct", str(photo), "-o", str(tmp_path), "--landmark-iters", "60",
                                  "--iters", "3", "--save", "pose,lm,png", "--no-progress"])
    assert r.exit_code == 0, r.output
    pose = json.loads((tmp_path / "grace_hopper" / "grace_hopper_pose.json").read_text())
    assert abs(pose["yaw"]) < 12 and abs(pose["roll"]) < 10  # a frontal portrait
    lm = np.loadtxt(tmp_path / "grace_hopper" / "grace_hopper_lm68.txt")
    w, h = Image.open(photo).size
    assert (lm[:, 0] > 0).all() and (lm[:, 0] < w).all() and (lm[:, 1] < h).all()
    assert lm[36:48, 1].mean() < lm[48:68, 1].mean()  # eyes above the mouth, image coordinates


def test_perceptual_off_is_said_once(scene, caplog):
    root, _ = scene
    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import ReconstructConfig

    cfg = ReconstructConfig(landmarks="file", fit=FitConfig(landmark_iters=5, photo_iters=1))
    with caplog.at_level("WARNING", logger="face3dkit.pipeline"):
        face3dkit.reconstruct([root / "face.png", root / "face.png"], None, cfg)
    msgs = [r.message for r in caplog.records if "perceptual" in r.message]
    assert len(msgs) == 1 and "off" in msgs[0]


def test_reconstruct_with_deng_five_point_detections(scene, tmp_path):
    root, lm_true = scene
    from face3dkit.landmarks import lm68_to_lm5

    photos = tmp_path / "photos"
    (photos / "detections").mkdir(parents=True)
    (photos / "p5.png").write_bytes((root / "face.png").read_bytes())
    five = lm68_to_lm5(lm_true) - 0.5  # Deng's files hold 0-based pixel indices
    (photos / "detections" / "p5.txt").write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in five))
    r = CliRunner().invoke(main, ["reconstruct", str(photos), "-o", str(tmp_path / "o"), "--landmarks", "file",
                                  "--landmark-iters", "60", "--iters", "2", "--save", "pose,lm", "--no-progress"])
    assert r.exit_code == 0, r.output
    pose = json.loads((tmp_path / "o" / "p5" / "p5_pose.json").read_text())
    assert abs(pose["yaw"] - 25.0) < 8.0


def test_shard_and_all_faces(scene, tmp_path):
    from face3dkit.pipeline import shard

    assert shard(list(range(10)), rank=1, world=3) == [1, 4, 7]
    root, lm_true = scene
    photos = tmp_path / "two"
    photos.mkdir()
    (photos / "pair.png").write_bytes((root / "face.png").read_bytes())
    np.save(photos / "pair.npy", np.stack([lm_true, lm_true + [1.0, 0.5]]))  # (K, 68, 2): two faces
    r = CliRunner().invoke(main, ["reconstruct", str(photos), "-o", str(tmp_path / "o"), "--landmarks", "file",
                                  "--faces", "all", "--landmark-iters", "20", "--iters", "0", "--save", "pose",
                                  "--no-progress"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "o" / "pair").glob("*_pose.json")} == {"pair_pose.json", "pair_1_pose.json"}
