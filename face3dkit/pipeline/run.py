"""The main job: photos → landmarks → Deng alignment → batched fitting → per-face outputs.

Data flows one way (``face3dkit.io`` → ``face3dkit.landmarks`` → ``face3dkit.align`` →
``face3dkit.fit`` → :mod:`face3dkit.pipeline.outputs`). Faces from several images are fitted
together in batches. Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank takes every
``WORLD_SIZE``-th input (a same-person run, ``ReconstructConfig.same_person``, which aggregates the
identity over every face, is refused there).

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

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face3dkit.align import align_image
from face3dkit.align.template import template_5p_from_model
from face3dkit.fit import FitConfig, FitResult, QualityThresholds, assess_fit, fit, yaw_pitch_roll_degrees
from face3dkit.geometry import PerspectiveCamera
from face3dkit.io import ImageReadError, file_sha256, load_image, scan_images, tensors_sha256
from face3dkit.io.atomic import clean_temp_files
from face3dkit.landmarks import FaceLandmarks, LandmarkDetector, lm68_to_lm5, make_detector, select_faces
from face3dkit.model import Coefficients, MorphableModel, load_model
from face3dkit.pipeline.outputs import (
    IDENTITY_NAME,
    OUTPUT_KINDS,
    SUMMARY_COLUMNS,
    face_stem,
    output_folders,
    read_marker,
    summary_names,
    utc_now,
    write_face_outputs,
    write_identity,
    write_run_summary,
)
from face3dkit.render.face import render_face
from face3dkit.runtime import resolve_device, threads_scope

LOG = logging.getLogger("face3dkit.pipeline")

__all__ = ["RECONSTRUCT_METHODS", "RNET_STARTS", "ReconstructConfig", "FaceResult", "Failure", "RunSummary",
           "SUMMARY_COLUMNS", "face_settings", "reconstruct", "settings_fingerprint", "shard"]


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
        batch_size: faces fitted together (>= 1). On a CPU most of a fit step's cost is per batch
            (many small tensor operations), so 32 takes ~25 % less time a face than 8 for the
            same result (the faces of a batch do not interact).
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
        method: ``'fit'`` (analysis-by-synthesis from the POS pose, :func:`face3dkit.fit.fit`),
            ``'rnet'`` (the coefficients an R-Net regresses from the crop, no optimisation) or
            ``'rnet+fit'`` (the fit started from the R-Net's coefficients instead of POS; its
            photometric stage, as ``'fit'``'s, from the closed-form light and albedo of the landmark
            stage's geometry: ``FitConfig.appearance_init``).
        rnet: the R-Net checkpoint for ``'rnet'`` / ``'rnet+fit'`` (:meth:`face3dkit.nets.RNet.load`:
            one written by face3dkit, or a Deep3DFaceRecon_pytorch ``epoch_*.pth`` for the BFM).
        same_person: every face of the run is one person (Deng et al.'s image-set reconstruction):
            the R-Net regresses every face first, the identity and albedo coefficients are
            aggregated over all of them (the C-Net's per-coefficient confidences with ``cnet``,
            else the plain mean) and every face gets that identity and albedo with its own
            expression, pose, light and translation; ``out/identity.npz`` holds the aggregate
            (:func:`face3dkit.pipeline.outputs.write_identity`). Needs ``method`` ``'rnet'`` or
            ``'rnet+fit'``; with ``'rnet+fit'`` the fit starts from the aggregated coefficients and
            holds identity and albedo there (``fit(..., fixed=('id', 'tex'))``), fitting each face's
            expression, pose, light and translation. The aggregate needs all faces in one process: refused
            under torchrun with ``WORLD_SIZE`` > 1. With ``resume``, faces are skipped only when all of
            them are finished with the same settings (the set of inputs is one of them); when any
            face is (re)done, every face is.
        cnet: optional C-Net checkpoint (:meth:`face3dkit.nets.CNet.load`, ``face3dkit train-cnet``'s
            ``cnet.pt``) for ``same_person``; it must fit the R-Net (feature channels) and the model
            (identity / albedo sizes).
        rnet_start: what ``'rnet+fit'`` takes from the regression: ``'pose'`` (the default: rotation
            and translation; identity and expression start at the prior mean, light and albedo in
            closed form; with ``same_person`` the aggregated identity and albedo are kept) or
            ``'all'`` (every coefficient). On the benchmark the shipped R-Net's pose is better than
            POS's but its identity and expression are a worse start than the mean
            (docs/benchmarks.md).
        same_person_identity: with ``same_person`` and ``'rnet+fit'``: ``'joint'`` (the default)
            first fits one identity and albedo to the photos together, from the aggregate
            (``fit(..., shared=('id', 'tex'))``, each photo its own expression, pose, light; at most
            :data:`JOINT_FIT_MAX_FACES` photos, evenly spaced over the run's faces, those with the
            run's most common landmark count): those faces keep that fit, the others are fitted
            with its identity and albedo held; ``'aggregate'`` holds the R-Net's (C-Net-weighted)
            aggregate itself.
    """

    model: str = "default"
    device: str = "auto"
    landmarks: str = "dlib"
    landmarks_dir: str | None = None
    faces: str = "largest"
    batch_size: int = 32
    fit: FitConfig = field(default_factory=FitConfig)
    save: tuple[str, ...] = OUTPUT_KINDS
    recursive: bool = True
    resume: bool = True
    identity_net: str | None = None
    redo_changed: bool = True
    threads: int | None = None
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    texture_size: int = 512
    method: str = "fit"
    rnet: str | None = None
    same_person: bool = False
    cnet: str | None = None
    rnet_start: str = "pose"
    same_person_identity: str = "joint"


#: What ``rnet+fit`` takes from the regression (:attr:`ReconstructConfig.rnet_start`).
RNET_STARTS = ("pose", "all")
#: How a same-person ``rnet+fit`` run settles the shared identity (:attr:`ReconstructConfig.same_person_identity`).
SAME_PERSON_IDENTITIES = ("joint", "aggregate")
#: The most photos the joint identity fit of a same-person run takes (evenly spaced over the run's faces).
JOINT_FIT_MAX_FACES = 64


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
#: Result-deciding keys present only in some runs (an R-Net, same-person aggregation): fingerprinted
#: when present, so the fingerprints of fits alone stay what they were.
_OPTIONAL_RESULT_KEYS = ("method", "rnet_sha256", "rnet_start", "same_person", "same_person_inputs", "cnet_sha256",
                         "same_person_identity")


def _result_core(settings: dict[str, Any]) -> dict[str, Any]:
    core = {k: settings.get(k) for k in _RESULT_KEYS}
    core.update({k: settings[k] for k in _OPTIONAL_RESULT_KEYS if k in settings})
    return core


def face_settings(cfg: ReconstructConfig, model: MorphableModel,
                  detector_given: LandmarkDetector | None = None, inputs: Sequence[str] | None = None
                  ) -> dict[str, Any]:
    """The settings a face is made with, as recorded in its ``.done.json`` and in the summary.

    Result-deciding (fingerprinted, :func:`settings_fingerprint`): the model's content (SHA-256 of
    its buffers, so a renamed or moved file is the same model), the landmark source (and folder),
    the face selection, the whole :class:`FitConfig`, the identity network's content; with an
    R-Net the method and the R-Net's content; with ``same_person`` the flag, the C-Net's content and
    the set of the run's inputs (``same_person_inputs``: SHA-256 of their sorted absolute paths,
    which decide the aggregate). Recorded for reading only: the model name and the identity network,
    R-Net and C-Net paths. Device, threads, batch size, progress and output location are not
    settings of a face.

    Args:
        cfg: the run's configuration.
        model: the loaded model.
        detector_given: a detector passed to :func:`reconstruct` instead of ``cfg.landmarks``
            (recorded by its class).
        inputs: with ``same_person``, the keys (absolute paths) of all the run's inputs.
    """
    landmarks = cfg.landmarks if detector_given is None else \
        f"{type(detector_given).__module__}.{type(detector_given).__qualname__}"
    return {
        "model": cfg.model,
        "model_sha256": tensors_sha256(sorted(model.state_dict().items())),
        "landmarks": landmarks,
        "landmarks_dir": os.path.abspath(cfg.landmarks_dir) if cfg.landmarks_dir else None,
        "faces": cfg.faces,
        "identity_net": os.path.abspath(cfg.identity_net) if cfg.identity_net else None,
        "identity_net_sha256": file_sha256(cfg.identity_net) if cfg.identity_net else None,
        "fit": _fit_settings(cfg.fit),
        "texture_size": cfg.texture_size,
        # Only when an R-Net takes part, so results of the fit alone keep their fingerprint.
        **({"method": cfg.method, "rnet": os.path.abspath(cfg.rnet) if cfg.rnet else None,
            "rnet_sha256": file_sha256(cfg.rnet) if cfg.rnet else None} if cfg.method != "fit" else {}),
        **({"rnet_start": cfg.rnet_start} if cfg.method == "rnet+fit" else {}),
        **({"same_person_identity": cfg.same_person_identity} if cfg.method == "rnet+fit" and cfg.same_person
           else {}),
        **({"same_person": True, "same_person_inputs": hashlib.sha256(
                "\n".join(sorted(inputs or ())).encode()).hexdigest()[:16],
            "cnet": os.path.abspath(cfg.cnet) if cfg.cnet else None,
            "cnet_sha256": file_sha256(cfg.cnet) if cfg.cnet else None} if cfg.same_person else {}),
    }


#: FitConfig fields added after results were first fingerprinted, with the value that reproduces the
#: results made before them: left out of the settings at that value, so those results keep their fingerprint.
_FIT_FIELDS_ADDED = {"photo_faces": None, "photo_raster_every": 1, "landmark_prior_scale": 1.0,
                     "photo_shape_shrink": 1.0, "shared_prior_weight": 1.0}


def _fit_settings(fit_cfg: FitConfig) -> dict[str, Any]:
    d = json.loads(json.dumps(asdict(fit_cfg), default=str))
    return {k: v for k, v in d.items() if not (k in _FIT_FIELDS_ADDED and v == _FIT_FIELDS_ADDED[k])}


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the result-deciding settings (canonical JSON)."""
    core = _result_core(settings)
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
    a = _flat({**{k: None for k in _OPTIONAL_RESULT_KEYS if k in new}, **_result_core(old)})
    b = _flat({**{k: None for k in _OPTIONAL_RESULT_KEYS if k in old}, **_result_core(new)})
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
class Face:
    """One face on its way through the pipeline: found and aligned (:func:`_prepare`), then fitted
    and written in a batch (:func:`_fit_batch`), which turns it into a :class:`FaceResult`.

    Attributes:
        image: its input's name; face_index: which face of that image; folder, stem: where its
            outputs go (None: not written).
        crop: (S, S, 3) uint8 aligned crop; lm_crop (K, 2) / lm_image (K, 2): the detected
            landmarks in crop / image pixels; matrix, inverse: (2, 3) image → crop and back.
        input_number: position of its input in the run (progress counts finished inputs).
        old_files: outputs of the earlier result it replaces (removed if not rewritten).
        start: with ``same_person``, its (1, total) coefficients before the solve: the R-Net's
            regression with the run's aggregated identity and albedo.
        solved: with ``same_person_identity='joint'``, for a face of the joint fit: that fit's
            result and this face's row in it (its final coefficients: it is not fitted again).
    """

    image: str
    face_index: int
    folder: Path | None
    stem: str
    crop: np.ndarray
    lm_crop: np.ndarray
    lm_image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray
    input_number: int = -1
    old_files: list[str] = field(default_factory=list)
    start: torch.Tensor | None = None
    solved: tuple[FitResult, int] | None = None


@dataclass
class _Earlier:
    """A face finished by an earlier run, as its marker describes it."""

    image: str
    face_index: int
    folder: Path
    marker: dict[str, Any]
    note: str = ""


@dataclass
class _InputOutcome:
    """What preparing one input gave: faces to fit, faces finished earlier, or its failure."""

    faces: list[Face] = field(default_factory=list)
    earlier: list[_Earlier] = field(default_factory=list)
    redone: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    failure: Failure | None = None
    number: int = -1


def _prepare(image: np.ndarray, name: str, detector: LandmarkDetector, cfg: ReconstructConfig, folder: Path | None,
             path: Path | None, settings: dict[str, Any], fingerprint: str,
             template: torch.Tensor | None = None) -> _InputOutcome:
    faces: list[FaceLandmarks] = detector.detect(image, path=path)
    if not faces:
        raise LookupError("no face found")
    faces = select_faces(faces, cfg.faces, image.shape[:2])  # type: ignore[arg-type]
    prep = _InputOutcome()
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
        prep.faces.append(Face(name, k, folder, stem, np.asarray(al.image), np.asarray(al.landmarks),
                                     f.points.copy(), np.asarray(al.matrix, dtype=np.float64),
                                     np.asarray(al.inverse, dtype=np.float64), old_files=old_files))
    return prep


def _apply(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    return points @ m[:, :2].T + m[:, 2]


def _fit_batch(model: MorphableModel, batch: list[Face], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool, marker: dict[str, Any] | None = None, rnet: Any = None) -> list[FaceResult]:
    """Fit one batch; faces with 68 and with 5 landmarks are fitted in separate sub-batches.

    ``marker``: extra fields for every ``.done.json`` (settings and their fingerprint).
    """
    groups: dict[int, list[Face]] = {}
    for p in batch:
        groups.setdefault(len(p.lm_crop), []).append(p)
    out: list[FaceResult] = []
    for group in groups.values():
        out += _fit_group(model, group, cfg, perceptual, out_written, marker or {}, rnet)
    return out


def _solve(model: MorphableModel, imgs: torch.Tensor, lm: torch.Tensor, cfg: ReconstructConfig, perceptual: Any,
           rnet: Any, start: Coefficients | None = None) -> FitResult:
    """Coefficients of a batch of crops by ``cfg.method``: the fit, the R-Net's regression, or the
    fit started from the regression. ``start``: the regression already made (``same_person``: with
    the aggregated identity and albedo), used instead of running the R-Net."""
    if rnet is None and start is None:
        return fit(model, imgs, lm, cfg.fit, perceptual=perceptual)
    t0 = time.perf_counter()
    if start is not None:
        pred = start
    else:
        with torch.no_grad():
            pred = rnet.coefficients(imgs.permute(0, 3, 1, 2))
    t_regress = time.perf_counter() - t0
    if cfg.method == "rnet+fit":
        res = fit(model, imgs, lm, cfg.fit, perceptual=perceptual, init=_rnet_init(pred, cfg),
                  fixed=("id", "tex") if cfg.same_person else ())
        res.timings["regress"] = t_regress
        return res
    cam = PerspectiveCamera.for_image_size(imgs.shape[1])
    with torch.no_grad():
        r = render_face(model, pred, cam)
    lm_fit = r.landmarks2d
    err = ((lm68_to_lm5(lm_fit) if lm.shape[1] == 5 else lm_fit) - lm).norm(dim=-1).mean(-1)
    return FitResult(pred, lm_fit, r.image, r.front_mask, {"landmark": [], "photometric": []}, err,
                     {"regress": t_regress, "final_render": time.perf_counter() - t0 - t_regress}, r.display_mask)


def _crops(faces: list[Face], dev: torch.device) -> torch.Tensor:
    """(B, S, S, 3) float crops in [0, 1] of ``faces`` on ``dev``."""
    return torch.as_tensor(np.stack([f.crop for f in faces]), dtype=torch.float32, device=dev) / 255.0


def _crop_landmarks(faces: list[Face], dev: torch.device) -> torch.Tensor:
    """(B, K, 2) detected landmarks of ``faces`` in crop pixels, on ``dev``."""
    return torch.as_tensor(np.stack([f.lm_crop for f in faces]), dtype=torch.float32, device=dev)


def _result_rows(res: FitResult, rows: list[int]) -> FitResult:
    """The faces ``rows`` of a fit's result, as a result of their own."""
    idx = torch.as_tensor(rows, dtype=torch.long, device=res.landmarks2d.device)

    def pick(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.index_select(0, idx.to(t.device))

    return FitResult(res.coeffs[idx], pick(res.landmarks2d), pick(res.render), pick(res.mask), res.losses,
                     pick(res.landmark_error), res.timings, pick(res.display_mask))


def _fit_group(model: MorphableModel, batch: list[Face], cfg: ReconstructConfig, perceptual: Any,
               out_written: bool, marker: dict[str, Any], rnet: Any = None) -> list[FaceResult]:
    """Solve a batch of faces with one landmark count (the faces a joint identity fit solved already
    take their rows of it) and write their outputs, in batch order."""
    parts: list[tuple[list[Face], FitResult]] = []
    todo = [p for p in batch if p.solved is None]
    if todo:
        dev = model.mean_shape.device
        imgs, lm = _crops(todo, dev), _crop_landmarks(todo, dev)
        start = None
        if all(p.start is not None for p in todo):
            start = Coefficients.split(torch.cat([p.start for p in todo]).to(dev), model.layout)
        parts.append((todo, _solve(model, imgs, lm, cfg, perceptual, rnet, start)))
    by_fit: dict[int, tuple[FitResult, list[Face], list[int]]] = {}
    for p in batch:
        if p.solved is not None:
            entry = by_fit.setdefault(id(p.solved[0]), (p.solved[0], [], []))
            entry[1].append(p)
            entry[2].append(p.solved[1])
    parts += [(faces, _result_rows(res, rows)) for res, faces, rows in by_fit.values()]
    results: dict[int, FaceResult] = {}
    for faces, res in parts:
        for f, r in zip(faces, _write_faces(model, faces, res, cfg, out_written, marker), strict=True):
            results[id(f)] = r
    return [results[id(p)] for p in batch]


def _write_faces(model: MorphableModel, batch: list[Face], res: FitResult, cfg: ReconstructConfig,
                 out_written: bool, marker: dict[str, Any]) -> list[FaceResult]:
    """The :class:`FaceResult` of each face of ``batch`` from its row of ``res``, its files written."""
    ypr = yaw_pitch_roll_degrees(res.coeffs.angles).cpu().numpy()
    results = []
    with torch.no_grad():
        verts = model.shape(res.coeffs.id, res.coeffs.exp)
        albedo = model.albedo(res.coeffs.tex)
    for i, p in enumerate(batch):
        c1 = res.coeffs[i].to("cpu")
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
            finished = utc_now()
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

#: Values of :attr:`ReconstructConfig.method`.
RECONSTRUCT_METHODS = ("fit", "rnet", "rnet+fit")


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
    if cfg.method not in RECONSTRUCT_METHODS:
        problems.append(f"method must be one of {', '.join(RECONSTRUCT_METHODS)}, got {cfg.method!r}")
    elif cfg.method != "fit" and not cfg.rnet:
        problems.append(f"method {cfg.method!r} needs an R-Net checkpoint (rnet= / --rnet PATH)")
    if cfg.rnet_start not in RNET_STARTS:
        problems.append(f"rnet_start must be one of {', '.join(RNET_STARTS)}, got {cfg.rnet_start!r}")
    if cfg.same_person_identity not in SAME_PERSON_IDENTITIES:
        problems.append(f"same_person_identity must be one of {', '.join(SAME_PERSON_IDENTITIES)}, "
                        f"got {cfg.same_person_identity!r}")
    if cfg.same_person:
        if not cfg.rnet:
            problems.append("same_person needs an R-Net checkpoint (rnet= / --rnet PATH) to regress every face")
        elif cfg.method == "fit":
            problems.append("same_person needs method 'rnet' or 'rnet+fit' (the identity is aggregated over the "
                            "R-Net's regressions)")
        if int(os.environ.get("WORLD_SIZE", 1)) > 1:
            problems.append("same_person aggregates every face of the run in one process: run it without torchrun "
                            f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')})")
    elif cfg.cnet:
        problems.append("cnet (--cnet) is used only with same_person (--same-person)")
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
    if cfg.rnet is not None and cfg.rnet == "default" and not os.path.exists(cfg.rnet):
        from face3dkit.nets.rnet import default_rnet_path

        cfg = dataclasses.replace(cfg, rnet=str(default_rnet_path()))  # the shipped R-Net (assets/)
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
    rnet = cnet = None
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
        if cfg.method != "fit":
            rnet = _load_rnet(cfg, m)
        if cfg.same_person and cfg.cnet:
            cnet = _load_cnet(cfg, m, rnet)
        if cfg.identity_net:
            from face3dkit.losses import PerceptualLoss

            perceptual = PerceptualLoss.from_iresnet(cfg.identity_net).to(m.mean_shape.device)
        elif cfg.fit.photo_iters > 0:
            LOG.warning("perceptual loss off: no identity network given (pass an insightface backbone.pth "
                        "with --identity-net / ReconstructConfig.identity_net)")
        if out_dir is not None:
            settings = face_settings(cfg, m, detector, [it.key for it in items])
            fingerprint = settings_fingerprint(settings)
            marker = {"settings_fingerprint": fingerprint, "settings": settings}
    if out_dir is not None:
        _assign_folders(items, out_dir)  # over all inputs, before sharding: the same on every rank
    items = shard(items)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        clean_temp_files(out_dir, finals=(*summary_names(), IDENTITY_NAME))

    book = _Book(len(items), progress)
    outcomes: Iterable[_InputOutcome] = _outcomes(items, det, cfg, settings, fingerprint, template)
    if cfg.same_person and m is not None:  # two passes: every face regressed and aggregated, then solved
        outcomes = _same_person_outcomes(items, det, cfg, settings, fingerprint, template, out_dir)
        faces = [f for o in outcomes for f in o.faces]
        ident = _aggregate_identity(m, faces, cfg, rnet, cnet)
        if ident is not None and cfg.method == "rnet+fit" and cfg.same_person_identity == "joint":
            ident = _joint_identity(m, faces, cfg, perceptual, ident)
        if ident is not None and out_dir is not None:
            write_identity(out_dir, **ident)
    for batch in _batches(outcomes, cfg.batch_size, book):
        try:
            book.results.extend(_fit_batch(m, batch, cfg, perceptual, out_dir is not None, marker, rnet))
        except (RuntimeError, ValueError, OSError) as e:  # a batch failing must not lose the run
            book.failures += [Failure(f.image, f"fitting failed: {' '.join(str(e).split())}") for f in batch]
        book.fitted(batch)
    book.close()
    for change, n in sorted(book.changes.items()):
        LOG.info("redid %d face(s) made with other settings: %s", n, change)
    kept = [f"{e.image}#{e.face_index}" for e in book.earlier if e.note]
    if kept:
        LOG.warning("kept %d face(s) made with other settings (redo them with --redo-changed or --force)", len(kept))
    summary = RunSummary(book.results, book.skipped, book.failures, time.perf_counter() - t0, len(items),
                         redone=book.redone, kept=kept,
                         device=str(m.mean_shape.device if m is not None else resolve_device(cfg.device)),
                         threads=n_threads)
    if out_dir is not None:
        summary.rows = write_run_summary(out_dir, summary, asdict(cfg), [(it.name, it.key, it.folder) for it in items],
                                         book.earlier, settings, fingerprint)
    return summary


def _load_rnet(cfg: ReconstructConfig, model: MorphableModel) -> Any:
    """The run's R-Net on the model's device, checked against the model's coefficient layout."""
    from face3dkit.nets import RNet

    net = RNet.load(cfg.rnet)  # type: ignore[arg-type]
    if net.layout != model.layout:
        raise ValueError(f"{cfg.rnet}: an R-Net for {net.layout.total} coefficients ({net.layout}) does not fit "
                         f"model {cfg.model!r} ({model.layout.total} coefficients)")
    return net.to(model.mean_shape.device).eval()


def _load_cnet(cfg: ReconstructConfig, model: MorphableModel, rnet: Any) -> Any:
    """The run's C-Net on the model's device, checked against the R-Net's features and the model's layout."""
    from face3dkit.nets import CNet

    net = CNet.load(cfg.cnet)  # type: ignore[arg-type]
    lay = model.layout
    if (net.feature_channels, net.n_id, net.n_tex) != (rnet.feature_channels, lay.n_id, lay.n_tex):
        raise ValueError(f"{cfg.cnet}: a C-Net for {net.feature_channels} feature channels and {net.n_id} identity / "
                         f"{net.n_tex} albedo coefficients does not fit R-Net {cfg.rnet} ({rnet.feature_channels} "
                         f"feature channels) with model {cfg.model!r} ({lay.n_id} / {lay.n_tex})")
    return net.to(model.mean_shape.device).eval()


def _same_person_outcomes(items: list[_Input], det: LandmarkDetector | None, cfg: ReconstructConfig,
                          settings: dict[str, Any], fingerprint: str, template: torch.Tensor | None,
                          out_dir: Path | None) -> list[_InputOutcome]:
    """Every input prepared, as :func:`_outcomes`, and kept. The aggregate needs every face: when some
    face is to be (re)done while others were finished earlier (or ``identity.npz`` is gone), all are
    prepared again without resume (what the first pass found to replace is kept)."""
    first = list(_outcomes(items, det, cfg, settings, fingerprint, template))
    todo = any(o.faces for o in first)
    earlier = any(o.earlier for o in first)
    missing = out_dir is not None and not (out_dir / IDENTITY_NAME).is_file()
    if not earlier or not (todo or missing):
        return first
    again = list(_outcomes(items, det, dataclasses.replace(cfg, resume=False), settings, fingerprint, template))
    old = {(f.image, f.face_index): f.old_files for o in first for f in o.faces}
    for a, o in zip(again, first, strict=True):
        a.redone, a.changes = o.redone, o.changes
        for f in a.faces:
            f.old_files = f.old_files or old.get((f.image, f.face_index), [])
    return again


def _aggregate_identity(model: MorphableModel, faces: list[Face], cfg: ReconstructConfig, rnet: Any, cnet: Any
                        ) -> dict[str, Any] | None:
    """Regress every face (batches of ``cfg.batch_size``), aggregate identity and albedo over all of
    them (the C-Net's confidences, or all 1: the plain mean) and set each face's ``start``: its own
    regression with the aggregated identity and albedo. Returns :func:`write_identity`'s arguments
    (None without faces)."""
    from face3dkit.nets import aggregate

    if not faces:
        return None
    dev = model.mean_shape.device
    lay = model.layout
    preds, conf_id, conf_tex = [], [], []
    with torch.no_grad():
        for i in range(0, len(faces), cfg.batch_size):
            chunk = faces[i:i + cfg.batch_size]
            imgs = _crops(chunk, dev)
            pred, feats = rnet.forward_with_features(imgs.permute(0, 3, 1, 2))
            if cnet is not None:
                ci, ct = cnet(feats)
            else:
                ci, ct = torch.ones(len(chunk), lay.n_id, device=dev), torch.ones(len(chunk), lay.n_tex, device=dev)
            preds.append(pred)
            conf_id.append(ci)
            conf_tex.append(ct)
        c = Coefficients.split(torch.cat(preds), lay)
        ci, ct = torch.cat(conf_id), torch.cat(conf_tex)
        a_id = aggregate(c.id[None], ci[None])[0]
        a_tex = aggregate(c.tex[None], ct[None])[0]
        c.id = a_id.expand(len(faces), -1).clone()
        c.tex = a_tex.expand(len(faces), -1).clone()
        flat = c.join()
    for k, f in enumerate(faces):
        f.start = flat[k:k + 1]
    return {"id": a_id.cpu().numpy(), "tex": a_tex.cpu().numpy(), "conf_id": ci.cpu().numpy(),
            "conf_tex": ct.cpu().numpy(), "images": [f.image for f in faces],
            "face_index": [f.face_index for f in faces], "rnet": os.path.abspath(cfg.rnet or ""),
            "cnet": os.path.abspath(cfg.cnet) if cfg.cnet else ""}


def _rnet_init(pred: Coefficients, cfg: ReconstructConfig) -> Coefficients:
    """What ``rnet+fit`` starts from, given the regression (a same-person run's: with the aggregated
    identity and albedo): all of it, or (``rnet_start='pose'``) its pose with the prior mean's
    expression and, unless it is a same-person aggregate, identity."""
    if cfg.rnet_start != "pose":
        return pred
    init = pred.clone()
    init.exp = torch.zeros_like(init.exp)
    if not cfg.same_person:
        init.id = torch.zeros_like(init.id)
    return init


def _joint_identity(model: MorphableModel, faces: list[Face], cfg: ReconstructConfig, perceptual: Any,
                    ident: dict[str, Any]) -> dict[str, Any]:
    """One identity and albedo fitted to (up to :data:`JOINT_FIT_MAX_FACES` of) the run's faces at once
    (:func:`face3dkit.fit.fit` with ``shared=('id', 'tex')``, from their aggregated starts); every
    face's ``start`` takes it, and the faces of the fit keep their rows of it (``solved``). Returns
    ``ident`` with ``id`` / ``tex`` the joint fit's, the aggregate kept as ``id_aggregate`` /
    ``tex_aggregate`` and ``joint`` (N,) which faces the fit saw; ``ident`` itself (a warning logged)
    when the fit fails at run time (out of memory), so the faces hold the aggregate."""
    counts: dict[int, int] = {}
    for f in faces:
        counts[len(f.lm_crop)] = counts.get(len(f.lm_crop), 0) + 1
    n_points = max(counts, key=lambda k: (counts[k], k))  # the most common landmark count (68 on a tie)
    pool = [k for k, f in enumerate(faces) if len(f.lm_crop) == n_points]
    if len(pool) > JOINT_FIT_MAX_FACES:
        pool = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, JOINT_FIT_MAX_FACES).round()]
    dev = model.mean_shape.device
    chosen = [faces[k] for k in pool]
    imgs, lm = _crops(chosen, dev), _crop_landmarks(chosen, dev)
    start = Coefficients.split(torch.cat([f.start for f in chosen]).to(dev), model.layout)
    joint_cfg = dataclasses.replace(cfg.fit, landmark_refine_iters=0)  # a refined subset cannot move a shared row
    try:
        res = fit(model, imgs, lm, joint_cfg, perceptual=perceptual, init=_rnet_init(start, cfg), shared=("id", "tex"))
    except RuntimeError as e:  # e.g. out of memory for 64 photos on a small GPU: the faces still get the aggregate
        LOG.warning("the joint identity fit of %d faces failed (%s): every face holds the aggregate instead",
                    len(chosen), " ".join(str(e).split())[:200])
        return ident
    j_id, j_tex = res.coeffs.id[:1].detach(), res.coeffs.tex[:1].detach()
    lay = model.layout.slices()
    for f in faces:
        f.start = f.start.clone()
        f.start[:, lay["id"]] = j_id.to(f.start)
        f.start[:, lay["tex"]] = j_tex.to(f.start)
    for row, f in enumerate(chosen):  # fitted already, with the identity every face gets
        f.solved = (res, row)
    joint = np.zeros(len(faces), bool)
    joint[pool] = True
    return {**ident, "id": j_id[0].cpu().numpy(), "tex": j_tex[0].cpu().numpy(), "id_aggregate": ident["id"],
            "tex_aggregate": ident["tex"], "joint": joint}


def _outcomes(items: list[_Input], det: LandmarkDetector | None, cfg: ReconstructConfig, settings: dict[str, Any],
              fingerprint: str, template: torch.Tensor | None) -> Iterator[_InputOutcome]:
    """Each input read, its faces found and aligned (or its failure), in input order."""
    for number, item in enumerate(items):
        if item.error:
            yield _InputOutcome(failure=Failure(item.name, item.error), number=number)
            continue
        try:
            if item.folder is not None:
                clean_temp_files(item.folder)
            if isinstance(item.src, np.ndarray):
                img, path = item.src, None
            else:
                img, path = load_image(item.src), item.src
            outcome = _prepare(img, item.name, det, cfg, item.folder, path, settings, fingerprint, template)
        except (ImageReadError, LookupError, ValueError, OSError) as e:
            outcome = _InputOutcome(failure=Failure(item.name, " ".join(str(e).split()) or type(e).__name__))
        outcome.number = number
        for f in outcome.faces:
            f.input_number = number
        yield outcome


def _batches(outcomes: Iterable[_InputOutcome], size: int, book: _Book) -> Iterator[list[Face]]:
    """Faces of consecutive inputs in batches of ``size`` (the last one shorter); ``book`` records
    each input's failures and earlier results as it is prepared."""
    pending: list[Face] = []
    for outcome in outcomes:
        book.prepared(outcome)
        pending += outcome.faces
        while len(pending) >= size:
            yield pending[:size]
            pending = pending[size:]
    if pending:
        yield pending


class _Book:
    """What a run has done so far (results, failures, faces done earlier, redone), and its progress:
    an input counts as done when it failed, had nothing to fit, or its last face was fitted."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | bool) -> None:
        self.total, self.progress, self.done = total, progress, 0
        self.results: list[FaceResult] = []
        self.failures: list[Failure] = []
        self.skipped: list[str] = []
        self.earlier: list[_Earlier] = []
        self.redone: list[str] = []
        self.changes: dict[str, int] = {}
        self.waiting: dict[int, int] = {}  # input number -> its faces still to fit
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="img", desc="reconstruct", dynamic_ncols=True)

    def prepared(self, o: _InputOutcome) -> None:
        if o.failure is not None:
            self.failures.append(o.failure)
        self.earlier += o.earlier
        self.skipped += [f"{e.image}#{e.face_index}" for e in o.earlier if not e.note]
        self.redone += o.redone
        for c in o.changes:
            self.changes[c] = self.changes.get(c, 0) + 1
        if o.faces:
            self.waiting[o.number] = len(o.faces)
        else:  # failed, or every face already done: finished now
            self._advance(1)

    def fitted(self, batch: list[Face]) -> None:
        finished = 0
        for f in batch:
            self.waiting[f.input_number] -= 1
            if self.waiting[f.input_number] == 0:
                del self.waiting[f.input_number]
                finished += 1
        self._advance(finished)

    def _advance(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(faces=len(self.results), failed=len(self.failures))
        elif callable(self.progress):
            self.progress(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
