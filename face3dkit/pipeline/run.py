"""The main job: photos → landmarks → Deng alignment → batched fitting → per-face outputs.

Data flows one way (``face3dkit.io`` → ``face3dkit.landmarks`` → ``face3dkit.align`` →
``face3dkit.fit`` → :mod:`face3dkit.pipeline.outputs`). Faces from several images are fitted
together in batches. A bad image (unreadable, no face, bad landmark file) is recorded with its
reason and skipped; finished faces are never redone (``.done.json`` markers, atomic writes), so
an interrupted run resumes where it stopped. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank
takes every ``WORLD_SIZE``-th image.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.align import align_image
from face3dkit.fit import FitConfig, QualityThresholds, assess_fit, fit, yaw_pitch_roll_degrees
from face3dkit.io import ImageReadError, list_images, load_image
from face3dkit.io.atomic import atomic_write_text
from face3dkit.landmarks import FaceLandmarks, LandmarkDetector, lm68_to_lm5, make_detector
from face3dkit.model import Coefficients, MorphableModel, load_model
from face3dkit.pipeline.outputs import OUTPUT_KINDS, face_stem, is_done, write_face_outputs

LOG = logging.getLogger("face3dkit.pipeline")

__all__ = ["ReconstructConfig", "FaceResult", "Failure", "RunSummary", "reconstruct", "shard"]


@dataclass
class ReconstructConfig:
    """Settings of :func:`reconstruct`.

    Attributes:
        model: model name or path (``'default'``, a ``BFM_model_front.mat``, a ``.npz``).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        landmarks: ``'dlib'`` (HOG), ``'dlib-cnn'`` or ``'file'`` (landmark files next to images).
        landmarks_dir: folder of landmark files for ``'file'`` (default: next to each image or in
            its ``detections/`` folder, Deng et al.'s layout).
        faces: ``'all'`` or ``'largest'`` face per image.
        batch_size: faces fitted together.
        fit: :class:`face3dkit.fit.FitConfig` (iterations, learning rates, weights, seed).
        save: output kinds (:data:`face3dkit.pipeline.outputs.OUTPUT_KINDS`).
        recursive: descend into sub-folders of an input folder.
        resume: skip faces whose outputs are complete.
        identity_net: optional path to an insightface ``backbone.pth`` for the perceptual loss.
        quality: limits beyond which a face is reported ``poor_fit``
            (:class:`face3dkit.fit.QualityThresholds`, :func:`face3dkit.fit.assess_fit`).
    """

    model: str = "default"
    device: str = "cpu"
    landmarks: str = "dlib"
    landmarks_dir: str | None = None
    faces: str = "largest"
    batch_size: int = 8
    fit: FitConfig = field(default_factory=FitConfig)
    save: tuple[str, ...] = OUTPUT_KINDS
    recursive: bool = True
    resume: bool = True
    identity_net: str | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)


@dataclass
class FaceResult:
    """One reconstructed face.

    Attributes:
        image: source image path (or ``'<array k>'`` for in-memory input).
        face_index: index of the face in that image.
        coeffs: fitted :class:`Coefficients` (batch of 1, CPU).
        pose_deg: (yaw, pitch, roll) degrees.
        landmarks: (68, 2) fitted landmarks in original-image pixels.
        detected: (K, 2) detected landmarks in original-image pixels.
        crop_matrix: (2, 3) original image → 224 crop.
        landmark_error: mean distance fitted ↔ detected landmarks, crop pixels.
        files: written outputs (empty for the Python API without ``out``).
        status: ``'ok'`` or ``'poor_fit'`` (:func:`face3dkit.fit.assess_fit`).
        reason: why the fit is poor ('' when ok).
        quality: :func:`face3dkit.fit.assess_fit` metrics (fitted-vs-given landmark NME ...).
    """

    image: str
    face_index: int
    coeffs: Coefficients
    pose_deg: tuple[float, float, float]
    landmarks: np.ndarray
    detected: np.ndarray
    crop_matrix: np.ndarray
    landmark_error: float
    files: list[str] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    quality: dict[str, float] = field(default_factory=dict)


@dataclass
class Failure:
    """An input that produced no face, and why."""

    image: str
    reason: str


@dataclass
class RunSummary:
    """What a run did: finished faces, skipped (already done) faces, failures, timing."""

    results: list[FaceResult]
    skipped: list[str]
    failures: list[Failure]
    seconds: float
    n_images: int

    @property
    def ok(self) -> bool:
        return not self.failures


def shard(items: Sequence[Any], rank: int | None = None, world: int | None = None) -> list[Any]:
    """Every ``world``-th item from ``rank`` (defaults from ``RANK`` / ``WORLD_SIZE`` as torchrun sets)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    return list(items[rank::world])


@dataclass
class _Pending:
    image: str
    face_index: int
    folder: Path | None
    stem: str
    crop: np.ndarray  # (S, S, 3) uint8
    lm_crop: np.ndarray  # (K, 2)
    lm_image: np.ndarray  # (K, 2)
    matrix: np.ndarray  # (2, 3)
    inverse: np.ndarray  # (2, 3)
    input_number: int = -1  # position of its input in the run (progress counts finished inputs)


def _output_folder(out: Path, path: Path, root: Path | None) -> Path:
    """``out/<relative parent>/<stem>/``: one folder per image, mirroring sub-folders."""
    rel = path.parent.relative_to(root) if root is not None and path.is_relative_to(root) else Path()
    return out / rel / path.stem


def _prepare(image: np.ndarray, name: str, detector: LandmarkDetector, faces_sel: str, folder: Path | None,
             resume: bool, path: Path | None) -> tuple[list[_Pending], list[str]]:
    faces: list[FaceLandmarks] = detector.detect(image, path=path)
    if not faces:
        raise LookupError("no face found")
    if faces_sel == "largest":
        faces = [max(faces, key=lambda f: f.area)]
    pending, skipped = [], []
    stem_base = Path(name).stem
    for k, f in enumerate(faces):
        stem = face_stem(stem_base, k)
        if folder is not None and resume and is_done(folder, stem):
            skipped.append(f"{name}#{k}")
            continue
        al = align_image(image, f)
        pending.append(_Pending(name, k, folder, stem, np.asarray(al.image), np.asarray(al.landmarks),
                                f.points.copy(), np.asarray(al.matrix, dtype=np.float64),
                                np.asarray(al.inverse, dtype=np.float64)))
    return pending, skipped


def _apply(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def _fit_batch(model: MorphableModel, batch: list[_Pending], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool) -> list[FaceResult]:
    """Fit one batch; faces with 68 and with 5 landmarks are fitted in separate sub-batches."""
    groups: dict[int, list[_Pending]] = {}
    for p in batch:
        groups.setdefault(len(p.lm_crop), []).append(p)
    out: list[FaceResult] = []
    for group in groups.values():
        out += _fit_group(model, group, cfg, perceptual, out_written)
    return out


def _fit_group(model: MorphableModel, batch: list[_Pending], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool) -> list[FaceResult]:
    dev = model.mean_shape.device
    imgs = torch.as_tensor(np.stack([p.crop for p in batch]), dtype=torch.float32, device=dev) / 255.0
    lm = torch.as_tensor(np.stack([p.lm_crop for p in batch]), dtype=torch.float32, device=dev)
    res = fit(model, imgs, lm, cfg.fit, perceptual=perceptual)
    ypr = yaw_pitch_roll_degrees(res.coeffs.angles).cpu().numpy()
    results = []
    with torch.no_grad():
        verts = model.shape(res.coeffs.id, res.coeffs.exp)
        albedo = model.albedo(res.coeffs.tex)
    for i, p in enumerate(batch):
        c1 = Coefficients(**{k: v[i:i + 1].cpu() for k, v in res.coeffs.as_dict().items()})
        lm_fit_crop = res.landmarks2d[i].cpu().numpy()
        lm_fit_img = _apply(lm_fit_crop, p.inverse)
        # Fitted vs the landmarks it was fitted to (5-point faces: the fit reduced to 5 points).
        q = assess_fit(lm_fit_crop if len(p.lm_crop) == 68 else lm68_to_lm5(lm_fit_crop), p.lm_crop,
                       tuple(float(x) for x in ypr[i]), c1.id, cfg.quality)
        files: list[str] = []
        if out_written and p.folder is not None:
            render = mask = None
            if res.render is not None:
                render = (res.render[i].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
                mask = res.mask[i, ..., 0].cpu().numpy() > 0
            written = write_face_outputs(
                p.folder, p.stem, c1, verts=verts[i], faces=model.faces, albedo=albedo[i],
                lm68_image=lm_fit_img, lm68_detected_image=p.lm_image, pose_deg=tuple(float(x) for x in ypr[i]),
                crop=p.crop, render=render, render_mask=mask, lm68_crop=lm_fit_crop,
                lm68_detected_crop=p.lm_crop, crop_matrix=p.matrix, uv=model.uv, face_uv=model.face_uv,
                save=cfg.save, extra={"image": p.image, "face_index": p.face_index,
                                      "landmark_error_px": float(res.landmark_error[i]),
                                      "status": q.status, "reason": q.reason, "quality": q.metrics},
            )
            files = [str(f) for f in written]
        results.append(FaceResult(p.image, p.face_index, c1, tuple(float(x) for x in ypr[i]), lm_fit_img,
                                  p.lm_image, p.matrix, float(res.landmark_error[i]), files, q.status, q.reason,
                                  q.metrics))
    return results


def reconstruct(
    inputs: str | os.PathLike | np.ndarray | Iterable[str | os.PathLike | np.ndarray],
    out: str | os.PathLike | None = None,
    config: ReconstructConfig | None = None,
    *,
    model: MorphableModel | None = None,
    detector: LandmarkDetector | None = None,
    progress: Callable[[int, int], None] | bool = False,
) -> RunSummary:
    """Reconstruct every face in ``inputs``.

    Args:
        inputs: a folder (recursive), an image path, a text file listing images, an (H, W, 3)
            uint8 array, or an iterable of these.
        out: output folder; None returns results without writing files.
        config: :class:`ReconstructConfig`.
        model: a loaded model (default: ``config.model`` on ``config.device``).
        detector: a landmark backend (default: ``config.landmarks``).
        progress: True for a tqdm bar (images/s, ETA), or a callback ``(done, total)``.

    Returns:
        :class:`RunSummary`; ``summary.failures`` lists what failed and why.
    """
    cfg = config or ReconstructConfig()
    t0 = time.perf_counter()
    m = model if model is not None else load_model(cfg.model, device=cfg.device)
    det = detector
    if det is None:
        kw: dict[str, Any] = {}
        if cfg.landmarks == "file" and cfg.landmarks_dir:
            kw["landmarks_dir"] = cfg.landmarks_dir
        det = make_detector(cfg.landmarks, **kw)
    perceptual = None
    if cfg.identity_net:
        from face3dkit.losses import PerceptualLoss

        perceptual = PerceptualLoss.from_iresnet(cfg.identity_net).to(m.mean_shape.device)
    elif cfg.fit.photo_iters > 0:
        LOG.warning("perceptual loss off: no identity network given (pass an insightface backbone.pth "
                    "with --identity-net / ReconstructConfig.identity_net)")

    # Inputs → a flat list of (name, path-or-array).
    items: list[tuple[str, Path | np.ndarray]] = []
    root: Path | None = None
    seq = [inputs] if isinstance(inputs, (str, os.PathLike, np.ndarray)) else list(inputs)
    for k, x in enumerate(seq):
        if isinstance(x, np.ndarray):
            items.append((f"array{k}", x))
        else:
            p = Path(x)
            if p.is_dir():
                root = p if len(seq) == 1 else None
            items += [(str(q), q) for q in list_images(p, recursive=cfg.recursive)]
    items = shard(items)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), unit="img", desc="reconstruct", dynamic_ncols=True)
    results: list[FaceResult] = []
    failures: list[Failure] = []
    skipped: list[str] = []
    pending: list[_Pending] = []
    done_images = 0
    waiting: dict[int, int] = {}  # input number -> its faces still to fit (progress counts finished inputs)

    def advance(n: int) -> None:
        nonlocal done_images
        if n <= 0:
            return
        done_images += n
        if bar is not None:
            bar.update(n)
            bar.set_postfix(faces=len(results), failed=len(failures))
        elif callable(progress):
            progress(done_images, len(items))

    def flush() -> None:
        nonlocal pending
        if not pending:
            return
        try:
            results.extend(_fit_batch(m, pending, cfg, perceptual, out_dir is not None))
        except (RuntimeError, ValueError, OSError) as e:  # a batch failing must not lose the run
            for p in pending:
                failures.append(Failure(p.image, f"fitting failed: {' '.join(str(e).split())}"))
        finished = 0
        for p in pending:
            k = p.input_number
            waiting[k] -= 1
            if waiting[k] == 0:
                del waiting[k]
                finished += 1
        pending = []
        advance(finished)

    for number, (name, src) in enumerate(items):
        try:
            if isinstance(src, np.ndarray):
                img = src
                path = None
                folder = out_dir / name if out_dir is not None else None
            else:
                img = load_image(src)
                path = src
                folder = _output_folder(out_dir, src, root) if out_dir is not None else None
            new, skip = _prepare(img, name, det, cfg.faces, folder, cfg.resume, path)
            skipped += skip
        except (ImageReadError, LookupError, ValueError, OSError) as e:
            failures.append(Failure(name, " ".join(str(e).split()) or type(e).__name__))
            new = []
        for p in new:
            p.input_number = number
            waiting[number] = waiting.get(number, 0) + 1
        pending += new
        if not new:  # failed, or every face already done: finished now
            advance(1)
        while len(pending) >= cfg.batch_size:
            head, pending_rest = pending[: cfg.batch_size], pending[cfg.batch_size:]
            pending = head
            flush()
            pending = pending_rest
    flush()
    if bar is not None:
        bar.close()
    summary = RunSummary(results, skipped, failures, time.perf_counter() - t0, len(items))
    if out_dir is not None:
        _write_summary(out_dir, summary, cfg)
    return summary


def _write_summary(out: Path, s: RunSummary, cfg: ReconstructConfig) -> None:
    rank = int(os.environ.get("RANK", 0))
    suffix = f".rank{rank}" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    faces = [{"image": r.image, "face_index": r.face_index, "yaw": r.pose_deg[0], "pitch": r.pose_deg[1],
              "roll": r.pose_deg[2], "landmark_error_px": r.landmark_error,
              "outputs": r.files[0] if r.files else "", "status": r.status, "reason": r.reason,
              "landmark_nme": r.quality.get("landmark_nme", float("nan"))} for r in s.results]
    cfg_d = asdict(cfg)
    data = {
        "images": s.n_images, "faces": len(s.results), "skipped_done": len(s.skipped), "failed": len(s.failures),
        "poor_fit": sum(r.status != "ok" for r in s.results), "seconds": round(s.seconds, 3),
        "seconds_per_face": round(s.seconds / max(len(s.results), 1), 3) if s.results else None,
        "failures": [asdict(f) for f in s.failures], "faces_detail": faces, "config": cfg_d,
    }
    atomic_write_text(out / f"summary{suffix}.json", json.dumps(data, indent=2, default=str))
    lines = ["image,face_index,yaw,pitch,roll,landmark_error_px,status,reason,landmark_nme"]
    lines += [f"{_csv(f['image'])},{f['face_index']},{f['yaw']:.3f},{f['pitch']:.3f},{f['roll']:.3f},"
              f"{f['landmark_error_px']:.3f},{f['status']},{_csv(f['reason'])},{f['landmark_nme']:.4f}"
              for f in faces]
    lines += [f"{_csv(f.image)},,,,,,failed,{_csv(f.reason)}," for f in s.failures]
    atomic_write_text(out / f"summary{suffix}.csv", "\n".join(lines) + "\n")


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(ch in text for ch in ',"\n') else text


def degrees_str(x: float) -> str:  # pragma: no cover - tiny formatting helper for the CLI
    return f"{x:+.1f}°" if math.isfinite(x) else "nan"
