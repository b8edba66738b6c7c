"""Resize (opset >= 11: roi, scales or sizes as inputs) and Upsample (opset 7-9): output shapes
and the NumPy reference for the nearest and linear modes CNN heads use."""

from __future__ import annotations

import math

import numpy as np

from runtime.errors import ModelLoadError
from runtime.graph import Node
from runtime.ops.registry import OpContext, OpDef, Output, register

__all__ = ["resize_scales"]


def resize_scales(node: Node, ctx: OpContext, x: tuple[int, ...]
                  ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(scales, output shape) of a Resize / Upsample node."""
    if node.op == "Upsample":
        scales_value = (ctx.const(node, 1) if ctx.opset >= 9 else
                        np.asarray(node.attr_floats("scales", ()), np.float32))
        sizes_value = None
    else:
        scales_value = ctx.const(node, 2) if node.input(2) else None
        sizes_value = ctx.const(node, 3) if node.input(3) else None
        if (node.input(2) and scales_value is None) or (node.input(3) and sizes_value is None):
            raise ModelLoadError(f"{node.describe()}: scales and sizes must be constants")
    if sizes_value is not None and sizes_value.size:
        if sizes_value.size != len(x):
            raise ModelLoadError(f"{node.describe()}: {sizes_value.size} sizes for rank {len(x)}")
        sizes = tuple(int(s) for s in sizes_value.reshape(-1))
        return tuple(s / d for s, d in zip(sizes, x, strict=True)), sizes
    if scales_value is None or scales_value.size != len(x):
        raise ModelLoadError(f"{node.describe()}: needs one scale (or size) per dim of {x}")
    scales = tuple(float(s) for s in scales_value.reshape(-1))
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ModelLoadError(f"{node.describe()}: scales must be positive, got {scales}")
    return scales, tuple(int(math.floor(d * s)) for d, s in zip(x, scales, strict=True))


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    _, shape = resize_scales(node, ctx, x)
    return [(shape, ctx.dtype(node, 0))]


register(OpDef("Resize", _infer, inputs=(1, 4)), OpDef("Upsample", _infer, inputs=(1, 2)))
