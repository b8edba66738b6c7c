"""Dataset metadata and torch-free readers (numpy + stdlib only).

The runtime and benchmark code imports this module, so it must never import torch.

Formats:
- IDX (Fashion-MNIST, http://yann.lecun.com/exdb/mnist/): magic = two zero bytes, a dtype code and
  the number of dimensions, then one big-endian uint32 per dimension, then the data (big-endian).
- CIFAR "python version" (https://www.cs.toronto.edu/~kriz/cifar.html): pickled dicts with
  b"data" (N, 3072) uint8 rows (1024 R, 1024 G, 1024 B, row-major 32x32) and b"labels"
  (CIFAR-10) or b"fine_labels" (CIFAR-100). The pickles are read with an unpickler that only
  resolves the few numpy globals an array needs, so a hostile file cannot run code.
- `synthetic`: a tiny learnable dataset generated from a seed (class-dependent stripe/checker/ring
  patterns plus noise), for fast tests.

Images come out as uint8 NCHW; `normalize` maps them to float32 (x / 255 - mean) / std.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_FILES",
    "SYSTEM_FASHION_MNIST_DIR",
    "DatasetError",
    "DatasetFormatError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "load_raw_split",
    "load_test_arrays",
    "normalize",
    "read_cifar_pickle",
    "read_idx",
    "resolve_cifar_dir",
    "resolve_fashion_mnist_dir",
    "synthetic_arrays",
]

PathLike = str | os.PathLike[str]

DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "cifar10", "cifar100", "imagefolder",
                                  "synthetic")
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# (train, images?) -> file name without the optional ".gz".
FASHION_MNIST_FILES: dict[tuple[bool, bool], str] = {
    (True, True): "train-images-idx3-ubyte",
    (True, False): "train-labels-idx1-ubyte",
    (False, True): "t10k-images-idx3-ubyte",
    (False, False): "t10k-labels-idx1-ubyte",
}
# Sub-folder torchvision's FashionMNIST(download=True) writes the idx files to.
TORCHVISION_FASHION_MNIST_SUBDIR = Path("FashionMNIST") / "raw"
CIFAR_SUBDIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    ("cifar10", True): tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("cifar10", False): ("test_batch",),
    ("cifar100", True): ("train",),
    ("cifar100", False): ("test",),
}
CIFAR_LABEL_KEYS = {"cifar10": b"labels", "cifar100": b"fine_labels"}
CIFAR_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
CIFAR_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}
CIFAR_SIDE = 32
GZIP_MAGIC = b"\x1f\x8b"
# IDX dtype code -> numpy dtype (multi-byte types are big-endian on disk).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)

# Synthetic dataset: small enough to train in seconds, structured enough to be learnable.
SYNTHETIC_SIDE = 12
SYNTHETIC_CLASSES = 4
SYNTHETIC_TRAIN_SIZE = 512
SYNTHETIC_TEST_SIZE = 256
SYNTHETIC_NOISE_STD = 0.2  # in [0, 1] pixel units, before clipping
SYNTHETIC_PERIOD = 4  # stripe / checker period in pixels
# Measured on the seed-0 train split (exact values matter little: they only centre the inputs).
SYNTHETIC_MEAN = 0.56
SYNTHETIC_STD = 0.32


class DatasetError(Exception):
    """Base class of every dataset problem caused by bad input (CLIs map it to exit code 2)."""


class DatasetNotFoundError(DatasetError):
    """The dataset files are missing; the message says what was looked for, where and how to get
    them."""


class DatasetFormatError(DatasetError):
    """A dataset file exists but is truncated, corrupt or of an unexpected shape."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the normalisation need to know about a dataset."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.in_channels, self.image_size, self.image_size)


def dataset_info(name: str, data_dir: PathLike | None = None) -> DatasetInfo:
    """Metadata of dataset `name`; `imagefolder` counts its classes in `data_dir/train`."""
    if name == "fashion-mnist":
        return DatasetInfo(name, 1, 28, 10, (0.2860,), (0.3530,))
    if name in ("cifar10", "cifar100"):
        classes = 10 if name == "cifar10" else 100
        return DatasetInfo(name, 3, CIFAR_SIDE, classes, CIFAR_MEAN, CIFAR_STD)
    if name == "synthetic":
        return DatasetInfo(name, 1, SYNTHETIC_SIDE, SYNTHETIC_CLASSES, (SYNTHETIC_MEAN,),
                           (SYNTHETIC_STD,))
    if name == "imagefolder":
        return DatasetInfo(name, 3, 224, _count_imagefolder_classes(data_dir), IMAGENET_MEAN,
                           IMAGENET_STD)
    raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")


def _count_imagefolder_classes(data_dir: PathLike | None) -> int:
    """Number of class sub-folders of `data_dir/train` (the ImageFolder layout)."""
    train_dir = Path(data_dir) / "train" if data_dir is not None else None
    if train_dir is None or not train_dir.is_dir():
        raise DatasetNotFoundError(
            f"imagefolder dataset not found: looked for {train_dir or 'DATA_DIR/train'} "
            "(need --data-dir with train/<class>/*.jpg and val/<class>/*.jpg)")
    classes = [entry for entry in train_dir.iterdir() if entry.is_dir()]
    if not classes:
        raise DatasetFormatError(f"{train_dir} holds no class sub-folders")
    return len(classes)


# ---------------------------------------------------------------- IDX (Fashion-MNIST)

def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian numpy array.

    Raises DatasetNotFoundError if the file is missing and DatasetFormatError if its header is
    not IDX or its payload is shorter or longer than the header promises.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"IDX file not found: {path}") from error
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as error:
            raise DatasetFormatError(f"{path}: corrupt or truncated gzip data ({error})") from error
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Decode the IDX header and payload of `raw` (already decompressed)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    dtype, ndim = IDX_DTYPES[raw[2]], raw[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header_size:
        raise DatasetFormatError(f"{path}: truncated IDX header ({ndim} dims, {len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    payload = len(raw) - header_size
    if payload != expected:
        raise DatasetFormatError(
            f"{path}: IDX payload has {payload} bytes but shape {shape} needs {expected} "
            "(truncated or corrupt file)")
    data = np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    """`folder/stem.gz` or `folder/stem`, whichever exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _fashion_mnist_candidates(data_dir: PathLike | None) -> list[Path]:
    """Folders searched for the idx files, in order of preference."""
    if data_dir is None:
        return [SYSTEM_FASHION_MNIST_DIR]
    # A given folder is what the user wants read: never silently another copy instead.
    return [Path(data_dir), Path(data_dir) / TORCHVISION_FASHION_MNIST_SUBDIR]


def resolve_fashion_mnist_dir(data_dir: PathLike | None) -> Path | None:
    """The first folder holding all four Fashion-MNIST idx files (`.gz` or raw), or None.

    Searched: `data_dir` and `data_dir/FashionMNIST/raw` (torchvision's download layout) when
    `data_dir` is given, else the Debian package's `/usr/share/datasets/fashion-mnist`.
    """
    for folder in _fashion_mnist_candidates(data_dir):
        if all(_find_idx_file(folder, stem) for stem in FASHION_MNIST_FILES.values()):
            return folder
    return None


def fashion_mnist_not_found(data_dir: PathLike | None) -> DatasetNotFoundError:
    """The one error message for a missing Fashion-MNIST, with how to get it."""
    where = ", ".join(str(folder) for folder in _fashion_mnist_candidates(data_dir))
    files = ", ".join(f"{stem}.gz" for stem in FASHION_MNIST_FILES.values())
    how = ("put the four idx files (.gz or raw) there, or leave out --data-dir to use the "
           "system copy ('sudo apt-get install dataset-fashion-mnist')" if data_dir is not None
           else "install it with 'sudo apt-get install dataset-fashion-mnist', or put the four "
           "idx files in --data-dir")
    return DatasetNotFoundError(f"Fashion-MNIST not found: looked for {files} in {where}; {how}.")


def _read_fashion_mnist(folder: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 28, 28) images and int64 labels of one split."""
    images = read_idx(_find_idx_file(folder, FASHION_MNIST_FILES[(train, True)]))
    labels = read_idx(_find_idx_file(folder, FASHION_MNIST_FILES[(train, False)]))
    if images.dtype != np.uint8 or images.ndim != 3 or labels.ndim != 1:
        raise DatasetFormatError(f"{folder}: unexpected Fashion-MNIST shapes {images.shape}, "
                                 f"{labels.shape} (want uint8 (N, 28, 28) and (N,))")
    return images[:, None, :, :], labels.astype(np.int64)


# ---------------------------------------------------------------- CIFAR python pickles

class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled numpy array needs."""

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> dict:
    """Unpickle one CIFAR batch file (bytes keys, as written by Python 2)."""
    try:
        with path.open("rb") as handle:
            batch = _ArrayOnlyUnpickler(io.BufferedReader(handle), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError) as error:
        raise DatasetFormatError(f"{path}: not a readable CIFAR pickle ({error})") from error
    if not isinstance(batch, dict):
        raise DatasetFormatError(f"{path}: expected a dict, got {type(batch).__name__}")
    return batch


def resolve_cifar_dir(data_dir: PathLike | None, variant: str) -> Path | None:
    """The folder holding the CIFAR pickles: `data_dir/<standard subdir>` or `data_dir` itself."""
    _check_cifar_variant(variant)
    if data_dir is None:
        return None
    for folder in (Path(data_dir) / CIFAR_SUBDIRS[variant], Path(data_dir)):
        needed = CIFAR_FILES[(variant, True)] + CIFAR_FILES[(variant, False)]
        if all((folder / name).is_file() for name in needed):
            return folder
    return None


def cifar_not_found(data_dir: PathLike | None, variant: str) -> DatasetNotFoundError:
    """The one error message for a missing CIFAR folder, with how to get it."""
    needed = ", ".join(CIFAR_FILES[(variant, True)] + CIFAR_FILES[(variant, False)])
    where = f"{data_dir}/{CIFAR_SUBDIRS[variant]}" if data_dir is not None else "(no --data-dir)"
    return DatasetNotFoundError(
        f"{CIFAR_TITLES[variant]} not found: looked for {needed} in {where}. Download the python "
        f"version ({CIFAR_URLS[variant]}) and extract it into --data-dir.")


def _check_cifar_variant(variant: str) -> None:
    if variant not in CIFAR_SUBDIRS:
        raise DatasetError(f"unknown CIFAR variant {variant!r}; valid: cifar10, cifar100")


def read_cifar_pickle(folder: PathLike, train: bool,
                      variant: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and int64 labels of a CIFAR split from its pickle folder.

    `folder` is the extracted `cifar-10-batches-py` / `cifar-100-python` folder or its parent.
    Batches are concatenated in file order (data_batch_1..5 for CIFAR-10 train).
    """
    _check_cifar_variant(variant)
    resolved = resolve_cifar_dir(folder, variant)
    if resolved is None:
        raise cifar_not_found(folder, variant)
    images, labels = [], []
    for name in CIFAR_FILES[(variant, train)]:
        batch_images, batch_labels = _cifar_batch_arrays(resolved / name, variant)
        images.append(batch_images)
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_batch_arrays(path: Path, variant: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated NHWC uint8 images and int64 labels of one batch file."""
    batch = _load_cifar_batch(path)
    label_key = CIFAR_LABEL_KEYS[variant]
    if b"data" not in batch or label_key not in batch:
        raise DatasetFormatError(f"{path}: missing b'data' or {label_key!r} "
                                 f"(keys: {sorted(batch)})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    pixels = 3 * CIFAR_SIDE * CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != pixels:
        raise DatasetFormatError(f"{path}: data is {data.dtype} {data.shape}, "
                                 f"want uint8 (N, {pixels})")
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    images = data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)  # (N, H, W, C)
    return np.ascontiguousarray(images), labels


# ---------------------------------------------------------------- synthetic

def synthetic_arrays(train: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 1, 12, 12) images and int64 labels of the synthetic dataset.

    Class 0: horizontal stripes, 1: vertical stripes, 2: checkerboard, 3: a centred square
    ring; each with a random phase/shift and contrast, plus Gaussian noise. Train and test
    splits come from independent streams of `seed` (512 and 256 images).
    """
    count = SYNTHETIC_TRAIN_SIZE if train else SYNTHETIC_TEST_SIZE
    rng = np.random.default_rng([seed, 0 if train else 1])
    labels = rng.integers(0, SYNTHETIC_CLASSES, size=count).astype(np.int64)
    images = np.stack([_synthetic_pattern(int(label), rng) for label in labels])
    images += rng.normal(0.0, SYNTHETIC_NOISE_STD, size=images.shape)
    images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    return images[:, None, :, :], labels


def _synthetic_pattern(label: int, rng: np.random.Generator) -> np.ndarray:
    """One noise-free (12, 12) pattern in [0, 1] for class `label`."""
    rows, cols = np.indices((SYNTHETIC_SIDE, SYNTHETIC_SIDE))
    phase_r, phase_c = rng.integers(0, SYNTHETIC_PERIOD, size=2)
    half = SYNTHETIC_PERIOD // 2
    if label == 0:
        on = (rows + phase_r) % SYNTHETIC_PERIOD < half
    elif label == 1:
        on = (cols + phase_c) % SYNTHETIC_PERIOD < half
    elif label == 2:
        on = ((rows + phase_r) // half + (cols + phase_c) // half) % 2 == 0
    else:
        centre = SYNTHETIC_SIDE / 2 - 0.5 + rng.integers(-1, 2, size=2)
        radius = np.maximum(np.abs(rows - centre[0]), np.abs(cols - centre[1]))
        on = (radius > 1.5) & (radius < 3.5)
    low, high = sorted(rng.uniform(0.1, 0.9, size=2))
    high = max(high, low + 0.5)  # keep enough contrast for the pattern to survive the noise
    return np.where(on, high, low)


# ---------------------------------------------------------------- loading + normalising

def load_raw_split(name: str, data_dir: PathLike | None, *, train: bool,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NCHW images and int64 labels of one split of fashion-mnist, cifar10/100, synthetic.

    `seed` only affects `synthetic`. Raises DatasetNotFoundError with a how-to when missing.
    """
    if name == "fashion-mnist":
        folder = resolve_fashion_mnist_dir(data_dir)
        if folder is None:
            raise fashion_mnist_not_found(data_dir)
        images, labels = _read_fashion_mnist(folder, train)
    elif name in CIFAR_SUBDIRS:
        folder = resolve_cifar_dir(data_dir, name)
        if folder is None:
            raise cifar_not_found(data_dir, name)
        nhwc, labels = read_cifar_pickle(folder, train, name)
        images = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    elif name == "synthetic":
        images, labels = synthetic_arrays(train, seed)
    elif name == "imagefolder":
        raise DatasetError("imagefolder images are decoded by torchvision: use "
                           "featherdeploy.train.data.build_datasets('imagefolder', data_dir)")
    else:
        raise DatasetError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASET_NAMES)}")
    _check_labels(name, labels, images.shape[0])
    return images, labels


def _check_labels(name: str, labels: np.ndarray, count: int) -> None:
    """Labels must match the image count and lie in [0, num_classes)."""
    num_classes = dataset_info(name).num_classes
    if labels.shape != (count,):
        raise DatasetFormatError(f"{name}: {labels.shape[0]} labels for {count} images")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(f"{name}: labels outside [0, {num_classes})")


def normalize(images: np.ndarray, info: DatasetInfo) -> np.ndarray:
    """float32 (x / 255 - mean) / std per channel of uint8 NCHW images."""
    mean = np.asarray(info.mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(1, -1, 1, 1)
    return (images.astype(np.float32) / np.float32(255.0) - mean) / std


def load_test_arrays(name: str, data_dir: PathLike | None, limit: int | None = None, *,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 NCHW test images and int64 labels (the first `limit` if given)."""
    if limit is not None and limit < 1:
        raise DatasetError(f"limit must be a positive int, got {limit!r}")
    images, labels = load_raw_split(name, data_dir, train=False, seed=seed)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return normalize(images, dataset_info(name)), labels
