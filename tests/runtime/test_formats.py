"""Tests for the packed-weights file (runtime/formats.py): encodings, round trips, refusals."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from featherdeploy.runtime.formats import (
    FORMAT_VERSION,
    ConvAttributes,
    PackFormatError,
    dense_to_sparse,
    matrix_to_weight,
    pack_weight,
    read_pack,
    smallest_index_dtype,
    weight_to_matrix,
    write_pack,
)

BLOCK_SHAPES = [(1, 1), (1, 4), (4, 1), (4, 4), (2, 3)]
DATA = Path(__file__).parent / "data"
# Written by the encoder before CSR/BSR went through scipy.sparse (commit f026f7e), with the
# dense weights it packed; pruned weights include -0.0 (a negative weight thresholded to zero).
OLD_PACK = DATA / "pack_v1.fdpack"
OLD_WEIGHTS = DATA / "pack_v1_weights.npz"
SPARSITIES = [0.0, 0.5, 0.9, 0.99, 1.0]
HEADER_MANIFEST_ALIGNMENT_BYTES = 2048  # fixed per-file cost of a one-layer pack
MATRIX_SHAPES = [(1, 1), (7, 13), (16, 144), (33, 9), (64, 64)]


def sparse_random(shape: tuple[int, ...], sparsity: float, seed: int) -> np.ndarray:
    """float32 normal values with exactly round(sparsity * numel) entries set to +0.0."""
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32)
    values[values == 0] = 1.0  # a random exact zero would skew the count
    flat = values.reshape(-1)
    flat[rng.permutation(flat.size)[: round(sparsity * flat.size)]] = 0.0
    return values


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint32)


def test_csr_of_hand_checkable_matrix() -> None:
    matrix = np.array([[0, 2, 0], [0, 0, 0], [3, 0, 4]], dtype=np.float32)
    csr = dense_to_sparse(matrix)
    assert csr.format == "csr"
    assert csr.indptr.tolist() == [0, 1, 1, 3]
    assert csr.indices.tolist() == [1, 0, 2]
    assert csr.values.reshape(-1).tolist() == [2.0, 3.0, 4.0]
    assert csr.indptr.dtype == np.int8 and csr.indices.dtype == np.int8
    assert csr.row_counts.tolist() == [1, 0, 2]
    assert csr.nbytes == 3 * 1 + 3 * 1 + 3 * 4


def test_bsr_of_hand_checkable_matrix() -> None:
    # 3x5 matrix, 2x2 blocks -> 2x3 block grid, padded to 4x6.
    matrix = np.array([[1, 0, 0, 0, 0],
                       [0, 0, 0, 0, 5],
                       [0, 0, 7, 0, 0]], dtype=np.float32)
    bsr = dense_to_sparse(matrix, (2, 2))
    assert bsr.format == "bsr" and bsr.block_grid == (2, 3)
    assert bsr.indptr.tolist() == [0, 2, 3]
    assert bsr.indices.tolist() == [0, 2, 1]
    assert bsr.values.tolist() == [[[1, 0], [0, 0]], [[0, 0], [5, 0]], [[7, 0], [0, 0]]]


def test_bsr_1x4_groups_consecutive_columns() -> None:
    matrix = np.zeros((2, 8), dtype=np.float32)
    matrix[0, 5] = 1.0
    matrix[1, 0] = 2.0
    matrix[1, 3] = 3.0
    bsr = dense_to_sparse(matrix, (1, 4))
    assert bsr.indptr.tolist() == [0, 1, 2]
    assert bsr.indices.tolist() == [1, 0]
    assert bsr.values.reshape(2, 4).tolist() == [[0, 1, 0, 0], [2, 0, 0, 3]]


@pytest.mark.parametrize("block_shape", BLOCK_SHAPES)
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_dense_sparse_dense_is_bit_exact(block_shape: tuple[int, int], sparsity: float) -> None:
    for seed, shape in enumerate(MATRIX_SHAPES):
        matrix = sparse_random(shape, sparsity, seed)
        encoded = dense_to_sparse(matrix, block_shape)
        assert np.array_equal(bits(encoded.to_dense()), bits(matrix))
        if block_shape == (1, 1):
            assert encoded.nblocks == np.count_nonzero(matrix)


def test_negative_zero_is_a_zero() -> None:
    matrix = np.array([[-0.0, 1.0]], dtype=np.float32)
    csr = dense_to_sparse(matrix)
    assert csr.nblocks == 1 and csr.indices.tolist() == [1]


@pytest.mark.parametrize("layout", ["OIHW", "OHWI"])
def test_weight_matrix_layouts_round_trip(layout: str) -> None:
    weight = sparse_random((6, 5, 3, 3), 0.5, seed=3)
    matrix = weight_to_matrix(weight, layout)
    assert matrix.shape == (6, 45)
    assert np.array_equal(matrix_to_weight(matrix, weight.shape, layout), weight)
    if layout == "OHWI":  # consecutive columns = consecutive input channels at one position
        assert np.array_equal(matrix[:, :5], weight[:, :, 0, 0])


def test_smallest_index_dtype_boundaries() -> None:
    assert smallest_index_dtype(0) == np.int8
    assert smallest_index_dtype(127) == np.int8
    assert smallest_index_dtype(128) == np.int16
    assert smallest_index_dtype(32767) == np.int16
    assert smallest_index_dtype(32768) == np.int32
    assert smallest_index_dtype(2**31) == np.int64


def test_wide_matrix_needs_int32_indices() -> None:
    matrix = np.zeros((2, 40000), dtype=np.float32)
    matrix[1, 39999] = 1.0
    csr = dense_to_sparse(matrix)
    assert csr.indices.dtype == np.int32 and csr.indptr.dtype == np.int8
    assert np.array_equal(csr.to_dense(), matrix)


def test_dense_to_sparse_refuses_nan_and_wrong_dtype() -> None:
    with pytest.raises(PackFormatError, match="NaN"):
        dense_to_sparse(np.array([[np.nan]], dtype=np.float32))
    with pytest.raises(PackFormatError, match="float32"):
        dense_to_sparse(np.zeros((2, 2), dtype=np.float64))
    with pytest.raises(PackFormatError, match="block shape"):
        dense_to_sparse(np.zeros((2, 2), dtype=np.float32), (0, 4))


@pytest.mark.parametrize("shape", [(256, 256, 3, 3), (512, 1, 3, 3), (16, 1, 3, 3),
                                   (2048, 512, 1, 1), (10, 64)])
def test_csr_at_95_percent_is_at_most_11_percent_of_dense(tmp_path: Path,
                                                          shape: tuple[int, ...]) -> None:
    weight = sparse_random(shape, 0.95, seed=7)
    layer = pack_weight("w", weight, op="Conv" if len(shape) == 4 else "Gemm")
    assert layer.csr.nbytes <= 0.11 * weight.nbytes
    assert layer.csr.indices.dtype.itemsize <= 2  # int16 (or int8) wherever it fits
    size = write_pack(tmp_path / "w.fdpack", [layer])  # the file holds what nbytes counts
    assert layer.csr.nbytes < size <= layer.csr.nbytes + HEADER_MANIFEST_ALIGNMENT_BYTES


def make_layers() -> list:
    conv = pack_weight("features.0.weight", sparse_random((8, 3, 3, 3), 0.9, 0), op="Conv",
                       block_shapes=[(1, 4), (4, 1), (4, 4)], onnx_initializer="onnx::Conv_12",
                       conv=ConvAttributes((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1))
    depthwise = pack_weight("features.1.weight", sparse_random((8, 1, 3, 3), 0.5, 1), op="Conv",
                            layout="OHWI", conv=ConvAttributes((3, 3), groups=8))
    fc = pack_weight("fc.weight", sparse_random((10, 8), 0.99, 2), op="Gemm",
                     block_shapes=[(1, 1), (4, 4)], extra={"note": "classifier"})
    return [conv, depthwise, fc]


def test_write_read_round_trip(tmp_path: Path) -> None:
    layers = make_layers()
    path = tmp_path / "weights.fdpack"
    size = write_pack(path, layers)
    assert size == path.stat().st_size
    loaded = read_pack(path)
    assert list(loaded) == [layer.fqn for layer in layers]
    for layer in layers:
        got = loaded[layer.fqn]
        assert (got.op, got.weight_shape, got.layout, got.nnz) == \
            (layer.op, layer.weight_shape, layer.layout, layer.nnz)
        assert (got.onnx_initializer, got.conv, got.extra) == \
            (layer.onnx_initializer, layer.conv, layer.extra)
        assert sorted(got.encodings) == sorted(layer.encodings)
        for shape, enc in layer.encodings.items():
            other = got.bsr(shape)
            for name in ("indptr", "indices", "values"):
                assert getattr(other, name).dtype == getattr(enc, name).dtype
                assert np.array_equal(getattr(other, name), getattr(enc, name))
        assert np.array_equal(got.to_weight(), layer.to_weight())
    assert not [p for p in tmp_path.iterdir() if p.name != "weights.fdpack"]  # no temp leftovers


def test_arrays_are_64_byte_aligned_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    write_pack(path, make_layers())
    blob = path.read_bytes()
    manifest_len = struct.unpack_from("<Q", blob, 16)[0]
    data_start = 64 + manifest_len + (-(64 + manifest_len) % 64)
    manifest = json.loads(blob[64:64 + manifest_len])
    offsets = [spec["offset"] for layer in manifest["layers"] for enc in layer["encodings"]
               for spec in enc["arrays"].values()]
    assert all((data_start + offset) % 64 == 0 for offset in offsets)


def test_reader_refuses_unknown_version(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    write_pack(path, make_layers())
    blob = bytearray(path.read_bytes())
    struct.pack_into("<I", blob, 8, FORMAT_VERSION + 1)
    path.write_bytes(bytes(blob))
    with pytest.raises(PackFormatError, match="version"):
        read_pack(path)


def test_reader_refuses_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(PackFormatError, match="magic"):
        read_pack(path)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.01, 0.5, 0.999])
def test_reader_refuses_truncated_file(tmp_path: Path, keep_fraction: float) -> None:
    path = tmp_path / "w.fdpack"
    size = write_pack(path, make_layers())
    path.write_bytes(path.read_bytes()[: int(size * keep_fraction)])
    with pytest.raises(PackFormatError, match="truncated"):
        read_pack(path)


def test_reader_refuses_corrupted_bytes(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    size = write_pack(path, make_layers())
    blob = bytearray(path.read_bytes())
    blob[size - 3] ^= 0xFF  # a value byte in the last array
    path.write_bytes(bytes(blob))
    with pytest.raises(PackFormatError, match="corrupted"):
        read_pack(path)


def test_reader_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PackFormatError, match="cannot read"):
        read_pack(tmp_path / "absent.fdpack")


def test_writer_refuses_duplicate_fqns_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    layers = make_layers()
    write_pack(path, layers)
    before = path.read_bytes()
    with pytest.raises(PackFormatError, match="duplicate"):
        write_pack(path, layers + layers[:1])
    assert path.read_bytes() == before


def test_formats_module_does_not_import_torch() -> None:
    code = "import sys, featherdeploy.runtime.formats; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_written_pack_is_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    write_pack(path, make_layers())
    assert path.stat().st_mode & 0o777 == 0o644


def test_negative_zero_inside_a_kept_block_keeps_its_bits() -> None:
    matrix = np.array([[1.0, -0.0, 0.0]], dtype=np.float32)
    bsr = dense_to_sparse(matrix, (1, 2))
    assert bsr.indices.tolist() == [0]
    assert bits(bsr.values).tolist() == [[[bits(np.float32(1.0)), 0x80000000]]]


def test_pack_written_before_scipy_reads_back_and_rewrites_byte_identical(tmp_path: Path) -> None:
    old = read_pack(OLD_PACK)
    weights = np.load(OLD_WEIGHTS)
    assert list(old) == list(weights.files)
    rewritten = []
    for fqn, layer in old.items():
        assert np.array_equal(layer.to_weight(), weights[fqn])  # +-0 compare equal
        assert layer.nnz == np.count_nonzero(weights[fqn])
        rewritten.append(pack_weight(fqn, weights[fqn], op=layer.op, layout=layer.layout,
                                     block_shapes=[s for s in layer.encodings if s != (1, 1)],
                                     onnx_initializer=layer.onnx_initializer, conv=layer.conv,
                                     extra=layer.extra))
        for shape, encoding in layer.encodings.items():
            assert np.array_equal(bits(encoding.values),
                                  bits(rewritten[-1].bsr(shape).values))  # -0.0 kept
    write_pack(tmp_path / "new.fdpack", rewritten)
    assert (tmp_path / "new.fdpack").read_bytes() == OLD_PACK.read_bytes()


SCIPY_CASES = [  # (weight shape, op, layout, conv groups)
    ((16, 8, 3, 3), "Conv", "OIHW", 1),
    ((12, 10, 1, 1), "Conv", "OIHW", 1),   # pointwise
    ((8, 1, 3, 3), "Conv", "OIHW", 8),     # depthwise: a (8, 9) matrix
    ((6, 5, 3, 3), "Conv", "OHWI", 1),
    ((10, 7), "Gemm", "OI", 1),            # linear, 7 columns: no block shape divides it
    ((1, 1), "Gemm", "OI", 1),
]
SCIPY_BLOCKS = [(1, 4), (4, 1), (4, 4), (3, 5)]


@pytest.mark.parametrize("sparsity", [0.0, 0.6, 0.95, 1.0])
@pytest.mark.parametrize("case", SCIPY_CASES, ids=lambda c: "x".join(map(str, c[0])) + c[2])
def test_to_scipy_equals_the_dense_weight_reshaped(case: tuple, sparsity: float) -> None:
    shape, op, layout, groups = case
    weight = sparse_random(shape, sparsity, seed=len(shape) * 100 + shape[0])
    conv = ConvAttributes(shape[2:], groups=groups) if op == "Conv" else None
    layer = pack_weight("w", weight, op=op, layout=layout, block_shapes=SCIPY_BLOCKS, conv=conv)
    matrix = layer.to_scipy()
    assert isinstance(matrix, sparse.csr_array)
    assert matrix.shape == (shape[0], int(np.prod(shape[1:])))  # (out, in/groups * kh * kw)
    assert matrix.has_sorted_indices and matrix.nnz == np.count_nonzero(weight)
    assert np.array_equal(matrix.toarray(), weight_to_matrix(weight, layout))
    if layout == "OIHW":
        assert np.array_equal(matrix.toarray(), weight.reshape(shape[0], -1))
    for block in SCIPY_BLOCKS:
        encoding = layer.bsr(block)
        blocks = encoding.to_scipy()
        assert isinstance(blocks, sparse.bsr_array) and blocks.blocksize == block
        assert blocks.shape == encoding.padded_shape
        assert blocks.shape[0] % block[0] == 0 and blocks.shape[1] % block[1] == 0
        assert blocks.nnz == encoding.nblocks * block[0] * block[1]
        rows, cols = encoding.shape
        assert np.array_equal(blocks.toarray()[:rows, :cols], matrix.toarray())
        assert not blocks.toarray()[rows:].any() and not blocks.toarray()[:, cols:].any()


def test_to_scipy_copies_so_scipy_cannot_change_a_read_pack(tmp_path: Path) -> None:
    path = tmp_path / "w.fdpack"
    write_pack(path, make_layers())
    layer = read_pack(path)["features.0.weight"]
    matrix = layer.to_scipy()
    matrix.data[:] = 0.0
    assert np.array_equal(layer.to_weight(), make_layers()[0].to_weight())
