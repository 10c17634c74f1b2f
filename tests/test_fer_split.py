"""Subject-disjoint validation splits of a training set (fer.data.split) and `fer train --val-subjects`."""

import json

import numpy as np
import pytest
from PIL import Image

from fer.data import ImageFolderDataset, holdout_subjects, subject_split
from fer.train import TrainRequest, prepare_data, run_training
from fer.train.api import RequestError

pytestmark = pytest.mark.usefixtures("one_thread")


def _labels_and_subjects(n_subjects=20, classes=4, per=3, seed=0):
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for s in range(n_subjects):
        for c in rng.choice(classes, size=2, replace=False):  # each subject posed 2 of the classes
            ids += [100 + s] * per
            labels += [int(c)] * per
    return np.array(ids), np.array(labels)


def test_subject_split_is_disjoint_complete_seeded_and_covers_classes():
    ids, labels = _labels_and_subjects()
    tr, va = subject_split(ids, labels, 0.25, seed=3)
    # Complete and disjoint as index sets, and no subject on both sides.
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(ids)))
    assert set(ids[tr]).isdisjoint(set(ids[va]))
    assert len(set(ids[va])) == 5  # round(0.25 * 20) whole subjects
    # Every class on both sides.
    assert set(labels[va]) == set(labels) == set(labels[tr])
    # Same seed -> same split; another seed -> (here) another one.
    tr2, va2 = subject_split(ids, labels, 0.25, seed=3)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    assert not np.array_equal(va, subject_split(ids, labels, 0.25, seed=4)[1])
    # Tiny fractions still hold out one subject; large ones leave one to train on.
    assert len(set(ids[subject_split(ids, labels, 0.01)[1]])) == 1
    assert len(set(ids[subject_split(ids, labels, 0.99)[0]])) == 1


def test_subject_split_refuses_bad_input():
    ids, labels = _labels_and_subjects(n_subjects=3)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        subject_split(ids, labels, 1.0)
    bad = ids.copy()
    bad[0] = -1
    with pytest.raises(ValueError, match="1 of 18 samples have no subject id"):
        subject_split(bad, labels, 0.3)
    with pytest.raises(ValueError, match="at least two subjects"):
        subject_split(np.zeros(4, int), np.arange(4), 0.5)


def _ck_tree(root, subjects=(5, 11, 37, 42, 50, 61), size=20):
    """CK+-style tree: train/<class>/S<subject>_<seq>_<frame>.png (each subject posed every class, three
    frames each; the pixel value encodes the subject) and a test/ split that must stay unread."""
    for split, subs in (("train", subjects), ("test", (90,))):
        for c, cls in enumerate(("happy", "sad", "anger")):
            d = root / split / cls
            d.mkdir(parents=True)
            for s in subs:
                for frame in (7, 8, 9):
                    name = f"S{s:03d}_{c + 1:03d}_{frame:08d}.png"
                    Image.fromarray(np.full((size, size), s + c, np.uint8)).save(d / name)


def test_holdout_subjects_on_ck_names(tmp_path):
    _ck_tree(tmp_path)
    ds = ImageFolderDataset(tmp_path, split="train", image_size=16)
    ds.preload()
    before = (ds.labels.copy(), list(ds.paths))
    train, val = holdout_subjects(ds, 1 / 3, seed=0, where=str(tmp_path))
    assert (ds.identities == -1).all() and list(ds.paths) == before[1]  # the input is left as it was
    assert len(train) + len(val) == len(ds) == 54 and len(set(val.identities)) == 2
    assert set(train.identities).isdisjoint(val.identities)
    for part in (train, val):  # identities, labels, paths and decoded pixels stay aligned
        for i in range(len(part)):
            name = part.paths[i].split("/")[-1]
            assert int(name[1:4]) == part.identities[i]
            assert part.image(i)[0, 0, 0] == int(name[1:4]) + int(name[5:8]) - 1
    with pytest.raises(ValueError, match=f"{tmp_path}: .*no subject id"):
        other = ImageFolderDataset(tmp_path, split="train", image_size=16)
        other.paths = [p.replace("/S", "/x") for p in other.paths]
        holdout_subjects(other, 0.3, where=str(tmp_path))


def test_prepare_data_and_fer_train_with_val_subjects(tmp_path):
    _ck_tree(tmp_path / "ck")
    lines: list[str] = []
    train, val, info = prepare_data(tmp_path / "ck", 16, "none", cache_dir=tmp_path / "cache", progress=False,
                                    echo=lines.append, val_subjects=0.5)
    assert info["val_split"] is None and info["val_subjects"]["fraction"] == 0.5
    assert len(info["val_subjects"]["subjects"]) == 3 and set(info["val_subjects"]["subjects"]) == set(val.identities)
    assert 90 not in set(train.identities) | set(val.identities)  # the test split was not read
    assert info["train"]["samples"] + info["val"]["samples"] == 54
    assert any("3 of 6 training subjects held out (27 images; 27 left to train on)" in s for s in lines)
    with pytest.raises(ValueError, match="not both"):
        prepare_data(tmp_path / "ck", 16, "none", val_data=str(tmp_path / "ck"), val_subjects=0.5, progress=False,
                     echo=lines.append)

    req = TrainRequest(model="baseline", geometry="none", data=str(tmp_path / "ck"), val_subjects=0.5, epochs=1,
                       batch_size=8, image_size=16, profile="small", backbone="tiny", cache_dir=str(tmp_path / "cache"),
                       out=str(tmp_path / "run"), progress=False, device="cpu")
    out = run_training(req, echo=lines.append)
    assert out.held_out == "val-subjects" and out.metrics["n"] == 27
    assert (tmp_path / "run" / "eval" / "val-subjects" / "metrics.json").is_file()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["data"]["val_subjects"]["subjects"] == info["val_subjects"]["subjects"]  # same split for any seed
    # A resume keeps the run's split; asking for another one is refused.
    with pytest.raises(RequestError, match="val-subjects 0.5"):
        run_training(TrainRequest(**{**req.__dict__, "resume": True, "val_subjects": 0.3}))
    with pytest.raises(RequestError, match=r"in \(0, 1\)"):
        run_training(TrainRequest(**{**req.__dict__, "out": str(tmp_path / "r2"), "val_subjects": 1.5}))
