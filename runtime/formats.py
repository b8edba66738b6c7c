"""The packed-weights file (``weights.fdpack``): CSR and block-sparse (BSR) weights per layer.

Compile writes it (``compile/pack.py``), the runtime engine reads it; both sides use only NumPy,
scipy.sparse and the standard library, so nothing here imports torch.

Matrix view of a weight
    A prunable layer's weight becomes a 2-D matrix ``[rows, cols]`` with one row per output
    channel. ``layout`` says how the original tensor maps to it:

    - ``"OIHW"`` (default): conv weight ``[out, in/groups, kh, kw]`` -> ``[out, in/groups*kh*kw]``,
      columns ordered (in, kh, kw), i.e. a plain row-major reshape (the ONNX / PyTorch order).
    - ``"OHWI"``: columns ordered (kh, kw, in), so consecutive columns are consecutive input
      channels at one kernel position (useful for 1xN blocks along input channels).
    - ``"OI"``: a Gemm/Linear weight ``[out, in]``, used as is.

Encodings (every layer has a CSR one; BSR ones are optional, one per block shape)
    Block shape ``(br, bc)`` tiles the matrix into ``ceil(rows/br) x ceil(cols/bc)`` blocks;
    a block is stored when any of its entries is nonzero (``-0.0`` counts as zero). The matrix is
    zero-padded at the bottom/right to whole blocks; padding entries are stored as 0.0.

    - ``indptr``  ``[block_rows + 1]``: blocks of block-row ``i`` are ``indptr[i]:indptr[i+1]``.
    - ``indices`` ``[nblocks]``: block-column index of each stored block, increasing per row.
    - ``values``  ``[nblocks, br, bc]``: the block contents, row-major inside a block.

    CSR is the 1x1 case (``format == "csr"``), every other block shape is ``"bsr"``; the structure
    is scipy.sparse's (``csr_array`` / ``bsr_array`` with sorted indices), found by scipy. Integer
    arrays use the smallest signed dtype of int8 / int16 / int32 / int64 that holds their largest
    value, chosen per array. In the file ``indptr`` is stored as ``row_counts = diff(indptr)``
    (``[block_rows]``, usually int8): for narrow layers such as depthwise 3x3 (9 columns) a
    2-byte indptr entry per row alone would cost 5.6% of the dense bytes. The reader rebuilds
    ``indptr`` (a prefix sum), so consumers only ever see ``indptr``.

File layout (all integers little-endian)
    ====== ======= ==========================================================================
    offset size    content
    ====== ======= ==========================================================================
    0      8       magic ``b"FDPACK\\x00\\x00"``
    8      4       uint32 format version (``FORMAT_VERSION``; readers refuse any other)
    12     4       uint32 reserved, 0
    16     8       uint64 manifest length M (UTF-8 JSON bytes)
    24     8       uint64 data length D
    32     4       uint32 CRC-32 (zlib) of the manifest bytes followed by the data bytes
    36     28      reserved, zero
    64     M       manifest (JSON), then zero padding to a multiple of 64 bytes -> data start S
    S      D       data: every array at ``S + offset``, offsets multiples of 64 (aligned loads)
    ====== ======= ==========================================================================

    The file is exactly ``S + D`` bytes long; anything shorter (truncated) or longer is refused.

Manifest
    ``{"format": "featherdeploy.weights", "version": 1, "layers": [layer, ...]}`` where a layer is
    ``{"fqn", "onnx_initializer" (str|null), "op" ("Conv"|"Gemm"), "weight_shape", "layout",
    "matrix_shape", "dtype" ("float32"), "nnz", "conv" (null or {"kernel_shape", "strides",
    "pads", "dilations", "groups"}), "extra" (free-form dict), "encodings": [{"format",
    "block_shape", "shape" (= matrix_shape), "arrays": {"row_counts"|"indices"|"values":
    {"offset", "dtype", "shape"}}}]}``. ``pads`` follow ONNX order ``[top, left, bottom, right]``;
    ``onnx_initializer`` names the weight's initializer in ``model.onnx`` (the exporter renames).

Reading (torch-free)::

    layer = read_pack("artifacts/NAME/weights.fdpack")["layer1.0.conv1.weight"]
    csr = layer.csr                      # SparseMatrix: indptr, indices, values (nnz, 1, 1)
    bsr = layer.bsr((4, 1))              # values (nblocks, 4, 1); KeyError lists what exists
    weight = layer.to_weight()           # dense float32, original shape
    matrix = layer.to_scipy()            # scipy.sparse.csr_array, shape (out, in/groups*kh*kw)
    blocks = layer.bsr((4, 4)).to_scipy()  # scipy.sparse.bsr_array over the padded matrix

Reference: CSR/BSR as in scipy.sparse (``csr_array`` / ``bsr_array``), which encodes them; the
magic + version + checksum header follows llm.c's checkpoint files.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featherdeploy.runtime.atomic import atomic_write_bytes

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "LAYOUTS",
    "PackFormatError",
    "ConvAttributes",
    "SparseMatrix",
    "PackedLayer",
    "smallest_index_dtype",
    "weight_to_matrix",
    "matrix_to_weight",
    "dense_to_sparse",
    "pack_weight",
    "write_pack",
    "read_pack",
]

MAGIC = b"FDPACK\x00\x00"
FORMAT_NAME = "featherdeploy.weights"
FORMAT_VERSION = 1
LAYOUTS = ("OIHW", "OHWI", "OI")
ALIGNMENT = 64
_STORED_ARRAYS = ("row_counts", "indices", "values")
_HEADER = struct.Struct("<8sIIQQI28x")  # magic, version, reserved, M, D, crc -> 64 bytes
_INDEX_DTYPES = (np.int8, np.int16, np.int32, np.int64)
_VALUE_DTYPES = {"float32": np.float32}
_ARRAY_DTYPES = {"int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
                 "float32": np.float32}


class PackFormatError(ValueError):
    """A pack file (or a layer for the writer) is malformed, truncated or of unknown version."""


@dataclass(frozen=True)
class ConvAttributes:
    """Conv2d attributes as in the ONNX Conv node; pads are ``[top, left, bottom, right]``."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    groups: int = 1

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form used in the manifest."""
        return {"kernel_shape": list(self.kernel_shape), "strides": list(self.strides),
                "pads": list(self.pads), "dilations": list(self.dilations), "groups": self.groups}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ConvAttributes:
        """Inverse of :meth:`to_json`; raises :class:`PackFormatError` on missing keys."""
        try:
            return cls(kernel_shape=tuple(int(v) for v in obj["kernel_shape"]),
                       strides=tuple(int(v) for v in obj["strides"]),
                       pads=tuple(int(v) for v in obj["pads"]),
                       dilations=tuple(int(v) for v in obj["dilations"]),
                       groups=int(obj["groups"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PackFormatError(f"bad conv attributes {obj!r}: {exc}") from exc


@dataclass(frozen=True)
class SparseMatrix:
    """A block-compressed sparse row matrix; CSR when ``block_shape == (1, 1)``."""

    shape: tuple[int, int]  # (rows, cols) of the unpadded matrix
    block_shape: tuple[int, int]  # (br, bc)
    indptr: np.ndarray  # (block_rows + 1,)
    indices: np.ndarray  # (nblocks,)
    values: np.ndarray  # (nblocks, br, bc) float32

    @property
    def format(self) -> str:
        """``"csr"`` for 1x1 blocks, else ``"bsr"``."""
        return "csr" if self.block_shape == (1, 1) else "bsr"

    @property
    def block_grid(self) -> tuple[int, int]:
        """Number of block rows and block columns (the matrix padded to whole blocks)."""
        return (-(-self.shape[0] // self.block_shape[0]), -(-self.shape[1] // self.block_shape[1]))

    @property
    def nblocks(self) -> int:
        """Number of stored blocks (equals nnz for CSR)."""
        return int(self.indices.shape[0])

    @property
    def row_counts(self) -> np.ndarray:
        """Stored blocks per block row, ``diff(indptr)``, in the smallest fitting dtype."""
        counts = np.diff(self.indptr.astype(np.int64))
        return counts.astype(smallest_index_dtype(int(counts.max(initial=0))))

    @property
    def nbytes(self) -> int:
        """Bytes the encoding costs in the file (row counts, indices, values; before alignment)."""
        return int(self.row_counts.nbytes + self.indices.nbytes + self.values.nbytes)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """``shape`` rounded up to whole blocks (the BSR matrix scipy sees)."""
        (grid_r, grid_c), (br, bc) = self.block_grid, self.block_shape
        return (grid_r * br, grid_c * bc)

    def to_scipy(self) -> Any:
        """This encoding as a scipy.sparse array: ``csr_array`` of ``shape`` for CSR, else
        ``bsr_array`` of ``padded_shape`` (scipy's BSR holds whole blocks only; crop with
        ``[:rows, :cols]`` for the unpadded matrix). The arrays are copies, so scipy's in-place
        methods never touch a pack read from disk."""
        from scipy import sparse  # lazy: importing runtime.formats stays cheap

        indptr, indices = _scipy_index_arrays(self.indptr, self.indices)
        if self.format == "csr":
            return sparse.csr_array((self.values.reshape(-1).copy(), indices, indptr),
                                    shape=self.shape)
        return sparse.bsr_array((self.values.copy(), indices, indptr), shape=self.padded_shape,
                                blocksize=self.block_shape)

    def to_dense(self) -> np.ndarray:
        """Rebuild the dense ``shape`` matrix (bit-exact for the stored values)."""
        (br, bc), (grid_r, grid_c) = self.block_shape, self.block_grid
        padded = np.zeros((grid_r, br, grid_c, bc), dtype=self.values.dtype)
        rows = np.repeat(np.arange(grid_r), np.diff(self.indptr.astype(np.int64)))
        padded[rows, :, self.indices.astype(np.int64), :] = self.values
        dense = padded.reshape(grid_r * br, grid_c * bc)
        return np.ascontiguousarray(dense[: self.shape[0], : self.shape[1]])


@dataclass(frozen=True)
class PackedLayer:
    """One prunable layer of the pack: its identity, shapes and its sparse encodings."""

    fqn: str  # weight FQN in the torch model, e.g. "layer1.0.conv1.weight"
    op: str  # "Conv" or "Gemm"
    weight_shape: tuple[int, ...]  # original tensor shape, e.g. (out, in/groups, kh, kw)
    layout: str  # one of LAYOUTS
    nnz: int  # nonzero weights (exact count, independent of blocking)
    encodings: dict[tuple[int, int], SparseMatrix]  # keyed by block shape; (1, 1) always present
    onnx_initializer: str | None = None  # name of the weight's initializer in model.onnx
    conv: ConvAttributes | None = None
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, kept in the manifest

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the matrix view of the weight."""
        return self.csr.shape

    @property
    def csr(self) -> SparseMatrix:
        """The CSR encoding (always present)."""
        return self.encodings[(1, 1)]

    @property
    def numel(self) -> int:
        """Number of weights, zeros included."""
        return int(np.prod(self.weight_shape))

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the dense fp32 weight."""
        return self.numel * np.dtype(self.dtype).itemsize

    def bsr(self, block_shape: tuple[int, int]) -> SparseMatrix:
        """The encoding with this block shape; ``KeyError`` names the shapes that exist."""
        try:
            return self.encodings[tuple(block_shape)]
        except KeyError:
            raise KeyError(f"{self.fqn}: no {block_shape} encoding; have "
                           f"{sorted(self.encodings)}") from None

    def to_weight(self) -> np.ndarray:
        """The dense weight tensor in its original shape, rebuilt from CSR."""
        return matrix_to_weight(self.csr.to_dense(), self.weight_shape, self.layout)

    def to_scipy(self) -> Any:
        """The weight as a ``scipy.sparse.csr_array`` of ``matrix_shape``: one row per output
        channel, the rest of the weight flattened into columns as :func:`weight_to_matrix` does
        (``OIHW``: ``weight.reshape(out, in/groups * kh * kw)``, so a depthwise 3x3 conv gives
        ``(out, 9)``; ``OHWI``: columns ordered (kh, kw, in); ``OI``: the Gemm weight as is).
        ``to_scipy().toarray()`` equals ``weight_to_matrix(to_weight(), layout)``."""
        return self.csr.to_scipy()


def smallest_index_dtype(max_value: int) -> np.dtype:
    """Smallest of int8 / int16 / int32 / int64 that can store ``max_value`` (>= 0)."""
    for dtype in _INDEX_DTYPES:
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise PackFormatError(f"index value {max_value} does not fit in int64")


def weight_to_matrix(weight: np.ndarray, layout: str) -> np.ndarray:
    """Matrix view ``[out, ...]`` of a weight tensor under ``layout`` (see module docstring)."""
    _check_layout(weight.shape, layout)
    if layout == "OHWI":
        weight = weight.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(weight.reshape(weight.shape[0], -1))


def matrix_to_weight(matrix: np.ndarray, weight_shape: tuple[int, ...], layout: str) -> np.ndarray:
    """Inverse of :func:`weight_to_matrix`."""
    _check_layout(tuple(weight_shape), layout)
    if layout == "OHWI":
        out_ch, in_ch, kh, kw = weight_shape
        return np.ascontiguousarray(matrix.reshape(out_ch, kh, kw, in_ch).transpose(0, 3, 1, 2))
    return matrix.reshape(weight_shape)


def _check_layout(shape: tuple[int, ...], layout: str) -> None:
    expected_rank = {"OIHW": 4, "OHWI": 4, "OI": 2}.get(layout)
    if expected_rank is None:
        raise PackFormatError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if len(shape) != expected_rank:
        raise PackFormatError(f"layout {layout} needs a rank-{expected_rank} weight, got {shape}")


def dense_to_sparse(matrix: np.ndarray, block_shape: tuple[int, int] = (1, 1)) -> SparseMatrix:
    """Encode a dense 2-D float32 matrix as CSR (1x1) or BSR with ``block_shape``.

    A block is kept when any entry is nonzero. ``-0.0`` counts as zero, so CSR drops it and
    :meth:`SparseMatrix.to_dense` gives ``+0.0`` there; inside a kept BSR block every entry keeps
    its bits. NaN / Inf are refused.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise PackFormatError(f"expected a 2-D matrix, got shape {matrix.shape}")
    if matrix.dtype != np.float32:
        raise PackFormatError(f"expected float32 values, got {matrix.dtype}")
    if not np.isfinite(matrix).all():
        raise PackFormatError("matrix holds NaN or Inf")
    from scipy import sparse  # lazy: importing runtime.formats stays cheap

    br, bc = _check_block_shape(block_shape)
    rows, cols = matrix.shape
    grid_r, grid_c = -(-rows // br), -(-cols // bc)
    if (br, bc) == (1, 1):
        encoded = sparse.csr_array(matrix)
        encoded.sort_indices()
        values = encoded.data.reshape(-1, 1, 1)
    else:
        # scipy's BSR needs whole blocks, so the matrix is zero-padded first (ours, not scipy's).
        padded = np.zeros((grid_r * br, grid_c * bc), dtype=np.float32)
        padded[:rows, :cols] = matrix
        encoded = sparse.bsr_array(padded, blocksize=(br, bc))
        encoded.sort_indices()  # scipy lists a block row's blocks in first-seen order
        # scipy fills a kept block from its nonzeros, turning a -0.0 in it into +0.0; the
        # blocks are read from the matrix instead so every stored entry keeps its bits.
        block_rows = np.repeat(np.arange(grid_r), np.diff(encoded.indptr))
        values = padded.reshape(grid_r, br, grid_c, bc)[block_rows, :, encoded.indices, :]
    indptr = encoded.indptr
    return SparseMatrix(shape=(rows, cols), block_shape=(br, bc),
                        indptr=indptr.astype(smallest_index_dtype(int(indptr[-1]))),
                        indices=encoded.indices.astype(smallest_index_dtype(max(grid_c - 1, 0))),
                        values=np.ascontiguousarray(values, dtype=np.float32))


def _scipy_index_arrays(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pack's (often int8 / int16) index arrays widened to the int32 or int64 scipy takes."""
    largest = max(int(indptr[-1]), int(indices.max(initial=0)))
    wide = np.int32 if largest <= np.iinfo(np.int32).max else np.int64
    return indptr.astype(wide), indices.astype(wide)


def _check_block_shape(block_shape: Iterable[int]) -> tuple[int, int]:
    shape = tuple(int(v) for v in block_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise PackFormatError(f"block shape must be two positive ints, got {block_shape!r}")
    return shape  # type: ignore[return-value]


def pack_weight(fqn: str, weight: np.ndarray, *, op: str, layout: str | None = None,
                block_shapes: Iterable[tuple[int, int]] = (), onnx_initializer: str | None = None,
                conv: ConvAttributes | None = None, extra: Mapping[str, Any] | None = None,
                ) -> PackedLayer:
    """Build a :class:`PackedLayer` from a dense weight: CSR plus one BSR per block shape."""
    weight = np.asarray(weight)
    if op not in ("Conv", "Gemm"):
        raise PackFormatError(f"{fqn}: op must be 'Conv' or 'Gemm', got {op!r}")
    layout = layout or ("OIHW" if weight.ndim == 4 else "OI")
    matrix = weight_to_matrix(weight, layout)
    shapes = [(1, 1)] + [_check_block_shape(s) for s in block_shapes]
    encodings = {shape: dense_to_sparse(matrix, shape) for shape in dict.fromkeys(shapes)}
    return PackedLayer(fqn=fqn, op=op, weight_shape=tuple(weight.shape), layout=layout,
                       nnz=int(np.count_nonzero(matrix)), encodings=encodings,
                       onnx_initializer=onnx_initializer, conv=conv, extra=dict(extra or {}))


# ----------------------------------------------------------------------------- writer


def write_pack(path: str | os.PathLike[str],
               layers: Iterable[PackedLayer] | Mapping[str, PackedLayer]) -> int:
    """Write ``layers`` to ``path`` atomically (temp file + rename); returns the file size."""
    layer_list = list(layers.values()) if isinstance(layers, Mapping) else list(layers)
    _check_unique_fqns(layer_list)
    data = bytearray()
    manifest_layers = [_layer_manifest(layer, data) for layer in layer_list]
    manifest = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION,
                           "layers": manifest_layers}, separators=(",", ":")).encode("utf-8")
    blob = _assemble(manifest, bytes(data))
    _atomic_write(Path(path), blob)
    return len(blob)


def _check_unique_fqns(layers: list[PackedLayer]) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.fqn in seen:
            raise PackFormatError(f"duplicate layer FQN {layer.fqn!r}")
        seen.add(layer.fqn)


def _layer_manifest(layer: PackedLayer, data: bytearray) -> dict[str, Any]:
    if (1, 1) not in layer.encodings:
        raise PackFormatError(f"{layer.fqn}: a CSR (1x1) encoding is required")
    encodings = [_encoding_manifest(layer.fqn, enc, data) for enc in layer.encodings.values()]
    return {"fqn": layer.fqn, "onnx_initializer": layer.onnx_initializer, "op": layer.op,
            "weight_shape": list(layer.weight_shape), "layout": layer.layout,
            "matrix_shape": list(layer.matrix_shape), "dtype": layer.dtype, "nnz": layer.nnz,
            "conv": layer.conv.to_json() if layer.conv else None, "extra": layer.extra,
            "encodings": encodings}


def _encoding_manifest(fqn: str, enc: SparseMatrix, data: bytearray) -> dict[str, Any]:
    arrays = {}
    for name in _STORED_ARRAYS:
        array = np.ascontiguousarray(getattr(enc, name))
        if array.dtype.name not in _ARRAY_DTYPES:
            raise PackFormatError(f"{fqn}: {name} has unsupported dtype {array.dtype}")
        data.extend(b"\x00" * (-len(data) % ALIGNMENT))
        arrays[name] = {"offset": len(data), "dtype": array.dtype.name,
                        "shape": list(array.shape)}
        data.extend(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return {"format": enc.format, "block_shape": list(enc.block_shape),
            "shape": list(enc.shape), "arrays": arrays}


def _assemble(manifest: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(manifest))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(manifest), len(data), crc)
    padding = b"\x00" * (-(len(header) + len(manifest)) % ALIGNMENT)
    return header + manifest + padding + data


def _atomic_write(path: Path, blob: bytes) -> None:
    atomic_write_bytes(path, blob)
    os.chmod(path, 0o644)  # mkstemp made it 0600; a pack is a shareable artifact


# ----------------------------------------------------------------------------- reader


def read_pack(path: str | os.PathLike[str]) -> dict[str, PackedLayer]:
    """Read a pack file into ``{fqn: PackedLayer}`` (file order); :class:`PackFormatError` if bad.

    The arrays are read-only NumPy views of one in-memory copy of the file.
    """
    try:
        blob = Path(path).read_bytes()
    except OSError as exc:
        raise PackFormatError(f"cannot read pack file {path}: {exc}") from exc
    manifest, data = _split(blob, str(path))
    layers = [_parse_layer(entry, data, str(path)) for entry in _manifest_layers(manifest, path)]
    return {layer.fqn: layer for layer in layers}


def _split(blob: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
    if len(blob) < _HEADER.size:
        raise PackFormatError(f"{where}: truncated pack file ({len(blob)} bytes, no full header)")
    magic, version, _, manifest_len, data_len, crc = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise PackFormatError(f"{where}: not a featherdeploy pack file (bad magic {magic!r})")
    if version != FORMAT_VERSION:
        raise PackFormatError(f"{where}: unsupported pack format version {version} "
                              f"(this reader understands version {FORMAT_VERSION})")
    data_start = _HEADER.size + manifest_len + (-(_HEADER.size + manifest_len) % ALIGNMENT)
    if len(blob) != data_start + data_len:
        kind = "truncated" if len(blob) < data_start + data_len else "oversized"
        raise PackFormatError(f"{where}: {kind} pack file: {len(blob)} bytes, header says "
                              f"{data_start + data_len}")
    view = memoryview(blob)
    manifest_bytes = view[_HEADER.size:_HEADER.size + manifest_len]
    data = view[data_start:]
    if zlib.crc32(data, zlib.crc32(manifest_bytes)) != crc:
        raise PackFormatError(f"{where}: checksum mismatch, the pack file is corrupted")
    try:
        manifest = json.loads(bytes(manifest_bytes).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackFormatError(f"{where}: manifest is not valid JSON: {exc}") from exc
    return manifest, data


def _manifest_layers(manifest: Any, path: Any) -> list[dict[str, Any]]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise PackFormatError(f"{path}: manifest does not describe a {FORMAT_NAME} pack")
    if manifest.get("version") != FORMAT_VERSION:
        raise PackFormatError(f"{path}: unsupported manifest version {manifest.get('version')}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise PackFormatError(f"{path}: manifest has no layer list")
    return layers


def _parse_layer(entry: Any, data: memoryview, where: str) -> PackedLayer:
    try:
        fqn = str(entry["fqn"])
        encodings = [_parse_encoding(enc, data) for enc in entry["encodings"]]
        layer = PackedLayer(
            fqn=fqn, op=str(entry["op"]), weight_shape=tuple(int(v) for v in entry["weight_shape"]),
            layout=str(entry["layout"]), nnz=int(entry["nnz"]),
            encodings={enc.block_shape: enc for enc in encodings},
            onnx_initializer=entry.get("onnx_initializer"),
            conv=ConvAttributes.from_json(entry["conv"]) if entry.get("conv") else None,
            dtype=str(entry["dtype"]), extra=dict(entry.get("extra") or {}))
    except PackFormatError as exc:
        raise PackFormatError(f"{where}: layer {entry.get('fqn', '?')!r}: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PackFormatError(f"{where}: malformed layer entry ({exc!r})") from exc
    _validate_layer(layer, entry, where)
    return layer


def _parse_encoding(entry: Mapping[str, Any], data: memoryview) -> SparseMatrix:
    arrays = {name: _array_view(entry["arrays"][name], data) for name in _STORED_ARRAYS}
    counts = arrays.pop("row_counts")
    if counts.ndim != 1 or counts.dtype.kind != "i" or (counts < 0).any():
        raise PackFormatError("row_counts must be a 1-D array of nonnegative integers")
    indptr = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    matrix = SparseMatrix(shape=tuple(int(v) for v in entry["shape"]),
                          block_shape=_check_block_shape(entry["block_shape"]),
                          indptr=indptr.astype(smallest_index_dtype(int(indptr[-1]))), **arrays)
    _validate_matrix(matrix)
    return matrix


def _array_view(spec: Mapping[str, Any], data: memoryview) -> np.ndarray:
    dtype_name, shape, offset = spec["dtype"], tuple(int(v) for v in spec["shape"]), spec["offset"]
    if dtype_name not in _ARRAY_DTYPES:
        raise PackFormatError(f"unsupported array dtype {dtype_name!r}")
    dtype = np.dtype(_ARRAY_DTYPES[dtype_name]).newbyteorder("<")
    if any(dim < 0 for dim in shape):
        raise PackFormatError(f"negative array shape {shape}")
    count = int(np.prod(shape))
    if not isinstance(offset, int) or offset < 0 or offset + count * dtype.itemsize > len(data):
        raise PackFormatError(f"array at offset {offset} with shape {shape} lies outside the data")
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


def _validate_matrix(m: SparseMatrix) -> None:
    """Structural checks so a consumer never indexes out of bounds."""
    (grid_r, grid_c), (br, bc) = m.block_grid, m.block_shape
    if m.indptr.shape != (grid_r + 1,) or m.indices.ndim != 1:
        raise PackFormatError(f"indptr/indices shapes {m.indptr.shape}/{m.indices.shape} do not "
                              f"match a {m.shape} matrix with {m.block_shape} blocks")
    if m.values.shape != (m.nblocks, br, bc):
        raise PackFormatError(f"values shape {m.values.shape} != {(m.nblocks, br, bc)}")
    if m.values.dtype != np.float32 or m.indptr.dtype.kind != "i" or m.indices.dtype.kind != "i":
        raise PackFormatError("index arrays must be integers and values float32")
    indptr = m.indptr.astype(np.int64)
    if indptr[0] != 0 or indptr[-1] != m.nblocks or (np.diff(indptr) < 0).any():
        raise PackFormatError("indptr is not a nondecreasing 0..nblocks sequence")
    if m.nblocks and (m.indices.min() < 0 or m.indices.max() >= grid_c):
        raise PackFormatError(f"block-column index outside [0, {grid_c})")


def _validate_layer(layer: PackedLayer, entry: Mapping[str, Any], where: str) -> None:
    if (1, 1) not in layer.encodings:
        raise PackFormatError(f"{where}: layer {layer.fqn!r} has no CSR encoding")
    if layer.dtype not in _VALUE_DTYPES:
        raise PackFormatError(f"{where}: layer {layer.fqn!r} has unsupported dtype {layer.dtype}")
    _check_layout(layer.weight_shape, layer.layout)
    rows = layer.weight_shape[0]
    cols = layer.numel // rows if rows else 0
    for enc in layer.encodings.values():
        if enc.shape != (rows, cols):
            raise PackFormatError(f"{where}: layer {layer.fqn!r} encoding shape {enc.shape} != "
                                  f"matrix shape {(rows, cols)}")
    if layer.csr.nblocks != layer.nnz:
        raise PackFormatError(f"{where}: layer {layer.fqn!r} nnz {layer.nnz} != CSR entries "
                              f"{layer.csr.nblocks}")
    if tuple(entry.get("matrix_shape", ())) != (rows, cols):
        raise PackFormatError(f"{where}: layer {layer.fqn!r} matrix_shape disagrees with weight")
