"""fer.data.sequences: CK+-style names, folder-of-frames layouts, synthetic sequences, augmentation, CLI."""

import csv
import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from face3dkit._cli.fer_cmd import main
from fer.data import (
    ImageFolderDataset,
    SequenceDataset,
    SynthConfig,
    SyntheticDataset,
    generate_synthetic,
    open_sequence_frames,
)
from fer.data.sequences import frame_positions
from fer.labels import EXPRESSIONS
from fer.train.augment import augment_batch

pytestmark = pytest.mark.usefixtures("one_thread")


def _png(path, value, size=12):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def _grey(sample_frames):
    """(T, 3, S, S) -> the T grey levels (0..255) of constant frames."""
    return [round(float(f.mean()) * 255) for f in sample_frames]


def test_ck_style_names_group_by_subject_and_sequence_ordered_by_frame(tmp_path):
    root = tmp_path / "ck"
    # anger: subject 10 sequence 4, frames 17, 9, 15 written out of order; subject 10 sequence 5 (two frames)
    for frame, value in ((17, 30), (9, 10), (15, 20)):
        _png(root / "anger" / f"S010_004_{frame:08d}.png", value)
    for frame, value in ((3, 40), (4, 50)):
        _png(root / "anger" / f"S010_005_{frame:08d}.png", value)
    # happy: subject 22 sequence 1 with five frames -> onset, middle, peak
    for frame in range(1, 6):
        _png(root / "happy" / f"S022_001_{frame:08d}.png", 100 + frame)
    _png(root / "happy" / "other.png", 200)  # not a CK name: a sequence of one frame
    frames = ImageFolderDataset(root)
    seqs = SequenceDataset(frames, length=3)
    assert len(seqs) == 4
    by_first = {_grey(seqs[i]["frames"])[-1]: seqs[i] for i in range(len(seqs))}
    assert _grey(by_first[30]["frames"]) == [10, 20, 30]  # frame 9, 15, 17
    assert _grey(by_first[50]["frames"]) == [40, 40, 50]  # two frames: the onset repeated
    assert _grey(by_first[105]["frames"]) == [101, 103, 105]  # five frames: first, middle, last
    assert _grey(by_first[200]["frames"]) == [200, 200, 200]
    assert by_first[30]["label"] == EXPRESSIONS.index("anger") and by_first[105]["label"] == EXPRESSIONS.index(
        "happiness")
    assert by_first[30]["identity"] == 10 and by_first[105]["identity"] == 22 and by_first[200]["identity"] == -1
    s = by_first[30]
    assert torch.equal(s["image"], s["frames"][-1]) and s["frames"].shape == (3, 3, 12, 12)
    assert s["frame_landmarks"].shape == (3, 68, 2) and s["frame_index"].shape == (3,)
    assert sorted(seqs.sources) == sorted(str(frames.sources[i]) for i in seqs.sequences[:, -1])
    assert frame_positions(5, 3) == [0, 2, 4] and frame_positions(2, 3) == [0, 0, 1] and frame_positions(4, 1) == [3]


def test_folder_of_frames_layout_orders_frames_naturally(tmp_path):
    root = tmp_path / "seqs" / "train"
    for name, value in (("frame10.png", 12), ("frame2.png", 11), ("frame1.png", 10)):
        _png(root / "surprise" / "clip_a" / name, value)
    for name, value in (("img_001.png", 60), ("img_002.png", 61), ("img_003.png", 62), ("img_004.png", 63)):
        _png(root / "sad" / "subject7" / "take2" / name, value)
    frames = open_sequence_frames(tmp_path / "seqs", split="train", image_size=8)
    seqs = SequenceDataset(frames, length=3)
    assert len(seqs) == 2
    got = sorted(_grey(seqs[i]["frames"]) for i in range(2))
    assert got == [[10, 11, 12], [60, 62, 63]]  # four frames: round(linspace(0, 3, 3)) = 0, 2, 3


@pytest.fixture(scope="module")
def synth_seq(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_seq")
    cfg = SynthConfig(n=14, size=32, seed=5, n_identities=4, test_fraction=0.25, sequence=3)
    meta = generate_synthetic(out, cfg, progress=False)
    return out, cfg, meta


def test_synthetic_sequences_ramp_from_neutral_to_the_peak(synth_seq):
    out, cfg, meta = synth_seq
    assert meta["frames_per_face"] == 3 and sum(meta["counts"].values()) == 14  # faces (sequences) per split
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 42 and [r["frame"] for r in rows[:3]] == ["0", "1", "2"]
    for k in range(14):
        r0, r1, r2 = rows[3 * k:3 * k + 3]
        assert r0["sequence"] == r1["sequence"] == r2["sequence"] == str(k)
        assert float(r0["intensity"]) == 0.0
        assert float(r1["intensity"]) == pytest.approx(float(r2["intensity"]) / 2, abs=1e-4)
        assert r0["yaw"] == r2["yaw"] and r0["label"] == r2["label"]
    # Same identity, same pose and light, zero expression: the onset frames of one face differ from the
    # peak, and the onset landmarks of two faces of one identity at the same pose would agree; here we
    # check the expression moved the landmarks and the ramp is close to linear (3D points are linear in
    # the weights; the perspective projection nearly so for a small motion).
    lm = np.array([[float(r[f"lm{j}_{a}"]) for j in range(68) for a in "xy"] for r in rows]).reshape(14, 3, 68, 2)
    moved = np.abs(lm[:, 2] - lm[:, 0]).max((1, 2))
    labels = np.array([int(rows[3 * k]["label"]) for k in range(14)])
    assert (moved[labels != 0] > 0.05).all()
    np.testing.assert_allclose(lm[:, 1], (lm[:, 0] + lm[:, 2]) / 2, atol=0.05)
    # Images: the peak-only view (per-frame models) and all frames grouped into sequences.
    peak = SyntheticDataset(out)
    assert len(peak) == 14 and all(p.endswith("_2.png") for p in peak.paths)
    frames = open_sequence_frames(out, image_size=32)
    seqs = SequenceDataset(frames, 3)
    assert len(frames) == 42 and len(seqs) == 14
    for i in range(len(seqs)):
        names = [frames.paths[j].rsplit("/", 1)[1] for j in seqs.sequences[i]]
        assert [n.split("_")[1] for n in names] == ["0.png", "1.png", "2.png"]
        assert len({n.split("_")[0] for n in names}) == 1
    sample = seqs[0]
    np.testing.assert_array_equal(sample["frames"][2].numpy(), peak[int(np.flatnonzero(
        np.array(peak.paths) == frames.paths[seqs.sequences[0, 2]])[0])]["image"].numpy())
    # Still-image sets keep the cache keys they had before sequences existed.
    still = SynthConfig(n=14, size=32, seed=5)
    d = asdict(still)
    del d["sequence"]
    assert still.key() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert cfg.key() != SynthConfig(n=14, size=32, seed=5, n_identities=4, test_fraction=0.25).key()


def test_augmentation_moves_every_frame_like_the_peak():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 3, 3, 16, 16, generator=g)
    lm = 0.2 + 0.6 * torch.rand(4, 3, 68, 2, generator=g)
    lm[1] = 0.0  # unknown landmarks stay zero
    batch = {"image": frames[:, -1].clone(), "landmarks": lm[:, -1].clone(), "frames": frames,
             "frame_landmarks": lm, "label": torch.zeros(4, dtype=torch.long)}
    out = augment_batch(batch, torch.Generator().manual_seed(3))
    assert torch.allclose(out["frames"][:, -1], out["image"], atol=1e-6)
    assert torch.allclose(out["frame_landmarks"][:, -1], out["landmarks"], atol=1e-6)
    assert (out["frame_landmarks"][1] == 0).all()
    # Each earlier frame gets its sample's transform: redo it frame by frame through the image path.
    for t in range(2):
        one = augment_batch({"image": frames[:, t].clone(), "landmarks": lm[:, t].clone()},
                            torch.Generator().manual_seed(3))
        assert torch.allclose(out["frames"][:, t], one["image"], atol=1e-6)
        assert torch.allclose(out["frame_landmarks"][:, t], one["landmarks"], atol=1e-6)


def test_cli_trains_and_evaluates_mgln_on_synthetic_sequences(synth_seq, tmp_path):
    out, _, _ = synth_seq
    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(main, ["train", "--model", "mgln", "--data", str(out), "--geometry", "landmarks",
                             "--epochs", "1", "--batch-size", "4", "--image-size", "32", "--out", str(run),
                             "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "sequences of 3 frames" in r.output and "mgln" in r.output
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "mgln" and info["data"]["sequence_length"] == 3
    r = runner.invoke(main, ["evaluate", str(run), "--data", str(out), "--json", "--cache-dir",
                             str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output[r.output.index("{"):])
    assert m["n"] == info["data"]["val"]["samples"]  # test-split sequences
    # `fer predict` has single images and no landmarks: the global face module answers.
    r = runner.invoke(main, ["predict", str(run), str(out / "images" / "000000_2.png")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["label"] in EXPRESSIONS


@pytest.mark.parametrize("face_model", ["default", "makehuman"])
def test_synthetic_sequences_hold_the_gaze(face_model):
    """The ramp scales the expression, not the gaze: eyeLook* units (ARKit default model) are held at their
    drawn value in every frame, so the onset frame is the neutral face looking where the peak looks."""
    import face3dkit
    from fer.data.synthetic import _sample_parameters

    model = face3dkit.load_model(face_model)
    names = list(model.exp_names)
    prm = _sample_parameters(SynthConfig(n=14, size=32, seed=5), names, model.n_id, model.n_tex)
    held = {names[i] for i in np.flatnonzero(prm["held"])}
    assert held == {n for n in names if n.startswith("eyeLook")}
    if held:  # the gaze is drawn: some faces look away, and no expression prototype uses eyeLook units
        assert (prm["exp"][:, prm["held"] > 0] > 0).any()
