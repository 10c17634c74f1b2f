"""Landmarks stored in files next to the images (no detector needed).

Formats (chosen by extension):

- ``.pts`` — iBUG 300-W / menpo: ``version: 1``, ``n_points: 68``, ``{``, one ``x y`` per line,
  ``}``. 300-W annotations are **1-based** (MATLAB style: the centre of the top-left pixel is
  ``(1, 1)``; menpo subtracts 1 on import), so face3dkit coordinates are ``value - 0.5``.
  ``pts_one_based=False`` reads 0-based files (``value + 0.5``).
- ``.txt`` — 68 or 5 lines ``x y`` (whitespace or comma separated; blank lines and ``#`` comments
  skipped), e.g. Deng et al.'s ``detections/<stem>.txt`` (5 points from MTCNN, in
  :data:`~face3dkit.landmarks.LM5_NAMES` order: left eye, right eye, nose, left and right mouth
  corner).
- ``.npy`` — float array (68, 2), (5, 2), or (F, 68, 2) / (F, 5, 2) for F faces.

``.txt`` and ``.npy`` values are taken as **0-based pixel indices** (the centre of the top-left
pixel at ``(0, 0)``: dlib, OpenCV, MTCNN, Deng et al.), so ``index_offset = 0.5`` is added to reach
face3dkit coordinates (pixel centres at +0.5, docs/conventions.md). Pass ``index_offset=0`` for
files already written in face3dkit coordinates (e.g. ``FaceOutput.landmarks2d``).

Every problem is a :class:`~face3dkit.landmarks.LandmarkError` with one line
``'<file>: <problem>'``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from face3dkit.io.atomic import atomic_open, atomic_write_text
from face3dkit.landmarks.base import SELECT_CHOICES, FaceLandmarks, LandmarkError, Select, select_faces

__all__ = [
    "LANDMARK_SUFFIXES",
    "FileLandmarks",
    "read_landmark_file",
    "write_landmark_file",
]

#: Landmark file extensions, in the order :class:`FileLandmarks` tries them.
LANDMARK_SUFFIXES: tuple[str, ...] = (".pts", ".npy", ".txt")
_COUNTS = (68, 5)


def _parse_xy_lines(path: Path, lines: list[tuple[int, str]]) -> np.ndarray:
    rows = []
    for lineno, raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        toks = line.replace(",", " ").split()
        if len(toks) != 2:
            raise LandmarkError(f"{path}: line {lineno}: expected 2 numbers 'x y', got {len(toks)} values")
        try:
            x, y = float(toks[0]), float(toks[1])
        except ValueError:
            raise LandmarkError(f"{path}: line {lineno}: non-numeric value in {line!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise LandmarkError(f"{path}: line {lineno}: non-finite coordinate in {line!r}")
        rows.append((x, y))
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LandmarkError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data.strip():
        raise LandmarkError(f"{path}: empty landmark file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LandmarkError(f"{path}: not a text landmark file (binary content)") from None


def _read_pts(path: Path) -> np.ndarray:
    lines = list(enumerate(_read_text(path).splitlines(), 1))
    header: dict[str, str] = {}
    start = None
    for i, (lineno, raw) in enumerate(lines):
        line = raw.strip()
        if not line:
            continue
        if line == "{":
            start = i + 1
            break
        if ":" not in line:
            raise LandmarkError(f"{path}: line {lineno}: expected a 'key: value' header or '{{', got {line!r}")
        key, value = line.split(":", 1)
        header[key.strip().lower()] = value.strip()
    if start is None:
        raise LandmarkError(f"{path}: not an iBUG .pts file (no '{{' line)")
    if "n_points" not in header:
        raise LandmarkError(f"{path}: missing 'n_points:' header")
    try:
        n = int(header["n_points"])
    except ValueError:
        raise LandmarkError(f"{path}: bad n_points {header['n_points']!r}") from None
    if "version" in header and header["version"] not in ("1", "1.0"):
        raise LandmarkError(f"{path}: unsupported .pts version {header['version']!r} (expected 1)")
    end = next((j for j in range(start, len(lines)) if lines[j][1].strip() == "}"), None)
    if end is None:
        raise LandmarkError(f"{path}: missing closing '}}'")
    pts = _parse_xy_lines(path, lines[start:end])
    if pts.shape[0] != n:
        raise LandmarkError(f"{path}: n_points is {n} but {pts.shape[0]} points are listed")
    if n not in _COUNTS:
        raise LandmarkError(f"{path}: {n} points; only 68-point (iBUG) or 5-point files are supported")
    return pts[None]


def _read_txt(path: Path) -> np.ndarray:
    pts = _parse_xy_lines(path, list(enumerate(_read_text(path).splitlines(), 1)))
    if pts.shape[0] not in _COUNTS:
        raise LandmarkError(f"{path}: expected 68 or 5 lines 'x y', got {pts.shape[0]} points")
    return pts[None]


def _read_npy(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise LandmarkError(f"{path}: cannot read ({e.strerror or e})") from None
    if magic != b"\x93NUMPY":
        raise LandmarkError(f"{path}: not a .npy file (no NumPy header)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LandmarkError(f"{path}: not a readable .npy array ({' '.join(str(e).split())})") from None
    if arr.dtype.kind not in "fiu":
        raise LandmarkError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    shape = tuple(arr.shape)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1] not in _COUNTS or arr.shape[2] != 2:
        raise LandmarkError(f"{path}: expected shape (68, 2), (5, 2) or (F, 68|5, 2), got {shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise LandmarkError(f"{path}: non-finite coordinates")
    return arr


def read_landmark_file(path: str | os.PathLike, *, index_offset: float = 0.5, pts_one_based: bool = True) -> np.ndarray:
    """Read a landmark file into face3dkit pixel coordinates.

    Args:
        path: ``.pts``, ``.txt`` or ``.npy`` file (see the module docstring for the formats).
        index_offset: added to ``.txt``/``.npy`` values (0.5: files hold 0-based pixel indices).
        pts_one_based: ``.pts`` values are 1-based (iBUG 300-W): subtract 0.5; else add 0.5.

    Returns:
        (F, K, 2) float64, F faces (1 for ``.pts``/``.txt``), K = 68 or 5.

    Raises:
        LandmarkError: one line naming the file and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise LandmarkError(f"{p}: no such landmark file")
    suffix = p.suffix.lower()
    if suffix == ".pts":
        return _read_pts(p) + (-0.5 if pts_one_based else 0.5)
    if suffix == ".txt":
        return _read_txt(p) + index_offset
    if suffix == ".npy":
        return _read_npy(p) + index_offset
    raise LandmarkError(f"{p}: unknown landmark file type {p.suffix!r} (expected .pts, .txt or .npy)")


def write_landmark_file(path: str | os.PathLike, points: np.ndarray, *, index_offset: float = 0.5,
                        pts_one_based: bool = True) -> Path:
    """Write face3dkit-coordinate landmarks so that :func:`read_landmark_file` reads them back.

    Args:
        path: ``.txt`` (one face), ``.pts`` (one face) or ``.npy`` (one or several faces).
        points: (K, 2) or (F, K, 2) pixel coordinates, K = 68 or 5.
        index_offset, pts_one_based: as in :func:`read_landmark_file` (subtracted / inverted here).

    Returns:
        the path written (parent folders are created).
    """
    p = Path(path)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1] not in _COUNTS or pts.shape[2] != 2:
        raise ValueError(f"expected (K, 2) or (F, K, 2) landmarks with K in {_COUNTS}, got {tuple(pts.shape)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".npy":
        with atomic_open(p) as f:
            np.save(f, pts - index_offset)
        return p
    if pts.shape[0] != 1:
        raise ValueError(f"{p.suffix} files hold one face, got {pts.shape[0]} (use .npy)")
    if suffix == ".txt":
        body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in pts[0] - index_offset)
        atomic_write_text(p, body + "\n")
    elif suffix == ".pts":
        vals = pts[0] + (0.5 if pts_one_based else -0.5)
        body = "\n".join(f"{x:.6f} {y:.6f}" for x, y in vals)
        atomic_write_text(p, f"version: 1\nn_points: {len(vals)}\n{{\n{body}\n}}\n")
    else:
        raise ValueError(f"{p}: unknown landmark file type {p.suffix!r} (expected .pts, .txt or .npy)")
    return p


class FileLandmarks:
    """Landmark "detector" that reads files stored alongside the images.

    For an image ``<dir>/<stem>.<ext>`` the first existing file of these is read:

    - with ``landmarks_dir``: ``landmarks_dir/<rel>/<stem>{.pts,.npy,.txt}`` where ``<rel>`` is the
      image's folder relative to ``image_root`` (when given and the image is inside it), then
      ``landmarks_dir/<stem>{.pts,.npy,.txt}``; nothing else is searched.
    - otherwise: ``<dir>/<stem>{.pts,.npy,.txt}`` (same folder, same stem), then Deng et al.'s
      layout ``<dir>/detections/<stem>{.pts,.npy,.txt}``.

    Args:
        landmarks_dir: folder holding the landmark files (optional).
        image_root: root of the image tree, to mirror sub-folders under ``landmarks_dir``.
        select: ``'all'`` faces in the file, the ``'largest'`` (largest landmark box) or the ``'center'``
            one (box centre closest to the image centre; needs the image).
        index_offset, pts_one_based: coordinate conventions, see :func:`read_landmark_file`.
        missing: ``'error'`` (raise :class:`LandmarkError` when no file exists) or ``'empty'`` (no
            faces).
    """

    def __init__(self, landmarks_dir: str | os.PathLike | None = None, image_root: str | os.PathLike | None = None,
                 select: Select = "all", index_offset: float = 0.5, pts_one_based: bool = True,
                 missing: Literal["error", "empty"] = "error") -> None:
        if select not in SELECT_CHOICES:
            raise ValueError(f"select must be one of {', '.join(SELECT_CHOICES)}, got {select!r}")
        if missing not in ("error", "empty"):
            raise ValueError(f"missing must be 'error' or 'empty', got {missing!r}")
        self.landmarks_dir = Path(landmarks_dir) if landmarks_dir is not None else None
        self.image_root = Path(image_root) if image_root is not None else None
        self.select: Select = select
        self.index_offset = float(index_offset)
        self.pts_one_based = bool(pts_one_based)
        self.missing = missing

    def __repr__(self) -> str:
        return f"FileLandmarks(landmarks_dir={self.landmarks_dir}, select={self.select!r})"

    def candidates(self, image_path: str | os.PathLike) -> list[Path]:
        """Landmark file paths tried for ``image_path``, in order."""
        img = Path(image_path)
        stem = img.stem
        folders: list[Path] = []
        if self.landmarks_dir is not None:
            if self.image_root is not None:
                try:
                    rel = img.parent.resolve().relative_to(self.image_root.resolve())
                    folders.append(self.landmarks_dir / rel)
                except ValueError:
                    pass
            folders.append(self.landmarks_dir)
        else:
            folders += [img.parent, img.parent / "detections"]
        out: list[Path] = []
        for f in folders:
            for s in LANDMARK_SUFFIXES:
                c = f / f"{stem}{s}"
                if c not in out:
                    out.append(c)
        return out

    def find(self, image_path: str | os.PathLike) -> Path | None:
        """The landmark file for ``image_path``, or None."""
        return next((c for c in self.candidates(image_path) if c.is_file()), None)

    def load(self, image_path: str | os.PathLike, image_size: tuple[int, int] | None = None) -> list[FaceLandmarks]:
        """Faces from the landmark file of ``image_path``.

        Args:
            image_path: the image the landmarks belong to.
            image_size: optional (H, W) to reject landmarks lying entirely outside the image.

        Returns:
            one :class:`FaceLandmarks` per face (box = tight box of the points, score 1).
        """
        f = self.find(image_path)
        if f is None:
            if self.missing == "empty":
                return []
            where = self.landmarks_dir if self.landmarks_dir is not None else Path(image_path).parent
            raise LandmarkError(
                f"{image_path}: no landmark file {Path(image_path).stem}{{.pts,.npy,.txt}} in {where}"
                + ("" if self.landmarks_dir is not None else " or its detections/ folder")
            )
        arr = read_landmark_file(f, index_offset=self.index_offset, pts_one_based=self.pts_one_based)
        faces = [FaceLandmarks(points=a, box=FaceLandmarks.box_of(a), score=1.0, source=str(f)) for a in arr]
        if image_size is not None:
            h, w = image_size
            for face in faces:
                x0, y0, x1, y1 = face.box
                if x1 < 0 or y1 < 0 or x0 > w or y0 > h:
                    raise LandmarkError(
                        f"{f}: landmarks lie outside the {w}x{h} image {Path(image_path).name} "
                        "(wrong file or coordinate convention?)"
                    )
        return select_faces(faces, self.select, image_size)

    def detect(self, image: np.ndarray | None, path: str | Path | None = None) -> list[FaceLandmarks]:
        """:class:`~face3dkit.landmarks.LandmarkDetector` interface: ``path`` is required;
        ``image`` (H, W, 3), when given, is used to check the landmarks fall on it."""
        if path is None:
            raise ValueError("FileLandmarks.detect needs the image path")
        size = None if image is None else (int(np.shape(image)[0]), int(np.shape(image)[1]))
        return self.load(path, size)
