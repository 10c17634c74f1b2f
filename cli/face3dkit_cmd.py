"""The ``face3dkit`` command: model inspection, sampling and conversion (reconstruction follows)."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import click

from face3dkit._cli.common import fail_cleanly


@click.group()
@click.version_option(package_name="face3dkit")
def main() -> None:
    """face3dkit: differentiable 3D face reconstruction."""


@main.group()
def model() -> None:
    """Inspect, sample and convert morphable models."""


def _load(name_or_path: str):
    from face3dkit.model import load_model

    return load_model(name_or_path)


@model.command("info")
@click.argument("name_or_path", default="default")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@fail_cleanly
def model_info(name_or_path: str, as_json: bool) -> None:
    """Sizes, coefficient layout, component names and provenance of a model (default: 'default')."""
    m = _load(name_or_path)
    layout = m.layout
    info = {
        "model": name_or_path,
        "name": m.meta.get("name"),
        "vertices": m.n_verts,
        "triangles": m.n_faces,
        "front_triangles": int(m.front_faces.shape[0]),
        "skin_vertices": int(m.skin_mask.sum()),
        "landmarks": int(m.landmark_idx.numel()),
        "uv": m.has_uv,
        "coefficients": layout.total,
        "layout": {k: [s.start, s.stop] for k, s in layout.slices().items()},
        "expression_names": m.exp_names,
        "expression_range": m.exp_range,
        "regions": {r: int(m.region_mask(r).sum()) for r in m.region_names},
        "licence": m.meta.get("licence"),
        "provenance": m.meta.get("provenance") or m.meta.get("source"),
        "units": m.meta.get("units"),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"model        {name_or_path}  ({info['name']})")
    click.echo(f"mesh         {m.n_verts} vertices, {m.n_faces} triangles "
               f"({info['front_triangles']} front), UVs: {'yes' if m.has_uv else 'no'}")
    click.echo(f"landmarks    {info['landmarks']} (iBUG 68), skin vertices {info['skin_vertices']}")
    click.echo("regions      " + ", ".join(f"{r} ({n} vertices)" for r, n in info["regions"].items()))
    click.echo(f"coefficients {layout.total}:")
    for k, s in layout.slices().items():
        click.echo(f"  {k:<7} [{s.start:>3}:{s.stop:<3}]  {s.stop - s.start}")
    if m.exp_names:
        rng = f" (range {m.exp_range[0]:g}..{m.exp_range[1]:g})" if m.exp_range else ""
        click.echo(f"expression units{rng}: " + ", ".join(m.exp_names))
    for key in ("units", "licence", "provenance", "source"):
        if m.meta.get(key):
            click.echo(f"{key:<12} {m.meta[key]}")


def _parse_exp(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for v in values:
        name, sep, w = v.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(w)
        except ValueError:
            raise click.BadParameter(f"{v!r} is not NAME=WEIGHT (e.g. mouth-open=0.8)", param_hint="--exp") from None
    return out


@model.command("sample")
@click.option("--model", "model_name", default="default", show_default=True, help="Model name or path.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True,
              help="Random seed for identity and albedo.")
@click.option("--mean/--random", default=False, help="Mean face instead of a random identity.")
@click.option("--exp", "exps", multiple=True, metavar="NAME=W", help="Drive a named expression unit (repeatable).")
@click.option("--yaw", type=float, default=20.0, show_default=True, help="Preview yaw, degrees.")
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output mesh (.obj/.ply/.glb).")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Also write <out>.png.")
@click.option("--texture-size", type=click.IntRange(min=1, max=16384), default=1024, show_default=True,
              help="Side of the baked texture PNG, pixels.")
@fail_cleanly
def model_sample(model_name: str, seed: int, mean: bool, exps: tuple[str, ...], yaw: float, out: str,
                 preview: bool, texture_size: int) -> None:
    """Write a random (or mean, or expression-driven) face as a mesh, plus a PNG preview."""
    import torch

    from face3dkit.export import export_mesh

    weights = _parse_exp(exps)
    m = _load(model_name)
    g = torch.Generator().manual_seed(seed)
    c = m.sample(1, generator=g)
    if mean:
        c.id.zero_()
        c.tex.zero_()
    if weights:
        try:
            c.exp = m.expression_vector(weights)
        except (KeyError, ValueError) as e:
            raise click.BadParameter(str(e).strip("'\""), param_hint="--exp") from None
    with torch.no_grad():
        verts = m.shape(c.id, c.exp)[0]
        albedo = m.albedo(c.tex)[0].clamp(0, 1)
    out_path = Path(out)
    files = export_mesh(out_path, verts, m.faces, albedo, m.uv, m.face_uv, texture_size=texture_size)
    if preview:
        from face3dkit.io import save_image
        from face3dkit.viz import render_faces

        c.angles[:, 1] = math.radians(yaw)
        png = out_path.with_suffix(".png")
        save_image(render_faces(m, c, size=512)[0], png)
        files.append(png)
    for f in files:
        click.echo(f"wrote {f}")


@model.command("convert-bfm")
@click.argument("morphable_model_mat", type=click.Path(dir_okay=False))
@click.argument("exp_pca_bin", type=click.Path(dir_okay=False))
@click.option("--aux", "aux_dir", type=click.Path(file_okay=False), required=True,
              help="Folder with BFM_front_idx.mat, BFM_exp_idx.mat, facemodel_info.mat, std_exp.txt.")
@click.option("-o", "--out", "out", type=click.Path(dir_okay=False), default="BFM_model_front.mat", show_default=True)
@click.option("--n-id", type=click.IntRange(min=1), default=80, show_default=True, help="Identity components kept.")
@click.option("--n-exp", type=click.IntRange(min=1), default=64, show_default=True, help="Expression components kept.")
@click.option("--n-tex", type=click.IntRange(min=1), default=80, show_default=True, help="Albedo components kept.")
@fail_cleanly
def model_convert_bfm(morphable_model_mat: str, exp_pca_bin: str, aux_dir: str, out: str, n_id: int, n_exp: int,
                      n_tex: int) -> None:
    """Convert the raw BFM 2009 + expression basis to Deng et al.'s BFM_model_front.mat."""
    from face3dkit.model.bfm import convert_bfm2009

    path = convert_bfm2009(morphable_model_mat, exp_pca_bin, aux_dir, out, n_id=n_id, n_exp=n_exp, n_tex=n_tex)
    click.echo(f"wrote {path}")


class DeviceParam(click.ParamType):
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<index>``, checked at once:
    a device this machine lacks is a usage error (one line, exit 2), not a traceback later."""

    name = "auto|cpu|cuda[:N]"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from face3dkit.runtime import DeviceUnavailableError, resolve_device

        try:
            return str(resolve_device(str(value)))
        except DeviceUnavailableError as e:
            self.fail(str(e), param, ctx)


@main.command("reconstruct")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default="out", show_default=True,
              help="Output folder (one sub-folder per input image).")
@click.option("--model", "model_name", default="default", show_default=True, help="Model name or path.")
@click.option("--device", type=DeviceParam(), default="auto", show_default=True,
              help="auto (cuda when available, else cpu), cpu, cuda, cuda:1 ...")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch CPU threads [default: one per physical core available to this process, divided "
                   "among torchrun's local ranks, less the share other jobs keep busy (load average)].")
@click.option("--landmarks", "--detector", "landmarks", type=click.Choice(["dlib", "dlib-cnn", "mtcnn", "file"]),
              default="dlib", show_default=True,
              help="Landmark source: dlib HOG (upsample 0+1 merged) / CNN detector, MTCNN (needs `pip install "
                   "--no-deps facenet-pytorch`), or files next to the images (.pts/.txt/.npy, detections/).")
@click.option("--landmarks-dir", type=click.Path(file_okay=False), default=None, help="Folder of landmark files.")
@click.option("--faces", type=click.Choice(["largest", "all", "center"]), default="largest", show_default=True,
              help="Faces per image: the largest, all, or the one whose box centre is nearest the image centre.")
@click.option("--iters", type=click.IntRange(min=0), default=None,
              help="Photometric iterations (default 40, FitConfig.photo_iters).")
@click.option("--landmark-iters", type=click.IntRange(min=0), default=None,
              help="Landmark/pose iterations (default 150).")
@click.option("--fast", is_flag=True,
              help="The fast photometric stage (FitConfig.fast): 64 px, the mesh decimated to 10,000 triangles, "
                   "rasterized every 4th step (~0.27 s a face on 2 CPU cores in batches of 32, landmarks within "
                   "3 % of the default fit's; docs/benchmarks.md).")
@click.option("--photo-size", type=click.IntRange(min=16), default=None,
              help="Height (px) of the photometric stage's render [default 112; 64 with --fast].")
@click.option("--photo-faces", type=click.IntRange(min=0), default=None,
              help="Triangles of the photometric stage's mesh, a decimation of the model's on a subset of its "
                   "vertices (0: the full mesh) [default: full; 10000 with --fast].")
@click.option("--raster-every", type=click.IntRange(min=1), default=None,
              help="Rasterize the photometric stage every K steps, keeping the visibility between "
                   "[default 1; 4 with --fast].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Faces fitted together (a fit step's cost is mostly per batch on a CPU).")
@click.option("--save", default=",".join(("obj", "mat", "npz", "lm", "pose", "blendshapes", "png")), show_default=True,
              help="Comma-separated outputs: obj,mat,npz,lm,pose,blendshapes,png.")
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip faces already finished with the same settings (--no-resume: same as --force).")
@click.option("--force", is_flag=True, help="Redo every face, finished or not.")
@click.option("--redo-changed/--keep-changed", default=True, show_default=True,
              help="Redo finished faces made with other settings (model, landmarks, faces, fitting options), "
                   "or keep them (listed as kept in the summary).")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), default=0, show_default=True)
@click.option("--identity-net", type=click.Path(dir_okay=False), default=None,
              help="insightface backbone.pth for the perceptual loss (off without it).")
@click.option("--contour", type=click.Choice(["2d", "3d"]), default="2d", show_default=True,
              help="Jaw-contour landmark convention: 2d = on the visible outline (dlib, iBUG 300-W; contour "
                   "marching and sliding on), 3d = projections of fixed 3D points (300W-LP/AFLW2000-3D style).")
@click.option("--landmark-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Landmark term weight (default Deng et al.'s 1.6e-3; the eye points weigh 20x, "
                   "FitConfig.eye_weight). Larger: the fit follows the detected points more closely.")
@click.option("--texture-size", type=click.IntRange(min=16, max=16384), default=512, show_default=True,
              help="Side of the OBJ's baked albedo texture, pixels.")
@click.option("--method", type=click.Choice(["fit", "rnet", "rnet+fit"]), default=None,
              help="fit: analysis-by-synthesis; rnet: the coefficients an R-Net regresses (--rnet); rnet+fit: "
                   "the fit started from them [default: fit; rnet with --same-person].")
@click.option("--rnet", "rnet", type=click.Path(dir_okay=False), default=None,
              help="R-Net checkpoint for --method rnet / rnet+fit (face3dkit's, or Deep3DFaceRecon_pytorch "
                   "epoch_*.pth for the BFM).")
@click.option("--rnet-start", type=click.Choice(["pose", "all"]), default="pose", show_default=True,
              help="What rnet+fit takes from the regression: its pose (identity and expression from the prior "
                   "mean, light and albedo in closed form) or all its coefficients.")
@click.option("--same-person", is_flag=True,
              help="All faces of the run are one person: the R-Net (--rnet) regresses every face, identity and "
                   "albedo are aggregated over all of them (--cnet confidences, else the plain mean) and shared; "
                   "expression, pose, light stay per photo; OUT/identity.npz holds the aggregate. With --method "
                   "rnet+fit the fit starts there (see --same-person-identity). Not under torchrun (WORLD_SIZE > 1).")
@click.option("--same-person-identity", type=click.Choice(["joint", "aggregate"]), default="joint", show_default=True,
              help="With --same-person --method rnet+fit: 'joint' fits one identity and albedo to the photos together "
                   "(up to 64; further photos are fitted with it held), starting from the aggregate; 'aggregate' "
                   "holds the aggregate of the regressions.")
@click.option("--cnet", "cnet", type=click.Path(dir_okay=False), default=None,
              help="C-Net checkpoint (train-cnet's OUT/cnet.pt) for --same-person: per-coefficient confidences.")
@click.option("--strict/--no-strict", default=False, show_default=True,
              help="Exit with code 3 when a face is a poor fit (status poor_fit in summary.json/csv: fitted "
                   "landmarks far from the given ones, implausible pose or identity) and no input failed.")
@fail_cleanly
def reconstruct_cmd(inputs: tuple[str, ...], out: str, model_name: str, device: str, threads: int | None,
                    landmarks: str, landmarks_dir: str | None, faces: str, iters: int | None,
                    landmark_iters: int | None, fast: bool, photo_size: int | None, photo_faces: int | None,
                    raster_every: int | None, batch_size: int, save: str, recursive: bool, resume: bool,
                    force: bool, redo_changed: bool, progress: bool, seed: int, identity_net: str | None,
                    contour: str, landmark_weight: float | None, texture_size: int, method: str | None,
                    rnet: str | None, rnet_start: str, same_person: bool, same_person_identity: str, cnet: str | None,
                    strict: bool) -> None:
    """Reconstruct every face in INPUTS (folders, images, or text files listing images).

    Per face: mesh (.obj + texture), coefficients (.mat with Deng et al.'s keys, .npz), 68 landmarks
    in image pixels (_lm68.txt), pose in degrees (_pose.json) and a picture (.png); summary.json and
    summary.csv accumulate every face of the output folder (done now or earlier, with its settings)
    and every failure with its reason. A missing or unreadable input fails alone; the exit code is
    1 when any input failed. Each face has a status: ``ok``, or ``poor_fit`` with the reason (see
    face3dkit.fit.assess_fit); with --strict the exit code is 3 when none failed but some face is a
    poor fit.
    """
    import logging

    from face3dkit.fit import FitConfig
    from face3dkit.pipeline import OUTPUT_KINDS, ReconstructConfig, reconstruct
    from face3dkit.runtime import set_threads

    logging.basicConfig(format="%(message)s", level=logging.INFO)

    if method is None:
        method = "rnet" if same_person else "fit"
    if same_person and not rnet:
        raise click.UsageError("--same-person needs --rnet RNET.pt (every face is regressed, then aggregated)")
    if same_person and method == "fit":
        raise click.UsageError("--same-person needs --method rnet or rnet+fit")
    if cnet and not same_person:
        raise click.UsageError("--cnet is used only with --same-person")
    kinds = tuple(k.strip() for k in save.split(",") if k.strip())
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise click.BadParameter(f"unknown output kind(s) {', '.join(bad) or '(none given)'}; choose from "
                                 f"{','.join(OUTPUT_KINDS)}", param_hint="--save")
    # intra- and inter-op, before any torch work of this process; by default also leaving the cores
    # other jobs keep busy (the load average is this process's own only later)
    n_threads = set_threads(threads, load_aware=True)
    if threads is None:
        from face3dkit.runtime import busy_fraction, physical_cores

        logging.getLogger("face3dkit").info(
            "%d CPU thread(s): %d physical core(s) available, %.0f%% of the CPUs busy with other work "
            "(--threads N to choose)", n_threads, physical_cores(), 100 * busy_fraction())
    fit_cfg = FitConfig.fast(seed=seed) if fast else FitConfig(seed=seed)
    if photo_size is not None:
        fit_cfg.photo_size = photo_size
    if photo_faces is not None:
        fit_cfg.photo_faces = photo_faces or None
    if raster_every is not None:
        fit_cfg.photo_raster_every = raster_every
    if contour == "3d":
        fit_cfg = dataclasses.replace(fit_cfg, landmark_convention="3d")
    if iters is not None:
        fit_cfg.photo_iters = iters
    if landmark_iters is not None:
        fit_cfg.landmark_iters = landmark_iters
    if landmark_weight is not None:
        fit_cfg.weights = dataclasses.replace(fit_cfg.weights, landmark=landmark_weight)
    cfg = ReconstructConfig(model=model_name, device=device, landmarks=landmarks, landmarks_dir=landmarks_dir,
                            faces=faces, batch_size=batch_size, fit=fit_cfg, save=kinds, recursive=recursive,
                            resume=resume and not force, redo_changed=redo_changed, identity_net=identity_net,
                            threads=n_threads, texture_size=texture_size, method=method, rnet=rnet,
                            same_person=same_person, cnet=cnet, rnet_start=rnet_start,
                            same_person_identity=same_person_identity)
    summary = reconstruct(list(inputs), out, cfg, progress=progress)
    n = len(summary.results)
    rate = f", {summary.seconds / n:.2f} s/face" if n else ""
    extra = f"; {len(summary.redone)} redone (settings changed)" if summary.redone else ""
    extra += f"; {len(summary.kept)} kept with other settings" if summary.kept else ""
    click.echo(f"{n} face(s) reconstructed from {summary.n_images} image(s) in {summary.seconds:.1f} s{rate}; "
               f"{len(summary.skipped)} already done; {len(summary.failures)} failed{extra} -> {out}/summary.json "
               f"({summary.device}, {summary.threads} thread(s))")
    if same_person and summary.results:
        how = f"{'C-Net confidences' if cnet else 'plain mean'}"
        if method == "rnet+fit" and same_person_identity == "joint":
            how += ", then fitted to the photos jointly"
        click.echo(f"identity and albedo aggregated over {n} face(s) ({how}) -> {Path(out) / 'identity.npz'}")
    poor = [r for r in summary.results if r.status != "ok"]
    if poor:
        click.echo(f"{len(poor)} face(s) fitted poorly (status poor_fit in {out}/summary.csv)")
    for r in poor:
        click.echo(f"poor fit: {r.image}#{r.face_index}: {r.reason}", err=True)
    for f in summary.failures:
        click.echo(f"failed: {f.image}: {f.reason}", err=True)
    if summary.failures:
        sys.exit(1)
    if strict and poor:
        sys.exit(3)


def _run_options(f):
    """The options of every training command: seed, checkpoint interval, resume, device, threads, progress."""
    for opt in reversed([
        click.option("--seed", default=0, show_default=True),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint."),
        click.option("--device", default="auto", show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads."),
        click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar."),
    ]):
        f = opt(f)
    return f


def _step_bar(enabled: bool, steps: int, desc: str, shown: dict[str, str]):
    """``(report, close)`` of a training run's progress bar (tqdm: rate and ETA); ``report(done, total,
    rec)`` shows ``rec``'s values named in ``shown`` (name -> format) and follows a resumed run's total."""
    if not enabled:
        return (lambda done, total, rec: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, unit="step", desc=desc, dynamic_ncols=True)

    def report(done: int, total: int, rec: dict) -> None:
        bar.total, bar.n = total, done
        bar.set_postfix({k: format(rec[k], f) for k, f in shown.items() if k in rec})
        bar.refresh()

    return report, bar.close


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


@main.command("train-rnet")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--data", default="synthetic", show_default=True, metavar="synthetic|DIR",
              help="Training data: 'synthetic' = randomised renders of --model (identity, expression, pose, light, "
                   "albedo, background, blur, noise, JPEG) with their true coefficients; or a folder of face "
                   "photos (detected with --detector, aligned as reconstruct does, cached in OUT/photo-cache).")
@click.option("--photo-fraction", type=click.FloatRange(min=0, max=1), default=1.0, show_default=True,
              help="With --data DIR: share of each batch that is photos; the rest are renders (supervised).")
@click.option("--detector", type=click.Choice(["dlib", "dlib-cnn", "mtcnn", "file"]), default="dlib",
              show_default=True, help="Landmarks of --data DIR photos (file: <stem>.pts/.txt/.npy beside them).")
@click.option("--model", "model_name", default="default", show_default=True, help="Morphable model name or path.")
@click.option("--backbone", type=click.Choice(["resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v2"]),
              default="resnet18", show_default=True, help="R-Net backbone (paper: resnet50; mobilenet_v2 for CPUs).")
@click.option("--imagenet", type=click.Path(dir_okay=False, exists=True), default=None,
              help="torchvision ImageNet weights of the backbone (a .pth file).")
@click.option("--init", default=None, metavar="RNET|default",
              help="Start from this R-Net's weights (fine-tuning, e.g. the shipped 'default' on your photos); "
                   "its backbone, layout and --input-size must match.")
@click.option("--identity-net", type=click.Path(dir_okay=False, exists=True), default=None,
              help="insightface ArcFace backbone.pth: Deng et al.'s perceptual identity term (default: off).")
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Steps in all (with --resume: extends the run to this many).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per step and process (under torchrun the step sees WORLD_SIZE x this).")
@click.option("--size", type=click.IntRange(min=16), default=224, show_default=True, help="Render side, pixels.")
@click.option("--input-size", type=click.IntRange(min=16), default=None,
              help="The network's own input side: it resizes any crop to this (default: the crop as given).")
@click.option("--yaw", type=click.FloatRange(min=0, max=90), default=90.0, show_default=True,
              help="Yaw half-range of the renders, degrees.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate (Deng et al.: 1e-4).")
@click.option("--supervised", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the coefficient supervision (0: the weakly-supervised hybrid loss alone).")
@click.option("--supervised-space", type=click.Choice(["coefficients", "vertices"]), default="coefficients",
              show_default=True,
              help="Where the supervision compares: the coefficient vector, or the shape / colour each linear "
                   "block makes (mean squared vertex displacement; 3DDFA's vertex distance).")
@click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True,
              help="Mixed precision of the network (auto: bf16/fp16 on CUDA, off on the CPU); rendering stays fp32.")
@_run_options
@fail_cleanly
def train_rnet_cmd(out: str, data: str, photo_fraction: float, detector: str, model_name: str, backbone: str,
                   imagenet: str | None, init: str | None, identity_net: str | None, steps: int,
                   batch_size: int, size: int, input_size: int | None, yaw: float, lr: float, supervised: float,
                   supervised_space: str, amp: str, seed: int, checkpoint_every: int, resume: bool, device: str,
                   threads: int | None, progress: bool) -> None:
    """Train an R-Net (Deng et al.'s coefficient regressor) with the hybrid loss on synthetic renders;
    OUT/rnet.pt is what `reconstruct --method rnet --rnet` loads. Runs resume exactly (--resume);
    `torchrun --nproc-per-node N $(which face3dkit) train-rnet ...` trains data-parallel."""
    import os

    from face3dkit.regress import RNetTrainConfig, SyntheticFaces, train_rnet
    from face3dkit.runtime import resolve_device

    _set_threads(threads)
    dev = device if device != "auto" or int(os.environ.get("WORLD_SIZE", "1")) > 1 else str(resolve_device(device))
    photos = None
    if data != "synthetic":
        if not os.path.isdir(data):
            raise click.BadParameter(f"{data}: not 'synthetic' and not a folder of photos", param_hint="--data")
        photos = data
    cfg = RNetTrainConfig(model=model_name, backbone=backbone, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                          supervised=supervised, supervised_space=supervised_space, checkpoint_every=checkpoint_every,
                          data=SyntheticFaces(size=size, yaw_deg=yaw), input_size=input_size, imagenet=imagenet,
                          init=init, amp=amp, device=dev, photos=photos, photo_fraction=photo_fraction,
                          detector=detector, identity_net=identity_net)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    report, close = _step_bar(progress and main_rank, steps, "train-rnet", {"loss": ".3f", "landmark": ".1f"})
    try:
        rows = train_rnet(out, cfg, resume=resume, progress=report, steps=steps if resume else None)
    finally:
        close()
    last = rows[-1]
    if main_rank:
        click.echo(f"trained {len(rows)} steps: loss {last['loss']:.4f} (landmark {last['landmark']:.2f}, "
                   f"photometric {last['photometric']:.4f}); R-Net saved in {Path(out) / 'rnet.pt'}")


@main.command("train-cnet")
@click.option("--rnet", "rnet", type=click.Path(dir_okay=False), default=None,
              help="The frozen R-Net (train-rnet's OUT/rnet.pt); required for a new run, a resumed run uses its own.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--model", "model_name", default="default", show_default=True, help="Morphable model name or path.")
@click.option("--steps", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--set-size", type=click.IntRange(min=1), default=5, show_default=True,
              help="Images per identity set (Deng et al.: 5).")
@click.option("--sets-per-batch", type=click.IntRange(min=1), default=2, show_default=True,
              help="Identity sets per step.")
@click.option("--width", type=click.IntRange(min=1), default=128, show_default=True,
              help="Channels of the C-Net's convolutions.")
@click.option("--size", type=click.IntRange(min=16), default=224, show_default=True, help="Crop side, pixels.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Adam learning rate.")
@click.option("--supervised", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Weight of the aggregated identity / albedo supervision (0: the hybrid loss alone).")
@_run_options
@fail_cleanly
def train_cnet_cmd(rnet: str | None, out: str, model_name: str, steps: int, set_size: int, sets_per_batch: int,
                   width: int, size: int, lr: float, supervised: float, seed: int, checkpoint_every: int,
                   resume: bool, device: str, threads: int | None, progress: bool) -> None:
    """Train a C-Net (Deng et al.'s per-coefficient identity / albedo confidences) on a frozen R-Net with
    synthetic identity sets; OUT/cnet.pt is what `reconstruct --same-person --cnet` loads. Runs resume
    exactly (--resume; the run's own settings and R-Net, whose content must be unchanged)."""
    from face3dkit.regress import CNetTrainConfig, SyntheticFaces, train_cnet
    from face3dkit.runtime import resolve_device

    _set_threads(threads)
    resuming = resume and (Path(out) / "checkpoint.pt").exists()
    if not resuming:
        if not rnet:
            raise click.UsageError("a new C-Net run needs --rnet RNET.pt (the R-Net to aggregate)")
        if not Path(rnet).is_file():
            raise click.ClickException(f"{rnet}: no such R-Net checkpoint")
    cfg = CNetTrainConfig(rnet=rnet or "", model=model_name, steps=steps, set_size=set_size,
                          sets_per_batch=sets_per_batch, lr=lr, seed=seed, width=width, supervised=supervised,
                          checkpoint_every=checkpoint_every, data=SyntheticFaces(size=size),
                          device=str(resolve_device(device)))
    report, close = _step_bar(progress, steps, "train-cnet", {"loss": ".3f", "supervised": ".3f"})
    try:
        rows = train_cnet(out, cfg, resume=resume, progress=report)
    finally:
        close()
    last = rows[-1]
    sup = f", supervised {last['supervised']:.4f}" if "supervised" in last else ""
    click.echo(f"trained {len(rows)} steps: loss {last['loss']:.4f} (landmark {last['landmark']:.2f}, photometric "
               f"{last['photometric']:.4f}{sup}); C-Net saved in {Path(out) / 'cnet.pt'}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
