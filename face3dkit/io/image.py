"""Reading photos robustly into ``(H, W, 3)`` uint8 RGB arrays, and listing image inputs.

:func:`load_image` accepts anything Pillow opens (JPEG, PNG, BMP, WebP, TIFF, GIF, ...) and
normalises it to 8-bit RGB:

- EXIF orientation is applied first (``PIL.ImageOps.exif_transpose``), so the array is what a
  viewer shows; a broken EXIF block is ignored rather than failing the read.
- grayscale (``1``, ``L``) and palette (``P``) images become RGB; palette transparency counts as
  alpha.
- images with alpha (``RGBA``, ``LA``, ``PA``, ``P`` + transparency, premultiplied ``RGBa``/``La``)
  are **composited on white**: ``out = a * rgb + (1 - a) * 255``, rounded. (Dropping alpha would
  expose whatever colour a program left under fully transparent pixels, often black or garbage.)
- 16-bit images (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``: 16-bit PNG/TIFF grayscale) are scaled
  with ``round(v * 255 / 65535)`` (= ``round(v / 257)``), so 65535 -> 255 and 32896 -> 128.
  32-bit integer images (``I``) in ``[0, 65535]`` are treated as 16-bit the same way; other ranges
  are min-max normalised. Float images (``F``) in ``[0, 1]`` are multiplied by 255, other ranges
  min-max normalised. 16-bit *RGB* PNGs are reduced to 8 bits by Pillow itself (high byte).
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` go through Pillow's conversion to RGB.
- multi-frame files (GIF, multi-page TIFF): the first frame.

Any failure (missing, empty, not an image, truncated or corrupt data) raises :class:`ImageReadError`
whose message is one line ``'<path>: <reason>'``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["FAST_PNG_LEVEL", "IMAGE_EXTENSIONS", "ImageReadError", "ImageScan", "load_image", "list_images",
           "save_image", "scan_images", "to_rgb_uint8"]

#: zlib level of the PNGs a batch job writes per face (overlays, baked textures): 1 encodes several
#: times faster than Pillow's default 6 (a 672 x 224 overlay: 15 vs 47 ms on 2 busy cores, a tenth of
#: ``rnet+fit --fast``'s time a face) for a file 10-20 % larger; lossless either way.
FAST_PNG_LEVEL = 1

#: File extensions (lower case, with the dot) that :func:`list_images` treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pnm"}
)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageReadError(ValueError):
    """An image or an image list could not be read; ``str(err)`` is one line ``'<path>: <reason>'``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the underlying library said
        super().__init__(f"{self.path}: {self.reason}")


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA -> (H, W, 3) uint8, straight alpha composited over white."""
    rgb = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:4].astype(np.uint32)
    # integer rounding of (rgb * a + 255 * (255 - a)) / 255
    out = (rgb * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _scale_to_uint8(values: np.ndarray, full_scale: float | None) -> np.ndarray:
    """Scale a 2D array to uint8: ``round(v * 255 / full_scale)``, or min-max if ``full_scale`` is None."""
    v = values.astype(np.float64)
    if full_scale is None:
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        full_scale = 1.0
    v = np.nan_to_num(v, nan=0.0, posinf=full_scale, neginf=0.0)
    return np.clip(np.rint(v * (255.0 / full_scale)), 0, 255).astype(np.uint8)


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Convert an already loaded Pillow image of any mode to an (H, W, 3) uint8 RGB array.

    See the module docstring for the rules (alpha over white, 16-bit scaling, ...). EXIF
    orientation is *not* applied here (:func:`load_image` does that first).
    """
    mode = im.mode
    if mode == "RGB":
        return np.array(im, dtype=np.uint8)
    if mode in _SIXTEEN_BIT_MODES:
        gray = _scale_to_uint8(np.asarray(im), 65535.0)
    elif mode == "I":
        a = np.asarray(im)
        in_range = a.size > 0 and int(a.min()) >= 0 and int(a.max()) <= 65535
        gray = _scale_to_uint8(a, 65535.0 if in_range else None)
    elif mode == "F":
        a = np.asarray(im)
        finite = a[np.isfinite(a)]
        unit = finite.size > 0 and float(finite.min()) >= 0.0 and float(finite.max()) <= 1.0
        gray = _scale_to_uint8(a, 1.0 if unit else None)
    else:
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode in ("P", "L", "RGB") and "transparency" in im.info
        )
        if has_alpha:
            return _composite_on_white(np.array(im.convert("RGBA"), dtype=np.uint8))
        return np.array(im.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (EXIF orientation applied).

    Args:
        path: image file (any format Pillow reads).

    Returns:
        (H, W, 3) uint8, C-contiguous; H, W as displayed (after the EXIF rotation).

    Raises:
        ImageReadError: one line ``'<path>: <reason>'`` for a missing, empty, directory,
            non-image, truncated or corrupt file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "no such file")
    if p.is_dir():
        raise ImageReadError(p, "is a directory, not an image file")
    try:
        if p.stat().st_size == 0:
            raise ImageReadError(p, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF / palette / decompression-bomb chatter
            with Image.open(p) as im:
                im.load()
                fmt = im.format or "image"
                try:
                    im2 = ImageOps.exif_transpose(im)
                    if im2 is not None:
                        im = im2
                except Exception:  # a malformed EXIF block must not lose the pixels
                    pass
                out = to_rgb_uint8(im)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image or an unsupported image format") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(p, f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as e:
        reason = str(e) or type(e).__name__
        raise ImageReadError(p, f"corrupt or truncated image ({reason})") from None
    if out.ndim != 3 or out.shape[2] != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise ImageReadError(p, f"unexpected decoded {fmt} image shape {out.shape}")
    return np.ascontiguousarray(out)


def _read_list_file(list_path: Path, problems: list[tuple[str, str]] | None = None) -> list[Path]:
    """Image paths of a list file; a line naming a missing file raises, or goes to ``problems`` when given."""
    try:
        text = list_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ImageReadError(list_path, "not an image (unknown extension) nor a UTF-8 text list of images") from None
    except OSError as e:
        raise ImageReadError(list_path, f"cannot read list file ({e.strerror or e})") from None
    if "\x00" in text:
        raise ImageReadError(list_path, "not an image (unknown extension) nor a text list of images")
    out: list[Path] = []
    base = list_path.parent
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(os.path.expanduser(line))
        if not p.is_absolute():
            p = base / p
        if not p.is_file():
            if problems is None:
                raise ImageReadError(list_path, f"line {lineno}: no such image file {line!r}")
            problems.append((str(p), f"no such image file (line {lineno} of {list_path})"))
            continue
        out.append(p)
    return out


@dataclass
class ImageScan:
    """What :func:`scan_images` found.

    Attributes:
        images: image paths, in :func:`list_images` order.
        problems: ``(path, reason)`` for every entry that looked like an input but was left out:
            a broken symbolic link or a non-regular file with an image extension, a sub-folder
            that cannot be read.
    """

    images: list[Path] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _walk(folder: Path, recursive: bool, scan: ImageScan, seen: set[str]) -> None:
    """Images under ``folder`` (hidden names skipped); folder symlinks followed once (no loops)."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        scan.problems.append((str(folder), f"folder not readable ({e.strerror or type(e).__name__})"))
        return
    for e in entries:
        if e.name.startswith("."):
            continue
        p = folder / e.name
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                real = os.path.realpath(p)
                if real not in seen:
                    seen.add(real)
                    _walk(p, recursive, scan, seen)
            continue
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if e.is_symlink() and not p.exists():
            scan.problems.append((str(p), f"broken symbolic link (target {os.readlink(p)!r} does not exist)"))
        elif not p.is_file():
            scan.problems.append((str(p), "not a regular file"))
        else:
            scan.images.append(p)


def scan_images(input: str | os.PathLike, recursive: bool = True, strict_lists: bool = False) -> ImageScan:
    """:func:`list_images` for one input argument, also reporting what it had to leave out.

    A folder is walked with ``os.scandir`` (symbolic links to folders followed, each real folder
    once); a broken link or a non-regular file with an image extension, and a sub-folder that
    cannot be read, go to :attr:`ImageScan.problems` instead of being skipped silently. Files
    without an image extension (landmark files, notes) are not inputs and are not reported. A line
    of a list file that names a missing file is a problem too (``strict_lists``: an error, as in
    :func:`list_images`).

    Raises:
        ImageReadError: a missing input, an unreadable folder given as the input itself, or a list
            file that is unreadable or names a missing file.
    """
    root = Path(input)
    if root.is_dir():
        scan = ImageScan()
        _walk(root, recursive, scan, {os.path.realpath(root)})
        if scan.problems and scan.problems[0][0] == str(root):
            raise ImageReadError(root, scan.problems[0][1])
        scan.images.sort()
        return scan
    if root.is_file():
        if root.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageScan([root])
        scan = ImageScan()
        scan.images = _read_list_file(root, None if strict_lists else scan.problems)
        return scan
    if root.is_symlink():
        raise ImageReadError(root, f"broken symbolic link (target {os.readlink(root)!r} does not exist)")
    raise ImageReadError(root, "no such file or folder")


def list_images(input: str | os.PathLike | Iterable[str | os.PathLike], recursive: bool = True) -> list[Path]:
    """Expand an input argument into image paths.

    Args:
        input: one of

            - a folder: its image files (extension in :data:`IMAGE_EXTENSIONS`, case-insensitive),
              recursively when ``recursive`` (symbolic links to folders followed, each folder
              once); hidden files and folders (name starting with ``.``) are skipped; sorted by
              path. Broken links and unreadable sub-folders are left out (:func:`scan_images`
              reports them).
            - an image file (extension in :data:`IMAGE_EXTENSIONS`): ``[input]``.
            - any other file: a UTF-8 text list, one image path per line; relative paths are
              relative to the list file's folder; blank lines and lines starting with ``#`` are
              skipped; the order of the file is kept.
            - an iterable of such inputs: concatenation of their expansions.
        recursive: descend into sub-folders of a folder input.

    Returns:
        list of image paths (not opened or validated; :func:`load_image` does that).

    Raises:
        ImageReadError: a missing input, or a list file that is unreadable or names a missing file.
    """
    if not isinstance(input, (str, os.PathLike)):
        return [p for item in input for p in list_images(item, recursive=recursive)]
    return scan_images(input, recursive=recursive, strict_lists=True).images


def save_image(image: Any, path: str | os.PathLike, compress_level: int | None = None) -> Path:
    """Write an image atomically (temporary file + rename; parent folders created); the library's
    one image writer (overlays, previews, confusion matrices, training grids, renders).

    Args:
        image: (H, W, 3), (H, W, 1), (H, W) or (1, H, W, C) array or tensor: uint8, or float in
            [0, 1] (clamped, rounded). Row 0 is the top of the picture.
        path: output file; the format follows its suffix (PNG for ``.png``).
        compress_level: PNG zlib level (Pillow's default 6 when None).

    Returns:
        ``path``.
    """
    from face3dkit.io.atomic import atomic_path

    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"{path}: save_image takes one image, got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"{path}: expected an (H, W[, 1|3|4]) image, got shape {tuple(arr.shape)}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.uint8)
    params = {} if compress_level is None else {"compress_level": int(compress_level)}
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format=Image.registered_extensions().get(
            Path(path).suffix.lower(), "PNG"), **params)
    return Path(path)
