"""Atomic file writes: a file is either the old one or the complete new one, never half written.

Every file xbarlab writes (checkpoints, chips, JSON results, exported tables, reports, plots) goes through
:func:`atomic_write`: the content is written to a temporary file in the target's folder (same file system, so
the rename is atomic), flushed to disk with ``fsync``, then renamed over the target with :func:`os.replace`.
If the writer raises (or the process is interrupted by an exception such as ``KeyboardInterrupt``), the
temporary file is removed and the old target, if any, is left untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["FILE_MODE", "atomic_write", "atomic_write_text"]

FILE_MODE = 0o644
"""Permissions of a written file (``mkstemp`` would leave 0o600): owner read/write, everyone read."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file next to it, which then replaces it.

    Args:
        path: the target file; its folder is created if missing.
        write: called once with the temporary file's path (it ends in ``.tmp`` + the target's suffix, so
            writers that infer the format from the name, e.g. matplotlib's ``savefig``, see the right one).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _fsync(path: Path) -> None:
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
