"""Pooling: MaxPool, AveragePool (kernel, stride, dilation, pads, ceil_mode, count_include_pad)
and GlobalAveragePool / GlobalMaxPool, on 4-D tensors (steps/pool.cpp)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.kernels import reference
from featherdeploy.runtime.ops.geometry import nd_output_dims, pool_geometry
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder
    from featherdeploy.runtime.planner.layout import SymView, Tensor


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    if len(x) != 4:  # 1-D and 3-D pools run on ONNX Runtime
        if len(x) < 3:
            raise ModelLoadError(f"{node.describe()}: needs (N, C, spatial...) input, got {x}")
        kernel = node.attr_ints("kernel_shape")
        if kernel is None:
            raise ModelLoadError(f"{node.describe()}: kernel_shape is required")
        out = (x[0], x[1], *nd_output_dims(node, x, tuple(kernel),
                                           ceil_mode=bool(node.attr_int("ceil_mode", 0))))
    else:
        out = (x[0], x[1], *pool_geometry(node, x).out_hw)
    extra = [(out, np.dtype(np.int64))] * (len(node.outputs) - 1)  # MaxPool's Indices
    return [(out, ctx.dtype(node, 0)), *extra]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    if len(node.outputs) > 1:
        raise ModelLoadError(f"{node.describe()}: Indices are computed by ONNX Runtime only")
    x = values[0]
    if x.ndim != 4:
        return []  # not folded: ONNX Runtime computes it
    geo = pool_geometry(node, x.shape)
    return [reference.pool2d(x, kind="max" if node.op == "MaxPool" else "avg",
                             kernel=geo.kernel, stride=geo.stride,
                             pads=(*geo.pad_begin, *geo.pad_end), dilation=geo.dilation,
                             ceil_mode=bool(node.attr_int("ceil_mode", 0)),
                             count_include_pad=bool(node.attr_int("count_include_pad", 0)))]


def _native(node: Node, ctx: OpContext) -> str | None:
    if len(ctx.shape(node, 0)) != 4:
        return "only 2-D pooling runs natively"
    if any(node.outputs[1:]):
        return "MaxPool's Indices output"
    if node.op == "MaxPool" and node.attr_int("storage_order", 0):
        return "storage_order 1"
    return None


def _emit(b: Builder, node: Node) -> None:
    x = b.tensor(node.inputs[0])
    geo = pool_geometry(node, x.shape)
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    if _pool_in_winograd(b, node, x, y):
        return
    spec = native().PoolSpec()
    spec.is_max = node.op == "MaxPool"
    spec.kernel, spec.stride, spec.dilation = geo.kernel, geo.stride, geo.dilation
    spec.pad_begin, spec.pad_end = geo.pad_begin, geo.pad_end
    spec.count_include_pad = bool(node.attr_int("count_include_pad", 0))
    b.emit(spec, src=x.view(), dst=y.view())


def _pool_in_winograd(b: Builder, node: Node, x: Tensor, y: Tensor) -> bool:
    """Moves max pool ``node`` into the step just emitted when that is the batch-interleaved
    Winograd conv writing its input, which nothing else reads (PlannerOptions.
    pool_in_winograd; ConvSpec.winograd_pool): the conv's output buffer is then unused."""
    if not (b.opts.pool_in_winograd and node.op == "MaxPool" and b.records):
        return False
    record, name = b.records[-1], node.inputs[0]
    spec, out = record.spec, record.views.get("output")
    geo = pool_geometry(node, x.shape)
    n, _, rows, cols = x.shape
    fits = (isinstance(spec, native().ConvSpec) and len(spec.winograd_u) > 0 and spec.lanes > 1
            and not spec.has_residual and out is not None and out.buf is x.buf
            and x.buf.first == x.buf.last == len(b.records) - 1
            and b.reader_nodes.get(name) == [node] and name not in b.graph.output_names
            and y.lanes == x.lanes and not y.position_major and not y.segments
            and geo.dilation == (1, 1)
            and max(geo.kernel) <= int(native().CONSTANTS["max_pool_kernel"])
            and all(p < k for p, k in zip(geo.pad_begin, geo.kernel, strict=True))
            and all((o - 1) * s - p < c for o, s, p, c in zip(
                geo.out_hw, geo.stride, geo.pad_begin, (rows, cols), strict=True)))
    if not fits:
        return False
    spec.winograd_pool = np.array([*geo.kernel, *geo.stride, *geo.pad_begin, rows, cols],
                                  np.int64)
    spec.winograd_stream = False
    record.views["output"] = y.stream_view()
    index = len(b.records) - 1
    y.buf.first = index if y.buf.first < 0 else min(y.buf.first, index)
    y.buf.last = max(y.buf.last, index)
    x.buf.first = x.buf.last = -1  # never written: no arena space
    return True


def _global_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    if len(x) < 3:
        raise ModelLoadError(f"{node.describe()}: needs (N, C, spatial...) input, got {x}")
    return [((x[0], x[1], *([1] * (len(x) - 2))), ctx.dtype(node, 0))]


def _global_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0]
    axes = tuple(range(2, x.ndim))
    reduce = np.max if node.op == "GlobalMaxPool" else np.mean
    return [reduce(x.astype(np.float64), axis=axes, keepdims=True).astype(x.dtype)]


def _global_native(node: Node, ctx: OpContext) -> str | None:
    return None if len(ctx.shape(node, 0)) == 4 else "only 4-D inputs run natively"


def emit_global_pool(b: Builder, is_max: bool, src: SymView, dst: SymView) -> None:
    """The max (or mean) of each (image, channel) plane of view ``src`` into ``dst``, a view
    of shape (N, C, 1, 1): GlobalMaxPool / GlobalAveragePool, and the spatial ReduceMax /
    ReduceMean (ops/reduce.py)."""
    spec = native().GlobalPoolSpec()
    spec.is_max = is_max
    b.emit(spec, src=src, dst=dst)


def _global_reads_position_major(b: Builder, node: Node, name: str) -> bool:
    """OpDef.reads_position_major: the interleaved global pool walks any position stride
    (steps/pool.cpp run_interleaved)."""
    return True


def _global_emit(b: Builder, node: Node) -> None:
    x = b.tensor(node.inputs[0], position_major_ok=True)
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    emit_global_pool(b, node.op == "GlobalMaxPool", x.view(), y.view())


register(OpDef("MaxPool", _infer, _evaluate, _emit, _native, outputs=(1, 2)),
         OpDef("AveragePool", _infer, _evaluate, _emit, _native),
         OpDef("GlobalAveragePool", _global_infer, _global_evaluate, _global_emit,
               _global_native, reads_position_major=_global_reads_position_major),
         OpDef("GlobalMaxPool", _global_infer, _global_evaluate, _global_emit, _global_native,
               reads_position_major=_global_reads_position_major))
