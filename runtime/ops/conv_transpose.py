"""ConvTranspose: shape inference, NumPy reference and MACs; natively it runs as stride x stride
stride-1 phase convs on the sparse conv kernels (``runtime/passes/conv_transpose.py`` expands
it), whose outputs ``PhaseInterleave`` places into the output:

    y[n, m, q_y * s_y + r_y, q_x * s_x + r_x] = phase(r_y, r_x)[n, m, q_y, q_x]

PhaseInterleave is an internal op (domain ``featherdeploy``) only that pass writes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.macs import sparse_macs
from featherdeploy.runtime.ops.geometry import (
    conv_transpose_geometry,
    nd_output_dims,
    transpose_phases,
)
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import SymView

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["INTERNAL_DOMAIN", "PHASE_INTERLEAVE"]

INTERNAL_DOMAIN = "featherdeploy"
PHASE_INTERLEAVE = "PhaseInterleave"


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    channels = w[1] * node.attr_int("group", 1) if len(w) > 1 else 0
    if node.input(2) and ctx.shapes.get(node.input(2)) != (channels,):
        raise ModelLoadError(f"{node.describe()}: bias of shape {ctx.shapes.get(node.input(2))} "
                             f"for {channels} output channels")
    if len(x) != 4:  # 1-D and 3-D ConvTransposes run on ONNX Runtime
        if len(x) < 3 or len(w) != len(x):
            raise ModelLoadError(f"{node.describe()}: input {x} with weight {w}")
        dims = nd_output_dims(node, x, tuple(w[2:]), transpose=True)
        return [((x[0], channels, *dims), ctx.dtype(node, 0))]
    geo = conv_transpose_geometry(node, x, w)
    return [((x[0], channels, *geo.out_hw), ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    """Scatter every input position times every tap into the output (float64)."""
    if values[0].ndim != 4:
        return []  # not folded: ONNX Runtime computes it
    x, w = values[0].astype(np.float64), values[1].astype(np.float64)
    geo = conv_transpose_geometry(node, x.shape, w.shape)
    n, c, h, wd = x.shape
    g = geo.group
    cg, mg = c // g, w.shape[1]
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    (pt, pl), (oh, ow) = geo.pad_begin, geo.out_hw
    full_h = sh * (h - 1) + (geo.kernel[0] - 1) * dh + 1 + oh
    full_w = sw * (wd - 1) + (geo.kernel[1] - 1) * dw + 1 + ow
    y = np.zeros((n, mg * g, full_h, full_w))
    for gi in range(g):
        xs = x[:, gi * cg:(gi + 1) * cg]
        for ky in range(geo.kernel[0]):
            for kx in range(geo.kernel[1]):
                contrib = np.einsum("nchw,cm->nmhw", xs, w[gi * cg:(gi + 1) * cg, :, ky, kx])
                rows = slice(ky * dh, ky * dh + sh * (h - 1) + 1, sh)
                cols = slice(kx * dw, kx * dw + sw * (wd - 1) + 1, sw)
                y[:, gi * mg:(gi + 1) * mg, rows, cols] += contrib
    y = y[:, :, pt:pt + oh, pl:pl + ow]
    if len(values) > 2 and values[2] is not None:
        y = y + values[2].astype(np.float64)[None, :, None, None]
    return [y.astype(values[0].dtype)]


def _native(node: Node, ctx: OpContext) -> str | None:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    if len(x) != 4:
        return "only 2-D ConvTranspose runs natively"
    if ctx.const(node, 1) is None or (node.input(2) and ctx.const(node, 2) is None):
        return "the weight or bias is computed at run time"
    if transpose_phases(conv_transpose_geometry(node, x, w), (x[2], x[3])) is None:
        return "dilated, or phases that are not plain stride-1 convs"
    return None


def _macs(node: Node, ctx: OpContext) -> tuple[int, int]:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    dense = x[0] * x[1] * w[1] * math.prod(w[2:]) * math.prod(x[2:])
    weight = ctx.const(node, 1)
    if weight is None or weight.size == 0:
        return dense, dense
    return dense, sparse_macs(dense, int(np.count_nonzero(weight)), weight.size)


def _expanded(b: Builder, node: Node) -> None:
    raise ModelLoadError(f"{node.describe()}: internal error (ConvTranspose runs as phase convs "
                         "that runtime/passes/conv_transpose.py writes)")


# ----------------------------------------------------------------------------- PhaseInterleave


def _interleave_infer(node: Node, ctx: OpContext) -> list[Output]:
    shape = node.attr_ints("output_shape")
    if shape is None:
        raise ModelLoadError(f"{node.describe()}: output_shape is required")
    return [(shape, ctx.dtype(node, 0))]


def _interleave_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext
                         ) -> list[np.ndarray]:
    y = np.zeros(node.attr_ints("output_shape"), values[0].dtype)
    sy, sx = node.attr_ints("strides")
    for value, (ry, rx) in zip(values, _phases(node), strict=True):
        y[:, :, ry::sy, rx::sx] = value
    return [y]


def _phases(node: Node) -> list[tuple[int, int]]:
    flat = node.attr_ints("phases")
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def _interleave_emit(b: Builder, node: Node) -> None:
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    out = y.view()
    sy, sx = node.attr_ints("strides")
    for name, (ry, rx) in zip(node.inputs, _phases(node), strict=True):
        shape = b.shapes[name]
        s = out.strides
        dst = SymView(out.buf, out.space, out.origin + ry * s[2] + rx * s[3], shape,
                      (s[0], s[1], sy * s[2], sx * s[3]), out.slot)
        b.copy(b.view(name), dst)


register(OpDef("ConvTranspose", _infer, _evaluate, _expanded, _native, _macs, inputs=(2, 3)),
         OpDef(PHASE_INTERLEAVE, _interleave_infer, _interleave_evaluate, _interleave_emit,
               inputs=(1, 64), domain=INTERNAL_DOMAIN))
