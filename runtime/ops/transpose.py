"""Transpose: natively a copy whose source view has permuted strides. Input axes that stay
adjacent and in order are merged first, so higher ranks run natively when they reduce to 4
(ShuffleNet's channel shuffle: (N, 2, C/2, H, W) -> (N, C/2, 2, H, W) is a 4-D transpose of
(N, 2, C/2, H*W))."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import ARENA, SymView, as4, compact_strides

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder


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


def merged(shape: tuple[int, ...], perm: tuple[int, ...]
           ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(shape, perm) with every run of input axes that stays adjacent and in order in ``perm``
    merged into one axis."""
    groups: list[list[int]] = []
    for axis in perm:
        if groups and groups[-1][-1] + 1 == axis:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    order = sorted(range(len(groups)), key=lambda g: groups[g][0])
    new_shape = tuple(math.prod(shape[a] for a in groups[g]) for g in order)
    position = {g: i for i, g in enumerate(order)}
    return new_shape, tuple(position[g] for g in range(len(groups)))


def _native(node: Node, ctx: OpContext) -> str | None:
    x = ctx.shape(node, 0)
    if len(x) <= 4 or len(merged(x, _perm(node, len(x)))[0]) <= 4:
        return None
    return "transposes that do not reduce to rank 4"


def _emit(b: Builder, node: Node) -> None:
    x_shape = b.shapes[node.inputs[0]]
    perm = _perm(node, len(x_shape))
    if len(x_shape) > 4:
        _emit_merged(b, node, x_shape, perm)
        return
    rank = len(x_shape)
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


def _emit_merged(b: Builder, node: Node, x_shape: tuple[int, ...], perm: tuple[int, ...]
                 ) -> None:
    shape, order = merged(x_shape, perm)
    pad = 4 - len(shape)
    dims = as4(shape)
    x = b.flat(node.inputs[0])
    strides = compact_strides(dims)
    src_dims = tuple(dims[:pad]) + tuple(dims[pad + p] for p in order)
    src_strides = tuple(strides[:pad]) + tuple(strides[pad + p] for p in order)
    src = SymView(x.buf, ARENA, 0, src_dims, src_strides)  # type: ignore[arg-type]
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    b.copy(src, y.compact_view(src_dims))  # type: ignore[arg-type]


register(OpDef("Transpose", _infer, _evaluate, _emit, _native))
