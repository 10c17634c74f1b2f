"""Real-image dataset formats: class-per-folder trees, the FER2013 csv and RAF-DB's basic label list.

All three give :class:`fer.data.base.FerDataset` samples with canonical labels; a bad row or an
unreadable image is reported as ``file:line: reason`` (``fer.data`` logger, WARNING), skipped and
counted in ``dataset.report``.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from face3dkit.io import IMAGE_EXTENSIONS
from fer.data.base import FerDataset, file_digest, read_image_file
from fer.labels import NAME_SYNONYMS, canonical_index, scheme_mapping

__all__ = ["ImageFolderDataset", "Fer2013Dataset", "RafDbDataset", "FER2013_SPLITS", "RAFDB_LABEL_FILE"]

#: ``split`` argument -> FER2013 ``Usage`` value.
FER2013_SPLITS: dict[str, str] = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}

#: RAF-DB's basic-expression label file (the dataset's own spelling).
RAFDB_LABEL_FILE = "list_patition_label.txt"

_SPLIT_DIRS = {"train": ("train", "training", "Training"), "val": ("val", "valid", "validation", "PublicTest"),
               "test": ("test", "testing", "Test", "PrivateTest")}


class _FileImages(FerDataset):
    """Samples that are image files: ``self.paths`` (N,) strings."""

    paths: list[str]

    def _decode(self, i: int) -> np.ndarray:
        return read_image_file(self.paths[i])

    def content_key(self, i: int) -> str:
        return file_digest(self.paths[i])

    def _image_file(self, i: int) -> str:
        return self.paths[i]

    def _subset_extra(self, keep: np.ndarray) -> None:
        self.paths = [self.paths[int(k)] for k in keep]


def _check_image(path: Path) -> str | None:
    """Cheap integrity check (header + structure, no full decode): None if fine, else a reason."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            im.verify()
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        return f"not a readable image ({type(e).__name__}: {' '.join(str(e).split())})"
    return None


class ImageFolderDataset(_FileImages):
    """A class-per-folder tree: ``root/[split/]<class>/**/*.jpg`` (RAF-DB, CK+48, KDEF, AffectNet exports).

    Args:
        root: the tree's root folder.
        split: optional sub-folder (``'train'``, ``'val'``, ``'test'`` or any folder name) that holds
            the class folders.
        label_scheme: ``'auto'`` (folder names matched against :data:`fer.labels.NAME_SYNONYMS`,
            e.g. ``happy``, ``HA``, ``surprised``), a numeric scheme for numbered folders
            (``'rafdb'`` 1-7, ``'affectnet'`` 0-7, ``'fer2013'`` 0-6, ``'canonical'`` 0-6), or a
            mapping ``folder name -> expression name or None``.
        image_size: side of returned images.
        check_images: verify each file's header and structure while indexing (cheap; a full
            decode happens in :meth:`preload`).

    Folders of classes outside the seven (``contempt``) and unreadable images are reported and
    skipped; a folder name that is not a known class raises ``ValueError``.
    """

    name = "folder"

    def __init__(self, root: str | Path, split: str | None = None,
                 label_scheme: str | Mapping[str, str | None] = "auto", image_size: int | None = None,
                 check_images: bool = True) -> None:
        super().__init__(image_size)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such folder")
        base = root
        if split is not None:
            cands = [root / s for s in (split, *_SPLIT_DIRS.get(split, ()))]
            found = [c for c in cands if c.is_dir()]
            if not found:
                raise FileNotFoundError(f"{root}: no '{split}' folder")
            base = found[0]
        class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise ValueError(f"{base}: no class folders")
        mapping = self._class_mapping(base, [d.name for d in class_dirs], label_scheme)
        self.paths = []
        self.class_dirs: list[str] = []  # the class folder of each sample (sequence grouping)
        labels: list[int] = []
        for d in class_dirs:
            files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            target = mapping[d.name]
            for p in files:
                if target is None:
                    self.report.add(str(p), None, f"class folder '{d.name}' is not one of the seven basic expressions")
                    continue
                if check_images:
                    bad = _check_image(p)
                    if bad is not None:
                        self.report.add(str(p), None, bad)
                        continue
                self.paths.append(str(p))
                self.class_dirs.append(str(d))
                labels.append(target)
        n = len(self.paths)
        self.labels = np.asarray(labels, np.int64)
        self.identities = -np.ones(n, np.int64)
        self.sources = list(self.paths)
        self.true_pose = np.full((n, 3), np.nan, np.float32)
        self._finish()

    def _subset_extra(self, keep: np.ndarray) -> None:
        super()._subset_extra(keep)
        self.class_dirs = [self.class_dirs[int(k)] for k in keep]

    @staticmethod
    def _class_mapping(base: Path, names: list[str],
                       scheme: str | Mapping[str, str | None]) -> dict[str, int | None]:
        if isinstance(scheme, Mapping):
            out: dict[str, int | None] = {}
            for n in names:
                if n not in scheme:
                    raise ValueError(f"{base / n}: folder not in the given label mapping")
                v = scheme[n]
                out[n] = None if v is None else canonical_index(v)
            return out
        if scheme == "auto":
            unknown = [n for n in names if n.strip().lower() not in NAME_SYNONYMS]
            if unknown and all(n.isdigit() for n in names):
                raise ValueError(f"{base}: numbered class folders ({', '.join(names)}); pass a label scheme "
                                 "('rafdb' 1-7, 'affectnet' 0-7, 'fer2013' 0-6, 'canonical' 0-6)")
            if unknown:
                splits = [n for n in unknown if any(n in v for v in _SPLIT_DIRS.values())]
                hint = f" (split folders? pass split='{splits[0]}')" if splits else ""
                raise ValueError(f"{base}: folders {', '.join(unknown)} are not expression names{hint}")
            return {n: canonical_index(n) for n in names}
        table = scheme_mapping(scheme)
        out = {}
        for n in names:
            if not n.isdigit() or int(n) not in table:
                raise ValueError(f"{base / n}: not a label of the '{scheme}' scheme")
            out[n] = table[int(n)]
        return out


class Fer2013Dataset(FerDataset):
    """The FER2013 csv: header ``emotion,pixels,Usage`` (``Usage`` optional), 48 x 48 grey images.

    Args:
        path: the csv file.
        split: ``'train'`` (Training), ``'val'`` (PublicTest), ``'test'`` (PrivateTest) or None (all).
        image_size: side of returned images (grey replicated to RGB).

    Bad rows (wrong field count, non-integer or out-of-range emotion, not 2304 pixel values in
    0..255, unknown Usage) are reported with the csv line number and skipped.
    """

    name = "fer2013"

    def __init__(self, path: str | Path, split: str | None = None, image_size: int | None = None) -> None:
        super().__init__(image_size)
        path = Path(path)
        if split is not None and split not in FER2013_SPLITS:
            raise ValueError(f"split must be one of {', '.join(FER2013_SPLITS)} or None, got {split!r}")
        want = FER2013_SPLITS.get(split) if split else None
        table = scheme_mapping("fer2013")
        pixels: list[np.ndarray] = []
        labels: list[int] = []
        self.sources = []
        src = str(path)
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ValueError(f"{path}: empty file") from None
            if header[:2] != ["emotion", "pixels"]:
                raise ValueError(f"{path}: not a FER2013 csv (header {','.join(header)!r}, "
                                 "expected 'emotion,pixels[,Usage]')")
            has_usage = len(header) >= 3 and header[2] == "Usage"
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    self.report.add(src, line, f"{len(row)} fields, expected {len(header)}")
                    continue
                if has_usage:
                    usage = row[2].strip()
                    if usage not in FER2013_SPLITS.values():
                        self.report.add(src, line, f"unknown Usage {usage!r}")
                        continue
                    if want is not None and usage != want:
                        continue
                elif want is not None:
                    raise ValueError(f"{path}: no Usage column, cannot select split '{split}'")
                try:
                    emo = int(row[0])
                except ValueError:
                    self.report.add(src, line, f"emotion {row[0]!r} is not an integer")
                    continue
                if emo not in table:
                    self.report.add(src, line, f"emotion {emo} outside 0..6")
                    continue
                try:
                    px = np.array(row[1].split(), dtype=np.int64)
                except ValueError:
                    self.report.add(src, line, "pixels are not integers")
                    continue
                if px.size != 48 * 48:
                    self.report.add(src, line, f"{px.size} pixel values, expected 2304 (48 x 48)")
                    continue
                if px.min() < 0 or px.max() > 255:
                    self.report.add(src, line, "pixel values outside 0..255")
                    continue
                pixels.append(px.astype(np.uint8).reshape(48, 48))
                labels.append(table[emo])  # type: ignore[arg-type]
                self.sources.append(f"{src}:{line}")
        n = len(labels)
        self.pixels = np.stack(pixels) if pixels else np.zeros((0, 48, 48), np.uint8)
        self.labels = np.asarray(labels, np.int64)
        self.identities = -np.ones(n, np.int64)
        self.true_pose = np.full((n, 3), np.nan, np.float32)
        self._finish()

    def _decode(self, i: int) -> np.ndarray:
        return np.repeat(self.pixels[i][..., None], 3, -1)

    def content_key(self, i: int) -> str:
        return hashlib.sha256(self.pixels[i].tobytes()).hexdigest()

    def _subset_extra(self, keep: np.ndarray) -> None:
        self.pixels = self.pixels[keep]


class RafDbDataset(_FileImages):
    """RAF-DB basic: ``EmoLabel/list_patition_label.txt`` lines ``train_00001.jpg 5`` (labels 1-7).

    Args:
        root: the RAF-DB ``basic`` folder, or the label file itself.
        split: ``'train'``, ``'test'`` (by the file-name prefix) or None (all).
        variant: ``'aligned'`` (``Image/aligned/train_00001_aligned.jpg``, 100 x 100) or
            ``'original'`` (``Image/original/train_00001.jpg``).
        image_size: side of returned images.
        check_images: verify each image's header and structure while indexing.

    Rows with a bad label, a malformed line or a missing/unreadable image are reported with the
    label file's line number and skipped.
    """

    name = "rafdb"

    def __init__(self, root: str | Path, split: str | None = None, variant: str = "aligned",
                 image_size: int | None = None, check_images: bool = True) -> None:
        super().__init__(image_size)
        root = Path(root)
        if split not in (None, "train", "test"):
            raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
        if variant not in ("aligned", "original"):
            raise ValueError(f"variant must be 'aligned' or 'original', got {variant!r}")
        label_file = self.find_label_file(root)
        base = label_file.parent.parent if label_file.parent.name == "EmoLabel" else label_file.parent
        cands = [base / "Image" / variant, base / variant, base / "Image", base]
        image_dir = next((c for c in cands if c.is_dir()), base)
        table = scheme_mapping("rafdb")
        self.paths = []
        labels: list[int] = []
        src = str(label_file)
        with open(label_file, encoding="utf-8-sig") as f:
            for line_no, text in enumerate(f, 1):
                parts = text.split()
                if not parts:
                    continue
                if len(parts) != 2:
                    self.report.add(src, line_no, f"expected '<image> <label>', got {text.strip()!r}")
                    continue
                name, lab = parts
                if split is not None and not name.startswith(f"{split}_"):
                    continue
                try:
                    value = int(lab)
                except ValueError:
                    self.report.add(src, line_no, f"label {lab!r} is not an integer")
                    continue
                if value not in table:
                    self.report.add(src, line_no, f"label {value} outside 1..7")
                    continue
                stem, ext = Path(name).stem, Path(name).suffix
                fname = f"{stem}_aligned{ext}" if variant == "aligned" else name
                p = image_dir / fname
                if not p.is_file() and (image_dir / name).is_file():
                    p = image_dir / name
                if not p.is_file():
                    self.report.add(src, line_no, f"image {p} not found")
                    continue
                if check_images:
                    bad = _check_image(p)
                    if bad is not None:
                        self.report.add(src, line_no, f"{p}: {bad}")
                        continue
                self.paths.append(str(p))
                labels.append(table[value])  # type: ignore[arg-type]
        n = len(self.paths)
        self.labels = np.asarray(labels, np.int64)
        self.identities = -np.ones(n, np.int64)
        self.sources = list(self.paths)
        self.true_pose = np.full((n, 3), np.nan, np.float32)
        self._finish()

    @staticmethod
    def find_label_file(root: Path) -> Path:
        """The label file at ``root`` (a file) or under ``root/EmoLabel`` / ``root``."""
        if root.is_file():
            return root
        for c in (root / "EmoLabel" / RAFDB_LABEL_FILE, root / RAFDB_LABEL_FILE):
            if c.is_file():
                return c
        raise FileNotFoundError(f"{root}: no {RAFDB_LABEL_FILE} (looked in EmoLabel/ and the folder itself)")
