"""Gemm (alpha, beta, transA, transB, broadcast C) and MatMul (batched, NumPy broadcasting of
the batch dims, output rank <= 4 natively), as one native GEMM step (steps/gemm.cpp); a
constant B is stored transposed so each output column is a contiguous dot product."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.macs import linear_macs, sparse_macs
from featherdeploy.runtime.ops.eltwise import broadcast_view
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import ARENA, CONST, SymView, as4, native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder


def _gemm_infer(node: Node, ctx: OpContext) -> list[Output]:
    a, b = ctx.shape(node, 0), ctx.shape(node, 1)
    if len(a) != 2 or len(b) != 2:
        raise ModelLoadError(f"{node.describe()}: Gemm needs 2-D inputs, got {a} and {b}")
    m, k = (a[1], a[0]) if node.attr_int("transA", 0) else a
    kb, n = (b[1], b[0]) if node.attr_int("transB", 0) else b
    if k != kb:
        raise ModelLoadError(f"{node.describe()}: inner dimensions {k} and {kb} differ")
    if node.input(2):
        try:  # unidirectional: C takes the output's shape, never widens it
            fits = np.broadcast_shapes(ctx.shape(node, 2), (m, n)) == (m, n)
        except ValueError:
            fits = False
        if not fits:
            raise ModelLoadError(f"{node.describe()}: C {ctx.shape(node, 2)} does not "
                                 f"broadcast to {(m, n)}")
    return [((m, n), ctx.dtype(node, 0))]


def _gemm_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    a = values[0].T if node.attr_int("transA", 0) else values[0]
    b = values[1].T if node.attr_int("transB", 0) else values[1]
    y = node.attr_float("alpha", 1.0) * (a.astype(np.float64) @ b.astype(np.float64))
    if len(values) > 2 and values[2] is not None:
        y = y + node.attr_float("beta", 1.0) * values[2].astype(np.float64)
    return [y.astype(values[0].dtype)]


def _matmul_infer(node: Node, ctx: OpContext) -> list[Output]:
    a, b = ctx.shape(node, 0), ctx.shape(node, 1)
    if not a or not b:
        raise ModelLoadError(f"{node.describe()}: MatMul of a scalar")
    try:
        shape = np.matmul(np.empty(a, np.int8), np.empty(b, np.int8)).shape
    except ValueError:
        raise ModelLoadError(f"{node.describe()}: shapes {a} and {b} do not multiply") from None
    return [(tuple(shape), ctx.dtype(node, 0))]


def _matmul_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [np.matmul(values[0].astype(np.float64), values[1]).astype(values[0].dtype)]


def _native(node: Node, ctx: OpContext) -> str | None:
    a, b = ctx.shape(node, 0), ctx.shape(node, 1)
    if node.op == "MatMul" and (len(a) < 2 or len(b) < 2 or (
            len(b) > 2 and len(ctx.shapes[node.outputs[0]]) > 4)):
        return "MatMul of vectors, or batched beyond rank 4"
    return None


def _macs(node: Node, ctx: OpContext) -> tuple[int, int]:
    out = ctx.shapes[node.outputs[0]]
    if node.op == "MatMul":  # A's last dim is K (B may be a vector, the output a scalar)
        k = ctx.shape(node, 0)[-1]
    else:
        b = ctx.shape(node, 1)
        k = b[1] if node.attr_int("transB", 0) else b[0]
    dense = math.prod(out[:-1]) * linear_macs(out[-1], k) if out else k
    weight = ctx.const(node, 1)
    if weight is None or weight.size == 0:
        return dense, dense
    return dense, sparse_macs(dense, int(np.count_nonzero(weight)), weight.size)


def _b_view(b: Builder, name: str, transposed: bool) -> SymView:
    """View (K, N) of the B operand; a constant B is stored transposed (N, K) so k is contiguous."""
    if name in b.graph.constants:
        mat = np.asarray(b.graph.constants[name], np.float32)
        bt = mat if transposed else mat.T  # (N, K)
        n, k = bt.shape
        view = b.const_view(np.ascontiguousarray(bt))
        return SymView(None, CONST, view.origin, (1, 1, k, n), (0, 0, 1, k), view.slot)
    t = b.flat(name)
    rows, cols = t.shape
    if transposed:  # stored (N, K)
        return SymView(t.buf, ARENA, 0, (1, 1, cols, rows), (0, 0, 1, cols))
    return SymView(t.buf, ARENA, 0, (1, 1, rows, cols), (0, 0, cols, 1))


def _batch_view(view: SymView, out4: tuple[int, ...]) -> SymView:
    """A (b0, b1, rows, cols) operand view broadcast over the output's batch dims."""
    strides = tuple(0 if i < 2 and d == 1 and o != 1 else s for i, (d, o, s) in
                    enumerate(zip(view.dims, out4, view.strides, strict=True)))
    dims = (*out4[:2], *view.dims[2:])
    return SymView(view.buf, view.space, view.origin, dims, strides,  # type: ignore[arg-type]
                   view.slot)


def _emit_batched(b: Builder, node: Node) -> None:
    """MatMul with a B of rank > 2: batch dims 0 and 1 of the views."""
    out_shape = b.shapes[node.outputs[0]]
    out4 = as4(out_shape)
    a_shape, b_shape = b.shapes[node.inputs[0]], b.shapes[node.inputs[1]]
    a = b.flat(node.inputs[0])
    a_view = _batch_view(a.compact_view(as4(a_shape)), out4)
    name = node.inputs[1]
    if name in b.graph.constants:  # stored transposed: (..., N, K)
        bt = np.ascontiguousarray(np.swapaxes(np.asarray(b.graph.constants[name], np.float32),
                                              -1, -2))
        stored = b.const_view(bt)
        d = stored.dims
        b_view = SymView(None, CONST, stored.origin, (d[0], d[1], d[3], d[2]),
                         (stored.strides[0], stored.strides[1], 1, d[3]), stored.slot)
    else:
        b_view = b.flat(name).compact_view(as4(b_shape))
    spec = native().GemmSpec()
    spec.alpha, spec.beta = 1.0, 0.0
    written, y = b.compact_output(node.outputs[0])
    b.emit(spec, a=a_view, b=_batch_view(b_view, out4), y=written.compact_view(out4))
    b.finish_compact(written, y)


def _emit(b: Builder, node: Node) -> None:
    if node.op == "MatMul" and len(b.shapes[node.inputs[1]]) > 2:
        _emit_batched(b, node)
        return
    a = b.flat(node.inputs[0])
    out_shape = b.shapes[node.outputs[0]]
    m, n = math.prod(out_shape[:-1]), out_shape[-1]
    spec = native().GemmSpec()
    if node.op == "MatMul":
        k = a.shape[-1]
        a_view = SymView(a.buf, ARENA, 0, (1, 1, m, k), (0, 0, k, 1))
        spec.alpha, spec.beta, trans_b = 1.0, 0.0, False
    else:
        rows, cols = a.shape
        trans_a = bool(node.attr_int("transA", 0))
        k = rows if trans_a else cols
        strides = (0, 0, 1, cols) if trans_a else (0, 0, cols, 1)
        a_view = SymView(a.buf, ARENA, 0, (1, 1, m, k), strides)
        spec.alpha, spec.beta = node.attr_float("alpha", 1.0), node.attr_float("beta", 1.0)
        trans_b = bool(node.attr_int("transB", 0))
    views = {"a": a_view, "b": _b_view(b, node.inputs[1], trans_b)}
    if node.op == "Gemm" and node.input(2):
        c_name = node.input(2)
        if c_name in b.graph.constants:
            c_view = b.const_view(np.asarray(b.graph.constants[c_name], np.float32))
        else:
            c_view = b.flat(c_name).view()
        views["c"] = broadcast_view(c_view, (1, 1, m, n))
        spec.has_c = True
    written, y = b.compact_output(node.outputs[0])
    views["y"] = SymView(written.buf, ARENA, 0, (1, 1, m, n), (0, 0, n, 1))
    b.emit(spec, **views)
    b.finish_compact(written, y)


register(OpDef("Gemm", _gemm_infer, _gemm_evaluate, _emit, _native, _macs, inputs=(2, 3)),
         OpDef("MatMul", _matmul_infer, _matmul_evaluate, _emit, _native, _macs, inputs=(2, 2)))
