"""Softmax along any axis (opset >= 13: one axis; before opset 13: the flattened trailing dims
from ``axis``), as one native step over 4-D views (steps/eltwise.cpp)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder


def _axis(node: Node, rank: int, opset: int) -> int:
    axis = node.attr_int("axis", -1 if opset >= 13 else 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < max(rank, 1):
        raise ModelLoadError(f"{node.describe()}: axis out of range for rank {rank}")
    return axis


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    _axis(node, len(x), ctx.opset)
    return [(x, ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0].astype(np.float64)
    axis = _axis(node, x.ndim, ctx.opset)
    if ctx.opset >= 13:
        lines = x
        axes: tuple[int, ...] = (axis,)
    else:
        lines = x.reshape((*x.shape[:axis], -1))
        axes = (axis,)
    e = np.exp(lines - lines.max(axis=axes, keepdims=True))
    y = (e / e.sum(axis=axes, keepdims=True)).reshape(x.shape)
    return [y.astype(values[0].dtype)]


def _emit(b: Builder, node: Node) -> None:
    shape = b.shapes[node.inputs[0]]
    rank = len(shape)
    axis = _axis(node, rank, b.graph.opset)
    single_axis = b.graph.opset >= 13 or axis == rank - 1
    spec = native().SoftmaxSpec()
    if single_axis and rank <= 4:
        x = b.tensor(node.inputs[0])
        y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
        spec.axis = axis + 4 - rank
        b.emit(spec, src=x.view(), dst=y.view())
        return
    x = b.flat(node.inputs[0])
    outer = math.prod(shape[:axis])
    if single_axis:
        dims = (1, outer, shape[axis], math.prod(shape[axis + 1:]))
        spec.axis = 2
    else:  # before opset 13: softmax over the flattened trailing dims
        dims, spec.axis = (1, 1, outer, math.prod(shape[axis:])), 3
    written, y = b.compact_output(node.outputs[0])
    b.emit(spec, src=x.compact_view(dims), dst=written.compact_view(dims))
    b.finish_compact(written, y)


register(OpDef("Softmax", _infer, _evaluate, _emit))
