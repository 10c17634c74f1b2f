"""fer DR-GAN: pose bins, confidence-weighted fusion, training lowers its losses, exact resume, shapes,
frontalisation through ``fer generate``."""


import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fer_arrays import ArrayDataset, assert_resumed_run_equals_straight
from fer_arrays import StepContext as Ctx
from PIL import Image

from fer.models import DRGANConfig, DRGANModel, build_model
from fer.models.drgan import drgan_pose_class, fuse_by_group
from fer.train import TrainConfig, Trainer, write_run_info

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny", "gen_channels": 32, "disc_channels": 8, "feat_dim": 32, "noise_dim": 16}


def _batch(b=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yaw = torch.tensor([-60.0, -30.0, 0.0, float("nan"), 15.0, 45.0, 70.0, 5.0])[:b]
    return {"image": torch.rand(b, 3, size, size, generator=g), "label": torch.tensor([0, 0, 0, 3, 3, 5, 6, 6])[:b],
            "identity": torch.tensor([1, 1, 2, 4, 4, 4, -1, -1])[:b],
            "geom_pose": torch.stack([yaw, torch.zeros(b), torch.zeros(b)], 1)}


def _terms(model, batch, seed=123):
    torch.manual_seed(seed)  # same target poses, noise and dropout before and after
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss_terms(batch).items() if not k.startswith("_")}


def test_pose_classes_are_15_degree_bins_up_to_60():
    yaw = torch.tensor([-80.0, -60.0, -52.4, -52.6, -7.4, -7.6, 0.0, 7.6, 22.4, 37.6, 60.0, 99.0, float("nan")])
    got = drgan_pose_class(yaw).tolist()
    # Independent reference: nearest of the nine centres -60, -45, ..., 60 (outer bins absorb the rest).
    centres = np.arange(-60, 61, 15)
    ref = [int(np.argmin(np.abs(centres - y))) if np.isfinite(y) else -1 for y in yaw.numpy()]
    assert got == ref and got[6] == 4
    assert DRGANModel.pose_bin_centres() == [float(c) for c in centres]
    assert drgan_pose_class(torch.tensor([29.0, 31.0]), 30.0, 30.0).tolist() == [2, 2]
    with pytest.raises(ValueError, match="multiple of yaw_step"):
        drgan_pose_class(yaw, 15.0, 50.0)


def test_fusion_is_the_confidence_weighted_mean_of_each_group():
    g = torch.Generator().manual_seed(1)
    f, w = torch.randn(7, 5, generator=g), torch.rand(7, generator=g) + 0.1
    groups = torch.tensor([3, 9, 3, 1, 9, 9, 2])
    fused, ids, first = fuse_by_group(f, w, groups)
    assert ids.tolist() == [3, 9] and first.tolist() == [0, 1]  # groups of one (1, 2) are not fused
    for k, gid in enumerate(ids.tolist()):
        members = [i for i in range(7) if groups[i] == gid]
        ref = sum(w[i] * f[i] for i in members) / sum(w[i] for i in members)
        assert torch.allclose(fused[k], ref, atol=1e-6)


@pytest.mark.parametrize("multi", [False, True])
def test_training_steps_lower_the_losses_on_a_fixed_batch(multi):
    torch.manual_seed(0)
    model = build_model("drgan", "small", image_size=32, lr=1e-3, multi_image=multi, **TINY)
    model.train()
    batch = _batch()
    before = _terms(model, batch)
    ctx = Ctx(model)
    for _ in range(8):
        metrics = model.train_step(batch, ctx)
    after = _terms(model, batch)
    for k in ("cls_real", "d_real", "d_pose", "d"):
        assert after[k] < before[k], (k, before[k], after[k])
    assert all(np.isfinite(v) for v in metrics.values())
    if multi:  # groups (expression, identity) of two or more: (0, 1) and (3, 4), (6, unknown)
        torch.manual_seed(0)
        fw = model._forward(batch)
        assert fw["x_g"].shape[0] == 8 + 3 and sorted(fw["y_g"][8:].tolist()) == [0, 3, 6]


def test_target_poses_from_the_data_and_the_reconstruction_option():
    torch.manual_seed(0)
    batch = _batch()
    frontal = {**batch, "geom_pose": torch.zeros(8, 3)}  # CK+-like: every face in the 0 degree bin
    m = build_model("drgan", "small", image_size=32, target_poses="data", w_rec=1.0, lr=1e-3, **TINY)
    fw = m._forward(frontal)
    assert fw["t"].tolist() == [4] * 8 and fw["x_rec"].shape == (8, 3, 32, 32)
    fw = m._forward(batch)
    assert set(fw["t"].tolist()) <= {0, 2, 4, 5, 7, 8}  # only the batch's known classes
    before = _terms(m, batch)
    ctx = Ctx(m)
    for _ in range(8):
        m.train_step(batch, ctx)
    assert _terms(m, batch)["rec"] < before["rec"]
    assert build_model("drgan", "small", image_size=32, **TINY).loss_terms(batch)["rec"] == 0
    with pytest.raises(ValueError, match="target_poses"):
        DRGANModel(DRGANConfig(image_size=32, target_poses="random", **TINY))


def test_shapes_poses_and_the_no_geometry_twin():
    m = DRGANModel(DRGANConfig(image_size=32, **TINY)).eval()
    batch = _batch()
    assert m.num_poses == 9 and m.fake_class == 7
    assert m.pose_class(batch).tolist() == [0, 2, 4, -1, 5, 7, 8, 4]
    code = m.pose_code(m.pose_class(batch))
    assert code.shape == (8, 9) and code.sum(1).tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    f, w = m.enc(batch["image"])
    assert f.shape == (8, 32) and w.shape == (8,) and bool(((w > 0) & (w < 1)).all())
    img = m.decode(f, m.pose_class(batch))
    assert img.shape == (8, 3, 32, 32) and img.abs().max() <= 1
    cls_logits, pose_logits = m._disc(img)
    assert cls_logits.shape == (8, 8) and pose_logits.shape == (8, 9)
    assert m.classify(batch["image"]).shape == (8, 7)
    front = m.rotate(batch["image"], 0.0)
    assert front.shape == (8, 3, 32, 32) and 0 <= front.min() and front.max() <= 1
    zeros = torch.zeros(8, 16)
    assert torch.allclose(front, ((m.decode(f, torch.full((8,), 4), zeros) + 1) / 2).clamp(0, 1))
    assert torch.equal(m.rotate(batch["image"], 3.0), front)  # nearest bin
    assert not torch.equal(m.rotate(batch["image"], 45.0), front)
    rec, gen = m.generate(batch)
    assert torch.equal(gen, front) and rec.shape == gen.shape
    twin = DRGANModel(DRGANConfig(image_size=32, use_geometry=False, **TINY))
    assert twin.num_poses == 0 and not twin.uses_geometry() and twin.pose_code(torch.zeros(3).long()).shape == (3, 0)
    assert twin._disc(img)[1] is None and twin._disc(img)[0].shape == (8, 8)
    assert twin.loss_terms(batch)["d_pose"] == 0
    with pytest.raises(ValueError, match="without geometry"):
        twin.rotate(batch["image"], 0.0)
    grey = DRGANModel(DRGANConfig(image_size=32, channels=1, **TINY)).eval()
    assert grey.decode(f, torch.zeros(8).long()).shape == (8, 1, 32, 32)
    assert grey.rotate(batch["image"], 0).shape[1] == 3


def _trainer(out, max_steps, epochs=3, seed=11, multi=True):
    torch.manual_seed(seed)
    model = build_model("drgan", "small", image_size=32, multi_image=multi, **TINY)
    cfg = TrainConfig(epochs=epochs, batch_size=8, seed=1, device="cpu", max_steps=max_steps, progress=False,
                      samples=False)
    return Trainer(model, ArrayDataset(), out, cfg)


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    straight = _trainer(tmp_path / "a", max_steps=5)
    straight.fit()
    _trainer(tmp_path / "b", max_steps=2).fit()
    resumed = _trainer(tmp_path / "b", max_steps=5, seed=99)
    resumed.fit(resume=True)
    assert resumed.global_step == straight.global_step == 5
    a, ma = assert_resumed_run_equals_straight(straight, resumed, tmp_path / "a", tmp_path / "b")
    fresh = _trainer(tmp_path / "c", max_steps=5, seed=99)
    assert any(not torch.equal(v, a[f"p:{k}"]) for k, v in fresh.model.state_dict().items())


def test_fer_generate_frontalises_an_image(tmp_path):
    from face3dkit._cli.fer_cmd import main

    trainer = _trainer(tmp_path / "run", max_steps=None, epochs=1, multi=False)
    trainer.fit()
    write_run_info(tmp_path / "run", trainer.model, "small", 32, {"geometry": {"provider": "3dmm"}}, trainer.config)
    face = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    res = CliRunner().invoke(main, ["generate", str(tmp_path / "run"), str(tmp_path / "face.png"), "--yaw", "0",
                                    "--out", str(tmp_path / "front.png"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = np.asarray(Image.open(tmp_path / "front.png"))
    assert out.shape == (32, 64, 3)
    # The right half is the model's frontalisation of the resized input, recomputed here.
    from fer.data import resize_rgb
    from fer.train.run import load_run

    model, _ = load_run(tmp_path / "run")
    small = resize_rgb(face, 32)
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    ref = (model.rotate(x, 0.0)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(out[:, :32], small) and np.abs(out[:, 32:].astype(int) - ref).max() <= 1
    # A run without a pose code: one-line error naming the run.
    base = Trainer(build_model("baseline", "small", backbone="tiny", hidden=16), ArrayDataset(), tmp_path / "b",
                   TrainConfig(epochs=1, batch_size=8, device="cpu", progress=False))
    base.fit()
    write_run_info(tmp_path / "b", base.model, "small", 32, {"geometry": {"provider": "none"}}, base.config)
    res = CliRunner().invoke(main, ["generate", str(tmp_path / "b"), str(tmp_path / "face.png")])
    assert res.exit_code == 1 and "cannot change the pose" in res.output and str(tmp_path / "b") in res.output
