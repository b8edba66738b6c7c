"""Shared pytest fixtures: tiny on-disk datasets written by the tests themselves; the ``--isa``
option.

Imports numpy and the stdlib only (never torch), so tests that check the torch-free runtime see an
honest `sys.modules`.

``--isa generic|avx2|avx512`` runs the suite as a CPU whose widest kernels are that variant would
(``pytest --isa avx2``, or ``PYTEST_ADDOPTS="--isa generic" make test``): every ``EngineOptions``
made with ``isa="auto"`` (the default, so also those tests construct directly, which ignore
``FEATHERDEPLOY_ISA``) gets that variant, and ``runtime.native_isa()`` /
``runtime._native.vector_floats()`` report it for "auto". ``generic`` has 4-float vectors, the
width of aarch64's NEON build; ``avx2`` 8; ``avx512`` 16. Options that name another variant keep
it. Applied before collection, so module-level choices (parametrize lists, constants) see it;
Python processes that tests start run this CPU's own variant.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# IDX dtype codes (http://yann.lecun.com/exdb/mnist/) for the dtypes the fixtures write.
_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
TINY_FMNIST_TRAIN = 6
TINY_FMNIST_TEST = 4
TINY_CIFAR_PER_BATCH = 2
FORCED_ISAS = ("generic", "avx2", "avx512")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--isa", choices=FORCED_ISAS, default=None,
                     help="run the engine's kernels as a CPU whose widest variant is this one "
                          "would (isa='auto' resolves to it)")


def pytest_configure(config: pytest.Config) -> None:
    isa = config.getoption("isa")
    if isa:
        config.add_cleanup(force_isa(isa))


def pytest_report_header(config: pytest.Config) -> str | None:
    isa = config.getoption("isa")
    return f"featherdeploy kernels: {isa} (forced by --isa)" if isa else None


def force_isa(isa: str) -> Callable[[], None]:
    """Make ``isa="auto"`` mean ``isa`` in this process (see the module docstring); returns the
    undo. Fails when this CPU cannot run ``isa``."""
    from featherdeploy.runtime import _native
    from featherdeploy.runtime.options import EngineOptions

    try:
        _native.native_isa(isa)
    except ValueError as exc:
        raise pytest.UsageError(f"--isa {isa}: {exc}") from None
    patch = pytest.MonkeyPatch()
    post_init = EngineOptions.__post_init__

    def forced_post_init(self: EngineOptions) -> None:
        post_init(self)
        if self.isa == "auto":
            object.__setattr__(self, "isa", isa)  # frozen dataclass

    patch.setattr(EngineOptions, "__post_init__", forced_post_init)
    for name in ("native_isa", "vector_floats"):
        original = getattr(_native, name)
        patch.setattr(_native, name,
                      lambda which="auto", _f=original: _f(isa if which == "auto" else which))
    return patch.undo


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode `array` as an IDX file: 0, 0, dtype code, ndim, big-endian dims, big-endian data."""
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    code = _IDX_CODES[big_endian.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + big_endian.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write `array` to `path` as IDX, gzip-compressed if `compress`."""
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture
def idx_writer() -> Callable[..., Path]:
    """`write_idx(path, array, compress=True)`."""
    return write_idx


@pytest.fixture
def tiny_fashion_mnist_dir(tmp_path: Path) -> Path:
    """A folder with the four Fashion-MNIST idx.gz files holding a few random 28x28 images."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, count in (("train", TINY_FMNIST_TRAIN), ("t10k", TINY_FMNIST_TEST)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def cifar_batch(count: int, num_classes: int, label_key: bytes, seed: int) -> dict:
    """One CIFAR-style batch dict: b"data" (count, 3072) uint8 and the label list."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, num_classes, size=count)]
    return {b"data": data, label_key: labels, b"batch_label": b"tiny"}


def write_cifar_folder(parent: Path, variant: str) -> Path:
    """Write a tiny `cifar-10-batches-py` / `cifar-100-python` folder under `parent`."""
    if variant == "cifar10":
        folder, key, classes = parent / "cifar-10-batches-py", b"labels", 10
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    else:
        folder, key, classes = parent / "cifar-100-python", b"fine_labels", 100
        names = ["train", "test"]
    folder.mkdir(parents=True)
    for seed, name in enumerate(names):
        batch = cifar_batch(TINY_CIFAR_PER_BATCH, classes, key, seed)
        # Protocol 2 with bytes keys, like the Python 2 pickles CIFAR ships.
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


@pytest.fixture
def cifar_writer() -> Callable[[Path, str], Path]:
    """`write_cifar_folder(parent, variant)` -> the written pickle folder."""
    return write_cifar_folder
