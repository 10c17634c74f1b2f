"""Run-folder safety of `fer train` / `fer evaluate`: failed or repeated runs never damage an existing run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from face3dkit._cli.face3dkit_cmd import main as f3d_main
from face3dkit._cli.fer_cmd import main
from fer.train.run import load_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _folders(root, classes=("happy", "sad", "surprise"), per_class=6, size=16, seed=0):
    """Class folders with train/ and test/ (a fixed split, like CK+48) of random grayscale images."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class if split == "train" else 2):
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(d / f"S{i:03d}_{c}.png")
    return root


def _train(data, out, *extra):
    args = ["train", "--model", "baseline", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--batch-size", "6", "--image-size", "16", "--backbone", "tiny", "--no-progress", "--threads", "1",
            "--cache-dir", str(out.parent / "cache"), *extra]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("runsafety")
    data = _folders(base / "data")
    r = _train(data, base / "run")
    assert r.exit_code == 0, r.output
    return base, data


def _snapshot(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_failed_train_into_an_existing_run_leaves_it_intact(finished, monkeypatch):
    base, data = finished
    run = base / "run"
    before = _snapshot(run)

    def boom(self, resume=False):
        raise OSError("disk full")

    monkeypatch.setattr("fer.train.Trainer.fit", boom)
    # A different model into the same folder: today's code rewrote run.json before training failed.
    r = _train(data, run, "--backbone", "cnn", "--epochs", "3")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert _snapshot(run) == before
    # ... and a --resume that fails mid-way leaves run.json and the weights as they were too.
    r = _train(data, run, "--resume", "--epochs", "3")
    assert r.exit_code == 1 and "disk full" in r.output
    assert _snapshot(run) == before
    model, info = load_run(run)
    assert info["model_config"]["backbone"] == "tiny" and info["weights"]["finished"]


def test_rerun_of_an_existing_run_asks_for_resume_or_restart_in_one_line(finished):
    base, data = finished
    before = _snapshot(base / "run")
    r = _train(data, base / "run")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:")
    assert "--resume" in lines[0] and "--restart" in lines[0] and "1 of 1 epochs done" in lines[0]
    assert _snapshot(base / "run") == before


def test_interrupted_run_resumes_and_restart_replaces(tmp_path, monkeypatch):
    from fer.train import Trainer

    data = _folders(tmp_path / "data")
    run = tmp_path / "run"
    # An interrupted run: Ctrl-C right after the checkpoint of the first of 3 epochs.
    save = Trainer.save_checkpoint

    def interrupted(self, path=None):
        save(self, path)
        if self.epoch == 1:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save_checkpoint", interrupted)
        r = _train(data, run, "--epochs", "3")
    assert r.exit_code == 1 and (run / "checkpoints" / "last.pt").is_file() and not (run / "model.pt").exists()
    r = _train(data, run, "--epochs", "3")
    assert r.exit_code == 1 and "1 of 3 epochs done, unfinished" in r.output and "--resume" in r.output
    # `fer evaluate` on it says which epoch it evaluates.
    r = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert "checkpoints/last.pt after epoch 1 of 3" in r.output and "unfinished" in r.output
    r = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(data), "--json"])
    w = json.loads(r.output)["weights"]
    assert w == {"file": "checkpoints/last.pt", "epoch": 1, "epochs": 3, "step": 3, "batches_into_next_epoch": 0,
                 "finished": False}
    r = _train(data, run, "--epochs", "3", "--resume")
    assert r.exit_code == 0, r.output
    assert len(json.loads((run / "metrics.json").read_text())) == 3  # epochs 2 and 3 added to the first
    _, info = load_run(run)
    assert info["weights"]["finished"] and info["weights"]["epoch"] == 3
    # --restart replaces the run (a new model kind, old files gone).
    (run / "eval" / "stale.txt").write_text("x")
    r = _train(data, run, "--restart", "--backbone", "cnn")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "run.json").read_text())["model_config"]["backbone"] == "cnn"
    assert len(json.loads((run / "metrics.json").read_text())) == 1 and not (run / "eval" / "stale.txt").exists()
    r = _train(data, run, "--restart", "--resume")
    assert r.exit_code == 2 and "exclude each other" in r.output


@pytest.mark.parametrize("option,value", [("--epochs", "0"), ("--batch-size", "1"), ("--epochs", "-3"),
                                          ("--batch-size", "x")])
def test_epochs_and_batch_size_are_validated(tmp_path, option, value):
    r = _train(tmp_path / "nodata", tmp_path / "run", option, value)
    assert r.exit_code == 2 and option in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_one_class_dataset_is_refused(tmp_path):
    data = _folders(tmp_path / "data", classes=("happy",))
    r = _train(data, tmp_path / "run")
    assert r.exit_code == 1 and "one class only (happiness (6 images))" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run" / "run.json").exists()


def test_progress_flags_are_spelled_alike_in_both_commands(tmp_path):
    for cmd, name in ((main, "train"), (main, "synth"), (f3d_main, "reconstruct")):
        text = CliRunner().invoke(cmd, [name, "--help"]).output
        assert "--progress / --no-progress" in text, name
        assert "--quiet" not in text, name
    # the old spelling of `fer synth` still works (hidden alias of --no-progress)
    from face3dkit._cli import fer_cmd

    seen = {}
    orig = fer_cmd.synth.callback

    def spy(**kw):
        seen.update(kw)

    fer_cmd.synth.callback = spy
    try:
        assert CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--quiet"]).exit_code == 0
        assert seen["progress"] is False
        assert CliRunner().invoke(main, ["synth", str(tmp_path / "s")]).exit_code == 0
        assert seen["progress"] is True
    finally:
        fer_cmd.synth.callback = orig
