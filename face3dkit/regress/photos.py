"""Real face photos as R-Net training data: a folder of photos, detected, aligned like
``reconstruct`` aligns them, cached, and drawn in deterministic batches.

Deng et al. 2019 train the R-Net on real photos aligned with their 5-point alignment and 68
detected landmarks. :func:`prepare_photo_folder` does that for a folder:

- every image of the folder (:func:`face3dkit.io.scan_images`, :func:`face3dkit.io.load_image`)
  goes through the same steps as in :func:`face3dkit.reconstruct`: the landmark backend
  (:func:`face3dkit.landmarks.make_detector`, or a :class:`~face3dkit.landmarks.LandmarkDetector`
  object), :func:`face3dkit.landmarks.select_faces`, and :func:`face3dkit.align.align_image` with
  the model's own 5-point template (:func:`face3dkit.align.template.template_5p_from_model`), so a
  training crop is the crop ``reconstruct`` feeds the R-Net. For ``size`` other than 224 the crop
  holds ``102 * size / 224`` pixels per model unit, matching
  :meth:`face3dkit.geometry.PerspectiveCamera.for_image_size` (the trainer's camera).
- crops (uint8) and landmarks (float32, crop pixels) are cached under ``cache_dir`` in ``.npz``
  shards with a ``manifest.json``, all written atomically (:mod:`face3dkit.io.atomic`). An image
  is keyed by its relative path, ``st_mtime_ns`` and size in bytes (and, for landmark files, the
  landmark file's path, mtime and size); the settings (crop size, landmark source, face selection,
  template) name the cache's sub-folder. A second call with nothing changed detects nothing; a
  changed file is redone, a removed one drops out (its rows are dropped, shards no longer used are
  deleted). A killed call keeps the shards it finished.
- images that give no usable face (unreadable, no face, only 5 landmarks, no landmark file) are
  skipped and returned with their reason (:attr:`PhotoFaces.skipped`), never dropped silently;
  their outcome is cached too (a changed file, or for ``'file'`` a new landmark file, is retried).

:func:`photo_batch` draws batches as a pure function of ``(seed, step, rank)``: epoch-wise
permutations of the faces (the global position of a sample picks the epoch; data-parallel ranks
take disjoint slices of it) and random horizontal flips with the iBUG 68-point mirror
(:data:`LM68_MIRROR`, :func:`flip_faces`). :func:`mixed_batch` joins photos and synthetic renders.

Pixel coordinates follow docs/conventions.md (pixel centres at +0.5): mirroring an ``S``-wide crop
maps ``x`` to ``S - x``.

One process should prepare a cache at a time (under torchrun: rank 0 first, then a barrier, then
the other ranks, which find every image cached).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from face3dkit.align import align_image
from face3dkit.align.deng import DENG_RESCALE_FACTOR, DENG_TARGET_SIZE
from face3dkit.align.template import template_5p_from_model
from face3dkit.io import ImageReadError, load_image, scan_images
from face3dkit.io.atomic import atomic_path, atomic_write_text, clean_temp_files
from face3dkit.landmarks import (
    SELECT_CHOICES,
    DetectorUnavailableError,
    FaceLandmarks,
    FileLandmarks,
    LandmarkDetector,
    make_detector,
    select_faces,
)

LOG = logging.getLogger("face3dkit.regress.photos")

__all__ = ["LM68_MIRROR", "PhotoFaces", "PhotoFolderError", "flip_faces", "mirror_landmarks", "mixed_batch",
           "photo_batch", "prepare_photo_folder"]

#: Cache layout version (part of the settings: a new layout never reads an old cache).
CACHE_VERSION = 1


def _lm68_mirror() -> tuple[int, ...]:
    """iBUG 68-point index of each point's mirror image (0-based)."""
    p = list(range(68))

    def swap(a: Sequence[int], b: Sequence[int]) -> None:
        for i, j in zip(a, b, strict=True):
            p[i], p[j] = j, i

    swap(range(0, 8), range(16, 8, -1))  # jaw 0..16 reversed (8, the chin, stays)
    swap(range(17, 22), range(26, 21, -1))  # brows 17..21 <-> 26..22
    # nose bridge 27..30 on the midline; nose bottom 31..35 reversed (33 stays)
    swap((31, 32), (35, 34))
    # eyes: corners 36 <-> 45, 39 <-> 42; upper lids 37 <-> 44, 38 <-> 43; lower lids 41 <-> 46, 40 <-> 47
    swap((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))
    swap((48, 49, 50), (54, 53, 52))  # outer upper lip 48..54 reversed (51 stays)
    swap((55, 56), (59, 58))  # outer lower lip 55..59 reversed (57 stays)
    swap((60, 61), (64, 63))  # inner upper lip 60..64 reversed (62 stays)
    swap((65,), (67,))  # inner lower lip 65..67 reversed (66 stays)
    return tuple(p)


#: ``LM68_MIRROR[i]``: the iBUG 68-point index that point ``i`` becomes in the mirrored image (an
#: involution: jaw, brows, nose bottom and the lips reversed, the eyes swapped corner for corner
#: and lid for lid, the nose bridge and the midline points kept).
LM68_MIRROR: tuple[int, ...] = _lm68_mirror()


class PhotoFolderError(ValueError):
    """A photo folder gives no training data (missing, empty, no usable face); one line naming it."""


def mirror_landmarks(landmarks: Tensor, width: float) -> Tensor:
    """Landmarks of the horizontally flipped image.

    Args:
        landmarks: (..., 68, 2) pixel coordinates (pixel centres at +0.5, docs/conventions.md).
        width: image width W in pixels.

    Returns:
        (..., 68, 2): ``x -> W - x`` and the points renumbered by :data:`LM68_MIRROR`, so point
        ``i`` is again the iBUG point ``i`` of the flipped face.
    """
    if landmarks.shape[-2:] != (68, 2):
        raise ValueError(f"mirror_landmarks needs (..., 68, 2) landmarks, got {tuple(landmarks.shape)}")
    idx = torch.as_tensor(LM68_MIRROR, device=landmarks.device)
    out = landmarks.index_select(-2, idx).clone()
    out[..., 0] = width - out[..., 0]
    return out


def flip_faces(images: Tensor, landmarks: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontally flip (B, H, W, C) images and their (B, 68, 2) pixel landmarks."""
    return images.flip(-2), mirror_landmarks(landmarks, images.shape[-2])


# --------------------------------------------------------------------------------------------- data

@dataclass
class PhotoFaces:
    """Aligned faces of a photo folder (:func:`prepare_photo_folder`).

    Attributes:
        images: (N, S, S, 3) uint8 aligned crops (CPU).
        landmarks: (N, 68, 2) float32 landmarks in crop pixels (pixel centres at +0.5).
        paths: N source image paths (one per face; an image with several faces repeats).
        face_index: N indices of the face within its image (0 unless ``faces='all'``).
        skipped: ``(path, reason)`` of every image that gave no face.
        cached: images whose result came from the cache in this call.
        processed: images read and detected in this call.
        cache_dir: the cache's settings folder.
    """

    images: Tensor
    landmarks: Tensor
    paths: list[str]
    face_index: list[int] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cached: int = 0
    processed: int = 0
    cache_dir: Path | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Crop side S in pixels."""
        return int(self.images.shape[1])


# --------------------------------------------------------------------------------------------- cache

def _sha256_tensor(t: Tensor) -> str:
    a = t.detach().cpu().to(torch.float64).contiguous().numpy()
    return hashlib.sha256(a.tobytes()).hexdigest()


def _detector_name(detector: str | LandmarkDetector) -> str:
    if isinstance(detector, str):
        return detector
    return f"{type(detector).__module__}.{type(detector).__qualname__}"


def _file_stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return int(st.st_mtime_ns), int(st.st_size)


def _landmark_stamp(det: LandmarkDetector | None, image: Path) -> list[Any] | None:
    """(path, mtime_ns, bytes) of the landmark file a :class:`FileLandmarks` reads for ``image``."""
    if not isinstance(det, FileLandmarks):
        return None
    f = det.find(image)
    if f is None:
        return ["", 0, 0]
    try:
        return [str(f), *_file_stamp(f)]
    except OSError:
        return ["", 0, 0]


_SHARD_RE = re.compile(r"^shard-(\d+)\.npz$")


def _read_manifest(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    empty: dict[str, Any] = {"version": CACHE_VERSION, "settings": settings, "entries": {}, "next_shard": 0}
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as e:
        LOG.warning("%s: unreadable photo cache manifest (%s); rebuilding the cache", path, e)
        return empty
    if not isinstance(m, dict) or m.get("settings") != settings or not isinstance(m.get("entries"), dict):
        LOG.warning("%s: photo cache manifest of other settings or layout; rebuilding the cache", path)
        return empty
    m.setdefault("next_shard", 0)
    return m


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))


def _write_shard(path: Path, crops: list[np.ndarray], landmarks: list[np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, crops=np.stack(crops).astype(np.uint8), landmarks=np.stack(landmarks).astype(np.float32))


# --------------------------------------------------------------------------------------------- prepare

def _faces_of(image: np.ndarray, path: Path, det: LandmarkDetector, faces: str, template: Tensor, size: int
              ) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], str]:
    """Aligned (crop, landmarks, face index) of one image as the pipeline's ``_prepare`` makes
    them, or no faces and the reason."""
    found: list[FaceLandmarks] = det.detect(image, path=path)
    if not found:
        return [], "no face found"
    chosen = select_faces(found, faces, image.shape[:2])  # type: ignore[arg-type]
    out = []
    for k, f in enumerate(chosen):
        if f.points.shape[0] != 68:
            continue
        al = align_image(image, f, template, target_size=size,
                         rescale_factor=DENG_RESCALE_FACTOR * size / DENG_TARGET_SIZE)
        out.append((np.asarray(al.image, dtype=np.uint8), np.asarray(al.landmarks, dtype=np.float32), k))
    if not out:
        return [], f"only {chosen[0].points.shape[0]} landmarks per face (68 needed)"
    return out, ""


def prepare_photo_folder(
    folder: str | os.PathLike,
    cache_dir: str | os.PathLike,
    size: int = 224,
    detector: str | LandmarkDetector = "dlib",
    faces: str = "largest",
    recursive: bool = True,
    progress: Callable[[int, int], None] | None = None,
    *,
    model: Any = "default",
    landmarks_dir: str | os.PathLike | None = None,
    shard_faces: int = 256,
) -> PhotoFaces:
    """Detect, align and cache every face of a photo folder (see the module docstring).

    Args:
        folder: folder of photos (any format :func:`face3dkit.io.load_image` reads).
        cache_dir: cache folder; one sub-folder per settings (``photos-<16 hex>``). Use one cache
            folder per photo folder (entries are keyed by paths relative to ``folder``).
        size: crop side S in pixels (Deng et al.: 224).
        detector: a landmark backend name (``'dlib'``, ``'dlib-cnn'``, ``'mtcnn'``, ``'file'``:
            landmark files next to the images / in ``detections/`` / in ``landmarks_dir``) or a
            :class:`~face3dkit.landmarks.LandmarkDetector` object (cached under its class name:
            use another ``cache_dir`` when its own settings change). Made only when an image needs it.
        faces: ``'largest'``, ``'center'`` or ``'all'`` faces per image.
        recursive: descend into sub-folders.
        progress: callback ``(done, total)`` over the images (cached ones count as done at once).
        model: the morphable model (name, path or :class:`~face3dkit.MorphableModel`) whose 5-point
            template aligns the faces (``reconstruct``'s ``model``).
        landmarks_dir: folder of landmark files for ``detector='file'``.
        shard_faces: faces per cache shard (each shard is written as soon as it is full).

    Returns:
        :class:`PhotoFaces` in path order (independent of the cache's history).

    Raises:
        PhotoFolderError: the folder is missing, holds no images, or no image gave a usable face.
        DetectorUnavailableError: the landmark backend is not installed.
        ValueError: a bad ``size``, ``faces`` or ``shard_faces``.
    """
    folder_p = Path(folder)
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if faces not in SELECT_CHOICES:
        raise ValueError(f"faces must be one of {', '.join(SELECT_CHOICES)}, got {faces!r}")
    if shard_faces < 1:
        raise ValueError(f"shard_faces must be >= 1, got {shard_faces!r}")
    if not folder_p.is_dir():
        raise PhotoFolderError(f"{folder_p}: no such folder" if not folder_p.exists() else f"{folder_p}: not a folder")
    try:
        scan = scan_images(folder_p, recursive=recursive)
    except ImageReadError as e:
        raise PhotoFolderError(str(e)) from None
    skipped: list[tuple[str, str]] = list(scan.problems)
    if not scan.images:
        raise PhotoFolderError(f"{folder_p}: no images" + (f" ({len(skipped)} unusable entries)" if skipped else ""))

    from face3dkit.model import MorphableModel, load_model

    m = model if isinstance(model, MorphableModel) else load_model(str(model), device="cpu")
    template = template_5p_from_model(m).detach().cpu().double()
    det: LandmarkDetector | None = None if isinstance(detector, str) else detector
    if detector == "file":
        det = make_detector("file", **({"landmarks_dir": landmarks_dir, "image_root": folder_p}
                                       if landmarks_dir is not None else {}))
    settings = {
        "version": CACHE_VERSION,
        "size": size,
        "rescale_factor": DENG_RESCALE_FACTOR * size / DENG_TARGET_SIZE,
        "detector": _detector_name(detector),
        "landmarks_dir": os.path.abspath(landmarks_dir) if landmarks_dir is not None else None,
        "faces": faces,
        "model": str(model) if not isinstance(model, MorphableModel) else "<MorphableModel>",
        "template_sha256": _sha256_tensor(template),
    }
    fp = hashlib.sha256(json.dumps({k: v for k, v in settings.items() if k != "model"}, sort_keys=True)
                        .encode()).hexdigest()[:16]
    cdir = Path(cache_dir) / f"photos-{fp}"
    cdir.mkdir(parents=True, exist_ok=True)
    clean_temp_files(cdir)
    manifest_path = cdir / "manifest.json"
    manifest = _read_manifest(manifest_path, settings)
    entries: dict[str, dict[str, Any]] = manifest["entries"]
    shards_present = {p.name for p in cdir.iterdir() if _SHARD_RE.match(p.name)}

    # What each image is now; which cached entries still hold.
    current: dict[str, tuple[Path, dict[str, Any]]] = {}
    for p in scan.images:
        rel = p.relative_to(folder_p).as_posix()
        try:
            mtime, nbytes = _file_stamp(p)
        except OSError as e:
            skipped.append((str(p), f"cannot stat ({e.strerror or type(e).__name__})"))
            continue
        current[rel] = (p, {"mtime_ns": mtime, "bytes": nbytes, "landmark_file": _landmark_stamp(det, p)})
    todo = []
    for rel, (_p, key) in current.items():
        e = entries.get(rel)
        if (e is not None and all(e.get(k) == v for k, v in key.items())
                and (e.get("shard") is None or e["shard"] in shards_present)):
            continue
        todo.append(rel)
    redo = set(todo)
    for rel in [r for r in entries if r not in current or r in redo]:
        del entries[rel]  # removed or changed: its rows are no longer used
    total = len(current)
    cached = total - len(todo)
    if progress is not None and cached:
        progress(cached, total)

    crops: list[np.ndarray] = []
    lms: list[np.ndarray] = []
    waiting: list[tuple[str, dict[str, Any]]] = []  # entries whose faces are in ``crops``

    def flush() -> None:
        if crops:
            name = f"shard-{int(manifest['next_shard']):06d}.npz"
            manifest["next_shard"] = int(manifest["next_shard"]) + 1
            _write_shard(cdir / name, crops, lms)
            shards_present.add(name)
            for rel, e in waiting:
                e["shard"] = name
                entries[rel] = e
            crops.clear()
            lms.clear()
            waiting.clear()
        _write_manifest(manifest_path, manifest)

    if todo and det is None:
        det = _made(str(detector))  # only now: a call that finds everything cached needs no backend
    done = cached
    for rel in todo:
        p, key = current[rel]
        entry: dict[str, Any] = dict(key)
        try:
            img = load_image(p)
            got, reason = _faces_of(img, p, det, faces, template, size)  # type: ignore[arg-type]
        except DetectorUnavailableError:
            raise
        except (ImageReadError, LookupError, ValueError, OSError) as e:  # as reconstruct: this input fails alone
            got, reason = [], " ".join(str(e).split()) or type(e).__name__
        if got:
            entry.update(shard=None, row=len(crops), face_index=[k for _, _, k in got], skip=None)
            for crop, lm, _ in got:
                crops.append(crop)
                lms.append(lm)
            waiting.append((rel, entry))
        else:
            entry.update(shard=None, row=0, face_index=[], skip=reason)
            entries[rel] = entry
        done += 1
        if progress is not None:
            progress(done, total)
        if len(crops) >= shard_faces:
            flush()
    flush()
    _remove_unused_shards(cdir, entries)
    return _load(folder_p, cdir, entries, skipped, cached, len(todo))


_MADE: dict[str, LandmarkDetector] = {}


def _made(name: str) -> LandmarkDetector:
    """The named backend, made once per process (dlib's predictor takes a while to load)."""
    if name not in _MADE:
        _MADE[name] = make_detector(name)
    return _MADE[name]


def _remove_unused_shards(cdir: Path, entries: dict[str, dict[str, Any]]) -> None:
    used = {e.get("shard") for e in entries.values()}
    for p in cdir.iterdir():
        if _SHARD_RE.match(p.name) and p.name not in used:
            p.unlink(missing_ok=True)


def _load(folder: Path, cdir: Path, entries: dict[str, dict[str, Any]], skipped: list[tuple[str, str]],
          cached: int, processed: int) -> PhotoFaces:
    rels = sorted(entries)
    skipped = skipped + [(str(folder / r), entries[r]["skip"]) for r in rels if entries[r].get("skip")]
    good = [r for r in rels if not entries[r].get("skip") and entries[r].get("shard")]
    n = sum(len(entries[r]["face_index"]) for r in good)
    if n == 0:
        reasons = sorted({r for _, r in skipped})
        raise PhotoFolderError(f"{folder}: no usable face in {len(rels)} image(s)"
                               + (f" ({'; '.join(reasons[:3])}{'; ...' if len(reasons) > 3 else ''})"
                                  if reasons else ""))
    by_shard: dict[str, list[str]] = {}
    for r in good:
        by_shard.setdefault(entries[r]["shard"], []).append(r)
    order: dict[str, int] = {}
    pos = 0
    for r in good:
        order[r] = pos
        pos += len(entries[r]["face_index"])
    images: np.ndarray | None = None
    landmarks = np.zeros((n, 68, 2), np.float32)
    for shard, items in by_shard.items():
        with np.load(cdir / shard) as z:
            sc, sl = z["crops"], z["landmarks"]
        if images is None:
            images = np.zeros((n, *sc.shape[1:]), np.uint8)
        for r in items:
            e = entries[r]
            k = len(e["face_index"])
            o, row = order[r], int(e["row"])
            images[o:o + k] = sc[row:row + k]
            landmarks[o:o + k] = sl[row:row + k]
    paths = [str(folder / r) for r in good for _ in entries[r]["face_index"]]
    face_index = [int(k) for r in good for k in entries[r]["face_index"]]
    return PhotoFaces(torch.from_numpy(images), torch.from_numpy(landmarks), paths, face_index, skipped,
                      cached, processed, cdir)


# --------------------------------------------------------------------------------------------- batches

_PERM_SALT = 0x5F3759DF
_FLIP_SALT = 0x2545F491


def _epoch_permutation(seed: int, epoch: int, n: int) -> Tensor:
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 9_176_413 + _PERM_SALT) % (2 ** 63))
    return torch.randperm(n, generator=g)


def photo_batch(data: PhotoFaces, batch_size: int, seed: int, step: int, rank: int = 0, world: int = 1,
                flip: bool = True) -> dict[str, Tensor]:
    """Batch ``step`` of a run seeded ``seed`` on data-parallel rank ``rank`` of ``world``.

    A pure function of ``(seed, step, rank)`` (for fixed ``data``, ``batch_size``, ``world``,
    ``flip``); no global random state is touched. Sample ``i`` of the batch has the global
    position ``g = (step * world + rank) * batch_size + i`` and is face ``perm_e[g mod N]`` of
    epoch ``e = g // N``'s permutation of the N faces: every face once per epoch, the ranks'
    slices disjoint. Each sample is flipped horizontally with probability 1/2 (:func:`flip_faces`).

    Returns:
        ``image`` (B, S, S, 3) float32 in [0, 1], ``landmarks`` (B, 68, 2) float32 crop pixels,
        ``index`` (B,) int64 faces of ``data`` used, ``flipped`` (B,) bool; all on the CPU.
    """
    n = len(data)
    if n == 0:
        raise ValueError("photo_batch: no faces")
    if batch_size < 1 or world < 1 or not 0 <= rank < world or step < 0:
        raise ValueError(f"photo_batch: need batch_size >= 1, step >= 0, 0 <= rank < world, got "
                         f"batch_size={batch_size}, step={step}, rank={rank}, world={world}")
    pos = (int(step) * world + rank) * batch_size + torch.arange(batch_size)
    epochs = pos // n
    index = torch.empty(batch_size, dtype=torch.int64)
    for e in torch.unique(epochs).tolist():
        sel = epochs == e
        index[sel] = _epoch_permutation(seed, e, n)[pos[sel] % n]
    images = data.images[index].to(torch.float32) / 255.0
    landmarks = data.landmarks[index].to(torch.float32)
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) + int(rank) * 7_919_000_011 + _FLIP_SALT)
                                      % (2 ** 63))
    flipped = (torch.rand(batch_size, generator=g) < 0.5) if flip else torch.zeros(batch_size, dtype=torch.bool)
    if bool(flipped.any()):
        fi, fl = flip_faces(images[flipped], landmarks[flipped])
        images[flipped], landmarks[flipped] = fi, fl
    return {"image": images, "landmarks": landmarks, "index": index, "flipped": flipped}


def mixed_batch(photos: PhotoFaces, synth_fn: Callable[[int, int, int, int], dict[str, Tensor]], batch_size: int,
                photo_fraction: float, seed: int, step: int, rank: int = 0, world: int = 1,
                flip: bool = True) -> dict[str, Tensor]:
    """A batch of ``round(batch_size * photo_fraction)`` photos (:func:`photo_batch`, counting its
    own positions) followed by synthetic renders from ``synth_fn(n, seed, step, rank)`` (e.g.
    ``lambda n, s, k, r: synthetic_batch(model, cfg, n, s, k, r)``).

    Returns:
        ``image`` (B, S, S, 3), ``landmarks`` (B, 68, 2) on the CPU, ``is_photo`` (B,) bool and, when
        there are renders, ``coeffs`` (B_synthetic, total): the true coefficients of the *last*
        ``B_synthetic`` samples (photos have none).
    """
    if not 0.0 <= photo_fraction <= 1.0:
        raise ValueError(f"photo_fraction must be in [0, 1], got {photo_fraction!r}")
    n_photo = int(round(batch_size * photo_fraction))
    parts_img, parts_lm = [], []
    out: dict[str, Tensor] = {}
    if n_photo:
        pb = photo_batch(photos, n_photo, seed, step, rank, world, flip)
        parts_img.append(pb["image"])
        parts_lm.append(pb["landmarks"])
    if batch_size - n_photo:
        sb = synth_fn(batch_size - n_photo, seed, step, rank)
        parts_img.append(sb["image"].detach().cpu().to(torch.float32))
        parts_lm.append(sb["landmarks"].detach().cpu().to(torch.float32))
        if "coeffs" in sb:
            out["coeffs"] = sb["coeffs"].detach().cpu()
    if len({t.shape[1:] for t in parts_img}) > 1:
        raise ValueError(f"mixed_batch: photo crops {tuple(parts_img[0].shape[1:])} and renders "
                         f"{tuple(parts_img[-1].shape[1:])} differ in size")
    out["image"] = torch.cat(parts_img)
    out["landmarks"] = torch.cat(parts_lm)
    out["is_photo"] = torch.arange(batch_size) < n_photo
    return out
