"""Atomic file writes: write to a temporary file in the target folder, then ``os.replace``.

A crash or an interrupted batch never leaves a half-written file under the final name, so a
resumed run can trust whatever it finds. Temporary files are named
``.<final name>.f3dtmp-<random><suffix>`` (e.g. ``.face.png.f3dtmp-k2j4x1.png``): a process killed
with SIGKILL cannot remove its own, and :func:`clean_temp_files` removes exactly the files of that
pattern (``face3dkit reconstruct`` does it in each output folder it works in).

This is the library's one writer of files (model files, reconstruction outputs, FER run folders,
caches, images): :func:`atomic_path` for writers that take a path (``np.savez``, ``torch.save``,
``savemat``, Pillow), :func:`atomic_open` / :func:`atomic_write` for writers that take a file
object, :func:`atomic_write_bytes` / :func:`atomic_write_text` for whole contents. A killed
process leaves the old file or the new one; with ``durable=True`` (model files) the data is also
flushed to disk before the rename, so a power loss does too. A new file gets ``0o666 & ~umask``, a
replaced one keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["TEMP_MARK", "atomic_open", "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "clean_temp_files", "is_temp_name", "temp_prefix"]

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


def _new_file_mode(path: Path) -> int:
    """Mode for a file written at ``path``: keep an existing file's, else 0o666 & ~umask."""
    with contextlib.suppress(OSError):
        return os.stat(path).st_mode & 0o7777
    umask = 0o022
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
                break
    return 0o666 & ~umask


def _prepare(path: str | os.PathLike, parents: bool) -> Path:
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: directory {path.parent} does not exist")
    return path


def _commit(tmp: str, path: Path, durable: bool) -> None:
    """(fsync ``tmp``,) give it its final mode and rename it to ``path``."""
    if durable:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.chmod(tmp, _new_file_mode(path))
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None, parents: bool = True,
                durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error it is
    renamed to ``path``; on an error it is removed and ``path`` is untouched.

    Args:
        path: the final file.
        suffix: suffix of the temporary name (some writers pick the format from it); default:
            ``path``'s own suffix.
        parents: create missing parent folders (else a missing folder is a ``FileNotFoundError``).
        durable: fsync the data before the rename.
    """
    path = _prepare(path, parents)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=suffix or path.suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        _commit(tmp, path, durable)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", parents: bool = True, durable: bool = False,
                **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing (``mode`` ``'wb'`` or ``'w'``; ``kwargs``
    go to :func:`open`, e.g. ``newline=''`` for csv); it replaces ``path`` when the block ends
    without an error (see :func:`atomic_path`)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes a new file: mode 'wb' or 'w', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path, parents=parents, durable=durable) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], parents: bool = True,
                 durable: bool = False) -> Path:
    """Call ``write(f)`` on a binary file that replaces ``path`` once it returns; returns ``path``."""
    with atomic_open(path, "wb", parents=parents, durable=durable) as f:
        write(f)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path, parents=parents) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, parents: bool = True) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"), parents)
