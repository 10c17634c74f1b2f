"""fer.train.distill: knowledge distillation from finished runs through the shared trainer."""

import json

import numpy as np
import pytest
import torch
from fer_arrays import ArrayDataset, assert_resumed_run_equals_straight, trainer_state

from fer.labels import EXPRESSIONS
from fer.models import build_model
from fer.train import TrainConfig, Trainer
from fer.train.distill import Teachers, distillation_loss
from fer.train.run import write_run_info

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"backbone": "tiny", "gen_channels": 32, "disc_channels": 8, "feat_dim": 32, "noise_dim": 16}


def _config(**kw):
    base = {"epochs": 2, "batch_size": 8, "seed": 1, "device": "cpu", "progress": False, "samples": False}
    return TrainConfig(**{**base, **kw})


def _model(kind="drgan", seed=11):
    torch.manual_seed(seed)
    if kind == "baseline":
        return build_model("baseline", "small", image_size=32, backbone="tiny", hidden=16)
    return build_model(kind, "small", image_size=32, multi_image=False, **TINY)


@pytest.fixture(scope="module")
def teacher_runs(tmp_path_factory):
    """Two finished tiny runs (a DR-GAN and a baseline: the teachers need not share the student's kind)."""
    runs = []
    for i, kind in enumerate(["drgan", "baseline"]):
        out = tmp_path_factory.mktemp(f"teacher{i}")
        model, cfg = _model(kind, seed=i), _config(epochs=1, seed=i)
        write_run_info(out, model, "small", 32, {"name": "arrays"}, cfg)
        Trainer(model, ArrayDataset(), out, cfg).fit()
        runs.append(str(out))
    return runs


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def test_distillation_loss_matches_a_numpy_derivation():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (5, 7))
    t_logits = rng.normal(0, 3, (5, 7))
    y = rng.integers(0, 7, 5)
    alpha, temp = 0.3, 4.0
    p = np.exp(_log_softmax(t_logits / temp))
    ce = -_log_softmax(z)[np.arange(5), y].mean()
    kl = (p * (np.log(p) - _log_softmax(z / temp))).sum(1).mean()
    want = (1 - alpha) * ce + alpha * temp**2 * kl
    got = distillation_loss(torch.tensor(z, dtype=torch.float32), torch.tensor(y), torch.tensor(p, dtype=torch.float32),
                            alpha, temp)
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert float(distillation_loss(torch.tensor(z), torch.tensor(y), torch.tensor(p), 0.0, temp)) == pytest.approx(ce)


def test_teachers_give_mean_softened_probabilities_and_models_use_them(teacher_runs):
    teachers = Teachers(teacher_runs, 4.0, 0.5, EXPRESSIONS, 32)
    ds = ArrayDataset(8, seed=5)
    from fer.data.base import collate_samples

    batch = collate_samples([ds[i] for i in range(8)])
    want = torch.stack([torch.softmax(m.classify_batch(batch) / 4.0, 1) for m in teachers.models]).mean(0)
    probs = teachers.probabilities(batch)
    torch.testing.assert_close(probs, want)
    assert all(not p.requires_grad for m in teachers.models for p in m.parameters())
    student = _model("baseline", seed=3)
    terms = student.loss_terms(teachers.annotate(batch))
    logits = terms["_logits"]
    torch.testing.assert_close(terms["cls_real"], distillation_loss(logits, batch["label"], probs, 0.5, 4.0))


def test_alpha_zero_equals_the_plain_run_exactly(teacher_runs, tmp_path):
    plain = Trainer(_model(), ArrayDataset(), tmp_path / "plain", _config())
    plain.fit()
    kd0 = Trainer(_model(), ArrayDataset(), tmp_path / "kd0", _config(teachers=tuple(teacher_runs), distill_alpha=0.0))
    kd0.fit()
    a, b = trainer_state(plain), trainer_state(kd0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    kd = Trainer(_model(), ArrayDataset(), tmp_path / "kd", _config(teachers=tuple(teacher_runs)))
    kd.fit()
    assert any(not torch.equal(v, a[k]) for k, v in trainer_state(kd).items())


def test_teacher_with_other_classes_or_size_is_refused_in_one_line(teacher_runs, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(teacher_runs[0], bad)
    info = json.loads((bad / "run.json").read_text())
    info["labels"] = ["happy", "sad"]
    (bad / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="classes") as e:
        Trainer(_model(), ArrayDataset(), tmp_path / "s", _config(teachers=(teacher_runs[1], str(bad))))
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(ValueError, match="px") as e:
        Trainer(_model(), ArrayDataset(size=16), tmp_path / "s", _config(teachers=(teacher_runs[0],)))
    assert "\n" not in str(e.value)


def test_resume_with_a_teacher_reproduces_the_next_steps(teacher_runs, tmp_path):
    cfg = {"epochs": 3, "teachers": tuple(teacher_runs), "distill_alpha": 0.7, "distill_temperature": 2.0}
    straight = Trainer(_model(), ArrayDataset(), tmp_path / "a", _config(max_steps=5, **cfg))
    straight.fit()
    Trainer(_model(), ArrayDataset(), tmp_path / "b", _config(max_steps=2, **cfg)).fit()
    resumed = Trainer(_model(seed=99), ArrayDataset(), tmp_path / "b", _config(max_steps=5, **cfg))
    resumed.fit(resume=True)
    assert resumed.global_step == straight.global_step == 5
    assert_resumed_run_equals_straight(straight, resumed, tmp_path / "a", tmp_path / "b")


def test_requests_record_distillation_and_resume_keeps_it():
    from click.testing import CliRunner

    from face3dkit._cli.fer_cmd import main
    from fer.train.api import RequestError, TrainRequest, _distill_settings

    fresh = _distill_settings(TrainRequest(teachers=("t1", "t2"), distill_temperature=2.0), None)
    assert fresh == {"teachers": ("t1", "t2"), "distill_alpha": 0.5, "distill_temperature": 2.0}
    prev = {"train": {**fresh, "teachers": ["t1", "t2"]}}  # as run.json stores it
    assert _distill_settings(TrainRequest(resume=True), prev) == fresh
    assert _distill_settings(TrainRequest(resume=True, teachers=("t1", "t2"), distill_alpha=0.5), prev) == fresh
    with pytest.raises(RequestError, match="teachers"):
        _distill_settings(TrainRequest(resume=True, teachers=("t3",)), prev)
    with pytest.raises(RequestError, match="distill-alpha"):
        _distill_settings(TrainRequest(resume=True, distill_alpha=0.9), prev)
    r = CliRunner().invoke(main, ["train", "--distill-alpha", "0.5"])
    assert r.exit_code == 2 and "need --teacher" in r.output
