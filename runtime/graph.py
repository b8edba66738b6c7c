"""ONNX model -> typed graph: nodes in topological order, constants as NumPy, declared inputs
and outputs.

Reads any ONNX graph: dense initializers, COO ``sparse_initializer``s (as written by the compile
stage's ``model.sparse.onnx``), ``Constant`` nodes, weights in external data files (resolved
against the model's folder, never the current directory), any number of inputs and outputs of
any dtype, and symbolic, ``0`` or ``-1`` dims (all "dynamic"). Structural faults (duplicate
names, cycles, undefined inputs, unreadable tensors, a path that is not a regular file, a name
that is not UTF-8) raise :class:`ModelLoadError`, and so does what ONNX Runtime refuses at load:
a node that breaks its operator's schema (unknown or repeated attributes, wrong attribute types,
input counts) or a type ONNX's strict type and shape inference rejects (``check_onnx_rules``).
Which operators run natively is decided later (``runtime.partition``), so a model is never
refused here for its operators.
"""

from __future__ import annotations

import heapq
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featherdeploy.runtime.const_tables import SHARED_CONST_MIN_FLOATS, as_table_view
from featherdeploy.runtime.errors import ModelLoadError

__all__ = ["ONNX_DOMAINS", "MAX_MODEL_BYTES", "TensorInfo", "Node", "Graph", "load_graph",
           "parse_model_bytes", "topological_order"]

ONNX_DOMAINS = ("", "ai.onnx")
MAX_MODEL_BYTES = 2**31 - 1  # protobuf's limit for one message (bigger weights: external data)
_ELEM_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
               7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32,
               13: np.uint64}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type and declared shape (None: dynamic dim)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...] | None  # None: rank unknown

    def describe(self) -> str:
        dims = "?" if self.shape is None else ", ".join(
            "?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {np.dtype(self.dtype).name} ({dims})"


@dataclass
class Node:
    """One ONNX node; ``inputs`` keeps "" for omitted optional inputs. ``proto`` is the original
    NodeProto (None for nodes a rewrite made), which ONNX Runtime segments reuse verbatim."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    proto: Any = None

    def describe(self) -> str:
        """'Conv node "layer1.0.conv1"' - how errors name a node."""
        op = self.op if self.domain in ONNX_DOMAINS else f"{self.domain}.{self.op}"
        return f'{op} node "{self.name}"'

    def input(self, index: int) -> str:
        """Name of input ``index`` ("" when omitted)."""
        return self.inputs[index] if index < len(self.inputs) else ""

    # Typed attribute access: a wrong ONNX attribute type is a model error, never a crash.
    def attr_int(self, name: str, default: int) -> int:
        value = self.attrs.get(name, default)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be an int")
        return int(value)

    def attr_float(self, name: str, default: float) -> float:
        value = self.attrs.get(name, default)
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be a float")
        return float(value)

    def attr_ints(self, name: str, default: tuple[int, ...] | None = None
                  ) -> tuple[int, ...] | None:
        value = self.attrs.get(name)
        if value is None:
            return default
        if not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be a list of ints")
        return tuple(int(v) for v in value)

    def attr_floats(self, name: str, default: tuple[float, ...] | None = None
                    ) -> tuple[float, ...] | None:
        value = self.attrs.get(name)
        if value is None:
            return default
        if not isinstance(value, (list, tuple)) or any(
                isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be a list of floats")
        return tuple(float(v) for v in value)

    def attr_str(self, name: str, default: str) -> str:
        value = self.attrs.get(name, default)
        if not isinstance(value, str):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be a string")
        return value

    def attr_tensor(self, name: str) -> np.ndarray | None:
        value = self.attrs.get(name)
        if value is None:
            return None
        if not isinstance(value, np.ndarray):
            raise ModelLoadError(f"{self.describe()}: attribute {name} must be a tensor")
        return value


@dataclass
class Graph:
    """A validated graph: nodes in topological order, constants, declared inputs / outputs."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    opset: int
    opsets: dict[str, int] = field(default_factory=dict)  # every imported domain's version
    ir_version: int = 8
    # Rewrites record which node each removed node went into (first output -> first output),
    # so reports can say where a fused node runs.
    merged: dict[str, str] = field(default_factory=dict)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    # Single-input, single-output conveniences (most CNNs; kernel tests build such graphs).
    @property
    def input_name(self) -> str:
        return self._only(self.inputs, "input").name

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        shape = self._only(self.inputs, "input").shape
        if shape is None:
            raise ModelLoadError(f"input {self.input_name!r} has no declared shape")
        return shape

    @property
    def output_name(self) -> str:
        return self._only(self.outputs, "output").name

    @staticmethod
    def _only(infos: list[TensorInfo], what: str) -> TensorInfo:
        if len(infos) != 1:
            raise ModelLoadError(f"the graph has {len(infos)} {what}s, not one")
        return infos[0]

    @classmethod
    def simple(cls, nodes: list[Node], constants: dict[str, np.ndarray], input_name: str,
               input_shape: tuple[int | None, ...], output_name: str, opset: int = 13) -> Graph:
        """A float32 single-input, single-output graph (tests, kernel plans)."""
        return cls(nodes, constants, [TensorInfo(input_name, np.dtype(np.float32), input_shape)],
                   [TensorInfo(output_name, np.dtype(np.float32), None)], opset)


def load_graph(path: str | Path) -> Graph:
    """Read and validate the ONNX file at ``path`` (external data next to it). The file's
    bytes are released once parsed, before the initializers are copied out of the model: the
    peak is two copies of the weights, not three (ResNet-50: 341 -> 243 MiB)."""
    path = Path(path)
    return _with_tables(_graph_of(_parse_model(_read_model_file(path), str(path)), str(path),
                                  path.parent))


def _read_model_file(path: Path) -> bytes:
    """The file's bytes; only regular files of at most MAX_MODEL_BYTES (a FIFO would block, a
    device such as /dev/zero would never end)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ModelLoadError(f"model path {str(path)!r} is not a regular file")
        if info.st_size > MAX_MODEL_BYTES:
            raise ModelLoadError(f"model file {str(path)!r} is larger than 2 GB; store its "
                                 "weights as ONNX external data")
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise ModelLoadError(f"cannot read model file {str(path)!r}: {reason}") from None


def parse_model_bytes(data: bytes, source: str = "<bytes>", base_dir: Path | None = None
                      ) -> Graph:
    """Parse serialized ONNX bytes into a validated :class:`Graph`; external data is read from
    ``base_dir`` (a model given as bytes without one may not use external data)."""
    return _with_tables(_graph_of(_parse_model(data, source), source, base_dir))


def _with_tables(graph: Graph) -> Graph:
    """Moves each large float32 constant into a constant table of its own, once the parsed
    model is released (the peak stays two copies of one tensor): native plans then read it in
    place instead of each holding a copy (runtime/const_tables.py)."""
    for name, value in graph.constants.items():
        if value.dtype == np.float32 and value.size >= SHARED_CONST_MIN_FLOATS:
            graph.constants[name] = as_table_view(value)
    return graph


def _parse_model(data: bytes, source: str) -> Any:
    """The ModelProto serialized in ``data``."""
    import onnx  # lazy: keeps `import runtime` cheap

    try:
        return onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{source} is not a valid ONNX model ({type(exc).__name__})") from None


def _graph_of(model: Any, source: str, base_dir: Path | None) -> Graph:
    """A validated :class:`Graph` of a parsed model."""
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{source} is not a valid ONNX model (no graph or no nodes)")
    _check_text(model, source)
    opsets = {o.domain or "": int(o.version) for o in model.opset_import}
    opset = _default_opset(model, opsets, source)
    _load_external_data(model, source, base_dir)
    constants = _read_initializers(model.graph, source)
    nodes = [_read_node(n, i, source) for i, n in enumerate(model.graph.node)]
    nodes, constants = _extract_constant_nodes(nodes, constants, source)
    inputs = [_tensor_info(v, source, "input") for v in model.graph.input
              if v.name not in constants]
    outputs = [_tensor_info(v, source, "output") for v in model.graph.output]
    _check_names(nodes, constants, inputs, outputs, source)
    nodes = topological_order(nodes, {t.name for t in inputs} | set(constants), source)
    check_onnx_rules(model, source)
    return Graph(nodes, constants, inputs, outputs, opset, opsets, int(model.ir_version))


def _default_opset(model: Any, opsets: dict[str, int], source: str) -> int:
    """The default domain's opset: imported once ("" and "ai.onnx" alike) and not newer than
    the ONNX this runs with knows (ONNX Runtime refuses those too)."""
    from onnx.defs import onnx_opset_version

    versions = {int(o.version) for o in model.opset_import if (o.domain or "") in ONNX_DOMAINS}
    if not versions:
        raise ModelLoadError(f"{source} declares no default-domain opset")
    if len(versions) > 1:
        raise ModelLoadError(f"{source} imports the default domain twice, at opsets "
                             f"{sorted(versions)}")
    opset = versions.pop()
    if not 1 <= opset <= onnx_opset_version():
        raise ModelLoadError(f"{source}: opset {opset} is outside 1..{onnx_opset_version()}")
    return opset


def _check_text(model: Any, source: str) -> None:
    """Every name is text: protobuf hands out a string field holding invalid UTF-8 as bytes."""
    graph = model.graph
    names = [o.domain for o in model.opset_import]
    for node in graph.node:
        names += [node.op_type, node.name, node.domain, *node.input, *node.output,
                  *(a.name for a in node.attribute)]
    for tensor in [*graph.initializer, *(s.values for s in graph.sparse_initializer)]:
        names += [tensor.name, *(e.key for e in tensor.external_data),
                  *(e.value for e in tensor.external_data)]
    names += [v.name for v in (*graph.input, *graph.output, *graph.value_info)]
    bad = next((n for n in names if not isinstance(n, str)), None)
    if bad is not None:
        raise ModelLoadError(f"{source}: a name is not valid UTF-8 text ({bad[:40]!r})")


def check_onnx_rules(model: Any, source: str = "<model>") -> None:
    """The checks ONNX Runtime makes when it loads a model, so that a model it refuses is refused
    here too instead of getting invented semantics: every node against its operator's schema at
    the imported opset (known attributes of the right type, none twice, required ones present,
    input and output counts), then ONNX's type and shape inference in strict mode (type
    constraints, attribute sizes such as pads, declared output and value_info types).
    Operators of other domains pass (ONNX Runtime decides)."""
    import onnx
    from onnx import checker

    if not 0 <= model.ir_version <= onnx.IR_VERSION:
        raise ModelLoadError(f"{source}: unsupported IR version {model.ir_version}")
    ctx = checker.C.CheckerContext()
    ctx.ir_version = model.ir_version
    ctx.opset_imports = _opset_imports(model)
    local = {(f.domain, f.name) for f in model.functions}
    for node in model.graph.node:
        if node.domain not in ONNX_DOMAINS or (node.domain, node.op_type) in local:
            continue
        try:
            checker.check_node(_checkable(node), ctx)
        except Exception as exc:  # checker.ValidationError and friends
            name = node.name or node.op_type
            raise ModelLoadError(f"{source}: node {name!r} ({node.op_type}) is invalid: "
                                 f"{_first_line(exc)}") from None
    try:
        onnx.shape_inference.infer_shapes(_without_weights(model), check_type=True,
                                          strict_mode=True)
    except Exception as exc:  # InferenceError, ValidationError
        raise ModelLoadError(f"{source}: ONNX type and shape inference fails: "
                             f"{_first_line(exc)}") from None


def _opset_imports(model: Any) -> dict[str, int]:
    """Imported opsets by domain; "" and "ai.onnx" name the same domain (ONNX Runtime reads a
    node of either with the other's import)."""
    imports = {o.domain or "": int(o.version) for o in model.opset_import}
    for a, b in (("", "ai.onnx"), ("ai.onnx", "")):
        if a in imports and b not in imports:
            imports[b] = imports[a]
    return imports


def _first_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _checkable(node: Any) -> Any:
    """``node`` as the checker should see it: domain "ai.onnx" as "", every graph attribute
    emptied (the checker would judge a subgraph's references to outer tensors without the
    outer scope)."""
    from onnx import AttributeProto, GraphProto

    if node.domain != "ai.onnx" and not any(
            a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
        return node
    copy = type(node)()
    copy.CopyFrom(node)
    if copy.domain == "ai.onnx":
        copy.domain = ""
    for attr in copy.attribute:
        if attr.type == AttributeProto.GRAPH:
            attr.g.CopyFrom(GraphProto(name=attr.g.name))
        elif attr.type == AttributeProto.GRAPHS:
            for graph in attr.graphs:
                graph.CopyFrom(GraphProto(name=graph.name))
    return copy


_KEEP_VALUES = 64  # initializers up to this many elements keep their values for inference


def _without_weights(model: Any) -> Any:
    """A copy of ``model`` for inference: big initializers keep their type and dims but no values
    (sparse initializers appear as such dense ones), outputs and value_info their types only."""
    from onnx import ModelProto, TensorProto, helper

    graph = model.graph
    copy = ModelProto(ir_version=model.ir_version, functions=model.functions)
    imports = _opset_imports(model)
    for node in graph.node:  # other domains' nodes without an import: ONNX Runtime decides
        imports.setdefault(node.domain, 1)
    copy.opset_import.extend(helper.make_opsetid(d, v) for d, v in imports.items())
    copy.graph.name = graph.name
    copy.graph.node.extend(_sorted_nodes(graph))  # ONNX Runtime sorts them; inference does not
    for node in copy.graph.node:
        if node.domain == "ai.onnx":
            node.domain = ""
    copy.graph.input.extend(graph.input)
    # Declared shapes of outputs and intermediate tensors are hints (ONNX Runtime uses the
    # inferred ones when they differ); their element types must hold.
    for field_name in ("output", "value_info"):
        for value in getattr(graph, field_name):
            kept = getattr(copy.graph, field_name).add()
            kept.CopyFrom(value)
            if kept.type.HasField("tensor_type"):
                kept.type.tensor_type.ClearField("shape")
    for init in graph.initializer:
        small = math.prod(init.dims) <= _KEEP_VALUES and init.data_location != TensorProto.EXTERNAL
        if small:
            copy.graph.initializer.append(init)
        else:
            copy.graph.initializer.append(TensorProto(name=init.name, data_type=init.data_type,
                                                      dims=init.dims))
    for sparse in graph.sparse_initializer:
        copy.graph.initializer.append(TensorProto(name=sparse.values.name,
                                                  data_type=sparse.values.data_type,
                                                  dims=sparse.dims))
    return copy


def _sorted_nodes(graph: Any) -> list[Any]:
    """The graph's NodeProtos in a topological order (file order where it is one)."""
    nodes = list(graph.node)
    done = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {
        s.values.name for s in graph.sparse_initializer} | {""}
    ordered, waiting = [], nodes
    while waiting:
        left = []
        for node in waiting:
            if all(name in done for name in node.input):
                ordered.append(node)
                done.update(node.output)
            else:
                left.append(node)
        if len(left) == len(waiting):  # not a DAG of explicit inputs: keep the rest as is
            return ordered + left
        waiting = left
    return ordered


_EXTERNAL_KEYS = ("location", "offset", "length", "checksum")


def _load_external_data(model: Any, source: str, base_dir: Path | None) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    tensors = [*model.graph.initializer, *(s.values for s in model.graph.sparse_initializer),
               *(s.indices for s in model.graph.sparse_initializer)]
    if not any(uses_external_data(t) for t in tensors):
        return
    if base_dir is None:
        raise ModelLoadError(f"{source} stores weights as external data; load it from its file")
    base = base_dir.resolve()
    for tensor in tensors:
        if not uses_external_data(tensor):
            continue
        unknown = [e.key for e in tensor.external_data if e.key not in _EXTERNAL_KEYS]
        if unknown:
            raise ModelLoadError(f"{source}: external data of {tensor.name!r} has unknown keys "
                                 f"{unknown}")
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        try:
            target = (base / location).resolve()
        except (OSError, ValueError, TypeError):  # a NUL byte, a loop of links
            target = base
        # ".." leaves the folder, or needs a folder that may not exist ("sub/../w.bin" opens
        # only when sub/ does, whatever the path arithmetic says)
        if (not location or os.path.isabs(location) or ".." in Path(location).parts
                or base not in target.parents):
            raise ModelLoadError(f"{source}: external data of {tensor.name!r} must be a file "
                                 f"inside the model's folder, got {location!r}")
        if not target.is_file():
            raise ModelLoadError(f"{source}: external data file {str(target)!r} of "
                                 f"{tensor.name!r} is missing")
    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:  # onnx raises OSError, ValueError, ... for bad offsets / files
        raise ModelLoadError(f"{source}: unreadable external data ({exc})") from None


def _read_initializers(graph: Any, source: str) -> dict[str, np.ndarray]:
    constants: dict[str, np.ndarray] = {}
    try:
        for init in graph.initializer:
            _add_constant(constants, init.name, _tensor_array(init), source)
        for sparse in graph.sparse_initializer:
            _add_constant(constants, sparse.values.name, _sparse_to_dense(sparse), source)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{source}: unreadable initializer ({exc})") from None
    return constants


def _add_constant(constants: dict[str, np.ndarray], name: str, value: np.ndarray,
                  source: str) -> None:
    if not name:
        raise ModelLoadError(f"{source}: an initializer has no name")
    if name in constants:
        raise ModelLoadError(f"{source}: initializer {name!r} is defined twice")
    constants[name] = value


def _tensor_array(tensor: Any) -> np.ndarray:
    """A TensorProto as a NumPy array, after checking its dims (ONNX's reader trusts them)."""
    from onnx import numpy_helper

    dims = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"tensor {tensor.name!r} has negative dims {dims}")
    if math.prod(dims) > MAX_MODEL_BYTES:
        raise ModelLoadError(f"tensor {tensor.name!r} has {math.prod(dims)} elements")
    array = numpy_helper.to_array(tensor)
    if array.shape != dims:
        raise ModelLoadError(f"tensor {tensor.name!r} holds {array.size} values for dims {dims}")
    return array


def _sparse_to_dense(sparse: Any) -> np.ndarray:
    """COO SparseTensorProto -> dense array (indices are linear [nnz] or per-dim [nnz, rank])."""
    dims = tuple(int(d) for d in sparse.dims)
    name = sparse.values.name
    if any(d < 0 for d in dims) or math.prod(dims) > MAX_MODEL_BYTES:
        raise ModelLoadError(f"sparse initializer {name!r} has bad dims {dims}")
    values = _tensor_array(sparse.values).reshape(-1)
    indices = _tensor_array(sparse.indices).astype(np.int64)
    dense = np.zeros(math.prod(dims), dtype=values.dtype)
    if indices.ndim == 2 and indices.shape == (values.size, len(dims)):
        if indices.size and ((indices < 0).any() or (indices >= np.array(dims)).any()):
            raise ModelLoadError(f"sparse initializer {name!r} has out-of-range indices")
        linear = np.ravel_multi_index(indices.T, dims) if indices.size else indices[:, 0]
    elif indices.ndim == 1 and indices.size == values.size:
        linear = indices
    else:
        raise ModelLoadError(f"sparse initializer {name!r}: indices of shape {indices.shape} "
                             f"for {values.size} values")
    if linear.size and (linear.min() < 0 or linear.max() >= dense.size):
        raise ModelLoadError(f"sparse initializer {name!r} has out-of-range indices")
    if np.unique(linear).size != linear.size:
        raise ModelLoadError(f"sparse initializer {name!r} has repeated indices")
    dense[linear] = values
    return dense.reshape(dims)


def _read_node(proto: Any, index: int, source: str) -> Node:
    from onnx import AttributeProto

    node = Node(proto.op_type, proto.name or f"{proto.op_type}_{index}", list(proto.input),
                list(proto.output), domain=proto.domain or "", proto=_detached(proto))
    if not proto.op_type or not any(node.outputs):
        raise ModelLoadError(f"{source}: node {index} has no operator type or no output")
    for attr in proto.attribute:
        try:
            node.attrs[attr.name] = _attribute_value(attr, AttributeProto)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{source}: {node.describe()}: unreadable attribute "
                                 f"{attr.name!r} ({exc})") from None
    return node


def _detached(proto: Any) -> Any:
    """A copy of a NodeProto that owns its memory: a message of a parsed model keeps the whole
    model alive (protobuf's upb backend allocates it in one arena), so nodes keeping their
    protos would hold every weight a second time after the initializers are copied out
    (ResNet-50: 97 MiB)."""
    copy = type(proto)()
    copy.CopyFrom(proto)
    return copy


def _attribute_value(attr: Any, kinds: Any) -> Any:
    """Python value of an attribute: int, float, str, tensor (NumPy), or a list of those;
    graphs (control flow) stay protos, which only ONNX Runtime segments use."""
    kind = attr.type
    if kind == kinds.INT:
        return int(attr.i)
    if kind == kinds.FLOAT:
        return float(attr.f)
    if kind == kinds.STRING:
        return attr.s.decode("utf-8", "replace")
    if kind == kinds.TENSOR:
        return _tensor_array(attr.t)
    if kind == kinds.INTS:
        return [int(v) for v in attr.ints]
    if kind == kinds.FLOATS:
        return [float(v) for v in attr.floats]
    if kind == kinds.STRINGS:
        return [s.decode("utf-8", "replace") for s in attr.strings]
    return attr  # GRAPH(S), SPARSE_TENSOR(S), TYPE_PROTO(S): kept as the proto


def _extract_constant_nodes(nodes: list[Node], constants: dict[str, np.ndarray], source: str
                            ) -> tuple[list[Node], dict[str, np.ndarray]]:
    """Constant nodes of the default domain become constants (exporters write Clip bounds and
    Reshape shapes this way)."""
    kept = []
    for node in nodes:
        if node.op != "Constant" or node.domain not in ONNX_DOMAINS:
            kept.append(node)
            continue
        _add_constant(constants, node.outputs[0], _constant_value(node), source)
    return kept, constants


def _constant_value(node: Node) -> np.ndarray:
    tensor = node.attr_tensor("value")
    if tensor is not None:
        return tensor
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                        ("value_int", np.int64), ("value_ints", np.int64)):
        if name in node.attrs:
            return np.asarray(node.attrs[name], dtype=dtype)
    raise ModelLoadError(f"{node.describe()}: a Constant needs a value (tensor, float(s) or "
                         "int(s))")


def _tensor_info(value_info: Any, source: str, what: str) -> TensorInfo:
    if not value_info.name:
        raise ModelLoadError(f"{source}: a graph {what} has no name")
    ttype = value_info.type.tensor_type
    dtype = _ELEM_TYPES.get(ttype.elem_type)
    if dtype is None:
        if what == "input" or (value_info.type.HasField("tensor_type") and not ttype.elem_type):
            # (an output declared a tensor of no element type: ONNX Runtime refuses it too)
            raise ModelLoadError(f"{source}: {what} {value_info.name!r} has unsupported element "
                                 f"type {ttype.elem_type}")
        dtype = np.float32  # outputs: the producing node decides
    shape = None
    if ttype.HasField("shape"):
        shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                      for d in ttype.shape.dim)
    return TensorInfo(value_info.name, np.dtype(dtype), shape)


def _check_names(nodes: list[Node], constants: dict[str, np.ndarray], inputs: list[TensorInfo],
                 outputs: list[TensorInfo], source: str) -> None:
    """Every tensor has one producer (graph input, constant or node output)."""
    defined: set[str] = set()
    for name in [*(t.name for t in inputs), *constants]:
        if name in defined:
            raise ModelLoadError(f"{source}: tensor {name!r} is defined twice")
        defined.add(name)
    for node in nodes:
        for name in node.outputs:
            if name and name in defined:
                raise ModelLoadError(f"{source}: tensor {name!r} ({node.describe()}) is "
                                     "defined twice")
            defined.add(name)
    if not outputs:
        raise ModelLoadError(f"{source}: the graph has no outputs")
    for out in outputs:
        if out.name not in defined:
            raise ModelLoadError(f"{source}: graph output {out.name!r} is produced by no node")
    if not inputs and not nodes:
        raise ModelLoadError(f"{source}: the graph computes nothing")


def topological_order(nodes: list[Node], available: set[str], source: str) -> list[Node]:
    """Kahn's order, stable; an input no node or initializer defines is a load error."""
    producers = {o: n for n in nodes for o in n.outputs if o}
    done = set(available)
    waiting: dict[str, list[int]] = {}
    missing_count = []
    for i, node in enumerate(nodes):
        missing = {name for name in node.inputs if name and name not in done}
        for name in missing:
            if name not in producers:
                raise ModelLoadError(f"{source}: {node.describe()} has undefined input {name!r}")
            waiting.setdefault(name, []).append(i)
        missing_count.append(len(missing))
    ready = [i for i, count in enumerate(missing_count) if count == 0]
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        i = heapq.heappop(ready)  # lowest index first: keeps the file's order where it is valid
        ordered.append(nodes[i])
        for name in nodes[i].outputs:
            if not name or name in done:
                continue
            done.add(name)
            for j in waiting.pop(name, []):
                missing_count[j] -= 1
                if missing_count[j] == 0:
                    heapq.heappush(ready, j)
    if len(ordered) != len(nodes):
        stuck = next(n for n, c in zip(nodes, missing_count, strict=True) if c > 0)
        raise ModelLoadError(f"{source}: {stuck.describe()} is part of a cycle")
    return ordered
