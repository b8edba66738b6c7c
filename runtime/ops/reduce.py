"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2,
ReduceSumSquare (axes as an attribute before opset 18 (13 for ReduceSum), an input after;
keepdims; noop_with_empty_axes); natively on float32 tensors of rank <= 4 (steps/reduce.cpp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import DataDependentShapeError, ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.pool import emit_global_pool
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.ops.shape_ops import normalize_axis
from featherdeploy.runtime.planner.layout import as4, native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["reduce_axes", "REDUCTIONS"]

REDUCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
    "ReduceProd": np.prod,
    "ReduceL2": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
}


def reduce_axes(node: Node, ctx: OpContext, rank: int) -> tuple[int, ...]:
    """The reduced axes (all when none are given, unless noop_with_empty_axes)."""
    axes_as_input = ctx.opset >= (13 if node.op == "ReduceSum" else 18)
    if axes_as_input:
        value = ctx.const(node, 1) if node.input(1) else None
        if node.input(1) and value is None:
            raise DataDependentShapeError(f"{node.describe()}: axes must be a constant")
        if value is not None and (value.ndim != 1 or value.dtype.kind not in "iu"):
            raise ModelLoadError(f"{node.describe()}: axes must be a 1-D integer tensor, got "
                                 f"{value.dtype} {value.shape}")
        axes = None if value is None else [int(a) for a in value]
    else:
        axes = node.attr_ints("axes")
    if not axes:
        return () if node.attr_int("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({normalize_axis(node, a, rank) for a in axes}))


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    axes = reduce_axes(node, ctx, len(x))
    keep = node.attr_int("keepdims", 1)
    shape = tuple(1 if i in axes else d for i, d in enumerate(x) if keep or i not in axes)
    return [(shape, ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0]
    axes = reduce_axes(node, ctx, x.ndim)
    if not axes:
        return [x]
    acc = x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x
    y = REDUCTIONS[node.op](acc, axis=axes, keepdims=bool(node.attr_int("keepdims", 1)))
    return [np.asarray(y).astype(x.dtype)]


# ONNX op -> native op name (steps/reduce.cpp REDUCE_OPS)
NATIVE_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max",
                 "ReduceMin": "min", "ReduceProd": "prod", "ReduceL2": "l2",
                 "ReduceSumSquare": "sum_square"}


# Reductions over the two spatial axes of a 4-D tensor that run as a global pool (is_max).
GLOBAL_POOLS = {"ReduceMean": False, "ReduceMax": True}


def _native(node: Node, ctx: OpContext) -> str | None:
    return None if len(ctx.shape(node, 0)) <= 4 else "reductions of rank > 4"


def _emit(b: Builder, node: Node) -> None:
    from featherdeploy.runtime.ops.shape_ops import emit_reshape

    shape = b.shapes[node.inputs[0]]
    axes = reduce_axes(node, _ctx(b), len(shape))
    if not axes:  # noop_with_empty_axes: the input itself
        emit_reshape(b, node)
        return
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    src = b.view(node.inputs[0])
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    dst = y.view() if y.spatial else y.compact_view(as4(kept))
    if len(shape) == 4 and set(axes) == {2, 3} and node.op in GLOBAL_POOLS:
        # A global pool in all but name (ShuffleNetV2's head): the vector pooling step, 1.07 ->
        # 0.24 ms at 16 images of 1024 x 7x7 (AMD EPYC Zen4), not the generic reduction.
        emit_global_pool(b, GLOBAL_POOLS[node.op], src, dst)
        return
    pad = 4 - len(shape)
    spec = native().ReduceSpec()
    spec.op = int(native().REDUCE_OPS[NATIVE_REDUCE[node.op]])
    spec.axes = [i - pad in axes for i in range(4)]
    b.emit(spec, src=src, dst=dst)


def _ctx(b: Builder) -> OpContext:
    return OpContext(b.graph.opset, b.shapes, {}, b.graph.constants)


register(*(OpDef(op, _infer, _evaluate, _emit, _native, inputs=(1, 2)) for op in REDUCTIONS))
