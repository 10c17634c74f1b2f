"""One model registry for every FER model: fer.models, the `fer train` CLI lists, the benchmark, and
each registered kind trained / evaluated / resumed through `fer train` end to end."""

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from face3dkit._cli.fer_cmd import DEFAULT_GEOMETRY, MODEL_KINDS, main
from fer.models import MODELS, REGISTRY, build_model, model_from_config, without_weights

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("fer_benchmark", ROOT / "benchmarks" / "fer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_lists_and_benchmark_cover_the_registry():
    assert tuple(MODEL_KINDS) == MODELS == tuple(REGISTRY)
    assert set(DEFAULT_GEOMETRY) == set(MODELS)
    assert all(g in ("3dmm", "landmarks", "none") for g in DEFAULT_GEOMETRY.values())
    bench = _benchmark()
    kinds = {kind for kind, _ in bench.MODEL_SPECS.values()}
    assert set(MODELS) <= set(bench.MODEL_SPECS) and kinds <= set(MODELS)
    assert set(bench.TRAINED_KINDS) == set(MODELS) and "hog-svm" in bench.CLASSIC


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_round_trips_its_config(kind):
    model = build_model(kind, "small", image_size=32, backbone="tiny")
    again = model_from_config(kind, without_weights(json.loads(json.dumps(model.config.__dict__))))
    assert type(again) is REGISTRY[kind][1] and again.config == model.config
    with pytest.raises(ValueError, match="unknown"):
        model_from_config(kind, {**model.config.__dict__, "no_such_setting": 1})


@pytest.mark.parametrize("kind", ["tdgan", "drgan"])
def test_cli_trains_and_evaluates_the_gans(tmp_path, kind):
    runner = CliRunner()
    common = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--backbone", "tiny", "--synth-n", "42",
              "--synth-size", "32", "--landmark-iters", "10", "--cache-dir", str(tmp_path / "cache"),
              "--no-progress", "--threads", "1", "--out", str(tmp_path / "run")]
    r = runner.invoke(main, ["train", "--model", kind, *common])
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["model"] == kind and info["data"]["geometry"]["provider"] == DEFAULT_GEOMETRY[kind]
    if kind == "tdgan":
        assert info["model_config"]["num_identities"] > 1  # from the synthetic set's identities
    # The run folder is protected: a second train needs --resume or --restart.
    r = runner.invoke(main, ["train", "--model", kind, *common])
    assert r.exit_code != 0 and "--resume" in r.output
    synth = next((tmp_path / "cache" / "synthetic").iterdir())
    r = runner.invoke(main, ["evaluate", str(tmp_path / "run"), "--data", str(synth), "--json",
                             "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    m = json.loads(r.output)
    assert m["n"] > 0 and m["weights"]["finished"]
