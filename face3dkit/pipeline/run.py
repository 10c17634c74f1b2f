"""The main job: photos → landmarks → Deng alignment → batched fitting → per-face outputs.

Data flows one way (``face3dkit.io`` → ``face3dkit.landmarks`` → ``face3dkit.align`` →
``face3dkit.fit`` → :mod:`face3dkit.pipeline.outputs`). Faces from several images are fitted
together in batches. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank takes every
``WORLD_SIZE``-th input.

Nothing is lost or made up:

- every input gets its own output folder (:func:`face3dkit.pipeline.outputs.output_folders`:
  ``out/<stem>/``, or longer names when two inputs would share one, e.g. ``face.jpg`` and
  ``face.png``).
- a bad input (missing path, broken symbolic link, unreadable folder or image, no face, bad
  landmark file) is a failure of that input, recorded with its reason; the run goes on.
- finished faces are marked by ``<stem>.done.json`` holding the settings they were made with
  (:func:`settings_fingerprint`). A resumed run skips a face whose marker has the same settings
  and the output kinds asked for; a face made with other settings is redone (its marker is
  removed first, files it no longer writes are removed after), or with ``redo_changed=False``
  kept and listed as such. ``resume=False`` (``--force``) redoes everything.
- ``summary.json`` / ``summary.csv`` accumulate across runs: every face in the output folder, done
  now or earlier, with its settings fingerprint and finish time, every failure with its reason;
  rows of inputs processed again are replaced, rows of other inputs kept (faces whose marker is
  gone are dropped).
- all files are written atomically; temporaries of a killed run (``.<name>.f3dtmp-*``) are removed
  when a run works in that folder again.

CPU threads: ``ReconstructConfig.threads`` (default: one per physical core available, divided
among torchrun's local ranks; :func:`face3dkit.runtime.default_threads`) for the duration of
the call.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.align import align_image
from face3dkit.align.template import template_5p_from_model
from face3dkit.fit import FitConfig, QualityThresholds, assess_fit, fit, yaw_pitch_roll_degrees
from face3dkit.io import ImageReadError, load_image, scan_images
from face3dkit.io.atomic import atomic_write_text, clean_temp_files
from face3dkit.landmarks import FaceLandmarks, LandmarkDetector, lm68_to_lm5, make_detector, select_faces
from face3dkit.model import Coefficients, MorphableModel, load_model
from face3dkit.pipeline.outputs import OUTPUT_KINDS, face_stem, output_folders, read_marker, write_face_outputs
from face3dkit.runtime import resolve_device, threads_scope

LOG = logging.getLogger("face3dkit.pipeline")

__all__ = ["ReconstructConfig", "FaceResult", "Failure", "RunSummary", "SUMMARY_COLUMNS", "face_settings",
           "reconstruct", "settings_fingerprint", "shard"]

#: Columns of ``summary.csv`` (the first eight as before; later ones are additions).
SUMMARY_COLUMNS = ("image", "face_index", "yaw", "pitch", "roll", "landmark_error_px", "status", "reason", "folder",
                   "settings", "finished_utc", "landmark_nme")


@dataclass
class ReconstructConfig:
    """Settings of :func:`reconstruct`.

    Attributes:
        model: model name or path (``'default'``, a ``BFM_model_front.mat``, a ``.npz``).
        device: ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
        landmarks: ``'dlib'`` (HOG, upsample 0 and 1 merged), ``'dlib-cnn'``, ``'mtcnn'`` (MTCNN boxes,
            dlib's 68 points where they agree with MTCNN's 5, else the 5) or ``'file'`` (landmark
            files next to images).
        landmarks_dir: folder of landmark files for ``'file'`` (default: next to each image or in
            its ``detections/`` folder, Deng et al.'s layout).
        faces: ``'all'``, the ``'largest'`` or the ``'center'`` face (box centre closest to the image
            centre) per image.
        batch_size: faces fitted together (>= 1).
        fit: :class:`face3dkit.fit.FitConfig` (iterations, learning rates, weights, seed).
        save: output kinds (:data:`face3dkit.pipeline.outputs.OUTPUT_KINDS`).
        recursive: descend into sub-folders of an input folder.
        resume: skip faces already finished with the same settings; False redoes every face
            (``--no-resume`` / ``--force``).
        identity_net: optional path to an insightface ``backbone.pth`` for the perceptual loss.
        redo_changed: with ``resume``, redo a finished face whose marker records other settings
            (or none: a marker of an older version); False keeps it and lists it as kept.
        threads: torch intra-op CPU threads during the call; None: one per physical core
            available, divided among torchrun's local ranks (:func:`face3dkit.runtime.default_threads`);
            0: leave torch's setting as it is.
        quality: limits beyond which a face is reported ``poor_fit``
            (:class:`face3dkit.fit.QualityThresholds`, :func:`face3dkit.fit.assess_fit`).
        texture_size: side in pixels of the OBJ's baked albedo texture (models with UVs). The
            texture holds per-vertex colours interpolated over each triangle: 512 gives the
            default model 12 texels per vertex (6 per triangle); 1024 four times as many, for
            four times the baking and PNG time.
    """

    model: str = "default"
    device: str = "auto"
    landmarks: str = "dlib"
    landmarks_dir: str | None = None
    faces: str = "largest"
    batch_size: int = 8
    fit: FitConfig = field(default_factory=FitConfig)
    save: tuple[str, ...] = OUTPUT_KINDS
    recursive: bool = True
    resume: bool = True
    identity_net: str | None = None
    redo_changed: bool = True
    threads: int | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    texture_size: int = 512


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
        folder: its output folder (None without ``out``).
        finished_utc: when its outputs were written (ISO 8601 UTC; ``''`` without ``out``).
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
    folder: str | None = None
    finished_utc: str = ""
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
    """What a run did.

    Attributes:
        results: faces fitted in this run.
        skipped: ``'<image>#<face>'`` of faces already finished with the same settings (not redone).
        failures: inputs that failed (missing, unreadable, broken link, no face...) with the reason.
        seconds: wall time of the run.
        n_images: inputs of this run (this rank's share under torchrun), failed ones included.
        redone: ``'<image>#<face>'`` of finished faces redone because their settings changed.
        kept: ``'<image>#<face>'`` of finished faces with other settings kept (``redo_changed=False``).
        rows: the accumulated summary rows as written to ``summary.json`` (empty without ``out``).
        device: the device the faces were fitted on.
        threads: torch intra-op CPU threads during the run.
    """

    results: list[FaceResult]
    skipped: list[str]
    failures: list[Failure]
    seconds: float
    n_images: int
    redone: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    threads: int = 1

    @property
    def ok(self) -> bool:
        return not self.failures


def shard(items: Sequence[Any], rank: int | None = None, world: int | None = None) -> list[Any]:
    """Every ``world``-th item from ``rank`` (defaults from ``RANK`` / ``WORLD_SIZE`` as torchrun sets)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
    return list(items[rank::world])


# --------------------------------------------------------------------------------------------- settings

#: Settings keys that decide a face's result (the fingerprint); the others are recorded for information.
_RESULT_KEYS = ("model_sha256", "landmarks", "landmarks_dir", "faces", "identity_net_sha256", "fit", "texture_size")


def _sha256_tensors(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}|{a.dtype}|{tuple(a.shape)}|".encode())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def face_settings(cfg: ReconstructConfig, model: MorphableModel,
                  detector_given: LandmarkDetector | None = None) -> dict[str, Any]:
    """The settings a face is made with, as recorded in its ``.done.json`` and in the summary.

    Result-deciding (fingerprinted, :func:`settings_fingerprint`): the model's content (SHA-256 of
    its buffers, so a renamed or moved file is the same model), the landmark source (and folder),
    the face selection, the whole :class:`FitConfig`, the identity network's content. Recorded for
    reading only: the model name and the identity network path. Device, threads, batch size,
    progress and output location are not settings of a face.

    Args:
        cfg: the run's configuration.
        model: the loaded model.
        detector_given: a detector passed to :func:`reconstruct` instead of ``cfg.landmarks``
            (recorded by its class).
    """
    landmarks = cfg.landmarks if detector_given is None else \
        f"{type(detector_given).__module__}.{type(detector_given).__qualname__}"
    return {
        "model": cfg.model,
        "model_sha256": _sha256_tensors(model),
        "landmarks": landmarks,
        "landmarks_dir": os.path.abspath(cfg.landmarks_dir) if cfg.landmarks_dir else None,
        "faces": cfg.faces,
        "identity_net": os.path.abspath(cfg.identity_net) if cfg.identity_net else None,
        "identity_net_sha256": _sha256_file(cfg.identity_net) if cfg.identity_net else None,
        "fit": json.loads(json.dumps(asdict(cfg.fit), default=str)),
        "texture_size": cfg.texture_size,
    }


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the result-deciding settings (canonical JSON)."""
    core = {k: settings.get(k) for k in _RESULT_KEYS}
    return hashlib.sha256(json.dumps(core, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _settings_diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """``'fit.photo_iters 3 -> 5, landmarks dlib -> file'`` (result-deciding keys only)."""
    if not isinstance(old, dict):
        return "settings not recorded (marker of an older version)"
    a = _flat({k: old.get(k) for k in _RESULT_KEYS})
    b = _flat({k: new.get(k) for k in _RESULT_KEYS})
    parts = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            va, vb = a.get(k), b.get(k)
            if k.endswith("sha256"):
                va, vb = str(va)[:8], str(vb)[:8]
            parts.append(f"{k} {va} -> {vb}")
    return ", ".join(parts) or "settings differ"


# --------------------------------------------------------------------------------------------- inputs

@dataclass
class _Input:
    name: str  # as given (path string or 'array<k>')
    key: str  # absolute path, or the array name
    src: Path | np.ndarray | None  # None: failed before reading (missing, broken link, unreadable folder)
    error: str = ""
    rel: str | None = None  # parent relative to the input folder ('' for none); None for arrays
    folder: Path | None = None


def _expand(inputs: Any, recursive: bool) -> list[_Input]:
    seq = [inputs] if isinstance(inputs, (str, os.PathLike, np.ndarray)) else list(inputs)
    items: list[_Input] = []
    root: Path | None = None
    for k, x in enumerate(seq):
        if isinstance(x, np.ndarray):
            items.append(_Input(f"array{k}", f"array{k}", x))
            continue
        p = Path(x)
        try:
            scan = scan_images(p, recursive=recursive)
        except ImageReadError as e:  # a missing or unreadable argument fails alone
            items.append(_Input(str(p), os.path.abspath(p), None, e.reason))
            continue
        if p.is_dir():
            root = p if len(seq) == 1 else None
        for q in scan.images:
            rel = q.parent.relative_to(root).as_posix() if root is not None and q.is_relative_to(root) else ""
            items.append(_Input(str(q), os.path.abspath(q), q, rel="" if rel == "." else rel))
        for path, reason in scan.problems:
            items.append(_Input(path, os.path.abspath(path), None, reason))
    return items


def _assign_folders(items: list[_Input], out: Path) -> None:
    named = [it for it in items if not it.error]
    folders = output_folders([(it.key, it.rel, Path(it.name).name if it.rel is not None else it.name)
                              for it in named])
    for it, f in zip(named, folders, strict=True):
        it.folder = out / f


# --------------------------------------------------------------------------------------------- per face

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
    old_files: list[str] = field(default_factory=list)  # outputs of the marker it replaces


@dataclass
class _Earlier:
    """A face finished by an earlier run, as its marker describes it."""

    image: str
    face_index: int
    folder: Path
    marker: dict[str, Any]
    note: str = ""


@dataclass
class _Prepared:
    pending: list[_Pending] = field(default_factory=list)
    earlier: list[_Earlier] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _prepare(image: np.ndarray, name: str, detector: LandmarkDetector, cfg: ReconstructConfig, folder: Path | None,
             path: Path | None, settings: dict[str, Any], fingerprint: str,
             template: torch.Tensor | None = None) -> _Prepared:
    faces: list[FaceLandmarks] = detector.detect(image, path=path)
    if not faces:
        raise LookupError("no face found")
    faces = select_faces(faces, cfg.faces, image.shape[:2])  # type: ignore[arg-type]
    prep = _Prepared()
    stem_base = Path(name).stem
    for k, f in enumerate(faces):
        stem = face_stem(stem_base, k)
        old_files: list[str] = []
        if folder is not None:
            marker = read_marker(folder, stem)
            if marker is not None:
                saved = set(marker.get("save") or [])
                same = marker.get("settings_fingerprint") == fingerprint
                if cfg.resume and same and set(cfg.save) <= saved:
                    prep.earlier.append(_Earlier(name, k, folder, marker))
                    continue
                if cfg.resume:
                    change = _settings_diff(marker.get("settings"), settings) if not same else \
                        f"output kinds {','.join(sorted(set(cfg.save) - saved))} not saved"
                    if not cfg.redo_changed:
                        prep.earlier.append(_Earlier(name, k, folder, marker, f"kept: made with other settings "
                                                                              f"({change})"))
                        continue
                    prep.redone.append(f"{name}#{k}")
                    prep.changes.append(change)
                old_files = [str(x) for x in marker.get("files", []) if isinstance(x, str)]
                # The marker goes first: a run killed during the redo must not leave it vouching for
                # outputs that are partly new.
                (folder / f"{stem}.done.json").unlink(missing_ok=True)
        al = align_image(image, f, template)  # the fitted model's own 5-point template
        prep.pending.append(_Pending(name, k, folder, stem, np.asarray(al.image), np.asarray(al.landmarks),
                                     f.points.copy(), np.asarray(al.matrix, dtype=np.float64),
                                     np.asarray(al.inverse, dtype=np.float64), old_files=old_files))
    return prep


def _apply(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def _fit_batch(model: MorphableModel, batch: list[_Pending], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool, marker: dict[str, Any] | None = None) -> list[FaceResult]:
    """Fit one batch; faces with 68 and with 5 landmarks are fitted in separate sub-batches.

    ``marker``: extra fields for every ``.done.json`` (settings and their fingerprint).
    """
    groups: dict[int, list[_Pending]] = {}
    for p in batch:
        groups.setdefault(len(p.lm_crop), []).append(p)
    out: list[FaceResult] = []
    for group in groups.values():
        out += _fit_group(model, group, cfg, perceptual, out_written, marker or {})
    return out


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fit_group(model: MorphableModel, batch: list[_Pending], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool, marker: dict[str, Any]) -> list[FaceResult]:
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
        finished = ""
        if out_written and p.folder is not None:
            render = mask = None
            if res.render is not None:
                render = (res.render[i].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
                shown = res.display_mask if res.display_mask is not None else res.mask
                mask = shown[i, ..., 0].cpu().numpy() > 0
            finished = _utc_now()
            written = write_face_outputs(
                p.folder, p.stem, c1, verts=verts[i], faces=model.faces, albedo=albedo[i],
                lm68_image=lm_fit_img, lm68_detected_image=p.lm_image, pose_deg=tuple(float(x) for x in ypr[i]),
                crop=p.crop, render=render, render_mask=mask, lm68_crop=lm_fit_crop,
                lm68_detected_crop=p.lm_crop, crop_matrix=p.matrix, uv=model.uv, face_uv=model.face_uv,
                save=cfg.save, texture_size=cfg.texture_size, extra={"image": p.image, "face_index": p.face_index,
                                      "landmark_error_px": float(res.landmark_error[i]),
                                      "status": q.status, "reason": q.reason, "quality": q.metrics,
                                      "save": list(cfg.save), "finished_utc": finished, **marker},
                exp_names=model.exp_names,
            )
            files = [str(f) for f in written]
            names = {f.name for f in written}
            for old in p.old_files:  # outputs of the replaced result that this one did not rewrite
                if old not in names and Path(old).name == old:
                    (p.folder / old).unlink(missing_ok=True)
        results.append(FaceResult(p.image, p.face_index, c1, tuple(float(x) for x in ypr[i]), lm_fit_img,
                                  p.lm_image, p.matrix, float(res.landmark_error[i]), files,
                                  str(p.folder) if p.folder is not None else None, finished, q.status, q.reason,
                                  q.metrics))
    return results


# --------------------------------------------------------------------------------------------- the run

def _check_config(cfg: ReconstructConfig) -> None:
    problems = []
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        problems.append(f"batch_size must be an integer >= 1, got {cfg.batch_size!r}")
    if cfg.fit.photo_iters < 0 or cfg.fit.landmark_iters < 0:
        problems.append(f"iterations must be >= 0, got photo_iters={cfg.fit.photo_iters}, "
                        f"landmark_iters={cfg.fit.landmark_iters}")
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 0):
        problems.append(f"threads must be None, 0 (leave as is) or >= 1, got {cfg.threads!r}")
    if not isinstance(cfg.texture_size, int) or not 16 <= cfg.texture_size <= 16384:
        problems.append(f"texture_size must be an integer in [16, 16384], got {cfg.texture_size!r}")
    bad = [k for k in cfg.save if k not in OUTPUT_KINDS]
    if bad:
        problems.append(f"unknown output kind(s) {', '.join(bad)}; choose from {','.join(OUTPUT_KINDS)}")
    if problems:
        raise ValueError("ReconstructConfig: " + "; ".join(problems))


def reconstruct(
    inputs: str | os.PathLike | np.ndarray | Iterable[str | os.PathLike | np.ndarray],
    out: str | os.PathLike | None = None,
    config: ReconstructConfig | None = None,
    *,
    model: MorphableModel | None = None,
    detector: LandmarkDetector | None = None,
    progress: Callable[[int, int], None] | bool = False,
) -> RunSummary:
    """Reconstruct every face in ``inputs`` (see the module docstring for resume and failures).

    Args:
        inputs: a folder (recursive), an image path, a text file listing images, an (H, W, 3)
            uint8 array, or an iterable of these. A missing path fails alone.
        out: output folder; None returns results without writing files.
        config: :class:`ReconstructConfig`.
        model: a loaded model (default: ``config.model`` on ``config.device``).
        detector: a landmark backend (default: ``config.landmarks``).
        progress: True for a tqdm bar (images/s, ETA), or a callback ``(done, total)``.

    Returns:
        :class:`RunSummary`; ``summary.failures`` lists what failed and why.

    Raises:
        ValueError: an invalid configuration; :class:`face3dkit.runtime.DeviceUnavailableError`
            (a ValueError) for a device this machine does not have.
    """
    cfg = config or ReconstructConfig()
    _check_config(cfg)
    with threads_scope(cfg.threads) as n_threads:
        return _run(inputs, out, cfg, model, detector, progress, n_threads)


def _run(inputs: Any, out: str | os.PathLike | None, cfg: ReconstructConfig, model: MorphableModel | None,
         detector: LandmarkDetector | None, progress: Callable[[int, int], None] | bool, n_threads: int) -> RunSummary:
    t0 = time.perf_counter()
    out_dir = Path(out) if out is not None else None
    items = _expand(inputs, cfg.recursive)
    m: MorphableModel | None = None
    template: torch.Tensor | None = None
    det = detector
    perceptual = None
    settings: dict[str, Any] = {}
    fingerprint = ""
    marker: dict[str, Any] = {}
    if any(not it.error for it in items):  # nothing to load when every input failed already
        m = model if model is not None else load_model(cfg.model, device=resolve_device(cfg.device))
        template = template_5p_from_model(m).detach().cpu().double()
        if det is None:
            kw: dict[str, Any] = {}
            if cfg.landmarks == "file" and cfg.landmarks_dir:
                kw["landmarks_dir"] = cfg.landmarks_dir
            if cfg.landmarks == "mtcnn":
                kw["device"] = m.mean_shape.device  # the nets run where the fit runs
            det = make_detector(cfg.landmarks, **kw)
        if cfg.identity_net:
            from face3dkit.losses import PerceptualLoss

            perceptual = PerceptualLoss.from_iresnet(cfg.identity_net).to(m.mean_shape.device)
        elif cfg.fit.photo_iters > 0:
            LOG.warning("perceptual loss off: no identity network given (pass an insightface backbone.pth "
                        "with --identity-net / ReconstructConfig.identity_net)")
        if out_dir is not None:
            settings = face_settings(cfg, m, detector)
            fingerprint = settings_fingerprint(settings)
            marker = {"settings_fingerprint": fingerprint, "settings": settings}
    if out_dir is not None:
        _assign_folders(items, out_dir)  # over all inputs, before sharding: the same on every rank
    items = shard(items)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_temp_files(out_dir, finals=_summary_names())

    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), unit="img", desc="reconstruct", dynamic_ncols=True)
    results: list[FaceResult] = []
    failures: list[Failure] = []
    skipped: list[str] = []
    earlier: list[_Earlier] = []
    redone: list[str] = []
    changes: dict[str, int] = {}
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
            results.extend(_fit_batch(m, pending, cfg, perceptual, out_dir is not None, marker))
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

    for number, item in enumerate(items):
        new: list[_Pending] = []
        if item.error:
            failures.append(Failure(item.name, item.error))
        else:
            try:
                if item.folder is not None:
                    clean_temp_files(item.folder)
                if isinstance(item.src, np.ndarray):
                    img, path = item.src, None
                else:
                    img, path = load_image(item.src), item.src
                prep = _prepare(img, item.name, det, cfg, item.folder, path, settings, fingerprint, template)
                new = prep.pending
                earlier += prep.earlier
                skipped += [f"{e.image}#{e.face_index}" for e in prep.earlier if not e.note]
                redone += prep.redone
                for c in prep.changes:
                    changes[c] = changes.get(c, 0) + 1
            except (ImageReadError, LookupError, ValueError, OSError) as e:
                failures.append(Failure(item.name, " ".join(str(e).split()) or type(e).__name__))
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
    for change, n in sorted(changes.items()):
        LOG.info("redid %d face(s) made with other settings: %s", n, change)
    kept = [f"{e.image}#{e.face_index}" for e in earlier if e.note]
    if kept:
        LOG.warning("kept %d face(s) made with other settings (redo them with --redo-changed or --force)", len(kept))
    summary = RunSummary(results, skipped, failures, time.perf_counter() - t0, len(items), redone=redone, kept=kept,
                         device=str(m.mean_shape.device if m is not None else resolve_device(cfg.device)),
                         threads=n_threads)
    if out_dir is not None:
        summary.rows = _write_summary(out_dir, summary, cfg, items, earlier, settings, fingerprint)
    return summary


# --------------------------------------------------------------------------------------------- summary

def _summary_names() -> tuple[str, str]:
    rank = int(os.environ.get("RANK", 0))
    suffix = f".rank{rank}" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else ""
    return f"summary{suffix}.json", f"summary{suffix}.csv"


def _rel(out: Path, p: Path | str | None) -> str:
    if p is None:
        return ""
    try:
        return Path(p).relative_to(out).as_posix()
    except ValueError:
        return str(p)


def _previous_rows(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and settings of an earlier ``summary.json`` (none when absent; a warning when unreadable)."""
    if not path.exists():
        return [], {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [dict(r, status=r.get("status", "ok")) for r in data.get("faces_detail", [])]
        rows += [dict(r, status="failed") for r in data.get("failures", [])]
        return rows, dict(data.get("settings") or {})
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as e:
        LOG.warning("%s: unreadable (%s); earlier rows are rebuilt only for the inputs of this run", path,
                    " ".join(str(e).split()))
        return [], {}


def _write_summary(out: Path, s: RunSummary, cfg: ReconstructConfig, items: list[_Input], earlier: list[_Earlier],
                   settings: dict[str, Any], fingerprint: str) -> list[dict[str, Any]]:
    """Merge this run into ``summary[.rankR].json/.csv`` (see the module docstring); returns all rows."""
    json_name, csv_name = _summary_names()
    key_of = {it.name: it.key for it in items}
    folder_of = {it.name: it.folder for it in items}

    def face_row(image: str, k: int, pose: Sequence[float], err: float | None, folder: Path | None, status: str,
                 reason: str, fp: str, finished: str, first: str, nme: float | None = None) -> dict[str, Any]:
        return {"image": image, "face_index": k, "yaw": pose[0], "pitch": pose[1], "roll": pose[2],
                "landmark_error_px": err, "status": status, "reason": reason, "landmark_nme": nme,
                "folder": _rel(out, folder),
                "settings": fp, "finished_utc": finished, "outputs": first, "path": key_of.get(image, image),
                "marker": _rel(out, folder / f"{face_stem(Path(image).stem, k)}.done.json") if folder else ""}

    now: list[dict[str, Any]] = []
    for r in s.results:
        now.append(face_row(r.image, r.face_index, r.pose_deg, r.landmark_error, folder_of.get(r.image), r.status,
                            r.reason, fingerprint, r.finished_utc, r.files[0] if r.files else "",
                            r.quality.get("landmark_nme")))
    used = {fingerprint: settings} if s.results else {}
    for e in earlier:
        mk = e.marker
        pose = mk.get("pose") or {}
        files = mk.get("files") or []
        fp = str(mk.get("settings_fingerprint") or "")
        if fp and isinstance(mk.get("settings"), dict):
            used[fp] = mk["settings"]
        now.append(face_row(e.image, e.face_index, [pose.get("yaw"), pose.get("pitch"), pose.get("roll")],
                            mk.get("landmark_error_px"), e.folder, str(mk.get("status", "ok")),
                            e.note or str(mk.get("reason", "")), fp, str(mk.get("finished_utc", "")),
                            str(e.folder / files[0]) if files else "", (mk.get("quality") or {}).get("landmark_nme")))
    for f in s.failures:
        now.append({"image": f.image, "face_index": None, "status": "failed", "reason": f.reason,
                    "folder": _rel(out, folder_of.get(f.image)), "path": key_of.get(f.image, os.path.abspath(f.image))})
    this_run = {it.key for it in items}
    old_rows, old_settings = _previous_rows(out / json_name)
    kept_old = []
    for r in old_rows:
        key = r.get("path") or os.path.abspath(str(r.get("image", "")))
        if key in this_run:
            continue  # redone, skipped or failed again in this run: its new row replaces it
        if r["status"] != "failed" and r.get("marker") and not (out / r["marker"]).exists():
            continue  # outputs removed since: no longer a result in this folder
        kept_old.append(r)
        if r.get("settings") in old_settings:
            used.setdefault(r["settings"], old_settings[r["settings"]])
    unique: dict[tuple[str, Any, Any], dict[str, Any]] = {}  # an input given twice is listed once
    for r in kept_old + now:
        unique[(str(r.get("path")), r.get("face_index"), r.get("reason") if r["status"] == "failed" else None)] = r
    rows = list(unique.values())
    faces = sorted((r for r in rows if r["status"] != "failed"), key=lambda r: (str(r["image"]), r["face_index"]))
    fails = sorted((r for r in rows if r["status"] == "failed"), key=lambda r: str(r["image"]))
    n = len(s.results)
    data = {
        "images": s.n_images, "faces": n, "skipped_done": len(s.skipped), "failed": len(s.failures),
        "redone_settings_changed": len(s.redone), "kept_other_settings": len(s.kept), "faces_total": len(faces),
        "poor_fit": sum(r.status == "poor_fit" for r in s.results),
        "seconds": round(s.seconds, 3), "seconds_per_face": round(s.seconds / n, 3) if n else None,
        "device": s.device, "threads": s.threads, "finished_utc": _utc_now(),
        "failures": [{k: r.get(k) for k in ("image", "reason", "folder", "path")} for r in fails],
        "faces_detail": faces, "config": asdict(cfg), "settings_fingerprint": fingerprint or None,
        "settings": {fp: used[fp] for fp in sorted(used) if any(r.get("settings") == fp for r in faces)},
    }
    atomic_write_text(out / json_name, json.dumps(data, indent=2, default=str))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for r in faces + fails:
        w.writerow([_cell(r.get(c)) for c in SUMMARY_COLUMNS])
    atomic_write_text(out / csv_name, buf.getvalue())
    return faces + fails


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if math.isfinite(v) else "nan"
    return str(v)
