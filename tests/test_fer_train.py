"""fer.train: exact resume from a checkpoint, metrics files, sampler, schedules, augmentation."""


import pytest
import torch
from fer_arrays import ArrayDataset, assert_resumed_run_equals_straight

from fer.models import build_model
from fer.train import LRSchedule, ResumableBatchSampler, TrainConfig, Trainer
from fer.train.augment import IBUG_FLIP, augment_batch

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny", "enc_channels": 8, "gen_channels": 32, "cls_hidden": 64, "datt_fc": 64}


def _trainer(kind, out, max_steps, epochs=3, seed=11):
    torch.manual_seed(seed)  # a different init for every trainer: resume must overwrite all of it
    model = build_model(kind, "small", image_size=32, use_geometry=True, **TINY)
    cfg = TrainConfig(epochs=epochs, batch_size=8, seed=1, device="cpu", max_steps=max_steps, progress=False,
                      samples=False)
    return Trainer(model, ArrayDataset(), out, cfg)


@pytest.mark.parametrize("kind", ["ggpi", "baseline"])
def test_resume_reproduces_the_next_steps_exactly(kind, tmp_path):
    # 24 samples / batch 8 = 3 steps per epoch: stop after step 2, resume, run through step 5
    # (crossing an epoch boundary) and compare with an uninterrupted run, bit for bit.
    straight = _trainer(kind, tmp_path / "a", max_steps=5)
    straight.fit()
    first = _trainer(kind, tmp_path / "b", max_steps=2)
    first.fit()
    ckpt = tmp_path / "b" / "checkpoints" / "last.pt"
    assert ckpt.is_file()
    resumed = _trainer(kind, tmp_path / "b", max_steps=5, seed=99)
    resumed.fit(resume=True)
    assert resumed.global_step == straight.global_step == 5
    # ... the epoch metrics agree too (running sums of the interrupted epoch were restored).
    a, ma = assert_resumed_run_equals_straight(straight, resumed, tmp_path / "a", tmp_path / "b")
    # A model differing from the checkpoint before the resume proves the restore did the work.
    fresh = _trainer(kind, tmp_path / "c", max_steps=5, seed=99)
    assert any(not torch.equal(v, a[f"p:{k}"]) for k, v in fresh.model.state_dict().items())


def test_full_run_writes_metrics_and_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("ggpi", "small", image_size=32, use_geometry=True, **TINY)
    cfg = TrainConfig(epochs=2, batch_size=8, device="cpu", progress=False)
    trainer = Trainer(model, ArrayDataset(), tmp_path, cfg, val_set=ArrayDataset(14, seed=3))
    hist = trainer.fit()
    assert [r["epoch"] for r in hist] == [1, 2] and hist[-1]["step"] == 6
    for key in ("train_loss", "train_rec", "train_d", "images_per_s", "val_accuracy", "val_macro_f1", "lr"):
        assert key in hist[0], key
    assert any(k.startswith("val_acc_yaw") for k in hist[0])
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["epoch", "step"] and len((tmp_path / "metrics.csv").read_text().splitlines()) == 3
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "samples" / "epoch_002.png").is_file()
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert saved["kind"] == "ggpi" and saved["config"]["backbone"] == "tiny"


def test_sampler_order_resume_and_shards():
    s = ResumableBatchSampler(10, 3, seed=4)
    s.set_epoch(2)
    full = list(s)
    assert len(full) == 3 and len({i for b in full for i in b}) == 9  # drop_last
    s.set_epoch(2, start_batch=1)
    assert list(s) == full[1:]
    s.set_epoch(3)
    assert list(s) != full
    shards = [ResumableBatchSampler(12, 2, seed=4, rank=r, world_size=3) for r in range(3)]
    for sh in shards:
        sh.set_epoch(0)
    seen = [i for sh in shards for b in sh for i in b]
    assert sorted(seen) == list(range(12))


def test_lr_schedules():
    cos = LRSchedule("cosine", 100, 10)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0)
    paper = LRSchedule("paper", 100, 10)
    assert paper(19) == 1.0 and paper(20) == pytest.approx(0.99) and paper(45) == pytest.approx(0.99 ** 2)
    assert LRSchedule("constant", 5, 1)(4) == 1.0


def test_flip_augmentation_keeps_geometry_consistent():
    img = torch.zeros(1, 3, 8, 8)
    img[0, :, 2, 1] = 1.0  # a bright pixel at column 1, row 2 (centre x = 1.5 / 8)
    lm = torch.full((1, 68, 2), 0.5)
    lm[0, 36] = torch.tensor([1.5 / 8, 2.5 / 8])  # image-left eye corner on that pixel
    batch = {"image": img, "landmarks": lm, "pose_class": torch.tensor([1]),
             "geom_pose": torch.tensor([[-30.0, 5.0, 10.0]])}
    gen = torch.Generator().manual_seed(0)
    while True:  # find a seed that flips
        out = augment_batch(batch, gen, flip=True, scale=0.0, shift=0.0)
        if out["pose_class"].item() != 1:
            break
    assert IBUG_FLIP[36] == 45 and IBUG_FLIP[IBUG_FLIP[36]] == 36 and IBUG_FLIP[30] == 30
    assert torch.allclose(out["image"][0, 0], torch.flip(img[0, 0], [1]))
    assert torch.allclose(out["landmarks"][0, 45], torch.tensor([1 - 1.5 / 8, 2.5 / 8]))  # now the right corner
    assert out["pose_class"].item() == 5 and out["geom_pose"][0].tolist() == [30.0, 5.0, -10.0]


def test_mirror_batch_flips_every_sample_exactly():
    from fer.train.augment import mirror_batch

    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, 8, 8, generator=g)
    lm = torch.rand(3, 68, 2, generator=g)
    batch = {"image": img, "landmarks": lm, "pose_class": torch.tensor([0, 3, 6]),
             "geom_pose": torch.tensor([[-30.0, 5.0, 10.0]] * 3), "geom_exp": torch.arange(6.0).repeat(3, 1)}
    with pytest.raises(ValueError, match="exp_mirror"):
        mirror_batch(batch)
    perm = [1, 0, 3, 2, 4, 5]
    out = mirror_batch(batch, exp_mirror=perm)
    assert torch.equal(out["image"], torch.flip(img, [3]))  # exact: pixel centres map onto pixel centres
    want = lm[:, IBUG_FLIP].clone()
    want[..., 0] = 1 - want[..., 0]
    torch.testing.assert_close(out["landmarks"], want)
    assert out["pose_class"].tolist() == [6, 3, 0]
    assert out["geom_pose"][0].tolist() == [30.0, 5.0, -10.0]
    assert out["geom_exp"][0].tolist() == [1.0, 0.0, 3.0, 2.0, 4.0, 5.0]


def test_flip_tta_averages_the_probabilities_of_image_and_mirror():
    from fer.evaluate import predict_dataset

    class LeftRight(torch.nn.Module):
        """Logits from the brightness of the image's left and right halves (not mirror-invariant)."""

        def classify(self, x):
            left, right = x[..., : x.shape[-1] // 2].mean((1, 2, 3)), x[..., x.shape[-1] // 2:].mean((1, 2, 3))
            return torch.stack([left * 5, right * 5, *[torch.zeros_like(left)] * 5], 1)

    ds = ArrayDataset(n=10, size=16, seed=2)
    model = LeftRight()
    plain, idx = predict_dataset(model, ds, batch_size=4)
    flip, idx2 = predict_dataset(model, ds, batch_size=4, tta="flip")
    assert (idx == idx2).all()
    x = torch.stack([torch.as_tensor(ds.pixels[i]).permute(2, 0, 1).float() / 255 for i in idx])
    p1 = torch.softmax(model.classify(x), 1)
    p2 = torch.softmax(model.classify(torch.flip(x, [3])), 1)
    torch.testing.assert_close(torch.as_tensor(plain), p1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.as_tensor(flip), (p1 + p2) / 2, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tta"):
        predict_dataset(model, ds, tta="rotate")


def test_color_jitter_and_erase_leave_geometry_and_the_default_draws_alone():
    from fer.train.augment import color_jitter, random_erase

    g = torch.Generator().manual_seed(0)
    img = torch.rand(4, 3, 16, 16, generator=g)
    lm = torch.rand(4, 68, 2, generator=g)
    batch = {"image": img, "landmarks": lm}
    plain = augment_batch(batch, torch.Generator().manual_seed(5))
    same = augment_batch(batch, torch.Generator().manual_seed(5), color=0.0, erase=0.0)
    assert torch.equal(plain["image"], same["image"]) and torch.equal(plain["landmarks"], same["landmarks"])
    more = augment_batch(batch, torch.Generator().manual_seed(5), color=0.3, erase=1.0)
    assert torch.equal(more["landmarks"], plain["landmarks"]) and not torch.equal(more["image"], plain["image"])
    # color_jitter: contrast about the sample mean plus brightness, clamped
    c, d = torch.tensor([1.0, 1.2, 0.8, 1.0]), torch.tensor([0.0, 0.0, 0.1, -0.1])
    out = color_jitter(img, c, d)
    m = img.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, ((img - m) * c.view(-1, 1, 1, 1) + m + d.view(-1, 1, 1, 1)).clamp(0, 1))
    # random_erase: exactly the box, exactly the picked samples, every frame alike
    boxes = torch.tensor([[2, 5, 3, 9]] * 4)
    pick = torch.tensor([True, False, True, False])
    fill = torch.full((4,), 0.25)
    er = random_erase(img, pick, boxes, fill)
    expect = img.clone()
    expect[0, :, 2:5, 3:9] = 0.25
    expect[2, :, 2:5, 3:9] = 0.25
    assert torch.equal(er, expect)
    frames = img[:, None].repeat(1, 3, 1, 1, 1)
    erf = random_erase(frames, pick, boxes, fill)
    assert all(torch.equal(erf[:, t], expect) for t in range(3))


def test_weight_averaging_follows_its_recurrence_and_resumes(tmp_path):
    """TrainConfig.ema: after each step e <- d e + (1 - d) w with d = min(ema, (1 + t) / (10 + t));
    checked against the weights of runs stopped after 1, 2 and 3 steps; model.pt holds the average."""

    def run(out, steps, resume=False, epochs=1):
        torch.manual_seed(3)
        model = build_model("baseline", "small", image_size=32, use_geometry=False, **TINY)
        cfg = TrainConfig(epochs=epochs, batch_size=8, seed=1, device="cpu", max_steps=steps, progress=False,
                          samples=False, ema=0.5)
        t = Trainer(model, ArrayDataset(), out, cfg)
        t.fit(resume=resume)
        return t

    torch.manual_seed(3)
    init = build_model("baseline", "small", image_size=32, use_geometry=False, **TINY).state_dict()
    ws = [run(tmp_path / f"s{k}", k).model.state_dict() for k in (1, 2, 3)]
    last = run(tmp_path / "s3", 3, resume=True)  # nothing left to do: the restored state
    e = {k: v.clone() for k, v in init.items()}
    for t, w in enumerate(ws):
        d = min(0.5, (1 + t) / (10 + t))
        for k in e:
            e[k] = d * e[k] + (1 - d) * w[k] if e[k].is_floating_point() else w[k].clone()
    got = last.ema_model.state_dict()
    for k in e:
        torch.testing.assert_close(got[k], e[k], rtol=1e-5, atol=1e-6, msg=k)
    # Interrupted at step 2 and resumed to 3: the same average as straight through.
    run(tmp_path / "r", 2)
    res = run(tmp_path / "r", 3, resume=True)
    for k in e:
        torch.testing.assert_close(res.ema_model.state_dict()[k], got[k], rtol=0, atol=0, msg=k)
    full = run(tmp_path / "full", None)  # one whole epoch (3 steps): model.pt holds the averaged weights
    saved = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in full.ema_model.state_dict().items())
    assert any(not torch.equal(saved[k], v) for k, v in full.model.state_dict().items())


def test_requests_record_averaging_and_augmentation_and_resume_keeps_them(tmp_path):
    from click.testing import CliRunner

    from face3dkit._cli.fer_cmd import main
    from fer.train.api import RequestError, TrainRequest, _extra_settings

    assert _extra_settings(TrainRequest(), None) == {"ema": 0.0, "color_jitter": 0.0, "erase": 0.0}
    fresh = _extra_settings(TrainRequest(ema=0.99, erase=0.5), None)
    assert fresh == {"ema": 0.99, "color_jitter": 0.0, "erase": 0.5}
    prev = {"train": fresh}
    assert _extra_settings(TrainRequest(resume=True), prev) == fresh
    assert _extra_settings(TrainRequest(resume=True, ema=0.99), prev) == fresh
    with pytest.raises(RequestError, match="ema 0.99"):
        _extra_settings(TrainRequest(resume=True, ema=0.9), prev)
    r = CliRunner().invoke(main, ["train", "--ema", "1.0"])
    assert r.exit_code == 2 and "--ema" in r.output
    with pytest.raises(ValueError, match="ema"):
        Trainer(build_model("baseline", "small", image_size=32, use_geometry=False, **TINY), ArrayDataset(), tmp_path,
                TrainConfig(ema=1.5, device="cpu"))
