"""Benchmark of FER models: what the GAN and the geometry buy (a script, not a test).

Data: the synthetic face3dkit set (held-out identities for test), or ``--data PATH``, a dataset with
a fixed split (class folders under ``train/`` and ``test/``, like CK+48; any format with a held-out
split). Trains each configuration

* ``baseline:none``  - the plain CNN (GGPI's classifier alone),
* ``ggpi:3dmm``      - GGPI with face3dkit landmark+pose fitting as geometry,
* ``ggpi:landmarks`` - GGPI with 2D landmarks and POS pose,
* ``ggpi:none``      - GGPI conditioned on label codes instead of geometry,
* ``drgan:3dmm`` / ``drgan:none`` and ``tdgan:none`` on request (``--configs``): DR-GAN with
  pose codes from the 3DMM yaw and its no-pose-code twin; TDGAN on (expression, face) pairs.

(``--models`` names them instead: ``baseline``, ``geometry`` (MLP on the 3dmm fit's expression
coefficients, pose and landmarks), ``baseline+geometry`` (the CNN fused with them), ``ggpi``, ``tdgan``,
``drgan`` / ``drgan-none``, ``mgln`` (on sequences of ``--sequence-length`` frames: the synthetic
set rendered as neutral -> peak sequences, or the frames of ``--data`` grouped into sequences; every
model of :data:`fer.models.REGISTRY` is accepted), and the classic
floor ``hog-svm``: HOG features + a linear SVM, scikit-image + scikit-learn, needed by this script
only; :data:`MODEL_SPECS` / :data:`CLASSIC` are the lists to extend), with the same classifier,
seeds, epochs and data order (``--seeds``: each configuration once per
training seed, the table giving mean ± std), then reports the held-out accuracy,
macro-F1, per-class accuracy and accuracy per yaw bin (true yaw of the renders, else the fitted
yaw), the training speed in images/s (the baseline's images/s counts classifier steps, GGPI's full
GAN steps) and the training minutes. Each configuration's
folder under ``--out`` is a complete run (``run.json``, ``model.pt``, ``eval/synthetic-test/``
with the metrics and the confusion-matrix PNG), usable with ``fer evaluate`` / ``fer predict``.

Usage::

    python benchmarks/fer.py [--n 7000] [--size 128] [--image-size 64] [--epochs 10]
        [--profile auto|small|paper] [--backbone NAME] [--device auto|cpu|cuda] [--threads N]
        [--configs baseline:none ggpi:3dmm ...] [--seeds 0 1 2] [--out runs/bench-fer] [--json results.json]
    python benchmarks/fer.py --data /work/shared/data/ck48 --image-size 48 --epochs 30 \
        --models baseline geometry baseline+geometry hog-svm

Knowledge distillation (:mod:`fer.train.distill`): ``--teacher RUN [RUN ...]`` makes every trained
configuration a student of those finished runs (e.g. the seed folders of a previous benchmark; teachers
trained on the train split only), named ``<config>+kd``; the table then also has a ``teachers`` row,
the teachers' mean-probability ensemble on the same test set::

    python benchmarks/fer.py --data ../shared/data/ck48 --models drgan --seeds 0 1 2 --epochs 30 --out runs/t
    python benchmarks/fer.py --data ../shared/data/ck48 --models drgan --seeds 10 11 12 --epochs 30 \
        --teacher runs/t/drgan-seed0 runs/t/drgan-seed1 runs/t/drgan-seed2 --distill-alpha 0.5 --distill-temperature 4

Model selection without the test split (CK+48 has train/test only): ``--select-epochs 30 50 70``
trains each configuration for each epoch count on the training subjects left after holding out
``--val-subjects`` (0.2) of them, picks the count with the best mean validation accuracy over the
seeds, then trains on the whole training set with it and reads the test split once::

    python benchmarks/fer.py --data ../shared/data/ck48 --models drgan --seeds 0 1 2 --select-epochs 30 50 70

Small CPU check (a few minutes on 2 cores)::

    python benchmarks/fer.py --n 2100 --size 128 --image-size 64 --epochs 6 --threads 2

Timings on a shared machine are pessimistic: the load average is printed at the top.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Run as a script, this file's folder comes first on sys.path and its name would shadow the `fer` package.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from face3dkit.sysinfo import machine_summary  # noqa: E402
from fer.data import SynthConfig  # noqa: E402
from fer.evaluate import (  # noqa: E402
    evaluate_model,
    predict_dataset,
    prediction_metrics,
    sample_yaw,
    write_report,
)
from fer.labels import EXPRESSIONS, YAW_BIN_NAMES  # noqa: E402
from fer.models import MODELS, SEQUENCE_MODELS, build_model, resolve_profile  # noqa: E402
from fer.train import TrainConfig, Trainer, prepare_data, seed_everything, synthetic_set, training_data  # noqa: E402
from fer.train.run import geometry_overrides, write_run_info  # noqa: E402

DEFAULT_CONFIGS = ("baseline:none", "ggpi:3dmm", "ggpi:landmarks", "ggpi:none")
#: Trainer models: ``--models`` name -> (model kind, geometry provider). Add new models here.
MODEL_SPECS: dict[str, tuple[str, str]] = {
    "baseline": ("baseline", "none"),
    "baseline+geometry": ("baseline", "3dmm"),
    "geometry": ("geometry", "3dmm"),
    "ggpi": ("ggpi", "3dmm"),
    "ggpi-landmarks": ("ggpi", "landmarks"),
    "ggpi-none": ("ggpi", "none"),
    "tdgan": ("tdgan", "none"),
    "drgan": ("drgan", "3dmm"),
    "drgan-none": ("drgan", "none"),
    "mgln": ("mgln", "3dmm"),
}
for _kind in MODELS:  # every registered model is a --models name (its geometry: 3dmm unless listed above)
    MODEL_SPECS.setdefault(_kind, (_kind, "3dmm"))
TRAINED_KINDS = MODELS
GEOMETRIES = ("3dmm", "landmarks", "none")


def run_hog_svm(prepared: tuple[Any, Any, dict[str, Any], float], args: argparse.Namespace, seed: int
                ) -> dict[str, Any]:
    """The classic floor: HOG (9 orientations, 8 px cells, 2x2 blocks, L2-Hys) of the grayscale face +
    a linear SVM (dual: fewer samples than features) on standardised features; C picked by 3-fold
    stratified CV on the training set only."""
    import numpy as np
    from skimage.feature import hog
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from fer.evaluate.metrics import classification_metrics

    train, test, _, prep_s = prepared
    cell = max(4, args.image_size // 8)

    def features(ds: Any) -> np.ndarray:
        gray = [ds.image(i).astype(np.float32).mean(2) / 255.0 for i in range(len(ds))]
        return np.stack([hog(g, orientations=9, pixels_per_cell=(cell, cell), cells_per_block=(2, 2),
                             block_norm="L2-Hys") for g in gray])

    t1 = time.perf_counter()
    x_train = features(train)
    pipe = make_pipeline(StandardScaler(), LinearSVC(dual=True, max_iter=20000, random_state=seed))
    search = GridSearchCV(pipe, {"linearsvc__C": [1e-3, 1e-2, 1e-1, 1.0]},
                          cv=StratifiedKFold(3, shuffle=True, random_state=seed))
    search.fit(x_train, train.labels)
    train_s = time.perf_counter() - t1
    pred = search.predict(features(test))
    yaw = sample_yaw(test)
    m = classification_metrics(test.labels, pred, None if yaw is None else yaw)
    return {"config": "hog-svm", "epochs": "-", "seed": seed, "classifier": f"HOG {cell}px cells + linear SVM "
            f"C={search.best_params_['linearsvc__C']:g}", "profile": "-", "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"], "per_yaw": {k: v["accuracy"] for k, v in m["per_yaw"].items()},
            "per_class": {k: v["accuracy"] for k, v in m["per_class"].items()},
            "train_images_per_s": len(train) / train_s, "train_minutes": train_s / 60, "geometry_seconds": prep_s,
            "test_images": m["n"]}


#: Non-trainer baselines: ``--models`` name -> runner(prepared data, args, seed) -> result row.
CLASSIC = {"hog-svm": run_hog_svm}


def prepare(data: Path, geometry: str, args: argparse.Namespace, steps: int = 0
            ) -> tuple[Any, Any, dict[str, Any], float]:
    """Train/test sets decoded with ``geometry`` attached, their description, and the seconds it took;
    with ``steps`` > 0, sequences of that many frames (:data:`fer.models.SEQUENCE_MODELS`)."""
    t0 = time.perf_counter()
    train, test, data_info = prepare_data(data, args.image_size, geometry, cache_dir=args.cache_dir, progress=False,
                                          echo=lambda s: None, sequence_length=steps)
    return train, test, data_info, time.perf_counter() - t0


def run_config(name: str, kind: str, geometry: str, prepared: tuple[Any, Any, dict[str, Any], float],
               args: argparse.Namespace, device: str, seed: int, epochs: int | None = None,
               eval_name: str | None = None, out_root: Path | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration with one training seed on data from :func:`prepare`;
    returns its row of results. ``epochs`` / ``eval_name`` / ``out_root`` default to ``args.epochs``,
    ``args.eval_name`` and ``args.out`` (the model-selection runs give their own)."""
    epochs = args.epochs if epochs is None else epochs
    eval_name = args.eval_name if eval_name is None else eval_name
    profile = resolve_profile(args.profile, device)
    train, test, data_info, prep_s = prepared
    geo = geometry_overrides(kind, geometry, train)  # geometry / fusion: n_exp of the attached 3dmm table
    train, extra = training_data(kind, train, seed)  # TDGAN: (expression, face) pairs of the training set
    seed_everything(seed)
    model = build_model(kind, profile, image_size=args.image_size, use_geometry=geometry != "none",
                        backbone=args.backbone, **geo, **extra)
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, seed=seed, device=device,
                      progress=not args.no_progress, samples=False, lr_schedule=args.lr_schedule,
                      teachers=tuple(args.teacher), distill_alpha=args.distill_alpha,
                      distill_temperature=args.distill_temperature, ema=args.ema, color_jitter=args.color_jitter,
                      erase=args.erase)
    if args.teacher:
        name += "+kd"
    if args.ema or args.color_jitter or args.erase:
        name += "+" + "-".join(f"{k}{v:g}" for k, v in (("ema", args.ema), ("cj", args.color_jitter),
                                                       ("erase", args.erase)) if v)
    out = Path(out_root or args.out) / (name.replace("+", "-") + (f"-seed{seed}" if len(args.seeds) > 1 else ""))
    write_run_info(out, model, profile, args.image_size, data_info, cfg)  # so `fer evaluate/predict RUN` work
    trainer = Trainer(model, train, out, cfg, val_set=None)
    t1 = time.perf_counter()
    hist = trainer.fit()
    train_s = time.perf_counter() - t1
    probs, idx = predict_dataset(trainer.eval_model, test, 128, trainer.device)  # kept for the seed ensemble
    m = {**prediction_metrics(test, probs, idx), "tta": "none"}
    write_report(m, out / "eval" / eval_name)
    m_flip = evaluate_model(trainer.eval_model, test, 128, trainer.device, tta="flip")  # test-time flip, same weights
    write_report(m_flip, out / "eval" / f"{eval_name}-flip")
    rates = [r["images_per_s"] for r in hist]
    steady = rates[1:] or rates  # the first epoch includes warm-up
    return {
        "config": name,
        "epochs": epochs,
        "seed": seed,
        "classifier": getattr(model.config, "backbone", "mlp"),
        "profile": profile,
        "accuracy": m["accuracy"],
        "macro_f1": m["macro_f1"],
        "accuracy_flip": m_flip["accuracy"],
        "macro_f1_flip": m_flip["macro_f1"],
        "per_yaw": {k: v["accuracy"] for k, v in m["per_yaw"].items()},
        "per_class": {k: v["accuracy"] for k, v in m["per_class"].items()},
        "train_images_per_s": sum(steady) / len(steady),
        "train_minutes": train_s / 60,
        "geometry_seconds": prep_s,
        "test_images": m["n"],
        "_probs": probs,
        "_labels": test.labels[idx],
    }


def teacher_row(prepared: tuple[Any, Any, dict[str, Any], float], args: argparse.Namespace, device: str
                ) -> dict[str, Any]:
    """Result row of the ``--teacher`` runs' mean-probability ensemble on the test set (no training)."""
    import numpy as np

    from fer.train.run import load_run

    test = prepared[1]
    probs, idx = [], None
    for run in args.teacher:
        model, _ = load_run(run, device)
        pr, ix = predict_dataset(model, test, 128, device)
        if idx is not None and not np.array_equal(ix, idx):
            raise ValueError(f"teacher {run}: evaluated on other test samples than {args.teacher[0]}")
        probs.append(pr)
        idx = ix
    m = prediction_metrics(test, np.mean(probs, 0), idx)
    return {"config": f"teachers ({len(args.teacher)}-run ensemble)", "epochs": "-", "seed": "-",
            "classifier": "ensemble", "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "per_yaw": {k: v["accuracy"] for k, v in m["per_yaw"].items()},
            "per_class": {k: v["accuracy"] for k, v in m["per_class"].items()},
            "train_images_per_s": math.nan, "train_minutes": 0.0, "test_images": m["n"]}


def select_epochs(name: str, kind: str, geometry: str, prepared: tuple[Any, Any, dict[str, Any], float],
                  args: argparse.Namespace, device: str) -> tuple[int, list[dict[str, Any]]]:
    """Model selection without the test split: train ``name`` for each of ``args.select_epochs`` (a
    full schedule each) on the training subjects left after holding out ``args.val_subjects`` of them
    (:func:`fer.data.holdout_subjects`, seed 0: one split for every training seed), score each on the
    held-out subjects, and return the epoch count with the best mean validation accuracy over the
    seeds (ties: the fewest epochs) with the validation rows."""
    from fer.data import holdout_subjects

    train, _, info, prep_s = prepared
    sub, val = holdout_subjects(train, args.val_subjects, 0, where=str(args.data))
    held = len({int(i) for i in val.identities})
    print(f"{name}: model selection on {held} held-out training subjects ({len(val)} images; {len(sub)} to train "
          f"on), epochs {' / '.join(map(str, args.select_epochs))}", flush=True)
    rows = []
    for e in args.select_epochs:
        for seed in args.seeds:
            r = run_config(name, kind, geometry, (sub, val, info, prep_s), args, device, seed, epochs=e,
                           eval_name="val-subjects", out_root=Path(args.out) / "select" / f"epochs{e}")
            r["config"] = f"{name} [val {e} ep]"
            rows.append(r)
            print(f"  {e} epochs, seed {seed}: validation accuracy {100 * r['accuracy']:.1f}% "
                  f"(macro-F1 {100 * r['macro_f1']:.1f}%), {r['train_minutes']:.1f} min", flush=True)
    means = {e: _mean([r["accuracy"] for r in rows if r["epochs"] == e]) for e in args.select_epochs}
    best = max(args.select_epochs, key=lambda e: (means[e], -e))
    print(f"{name}: chosen {best} epochs (validation accuracy "
          + ", ".join(f"{e} ep {100 * a:.1f}%" for e, a in means.items()) + ")", flush=True)
    return best, rows


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _std(xs: list[float]) -> float:
    """Sample standard deviation (0 for one value)."""
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5


def _pct(r: dict[str, Any], key: str) -> str:
    """``r[key]`` in %, with ``± std`` when ``r`` aggregates several seeds."""
    return f"{100 * r[key]:.1f}" + (f" ± {100 * r[key + '_std']:.1f}" if len(r["seeds"]) > 1 else "")


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration: means over its seeds, with the accuracy's and macro-F1's std."""
    out = []
    for name in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == name]
        col = {k: [r.get(k, math.nan) for r in rs]
               for k in ("accuracy", "macro_f1", "accuracy_flip", "train_images_per_s", "train_minutes")}
        yaw_bins = [b for b in YAW_BIN_NAMES if all(b in r["per_yaw"] for r in rs)]
        classes = [c for c in EXPRESSIONS if all(math.isfinite(r["per_class"].get(c, math.nan)) for r in rs)]
        ens = _ensemble(rs)
        out.append({**rs[0], "seeds": [r["seed"] for r in rs], **{k: _mean(v) for k, v in col.items()},
                    "accuracy_ensemble": ens[0], "macro_f1_ensemble": ens[1],
                    "accuracy_std": _std(col["accuracy"]), "macro_f1_std": _std(col["macro_f1"]),
                    "accuracy_flip_std": _std(col["accuracy_flip"]),
                    "per_yaw": {b: _mean([r["per_yaw"][b] for r in rs]) for b in yaw_bins},
                    "per_class": {c: _mean([r["per_class"][c] for r in rs]) for c in classes}})
    return out


def _ensemble(rs: list[dict[str, Any]]) -> tuple[float, float]:
    """Accuracy and macro-F1 of the mean class probabilities of a configuration's seeds (NaN for one
    seed or runs without probabilities)."""
    import numpy as np

    from fer.evaluate.metrics import classification_metrics

    if len(rs) < 2 or any("_probs" not in r for r in rs) or any(
            not np.array_equal(r["_labels"], rs[0]["_labels"]) for r in rs):
        return math.nan, math.nan
    m = classification_metrics(rs[0]["_labels"], np.mean([r["_probs"] for r in rs], 0).argmax(1))
    return m["accuracy"], m["macro_f1"]


def markdown(rows: list[dict[str, Any]]) -> str:
    """Results table (accuracies in %; mean ± std over seeds when there are several)."""
    bins = [b for b in YAW_BIN_NAMES if any(b in r["per_yaw"] for r in rows)]
    classes = [c for c in EXPRESSIONS if any(c in r["per_class"] for r in rows)]
    head = ["config", "epochs", "seeds", "accuracy", "macro-F1", "accuracy (flip TTA)", "seed ensemble", *classes,
            *[f"yaw {b}°" for b in bins], "train img/s", "train min", "vs first"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = rows[0]["accuracy"] if rows else float("nan")

    def cell(d: dict[str, float], k: str) -> str:
        return f"{100 * d[k]:.1f}" if k in d else "-"

    for r in rows:
        lines.append("| " + " | ".join([f"{r['config']} ({r['classifier']})", str(r.get("epochs", "-")),
                                        str(len(r["seeds"])), _pct(r, "accuracy"),
                                        _pct(r, "macro_f1"),
                                        _pct(r, "accuracy_flip") if math.isfinite(r.get("accuracy_flip", math.nan))
                                        else "-",
                                        f"{100 * r['accuracy_ensemble']:.1f}"
                                        if math.isfinite(r.get("accuracy_ensemble", math.nan)) else "-",
                                        *[cell(r["per_class"], c) for c in classes],
                                        *[cell(r["per_yaw"], b) for b in bins],
                                        f"{r['train_images_per_s']:.0f}" if math.isfinite(r["train_images_per_s"])
                                        else "-",
                                        f"{r['train_minutes']:.1f}",
                                        f"{r['accuracy'] / ref:.2f}x" if ref > 0 else "-"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=7000, help="synthetic images (train + held-out test)")
    p.add_argument("--size", type=int, default=128, help="render size of the synthetic set")
    p.add_argument("--image-size", type=int, default=64, help="training image size")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--profile", default="auto", choices=["auto", "small", "paper"])
    p.add_argument("--backbone", default=None)
    p.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant", "paper"])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic set")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds, each configuration trained once per seed (default: --seed)")
    p.add_argument("--data", default=None,
                   help="dataset with a fixed split (train/ and test/ class folders, e.g. CK+48) instead of the "
                        "synthetic set")
    p.add_argument("--configs", nargs="+", default=None, help="model:geometry pairs [default: "
                   + " ".join(DEFAULT_CONFIGS) + "]")
    p.add_argument("--models", nargs="+", default=None, choices=[*MODEL_SPECS, *CLASSIC],
                   help="named configurations (instead of --configs)")
    p.add_argument("--sequence-length", type=int, default=3,
                   help="frames per sequence of the sequence models (mgln); the synthetic set for them is rendered "
                        "with as many frames per face")
    p.add_argument("--teacher", nargs="+", default=[], metavar="RUN",
                   help="finished runs to distil every trained configuration from (knowledge distillation)")
    p.add_argument("--distill-alpha", type=float, default=0.5, help="weight of the teacher term")
    p.add_argument("--distill-temperature", type=float, default=4.0, help="distillation temperature")
    p.add_argument("--ema", type=float, default=0.0, help="TrainConfig.ema: weight-averaging decay (0: off)")
    p.add_argument("--color-jitter", type=float, default=0.0, help="TrainConfig.color_jitter (0: off)")
    p.add_argument("--erase", type=float, default=0.0, help="TrainConfig.erase: random-erasing probability (0: off)")
    p.add_argument("--select-epochs", type=int, nargs="+", default=None, metavar="E",
                   help="choose the epoch count per configuration among these on held-out training subjects "
                        "(--val-subjects), then train on the whole training set once and test (needs --data)")
    p.add_argument("--val-subjects", type=float, default=0.2,
                   help="fraction of the training subjects held out for --select-epochs")
    p.add_argument("--out", default="runs/bench-fer")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--json", default=None, help="write the results here too")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    args.seeds = args.seeds or [args.seed]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    print(f"# FER benchmark: {machine_summary(device)}")
    t0 = time.perf_counter()
    if args.data is not None:
        data = Path(args.data)
        if not (data / "train").is_dir() or not (data / "test").is_dir():
            p.error(f"--data {data}: needs train/ and test/ sub-folders of class folders (a fixed split)")
        args.eval_name = "test"
        print(f"data {data}; {args.epochs} epochs at {args.image_size} px, batch {args.batch_size}")
    else:
        data = synthetic_set(SynthConfig(n=args.n, size=args.size, seed=args.seed), args.cache_dir,
                             progress=not args.no_progress)
        args.eval_name = "synthetic-test"
        print(f"synthetic set ready in {time.perf_counter() - t0:.1f} s; {args.epochs} epochs at {args.image_size} "
              f"px, batch {args.batch_size}")
    if args.models and args.configs:
        p.error("give --models or --configs, not both")
    if args.select_epochs and args.data is None:
        p.error("--select-epochs needs --data (the synthetic set has held-out identities already)")
    if args.select_epochs and not 0.0 < args.val_subjects < 1.0:
        p.error(f"--val-subjects must be in (0, 1), got {args.val_subjects}")
    specs: list[tuple[str, str, str]] = []  # (name, kind, geometry); kind 'classic' for CLASSIC runners
    for name in args.models or []:
        specs.append((name, "classic", "none") if name in CLASSIC else (name, *MODEL_SPECS[name]))
    for spec in args.configs or ([] if args.models else list(DEFAULT_CONFIGS)):
        kind, _, geometry = spec.partition(":")
        if kind not in TRAINED_KINDS or geometry not in GEOMETRIES:
            p.error(f"bad config {spec!r}: use model:geometry, e.g. ggpi:3dmm")
        specs.append((spec, kind, geometry))
    rows: list[dict[str, Any]] = []
    selection: list[dict[str, Any]] = []  # --select-epochs: the validation runs
    # per geometry and sequence length, shared by models and seeds
    prepared: dict[str, tuple[Any, Any, dict[str, Any], float]] = {}
    for name, kind, geometry in specs:
        steps = args.sequence_length if kind in SEQUENCE_MODELS else 0
        key = f"{geometry}:{steps}"
        if key not in prepared:
            source = data
            if steps and args.data is None:  # sequence models: the same synthetic set, rendered as sequences
                source = synthetic_set(SynthConfig(n=args.n, size=args.size, seed=args.seed, sequence=steps),
                                       args.cache_dir, progress=not args.no_progress)
            prepared[key] = prepare(source, geometry, args, steps)
        epochs = args.epochs
        if args.select_epochs and kind != "classic":
            if steps:
                p.error(f"--select-epochs: {name} is a sequence model (not supported)")
            epochs, sel = select_epochs(name, kind, geometry, prepared[key], args, device)
            selection.extend(sel)
        for seed in args.seeds:
            if kind == "classic":
                row = CLASSIC[name](prepared[key], args, seed)
            else:
                row = run_config(name, kind, geometry, prepared[key], args, device, seed, epochs=epochs)
            rows.append(row)
            flip = row.get("accuracy_flip")
            print(f"{row['config']} seed {seed}: accuracy {100 * row['accuracy']:.1f}% "
                  + (f"(flip TTA {100 * flip:.1f}%) " if flip is not None else "")
                  + f"(macro-F1 {100 * row['macro_f1']:.1f}%; per class "
                  + " ".join(f"{c} {100 * v:.0f}%" for c, v in row["per_class"].items() if math.isfinite(v))
                  + f"), {row['train_images_per_s']:.0f} img/s, "
                  f"{row['train_minutes']:.1f} min", flush=True)
    if args.teacher and prepared:
        row = teacher_row(next(iter(prepared.values())), args, device)
        rows.append(row)
        print(f"{row['config']}: accuracy {100 * row['accuracy']:.1f}% (macro-F1 {100 * row['macro_f1']:.1f}%)")
    table = aggregate(rows)
    if selection:
        print("\nModel selection on held-out training subjects (accuracy = validation accuracy):\n")
        print(markdown(aggregate(selection)))
    print()
    print(markdown(table))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]  # noqa: E731
        Path(args.json).write_text(json.dumps({"args": vars(args), "device": device, "rows": strip(rows),
                                               "summary": strip(table), "selection": strip(selection),
                                               "selection_summary": strip(aggregate(selection))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
