"""Per-face outputs of ``face3dkit reconstruct``, named as in Deng et al.'s tools.

For an image ``photo.jpg`` (one folder per image, ``<out>/photo/``) and face ``k``
(``photo`` for the first face, ``photo_1``, ``photo_2`` ... for further faces):

=========================  =====================================================================
file                       content
=========================  =====================================================================
``<stem>.obj``             mesh in model space (+ ``.mtl`` and ``<stem>_texture.png`` with the
                           fitted albedo baked through the model's UVs; vertex colours otherwise)
``<stem>.mat``             Deng et al.'s keys ``id, exp, tex, angle, gamma, trans`` (1 x k
                           float32 each) plus ``lm68`` (68 x 2, original-image pixels)
``<stem>.npz``             the same plus ``coeffs`` (flat vector), ``layout``, ``crop_matrix``
``<stem>_lm68.txt``        68 lines ``x y`` in original-image pixels (x right, y down, pixel
                           centres at +0.5)
``<stem>_pose.json``       yaw, pitch, roll in degrees; translation; alignment scale
``<stem>_blendshapes.json`` models with named expression units (the default model): each unit's
                           weight, e.g. ARKit ``{"jawOpen": 0.42, "eyeBlink_L": 0.05, ...}`` in
                           [0, 1] — drives an ARKit / Blender / Unity face rig directly
``<stem>.png``             input crop | render | overlay with fitted (green) and detected (red)
                           landmarks
``<stem>.done.json``       written last: marks the face as finished (resume skips it)
=========================  =====================================================================

A same-person run (``reconstruct --same-person``) also writes ``<out>/identity.npz``
(:func:`write_identity`): the identity and albedo aggregated over all its faces, the per-face
confidences and which faces they were.

Every file is written to a temporary name (``.<file>.f3dtmp-<random><suffix>``) and renamed, so
an interrupted run never leaves a half-written output that a resumed run would trust; temporaries
left by a killed run are removed when a later run works in that folder again.

Output folders (:func:`output_folders`) are unique per input and depend only on the set of inputs
of the run: ``<out>/<stem>/`` (``<out>/<sub/folders>/<stem>/`` below a single input folder) when no
other input maps there; inputs that would share one (``face.jpg`` and ``face.png``; ``a/face.png``
and ``b/face.png`` given as two arguments; names that differ only in case) get, in this order,
the first that is unique: ``<out>/<sub/folders>/<name with extension>/`` (``out/face.jpg/``), the
path relative to the common folder of all the run's images (``out/a/face.png/``), that path plus
``~`` and the first 8 hex digits of the SHA-1 of the input's absolute path. Adding an input that collides with an
earlier one therefore moves both to the longer names (the earlier ``out/face/`` is left as it was).

``<stem>.done.json`` also records the settings the face was made with (``settings`` and their
``settings_fingerprint``: model content, landmark source, face selection, fitting configuration,
identity network; not device, threads or batch size), the output kinds saved, the status and the
time it was finished (``finished_utc``); a resumed run skips a face only when they match.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from scipy.io import savemat

from face3dkit.io.atomic import atomic_path, atomic_write_text
from face3dkit.io.image import FAST_PNG_LEVEL, save_image
from face3dkit.model.coefficients import Coefficients
from face3dkit.viz import draw_landmarks

__all__ = ["IDENTITY_NAME", "OUTPUT_KINDS", "SUMMARY_COLUMNS", "face_stem", "is_done", "output_folders", "read_marker",
           "summary_names", "utc_now", "write_face_outputs", "write_identity", "write_run_summary"]

LOG = logging.getLogger("face3dkit.pipeline")

#: Columns of ``summary.csv`` (the first eight as before; later ones are additions).
SUMMARY_COLUMNS = ("image", "face_index", "yaw", "pitch", "roll", "landmark_error_px", "status", "reason", "folder",
                   "settings", "finished_utc", "landmark_nme")


def utc_now() -> str:
    """Now, ISO 8601 UTC to the second (markers' and summaries' ``finished_utc``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

#: Output kinds selectable with ``--save``.
OUTPUT_KINDS = ("obj", "mat", "npz", "lm", "pose", "blendshapes", "png")


def face_stem(image_stem: str, face_index: int) -> str:
    """``photo`` for the first face of ``photo.jpg``, ``photo_1`` for the second, ..."""
    return image_stem if face_index == 0 else f"{image_stem}_{face_index}"


def _atomic_savemat(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        savemat(tmp, data)


def _atomic_savez(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **data)


#: The run-level file of a same-person run (:func:`write_identity`).
IDENTITY_NAME = "identity.npz"


def write_identity(out: Path, id: np.ndarray, tex: np.ndarray, conf_id: np.ndarray, conf_tex: np.ndarray,
                   images: Sequence[str], face_index: Sequence[int], rnet: str = "", cnet: str = "",
                   id_aggregate: np.ndarray | None = None, tex_aggregate: np.ndarray | None = None,
                   joint: np.ndarray | None = None) -> Path:
    """Write ``out/identity.npz`` atomically: ``id`` (n_id,) and ``tex`` (n_tex,) the identity and
    albedo every face of the run's N has, ``conf_id`` (N, n_id) / ``conf_tex`` (N, n_tex) the
    confidences each face had in the aggregate of the regressions (all 1: the plain mean),
    ``images`` (N,) and ``face_index`` (N,) which faces, in that order, and the ``rnet`` / ``cnet``
    paths ('' for none). After a joint identity fit (``same_person_identity='joint'``) ``id`` /
    ``tex`` are its result and the file adds ``id_aggregate`` / ``tex_aggregate`` (the regressions'
    aggregate it started from) and ``joint`` (N,) bool, the faces it was fitted to."""
    path = Path(out) / IDENTITY_NAME
    arrays = {"id": np.asarray(id, np.float32), "tex": np.asarray(tex, np.float32),
              "conf_id": np.asarray(conf_id, np.float32), "conf_tex": np.asarray(conf_tex, np.float32),
              "images": np.asarray(list(images), dtype=str), "face_index": np.asarray(list(face_index), dtype=np.int64),
              "rnet": np.asarray(rnet), "cnet": np.asarray(cnet)}
    if id_aggregate is not None:
        arrays["id_aggregate"] = np.asarray(id_aggregate, np.float32)
    if tex_aggregate is not None:
        arrays["tex_aggregate"] = np.asarray(tex_aggregate, np.float32)
    if joint is not None:
        arrays["joint"] = np.asarray(joint, bool)
    _atomic_savez(path, arrays)
    return path


def is_done(folder: Path, stem: str) -> bool:
    """True when ``<folder>/<stem>.done.json`` exists (the face was finished by an earlier run)."""
    return (folder / f"{stem}.done.json").exists()


def read_marker(folder: Path, stem: str) -> dict[str, Any] | None:
    """The ``<folder>/<stem>.done.json`` marker, or None when it is missing or unreadable (not done)."""
    try:
        data = json.loads((folder / f"{stem}.done.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def output_folders(inputs: Sequence[tuple[str, str | None, str]]) -> list[PurePosixPath]:
    """Unique output folders (relative to the output root) for the inputs of one run.

    Args:
        inputs: per input ``(key, rel_parent, name)``: ``key`` identifies the input (its absolute
            path; equal keys are the same input and share a folder), ``rel_parent`` its folder
            relative to the input folder given (``''`` for none) or None for an in-memory array,
            ``name`` its file name (``'face.jpg'``; ``'array3'`` for an array).

    Returns:
        One folder per input, following the rule in the module docstring. Collisions are found
        case-insensitively (a case-insensitive file system would merge ``Face/`` and ``face/``).
    """
    files = [key for key, rel, _ in inputs if rel is not None]
    common = os.path.commonpath([os.path.dirname(k) for k in files]) if files else ""

    def candidate(i: int, level: int) -> PurePosixPath:
        key, rel, name = inputs[i]
        if rel is None:  # an array: its name is already unique among arrays
            return PurePosixPath(name)
        if level == 0:
            return PurePosixPath(rel or ".", PurePosixPath(name).stem)
        if level == 1:
            return PurePosixPath(rel or ".", name)
        path = PurePosixPath(Path(os.path.relpath(key, common)).as_posix())
        if level == 2:
            return path
        return path.with_name(f"{path.name}~{hashlib.sha1(key.encode()).hexdigest()[:8]}")

    level = [0] * len(inputs)
    while True:
        folders = [candidate(i, level[i]) for i in range(len(inputs))]
        owners: dict[str, set[str]] = {}
        for i, f in enumerate(folders):
            owners.setdefault(str(f).casefold(), set()).add(inputs[i][0])
        clash = [i for i, f in enumerate(folders) if len(owners[str(f).casefold()]) > 1 and level[i] < 3
                 and inputs[i][1] is not None]
        if not clash:
            return folders
        for i in clash:
            level[i] += 1


def write_face_outputs(
    folder: Path,
    stem: str,
    coeffs: Coefficients,
    *,
    verts: torch.Tensor,
    faces: torch.Tensor,
    albedo: torch.Tensor,
    lm68_image: np.ndarray,
    lm68_detected_image: np.ndarray | None,
    pose_deg: tuple[float, float, float],
    crop: np.ndarray,
    render: np.ndarray | None,
    render_mask: np.ndarray | None,
    lm68_crop: np.ndarray,
    lm68_detected_crop: np.ndarray | None,
    crop_matrix: np.ndarray,
    uv: torch.Tensor | None = None,
    face_uv: torch.Tensor | None = None,
    save: tuple[str, ...] = OUTPUT_KINDS,
    texture_size: int = 512,
    extra: dict[str, Any] | None = None,
    exp_names: list[str] | None = None,
) -> list[Path]:
    """Write one face's outputs (see the module docstring); the ``.done.json`` marker last.

    Args:
        folder: the image's output folder.
        stem: :func:`face_stem`.
        coeffs: one face's coefficients (batch of 1).
        verts: (N, 3) model-space shape; faces (F, 3); albedo (N, 3) in [0, 1].
        lm68_image: (68, 2) fitted landmarks in original-image pixels.
        lm68_detected_image: (68, 2) detected landmarks in original-image pixels, or None.
        pose_deg: (yaw, pitch, roll) degrees.
        crop: (224, 224, 3) uint8 aligned crop; render (224, 224, 3) uint8 or None; render_mask
            (224, 224) bool or None.
        lm68_crop, lm68_detected_crop: (68, 2) landmarks in crop pixels.
        crop_matrix: (2, 3) original image → crop affine.
        uv, face_uv: optional model UVs for a textured OBJ.
        save: which of :data:`OUTPUT_KINDS` to write.
        texture_size: side of the baked OBJ texture, pixels.
        extra: more fields for the ``.done.json`` summary.
        exp_names: the model's expression unit names (``_blendshapes.json`` is written only
            with names).

    Returns:
        The files written.
    """
    from face3dkit.export import export_mesh

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    c = {k: v.detach().cpu().float().numpy().reshape(1, -1) for k, v in coeffs.as_dict().items()}
    deng = {"id": c["id"], "exp": c["exp"], "tex": c["tex"], "angle": c["angles"], "gamma": c["gamma"],
            "trans": c["trans"], "lm68": lm68_image.astype(np.float32)}
    if "obj" in save:
        written += export_mesh(folder / f"{stem}.obj", verts, faces, albedo.clamp(0, 1), uv, face_uv,
                               texture_size=texture_size)
    if "mat" in save:
        _atomic_savemat(folder / f"{stem}.mat", deng)
        written.append(folder / f"{stem}.mat")
    if "npz" in save:
        _atomic_savez(folder / f"{stem}.npz", {
            **deng, "coeffs": coeffs.join().detach().cpu().float().numpy()[0],
            "layout": np.array([c["id"].shape[1], c["exp"].shape[1], c["tex"].shape[1]]),
            "crop_matrix": crop_matrix.astype(np.float64),
        })
        written.append(folder / f"{stem}.npz")
    if "lm" in save:
        text = "".join(f"{x:.3f} {y:.3f}\n" for x, y in lm68_image)
        written.append(atomic_write_text(folder / f"{stem}_lm68.txt", text))
    pose = {"yaw": pose_deg[0], "pitch": pose_deg[1], "roll": pose_deg[2],
            "trans": [float(t) for t in c["trans"][0]], "units": "degrees; trans in model units"}
    if "pose" in save:
        written.append(atomic_write_text(folder / f"{stem}_pose.json", json.dumps(pose, indent=2)))
    if "blendshapes" in save and exp_names is not None:
        weights = {name: round(float(w), 5) for name, w in zip(exp_names, c["exp"][0], strict=True)}
        written.append(atomic_write_text(folder / f"{stem}_blendshapes.json", json.dumps(weights, indent=2)))
    if "png" in save:
        panels = [crop]
        if render is not None and render_mask is not None:
            panels.append(np.where(render_mask[..., None], render, 0).astype(np.uint8))
            over = np.where(render_mask[..., None], (0.3 * crop + 0.7 * render), crop).astype(np.uint8)
        else:
            over = crop.copy()
        if lm68_detected_crop is not None:
            over = draw_landmarks(over, lm68_detected_crop, color=(230, 40, 40), radius=1.6)
        over = draw_landmarks(over, lm68_crop, color=(40, 220, 60), radius=1.6)
        panels.append(over)
        written.append(save_image(np.concatenate(panels, 1), folder / f"{stem}.png", FAST_PNG_LEVEL))
    summary = {"stem": stem, "pose": pose, "files": [p.name for p in written], **(extra or {})}
    written.append(atomic_write_text(folder / f"{stem}.done.json", json.dumps(summary, indent=2)))
    return written


# --------------------------------------------------------------------------------------------- run summary

def summary_names() -> tuple[str, str]:
    """``summary.json`` / ``summary.csv`` (``summary.rank<R>.*`` under torchrun with several ranks)."""
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


def write_run_summary(out: Path, s: Any, config: dict[str, Any], items: list[tuple[str, str, Path | None]],
                      earlier: list[Any], settings: dict[str, Any], fingerprint: str) -> list[dict[str, Any]]:
    """Merge a run into ``summary[.rankR].json/.csv`` (see :mod:`face3dkit.pipeline.run`); returns all rows.

    Args:
        out: the output folder.
        s: the run's :class:`face3dkit.pipeline.RunSummary`.
        config: the run's configuration as a dict (``asdict(ReconstructConfig)``).
        items: (name, key, folder) of every input of the run (key: absolute path or array name).
        earlier: faces finished by earlier runs (``image``, ``face_index``, ``folder``, ``marker``, ``note``).
        settings, fingerprint: the result-deciding settings of this run and their fingerprint.
    """
    json_name, csv_name = summary_names()
    key_of = {name: key for name, key, _ in items}
    folder_of = {name: folder for name, _, folder in items}

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
    this_run = {key for _, key, _ in items}
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
        "device": s.device, "threads": s.threads, "finished_utc": utc_now(),
        "failures": [{k: r.get(k) for k in ("image", "reason", "folder", "path")} for r in fails],
        "faces_detail": faces, "config": config, "settings_fingerprint": fingerprint or None,
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
