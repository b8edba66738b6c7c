"""Transpose (any permutation of rank <= 4 natively: a copy whose source view has permuted
strides; higher ranks on ONNX Runtime)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from runtime.errors import ModelLoadError
from runtime.graph import Node
from runtime.ops.registry import OpContext, OpDef, Output, register
from runtime.planner.layout import SymView

if TYPE_CHECKING:
    from runtime.planner.builder import Builder


def _perm(node: Node, rank: int) -> tuple[int, ...]:
    perm = node.attr_ints("perm", tuple(reversed(range(rank))))
    if sorted(perm) != list(range(rank)):
        raise ModelLoadError(f"{node.describe()}: perm {perm} is not a permutation of rank {rank}")
    return perm  # type: ignore[return-value]


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    return [(tuple(x[p] for p in _perm(node, len(x))), ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.transpose(values[0], _perm(node, values[0].ndim)))]


def _native(node: Node, ctx: OpContext) -> str | None:
    return None if len(ctx.shape(node, 0)) <= 4 else "transposes of rank > 4"


def _emit(b: Builder, node: Node) -> None:
    x_shape = b.shapes[node.inputs[0]]
    rank = len(x_shape)
    perm = _perm(node, rank)
    src = b.view(node.inputs[0])
    pad = 4 - rank
    strides = list(src.strides)
    for i, p in enumerate(perm):
        strides[pad + i] = src.strides[pad + p]
    dims = tuple(src.dims[:pad]) + tuple(src.dims[pad + p] for p in perm)
    view = SymView(src.buf, src.space, src.origin, dims, tuple(strides),  # type: ignore[arg-type]
                   src.slot)
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    b.copy(view, y.view())


register(OpDef("Transpose", _infer, _evaluate, _emit, _native))
