"""Input/output of photos: robust image reading and listing of image inputs.

- :func:`load_image` — any image file -> (H, W, 3) uint8 RGB (EXIF orientation applied, alpha
  composited on white, 16-bit scaled); errors are :class:`ImageReadError` (one line).
- :func:`list_images` — a folder, an image or a text list of images -> sorted image paths;
  :func:`scan_images` also reports what it left out (broken links, unreadable sub-folders).
- :func:`save_image` — the one image writer (atomic); :mod:`face3dkit.io.atomic` — the one file
  writer (temporary file + rename) every module writes through.
- :func:`file_sha256` / :func:`tensors_sha256` — content digests, :func:`user_cache_dir` — the
  per-user cache folder (:mod:`face3dkit.io.digest`).
"""

from face3dkit.io.digest import file_sha256, tensors_sha256, user_cache_dir
from face3dkit.io.image import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ImageScan,
    list_images,
    load_image,
    save_image,
    scan_images,
    to_rgb_uint8,
)

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "ImageScan", "file_sha256", "list_images", "load_image", "save_image",
           "scan_images", "tensors_sha256", "to_rgb_uint8", "user_cache_dir"]
