"""ONNX model -> typed graph (nodes in topological order, constants as NumPy), validation, shapes.

Reads any standard ONNX CNN: dense initializers, COO ``sparse_initializer``s (as written by the
compile stage's ``model.sparse.onnx``) and ``Constant`` nodes all become entries of
``Graph.constants``. Every node is checked against the operator set the engine runs
(``SUPPORTED_OPS``); anything else raises :class:`UnsupportedOpError` naming the op and the node.
Shapes are inferred per concrete input shape (``infer_shapes``) with the ONNX operator semantics
(https://onnx.ai/onnx/operators/), including auto_pad, ceil_mode and Reshape's 0 / -1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import InputError, ModelLoadError, UnsupportedOpError

__all__ = [
    "SUPPORTED_OPS",
    "Node",
    "Graph",
    "ConvGeometry",
    "PoolGeometry",
    "load_graph",
    "parse_model_bytes",
    "conv_geometry",
    "pool_geometry",
    "infer_shapes",
]

SUPPORTED_OPS = frozenset({
    "Conv", "Gemm", "MatMul", "Relu", "Clip", "Add", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Concat", "BatchNormalization",
    "Identity", "Dropout", "Softmax", "Constant",
})
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass
class Node:
    """One ONNX node; ``inputs`` keeps "" for omitted optional inputs."""

    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """'Conv node "layer1.0.conv1"' - how errors name a node."""
        return f'{self.op} node "{self.name}"'


@dataclass
class Graph:
    """A validated single-input, single-output graph."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    input_name: str
    input_shape: tuple[int | None, ...]  # None = symbolic (e.g. dynamic batch)
    output_name: str
    opset: int


def load_graph(path: str | Path) -> Graph:
    """Read and validate the ONNX file at ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or exc
        raise ModelLoadError(f"cannot read model file {str(path)!r}: {reason}") from None
    return parse_model_bytes(data, source=str(path))


def parse_model_bytes(data: bytes, source: str = "<bytes>") -> Graph:
    """Parse serialized ONNX bytes into a validated :class:`Graph`."""
    import onnx  # lazy: keeps `import runtime` cheap

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise ModelLoadError(f"{source} is not a valid ONNX model ({type(exc).__name__})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelLoadError(f"{source} is not a valid ONNX model (no graph or no nodes)")
    opset = next((o.version for o in model.opset_import if o.domain in _ONNX_DOMAINS), None)
    if opset is None:
        raise ModelLoadError(f"{source} declares no default-domain opset")
    constants = _read_initializers(model.graph, source)
    nodes = [_read_node(n, i) for i, n in enumerate(model.graph.node)]
    for node in nodes:
        _check_supported(node)
    nodes, constants = _extract_constant_nodes(nodes, constants)
    inputs = [i for i in model.graph.input if i.name not in constants]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise ModelLoadError(
            f"{source}: the engine runs graphs with exactly one input and one output "
            f"(found {len(inputs)} inputs, {len(model.graph.output)} outputs)")
    input_name, input_shape = _read_input(inputs[0], source)
    nodes = _topological_order(nodes, {input_name, *constants}, source)
    output_name = model.graph.output[0].name
    produced = {o for n in nodes for o in n.outputs} | {input_name}
    if output_name not in produced:
        raise ModelLoadError(f"{source}: graph output {output_name!r} is produced by no node")
    return Graph(nodes, constants, input_name, input_shape, output_name, opset)


def _read_initializers(graph: Any, source: str) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    constants: dict[str, np.ndarray] = {}
    try:
        for init in graph.initializer:
            constants[init.name] = numpy_helper.to_array(init)
        for sparse in graph.sparse_initializer:
            constants[sparse.values.name] = _sparse_to_dense(sparse)
    except Exception as exc:
        raise ModelLoadError(f"{source}: unreadable initializer ({exc})") from None
    return constants


def _sparse_to_dense(sparse: Any) -> np.ndarray:
    """COO SparseTensorProto -> dense array (indices are linear [nnz] or per-dim [nnz, rank])."""
    from onnx import numpy_helper

    dims = tuple(int(d) for d in sparse.dims)
    values = numpy_helper.to_array(sparse.values)
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    dense = np.zeros(int(np.prod(dims)), dtype=values.dtype)
    linear = indices if indices.ndim == 1 else np.ravel_multi_index(indices.T, dims)
    if linear.size and (linear.min() < 0 or linear.max() >= dense.size):
        raise ValueError(f"sparse initializer {sparse.values.name!r} has out-of-range indices")
    dense[linear] = values
    return dense.reshape(dims)


def _read_node(proto: Any, index: int) -> Node:
    from onnx import helper

    node = Node(proto.op_type, proto.name or f"{proto.op_type}_{index}", list(proto.input),
                list(proto.output))
    if proto.domain not in _ONNX_DOMAINS:
        raise UnsupportedOpError(
            f"unsupported operator {proto.domain}.{proto.op_type} ({node.describe()})")
    for attr in proto.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        node.attrs[attr.name] = value
    return node


def _check_supported(node: Node) -> None:
    if node.op not in SUPPORTED_OPS:
        raise UnsupportedOpError(f"unsupported operator {node.op} ({node.describe()})")
    if node.op in ("MaxPool", "BatchNormalization", "Dropout") and len(node.outputs) > 1 and any(
            node.outputs[1:]):
        raise UnsupportedOpError(f"{node.describe()}: only the first output is supported")


def _extract_constant_nodes(nodes: list[Node], constants: dict[str, np.ndarray]
                            ) -> tuple[list[Node], dict[str, np.ndarray]]:
    """Constant nodes become constants (torch exports Clip bounds and Reshape shapes this way)."""
    from onnx import numpy_helper

    kept = []
    for node in nodes:
        if node.op != "Constant":
            kept.append(node)
            continue
        if "value" not in node.attrs:
            raise UnsupportedOpError(f"{node.describe()}: only the 'value' attribute is supported")
        constants[node.outputs[0]] = numpy_helper.to_array(node.attrs["value"])
    return kept, constants


def _read_input(value_info: Any, source: str) -> tuple[str, tuple[int | None, ...]]:
    ttype = value_info.type.tensor_type
    if ttype.elem_type != 1:  # TensorProto.FLOAT
        raise ModelLoadError(f"{source}: input {value_info.name!r} must be float32")
    if not ttype.HasField("shape"):
        raise ModelLoadError(f"{source}: input {value_info.name!r} has no declared shape")
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim)
    return value_info.name, dims


def _topological_order(nodes: list[Node], available: set[str], source: str) -> list[Node]:
    """Kahn's order; an input no node or initializer defines is a load error."""
    producers = {o: n for n in nodes for o in n.outputs if o}
    ordered: list[Node] = []
    done = set(available)
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(i == "" or i in done for i in n.inputs)]
        if not ready:
            node = pending[0]
            missing = [i for i in node.inputs if i and i not in done and i not in producers]
            what = f"undefined input {missing[0]!r}" if missing else "a cycle"
            raise ModelLoadError(f"{source}: {node.describe()} has {what}")
        for n in ready:
            ordered.append(n)
            done.update(o for o in n.outputs if o)
        pending = [n for n in pending if n not in ready]
    return ordered


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ConvGeometry:
    """Resolved 2-D convolution geometry (pads as begin/end per axis)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    group: int
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class PoolGeometry:
    """Resolved 2-D pooling window (output sizes include ceil_mode)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    out_hw: tuple[int, int]


def _pair(node: Node, name: str, default: int) -> tuple[int, int]:
    value = node.attrs.get(name)
    if value is None:
        return (default, default)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D {name} is supported, got {value}")
    return value  # type: ignore[return-value]


def _resolve_pads(node: Node, hw: tuple[int, int], kernel: tuple[int, int],
                  stride: tuple[int, int], dilation: tuple[int, int]
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(hw, kernel, stride, dilation, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return (begin[0], begin[1]), (end[0], end[1])
    if auto_pad == "VALID":
        return (0, 0), (0, 0)
    if auto_pad != "NOTSET":
        raise UnsupportedOpError(f"{node.describe()}: unknown auto_pad {auto_pad!r}")
    pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
    if len(pads) != 4:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D pads are supported, got {pads}")
    if min(pads) < 0:
        raise ModelLoadError(f"{node.describe()}: negative pads {pads}")
    return (pads[0], pads[1]), (pads[2], pads[3])


def conv_geometry(node: Node, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> ConvGeometry:
    """Geometry of a Conv node for input (N, C, H, W) and weight (OC, C/group, KH, KW)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise UnsupportedOpError(
            f"{node.describe()}: only 2-D convolution (4-D tensors) is supported")
    kernel = (int(w_shape[2]), int(w_shape[3]))
    if "kernel_shape" in node.attrs and tuple(node.attrs["kernel_shape"]) != kernel:
        raise ModelLoadError(f"{node.describe()}: kernel_shape disagrees with the weight shape")
    stride, dilation = _pair(node, "strides", 1), _pair(node, "dilations", 1)
    group = int(node.attrs.get("group", 1))
    hw = (int(x_shape[2]), int(x_shape[3]))
    if group < 1 or x_shape[1] != w_shape[1] * group or w_shape[0] % group:
        raise ModelLoadError(
            f"{node.describe()}: input channels {x_shape[1]} do not match weight {tuple(w_shape)} "
            f"with group={group}")
    if min(stride) < 1 or min(dilation) < 1:
        raise ModelLoadError(f"{node.describe()}: strides and dilations must be positive")
    pad_begin, pad_end = _resolve_pads(node, hw, kernel, stride, dilation)
    out = tuple((hw[i] + pad_begin[i] + pad_end[i] - dilation[i] * (kernel[i] - 1) - 1)
                // stride[i] + 1 for i in range(2))
    if min(out) < 1:
        raise InputError(f"{node.describe()}: input {hw[0]}x{hw[1]} is smaller than the kernel")
    return ConvGeometry(kernel, stride, dilation, pad_begin, pad_end, group, out)  # type: ignore[arg-type]


def pool_geometry(node: Node, x_shape: tuple[int, ...]) -> PoolGeometry:
    """Geometry of a MaxPool / AveragePool node.

    With ceil_mode a last window that would start inside the end padding is dropped (ONNX Runtime
    and PyTorch agree on this rule).
    """
    if len(x_shape) != 4:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D pooling (4-D tensors) is supported")
    kernel = _pair(node, "kernel_shape", 0)
    if min(kernel) < 1:
        raise ModelLoadError(f"{node.describe()}: kernel_shape is required")
    stride, dilation = _pair(node, "strides", 1), _pair(node, "dilations", 1)
    hw = (int(x_shape[2]), int(x_shape[3]))
    pad_begin, pad_end = _resolve_pads(node, hw, kernel, stride, dilation)
    ceil_mode = int(node.attrs.get("ceil_mode", 0))
    out = []
    for i in range(2):
        span = hw[i] + pad_begin[i] + pad_end[i] - dilation[i] * (kernel[i] - 1) - 1
        size = (-(-span // stride[i]) if ceil_mode else span // stride[i]) + 1
        if ceil_mode and (size - 1) * stride[i] >= hw[i] + pad_begin[i]:
            size -= 1
        out.append(size)
    if min(out) < 1:
        raise InputError(f"{node.describe()}: input {hw[0]}x{hw[1]} is smaller than the window")
    return PoolGeometry(kernel, stride, dilation, pad_begin, pad_end, (out[0], out[1]))


# ----------------------------------------------------------------------------- shapes


def infer_shapes(graph: Graph, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor for a concrete input shape (constants included)."""
    shapes: dict[str, tuple[int, ...]] = {k: tuple(v.shape) for k, v in graph.constants.items()}
    shapes[graph.input_name] = tuple(input_shape)
    for node in graph.nodes:
        ins = [shapes[i] if i else () for i in node.inputs]
        out = _node_shape(node, ins, graph)
        shapes[node.outputs[0]] = out
    return shapes


def _const(graph: Graph, node: Node, index: int, what: str) -> np.ndarray:
    name = node.inputs[index] if index < len(node.inputs) else ""
    if not name or name not in graph.constants:
        raise UnsupportedOpError(f"{node.describe()}: {what} must be a constant")
    return graph.constants[name]


def _broadcast(node: Node, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        raise ModelLoadError(f"{node.describe()}: shapes {a} and {b} do not broadcast") from None


def _node_shape(node: Node, ins: list[tuple[int, ...]], graph: Graph) -> tuple[int, ...]:
    op, x = node.op, ins[0]
    if op == "Conv":
        geo = conv_geometry(node, x, ins[1])
        return (x[0], ins[1][0], *geo.out_hw)
    if op in ("MaxPool", "AveragePool"):
        return (x[0], x[1], *pool_geometry(node, x).out_hw)
    if op in ("GlobalAveragePool", "GlobalMaxPool"):
        if len(x) != 4:
            raise UnsupportedOpError(f"{node.describe()}: only 4-D inputs are supported")
        return (x[0], x[1], 1, 1)
    if op in ("Relu", "Clip", "Identity", "Dropout", "BatchNormalization", "Softmax"):
        return x
    if op == "Add":
        return _broadcast(node, x, ins[1])
    if op == "Gemm":
        return _gemm_shape(node, x, ins[1])
    if op == "MatMul":
        return _matmul_shape(node, x, ins[1])
    if op == "Flatten":
        axis = int(node.attrs.get("axis", 1))
        axis = axis + len(x) if axis < 0 else axis
        return (math.prod(x[:axis]), math.prod(x[axis:]))
    if op == "Reshape":
        return _reshape_shape(node, x, _const(graph, node, 1, "the shape input"))
    if op == "Concat":
        return _concat_shape(node, ins)
    raise UnsupportedOpError(f"unsupported operator {op} ({node.describe()})")


def _gemm_shape(node: Node, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if len(a) != 2 or len(b) != 2:
        raise ModelLoadError(f"{node.describe()}: Gemm needs 2-D inputs, got {a} and {b}")
    m, k = (a[1], a[0]) if node.attrs.get("transA", 0) else a
    kb, n = (b[1], b[0]) if node.attrs.get("transB", 0) else b
    if k != kb:
        raise ModelLoadError(f"{node.describe()}: inner dimensions {k} and {kb} differ")
    return (m, n)


def _matmul_shape(node: Node, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if len(a) < 2 or len(b) != 2:
        raise UnsupportedOpError(
            f"{node.describe()}: MatMul is supported for A of rank >= 2 and a 2-D B, got {a}, {b}")
    if a[-1] != b[0]:
        raise ModelLoadError(f"{node.describe()}: inner dimensions {a[-1]} and {b[0]} differ")
    return (*a[:-1], b[1])


def _reshape_shape(node: Node, x: tuple[int, ...], target: np.ndarray) -> tuple[int, ...]:
    allow_zero = int(node.attrs.get("allowzero", 0))
    dims = [int(d) for d in np.asarray(target).reshape(-1)]
    out = [x[i] if d == 0 and not allow_zero and i < len(x) else d for i, d in enumerate(dims)]
    if out.count(-1) > 1:
        raise ModelLoadError(f"{node.describe()}: more than one -1 in shape {dims}")
    total = math.prod(x)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise InputError(f"{node.describe()}: cannot reshape {x} to {dims}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total or min(out, default=1) < 0:
        raise InputError(f"{node.describe()}: cannot reshape {x} to {dims}")
    return tuple(out)


def _concat_shape(node: Node, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    rank = len(ins[0])
    axis = int(node.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise ModelLoadError(f"{node.describe()}: axis out of range for rank {rank}")
    for s in ins[1:]:
        if len(s) != rank or any(s[i] != ins[0][i] for i in range(rank) if i != axis):
            raise InputError(f"{node.describe()}: shapes {ins} cannot be concatenated on {axis}")
    out = list(ins[0])
    out[axis] = sum(s[axis] for s in ins)
    return tuple(out)
