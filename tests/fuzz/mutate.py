"""Mutations of the fuzz harness: how one case is made from a seed model.

A case is drawn from ``numpy.random.default_rng([seed, index])`` alone, so any case can be made
again from its index. Kinds (by share of the cases):

- ``baseline`` (6%): the seed unchanged, random inputs and engine options (must match ORT).
- ``bytes`` (20%): the serialized model truncated, bits flipped, bytes inserted, deleted,
  duplicated or overwritten.
- ``proto`` (58%): one to three protobuf-level mutations (``PROTO_MUTATIONS``): dims, dtypes,
  NaN/Inf/huge weights, attribute types and values, missing and duplicate names, cycles, opsets
  and IR versions, op types and domains, node inputs/outputs, sparse-initializer indices,
  external-data paths, Constant nodes, extra graph outputs.
- ``input`` (16%): the seed unchanged, bad inputs: NaN / Inf / huge / denormal images (whole or
  in part), wrong dtypes, ranks, shapes, empty or non-contiguous arrays, other batch sizes,
  missing or unknown input names.

Each case also draws engine options (threads, backend, batch layout, generated code, ISA,
tuning, strict mode, planner tunables) and whether it goes through the CLI.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from tests.fuzz.seeds import EXTERNAL_FILE, SEEDS, Seed, seed_by_name

__all__ = ["Case", "make_case", "make_feeds", "PROTO_MUTATIONS", "INPUT_MUTATIONS",
           "BYTE_MUTATIONS"]

KIND_WEIGHTS = {"baseline": 0.06, "bytes": 0.20, "proto": 0.58, "input": 0.16}
MAX_FEED_ELEMENTS = 1 << 20
INTERESTING_INTS = [0, 1, 2, 3, 4, 5, 7, 8, 16, -1, -2, -3, 2**31 - 1, -2**31, 2**31, 2**32,
                    2**63 - 1, -2**63, 100000, 1 << 20]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 6.0, 1e-45, 1e-38, 1e30, 3.4e38, -3.4e38,
                      math.inf, -math.inf, math.nan]
INTERESTING_STRINGS = ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "", "garbage", "nearest",
                       "linear", "cubic", "asymmetric", "half_pixel", "align_corners",
                       "round_prefer_floor", "floor", "constant", "reflect", "\xff\x00",
                       "x" * 300]
# Attributes the engine or ONNX Runtime read, per op (added by attr_add).
KNOWN_ATTRS = {
    "Conv": ["strides", "pads", "dilations", "group", "auto_pad", "kernel_shape"],
    "ConvTranspose": ["strides", "pads", "dilations", "group", "auto_pad", "kernel_shape",
                      "output_padding", "output_shape"],
    "MaxPool": ["strides", "pads", "dilations", "auto_pad", "kernel_shape", "ceil_mode",
                "storage_order"],
    "AveragePool": ["strides", "pads", "dilations", "auto_pad", "kernel_shape", "ceil_mode",
                    "count_include_pad"],
    "BatchNormalization": ["epsilon", "momentum", "training_mode", "spatial"],
    "LayerNormalization": ["axis", "epsilon", "stash_type"],
    "Gemm": ["alpha", "beta", "transA", "transB"],
    "Softmax": ["axis"], "Flatten": ["axis"], "Concat": ["axis"], "Gather": ["axis"],
    "Clip": ["min", "max"], "LeakyRelu": ["alpha"], "Selu": ["alpha", "gamma"],
    "Resize": ["mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
               "exclude_outside", "extrapolation_value", "antialias", "axes",
               "keep_aspect_ratio_policy"],
    "ReduceMean": ["axes", "keepdims", "noop_with_empty_axes"],
    "Reshape": ["allowzero"], "Unsqueeze": ["axes"], "Transpose": ["perm"],
    "Mul": ["broadcast", "axis"], "Add": ["broadcast", "axis"],
}
INT_ATTRS = {"group", "ceil_mode", "storage_order", "count_include_pad", "training_mode",
             "spatial", "axis", "transA", "transB", "exclude_outside", "antialias", "keepdims",
             "noop_with_empty_axes", "allowzero", "stash_type", "broadcast"}
FLOAT_ATTRS = {"epsilon", "momentum", "alpha", "beta", "gamma", "min", "max", "cubic_coeff_a",
               "extrapolation_value"}
STRING_ATTRS = {"auto_pad", "mode", "coordinate_transformation_mode", "nearest_mode",
                "keep_aspect_ratio_policy"}
OTHER_OPS = ["Relu", "Sigmoid", "Identity", "Add", "Mul", "Conv", "MaxPool", "AveragePool",
             "GlobalAveragePool", "Flatten", "Softmax", "Clip", "Gemm", "MatMul", "Concat",
             "Reshape", "Transpose", "BatchNormalization", "Dropout", "Abs", "Neg", "Sqrt",
             "Exp", "Log", "Tanh", "HardSwish", "Selu", "Sin", "Cos", "Mod", "Where",
             "Shape", "Size", "Cast", "ReduceMean", "ReduceMax", "Squeeze", "Unsqueeze", "Pad",
             "Resize", "ConvTranspose", "LayerNormalization", "Split", "Slice", "Expand",
             "Tile", "Range", "ConstantOfShape", "TopK", "ArgMax", "Loop", "If", "Foo", ""]
DOMAINS = ["ai.onnx", "com.microsoft", "ai.onnx.ml", "com.example", "\xff"]
OPSETS = [1, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 30, 1000,
          0, -1]
IR_VERSIONS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 100]
DTYPES = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 21, 22, 25, 99]
INPUT_DTYPES = [np.float64, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.int8,
                np.complex64]


@dataclass
class Case:
    """One fuzz case: the model (bytes, with the files beside it), the feeds, the engine options
    and how the engine is driven (``api`` or ``cli``); ``mutations`` describe what was done."""

    index: int
    seed: str
    kind: str
    mutations: list[str]
    model: bytes
    files: dict[str, bytes]
    feeds: dict[str, Any]
    options: dict[str, Any]
    planner: dict[str, Any]
    driver: str = "api"
    cwd_files: dict[str, bytes] = field(default_factory=dict)
    describe: bool = False
    repeat: bool = False

    def summary(self) -> str:
        return f"#{self.index} {self.seed}/{self.kind}: " + "; ".join(self.mutations)


# ----------------------------------------------------------------------------- case drawing


def make_case(index: int, seed: int = 0) -> Case:
    """Case ``index`` of the run seeded with ``seed`` (a pure function of both)."""
    rng = np.random.default_rng([seed, index])
    name = SEEDS[int(rng.integers(len(SEEDS)))]
    base = seed_by_name(name, int(rng.integers(4)))
    kind = str(rng.choice(list(KIND_WEIGHTS), p=list(KIND_WEIGHTS.values())))
    model = copy.deepcopy(base.model)
    files = dict(base.files)
    mutations: list[str] = []
    data: bytes | None = None
    if kind == "proto":
        for _ in range(int(rng.choice([1, 1, 1, 2, 2, 3]))):
            mutations.append(_proto_mutation(model, files, rng))
    data = model.SerializeToString()
    if kind == "bytes":
        data, described = _byte_mutation(data, rng)
        mutations.append(described)
    feeds = make_feeds(model if kind != "bytes" else base.model, base, rng)
    if kind == "input":
        mutations.append(_input_mutation(feeds, base, rng))
    elif kind == "baseline":
        mutations.append(_baseline_feeds(feeds, base, rng))
    cwd_files = {}
    if files and rng.random() < 0.7:  # a decoy of the same name in the working directory
        cwd_files = {k: _decoy(v, rng) for k, v in files.items()}
    return Case(index, name, kind, mutations, data, files, feeds, _options(rng),
                _planner(rng), "cli" if rng.random() < 0.08 else "api", cwd_files,
                describe=bool(rng.random() < 0.3), repeat=bool(rng.random() < 0.3))


def _decoy(data: bytes, rng: np.random.Generator) -> bytes:
    values = np.frombuffer(data[: len(data) // 4 * 4], np.float32).copy()
    with np.errstate(all="ignore"):
        return (values * 3.0 + rng.standard_normal(values.size).astype(np.float32)).tobytes()


def _options(rng: np.random.Generator) -> dict[str, Any]:
    return {
        "threads": int(rng.choice([1, 1, 2])),
        "backend": str(rng.choice(["native"] * 16 + ["auto"] * 3 + ["onnxruntime"])),
        "batch_layout": str(rng.choice(["auto", "interleaved", "planar"])),
        "jit": bool(rng.random() < 0.7),
        "isa": str(rng.choice(["auto", "auto", "generic", "avx2"])),
        "tuning": str(rng.choice(["off"] * 8 + ["lazy"] * 2)),
        "fallback": bool(rng.random() < 0.9),
        "plan_cache_size": int(rng.choice([1, 8])),
    }


def _planner(rng: np.random.Generator) -> dict[str, Any]:
    """Planner tunables pushed to the values that select other code paths."""
    if rng.random() < 0.5:
        return {}
    choices: dict[str, list[Any]] = {
        "units_per_thread": [1, 2, 3], "wavefront_layers": [0, 2, 3, 4],
        "row_split_min_bytes": [0, 4096, 512 * 1024], "row_split_chain_bytes": [0, 1024],
        "interleave_max_pixels": [0, 16, 1024], "direct_max_taps": [0.0, 2.0, 100.0],
        "segment_layout": [True, False], "gemm_pixels": [0, 64, 4096],
        "small_plane": [0, 16, 64], "max_lanes": [1, 2, 16], "min_block_taps": [0, 10],
        "ic_block_bytes": [64, 48 * 1024], "bsr_cost_per_weight": [0.0, 0.55, 100.0],
    }
    keys = list(choices)
    picked = rng.choice(len(keys), size=int(rng.integers(1, 5)), replace=False)
    tunables = {keys[i]: _item(rng, choices[keys[i]]) for i in picked}
    # Fuzz models are small: by default their workspaces keep the by_layout placement, so the
    # shared arena's packing and border zeroing would go unexercised without this.
    tunables["pack_arena_above_bytes"] = _item(rng, [0, 2 << 20])
    return tunables


def _item(rng: np.random.Generator, values: list[Any]) -> Any:
    value = values[int(rng.integers(len(values)))]
    return value.item() if isinstance(value, np.generic) else value


# ----------------------------------------------------------------------------- feeds


_NP_OF_ELEM = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64}


def make_feeds(model: onnx.ModelProto, base: Seed, rng: np.random.Generator) -> dict[str, Any]:
    """Random arrays for the model's inputs (those no initializer defines): declared dtype and
    static dims, the seed's sizes for dynamic dims."""
    inits = {t.name for t in model.graph.initializer} | {
        s.values.name for s in model.graph.sparse_initializer}
    feeds = {}
    for value in model.graph.input:
        if value.name in inits or value.name in feeds:
            continue
        tt = value.type.tensor_type
        dtype = _NP_OF_ELEM.get(tt.elem_type, np.float32)
        fallback = base.feed_shapes.get(value.name, (1, 3, 8, 8))
        if tt.HasField("shape"):
            dims = []
            for axis, dim in enumerate(tt.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value > 0:
                    dims.append(int(dim.dim_value))
                else:
                    dims.append(fallback[axis] if axis < len(fallback) else 2)
            shape = tuple(dims)
        else:
            shape = tuple(fallback)
        if math.prod(shape) > MAX_FEED_ELEMENTS:
            shape = tuple(fallback)
        feeds[value.name] = _random_array(shape, dtype, rng)
    return feeds


def _random_array(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "f" or dtype.kind == "c":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    return rng.integers(0, 4, size=shape).astype(dtype)


def _baseline_feeds(feeds: dict[str, Any], base: Seed, rng: np.random.Generator) -> str:
    """Valid inputs of another batch size when the batch is dynamic."""
    dynamic = _dynamic_batch(base)
    if not dynamic or rng.random() < 0.4:
        return "unchanged"
    batch = int(rng.choice([1, 2, 3, 5, 16, 17, 33]))
    for name in dynamic:
        shape = (batch, *feeds[name].shape[1:])
        feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return f"batch {batch}"


def _dynamic_batch(base: Seed) -> list[str]:
    names = []
    for value in base.model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            names.append(value.name)
    return names


def _input_mutation(feeds: dict[str, Any], base: Seed, rng: np.random.Generator) -> str:
    name = sorted(feeds)[int(rng.integers(len(feeds)))]
    x = feeds[name]
    choice = int(rng.integers(16))
    if choice <= 5:  # non-finite or extreme values, whole or part (NaN in, NaN out)
        value = float(rng.choice([math.nan, math.nan, math.inf, -math.inf, 3e38, -3e38, 1e-42]))
        where = str(rng.choice(["all", "one", "some", "channel", "row"]))
        x = x.copy()
        if where == "all":
            x[...] = value
        elif where == "one":
            x[tuple(int(rng.integers(d)) for d in x.shape)] = value
        elif where == "some":
            x[rng.random(x.shape) < 0.1] = value
        elif where == "channel" and x.ndim >= 2:
            x[:, int(rng.integers(x.shape[1]))] = value
        elif x.ndim >= 3:
            x[..., int(rng.integers(x.shape[-2])), :] = value
        else:
            x[...] = value
        if rng.random() < 0.3 and _dynamic_batch(base) and name in _dynamic_batch(base):
            x = np.concatenate([x] * int(rng.choice([2, 8, 16])), axis=0)
        feeds[name] = x
        return f"input {name}: {value} at {where} ({x.shape})"
    if choice == 6:
        dtype = INPUT_DTYPES[int(rng.integers(len(INPUT_DTYPES)))]
        feeds[name] = x.astype(dtype)
        return f"input {name}: dtype {np.dtype(dtype).name}"
    if choice == 7:
        feeds[name] = np.ascontiguousarray(x[0]) if x.ndim > 1 else x.reshape(1, *x.shape)
        return f"input {name}: rank {feeds[name].ndim}"
    if choice == 8:
        feeds[name] = x.reshape(1, *x.shape)
        return f"input {name}: rank {feeds[name].ndim}"
    if choice == 9:
        axis = int(rng.integers(x.ndim)) if x.ndim else 0
        shape = list(x.shape) or [1]
        shape[axis] = int(rng.choice([1, 2, 3, 5, 9, 31]))
        feeds[name] = rng.standard_normal(shape).astype(x.dtype)
        return f"input {name}: shape {tuple(shape)}"
    if choice == 10:
        feeds[name] = np.zeros((0, *x.shape[1:]), x.dtype)
        return f"input {name}: empty batch"
    if choice == 11:
        big = np.repeat(x, 2, axis=-1) if x.ndim else x
        feeds[name] = big[..., ::2] if x.ndim else x
        return f"input {name}: non-contiguous view"
    if choice == 12:
        del feeds[name]
        return f"input {name}: missing"
    if choice == 13:
        feeds["not_an_input"] = x
        return "extra input 'not_an_input'"
    if choice == 14:
        feeds[name] = x.tolist()
        return f"input {name}: a Python list"
    feeds[name] = np.float32(1.0)
    return f"input {name}: a NumPy scalar"


# ----------------------------------------------------------------------------- bytes


def _byte_mutation(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    choice = str(rng.choice(BYTE_MUTATIONS))
    buf = bytearray(data)
    size = len(buf)
    if choice == "truncate":
        cut = int(rng.integers(size))
        return bytes(buf[:cut]), f"bytes: truncated to {cut} of {size}"
    if choice == "bitflip":
        flips = int(rng.choice([1, 1, 2, 4, 8, 32]))
        for _ in range(flips):
            pos = int(rng.integers(size))
            buf[pos] ^= 1 << int(rng.integers(8))
        return bytes(buf), f"bytes: {flips} bit flip(s)"
    if choice == "insert":
        pos, count = int(rng.integers(size + 1)), int(rng.choice([1, 2, 4, 16, 100]))
        buf[pos:pos] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
        return bytes(buf), f"bytes: {count} inserted at {pos}"
    if choice == "delete":
        pos, count = int(rng.integers(size)), int(rng.choice([1, 2, 4, 16, 100]))
        del buf[pos:pos + count]
        return bytes(buf), f"bytes: {count} deleted at {pos}"
    if choice == "duplicate":
        pos, count = int(rng.integers(size)), int(rng.choice([2, 8, 64, 512]))
        buf[pos:pos] = buf[pos:pos + count]
        return bytes(buf), f"bytes: {count} duplicated at {pos}"
    if choice == "overwrite":
        pos, count = int(rng.integers(size)), int(rng.choice([1, 4, 16]))
        value = int(rng.choice([0x00, 0xFF, 0x7F, 0x80]))
        buf[pos:pos + count] = bytes([value]) * len(buf[pos:pos + count])
        return bytes(buf), f"bytes: {count} set to {value:#x} at {pos}"
    if choice == "varint":  # a length or int field made huge
        pos = int(rng.integers(size))
        buf[pos:pos + 1] = b"\xff\xff\xff\xff\x0f"
        return bytes(buf), f"bytes: a 2^32 varint at {pos}"
    return data * 2, "bytes: the model twice"


BYTE_MUTATIONS = ("truncate", "bitflip", "bitflip", "bitflip", "bitflip", "bitflip", "insert",
                  "delete", "duplicate", "overwrite", "overwrite", "varint", "doubled")


# ----------------------------------------------------------------------------- protobuf


Mutation = Callable[[onnx.ModelProto, dict[str, bytes], np.random.Generator], str | None]


def _proto_mutation(model: onnx.ModelProto, files: dict[str, bytes],
                    rng: np.random.Generator) -> str:
    names = list(PROTO_MUTATIONS)
    weights = np.array([PROTO_MUTATIONS[n][1] for n in names], float)
    for _ in range(20):
        name = str(rng.choice(names, p=weights / weights.sum()))
        try:
            described = PROTO_MUTATIONS[name][0](model, files, rng)
        except (AttributeError, IndexError, KeyError, ValueError, TypeError):
            described = None  # an earlier mutation left nothing this one applies to
        if described is not None:
            return f"{name}: {described}"
    return "none applicable"


def _pick(rng: np.random.Generator, items: Any) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))] if items else None


def _node_with_attrs(model: onnx.ModelProto, rng: np.random.Generator) -> Any:
    return _pick(rng, [n for n in model.graph.node if n.attribute])


def _random_attr(name: str, rng: np.random.Generator, kind: int | None = None
                 ) -> AttributeProto:
    kinds = [AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.STRING,
             AttributeProto.INTS, AttributeProto.FLOATS, AttributeProto.TENSOR,
             AttributeProto.STRINGS, AttributeProto.GRAPH]
    kind = kind if kind is not None else int(_pick(rng, kinds))
    if kind == AttributeProto.INT:
        return helper.make_attribute(name, _clamp64(_pick(rng, INTERESTING_INTS)))
    if kind == AttributeProto.FLOAT:
        return helper.make_attribute(name, float(_pick(rng, INTERESTING_FLOATS)))
    if kind == AttributeProto.STRING:
        return helper.make_attribute(name, str(_pick(rng, INTERESTING_STRINGS)))
    if kind == AttributeProto.INTS:
        count = int(_pick(rng, [0, 1, 2, 2, 4, 4, 4, 6]))
        values = [_clamp64(_pick(rng, INTERESTING_INTS[:12])) for _ in range(count)]
        attr = AttributeProto(name=name, type=AttributeProto.INTS)
        attr.ints.extend(values)
        return attr
    if kind == AttributeProto.FLOATS:
        attr = AttributeProto(name=name, type=AttributeProto.FLOATS)
        attr.floats.extend(float(_pick(rng, INTERESTING_FLOATS)) for _ in range(
            int(_pick(rng, [0, 1, 2, 4]))))
        return attr
    if kind == AttributeProto.TENSOR:
        value = np.asarray(rng.standard_normal(int(_pick(rng, [1, 2, 4]))), np.float32)
        return helper.make_attribute(name, numpy_helper.from_array(value))
    if kind == AttributeProto.STRINGS:
        return helper.make_attribute(name, ["a", "b"])
    graph = helper.make_graph([], "empty", [], [])
    return helper.make_attribute(name, graph)


def _clamp64(value: int) -> int:
    return max(-2**63, min(2**63 - 1, int(value)))


def m_attr_type(model, files, rng):
    node = _node_with_attrs(model, rng)
    if node is None:
        return None
    index = int(rng.integers(len(node.attribute)))
    name, old_type = node.attribute[index].name, node.attribute[index].type
    kinds = [k for k in (AttributeProto.INT, AttributeProto.FLOAT, AttributeProto.STRING,
                         AttributeProto.INTS, AttributeProto.FLOATS, AttributeProto.TENSOR,
                         AttributeProto.STRINGS, AttributeProto.GRAPH) if k != old_type]
    new = _random_attr(name, rng, int(_pick(rng, kinds)))
    node.attribute[index].CopyFrom(new)
    return f"{node.name}.{name} type {old_type} -> {new.type}"


def m_attr_value(model, files, rng):
    node = _node_with_attrs(model, rng)
    if node is None:
        return None
    attr = _pick(rng, node.attribute)
    if attr.type == AttributeProto.INT:
        attr.i = _clamp64(_pick(rng, INTERESTING_INTS))
        return f"{node.name}.{attr.name} = {attr.i}"
    if attr.type == AttributeProto.FLOAT:
        attr.f = float(_pick(rng, INTERESTING_FLOATS))
        return f"{node.name}.{attr.name} = {attr.f}"
    if attr.type == AttributeProto.STRING:
        attr.s = str(_pick(rng, INTERESTING_STRINGS)).encode("utf-8", "surrogatepass")
        return f"{node.name}.{attr.name} = {attr.s!r}"
    if attr.type == AttributeProto.INTS:
        values = list(attr.ints)
        how = int(rng.integers(4))
        if how == 0 and values:
            values[int(rng.integers(len(values)))] = _clamp64(_pick(rng, INTERESTING_INTS))
        elif how == 1:
            values = values[:-1]
        elif how == 2:
            values = values + [int(_pick(rng, [0, 1, 2, -1]))]
        else:
            values = []
        del attr.ints[:]
        attr.ints.extend(values)
        return f"{node.name}.{attr.name} = {values}"
    if attr.type == AttributeProto.FLOATS:
        values = [float(_pick(rng, INTERESTING_FLOATS)) for _ in range(len(attr.floats) or 1)]
        del attr.floats[:]
        attr.floats.extend(values)
        return f"{node.name}.{attr.name} = {values}"
    return None


BENIGN: dict[str, Callable[[np.random.Generator], Any]] = {
    "pads": lambda rng: [int(v) for v in rng.integers(0, 3, 4)],
    "strides": lambda rng: [int(v) for v in rng.integers(1, 4, 2)],
    "dilations": lambda rng: [int(v) for v in rng.integers(1, 3, 2)],
    "kernel_shape": lambda rng: [int(v) for v in rng.integers(1, 4, 2)],
    "ceil_mode": lambda rng: int(rng.integers(2)),
    "count_include_pad": lambda rng: int(rng.integers(2)),
    "auto_pad": lambda rng: str(_pick(rng, ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])),
    "alpha": lambda rng: float(np.float32(_pick(rng, [0.0, 0.1, 0.5, 1.0, 2.0, -1.0]))),
    "beta": lambda rng: float(np.float32(_pick(rng, [0.0, 0.5, 1.0, -1.0]))),
    "epsilon": lambda rng: float(np.float32(_pick(rng, [0.0, 1e-5, 1e-3, 1.0]))),
    "axis": lambda rng: int(rng.integers(-3, 4)),
    "transA": lambda rng: int(rng.integers(2)), "transB": lambda rng: int(rng.integers(2)),
    "keepdims": lambda rng: int(rng.integers(2)),
    "mode": lambda rng: str(_pick(rng, ["nearest", "linear", "cubic"])),
    "coordinate_transformation_mode": lambda rng: str(_pick(
        rng, ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel",
              "tf_crop_and_resize", "half_pixel_symmetric"])),
    "nearest_mode": lambda rng: str(_pick(rng, ["round_prefer_floor", "round_prefer_ceil",
                                                "floor", "ceil"])),
    "group": lambda rng: int(_pick(rng, [1, 2, 3, 4, 6, 8])),
    "output_padding": lambda rng: [int(v) for v in rng.integers(0, 2, 2)],
    "min": lambda rng: float(np.float32(_pick(rng, [-1.0, 0.0, 0.5]))),
    "max": lambda rng: float(np.float32(_pick(rng, [0.5, 1.0, 6.0]))),
}


def m_attr_benign(model, files, rng):
    """A plausible value for an attribute the op reads (geometry, modes, flags): the valid
    combinations the engine must compute right."""
    node = _pick(rng, model.graph.node)
    names = [n for n in KNOWN_ATTRS.get(node.op_type, []) if n in BENIGN]
    if not names:
        return None
    name = str(_pick(rng, names))
    value = BENIGN[name](rng)
    kept = [a for a in node.attribute if a.name != name]
    if name == "auto_pad" and value != "NOTSET":
        kept = [a for a in kept if a.name != "pads"]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])
    return f"{node.name}.{name} = {value!r}"


def m_input_hw(model, files, rng):
    """Other static spatial sizes of a 4-D input (the feeds follow)."""
    inputs = [v for v in model.graph.input if len(v.type.tensor_type.shape.dim) == 4]
    value = _pick(rng, inputs)
    if value is None:
        return None
    dims = value.type.tensor_type.shape.dim
    if dims[2].HasField("dim_value") and dims[2].dim_value == 1:
        return None  # a per-channel input such as multi_output's scale
    h, w = (int(v) for v in rng.integers(1, 18, 2))
    dims[2].dim_value, dims[3].dim_value = h, w
    return f"input {value.name}: {h}x{w}"


def m_attr_add(model, files, rng):
    node = _pick(rng, model.graph.node)
    known = KNOWN_ATTRS.get(node.op_type, [])
    name = str(_pick(rng, known + ["bogus"])) if known else "bogus"
    if name in INT_ATTRS:
        attr = _random_attr(name, rng, AttributeProto.INT)
    elif name in FLOAT_ATTRS:
        attr = _random_attr(name, rng, AttributeProto.FLOAT)
    elif name in STRING_ATTRS:
        attr = _random_attr(name, rng, AttributeProto.STRING)
    elif name != "bogus" and rng.random() < 0.8:
        attr = _random_attr(name, rng, AttributeProto.INTS)
    else:
        attr = _random_attr(name, rng)
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, attr])
    return f"{node.name}.{name} = {helper.get_attribute_value(attr)!r}"[:200]


def m_attr_remove(model, files, rng):
    node = _node_with_attrs(model, rng)
    if node is None:
        return None
    index = int(rng.integers(len(node.attribute)))
    name = node.attribute[index].name
    del node.attribute[index]
    return f"{node.name}.{name} removed"


def m_attr_duplicate(model, files, rng):
    node = _node_with_attrs(model, rng)
    if node is None:
        return None
    attr = copy.deepcopy(_pick(rng, node.attribute))
    node.attribute.append(attr)
    return f"{node.name}.{attr.name} twice"


def _initializer(model, rng):
    return _pick(rng, model.graph.initializer)


def m_init_dims(model, files, rng):
    init = _initializer(model, rng)
    if init is None:
        return None
    dims = list(init.dims)
    how = int(rng.integers(5))
    if how == 0 and dims:
        dims[int(rng.integers(len(dims)))] = _clamp64(_pick(rng, INTERESTING_INTS))
    elif how == 1 and dims:
        dims = dims[:-1]
    elif how == 2:
        dims = [*dims, 1]
    elif how == 3 and len(dims) >= 2:
        dims[0], dims[1] = dims[1], dims[0]
    else:
        dims = [int(np.prod(dims))] if dims else [1]
    del init.dims[:]
    init.dims.extend(dims)
    return f"{init.name} dims {dims}"


def m_init_dtype(model, files, rng):
    init = _initializer(model, rng)
    if init is None:
        return None
    init.data_type = int(_pick(rng, DTYPES))
    return f"{init.name} data_type {init.data_type}"


def m_init_values(model, files, rng):
    init = _initializer(model, rng)
    if init is None or init.data_location == TensorProto.EXTERNAL:
        return None
    try:
        value = numpy_helper.to_array(init).copy()
    except Exception:
        return None
    if value.dtype.kind != "f" or value.size == 0:
        return None
    special = float(_pick(rng, [math.nan, math.inf, -math.inf, 3e38, -3e38, 1e30, 1e-42, 0.0,
                                1e4, -1e4]))
    where = str(_pick(rng, ["one", "some", "all"]))
    flat = value.reshape(-1)
    if where == "one":
        flat[int(rng.integers(flat.size))] = special
    elif where == "some":
        flat[rng.random(flat.size) < 0.2] = special
    else:
        flat[:] = special
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    return f"{init.name}: {special} at {where}"


def m_init_reshape(model, files, rng):
    """The same name, valid data of another shape (BN parameters of the wrong size, a size-0
    bias, a vector Clip bound, a scalar weight)."""
    init = _initializer(model, rng)
    if init is None:
        return None
    try:
        dtype = numpy_helper.to_array(init).dtype
    except Exception:
        dtype = np.dtype(np.float32)
    shape = _pick(rng, [(), (0,), (1,), (2,), (3,), (7,), (16,), (1, 1), (2, 3), (8, 3, 3, 3),
                        (8, 3, 1, 1), (1, 8, 1, 1), (3, 3, 3, 3, 3)])
    value = _random_array(tuple(shape), dtype, rng)
    init.CopyFrom(numpy_helper.from_array(value, init.name))
    return f"{init.name} replaced by shape {tuple(shape)}"


def m_input_shape(model, files, rng):
    value = _pick(rng, model.graph.input)
    if value is None:
        return None
    tt = value.type.tensor_type
    how = int(rng.integers(5))
    if how == 0 or not tt.HasField("shape") or not tt.shape.dim:
        tt.ClearField("shape")
        return f"input {value.name}: no shape"
    dims = tt.shape.dim
    if how == 1:
        dims[int(rng.integers(len(dims)))].dim_value = _clamp64(_pick(
            rng, [0, 1, 2, 3, 5, 9, 64, -1, 2**31 - 1, 2**40]))
    elif how == 2:
        dims[int(rng.integers(len(dims)))].dim_param = str(_pick(rng, ["N", "H", "", "?"]))
    elif how == 3:
        del dims[-1]
    else:
        dims.add().dim_value = 1
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return f"input {value.name}: shape {shape}"


def m_io_dtype(model, files, rng):
    value = _pick(rng, [*model.graph.input, *model.graph.output])
    if value is None:
        return None
    value.type.tensor_type.elem_type = int(_pick(rng, DTYPES))
    return f"{value.name} elem_type {value.type.tensor_type.elem_type}"


def _tensor_names(model) -> list[str]:
    names = [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]
    names += [o for n in model.graph.node for o in n.output if o]
    return names


def m_name_missing(model, files, rng):
    how = int(rng.integers(8))
    graph = model.graph
    if how == 0 and graph.initializer:
        index = int(rng.integers(len(graph.initializer)))
        name = graph.initializer[index].name
        del graph.initializer[index]
        return f"initializer {name} removed"
    node = _pick(rng, graph.node)
    if how == 1 and node.input:
        i = int(rng.integers(len(node.input)))
        node.input[i] = ""
        return f"{node.name} input {i} blanked"
    if how == 2 and node.input:
        i = int(rng.integers(len(node.input)))
        node.input[i] = "undefined_tensor"
        return f"{node.name} input {i} undefined"
    if how == 3:
        index = int(rng.integers(len(graph.input)))
        name = graph.input[index].name
        del graph.input[index]
        return f"graph input {name} removed"
    if how == 4:
        node.output[0] = ""
        return f"{node.name} output blanked"
    if how == 5:
        graph.output[int(rng.integers(len(graph.output)))].name = "no_such_output"
        return "graph output renamed to no_such_output"
    if how == 6:
        del graph.output[:]
        return "no graph outputs"
    node.name = ""
    return "a node without a name"


def m_name_duplicate(model, files, rng):
    how = int(rng.integers(7))
    graph = model.graph
    if how == 0 and graph.initializer:
        init = copy.deepcopy(_pick(rng, graph.initializer))
        if rng.random() < 0.7 and init.data_location != TensorProto.EXTERNAL:
            try:
                value = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(
                    _random_array(value.shape, value.dtype, rng), init.name))
            except Exception:
                pass
        graph.initializer.append(init)
        return f"initializer {init.name} twice"
    if how == 1 and len(graph.node) > 1:
        a, b = rng.choice(len(graph.node), 2, replace=False)
        graph.node[int(a)].output[0] = graph.node[int(b)].output[0]
        return f"{graph.node[int(a)].name} writes {graph.node[int(b)].output[0]} too"
    if how == 2 and graph.initializer:
        init = _pick(rng, graph.initializer)
        graph.input.append(helper.make_tensor_value_info(
            init.name, init.data_type, list(init.dims)))
        return f"graph input named like initializer {init.name} (an overridable default)"
    if how == 3:
        graph.input.append(copy.deepcopy(graph.input[0]))
        return f"graph input {graph.input[0].name} twice"
    if how == 4:
        graph.output.append(copy.deepcopy(graph.output[0]))
        return f"graph output {graph.output[0].name} twice"
    if how == 5:
        node = copy.deepcopy(_pick(rng, graph.node))
        graph.node.append(node)
        return f"node {node.name} twice"
    node = _pick(rng, graph.node)
    node.output[0] = graph.input[0].name
    return f"{node.name} writes graph input {graph.input[0].name}"


def m_cycle(model, files, rng):
    nodes = model.graph.node
    if len(nodes) < 2:
        return None
    i = int(rng.integers(len(nodes)))
    j = int(rng.integers(i, len(nodes)))
    if not nodes[i].input:
        return None
    nodes[i].input[0] = nodes[j].output[0]
    return f"{nodes[i].name} reads {nodes[j].output[0]} (from {nodes[j].name})"


def m_opset(model, files, rng):
    how = int(rng.integers(5))
    if how <= 1:
        version = int(_pick(rng, OPSETS))
        for op in model.opset_import:
            if op.domain in ("", "ai.onnx"):
                op.version = version
        return f"opset {version}"
    if how == 2:
        model.ir_version = int(_pick(rng, IR_VERSIONS))
        return f"ir_version {model.ir_version}"
    if how == 3:
        del model.opset_import[:]
        return "no opset_import"
    model.opset_import.append(helper.make_opsetid(str(_pick(rng, DOMAINS)), 1))
    return f"extra opset {model.opset_import[-1].domain!r}"


def m_op_type(model, files, rng):
    node = _pick(rng, model.graph.node)
    if rng.random() < 0.8:
        old, node.op_type = node.op_type, str(_pick(rng, OTHER_OPS))
        return f"{node.name}: {old} -> {node.op_type!r}"
    node.domain = str(_pick(rng, DOMAINS))
    return f"{node.name} domain {node.domain!r}"


def m_node_io(model, files, rng):
    graph = model.graph
    node = _pick(rng, graph.node)
    how = int(rng.integers(6))
    if how == 0:
        node.input.append(str(_pick(rng, _tensor_names(model))))
        return f"{node.name} gets extra input {node.input[-1]}"
    if how == 1 and node.input:
        del node.input[-1]
        return f"{node.name} loses its last input"
    if how == 2:
        node.output.append(f"{node.output[0]}_extra")
        return f"{node.name} gets a second output"
    if how == 3 and len(node.input) >= 2:
        node.input[0], node.input[1] = node.input[1], node.input[0]
        return f"{node.name} inputs 0 and 1 swapped"
    if how == 4 and len(graph.node) > 1:
        index = int(rng.integers(len(graph.node)))
        name = graph.node[index].name
        del graph.node[index]
        return f"node {name} deleted"
    if node.input:
        node.input[0] = str(_pick(rng, _tensor_names(model)))
        return f"{node.name} reads {node.input[0]}"
    return None


def m_extra_output(model, files, rng):
    """A valid change: an intermediate tensor becomes a graph output too (fused and folded
    nodes must still produce it)."""
    node = _pick(rng, model.graph.node)
    name = node.output[0]
    if any(o.name == name for o in model.graph.output):
        return None
    elem = TensorProto.INT64 if node.op_type in ("Shape", "Gather", "Unsqueeze", "Concat") \
        else TensorProto.BOOL if node.op_type == "Greater" else TensorProto.FLOAT
    model.graph.output.insert(int(rng.integers(len(model.graph.output) + 1)),
                              helper.make_tensor_value_info(name, elem, None))
    return f"{name} ({node.op_type}) is a graph output too"


def m_constant_node(model, files, rng):
    """An initializer becomes a Constant node (valid), sometimes with a bad value attribute."""
    init = _initializer(model, rng)
    if init is None or init.data_location == TensorProto.EXTERNAL:
        return None
    graph = model.graph
    graph.initializer.remove(init)
    how = int(rng.integers(4))
    if how <= 1:
        node = helper.make_node("Constant", [], [init.name], name=f"const_{init.name}",
                                value=init)
    elif how == 2:
        node = helper.make_node("Constant", [], [init.name], name=f"const_{init.name}",
                                value_floats=[1.0, 2.0])
    else:
        node = helper.make_node("Constant", [], [init.name], name=f"const_{init.name}")
    graph.node.insert(int(rng.integers(len(graph.node) + 1)), node)
    return f"{init.name} as a Constant node ({['tensor', 'tensor', 'floats', 'no value'][how]})"


def m_value_info(model, files, rng):
    node = _pick(rng, model.graph.node)
    dims = [int(_pick(rng, [1, 2, 3, 8, 0])) for _ in range(int(rng.integers(1, 5)))]
    model.graph.value_info.append(helper.make_tensor_value_info(
        node.output[0], int(_pick(rng, [1, 1, 7, 11])), dims))
    return f"value_info {node.output[0]} {dims}"


def m_sparse(model, files, rng):
    sparse = _pick(rng, model.graph.sparse_initializer)
    if sparse is None:
        return None
    indices = numpy_helper.to_array(sparse.indices).copy()
    how = int(rng.integers(9))
    if how == 0 and indices.size:
        indices.reshape(-1)[int(rng.integers(indices.size))] = _clamp64(
            _pick(rng, [-1, 10**6, 2**31, 2**62, -2**63]))
        text = "an index out of range"
    elif how == 1 and indices.shape[0] > 1:
        indices[1] = indices[0]
        text = "a repeated index"
    elif how == 2:
        indices = indices[:-1]
        text = "one index fewer than values"
    elif how == 3:
        indices = indices.astype(np.int32)
        text = "int32 indices"
    elif how == 4:
        indices = indices.reshape(-1)
        text = f"indices reshaped to {indices.shape}"
    elif how == 5:
        dims = list(sparse.dims)
        dims[int(rng.integers(len(dims)))] = _clamp64(_pick(rng, [0, 1, -1, 2**40]))
        del sparse.dims[:]
        sparse.dims.extend(dims)
        return f"{sparse.values.name} dims {dims}"
    elif how == 6:
        sparse.values.CopyFrom(numpy_helper.from_array(
            np.full(numpy_helper.to_array(sparse.values).size, np.nan, np.float32),
            sparse.values.name))
        return f"{sparse.values.name} values NaN"
    elif how == 7:
        indices = indices[::-1].copy()
        text = "indices in reverse order"
    else:
        model.graph.initializer.append(numpy_helper.from_array(
            np.zeros(1, np.float32), sparse.values.name))
        return f"{sparse.values.name} also a dense initializer"
    sparse.indices.CopyFrom(numpy_helper.from_array(indices, sparse.indices.name))
    return f"{sparse.values.name}: {text}"


def m_external(model, files, rng):
    """External-data paths, offsets and files; a dense model gets an external tensor."""
    tensors = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    if not tensors:
        init = _initializer(model, rng)
        if init is None:
            return None
        raw = numpy_helper.to_array(init).tobytes()
        name = str(_pick(rng, ["w.bin", "../w.bin", "sub/w.bin", "/tmp/w.bin"]))
        if not name.startswith(("/", "..")):
            files[name] = raw
        _make_external(init, name, 0, len(raw))
        return f"{init.name} to external data {name!r}"
    tensor = _pick(rng, tensors)
    entries = {e.key: e for e in tensor.external_data}
    how = int(rng.integers(10))
    if how == 0:
        entries["location"].value = str(_pick(rng, ["/etc/passwd", "/dev/zero", "/proc/self/mem",
                                                    "../" + EXTERNAL_FILE, ".", "",
                                                    "sub/../" + EXTERNAL_FILE, "missing.bin",
                                                    EXTERNAL_FILE + "\0x", "a" * 300]))
        return f"{tensor.name} location {entries['location'].value!r}"
    if how == 1:
        entries["offset"].value = str(_clamp64(_pick(rng, [-1, 1, 3, 10**9, 2**63 - 1])))
        return f"{tensor.name} offset {entries['offset'].value}"
    if how == 2:
        entries["length"].value = str(_clamp64(_pick(rng, [-1, 0, 1, 10**9, 2**40])))
        return f"{tensor.name} length {entries['length'].value}"
    if how == 3:
        entries["offset"].value = "abc"
        return f"{tensor.name} offset 'abc'"
    if how == 4:
        files.clear()
        return "the external data file is missing"
    if how == 5:
        for key in list(files):
            files[key] = files[key][: len(files[key]) // 2]
        return "the external data file is truncated"
    if how == 6:
        del tensor.external_data[:]
        return f"{tensor.name}: EXTERNAL without entries"
    if how == 7:
        tensor.data_location = TensorProto.DEFAULT
        return f"{tensor.name}: external entries but DEFAULT location"
    if how == 8:
        entry = tensor.external_data.add()
        entry.key, entry.value = "checksum", "bogus"
        return f"{tensor.name}: extra key"
    for key in list(files):
        files[f"sub/{key}"] = files.pop(key)
    return "the external data file moved to sub/"


def _make_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def m_graph_attr(model, files, rng):
    """A subgraph attribute (If/Loop body shape) on a plain node, or an If node."""
    node = _pick(rng, model.graph.node)
    body = helper.make_graph([helper.make_node("Identity", [node.input[0] if node.input
                                                            else "x"], ["inner"])],
                             "body", [], [helper.make_tensor_value_info("inner", 1, None)])
    node.attribute.append(helper.make_attribute("then_branch", body))
    return f"{node.name} gets a graph attribute"


PROTO_MUTATIONS: dict[str, tuple[Mutation, float]] = {
    "attr_benign": (m_attr_benign, 6.0),
    "input_hw": (m_input_hw, 2.5),
    "attr_type": (m_attr_type, 1.5),
    "attr_value": (m_attr_value, 3.0),
    "attr_add": (m_attr_add, 2.0),
    "attr_remove": (m_attr_remove, 1.0),
    "attr_duplicate": (m_attr_duplicate, 0.3),
    "init_dims": (m_init_dims, 1.5),
    "init_dtype": (m_init_dtype, 0.6),
    "init_values": (m_init_values, 4.0),
    "init_reshape": (m_init_reshape, 2.0),
    "input_shape": (m_input_shape, 1.2),
    "io_dtype": (m_io_dtype, 0.8),
    "name_missing": (m_name_missing, 1.2),
    "name_duplicate": (m_name_duplicate, 1.2),
    "cycle": (m_cycle, 0.4),
    "opset": (m_opset, 1.5),
    "op_type": (m_op_type, 1.5),
    "node_io": (m_node_io, 1.2),
    "extra_output": (m_extra_output, 2.5),
    "constant_node": (m_constant_node, 1.5),
    "value_info": (m_value_info, 0.5),
    "sparse": (m_sparse, 1.5),
    "external": (m_external, 1.5),
    "graph_attr": (m_graph_attr, 0.2),
}
INPUT_MUTATIONS = 16
