"""Atomic file writes: write to a temporary file in the target folder, then ``os.replace``.

A crash or an interrupted batch never leaves a half-written file under the final name, so a
resumed run can trust whatever it finds. Temporary files are named
``.<final name>.f3dtmp-<random><suffix>`` (e.g. ``.face.png.f3dtmp-k2j4x1.png``): a process killed
with SIGKILL cannot remove its own, and :func:`clean_temp_files` removes exactly the files of that
pattern (``face3dkit reconstruct`` does it in each output folder it works in).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["TEMP_MARK", "atomic_path", "atomic_write_bytes", "atomic_write_text", "clean_temp_files", "is_temp_name",
           "temp_prefix"]

#: Marker in the name of every temporary file written here: ``.<name>.f3dtmp-<random><suffix>``.
TEMP_MARK = ".f3dtmp-"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)" + re.escape(TEMP_MARK) + r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?$")


def temp_prefix(name: str) -> str:
    """``tempfile`` prefix of the temporary file for final file ``name``: ``.<name>.f3dtmp-``."""
    return f".{name}{TEMP_MARK}"


def is_temp_name(name: str, final: str | None = None) -> bool:
    """True when ``name`` is a temporary file of this module (for final name ``final`` when given)."""
    m = _TEMP_RE.match(name)
    return m is not None and (final is None or m.group("name") == final)


def clean_temp_files(folder: str | os.PathLike, finals: Iterable[str] | None = None) -> list[Path]:
    """Remove leftover temporary files (see the module docstring) directly in ``folder``.

    Args:
        folder: the folder (not searched recursively); a missing folder is fine.
        finals: only temporaries of these final file names (default: all of the pattern). Use it
            in a folder other processes write to at the same time.

    Returns:
        The files removed (only regular files matching the pattern are touched).
    """
    keep = None if finals is None else set(finals)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if m is None or (keep is not None and m.group("name") not in keep):
            continue
        try:
            if e.is_file(follow_symlinks=False):
                os.unlink(e.path)
                removed.append(Path(e.path))
        except FileNotFoundError:  # removed meanwhile
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path`` (mode 0644).

    Args:
        path: the final file.
        suffix: suffix of the temporary name (some writers pick the format from it); default:
            ``path``'s own suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))
