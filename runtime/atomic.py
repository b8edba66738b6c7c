"""Atomic file writes shared by every stage: write a temp file beside the target, fsync, rename.

A reader never sees a half-written artifact: either the old file or the complete new one.
Files get mode 0644 (``mkstemp`` alone would leave them owner-only). A target that exists and
is not a regular file (a directory, a device such as /dev/null, a FIFO) is refused: the rename
would replace it. Every failure is an OSError naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_writer", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "check_writable_target"]

FILE_MODE = 0o644


def check_writable_target(path: str | Path) -> None:
    """OSError unless ``path`` is absent or a regular file (never replace a device or folder)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        raise OSError(errno.EEXIST, "exists and is not a regular file", str(path))


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """Yield a binary handle; on success the data replaces ``path`` in one rename."""
    path = Path(path)
    check_writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
