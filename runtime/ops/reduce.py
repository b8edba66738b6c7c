"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL2,
ReduceSumSquare (axes as an attribute before opset 18 (13 for ReduceSum), an input after;
keepdims; noop_with_empty_axes)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from runtime.graph import Node
from runtime.ops.registry import OpContext, OpDef, Output, register
from runtime.ops.shape_ops import normalize_axis

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
            from runtime.errors import ModelLoadError
            raise ModelLoadError(f"{node.describe()}: axes must be a constant")
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
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


register(*(OpDef(op, _infer, _evaluate, inputs=(1, 2)) for op in REDUCTIONS))
