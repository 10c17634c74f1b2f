"""The ``fer`` command: synthetic data, training, evaluation and prediction of FER models."""

from __future__ import annotations

import json
import sys

import click

from face3dkit._cli.common import fail_cleanly
from fer.kinds import DEFAULT_GEOMETRY, MODEL_KINDS

__all__ = ["DEFAULT_GEOMETRY", "MODEL_KINDS", "main"]


@click.group()
@click.version_option(package_name="face3dkit")
def main() -> None:
    """fer: facial-expression recognition GANs conditioned on face3dkit geometry."""


def _progress_option(fn):
    """``--progress/--no-progress`` (the spelling of the ``face3dkit`` command too); ``--quiet`` is a
    hidden alias of ``--no-progress``."""

    def quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.params["progress"] = False
        return value

    fn = click.option("--quiet", is_flag=True, hidden=True, expose_value=False, callback=quiet)(fn)
    return click.option("--progress/--no-progress", default=True, show_default=True, is_eager=True,
                        help="Progress bars.")(fn)


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", default=7000, show_default=True, help="Number of images (balanced over 7 classes).")
@click.option("--size", default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True, help="Everything random derives from it.")
@click.option("--identities", type=int, default=None, help="Number of subjects [default: max(10, n // 14)].")
@click.option("--test-fraction", default=0.2, show_default=True, help="Fraction of identities held out for test.")
@click.option("--sequence", default=1, show_default=True,
              help="Frames per face, expression ramped neutral -> peak (sequences for MGLN); 1: still images.")
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option("--face-model", default="default", show_default=True,
              help="Morphable model to render ('default', 'makehuman' or a model file with named units).")
@_progress_option
@fail_cleanly
def synth(out: str, n: int, size: int, seed: int, identities: int | None, test_fraction: float, sequence: int,
          threads: int | None, face_model: str, progress: bool) -> None:
    """Render the synthetic expression set (face3dkit default model by default) into OUT.

    OUT/images/*.png, OUT/labels.csv (split, identity, label, true yaw/pitch/roll, 68 landmarks in
    pixels) and OUT/meta.json. Deterministic for a seed; test identities are held out. With
    --sequence T each face is rendered T times (OUT/images/000000_0.png ...), neutral to peak.
    """
    from fer.data import SynthConfig, generate_synthetic

    if n < 7 or size < 16 or sequence < 1:
        raise ValueError(f"need --n >= 7, --size >= 16 and --sequence >= 1, got {n}, {size} and {sequence}")
    _threads(threads)
    cfg = SynthConfig(n=n, size=size, seed=seed, n_identities=identities, test_fraction=test_fraction,
                      sequence=sequence)
    import face3dkit

    meta = generate_synthetic(out, cfg, model=face3dkit.load_model(face_model), progress=progress)
    c = meta["counts"]
    frames, unit = (f" x {sequence} frames", "sequences") if sequence > 1 else ("", "images")
    click.echo(f"rendered {meta['n']} faces{frames} ({size} px, {meta['n_identities']} identities: {c['train']} "
               f"train / {c['test']} held-out test {unit}) in {meta['seconds']:.1f} s -> {out}")


@main.command("train")
@click.option("--model", "model_kind", type=click.Choice(MODEL_KINDS), default="ggpi", show_default=True,
              help="ggpi (the GAN), baseline (the CNN; fused with fitted geometry when --geometry is given), "
                   "geometry (an MLP on the 3dmm fit's expression coefficients, pose and landmarks), tdgan (pairs "
                   "each image with a face of the training set: identities from the synthetic labels or CK+ "
                   "S<subject>_ file names), drgan (pose codes from the 3dmm yaw) or mgln (sequences of frames, "
                   "--sequence-length; part crops at the geometry's landmarks).")
@click.option("--geometry", type=click.Choice(["3dmm", "landmarks", "none"]), default=None,
              help="Geometry provider [default: 3dmm for ggpi, geometry, drgan and mgln, none for baseline and "
                   "tdgan].")
@click.option("--data", default="synthetic", show_default=True,
              help="Dataset path (class folders, FER2013 csv, RAF-DB, synthetic set) or 'synthetic' to render one.")
@click.option("--val-data", default=None, help="Validation dataset [default: the held-out split of --data].")
@click.option("--val-subjects", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Validate on this fraction of the training subjects, held out of training (subject-disjoint, "
                   "the same split for every seed; the test split is not read), e.g. 0.2 for model selection.")
@click.option("--epochs", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True,
              help="Samples per step and process (batch norm needs at least 2).")
@click.option("--image-size", type=click.IntRange(min=16), default=None,
              help="Training image side [default: 64 small, 128 paper].")
@click.option("--out", "out", default=None, help="Run folder [default: runs/<model>-<geometry>].")
@click.option("--profile", type=click.Choice(["auto", "small", "paper"]), default="auto", show_default=True,
              help="Network sizes: small (CPU: VGG-style cnn, narrow GAN) or paper (ResNet-50); auto = paper on CUDA.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "cnn", "tiny"]),
              default=None, help="Classifier backbone (overrides the profile).")
@click.option("--backbone-weights", type=click.Path(dir_okay=False, exists=True), default=None,
              help="torchvision ImageNet state_dict for the backbone (e.g. resnet50-0676ba61.pth).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Adam learning rate of every network [default 2e-4; 1e-3 for geometry].")
@click.option("--lr-schedule", type=click.Choice(["cosine", "constant", "paper"]), default="cosine",
              show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True,
              help="Mixed precision (CUDA only).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader worker processes.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--restart", is_flag=True, help="Replace the run in --out (its files are deleted) with a new one.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also checkpoint every N steps.")
@click.option("--cache-dir", default=None, help="Cache of synthetic sets and geometry [default: ~/.cache/fer].")
@click.option("--synth-n", type=click.IntRange(min=7), default=2100, show_default=True,
              help="Images of the synthetic set (--data synthetic).")
@click.option("--synth-size", type=click.IntRange(min=16), default=None,
              help="Render size of the synthetic set [default: twice the image size, at most 128].")
@click.option("--landmark-iters", type=click.IntRange(min=1), default=150, show_default=True,
              help="Steps of the 3dmm landmark fit.")
@click.option("--sequence-length", type=click.IntRange(min=1), default=3, show_default=True,
              help="MGLN: frames per sequence (onset, ..., peak); the synthetic set is rendered with as many.")
@click.option("--teacher", "teachers", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Finished run to distil from (repeat for an ensemble: their mean softened probabilities).")
@click.option("--distill-alpha", type=click.FloatRange(0, 1), default=None,
              help="Weight of the teacher term: (1-a) CE + a T^2 KL [default 0.5; a resume keeps the run's].")
@click.option("--distill-temperature", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Distillation temperature T [default 4; a resume keeps the run's].")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Weight averaging: decay of the moving average of the weights that model.pt holds "
                   "(e.g. 0.99; default off; a resume keeps the run's).")
@click.option("--color-jitter", type=click.FloatRange(min=0), default=None,
              help="Photometric augmentation: contrast / brightness within this (e.g. 0.3; default off).")
@click.option("--erase", type=click.FloatRange(0, 1), default=None,
              help="Random-erasing probability per image (e.g. 0.5; default off).")
@_progress_option
@fail_cleanly
def train(model_kind: str, geometry: str | None, data: str, val_data: str | None, val_subjects: float | None,
          epochs: int, batch_size: int,
          image_size: int | None, out: str | None, profile: str, backbone: str | None, backbone_weights: str | None,
          lr: float | None, lr_schedule: str, seed: int, device: str, amp: str, workers: int, threads: int | None,
          resume: bool, restart: bool, checkpoint_every: int, cache_dir: str | None, synth_n: int,
          synth_size: int | None, landmark_iters: int, sequence_length: int, teachers: tuple[str, ...],
          distill_alpha: float | None, distill_temperature: float | None, ema: float | None,
          color_jitter: float | None, erase: float | None, progress: bool) -> None:
    """Train a FER model (GGPI, the baseline, the geometry MLP, TDGAN, DR-GAN or MGLN); with no --data, on a
    synthetic set rendered first.

    An existing run in --out is never overwritten silently: continue it with --resume or replace it
    with --restart. With --teacher RUN (repeatable) the classifier also learns the teachers' mean
    softened probabilities (knowledge distillation). Runs unchanged under torchrun (DDP):
    `torchrun --nproc_per_node 4 -m face3dkit._cli.fer_cmd train ...`.
    """
    from fer.train.api import RequestError, RunExistsError, TrainRequest, run_training

    _threads(threads)
    req = TrainRequest(model=model_kind, geometry=geometry, data=data, val_data=val_data,
                       val_subjects=val_subjects, epochs=epochs,
                       batch_size=batch_size, image_size=image_size, out=out, profile=profile, backbone=backbone,
                       backbone_weights=backbone_weights, lr=lr, lr_schedule=lr_schedule, seed=seed, device=device,
                       amp=amp, workers=workers, resume=resume, restart=restart, checkpoint_every=checkpoint_every,
                       cache_dir=cache_dir, synth_n=synth_n, synth_size=synth_size, landmark_iters=landmark_iters,
                       sequence_length=sequence_length, teachers=tuple(teachers), distill_alpha=distill_alpha,
                       distill_temperature=distill_temperature, ema=ema, color_jitter=color_jitter, erase=erase,
                       progress=progress)
    try:
        run_training(req, echo=click.echo)
    except RequestError as e:
        raise click.UsageError(str(e)) from None
    except RunExistsError as e:
        raise click.ClickException(str(e)) from None


@main.command("evaluate")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--data", required=True, help="Dataset to evaluate on (any supported format).")
@click.option("--split", default="auto", show_default=True,
              help="auto (the format's held-out split), train, val, test or all.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", default=None, help="Geometry cache [default: ~/.cache/fer].")
@click.option("--name", default=None, help="Report folder name under RUN/eval [default: from the data path].")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip = mean probabilities of each image and its mirror image.")
@fail_cleanly
def evaluate(run: str, data: str, split: str, batch_size: int, device: str, cache_dir: str | None,
             name: str | None, as_json: bool, tta: str) -> None:
    """Accuracy, per-class accuracy, macro-F1, accuracy per yaw bin and a confusion-matrix PNG."""
    from fer.inference import evaluate_run
    from fer.train.api import metrics_summary
    from fer.train.run import describe_weights

    m, paths, ds = evaluate_run(run, data, None if split == "all" else split, batch_size, device, cache_dir, name,
                                tta)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    click.echo(describe_weights(m["weights"]))
    click.echo(metrics_summary(m, f"{data} ({m['n']} images)"))
    if ds.report.skipped or m["skipped"]:
        click.echo(f"skipped: {ds.report.summary()}")
    click.echo(f"report: {paths['metrics']}  confusion matrix: {paths['confusion']}")


@main.command("generate")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.argument("image", type=click.Path(dir_okay=False, exists=True))
@click.option("--yaw", type=float, default=0.0, show_default=True,
              help="Target yaw in degrees (nearest pose bin; 0 frontalises).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Output PNG [default: IMAGE's name with _yaw<YAW> next to it].")
@click.option("--device", default="auto", show_default=True)
@fail_cleanly
def generate(run: str, image: str, yaw: float, out: str | None, device: str) -> None:
    """Re-render the face crop IMAGE at --yaw with a trained DR-GAN run (frontalisation by default).

    Writes the input (resized) and the generated face side by side.
    """
    from fer.inference import generate_pose

    path = generate_pose(run, image, yaw, out, device)
    click.echo(f"{image} at yaw {yaw:+g}° (input | generated) -> {path}")


@main.command("predict")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.argument("images", nargs=-1, required=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", default=None,
              help="Geometry cache (models that classify geometry) [default: ~/.cache/fer].")
@fail_cleanly
def predict(run: str, images: tuple[str, ...], device: str, cache_dir: str | None) -> None:
    """Expression label and class probabilities of face crops, as JSON (one object per image)."""
    from fer import predict as predict_images

    results = predict_images(run, images, device, cache_dir)
    click.echo(json.dumps(results, indent=2))
    failed = [r for r in results if "error" in r]
    if failed:
        click.echo(f"Error: {len(failed)} of {len(results)} images could not be read ({failed[0]['error']})",
                   err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
