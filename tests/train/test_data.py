"""Tests for train.data_arrays (torch-free readers) and train.data (in-memory torch datasets)."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import featherdeploy.train.data_arrays as data_arrays
from featherdeploy.train.data import (
    AugmentSpec,
    InMemoryImageDataset,
    build_datasets,
    iterate_batches,
)
from featherdeploy.train.data_arrays import (
    DatasetError,
    DatasetFormatError,
    DatasetNotFoundError,
    dataset_info,
    load_test_arrays,
    read_cifar_pickle,
    read_idx,
    resolve_fashion_mnist_dir,
    synthetic_arrays,
)
from tests.conftest import TINY_CIFAR_PER_BATCH, TINY_FMNIST_TEST, TINY_FMNIST_TRAIN

# float32 normalisation computed two ways (x * scale + shift vs (x / 255 - mean) / std).
NORMALIZE_ATOL = 1e-5
SYNTHETIC_MIN_ACCURACY = 0.6  # chance is 0.25 with 4 classes


@pytest.fixture
def no_system_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the Debian dataset location at an empty folder so 'missing' can be tested."""
    empty = tmp_path / "no-such-system-dir"
    monkeypatch.setattr(data_arrays, "SYSTEM_FASHION_MNIST_DIR", empty)
    return empty


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_read_idx_round_trips(idx_writer, tmp_path: Path, compress: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    ints = np.array([1, -5, 70_000], dtype=np.int32)
    assert np.array_equal(read_idx(idx_writer(tmp_path / "a", images, compress)), images)
    decoded = read_idx(idx_writer(tmp_path / "b", ints, compress))
    assert decoded.dtype == np.int32 and np.array_equal(decoded, ints)


def test_read_idx_truncated_payload_is_clear_error(idx_writer, tmp_path: Path) -> None:
    path = idx_writer(tmp_path / "full", np.zeros((3, 28, 28), np.uint8), compress=False)
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(path.read_bytes()[:-10]))
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_idx(truncated)


def test_read_idx_truncated_gzip_is_clear_error(idx_writer, tmp_path: Path) -> None:
    path = idx_writer(tmp_path / "full.gz", np.zeros((50, 28, 28), np.uint8))
    cut = tmp_path / "cut.gz"
    cut.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetFormatError, match="gzip"):
        read_idx(cut)


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x08", b"PK\x03\x04rest",
                                     b"\x00\x00\x08\x03\x00"])
def test_read_idx_rejects_bad_headers(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad"
    path.write_bytes(payload)
    with pytest.raises(DatasetFormatError, match="IDX"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nothing.gz"):
        read_idx(tmp_path / "nothing.gz")


# ---------------------------------------------------------------- Fashion-MNIST

def test_resolve_fashion_mnist_prefers_data_dir(tiny_fashion_mnist_dir: Path) -> None:
    assert resolve_fashion_mnist_dir(tiny_fashion_mnist_dir) == tiny_fashion_mnist_dir


def test_resolve_fashion_mnist_finds_torchvision_layout(tiny_fashion_mnist_dir: Path,
                                                        tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "FashionMNIST").mkdir(parents=True)
    tiny_fashion_mnist_dir.rename(root / "FashionMNIST" / "raw")
    assert resolve_fashion_mnist_dir(root) == root / "FashionMNIST" / "raw"


def test_resolve_fashion_mnist_none_when_missing(no_system_fashion_mnist: Path,
                                                 tmp_path: Path) -> None:
    assert resolve_fashion_mnist_dir(tmp_path) is None
    assert resolve_fashion_mnist_dir(None) is None


def test_load_test_arrays_fashion_mnist(tiny_fashion_mnist_dir: Path) -> None:
    x, y = load_test_arrays("fashion-mnist", tiny_fashion_mnist_dir)
    raw = read_idx(tiny_fashion_mnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(tiny_fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert x.shape == (TINY_FMNIST_TEST, 1, 28, 28) and x.dtype == np.float32
    assert y.dtype == np.int64 and np.array_equal(y, labels)
    np.testing.assert_allclose(x[:, 0], (raw / 255.0 - 0.2860) / 0.3530, atol=NORMALIZE_ATOL)
    x_limited, y_limited = load_test_arrays("fashion-mnist", tiny_fashion_mnist_dir, limit=3)
    assert x_limited.shape[0] == 3 and np.array_equal(y_limited, labels[:3])


def test_missing_fashion_mnist_says_how_to_get_it(no_system_fashion_mnist: Path,
                                                  tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_test_arrays("fashion-mnist", tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path) in message and "t10k-images-idx3-ubyte" in message


def test_build_datasets_missing_fashion_mnist_without_download(no_system_fashion_mnist: Path,
                                                               tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="apt-get install"):
        build_datasets("fashion-mnist", tmp_path, download=False)


def test_failed_download_becomes_dataset_not_found(no_system_fashion_mnist: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(root: str, **kwargs: object) -> None:
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True)  # as torchvision does
        raise OSError("network is\nunreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    data_dir = tmp_path / "new"
    with pytest.raises(DatasetNotFoundError, match="download failed: network is unreachable"):
        build_datasets("fashion-mnist", data_dir)
    assert not data_dir.exists()  # the failed attempt leaves no empty folders


def test_cifar_is_never_downloaded_implicitly(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("CIFAR download attempted")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", forbidden)
    with pytest.raises(DatasetNotFoundError, match="cifar-10-python.tar.gz"):
        build_datasets("cifar10", tmp_path)


def test_build_datasets_fashion_mnist(tiny_fashion_mnist_dir: Path) -> None:
    train_ds, test_ds, info = build_datasets("fashion-mnist", tiny_fashion_mnist_dir)
    assert (len(train_ds), len(test_ds)) == (TINY_FMNIST_TRAIN, TINY_FMNIST_TEST)
    assert info == dataset_info("fashion-mnist")
    image, label = train_ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert isinstance(label, int)


# ---------------------------------------------------------------- CIFAR pickles

@pytest.mark.parametrize("variant, train, batches", [("cifar10", True, 5), ("cifar10", False, 1),
                                                     ("cifar100", True, 1), ("cifar100", False, 1)])
def test_read_cifar_pickle_layout(cifar_writer, tmp_path: Path, variant: str, train: bool,
                                  batches: int) -> None:
    folder = cifar_writer(tmp_path, variant)
    images, labels = read_cifar_pickle(tmp_path, train, variant)  # the parent folder works too
    assert images.shape == (batches * TINY_CIFAR_PER_BATCH, 32, 32, 3)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    first_file = sorted(p for p in folder.iterdir() if ("test" in p.name) != train)[0]
    batch = pickle.loads(first_file.read_bytes(), encoding="bytes")
    key = b"labels" if variant == "cifar10" else b"fine_labels"
    assert labels[:TINY_CIFAR_PER_BATCH].tolist() == batch[key]
    data = batch[b"data"]
    # Row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    for channel in range(3):
        plane = data[1, channel * 1024:(channel + 1) * 1024].reshape(32, 32)
        assert np.array_equal(images[1, :, :, channel], plane)


def test_read_cifar_pickle_refuses_code_globals(cifar_writer, tmp_path: Path) -> None:
    folder = cifar_writer(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": print}, protocol=2))
    with pytest.raises(DatasetFormatError, match="refusing"):
        read_cifar_pickle(folder, False, "cifar10")


def test_read_cifar_pickle_wrong_shape(cifar_writer, tmp_path: Path) -> None:
    folder = cifar_writer(tmp_path, "cifar100")
    bad = {b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}
    (folder / "test").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DatasetFormatError, match="3072"):
        read_cifar_pickle(folder, False, "cifar100")


def test_missing_cifar_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_test_arrays("cifar100", tmp_path)
    message = str(info.value)
    assert "cifar-100-python" in message and "cifar-100-python.tar.gz" in message
    assert "--data-dir" in message


def test_cifar_load_test_arrays_is_nchw(cifar_writer, tmp_path: Path) -> None:
    cifar_writer(tmp_path, "cifar10")
    x, y = load_test_arrays("cifar10", tmp_path)
    nhwc, labels = read_cifar_pickle(tmp_path, False, "cifar10")
    mean, std = np.array(data_arrays.CIFAR_MEAN), np.array(data_arrays.CIFAR_STD)
    assert x.shape == (TINY_CIFAR_PER_BATCH, 3, 32, 32) and np.array_equal(y, labels)
    expected = ((nhwc / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, expected, atol=NORMALIZE_ATOL)


# ---------------------------------------------------------------- metadata

def test_dataset_info_values() -> None:
    cifar = dataset_info("cifar100")
    assert (cifar.in_channels, cifar.image_size, cifar.num_classes) == (3, 32, 100)
    assert cifar.std == (0.2023, 0.1994, 0.2010)
    assert dataset_info("cifar10").num_classes == 10
    assert dataset_info("fashion-mnist").input_shape == (1, 28, 28)
    with pytest.raises(DatasetError, match="fashion-mnist"):
        dataset_info("mnist")


def test_imagefolder_counts_classes_and_rejects_arrays(tmp_path: Path) -> None:
    for name in ("cat", "dog", "eel"):
        (tmp_path / "train" / name).mkdir(parents=True)
    assert dataset_info("imagefolder", tmp_path).num_classes == 3
    with pytest.raises(DatasetNotFoundError):
        dataset_info("imagefolder", tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="build_datasets"):
        load_test_arrays("imagefolder", tmp_path)


def test_build_imagefolder(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for index, name in enumerate(("a", "b")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            Image.new("RGB", (40, 30), (index * 200, 10, 10)).save(folder / "0.png")
    train_ds, test_ds, info = build_datasets("imagefolder", tmp_path)
    assert info.num_classes == 2 and len(train_ds) == 2 and len(test_ds) == 2
    image, label = test_ds[1]
    assert image.shape == (3, 224, 224) and label == 1


def test_data_arrays_does_not_import_torch() -> None:
    code = "import sys, featherdeploy.train.data_arrays; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_per_seed() -> None:
    x1, y1 = synthetic_arrays(True, seed=3)
    x2, y2 = synthetic_arrays(True, seed=3)
    x3, _ = synthetic_arrays(True, seed=4)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.shape == (512, 1, 12, 12) and x1.dtype == np.uint8
    test_x, test_y = synthetic_arrays(False, seed=3)
    assert test_x.shape == (256, 1, 12, 12)
    assert set(np.unique(y1)) == set(range(4)) and set(np.unique(test_y)) == set(range(4))


@pytest.fixture
def one_thread():
    """Tiny tensors train faster on one thread than on a shared, busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_is_learnable_by_a_small_cnn(one_thread: None) -> None:
    torch.manual_seed(0)
    train_ds, test_ds, info = build_datasets("synthetic", None)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, info.num_classes))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        for images, labels in iterate_batches(train_ds, 32, shuffle=True, generator=generator):
            loss = nn.functional.cross_entropy(net(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    images, labels = test_ds.batch(torch.arange(len(test_ds)))
    with torch.no_grad():
        accuracy = (net(images).argmax(1) == labels).float().mean().item()
    assert accuracy > SYNTHETIC_MIN_ACCURACY


# ---------------------------------------------------------------- augmentation and loading

def tiny_dataset(augment: AugmentSpec | None, count: int = 6) -> InMemoryImageDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(count) % 10
    return InMemoryImageDataset(images, labels, dataset_info("cifar10"), augment)


def candidate_views(image: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop (and its mirror) of the zero-padded image, by plain slicing."""
    _, h, w = image.shape
    padded = nn.functional.pad(image, (pad, pad, pad, pad))
    crops = [padded[:, top:top + h, left:left + w]
             for top in range(2 * pad + 1) for left in range(2 * pad + 1)]
    return crops + [crop.flip(2) for crop in crops]


def test_augment_batch_is_a_padded_crop_or_its_mirror() -> None:
    dataset = tiny_dataset(AugmentSpec(pad=2, flip=True))
    generator = torch.Generator().manual_seed(1)
    out = dataset.augment_batch(dataset.images, generator)
    assert out.shape == dataset.images.shape and out.dtype == torch.float32
    for image, result in zip(dataset.images, out, strict=True):
        views = [dataset.normalize_batch(v.unsqueeze(0))[0] for v in candidate_views(image, 2)]
        assert any(torch.equal(result, view) for view in views)


def test_augment_without_pad_or_flip_is_normalize_only() -> None:
    dataset = tiny_dataset(AugmentSpec(pad=0, flip=False))
    out = dataset.augment_batch(dataset.images)
    mean = torch.tensor(dataset.info.mean).view(1, 3, 1, 1)
    std = torch.tensor(dataset.info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, (dataset.images / 255.0 - mean) / std, atol=NORMALIZE_ATOL,
                               rtol=0)


def test_augmentation_is_reproducible_and_random() -> None:
    dataset = tiny_dataset(AugmentSpec(pad=4, flip=True), count=32)
    first = dataset.augment_batch(dataset.images, torch.Generator().manual_seed(5))
    second = dataset.augment_batch(dataset.images, torch.Generator().manual_seed(5))
    third = dataset.augment_batch(dataset.images, torch.Generator().manual_seed(6))
    assert torch.equal(first, second) and not torch.equal(first, third)
    torch.manual_seed(9)
    global_first = dataset[3][0]
    torch.manual_seed(9)
    assert torch.equal(global_first, dataset[3][0])


def test_eval_dataset_is_not_augmented() -> None:
    dataset = tiny_dataset(None)
    assert torch.equal(dataset[2][0], dataset.normalize_batch(dataset.images[2:3])[0])
    assert torch.equal(dataset[2][0], dataset[2][0])


def test_dataloader_with_distributed_sampler() -> None:
    dataset = tiny_dataset(None, count=10)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=0)
    indices = torch.tensor(list(sampler))
    images, labels = next(iter(loader))
    assert images.shape == (3, 3, 8, 8) and labels.dtype == torch.int64
    assert torch.equal(labels, dataset.labels[indices[:3]])
    assert torch.equal(images, dataset.normalize_batch(dataset.images[indices[:3]]))
    assert sum(batch[1].numel() for batch in loader) == 5


def test_iterate_batches_covers_every_sample_once() -> None:
    dataset = tiny_dataset(AugmentSpec(pad=1, flip=True), count=10)
    generator = torch.Generator().manual_seed(0)
    batches = list(iterate_batches(dataset, 4, shuffle=True, generator=generator))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    seen = torch.cat([labels for _, labels in batches]).sort().values
    assert torch.equal(seen, dataset.labels.sort().values)
    dropped = list(iterate_batches(dataset, 4, drop_last=True))
    assert [len(labels) for _, labels in dropped] == [4, 4]
    chosen = list(iterate_batches(dataset, 8, indices=[7, 1]))
    assert torch.equal(chosen[0][1], dataset.labels[[7, 1]])


def test_in_memory_dataset_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        InMemoryImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64),
                             dataset_info("synthetic"), None)


def test_given_data_dir_never_falls_back_to_the_system_copy(
        tiny_fashion_mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_arrays, "SYSTEM_FASHION_MNIST_DIR", tiny_fashion_mnist_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_fashion_mnist_dir(None) == tiny_fashion_mnist_dir  # no --data-dir: system
    assert resolve_fashion_mnist_dir(empty) is None
    with pytest.raises(DatasetNotFoundError) as info:
        load_test_arrays("fashion-mnist", empty)
    message = str(info.value)
    assert f"in {empty}, {empty}/FashionMNIST/raw;" in message
    assert "t10k-images-idx3-ubyte.gz" in message and str(tiny_fashion_mnist_dir) not in message
    with pytest.raises(DatasetNotFoundError, match=f"in {empty}"):
        build_datasets("fashion-mnist", empty, download=False)
