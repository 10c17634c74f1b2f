"""fer TDGAN: shapes, training on a fixed batch lowers its losses, exact resume, the pair loader on files."""


import numpy as np
import pytest
import torch
from fer_arrays import ArrayDataset, assert_resumed_run_equals_straight
from fer_arrays import StepContext as Ctx
from PIL import Image

from fer.data import ImageFolderDataset, PairedDataset, attach_subject_identities, subject_ids_from_names
from fer.data.pairs import IdentityFolderDataset
from fer.models import TDGANConfig, TDGANModel, build_model
from fer.models.gan_blocks import to_network, to_unit
from fer.train import TrainConfig, Trainer, training_data

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny", "enc_channels": 8, "gen_channels": 32, "disc_channels": 8, "exp_dim": 32,
        "face_dim": 32, "noise_dim": 16}


def _batch(b=8, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(b, 3, size, size, generator=g), "label": torch.arange(b) % 7,
            "face_image": torch.rand(b, 3, size, size, generator=g), "face_identity": torch.arange(b) % 3}


def _terms(model, batch, seed=123):
    torch.manual_seed(seed)  # same noise and dropout before and after
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss_terms(batch).items() if not k.startswith("_")}


def test_training_steps_lower_the_losses_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model("tdgan", "small", image_size=32, num_identities=3, lr=1e-3, d_face_every=1, d_exp_every=1,
                        **TINY)
    model.train()
    batch = _batch()
    before = _terms(model, batch)
    ctx = Ctx(model)
    for _ in range(5):
        metrics = model.train_step(batch, ctx)
    after = _terms(model, batch)
    # Each network's own objective falls: the classifier, both reconstructions (dual-image consistency),
    # the perceptual term, both discriminators, and the generator's total.
    for k in ("cls_real", "dic_face", "dic_exp", "per_face", "d_face", "d_exp", "g"):
        assert after[k] < before[k], (k, before[k], after[k])
    assert all(np.isfinite(v) for v in metrics.values())
    assert int(model.steps_done) == 5


def test_discriminator_schedule_follows_the_step_counter():
    torch.manual_seed(0)
    model = build_model("tdgan", "small", image_size=32, num_identities=3, d_face_every=2, d_exp_every=3, **TINY)
    ctx = Ctx(model)
    ran = []
    for _ in range(6):
        before = [p.detach().clone() for p in (model.D_f.head.weight, model.D_e.head.weight)]
        model.train_step(_batch(), ctx)
        ran.append(tuple(not torch.equal(b, p) for b, p in zip(before, (model.D_f.head.weight,
                                                                         model.D_e.head.weight), strict=True)))
    assert ran == [(s % 2 == 0, s % 3 == 0) for s in range(6)]


def test_shapes_channels_and_transfer():
    cfg = TDGANConfig(image_size=32, num_identities=5, **TINY)
    m = TDGANModel(cfg).eval()
    x = torch.rand(3, 3, 32, 32)
    code, logits = m.encode_expression(x)
    assert code.shape == (3, 32) and logits.shape == (3, 7) and m.classify(x).shape == (3, 7)
    f, feats = m.E_f(to_network(x, 1), return_features=True)
    assert f.shape == (3, 32) and [t.shape[-1] for t in feats] == [16, 8, 4]
    img = m.decode(f, code)
    assert img.shape == (3, 1, 32, 32) and img.abs().max() <= 1  # grey, tanh
    assert m.D_f(img).shape == (3, 6) and m.fake_class == 5  # K identities + fake
    assert m.D_e(img).shape == (3, 7)
    out = m.transfer(x, torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 2])  # grey replicated
    rgb = TDGANModel(TDGANConfig(image_size=32, channels=3, num_identities=2, **TINY)).eval()
    assert rgb.decode(*[torch.zeros(2, 32)] * 2).shape == (2, 3, 32, 32)
    # grey conversion: BT.601 luma, [0, 1] -> [-1, 1]
    px = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    assert float(to_network(px, 1)) == pytest.approx((0.299 + 0.587 * 0.5) * 2 - 1)
    assert torch.equal(to_unit(to_network(px, 3)), px)
    with pytest.raises(ValueError, match="power of two"):
        TDGANModel(TDGANConfig(image_size=48, **TINY))
    with pytest.raises(ValueError, match="face_image"):
        m.train_step({"image": x, "label": torch.zeros(3, dtype=torch.long)}, Ctx(m))
    bad = {**_batch(3), "face_identity": torch.tensor([0, 1, 5])}
    with pytest.raises(ValueError, match="0..4"):
        m.loss_terms(bad)


def _write_ck_tree(root, rng, size=20):
    """CK+-style tree: root/train/<class>/S<subject>_<seq>_<frame>.png; returns {path name: subject}."""
    names = {}
    for cls, subjects in (("happy", (5, 11)), ("sad", (5, 37)), ("anger", (11,))):
        d = root / "train" / cls
        d.mkdir(parents=True)
        for s in subjects:
            for frame in (7, 8):
                name = f"S{s:03d}_00{frame % 3 + 1}_{frame:08d}.png"
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(d / name)
                names[name] = s
    return names


def test_pair_loader_on_written_files(tmp_path):
    rng = np.random.default_rng(0)
    names = _write_ck_tree(tmp_path / "ck", rng)
    expr = ImageFolderDataset(tmp_path / "ck", split="train", image_size=16)
    assert (expr.identities == -1).all()
    assert attach_subject_identities(expr) == len(expr) == 10
    assert [names[p.split("/")[-1]] for p in expr.paths] == expr.identities.tolist()
    assert subject_ids_from_names(["a/S042_003_00000001.png", "b/x.png"]).tolist() == [42, -1]
    # A separate face set: one folder per person (4 people, one unreadable file reported and skipped).
    faces_root = tmp_path / "faces"
    pixels = {}
    for k, person in enumerate(("ann", "bob", "cy", "dee")):
        (faces_root / person).mkdir(parents=True)
        for j in range(2):
            arr = np.full((16, 16, 3), 30 * k + j, np.uint8)
            Image.fromarray(arr).save(faces_root / person / f"{j}.png")
            pixels[30 * k + j] = k
    (faces_root / "bob" / "broken.png").write_bytes(b"not a png")
    faces = IdentityFolderDataset(faces_root, image_size=16)
    assert len(faces) == 8 and faces.report.skipped == 1 and faces.identities.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    pairs = PairedDataset(expr, faces, seed=3)
    assert len(pairs) == len(expr) and pairs.num_identities == 4
    draws = {}
    for epoch in (0, 1):
        pairs.set_epoch(epoch)
        for i in range(len(pairs)):
            s = pairs[i]
            assert torch.equal(s["image"], expr[i]["image"]) and s["label"] == expr.labels[i]
            value = round(float(s["face_image"][0, 0, 0]) * 255)  # which face file was drawn
            assert s["face_identity"] == pixels[value] and s["face_label"] == -1
            assert s["face_image"].shape == (3, 16, 16)
            draws[epoch, i] = value
    # Draws are a pure function of (seed, epoch, index): recomputed independently here.
    for (epoch, i), value in draws.items():
        j = int(np.random.default_rng([3, epoch, i]).integers(8))
        assert round(float(faces[j]["image"][0, 0, 0]) * 255) == value
    assert [draws[0, i] for i in range(10)] != [draws[1, i] for i in range(10)]
    assert pairs.labels is expr.labels  # other attributes are the FER set's
    # Self-pairing (CK+: the FER set is its own face set): identities renumbered 0..K-1.
    self_pairs, extra = training_data("tdgan", expr, seed=0)
    assert extra == {"num_identities": 3} and self_pairs.identity_values.tolist() == [5, 11, 37]
    s = self_pairs[0]
    assert s["face_label"] in expr.labels.tolist() and 0 <= s["face_identity"] < 3
    with pytest.raises(ValueError, match="no image with a known identity"):
        PairedDataset(expr, ImageFolderDataset(tmp_path / "ck", split="train", image_size=16))
    with pytest.raises(ValueError, match="same image_size"):
        PairedDataset(expr, IdentityFolderDataset(faces_root, image_size=32))


def _trainer(out, max_steps, epochs=3, seed=11):
    torch.manual_seed(seed)  # a different init for every trainer: resume must overwrite all of it
    data, extra = training_data("tdgan", ArrayDataset(), seed=1)
    model = build_model("tdgan", "small", image_size=32, d_face_every=2, d_exp_every=3, **TINY, **extra)
    cfg = TrainConfig(epochs=epochs, batch_size=8, seed=1, device="cpu", max_steps=max_steps, progress=False,
                      samples=False)
    return Trainer(model, data, out, cfg)


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    # 24 samples / batch 8 = 3 steps per epoch: stop after step 2, resume to step 5 (past an epoch end,
    # so the pairs of epoch 1 are drawn after the resume) and compare with an uninterrupted run.
    straight = _trainer(tmp_path / "a", max_steps=5)
    straight.fit()
    _trainer(tmp_path / "b", max_steps=2).fit()
    resumed = _trainer(tmp_path / "b", max_steps=5, seed=99)
    resumed.fit(resume=True)
    assert resumed.global_step == straight.global_step == 5 and int(resumed.model.steps_done) == 5
    a, ma = assert_resumed_run_equals_straight(straight, resumed, tmp_path / "a", tmp_path / "b")
    assert "train_dic_face" in ma[0] and "train_adv_exp" in ma[0]
    fresh = _trainer(tmp_path / "c", max_steps=5, seed=99)
    assert any(not torch.equal(v, a[f"p:{k}"]) for k, v in fresh.model.state_dict().items())
