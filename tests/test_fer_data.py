"""fer.data: every dataset format parsed from tiny files written here; bad rows/images reported and counted."""

import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from fer.data import (
    Fer2013Dataset,
    ImageFolderDataset,
    RafDbDataset,
    SynthConfig,
    SyntheticDataset,
    collate_samples,
    detect_format,
    generate_synthetic,
    open_dataset,
)
from fer.labels import EXPRESSIONS, scheme_mapping, yaw_bin

pytestmark = pytest.mark.usefixtures("one_thread")

# Canonical order, written out independently of fer.labels.
NEU, ANG, DIS, FEA, HAP, SAD, SUR = range(7)


def _png(path, value, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_canonical_order_and_dataset_mappings():
    assert EXPRESSIONS == ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise")
    # FER2013: 0 Angry 1 Disgust 2 Fear 3 Happy 4 Sad 5 Surprise 6 Neutral
    assert scheme_mapping("fer2013") == {0: ANG, 1: DIS, 2: FEA, 3: HAP, 4: SAD, 5: SUR, 6: NEU}
    # RAF-DB: 1 Surprise 2 Fear 3 Disgust 4 Happiness 5 Sadness 6 Anger 7 Neutral
    assert scheme_mapping("rafdb") == {1: SUR, 2: FEA, 3: DIS, 4: HAP, 5: SAD, 6: ANG, 7: NEU}
    # AffectNet: 0 Neutral 1 Happy 2 Sad 3 Surprise 4 Fear 5 Disgust 6 Anger 7 Contempt (skipped)
    assert scheme_mapping("affectnet") == {0: NEU, 1: HAP, 2: SAD, 3: SUR, 4: FEA, 5: DIS, 6: ANG, 7: None}
    assert yaw_bin(np.array([-60.0, -30, -7.6, 0, 7.5, 22.4, 50, np.nan])).tolist() == [0, 1, 2, 3, 4, 4, 6, -1]


def test_class_folders_labels_skips_and_reports(tmp_path, caplog):
    root = tmp_path / "ckplus"
    _png(root / "happy" / "a.png", 10)
    _png(root / "happy" / "sub" / "b.png", 20)
    _png(root / "Angry" / "c.png", 30)
    _png(root / "NE" / "d.png", 40)
    _png(root / "contempt" / "e.png", 50)
    (root / "surprised").mkdir()
    (root / "surprised" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "surprised" / "empty.jpg").write_bytes(b"")
    (root / "surprised" / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger="fer.data"):
        ds = ImageFolderDataset(root, image_size=8)
    got = sorted(zip([p.split("/")[-1] for p in ds.paths], ds.labels.tolist(), strict=True))
    assert got == [("a.png", HAP), ("b.png", HAP), ("c.png", ANG), ("d.png", NEU)]
    assert ds.report.skipped == 3 and ds.report.loaded == 4
    reasons = {p.file.split("/")[-1]: p.reason for p in ds.report.problems}
    assert set(reasons) == {"e.png", "broken.png", "empty.jpg"}
    assert "contempt" in reasons["e.png"] and reasons["empty.jpg"] == "empty file"
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    s = ds[0]
    assert s["image"].shape == (3, 8, 8) and s["image"].dtype == torch.float32
    assert s["identity"] == -1 and torch.isnan(s["pose"]).all() and s["pose_class"] == -1


def test_numbered_folders_need_a_scheme(tmp_path):
    for k in ("1", "7"):
        _png(tmp_path / "raf" / "train" / k / f"{k}.png", int(k))
    with pytest.raises(ValueError, match="label scheme"):
        ImageFolderDataset(tmp_path / "raf", split="train")
    with pytest.raises(ValueError, match="split"):
        ImageFolderDataset(tmp_path / "raf")
    ds = ImageFolderDataset(tmp_path / "raf", split="train", label_scheme="rafdb")
    assert dict(zip([p.split("/")[-1] for p in ds.paths], ds.labels.tolist(), strict=True)) == {
        "1.png": SUR, "7.png": NEU}


def test_corrupt_image_found_at_load_time_is_reported_and_dropped(tmp_path):
    root = tmp_path / "kdef"
    _png(root / "HA" / "ok.png", 100)
    bad = root / "SA" / "truncated.png"
    _png(bad, 60, size=(64, 64))
    bad.write_bytes(bad.read_bytes()[:60])  # header intact, data cut
    ds = ImageFolderDataset(root, image_size=8, check_images=False)
    assert len(ds) == 2
    batch = collate_samples([ds[i] for i in range(len(ds))])  # the broken sample is dropped from the batch
    assert batch["label"].tolist() == [HAP]
    assert ds.report.skipped == 1 and ds.report.problems[0].file == str(bad)
    ds2 = ImageFolderDataset(root, image_size=8, check_images=False)
    ds2.preload()
    assert len(ds2) == 1 and ds2.labels.tolist() == [HAP] and ds2.report.skipped == 1
    assert np.all(ds2.image(0) == 100)


def _fer_row(emotion, value, usage="Training", n=2304):
    return [str(emotion), " ".join([str(value)] * n), usage]


def test_fer2013_csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    rows = [
        ["emotion", "pixels", "Usage"],
        _fer_row(3, 7),                      # line 2: happy
        _fer_row(0, 200, "PublicTest"),      # line 3: angry
        _fer_row(6, 255, "PrivateTest"),     # line 4: neutral
        _fer_row(9, 1),                      # line 5: emotion out of range
        _fer_row(2, 1, n=2000),              # line 6: wrong pixel count
        ["x", "1 2 3", "Training"],          # line 7: non-integer emotion
        ["4", "1 2"],                        # line 8: missing field
        _fer_row(5, 1, "Holdout"),           # line 9: unknown usage
        _fer_row(1, 300),                    # line 10: pixel value out of range
    ]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = Fer2013Dataset(path, image_size=48)
    assert ds.labels.tolist() == [HAP, ANG, NEU]
    assert ds.sources == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert [p.line for p in ds.report.problems] == [5, 6, 7, 8, 9, 10]
    assert all(p.file == str(path) for p in ds.report.problems)
    assert "2000 pixel values" in ds.report.problems[1].reason
    assert ds.report.skipped == 6 and ds.report.loaded == 3
    img = ds[1]["image"]
    assert img.shape == (3, 48, 48) and torch.allclose(img, torch.full_like(img, 200 / 255))
    assert Fer2013Dataset(path, split="val").labels.tolist() == [ANG]
    assert Fer2013Dataset(path, split="test").labels.tolist() == [NEU]
    assert detect_format(path) == "fer2013"


def test_rafdb_label_file(tmp_path):
    root = tmp_path / "basic"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 1\n"      # surprise
        "train_00002.jpg 6\n"      # anger
        "train_00003.jpg 9\n"      # line 3: bad label
        "test_0001.jpg 7\n"        # neutral
        "test_0002.jpg 4\n"        # line 5: image missing
        "garbage line here\n"      # line 6: malformed
        "train_00004.jpg x\n"      # line 7: non-integer
    )
    for name in ("train_00001", "train_00002", "train_00003", "test_0001"):
        _png(root / "Image" / "aligned" / f"{name}_aligned.jpg", 90)
    ds = RafDbDataset(root)
    assert ds.labels.tolist() == [SUR, ANG, NEU]
    assert [p.line for p in ds.report.problems] == [3, 5, 6, 7]
    assert "not found" in ds.report.problems[1].reason
    assert RafDbDataset(root, split="test").labels.tolist() == [NEU]
    assert RafDbDataset(root, split="train").labels.tolist() == [SUR, ANG]
    assert detect_format(root) == "rafdb" and isinstance(open_dataset(root, split="test"), RafDbDataset)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n=28, size=32, seed=3, n_identities=4, test_fraction=0.25)
    meta = generate_synthetic(out, cfg, progress=False)
    return out, cfg, meta


def test_synthetic_set_layout_and_truth(tiny_synth):
    out, cfg, meta = tiny_synth
    assert detect_format(out) == "synthetic"
    tr, te = SyntheticDataset(out, "train"), SyntheticDataset(out, "test")
    assert len(tr) + len(te) == 28 and len(te) == 7  # one of 4 identities held out, 7 images each
    assert set(tr.identities.tolist()).isdisjoint(te.identities.tolist())
    assert np.bincount(np.concatenate([tr.labels, te.labels]), minlength=7).tolist() == [4] * 7
    every = SyntheticDataset(out)
    assert np.abs(every.true_pose[:, 0]).max() <= 60 and np.abs(every.true_pose[:, 1]).max() <= 20
    # The landmarks' centroid lies on the rendered face, the image corner on the uniform background.
    for i in range(len(every)):
        im = every.stored_image(i).astype(int)
        x, y = every.known_landmarks[i].mean(0)
        assert 4 <= x < 28 and 4 <= y < 28
        assert np.abs(im[int(y), int(x)] - im[0, 0]).sum() > 0


def test_synthetic_is_deterministic_per_seed(tiny_synth, tmp_path):
    out, cfg, _ = tiny_synth
    again = generate_synthetic(tmp_path / "again", cfg, progress=False)
    assert again["test_identities"] == tiny_synth[2]["test_identities"]
    assert (tmp_path / "again" / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()
    for name in ("000000.png", "000013.png"):
        assert (tmp_path / "again" / "images" / name).read_bytes() == (out / "images" / name).read_bytes()
    other = SynthConfig(**{**cfg.__dict__, "seed": 4, "n": 7})
    generate_synthetic(tmp_path / "other", other, progress=False)
    assert (tmp_path / "other" / "images" / "000000.png").read_bytes() != (out / "images" / "000000.png").read_bytes()


def test_synthetic_bad_rows_reported(tiny_synth, tmp_path):
    out, _, _ = tiny_synth
    lines = (out / "labels.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[3] = "12"  # label out of range on line 3
    lines[2] = ",".join(fields)
    lines[4] = ",".join(lines[4].split(",")[:10])  # truncated line 5
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").symlink_to(out / "images")
    (bad / "labels.csv").write_text("\n".join(lines) + "\n")
    ds = SyntheticDataset(bad)
    assert len(ds) == 26 and [p.line for p in ds.report.problems] == [3, 5]


def test_synthetic_arkit_mapping_gaze_and_blinks():
    """The default model's set: each class is its EMFACS prototype on the ARKit units (times an
    intensity that never reaches neutral), eyes gaze randomly, only sadness blinks."""
    import face3dkit
    from fer.data.synthetic import ARKIT_EXPRESSION_UNITS, SynthConfig, _sample_parameters, expression_units_for
    from fer.labels import EXPRESSIONS

    names = face3dkit.load_model("default").exp_names
    assert expression_units_for(names) is ARKIT_EXPRESSION_UNITS
    cfg = SynthConfig(n=700, nuisance_units=2)
    prm = _sample_parameters(cfg, names, 100, 19)
    exp, label = prm["exp"], prm["label"]
    col = {u: i for i, u in enumerate(names)}
    for k, cls in enumerate(EXPRESSIONS):
        rows = exp[label == k]
        for unit, w in ARKIT_EXPRESSION_UNITS[cls].items():
            # prototype x intensity U(0.6, 1) x jitter U(0.8, 1.2), + at most 2 nuisances of 0.2
            assert rows[:, col[unit]].min() >= 0.6 * 0.8 * w - 1e-6, (cls, unit)
            assert rows[:, col[unit]].max() <= 1.2 * w + 0.4 + 1e-6, (cls, unit)
        blink = rows[:, [col["eyeBlink_L"], col["eyeBlink_R"]]]
        assert (blink > 0).all() if cls == "sadness" else (blink == 0).all(), cls
    gaze = exp[:, [col[f"eyeLook{d}_{s}"] for d in ("In", "Out", "Up", "Down") for s in "LR"]]
    assert (gaze > 0).any(1).mean() > 0.95 and gaze.max() <= 0.4 + 1e-6
    # both eyes look the same way: left-out goes with right-in
    np.testing.assert_allclose(exp[:, col["eyeLookOut_L"]], exp[:, col["eyeLookIn_R"]])


def test_split_policy_per_format_and_folder_tree(tmp_path):
    """One declared policy per format: what trains, validates and is evaluated by default."""
    from fer.data import SPLIT_POLICIES, SplitPolicy, split_policy

    assert SPLIT_POLICIES["fer2013"] == SplitPolicy("train", "val", "test")
    for names, want in ((("train", "val", "test"), SplitPolicy("train", "val", "test")),
                        (("train", "test"), SplitPolicy("train", "test", "test")),
                        (("train", "validation"), SplitPolicy("train", "validation", None)),
                        (("happy", "sad"), SplitPolicy(None, None, None))):
        root = tmp_path / "_".join(names)
        for n in names:
            (root / n).mkdir(parents=True)
        assert split_policy(root) == want, names
