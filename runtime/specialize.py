"""A graph specialized to concrete input shapes: every tensor's shape and dtype, and the shape
plumbing exporters write (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, ConstantOfShape,
Range, Expand, Slice, arithmetic on constants, ...) folded into constants.

Each node goes through its op's registry entry (``runtime/ops/``): inputs all constant (and the
op has a NumPy reference) -> folded; Shape / Size of a tensor of known shape -> folded; else its
outputs' shapes and dtypes are inferred. Operators the registry does not know get their output
types from ONNX's shape inference on the node alone; when even that cannot tell, the outputs'
shapes stay unknown (None) and the partitioner leaves everything depending on them to ONNX
Runtime, which works them out while it runs. So do the outputs of a known operator whose
shape-deciding inputs (axes, pads, sizes, ...) are computed from data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from featherdeploy.runtime.errors import (
    DataDependentShapeError,
    EngineError,
    InputError,
    ModelLoadError,
)
from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.registry import OpContext, OpDef, get_op

__all__ = ["Specialized", "specialize", "reference_outputs", "FOLD_MAX_BYTES"]

FOLD_MAX_BYTES = 64 << 20  # larger results stay computed at run time


@dataclass
class Specialized:
    """``graph`` with folded nodes removed and their values in ``graph.constants``; the shape and
    dtype of every tensor (None: unknown until ONNX Runtime computes it)."""

    graph: Graph
    shapes: dict[str, tuple[int, ...] | None]
    dtypes: dict[str, np.dtype | None]
    input_shapes: dict[str, tuple[int, ...]]

    def context(self) -> OpContext:
        known = {k: v for k, v in self.shapes.items() if v is not None}
        types = {k: v for k, v in self.dtypes.items() if v is not None}
        return OpContext(self.graph.opset, known, types, self.graph.constants)


def specialize(graph: Graph, input_shapes: dict[str, tuple[int, ...]],
               fold_max_bytes: int = FOLD_MAX_BYTES) -> Specialized:
    """Shapes, dtypes and folded constants of ``graph`` for these input shapes (results larger
    than ``fold_max_bytes`` stay computed at run time)."""
    constants = dict(graph.constants)
    shapes: dict[str, tuple[int, ...] | None] = {k: tuple(v.shape) for k, v in constants.items()}
    dtypes: dict[str, np.dtype | None] = {k: v.dtype for k, v in constants.items()}
    for info in graph.inputs:
        shapes[info.name] = tuple(input_shapes[info.name])
        dtypes[info.name] = np.dtype(info.dtype)
    ctx = OpContext(graph.opset, shapes, dtypes, constants)  # type: ignore[arg-type]
    kept: list[Node] = []
    for node in graph.nodes:
        if not _fold(node, ctx, fold_max_bytes):
            _infer(node, ctx, graph)
            kept.append(node)
    outputs = [replace(o, dtype=dtypes.get(o.name) or o.dtype) for o in graph.outputs]
    folded = replace(graph, nodes=kept, constants=constants, outputs=outputs)
    return Specialized(folded, shapes, dtypes, dict(input_shapes))


def _fold(node: Node, ctx: OpContext, max_bytes: int) -> bool:
    """Evaluates ``node`` into constants when its inputs allow; True when it was folded."""
    op = get_op(node)
    if op is None or op.evaluate is None:
        return False
    names = [n for n in node.inputs if n]
    if op.shape_only and names and ctx.shapes.get(names[0]) is not None:
        shape = ctx.shapes[names[0]]
        values = [np.broadcast_to(np.zeros((), ctx.dtypes[names[0]] or np.float32), shape)]
    elif all(n in ctx.constants for n in names) and (names or not _random(node)):
        values = [ctx.constants[n] for n in names]
    else:
        return False
    op.check_arity(node)
    _call(node, lambda: _checked(op, node, ctx))  # an invalid node is refused, not evaluated
    results = _call(node, lambda: op.evaluate(node, _positional(node, values), ctx))
    if len(results) != len(node.outputs) or any(
            r.nbytes > max_bytes for r in map(np.asarray, results)):
        return False
    for name, value in zip(node.outputs, results, strict=True):
        if name:
            value = np.asarray(value)
            ctx.constants[name] = value
            ctx.shapes[name] = tuple(value.shape)
            ctx.dtypes[name] = value.dtype
    return True


def _random(node: Node) -> bool:
    return node.op.startswith("Random") or node.op in ("Multinomial", "Bernoulli")


def _positional(node: Node, values: list[np.ndarray]) -> list[Any]:
    """Values per input position (None for omitted optional inputs)."""
    it = iter(values)
    return [next(it) if name else None for name in node.inputs]


def _infer(node: Node, ctx: OpContext, graph: Graph) -> None:
    """Sets the shapes and dtypes of ``node``'s outputs (None where unknown)."""
    op = get_op(node)
    inputs_known = all(ctx.shapes.get(n) is not None for n in node.inputs if n)
    outputs: list[tuple[tuple[int, ...], np.dtype]] | None = None
    if op is not None and inputs_known:
        op.check_arity(node)
        try:
            outputs = _call(node, lambda: _checked(op, node, ctx))
        except DataDependentShapeError:  # e.g. Slice starts from data: ONNX Runtime runs it
            outputs = _onnx_inference(node, ctx, graph)
    elif inputs_known:
        outputs = _onnx_inference(node, ctx, graph)
    for index, name in enumerate(node.outputs):
        if not name:
            continue
        shape, dtype = outputs[index] if outputs is not None else (None, None)
        ctx.shapes[name] = shape  # type: ignore[assignment]
        ctx.dtypes[name] = dtype  # type: ignore[assignment]


def _checked(op: OpDef, node: Node, ctx: OpContext) -> list[tuple[tuple[int, ...], np.dtype]]:
    outputs = op.infer(node, ctx)
    if len(outputs) != len(node.outputs):
        raise ModelLoadError(f"{node.describe()}: {len(node.outputs)} outputs for "
                             f"{len(outputs)} results")
    for shape, _ in outputs:
        if any(d < 0 for d in shape) or math.prod(shape) > 1 << 34:
            raise InputError(f"{node.describe()}: output shape {shape} is invalid")
    return [(tuple(int(d) for d in shape), np.dtype(dtype)) for shape, dtype in outputs]


def _call(node: Node, fn: Any) -> Any:
    """Runs an op function; a raw exception from it (a model the op module did not foresee)
    becomes a ModelLoadError naming the node."""
    try:
        with np.errstate(all="ignore"):
            return fn()
    except EngineError:
        raise
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:
        raise ModelLoadError(f"{node.describe()}: {type(exc).__name__}: {exc}") from None


def _onnx_inference(node: Node, ctx: OpContext, graph: Graph
                    ) -> list[tuple[tuple[int, ...], np.dtype]] | None:
    """Output types of a node the registry does not know, by ONNX's shape inference on a
    one-node model (None when it cannot tell every output's full shape)."""
    if node.proto is None:
        return None
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        inputs, inits = [], []
        for name in dict.fromkeys(n for n in node.inputs if n):
            if name in ctx.constants:
                inits.append(numpy_helper.from_array(np.asarray(ctx.constants[name]), name))
            else:
                elem = helper.np_dtype_to_tensor_dtype(ctx.dtypes[name])
                inputs.append(helper.make_tensor_value_info(name, elem, list(ctx.shapes[name])))
        outs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                for o in node.outputs if o]
        model = helper.make_model(
            helper.make_graph([node.proto], "one", inputs, outs, initializer=inits),
            opset_imports=[helper.make_opsetid(d, v) for d, v in graph.opsets.items()])
        model.ir_version = graph.ir_version
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # unknown domains, invalid attributes: leave it to ONNX Runtime
        return None
    types = {v.name: v.type.tensor_type for v in inferred.graph.output}
    results = []
    for name in node.outputs:
        if not name:
            results.append(((), np.dtype(np.float32)))
            continue
        tt = types.get(name)
        if tt is None or not tt.elem_type or not tt.HasField("shape") or any(
                not d.HasField("dim_value") for d in tt.shape.dim):
            return None
        results.append((tuple(int(d.dim_value) for d in tt.shape.dim),
                        np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))))
    return results


def reference_outputs(graph: Graph, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """The graph's outputs computed node by node by the ops' NumPy references (the inputs and
    every float32 constant promoted to float64: an exact reference of the float32 model), or
    None when some node has no reference (an operator the engine leaves to ONNX Runtime)."""
    def widen(value: np.ndarray) -> np.ndarray:
        return value.astype(np.float64) if value.dtype == np.float32 else value

    constants = {k: widen(v) for k, v in graph.constants.items()}
    constants.update({k: widen(np.asarray(v)) for k, v in feeds.items()})
    whole = replace(graph, inputs=[], constants=constants)
    spec = specialize(whole, {}, fold_max_bytes=1 << 62)
    if spec.graph.nodes:
        return None
    return [np.asarray(spec.graph.constants[name]) for name in graph.output_names]
