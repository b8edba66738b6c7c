"""Errors, constants and small helpers shared by the zoo modules (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

__all__ = ["ZooError", "ONNX_IR_VERSION", "DEFAULT_OPSET", "DEFAULT_SPARSITY",
           "atomic_write_bytes", "sha256_bytes", "sha256_file", "pruned_filename",
           "dense_filename", "check_sparsity", "format_bytes"]

ONNX_IR_VERSION = 8  # ORT 1.32 reads IR <= 13; older peers (DeepSparse 1.8) read IR <= 8
DEFAULT_OPSET = 13
DEFAULT_SPARSITY = 0.9
FILE_MODE = 0o644


class ZooError(Exception):
    """A bad option or an unusable input; the CLI prints it on one line and exits with code 2."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in ``path``'s folder, fsync it, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` if it is in (0, 1), else :class:`ZooError`."""
    if not 0.0 < sparsity < 1.0:
        raise ZooError(f"--sparsity must be in (0, 1), got {sparsity}")
    return sparsity


def format_bytes(count: int) -> str:
    """``12.3 MB``, or ``28.8 kB`` below 0.1 MB."""
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"


def dense_filename(name: str) -> str:
    """``NAME.onnx``."""
    return f"{name}.onnx"


def pruned_filename(name: str, sparsity: float) -> str:
    """``NAME.pruned90.onnx`` for sparsity 0.9 (``pruned87.5`` for 0.875)."""
    return f"{name}.pruned{round(sparsity * 100, 2):g}.onnx"
