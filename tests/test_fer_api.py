"""fer's orchestration as library calls: fer.train.run_training (what `fer train` does) and
fer.predict (what `fer predict` prints), without the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

import fer
from fer.train import TrainRequest, run_training
from fer.train.api import RequestError, RunExistsError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_run_training_and_predict_without_the_cli(tmp_path):
    lines: list[str] = []
    req = TrainRequest(model="baseline", geometry="none", epochs=1, batch_size=8, image_size=32, profile="small",
                       backbone="tiny", synth_n=28, synth_size=32, cache_dir=str(tmp_path / "cache"),
                       out=str(tmp_path / "run"), progress=False, device="cpu")
    out = run_training(req, echo=lines.append)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == "baseline" and info["image_size"] == 32
    assert out.out_dir == tmp_path / "run" and len(out.history) == 1 and (tmp_path / "run" / "model.pt").is_file()
    # The held-out report the outcome names is the one written, with the metrics it returns.
    written = json.loads(out.report["metrics"].read_text())
    assert written["accuracy"] == out.metrics["accuracy"] and 0.0 <= out.metrics["accuracy"] <= 1.0
    assert any(line.startswith("trained 1 epochs") for line in lines)

    # A second request into the same folder neither resumes nor restarts: refused, run untouched.
    before = (tmp_path / "run" / "run.json").read_bytes()
    with pytest.raises(RunExistsError, match="already holds a run"):
        run_training(req)
    assert (tmp_path / "run" / "run.json").read_bytes() == before
    with pytest.raises(RequestError, match="exclude each other"):
        run_training(TrainRequest(resume=True, restart=True, out=str(tmp_path / "other")))

    # Predict: one readable image and one that is not an image, in order.
    img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "face.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    res = fer.predict(tmp_path / "run", [tmp_path / "face.png", tmp_path / "bad.png"], device="cpu")
    assert [r["image"] for r in res] == [str(tmp_path / "face.png"), str(tmp_path / "bad.png")]
    probs = res[0]["probabilities"]
    assert res[0]["label"] == max(probs, key=probs.get) and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert "error" in res[1] and "\n" not in res[1]["error"]
