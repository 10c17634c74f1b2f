"""train_rnet on a photo folder (mixed with renders): the supervised term only where coefficients
are known, exact resume, the photos cached once."""

import math

import pytest
import torch
from PIL import Image

import face3dkit
from face3dkit.geometry import PerspectiveCamera
from face3dkit.landmarks import write_landmark_file
from face3dkit.regress import HybridLossConfig, RNetTrainConfig, SyntheticFaces, hybrid_loss, train_rnet
from face3dkit.viz import render_faces

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


def test_supervised_term_uses_only_the_rows_with_known_coefficients(model):
    g = torch.Generator().manual_seed(0)
    pred = model.sample(4, generator=g)
    true = model.sample(2, generator=g)
    cam = PerspectiveCamera.for_image_size(32)
    images = torch.rand(4, 32, 32, 3, generator=g)
    lm = torch.rand(4, 68, 2, generator=g) * 32
    rows = torch.tensor([False, True, False, True])
    _, terms = hybrid_loss(model, pred, images, lm, cam, HybridLossConfig(supervised=1.0), None, true, rows)
    p = pred.join().numpy()[[1, 3]]
    expect = ((p - true.join().numpy()) ** 2).mean()
    assert float(terms["supervised"]) == pytest.approx(float(expect), rel=1e-5)


def _photo_folder(model, root, n=4, size=96):
    root.mkdir()
    for i in range(n):
        c = model.sample(1, generator=torch.Generator().manual_seed(10 + i), id_scale=0.6, tex_scale=0.6)
        c.angles[:, 1] = math.radians(-20 + 12 * i)
        c.trans[:, 2] = -2.0
        cam = PerspectiveCamera(focal=1015 * size / 224, cx=size / 2, cy=size / 2, image_size=(size, size))
        Image.fromarray(render_faces(model, c, camera=cam, background=0.3)[0]).save(root / f"p{i}.png")
        with torch.no_grad():
            write_landmark_file(root / f"p{i}.txt", model(c, camera=cam).landmarks2d[0].numpy())
    (root / "empty.png").write_bytes(b"not an image")
    return root


def test_train_rnet_on_photos_mixed_with_renders_resumes_exactly(model, tmp_path, caplog):
    photos = _photo_folder(model, tmp_path / "photos")
    cfg = RNetTrainConfig(steps=3, batch_size=4, lr=1e-3, checkpoint_every=2, photos=str(photos), photo_fraction=0.5,
                          detector="file", data=SyntheticFaces(size=32), amp="off")
    full = train_rnet(tmp_path / "a", cfg)
    assert "empty.png" in caplog.text  # the unusable file is reported, not silently dropped
    assert (tmp_path / "a" / "photo-cache").is_dir()
    assert all("supervised" in r and r["photometric"] > 0 for r in full)
    part = train_rnet(tmp_path / "b", RNetTrainConfig(**{**cfg.__dict__, "steps": 2}))
    resumed = train_rnet(tmp_path / "b", resume=True, steps=3)
    assert resumed[:2] == part and resumed[2] == full[2]
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["net"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["net"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # Photos only: no coefficients are known, so there is no supervised term.
    only = train_rnet(tmp_path / "c", RNetTrainConfig(**{**cfg.__dict__, "steps": 1, "photo_fraction": 1.0}))
    assert "supervised" not in only[0]


def test_train_rnet_command_with_a_photo_folder_and_resume_to_more_steps(model, tmp_path):
    from click.testing import CliRunner

    from face3dkit._cli.face3dkit_cmd import main

    photos = _photo_folder(model, tmp_path / "photos", n=2)
    run = tmp_path / "run"
    args = ["train-rnet", "--out", str(run), "--data", str(photos), "--detector", "file", "--photo-fraction", "0.5",
            "--batch-size", "2", "--size", "32", "--no-progress", "--threads", "1", "--device", "cpu"]
    r = CliRunner().invoke(main, [*args, "--steps", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*args, "--steps", "2", "--resume"])
    assert r.exit_code == 0 and "trained 2 steps" in r.output, r.output
    assert (run / "metrics.csv").read_text().count("\n") == 3


def test_train_rnet_with_an_identity_network_adds_the_perceptual_term(tmp_path):
    """--identity-net: Deng et al.'s perceptual identity term (an ArcFace iResNet, here random) joins
    the loss and the logged terms."""
    from face3dkit.nets import iresnet18

    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save(iresnet18().state_dict(), path)
    rows = train_rnet(tmp_path / "run", RNetTrainConfig(steps=1, batch_size=2, data=SyntheticFaces(size=32),
                                                         identity_net=str(path), amp="off"))
    assert rows[0]["perceptual"] > 0
    plain = train_rnet(tmp_path / "plain", RNetTrainConfig(steps=1, batch_size=2, data=SyntheticFaces(size=32)))
    assert "perceptual" not in plain[0]
