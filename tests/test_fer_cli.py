"""fer.evaluate metrics against scikit-learn, the confusion-matrix PNG, and the `fer` command end to end."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from face3dkit._cli.fer_cmd import main
from fer.evaluate import classification_metrics, draw_confusion_matrix

pytestmark = pytest.mark.usefixtures("one_thread")


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 200)  # class 6 never occurs
    pred = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 7, 200))
    yaw = rng.uniform(-60, 60, 200)
    m = classification_metrics(labels, pred, yaw)
    assert m["accuracy"] == pytest.approx((labels == pred).mean())
    present = sorted(set(labels.tolist()))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, labels=present, average="macro"))
    assert np.array_equal(np.array(m["confusion"]), sk_confusion(labels, pred, labels=list(range(7))))
    assert m["per_class"]["anger"]["accuracy"] == pytest.approx((pred[labels == 1] == 1).mean())
    assert np.isnan(m["per_class"]["surprise"]["accuracy"]) and m["per_class"]["surprise"]["n"] == 0
    sel = (yaw >= -7.5) & (yaw < 7.5)
    assert m["per_yaw"]["0"] == {"n": int(sel.sum()), "accuracy": pytest.approx((labels[sel] == pred[sel]).mean())}
    assert sum(v["n"] for v in m["per_yaw"].values()) == 200


def test_confusion_png_colours_follow_the_rows():
    cm = np.zeros((7, 7), int)
    cm[0, 0] = 10  # row 0: all correct -> darkest diagonal cell
    cm[1, 2] = 5  # row 1: all predicted as class 2
    img = draw_confusion_matrix(cm, [str(i) for i in range(7)], "t", cell=40)
    assert img.dtype == np.uint8 and img.ndim == 3
    # Find the cells by colour: the darkest blue appears exactly where a row is 100%.
    dark = (img[..., 0] < 60) & (img[..., 2] > 150)
    ys, xs = np.nonzero(dark)
    assert len(ys) > 0
    rows = sorted({int(y) // 40 for y in ys})  # two distinct cell rows are dark
    assert len({r for r in rows}) >= 2


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("fer_cli")
    runner = CliRunner()
    args = ["train", "--model", "ggpi", "--geometry", "3dmm", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--backbone", "tiny", "--synth-n", "42", "--synth-size", "32",
            "--landmark-iters", "20", "--cache-dir", str(base / "cache"), "--out", str(base / "run"),
            "--no-progress", "--threads", "1"]
    r = runner.invoke(main, args)
    assert r.exit_code == 0, r.output
    return base, r.output


def test_train_without_data_renders_a_synthetic_set_and_trains(trained_run):
    base, output = trained_run
    run = base / "run"
    assert "synthetic set: rendering 42 faces" in output and "held-out test" in output
    for name in ("run.json", "model.pt", "metrics.csv", "metrics.json", "checkpoints/last.pt",
                 "eval/test/confusion.png"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == "ggpi" and info["data"]["geometry"]["provider"] == "3dmm"
    assert info["data"]["train"]["geometry_stats"]["computed"] > 0
    synth = list((base / "cache" / "synthetic").iterdir())
    assert len(synth) == 1 and (synth[0] / "labels.csv").is_file()
    # The geometry cache is reused by a second run.
    r = CliRunner().invoke(main, ["train", "--model", "baseline", "--epochs", "1", "--batch-size", "8",
                                  "--image-size", "32", "--backbone", "tiny", "--synth-n", "42", "--synth-size",
                                  "32", "--cache-dir", str(base / "cache"), "--out", str(base / "run_b"),
                                  "--no-progress", "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert "(cached)" in r.output


def test_evaluate_and_predict(trained_run):
    base, _ = trained_run
    synth = next((base / "cache" / "synthetic").iterdir())
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", str(base / "run"), "--data", str(synth), "--json"])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    n_test = sum(1 for line in (synth / "labels.csv").read_text().splitlines()[1:] if line.split(",")[1] == "test")
    assert m["n"] == n_test and 0.0 <= m["accuracy"] <= 1.0 and len(m["confusion"]) == 7 and m["per_yaw"]
    assert (base / "run" / "eval" / synth.name / "confusion.png").is_file()
    r = runner.invoke(main, ["evaluate", str(base / "run"), "--data", str(synth), "--split", "all"])
    assert r.exit_code == 0 and "(42 images)" in r.output and "per yaw bin" in r.output
    img = str(synth / "images" / "000001.png")
    bad = base / "bad.png"
    bad.write_bytes(b"nope")
    r = runner.invoke(main, ["predict", str(base / "run"), img])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out[0]["image"] == img and out[0]["label"] in out[0]["probabilities"]
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    r = runner.invoke(main, ["predict", str(base / "run"), img, str(bad)])
    assert r.exit_code == 1 and '"error"' in r.output


def test_bad_input_gives_one_line_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", str(tmp_path), "--data", str(tmp_path)])
    assert r.exit_code == 1 and r.output.strip().startswith("Error:") and "run.json" in r.output
    assert "Traceback" not in r.output
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("a,b\n1,2\n")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x.png")
    r = runner.invoke(main, ["train", "--data", str(csv_path), "--out", str(tmp_path / "r"), "--no-progress"])
    assert r.exit_code == 1 and "not a FER2013 csv" in r.output
    r = runner.invoke(main, ["synth", str(tmp_path / "s"), "--n", "3"])
    assert r.exit_code == 1 and "--n >= 7" in r.output
