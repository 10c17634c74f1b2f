"""fer.models.geometry: the coefficient MLP, baseline+geometry fusion, their features, flips, resume, cache."""

import json
import math

import numpy as np
import pytest
import torch
from fer_arrays import ArrayDataset
from fer_arrays import StepContext as Ctx

import face3dkit
from fer.conditioning import GeometryCache, GeometryTable, attach_geometry
from fer.conditioning.providers import mirror_permutation
from fer.data.base import collate_samples
from fer.evaluate import evaluate_model
from fer.models import build_model, model_from_config
from fer.models.geometry import geometry_feature_dim, geometry_features
from fer.train import TrainConfig, Trainer
from fer.train.augment import augment_batch

pytestmark = pytest.mark.usefixtures("one_thread")

N_EXP = 6
NAMES = ["eye-left-closure", "eye-right-closure", "mouth-open", "brow-left-up", "brow-right-up", "jaw"]


class ExpDataset(ArrayDataset):
    """ArrayDataset whose geometry also carries expression coefficients (a function of the label)."""

    def __init__(self, n=24, size=32, seed=0):
        super().__init__(n, size, seed)
        rng = np.random.default_rng(seed + 100)
        exp = rng.normal(0, 0.3, (n, N_EXP)).astype(np.float32)
        exp[np.arange(n), self.labels % N_EXP] += 2.0
        g = self.geometry
        attach_geometry(self, GeometryTable(g.pose, g.landmarks, g.valid, exp=exp,
                                            exp_mirror=mirror_permutation(NAMES)))


def _model(kind, seed=0, **kw):
    torch.manual_seed(seed)
    if kind == "geometry":
        return build_model("geometry", "small", n_exp=N_EXP, hidden=(32, 32), **kw)
    return build_model("baseline", "small", fuse_geometry=True, n_exp=N_EXP, backbone="tiny", hidden=32,
                       geo_hidden=(16,), **kw)


def test_features_match_a_numpy_derivation():
    ds = ExpDataset(8)
    ds.geometry.valid[3] = False
    batch = collate_samples([ds[i] for i in range(8)])
    f = geometry_features(batch, N_EXP, use_landmarks=True).numpy()
    assert f.shape == (8, geometry_feature_dim(N_EXP, True)) == (8, N_EXP + 6 + 136 + 1)
    g = ds.geometry
    rad = g.pose.astype(np.float64) * math.pi / 180
    lm = g.landmarks.astype(np.float64)
    c = lm - lm.mean(1, keepdims=True)
    c = c / np.sqrt((c ** 2).sum(2).mean(1))[:, None, None]
    want = np.concatenate([g.exp, np.sin(rad), np.cos(rad), c.reshape(8, 136)], 1) * g.valid[:, None]
    want = np.concatenate([want, g.valid[:, None]], 1)
    np.testing.assert_allclose(f, want, atol=1e-5)
    assert not f[3].any()  # a failed fit: all zeros, flag 0


def test_missing_coefficients_are_one_line_errors():
    batch = collate_samples([ArrayDataset(4)[i] for i in range(4)])
    with pytest.raises(ValueError, match="no fitted expression coefficients"):
        geometry_features(batch, N_EXP)
    batch["geom_exp"] = torch.zeros(4, N_EXP + 1)
    with pytest.raises(ValueError, match=f"built for {N_EXP}"):
        geometry_features(batch, N_EXP)
    with pytest.raises(ValueError, match="classify_batch"):
        _model("geometry").classify(batch["image"])


@pytest.mark.parametrize("kind", ["geometry", "fusion"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(kind):
    model = _model(kind, lr=1e-2)
    model.train()
    ds = ExpDataset(16)
    batch = collate_samples([ds[i] for i in range(16)])

    def loss():
        torch.manual_seed(5)  # the same dropout masks before and after
        with torch.no_grad():
            return float(model.loss_terms(batch)["cls_real"])

    before = loss()
    torch.manual_seed(5)
    model.train_step(batch, Ctx(model))
    assert loss() < before


def test_fusion_reads_the_geometry_and_plain_baseline_is_unchanged():
    model = _model("fusion").eval()
    ds = ExpDataset(8)
    batch = collate_samples([ds[i] for i in range(8)])
    a = model.classify_batch(batch)
    batch["geom_exp"] = batch["geom_exp"] + 3.0
    assert not torch.allclose(a, model.classify_batch(batch))
    plain = build_model("baseline", "small", backbone="tiny", hidden=32)
    assert not plain.uses_geometry() and plain.geometry is None
    assert not any(k.startswith("geometry.") for k in plain.state_dict())
    assert plain.classifier.expression.in_features == 32 and model.classifier.expression.in_features == 32 + 16


def test_flip_permutes_coefficients_and_negates_yaw():
    ds = ExpDataset(16)
    batch = collate_samples([ds[i] for i in range(16)])
    perm = mirror_permutation(NAMES)
    assert perm.tolist() == [1, 0, 2, 4, 3, 5]
    out = augment_batch(batch, torch.Generator().manual_seed(3), scale=0, shift=0, exp_mirror=perm)
    flipped = (out["geom_pose"][:, 0] == -batch["geom_pose"][:, 0]) & (batch["geom_pose"][:, 0] != 0)
    assert 0 < int(flipped.sum()) < 16
    e, eo = batch["geom_exp"].numpy(), out["geom_exp"].numpy()
    for i in range(16):
        np.testing.assert_array_equal(eo[i], e[i][perm] if flipped[i] else e[i])
    # Without a mirror permutation, samples carrying coefficients are never flipped.
    same = augment_batch(batch, torch.Generator().manual_seed(3), scale=0, shift=0, exp_mirror=None)
    assert torch.equal(same["image"], batch["image"]) and torch.equal(same["geom_exp"], batch["geom_exp"])
    assert mirror_permutation(["a", "b"]) is None and mirror_permutation(["x-left"]) is None


@pytest.mark.parametrize("names, pairs", [
    # MakeHuman style (load_model("makehuman")): left / right words inside the name
    (["eye-left-closure", "mouth-open", "eye-right-closure", "nose-left-dilatation", "nose-right-dilatation"],
     {0: 2, 3: 4}),
    # ARKit / ICT-FaceKit style (the default model): _L / _R suffixes and Left / Right words
    (["eyeBlink_L", "eyeBlink_R", "jawOpen", "mouthLeft", "mouthSmile_R", "mouthRight", "mouthSmile_L",
      "browInnerUp_L", "browInnerUp_R"], {0: 1, 3: 5, 4: 6, 7: 8}),
])
def test_mirror_permutation_pairs_both_naming_styles(names, pairs):
    perm = mirror_permutation(names)
    want = np.arange(len(names))
    for i, j in pairs.items():
        want[i], want[j] = j, i
    assert perm is not None and perm.tolist() == want.tolist()
    assert sorted(perm.tolist()) == list(range(len(names)))  # a permutation, and its own inverse
    assert (perm[perm] == np.arange(len(names))).all()
    # An unpaired side component (suffix or word) has no mirror permutation.
    assert mirror_permutation(["eyeBlink_L", "jawOpen"]) is None
    assert mirror_permutation(["mouthLeft", "jawOpen"]) is None
    # A trailing letter that is not a side suffix is no side.
    assert mirror_permutation(["jawL", "mouthR"]) is None


@pytest.mark.parametrize("face_model", ["default", "makehuman"])
def test_3dmm_provider_mirror_of_shipped_models(face_model):
    import face3dkit
    from fer.conditioning.providers import ThreeDMMProvider

    names = list(face3dkit.load_model(face_model).exp_names)
    perm = ThreeDMMProvider(face_model).exp_mirror()
    assert perm is not None and len(perm) == len(names) and (perm[perm] == np.arange(len(names))).all()
    moved = [i for i in range(len(names)) if perm[i] != i]
    assert moved, f"{face_model}: no left/right pairs found"
    for i in moved:
        a, b = names[i], names[perm[i]]
        assert a != b and (a.lower().replace("left", "right") == b.lower()
                           or a.lower().replace("right", "left") == b.lower()
                           or (a[:-1] == b[:-1] and {a[-1], b[-1]} == {"L", "R"}))
    if face_model == "default":  # ARKit names: every _L has its _R
        side = [n for n in names if n.endswith(("_L", "_R"))]
        assert side and all(perm[names.index(n)] == names.index(n[:-1] + ("R" if n[-1] == "L" else "L"))
                            for n in side)


def _trainer(kind, out, max_steps, seed=11):
    model = _model(kind, seed=seed)
    cfg = TrainConfig(epochs=3, batch_size=8, seed=1, device="cpu", max_steps=max_steps, progress=False,
                      samples=False)
    return Trainer(model, ExpDataset(), out, cfg)


@pytest.mark.parametrize("kind", ["geometry", "fusion"])
def test_resume_reproduces_the_next_steps_exactly(kind, tmp_path):
    straight = _trainer(kind, tmp_path / "a", max_steps=5)
    straight.fit()
    _trainer(kind, tmp_path / "b", max_steps=2).fit()
    resumed = _trainer(kind, tmp_path / "b", max_steps=5, seed=99)
    fresh = {k: v.clone() for k, v in resumed.model.state_dict().items()}
    resumed.fit(resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(fresh[k], a[k]) for k in a)  # the restore did the work


def test_evaluate_and_reload_use_the_geometry(tmp_path):
    model = _model("geometry").eval()
    ds = ExpDataset(10)
    m = evaluate_model(model, ds, 4, "cpu")
    batch = collate_samples([ds[i] for i in range(10)])
    with torch.no_grad():
        want = model.classify_batch(batch).argmax(1).numpy()
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(float((want == ds.labels).mean()))
    from dataclasses import asdict

    again = model_from_config("geometry", asdict(model.config))
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval().classify_batch(batch), model.classify_batch(batch))
    with pytest.raises(ValueError, match="unknown geometry settings"):
        model_from_config("geometry", {"backbone": "tiny"})


def test_cache_keeps_coefficients_and_replaces_rows_without_them(tmp_path):
    cache = GeometryCache(tmp_path)
    settings = {"provider": "3dmm", "version": 99}
    ds = ExpDataset(4)
    cache.store(["a", "b"], ds.geometry.take([0, 1]), settings)
    found, table = cache.lookup(["b", "a", "z"], settings)
    assert found.tolist() == [True, True, False]
    np.testing.assert_array_equal(table.exp[:2], ds.geometry.exp[[1, 0]])
    assert not table.exp[2].any()
    old = GeometryTable(ds.geometry.pose[:1], ds.geometry.landmarks[:1], ds.geometry.valid[:1])
    cache.store(["c"], old, settings)  # another layout: earlier rows are dropped, not mixed
    found, table = cache.lookup(["a", "c"], settings)
    assert found.tolist() == [False, True] and table.exp is None


def test_cli_trains_evaluates_and_predicts_geometry_models(tmp_path):
    from click.testing import CliRunner

    from face3dkit._cli.fer_cmd import main

    runner = CliRunner()
    common = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--backbone", "tiny", "--synth-n", "42",
              "--synth-size", "32", "--landmark-iters", "10", "--cache-dir", str(tmp_path / "cache"),
              "--no-progress", "--threads", "1"]
    r = runner.invoke(main, ["train", "--model", "geometry", "--out", str(tmp_path / "geo"), *common])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "geo" / "run.json").read_text())
    n_units = len(face3dkit.load_model("default").exp_names)  # the default model's expression units
    assert info["model"] == "geometry" and info["model_config"]["n_exp"] == n_units
    assert info["data"]["geometry"]["provider"] == "3dmm"
    r = runner.invoke(main, ["train", "--model", "baseline", "--geometry", "3dmm", "--out", str(tmp_path / "fused"),
                             *common])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "fused" / "run.json").read_text())["model_config"]
    assert cfg["fuse_geometry"] and cfg["n_exp"] == n_units
    synth = next((tmp_path / "cache" / "synthetic").iterdir())
    for run in ("geo", "fused"):
        r = runner.invoke(main, ["evaluate", str(tmp_path / run), "--data", str(synth), "--json",
                                 "--cache-dir", str(tmp_path / "cache")])
        assert r.exit_code == 0, r.output
        m = json.loads(r.output)
        assert m["n"] > 0 and m["skipped"] == 0 and m["weights"]["finished"]
    r = runner.invoke(main, ["predict", str(tmp_path / "geo"), str(synth / "images" / "000001.png"),
                             "--cache-dir", str(tmp_path / "cache")])
    if r.exit_code == 1 and "detector" in r.output:
        pytest.skip("no 68-point landmark detector for predicting raw images")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out[0]["label"] in out[0]["probabilities"]
    r = runner.invoke(main, ["train", "--model", "geometry", "--geometry", "none", "--out", str(tmp_path / "x"),
                             *common])
    assert r.exit_code == 2 and "needs geometry" in r.output
