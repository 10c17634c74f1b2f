"""fer.models.mgln: part crops against numpy, fusion, VGG weights, training steps, exact resume."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from fer_arrays import ArrayDataset
from fer_arrays import StepContext as Ctx

from face3dkit.nets.vgg import VGG
from fer.data import SequenceDataset, collate_samples
from fer.evaluate import evaluate_model
from fer.models import MGLNConfig, MGLNModel, build_model, model_from_config
from fer.models.mgln import PART_POINTS, PARTS, TEMPLATE_BOXES, crop_boxes, part_boxes
from fer.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"global_channels": (16,), "part_channels": 8, "part_sizes": ((3, 5), (4, 4), (3, 4)), "lstm_hidden": 16,
        "dropout": 0.0, "lr": 1e-3}


def _seq_batch(b=6, t=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 3, size, size, generator=g)
    lm = 0.25 + 0.5 * torch.rand(b, t, 68, 2, generator=g)
    return {"frames": frames, "frame_landmarks": lm, "image": frames[:, -1], "landmarks": lm[:, -1],
            "label": torch.arange(b) % 7}


# -- geometry of the part crops ----------------------------------------------------------------------
def _np_boxes(lm, margin, min_size):
    """Independent re-derivation: per part, bounding box of its points grown by margin, min side."""
    out = []
    for name in PARTS:
        p = lm[list(PART_POINTS[name])]
        lo, hi = p.min(0), p.max(0)
        c, half = (lo + hi) / 2, np.maximum((hi - lo) * (0.5 + margin), min_size / 2)
        out.append(np.concatenate([c - half, c + half]))
    return np.stack(out)


def _np_bilinear_crop(img, box, h, w):
    """numpy bilinear resampling of box (normalised x0, y0, x1, y1) at h x w cell centres, zeros outside."""
    c, hh, ww = img.shape
    x0, y0, x1, y1 = box
    out = np.zeros((c, h, w))
    for i in range(h):
        for j in range(w):
            px = (x0 + (j + 0.5) * (x1 - x0) / w) * ww - 0.5  # pixel coordinates, centres at integers
            py = (y0 + (i + 0.5) * (y1 - y0) / h) * hh - 0.5
            fx, fy = int(np.floor(px)), int(np.floor(py))
            ax, ay = px - fx, py - fy
            for dy, wy in ((0, 1 - ay), (1, ay)):
                for dx, wx in ((0, 1 - ax), (1, ax)):
                    yy, xx = fy + dy, fx + dx
                    if 0 <= yy < hh and 0 <= xx < ww:
                        out[:, i, j] += wy * wx * img[:, yy, xx]
    return out


def test_part_boxes_match_a_numpy_rederivation_and_fall_back_to_the_template():
    rng = np.random.default_rng(0)
    lm = rng.uniform(0.2, 0.8, (2, 68, 2)).astype(np.float32)
    lm[1, list(PART_POINTS["nose"])] = 0.5  # a degenerate part: the minimum size applies
    got = part_boxes(torch.from_numpy(lm), margin=0.2, min_size=0.1).numpy()
    for k in range(2):
        np.testing.assert_allclose(got[k], _np_boxes(lm[k], 0.2, 0.1), atol=1e-6)
    np.testing.assert_allclose(got[1, 1], [0.45, 0.45, 0.55, 0.55], atol=1e-6)
    none = part_boxes(torch.zeros(3, 68, 2)).numpy()
    np.testing.assert_allclose(none[2], np.array([TEMPLATE_BOXES[n] for n in PARTS]), atol=1e-7)


def test_crop_of_a_pixel_aligned_box_is_the_numpy_slice_and_any_box_the_numpy_bilinear_crop():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((2, 3, 20, 24)).astype(np.float32)
    # pixels [5, 13) x [4, 10) of a 24 x 20 map: (x0, y0, x1, y1) = (5/24, 4/20, 13/24, 10/20)
    box = torch.tensor([[5 / 24, 4 / 20, 13 / 24, 10 / 20], [0.0, 0.0, 1.0, 1.0]])
    crop = crop_boxes(torch.from_numpy(img), box, (6, 8)).numpy()
    np.testing.assert_allclose(crop[0], img[0, :, 4:10, 5:13], atol=1e-5)
    odd = torch.tensor([[0.13, 0.27, 0.71, 0.66], [-0.1, 0.4, 0.5, 1.15]])  # the second leaves the map
    crop = crop_boxes(torch.from_numpy(img), odd, (5, 7)).numpy()
    for k in range(2):
        np.testing.assert_allclose(crop[k], _np_bilinear_crop(img[k], odd[k].numpy(), 5, 7), atol=1e-5)


def test_part_crops_land_on_the_eyes_nose_and_mouth():
    # A 64 x 64 image with a bright blob at the centre of each part's landmarks.
    lm = np.zeros((68, 2), np.float32)
    centres = {"eyes": (0.5, 0.35), "nose": (0.5, 0.55), "mouth": (0.5, 0.78)}
    spread = {"eyes": (0.30, 0.08), "nose": (0.07, 0.10), "mouth": (0.15, 0.06)}
    rng = np.random.default_rng(2)
    img = np.zeros((1, 64, 64), np.float32)
    for name in PARTS:
        idx = list(PART_POINTS[name])
        lm[idx] = np.array(centres[name]) + rng.uniform(-1, 1, (len(idx), 2)) * np.array(spread[name])
        cx, cy = (lm[idx].min(0) + lm[idx].max(0)) / 2 * 64  # pixel coordinates, centres at +0.5
        yy, xx = np.mgrid[0:64, 0:64] + 0.5
        img[0] += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.2 ** 2))
    boxes = part_boxes(torch.from_numpy(lm)[None], margin=0.15, min_size=0.12)[0]
    for p, name in enumerate(PARTS):
        x0, y0, x1, y1 = boxes[p].tolist()
        pts = lm[list(PART_POINTS[name])]
        assert (pts >= [x0, y0]).all() and (pts <= [x1, y1]).all(), name
        crop = crop_boxes(torch.from_numpy(img)[None], boxes[p:p + 1], (16, 16))[0, 0].numpy()
        np.testing.assert_allclose(crop, _np_bilinear_crop(img, boxes[p].numpy(), 16, 16)[0], atol=1e-5)
        # The part's blob sits at the centre of its crop (brightness centroid, in crop cells).
        ys, xs = np.mgrid[0:16, 0:16] + 0.5
        own = crop * (crop > 0.05)  # a neighbouring part's blob may reach into the margin, faintly
        m = own.sum()
        assert m > 0 and abs((own * xs).sum() / m - 8) < 0.5 and abs((own * ys).sum() / m - 8) < 0.5, name


# -- the network ---------------------------------------------------------------------------------------
def test_fusion_is_the_weighted_mean_of_the_module_probabilities():
    torch.manual_seed(0)
    batch = _seq_batch()
    for fusion, w in (("learned", 0.5), ("fixed", 0.3)):
        m = MGLNModel(MGLNConfig(fusion=fusion, fusion_weight=w, **TINY)).eval()
        out = {k: v.detach().double().numpy() for k, v in m.forward_modules(batch).items()}

        def softmax(z):
            e = np.exp(z - z.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        ref = np.log(w * softmax(out["global"]) + (1 - w) * softmax(out["part"]))
        np.testing.assert_allclose(out["fused"], ref, atol=1e-5)
        assert ("fusion_logit" in dict(m.named_parameters())) == (fusion == "learned")
        assert sorted(m.param_groups()) == (["fusion", "mgln"] if fusion == "learned" else ["mgln"])
        assert sum(len(v) for v in m.param_groups().values()) == len(list(m.parameters()))
    with pytest.raises(ValueError, match="fusion"):
        MGLNModel(MGLNConfig(fusion="max"))


def test_learned_fusion_weight_moves_toward_the_better_module():
    torch.manual_seed(0)
    batch = _seq_batch()
    y = batch["label"]
    for sign in (1.0, -1.0):  # global module right (w must grow) or wrong (w must shrink)
        m = MGLNModel(MGLNConfig(**{**TINY, "lr": 0.0}))  # the network stays fixed, only w learns
        real = m.global_module.forward
        m.global_module.forward = lambda f, real=real, sign=sign: real(f) + sign * 5.0 * torch.eye(7)[y]
        ctx = Ctx(m)
        w0 = float(m.fusion_weight.detach())
        for _ in range(20):
            m.train_step(batch, ctx)
        assert sign * (float(m.fusion_weight.detach()) - w0) > 0.03, (sign, float(m.fusion_weight.detach()))


def test_sequence_and_single_image_inputs_and_shapes():
    m = MGLNModel(MGLNConfig(**TINY)).eval()
    batch = _seq_batch(b=3, size=40)
    out = m.forward_modules(batch)
    assert all(v.shape == (3, 7) for v in out.values())
    assert m.classify(batch["image"]).shape == (3, 7) and m.classify_batch(batch).shape == (3, 7)
    single = m.classify_batch({"image": batch["image"], "landmarks": batch["landmarks"]})
    assert single.shape == (3, 7) and torch.isfinite(single).all()
    # The global module sees the peak frame only: changing an earlier frame changes only the part logits.
    changed = dict(batch, frames=batch["frames"].clone())
    changed["frames"][:, 0] = 0.0
    out2 = m.forward_modules(changed)
    assert torch.allclose(out2["global"], out["global"]) and not torch.allclose(out2["part"], out["part"])
    # The shared module is VGG-16's first 10 layers in torchvision's layout (BN layout from scratch).
    plain = MGLNModel(MGLNConfig(shared_batch_norm=False, **TINY))
    convs = [k for k in plain.shared.state_dict() if k.endswith("weight")]
    assert convs == ["features.0.weight", "features.2.weight", "features.5.weight", "features.7.weight"]
    assert len(plain.shared.features) == 10 and len(m.shared.features) == 14


def test_shared_module_loads_torchvision_vgg_weights(tmp_path):
    src = VGG((64, 64, "M", 128, 128, "M", 256, "M"), with_classifier=False)  # deeper keys must be skipped
    torch.nn.init.normal_(src.features[7].weight)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(src.state_dict(), path)
    m = build_model("mgln", "small", backbone_weights=str(path), **TINY)
    assert m.config.shared_batch_norm is False  # the file's layout
    assert torch.equal(m.shared.features[7].weight, src.features[7].weight)
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="bad.pth"):
        build_model("mgln", "small", backbone_weights=str(tmp_path / "bad.pth"), shared_batch_norm=False)


def test_config_round_trips_through_run_json():
    m = build_model("mgln", "paper", **TINY)
    cfg = json.loads(json.dumps(m.config.__dict__))
    again = model_from_config("mgln", cfg)
    assert again.config == m.config and isinstance(again.config.part_sizes[0], tuple)
    again.load_state_dict(m.state_dict())


def _terms(model, batch, seed=5):
    torch.manual_seed(seed)
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss_terms(batch).items() if not k.startswith("_")}


def test_training_steps_lower_every_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model("mgln", "small", **TINY)
    model.train()
    batch = _seq_batch()
    ctx = Ctx(model)
    before = _terms(model, batch)
    for _ in range(8):
        metrics = model.train_step(batch, ctx)
    after = _terms(model, batch)
    for k in ("ce_global", "ce_part", "nll_fused", "loss"):
        assert after[k] < before[k], (k, before[k], after[k])
    assert all(np.isfinite(v) for v in metrics.values()) and 0 < metrics["fusion_w"] < 1


def _sequences(n=24, seed=0):
    frames = ArrayDataset(n, size=32, seed=seed)
    frames.labels = (np.arange(n) // 3 % 7).astype(np.int64)  # three frames per sequence share a label
    return SequenceDataset(frames, 3, groups=[[3 * k, 3 * k + 1, 3 * k + 2] for k in range(n // 3)])


def _trainer(out, max_steps, seed=11):
    torch.manual_seed(seed)
    model = build_model("mgln", "small", **{**TINY, "dropout": 0.3})
    cfg = TrainConfig(epochs=3, batch_size=3, seed=1, device="cpu", max_steps=max_steps, progress=False,
                      samples=False)
    return Trainer(model, _sequences(), out, cfg)


def test_resume_reproduces_the_next_steps_exactly(tmp_path):
    # 8 sequences / batch 3 = 2 steps per epoch: stop after step 3, resume, run through step 5.
    straight = _trainer(tmp_path / "a", max_steps=5)
    straight.fit()
    first = _trainer(tmp_path / "b", max_steps=3)
    first.fit()
    resumed = _trainer(tmp_path / "b", max_steps=5, seed=99)
    resumed.fit(resume=True)
    assert resumed.global_step == straight.global_step == 5
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    oa, ob = straight.optimizers["mgln"].state_dict()["state"], resumed.optimizers["mgln"].state_dict()["state"]
    assert all(torch.equal(oa[i]["exp_avg"], ob[i]["exp_avg"]) for i in oa)
    fresh = _trainer(tmp_path / "c", max_steps=5, seed=99)
    assert any(not torch.equal(v, a[k]) for k, v in fresh.model.state_dict().items())


def test_evaluation_uses_frames_and_landmarks():
    torch.manual_seed(0)
    model = build_model("mgln", "small", **TINY).eval()
    seqs = _sequences()
    m = evaluate_model(model, seqs, batch_size=4)
    assert m["n"] == len(seqs) == 8
    batch = collate_samples([seqs[i] for i in range(8)])
    with torch.no_grad():
        pred = model.classify_batch(batch).argmax(1).numpy()
    assert m["accuracy"] == pytest.approx(float((pred == seqs.labels).mean()))


DDP_WORKER = textwrap.dedent('''
    import os, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])
    from fer_arrays import ArrayDataset
    from fer.data import SequenceDataset
    from fer.models import build_model
    from fer.train import TrainConfig, Trainer, distributed

    info = distributed.setup("cpu")
    frames = ArrayDataset(24, size=32)
    frames.labels = (np.arange(24) // 3 % 7).astype(np.int64)
    seqs = SequenceDataset(frames, 3, groups=[[3 * k, 3 * k + 1, 3 * k + 2] for k in range(8)])
    torch.manual_seed(100 + info.rank)  # different initial weights per rank: rank 0's are broadcast
    model = build_model("mgln", "small", global_channels=(16,), part_channels=8,
                        part_sizes=((3, 5), (4, 4), (3, 4)), lstm_hidden=16, dropout=0.3, lr=1e-3)
    cfg = TrainConfig(epochs=1, batch_size=2, seed=3, device="cpu", progress=False, samples=False)
    trainer = Trainer(model, seqs, os.path.join(sys.argv[1], "run"), cfg)
    trainer.fit()
    torch.save({"world": info.world_size, "state": trainer.model.state_dict(), "steps": trainer.global_step},
               os.path.join(sys.argv[1], f"rank{info.rank}.pt"))
    distributed.cleanup()
''')


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with Gloo is not available")
def test_torchrun_two_processes_keep_mgln_in_sync(tmp_path):
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun not found")
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [exe, "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path), os.path.dirname(__file__)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == 2  # 8 sequences / (2 ranks x 2)
    for k in r0["state"]:  # parameters, batch-norm statistics and the LSTM agree bit for bit
        torch.testing.assert_close(r1["state"][k], r0["state"][k], rtol=0, atol=0, msg=k)
    torch.manual_seed(100)  # rank 0's initial weights: training moved them
    init = build_model("mgln", "small", **{**TINY, "dropout": 0.3}).state_dict()
    assert init.keys() == r0["state"].keys() and not torch.equal(init["fusion_logit"], r0["state"]["fusion_logit"])
