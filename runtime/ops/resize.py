"""Resize (opset >= 11: roi, scales or sizes as inputs) and Upsample (opset 7-9) of the two
trailing dims, nearest (every nearest_mode) and linear, with the coordinate transformation modes
FPN, YOLO and DB heads use (half_pixel, pytorch_half_pixel, align_corners, asymmetric,
tf_half_pixel_for_nn). The index and weight tables are computed here, in float32 as ONNX
Runtime does; the native step (steps/resize.cpp) only gathers. Cubic, antialiasing and
tf_crop_and_resize run on ONNX Runtime.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import DataDependentShapeError, ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.ops.shape_ops import normalize_axis
from featherdeploy.runtime.planner.layout import native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["resize_scales", "axis_table"]

NATIVE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "tf_half_pixel_for_nn")


def resize_scales(node: Node, ctx: OpContext, x: tuple[int, ...]
                  ) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(scales, output shape) of a Resize / Upsample node: scales or sizes (Resize-10: scales
    only, as input 1) for every dim, or (opset >= 18) for the dims of ``axes``; sizes with a
    keep_aspect_ratio_policy other than stretch scale those dims by one factor."""
    if node.op == "Upsample":
        scales_value = (ctx.const(node, 1) if ctx.opset >= 9 else
                        np.asarray(node.attr_floats("scales", ()), np.float32))
        sizes_value = None
    elif ctx.opset < 11:
        scales_value, sizes_value = ctx.const(node, 1), None
        if scales_value is None:
            raise DataDependentShapeError(f"{node.describe()}: scales must be a constant")
    else:
        scales_value = ctx.const(node, 2) if node.input(2) else None
        sizes_value = ctx.const(node, 3) if node.input(3) else None
        if (node.input(2) and scales_value is None) or (node.input(3) and sizes_value is None):
            raise DataDependentShapeError(f"{node.describe()}: scales and sizes must be constants")
    rank = len(x)
    axes = node.attr_ints("axes") if node.op == "Resize" and ctx.opset >= 18 else None
    axes = tuple(range(rank)) if axes is None else tuple(
        normalize_axis(node, int(a), rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ModelLoadError(f"{node.describe()}: repeated axes {axes}")
    if sizes_value is not None and sizes_value.size:
        if sizes_value.size != len(axes):
            raise ModelLoadError(f"{node.describe()}: {sizes_value.size} sizes for "
                                 f"{len(axes)} axes of {x}")
        given = dict(zip(axes, (int(s) for s in sizes_value.reshape(-1)), strict=True))
        policy = node.attr_str("keep_aspect_ratio_policy", "stretch") if ctx.opset >= 18 \
            else "stretch"
        if policy == "stretch":
            sizes = tuple(given.get(i, d) for i, d in enumerate(x))
            return tuple(s / d for s, d in zip(sizes, x, strict=True)), sizes
        if policy not in ("not_larger", "not_smaller"):
            raise ModelLoadError(f"{node.describe()}: keep_aspect_ratio_policy {policy!r}")
        ratios = [np.float32(given[a]) / np.float32(x[a]) for a in axes]
        scale = float(min(ratios) if policy == "not_larger" else max(ratios))
        scales = tuple(scale if i in given else 1.0 for i in range(rank))
        return scales, tuple(int(math.floor(d * s + 0.5)) if i in given else d
                             for i, (d, s) in enumerate(zip(x, scales, strict=True)))
    if scales_value is None or scales_value.size != len(axes):
        raise ModelLoadError(f"{node.describe()}: needs one scale (or size) per dim of {x}"
                             + ("" if len(axes) == rank else f" in axes {axes}"))
    given_scales = dict(zip(axes, (float(s) for s in scales_value.reshape(-1)), strict=True))
    scales = tuple(given_scales.get(i, 1.0) for i in range(rank))
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ModelLoadError(f"{node.describe()}: scales must be positive, got {scales}")
    return scales, tuple(int(math.floor(d * s)) for d, s in zip(x, scales, strict=True))


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    _, shape = resize_scales(node, ctx, x)
    return [(shape, ctx.dtype(node, 0))]


def _modes(node: Node, opset: int) -> tuple[str, str, str]:
    """(mode, coordinate transformation, nearest rounding) with each opset's defaults."""
    mode = node.attr_str("mode", "nearest")
    if node.op == "Upsample" or opset < 11:
        return mode, "asymmetric", "simple"  # ONNX Runtime: ceil when downsampling, else floor
    return (mode, node.attr_str("coordinate_transformation_mode", "half_pixel"),
            node.attr_str("nearest_mode", "round_prefer_floor"))


def _original(out: np.ndarray, scale: np.float32, in_size: int, out_size: int,
              transform: str) -> np.ndarray:
    """Input coordinate of every output index (float32, ONNX Runtime's formulas)."""
    x = out.astype(np.float32)
    one_half = np.float32(0.5)
    if transform == "half_pixel":
        return (x + one_half) / scale - one_half
    if transform == "pytorch_half_pixel":
        return (x + one_half) / scale - one_half if out_size > 1 else np.zeros_like(x)
    if transform == "align_corners":
        if out_size == 1:
            return np.zeros_like(x)
        return x * np.float32(in_size - 1) / np.float32(out_size - 1)
    if transform == "tf_half_pixel_for_nn":
        return (x + one_half) / scale
    return x / scale  # asymmetric


def _nearest(x: np.ndarray, rounding: str) -> np.ndarray:
    if rounding == "floor":
        return np.floor(x)
    if rounding == "ceil":
        return np.ceil(x)
    half = np.floor(x) + np.float32(0.5) == x
    if rounding == "round_prefer_ceil":
        return np.where(half, np.ceil(x), np.round(x))
    return np.where(half, np.floor(x), np.round(x))  # round_prefer_floor


def axis_table(node: Node, opset: int, in_size: int, out_size: int, scale: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i0, i1, w1) along one axis: output index o reads input i0[o] (nearest), or
    (1 - w1[o]) * x[i0[o]] + w1[o] * x[i1[o]] (linear)."""
    mode, transform, rounding = _modes(node, opset)
    if rounding == "simple":
        rounding = "ceil" if scale < 1.0 else "floor"
    original = _original(np.arange(out_size), np.float32(scale), in_size, out_size, transform)
    if mode == "nearest":
        i0 = np.clip(_nearest(original, rounding), 0, in_size - 1).astype(np.int64)
        return i0, i0, np.zeros(out_size, np.float32)
    x = np.clip(original, 0, in_size - 1)
    i0 = np.minimum(np.floor(x).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (x - i0.astype(np.float32)).astype(np.float32)


def _native(node: Node, ctx: OpContext) -> str | None:
    x = ctx.shape(node, 0)
    scales, _ = resize_scales(node, ctx, x)
    mode, transform, _ = _modes(node, ctx.opset)
    if len(x) != 4 or scales[0] != 1.0 or scales[1] != 1.0:
        return "only resizing the two trailing dims of a 4-D tensor"
    if mode not in ("nearest", "linear") or transform not in NATIVE_TRANSFORMS:
        return f"mode {mode} with {transform} coordinates"
    if node.attr_int("antialias", 0):
        return "antialiasing"
    return None


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    if _native(node, ctx) is not None:
        return []  # no NumPy reference of these modes: not folded, ONNX Runtime computes it
    x = values[0]
    scales, shape = resize_scales(node, ctx, x.shape)
    ty = axis_table(node, ctx.opset, x.shape[2], shape[2], scales[2])
    tx = axis_table(node, ctx.opset, x.shape[3], shape[3], scales[3])
    rows = [x[:, :, ty[0]], x[:, :, ty[1]]]
    lerp = [r[..., tx[0]] + tx[2] * (r[..., tx[1]] - r[..., tx[0]]) for r in rows]
    y = lerp[0] + ty[2][:, None] * (lerp[1] - lerp[0])
    return [y.astype(x.dtype)]


def _emit(b: Builder, node: Node) -> None:
    x = b.tensor(node.inputs[0])
    out_shape = b.shapes[node.outputs[0]]
    ctx = OpContext(b.graph.opset, b.shapes, {}, b.graph.constants)
    scales, _ = resize_scales(node, ctx, x.shape)
    mode, _, _ = _modes(node, b.graph.opset)
    ty = axis_table(node, b.graph.opset, x.shape[2], out_shape[2], scales[2])
    tx = axis_table(node, b.graph.opset, x.shape[3], out_shape[3], scales[3])
    y = b.new_tensor(node.outputs[0], out_shape)
    spec = native().ResizeSpec()
    spec.linear = mode == "linear"
    spec.y0, spec.x0 = ty[0], tx[0]
    if spec.linear:
        spec.y1, spec.x1, spec.wy, spec.wx = ty[1], tx[1], ty[2], tx[2]
    b.emit(spec, src=x.view(), dst=y.view())


register(OpDef("Resize", _infer, _evaluate, _emit, _native, inputs=(1, 4)),
         OpDef("Upsample", _infer, _evaluate, _emit, _native, inputs=(1, 2)))
