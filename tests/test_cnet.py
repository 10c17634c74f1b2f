"""Deng et al.'s C-Net: confidence-weighted aggregation, checkpoints, synthetic identity sets and
training (:mod:`face3dkit.nets.cnet`, :mod:`face3dkit.regress.cnet`)."""

import numpy as np
import pytest
import torch

import face3dkit
from face3dkit.model import Coefficients
from face3dkit.nets import CheckpointMismatchError, CNet, RNet, aggregate
from face3dkit.regress import (
    CNetRunError,
    CNetTrainConfig,
    SyntheticFaces,
    aggregate_coefficients,
    identity_sets,
    train_cnet,
)

pytestmark = pytest.mark.slow

SIZE = 64
HELD_OUT = 10**6  # a step index no run here reaches: held-out identity sets of the same seed


@pytest.fixture(scope="module")
def model():
    return face3dkit.load_model("default")


@pytest.fixture(scope="module")
def rnet_file(tmp_path_factory, model, one_thread):
    """A tiny R-Net (ResNet-18 at 64 px) whose identity and albedo heads are random (std 0.2): its
    predictions vary from image to image, the other heads stay zero (frontal mean-expression renders)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = RNet(model.layout, "resnet18", input_size=SIZE)
        for i in (0, 2):  # identity, albedo heads
            torch.nn.init.normal_(net.final_layers[i].weight, std=0.2)
    return net.save(tmp_path_factory.mktemp("rnet") / "rnet.pt")


def test_aggregate_is_the_confidence_weighted_mean():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 4, 7))
    c = rng.uniform(0.1, 2.0, size=(3, 4, 7))
    want = (c * v).sum(1) / c.sum(1)
    got = aggregate(torch.tensor(v), torch.tensor(c))
    assert got.shape == (3, 7)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-7, atol=1e-9)
    # Confidences broadcast (one per image), and scaling a set's confidences changes nothing.
    ci = rng.uniform(0.1, 2.0, size=(3, 4, 1))
    np.testing.assert_allclose(aggregate(torch.tensor(v), torch.tensor(ci)).numpy(), (ci * v).sum(1) / ci.sum(1),
                               rtol=1e-7)
    np.testing.assert_allclose(aggregate(torch.tensor(v), torch.tensor(5 * c)).numpy(), want, rtol=1e-7)
    with pytest.raises(ValueError, match=r"\(S, K, D\)"):
        aggregate(torch.zeros(4, 7), torch.ones(4, 7))


def test_untrained_cnet_aggregates_by_the_plain_mean():
    torch.manual_seed(0)
    net = CNet(32, 5, 3, width=8).eval()
    feats = torch.randn(6, 32, 4, 4)
    ci, ct = net(feats)
    assert ci.shape == (6, 5) and ct.shape == (6, 3)
    torch.testing.assert_close(ci, torch.ones(6, 5))
    torch.testing.assert_close(ct, torch.ones(6, 3))
    vals = torch.randn(2, 3, 5)
    torch.testing.assert_close(aggregate(vals, ci.reshape(2, 3, 5)), vals.mean(1), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="feature maps"):
        net(torch.randn(6, 31, 4, 4))
    with pytest.raises(ValueError, match=">= 1"):
        CNet(32, 0, 3)


def test_aggregate_coefficients_keeps_the_per_image_blocks(model):
    lay = model.layout
    torch.manual_seed(1)
    c = Coefficients.split(torch.randn(6, lay.total), lay)
    ci, ct = torch.rand(6, lay.n_id) + 0.1, torch.rand(6, lay.n_tex) + 0.1
    out, a_id, a_tex = aggregate_coefficients(c, ci, ct, 2)
    assert a_id.shape == (2, lay.n_id) and a_tex.shape == (2, lay.n_tex)
    want = (ci.reshape(2, 3, -1) * c.id.reshape(2, 3, -1)).sum(1) / ci.reshape(2, 3, -1).sum(1)
    torch.testing.assert_close(a_id, want)
    assert torch.equal(out.id[:3], a_id[0].expand(3, -1)) and torch.equal(out.id[3:], a_id[1].expand(3, -1))
    assert torch.equal(out.tex[4], a_tex[1])
    for block in ("exp", "angles", "gamma", "trans"):
        assert torch.equal(getattr(out, block), getattr(c, block))
    _, plain, _ = aggregate_coefficients(c, None, None, 3)
    torch.testing.assert_close(plain, c.id.reshape(3, 2, -1).mean(1))
    with pytest.raises(ValueError, match="sets of equal size"):
        aggregate_coefficients(c, None, None, 4)


def test_cnet_save_load_round_trip_and_wrong_files(tmp_path, rnet_file):
    torch.manual_seed(2)
    net = CNet(16, 4, 3, width=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    net.save(tmp_path / "c.pt", note="x")
    back = CNet.load(tmp_path / "c.pt")
    assert (back.feature_channels, back.n_id, back.n_tex, back.width) == (16, 4, 3, 8)
    a, b = net.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for bad, what in ((rnet_file, "not a C-Net checkpoint"), (tmp_path / "missing.pt", "no such C-Net checkpoint")):
        with pytest.raises(CheckpointMismatchError) as e:
            CNet.load(bad)
        msg = str(e.value)
        assert what in msg and str(bad) in msg and "\n" not in msg
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointMismatchError, match="junk.pt: not a readable C-Net checkpoint"):
        CNet.load(tmp_path / "junk.pt")


def test_identity_sets_share_identity_within_a_set_only(model):
    state = torch.get_rng_state()
    b = identity_sets(model, SyntheticFaces(size=32), 3, 4, seed=0, step=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert b["image"].shape == (3, 4, 32, 32, 3) and b["landmarks"].shape == (3, 4, 68, 2)
    c = Coefficients.split(b["coeffs"].reshape(12, -1), model.layout)
    ids, tex = c.id.reshape(3, 4, -1), c.tex.reshape(3, 4, -1)
    exp, ang = c.exp.reshape(3, 4, -1), c.angles.reshape(3, 4, -1)
    for s in range(3):
        assert torch.equal(ids[s], ids[s, :1].expand(4, -1)) and torch.equal(tex[s], tex[s, :1].expand(4, -1))
        for k in range(1, 4):
            assert not torch.equal(exp[s, 0], exp[s, k]) and not torch.equal(ang[s, 0], ang[s, k])
            assert not torch.equal(b["image"][s, 0], b["image"][s, k])
    for s, t in ((0, 1), (0, 2), (1, 2)):
        assert (ids[s, 0] - ids[t, 0]).abs().max() > 0.1 and (tex[s, 0] - tex[t, 0]).abs().max() > 0.1
    again = identity_sets(model, SyntheticFaces(size=32), 3, 4, seed=0, step=5)
    assert all(torch.equal(again[k], b[k]) for k in b)
    other = identity_sets(model, SyntheticFaces(size=32), 3, 4, seed=0, step=6)
    assert not torch.equal(other["coeffs"], b["coeffs"])


def _cfg(rnet_file, **kw):
    base = dict(rnet=str(rnet_file), steps=3, set_size=3, sets_per_batch=2, lr=1e-3, width=8, checkpoint_every=2,
                data=SyntheticFaces(size=SIZE))
    return CNetTrainConfig(**{**base, **kw})


def test_train_cnet_run_folder_resume_and_refusal(tmp_path, rnet_file, one_thread):
    """Three steps in one go equal two steps, a checkpoint and a resumed third step, to the bit; the
    run folder holds its files; a second run into it without resume is refused."""
    cfg = _cfg(rnet_file)
    full = train_cnet(tmp_path / "a", cfg)
    assert [r["step"] for r in full] == [1, 2, 3] and all("supervised" in r and "loss" in r for r in full)
    for name in ("config.json", "checkpoint.pt", "metrics.csv", "cnet.pt"):
        assert (tmp_path / "a" / name).is_file(), name
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == 4  # header + 3 steps
    net = CNet.load(tmp_path / "a" / "cnet.pt")
    lay = face3dkit.load_model("default").layout
    assert (net.feature_channels, net.n_id, net.n_tex, net.width) == (RNet.load(rnet_file).feature_channels,
                                                                     lay.n_id, lay.n_tex, 8)

    part = train_cnet(tmp_path / "b", _cfg(rnet_file, steps=2))
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    ck["config"]["steps"] = 3  # continue b to 3 steps with the longer plan
    torch.save(ck, tmp_path / "b" / "checkpoint.pt")
    resumed = train_cnet(tmp_path / "b", resume=True)
    assert resumed[:2] == part and resumed[2] == full[2]  # equal floats
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["net"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["net"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    with pytest.raises(CNetRunError, match="--resume"):
        train_cnet(tmp_path / "a", cfg)
    with pytest.raises(CNetRunError, match="R-Net"):
        train_cnet(tmp_path / "c", CNetTrainConfig(rnet=""))
    with pytest.raises(CheckpointMismatchError, match="no such R-Net"):
        train_cnet(tmp_path / "d", _cfg(tmp_path / "missing.pt"))


def _held_out_identity_error(model, rnet, cnet, data, n_batches=2):
    """Mean squared error of the aggregated identity vs the truth on held-out identity sets
    (``cnet`` None: the plain mean)."""
    errs = []
    for step in range(HELD_OUT, HELD_OUT + n_batches):
        b = identity_sets(model, data, 4, 3, seed=0, step=step)
        s, k = b["image"].shape[:2]
        with torch.no_grad():
            pred, feats = rnet.forward_with_features(b["image"].reshape(s * k, SIZE, SIZE, 3).permute(0, 3, 1, 2))
            ci, ct = cnet(feats) if cnet is not None else (None, None)
            _, a_id, _ = aggregate_coefficients(Coefficients.split(pred, model.layout), ci, ct, s)
        true = Coefficients.split(b["coeffs"][:, 0], model.layout)
        errs.append(float((a_id - true.id).pow(2).mean()))
    return sum(errs) / len(errs)


def test_training_lowers_the_held_out_aggregate_identity_error(tmp_path, model, rnet_file, one_thread):
    """30 supervised steps: on identity sets the run never saw, the C-Net's aggregate is closer to the
    true identity than the plain mean. (The R-Net here is random-headed: what the C-Net can learn is
    to trust the images whose predictions are less extreme, read from the same features.)"""
    cfg = _cfg(rnet_file, steps=30, lr=1e-2, checkpoint_every=100)
    rows = train_cnet(tmp_path / "run", cfg)
    rnet = RNet.load(rnet_file).eval()
    cnet = CNet.load(tmp_path / "run" / "cnet.pt").eval()
    plain = _held_out_identity_error(model, rnet, None, cfg.data)
    learned = _held_out_identity_error(model, rnet, cnet, cfg.data)
    assert learned < 0.8 * plain, (plain, learned, [round(r["supervised"], 3) for r in rows])


def test_train_cnet_command(tmp_path, rnet_file, one_thread):
    from click.testing import CliRunner

    from face3dkit._cli.face3dkit_cmd import main

    run = tmp_path / "run"
    args = ["train-cnet", "--rnet", str(rnet_file), "--out", str(run), "--steps", "2", "--set-size", "2",
            "--sets-per-batch", "1", "--size", str(SIZE), "--width", "8", "--no-progress", "--threads", "1",
            "--device", "cpu"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output and (run / "cnet.pt").is_file()
    r = CliRunner().invoke(main, args)  # the folder holds a run: refused in one line
    assert r.exit_code == 1 and "--resume" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, [*args, "--resume", "--progress"])  # resumed at its end: nothing left to do
    assert r.exit_code == 0 and "trained 2 steps" in r.output, r.output
    r = CliRunner().invoke(main, ["train-cnet", "--rnet", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x"),
                                  "--no-progress"])
    assert r.exit_code == 1 and "nope.pt: no such R-Net checkpoint" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train-cnet", "--out", str(tmp_path / "z"), "--no-progress"])
    assert r.exit_code == 2 and "--rnet" in r.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    r = CliRunner().invoke(main, ["train-cnet", "--rnet", str(bad), "--out", str(tmp_path / "w"), "--no-progress"])
    assert r.exit_code == 1 and "bad.pt: not a readable R-Net checkpoint" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_benchmark_script_runs_and_an_untrained_cnet_is_the_plain_mean(tmp_path, rnet_file, monkeypatch, capsys,
                                                                       one_thread):
    import runpy
    import sys
    from pathlib import Path

    cnet = CNet(RNet.load(rnet_file).feature_channels, face3dkit.load_model("default").n_id,
                face3dkit.load_model("default").n_tex, width=8).save(tmp_path / "cnet.pt")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cnet.py"
    monkeypatch.setattr(sys, "argv", ["cnet.py", "--rnet", str(rnet_file), "--cnet", str(cnet), "--sets", "3",
                                      "--set-size", "2", "--batch-sets", "2", "--size", str(SIZE), "--threads", "1"])
    runpy.run_path(str(script), run_name="__main__")
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| estimate")}
    floor = "mean face (zero identity and albedo: the floor)"
    assert set(rows) == {floor, "single image", "plain mean", "C-Net"}
    assert rows["C-Net"] == rows["plain mean"]  # confidences all 1
    assert float(rows[floor][0]) > 0 and rows[floor] != rows["plain mean"]
    assert float(rows["single image"][0]) > 0
