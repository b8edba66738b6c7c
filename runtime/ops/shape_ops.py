"""Operators that move, reshape or select data, and the shape plumbing exporters write.

Natively (copies between views, steps/eltwise.cpp): Reshape, Flatten, Squeeze, Unsqueeze,
Identity, Dropout, Concat, Split, Slice, Expand, Pad (constant mode), Gather with constant
indices. The shape plumbing (Shape, Size, Gather, Cast,
ConstantOfShape, Range, comparisons, Where, Tile, integer arithmetic) has NumPy references with
ONNX semantics, so ``runtime.specialize`` folds it into constants for each concrete input shape;
what cannot be folded (it depends on input values) runs on ONNX Runtime.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from featherdeploy.runtime.errors import DataDependentShapeError, InputError, ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.fusion import SHUFFLE_KEY
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import SymView, as4

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["reshape_shape", "normalize_axis", "ONNX_DTYPES"]

# ONNX TensorProto element types -> NumPy.
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
               7: np.int64, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32,
               13: np.uint64}
MAX_ELEMENTS = 1 << 31  # a shape op producing more elements is a model or input error


def normalize_axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelLoadError(f"{node.describe()}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _check_size(node: Node, shape: tuple[int, ...]) -> tuple[int, ...]:
    if any(d < 0 for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise InputError(f"{node.describe()}: output shape {shape} is invalid or too large")
    return shape


def _same(node: Node, ctx: OpContext) -> list[Output]:
    return [(ctx.shape(node, 0), ctx.dtype(node, 0))]


def _ints(node: Node, value: np.ndarray | None, what: str) -> list[int]:
    if value is None:
        raise DataDependentShapeError(f"{node.describe()}: {what} must be a constant")
    if not np.issubdtype(value.dtype, np.integer) or value.ndim > 1:
        raise ModelLoadError(f"{node.describe()}: {what} must be a 1-D integer tensor")
    return [int(v) for v in value.reshape(-1)]


# ----------------------------------------------------------------------------- reshape family


def reshape_shape(node: Node, x: tuple[int, ...], target: list[int]) -> tuple[int, ...]:
    """Reshape's output shape: 0 copies the input dim (unless allowzero), -1 is inferred."""
    allow_zero = node.attr_int("allowzero", 0)
    out = [x[i] if d == 0 and not allow_zero and i < len(x) else d for i, d in enumerate(target)]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise ModelLoadError(f"{node.describe()}: invalid target shape {target}")
    total = math.prod(x)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise InputError(f"{node.describe()}: cannot reshape {x} to {target}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise InputError(f"{node.describe()}: cannot reshape {x} to {target}")
    return tuple(out)


def _reshape_infer(node: Node, ctx: OpContext) -> list[Output]:
    target = _ints(node, ctx.const(node, 1), "the target shape")
    return [(reshape_shape(node, ctx.shape(node, 0), target), ctx.dtype(node, 0))]


def _flatten_shape(node: Node, x: tuple[int, ...]) -> tuple[int, ...]:
    axis = node.attr_int("axis", 1)
    if not -len(x) <= axis <= len(x):
        raise ModelLoadError(f"{node.describe()}: axis {axis} out of range for rank {len(x)}")
    axis = axis + len(x) if axis < 0 else axis
    return (math.prod(x[:axis]), math.prod(x[axis:]))


def _squeeze_axes(node: Node, ctx: OpContext, rank: int) -> list[int] | None:
    axes = node.attr_ints("axes") if ctx.opset < 13 else (
        _ints(node, ctx.const(node, 1), "axes") if node.input(1) else None)
    return None if axes is None else [normalize_axis(node, a, rank) for a in axes]


def _squeeze_shape(node: Node, ctx: OpContext, x: tuple[int, ...]) -> tuple[int, ...]:
    axes = _squeeze_axes(node, ctx, len(x))
    if axes is None:
        return tuple(d for d in x if d != 1)
    if any(x[a] != 1 for a in axes):
        raise InputError(f"{node.describe()}: cannot squeeze dims {axes} of {x}")
    return tuple(d for i, d in enumerate(x) if i not in axes)


def _unsqueeze_shape(node: Node, ctx: OpContext, x: tuple[int, ...]) -> tuple[int, ...]:
    axes = node.attr_ints("axes") if ctx.opset < 13 else _ints(
        node, ctx.const(node, 1), "axes")
    if axes is None:
        raise ModelLoadError(f"{node.describe()}: axes are required")
    rank = len(x) + len(axes)
    axes = sorted(normalize_axis(node, a, rank) for a in axes)
    if len(set(axes)) != len(axes):
        raise ModelLoadError(f"{node.describe()}: repeated axes")
    out = list(x)
    for a in axes:
        out.insert(a, 1)
    return tuple(out)


def _shaped(shape_fn: Callable[[Node, OpContext, tuple[int, ...]], tuple[int, ...]]
            ) -> tuple[Callable, Callable]:
    """infer and evaluate of an op that only reshapes (row-major order kept)."""
    def infer(node: Node, ctx: OpContext) -> list[Output]:
        return [(shape_fn(node, ctx, ctx.shape(node, 0)), ctx.dtype(node, 0))]

    def evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
        return [values[0].reshape(shape_fn(node, ctx, values[0].shape))]
    return infer, evaluate


def _reshape_like(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    target = _ints(node, ctx.const(node, 1), "the target shape")
    return [values[0].reshape(reshape_shape(node, values[0].shape, target))]


def _identity(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [values[0]]


def _dropout_native(node: Node, ctx: OpContext) -> str | None:
    return "the mask output" if any(node.outputs[1:]) else None


def _dropout_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    return [(x, ctx.dtype(node, 0))] + [(x, np.dtype(np.bool_))] * (len(node.outputs) - 1)


def _dropout_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    mask = [np.ones(values[0].shape, np.bool_)] * (len(node.outputs) - 1)
    return [values[0], *mask]


def emit_reshape(b: Builder, node: Node) -> None:
    """Reshape-like ops: the row-major element order is kept, only layouts change."""
    x = b.tensor(node.inputs[0])
    out_shape = b.shapes[node.outputs[0]]
    y = b.new_tensor(node.outputs[0], out_shape)
    if x.spatial and y.spatial and x.shape == y.shape:
        b.copy(x.view(), y.view())
        return
    src = b.flat(node.inputs[0]) if x.spatial else x
    if y.spatial:
        b.copy(src.compact_view(y.shape), y.view())  # type: ignore[arg-type]
    else:
        numel = (1, 1, 1, math.prod(out_shape))
        b.copy(src.compact_view(numel), y.compact_view(numel))


# ----------------------------------------------------------------------------- concat, split


def _concat_axis(node: Node, opset: int, rank: int) -> int:
    if "axis" not in node.attrs and opset >= 4:
        raise ModelLoadError(f"{node.describe()}: attribute axis is required")
    return normalize_axis(node, node.attr_int("axis", 1), rank)


def _concat_infer(node: Node, ctx: OpContext) -> list[Output]:
    shapes = [ctx.shape(node, i) for i in range(len(node.inputs))]
    rank = len(shapes[0])
    axis = _concat_axis(node, ctx.opset, rank)
    for s in shapes[1:]:
        if len(s) != rank or any(s[i] != shapes[0][i] for i in range(rank) if i != axis):
            raise InputError(f"{node.describe()}: shapes {shapes} cannot be concatenated on "
                             f"axis {axis}")
    if len({ctx.dtype(node, i) for i in range(len(node.inputs))}) != 1:
        raise ModelLoadError(f"{node.describe()}: inputs of different types")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [(tuple(out), ctx.dtype(node, 0))]


def _concat_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    out = np.concatenate(values, axis=_concat_axis(node, ctx.opset, values[0].ndim))
    groups = node.attrs.get(SHUFFLE_KEY)
    if groups:  # fused channel shuffle (passes/channel_shuffle.py)
        n, c, h, w = out.shape
        out = np.ascontiguousarray(
            out.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(out.shape))
    return [out]


def _axis_view(b: Builder, name: str, shape: tuple[int, ...], axis: int):  # noqa: ANN202
    """A 4-D view of ``name`` whose dim ``axis4`` is ``axis`` of its shape: (view, axis4)."""
    rank = len(shape)
    if rank <= 4:
        return b.view(name), axis + 4 - rank
    t = b.flat(name)
    dims = (1, math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    return t.compact_view(dims), 2  # type: ignore[arg-type]


def _concat_emit(b: Builder, node: Node) -> None:
    out_shape = b.shapes[node.outputs[0]]
    axis = _concat_axis(node, b.graph.opset, len(out_shape))
    b.new_tensor(node.outputs[0], out_shape)
    y_view, axis4 = _axis_view(b, node.outputs[0], out_shape, axis)
    groups = node.attrs.get(SHUFFLE_KEY)
    start = 0
    for name in node.inputs:
        shape = b.shapes[name]
        src, _ = _axis_view(b, name, shape, axis)
        if groups:
            _copy_shuffled(b, src, y_view, start, groups)
        else:
            b.copy(src, y_view.shifted(axis4, start, shape[axis]))
        start += shape[axis]


def _copy_shuffled(b: Builder, src: Any, y_view: Any, start: int, groups: int) -> None:
    """Copies the channels [start, start + C_src) of a concat into the channel-shuffled output
    (passes/channel_shuffle.py): concat channel g * C/G + a goes to a * G + g, so each group's
    piece of this input is one copy into a view with channel stride G."""
    per_group = y_view.dims[1] // groups
    end = start + src.dims[1]
    for g in range(start // per_group, (end - 1) // per_group + 1):
        first, last = max(start, g * per_group), min(end, (g + 1) * per_group)
        a0 = first - g * per_group
        strides = list(y_view.strides)
        strides[1] *= groups
        dims = list(y_view.dims)
        dims[1] = last - first
        origin = y_view.origin + (a0 * groups + g) * y_view.strides[1]
        dst = SymView(y_view.buf, y_view.space, origin, tuple(dims), tuple(strides), y_view.slot)
        b.copy(src.shifted(1, first - start, last - first), dst)


def _split_sizes(node: Node, ctx: OpContext, x: tuple[int, ...]) -> tuple[int, list[int]]:
    axis = normalize_axis(node, node.attr_int("axis", 0), len(x))
    if ctx.opset < 13:
        split = node.attr_ints("split")
    else:
        split = tuple(_ints(node, ctx.const(node, 1), "split")) if node.input(1) else None
    count = len(node.outputs)
    if split is None:
        parts = node.attr_int("num_outputs", count)
        if parts != count or parts < 1:
            raise ModelLoadError(f"{node.describe()}: {count} outputs for num_outputs={parts}")
        size = -(-x[axis] // parts)
        split = tuple(min(size, max(0, x[axis] - i * size)) for i in range(parts))
    if len(split) != count or sum(split) != x[axis] or min(split) < 0:
        raise InputError(f"{node.describe()}: split {list(split)} of dim {x[axis]} into "
                         f"{count} outputs")
    return axis, list(split)


def _split_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    axis, sizes = _split_sizes(node, ctx, x)
    return [((*x[:axis], s, *x[axis + 1:]), ctx.dtype(node, 0)) for s in sizes]


def _split_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    axis, sizes = _split_sizes(node, ctx, values[0].shape)
    return np.split(values[0], np.cumsum(sizes)[:-1], axis=axis)


def _split_emit(b: Builder, node: Node) -> None:
    x_shape = b.shapes[node.inputs[0]]
    axis, sizes = _split_sizes(node, _ctx(b), x_shape)
    src, axis4 = _axis_view(b, node.inputs[0], x_shape, axis)
    start = 0
    for name, size in zip(node.outputs, sizes, strict=True):
        shape = b.shapes[name]
        if len(x_shape) == 4 and axis == 1 and size and b.alias_channels(name, node.inputs[0],
                                                                           start):
            start += size
            continue
        b.new_tensor(name, shape)
        dst, _ = _axis_view(b, name, shape, axis)
        if size:
            b.copy(src.shifted(axis4, start, size), dst)
        start += size


def _ctx(b: Builder) -> OpContext:
    return OpContext(b.graph.opset, b.shapes, {}, b.graph.constants)


# ----------------------------------------------------------------------------- slice, expand


def _slice_params(node: Node, ctx: OpContext, x: tuple[int, ...]
                  ) -> list[tuple[int, int, int]]:
    """(start, stop, step) per axis of x, clamped as ONNX specifies."""
    if ctx.opset < 10:
        starts, ends = node.attr_ints("starts"), node.attr_ints("ends")
        axes, steps = node.attr_ints("axes"), None
        if starts is None or ends is None:
            raise ModelLoadError(f"{node.describe()}: starts and ends are required")
    else:
        starts = tuple(_ints(node, ctx.const(node, 1), "starts"))
        ends = tuple(_ints(node, ctx.const(node, 2), "ends"))
        axes = tuple(_ints(node, ctx.const(node, 3), "axes")) if node.input(3) else None
        steps = tuple(_ints(node, ctx.const(node, 4), "steps")) if node.input(4) else None
    axes = axes if axes is not None else tuple(range(len(starts)))
    steps = steps if steps is not None else (1,) * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelLoadError(f"{node.describe()}: starts, ends, axes and steps differ in length")
    params = [(0, d, 1) for d in x]
    seen = set()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = normalize_axis(node, axis, len(x))
        if axis in seen or step == 0:
            raise ModelLoadError(f"{node.describe()}: repeated axis or zero step")
        seen.add(axis)
        params[axis] = slice(start, end, step).indices(x[axis])
    return params


def _slice_shape(params: list[tuple[int, int, int]]) -> tuple[int, ...]:
    return tuple(len(range(*p)) for p in params)


def _slice_infer(node: Node, ctx: OpContext) -> list[Output]:
    params = _slice_params(node, ctx, ctx.shape(node, 0))
    return [(_slice_shape(params), ctx.dtype(node, 0))]


def _slice_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    params = _slice_params(node, ctx, values[0].shape)
    # slice.indices() gives stop -1 for "before the first element", which a slice would read as
    # "the last element".
    return [values[0][tuple(slice(a, b if b >= 0 else None, c) for a, b, c in params)]]


def _slice_native(node: Node, ctx: OpContext) -> str | None:
    if len(ctx.shape(node, 0)) > 4:
        return "slices of rank > 4"
    shape = ctx.shapes[node.outputs[0]]
    return "an empty slice" if 0 in shape else None


def _slice_emit(b: Builder, node: Node) -> None:
    x_shape = b.shapes[node.inputs[0]]
    params = _slice_params(node, _ctx(b), x_shape)
    channels_only = len(x_shape) == 4 and all(
        (start, stop, step) == (0, size, 1)
        for axis, ((start, stop, step), size) in enumerate(zip(params, x_shape, strict=True))
        if axis != 1) and params[1][2] == 1
    if channels_only and b.alias_channels(node.outputs[0], node.inputs[0], params[1][0]):
        return
    src = b.view(node.inputs[0])
    pad = 4 - len(x_shape)
    origin, strides = src.origin, list(src.strides)
    for axis, (start, _, step) in enumerate(params):
        origin += start * src.strides[axis + pad]
        strides[axis + pad] = src.strides[axis + pad] * step
    out_shape = b.shapes[node.outputs[0]]
    view = type(src)(src.buf, src.space, origin, as4(out_shape), tuple(strides), src.slot)
    y = b.new_tensor(node.outputs[0], out_shape)
    b.copy(view, y.view())


def _expand_shape(node: Node, ctx: OpContext, x: tuple[int, ...]) -> tuple[int, ...]:
    target = tuple(_ints(node, ctx.const(node, 1), "the shape"))
    try:
        return _check_size(node, tuple(np.broadcast_shapes(x, target)))
    except ValueError:
        raise InputError(f"{node.describe()}: {x} does not expand to {target}") from None


def _expand_infer(node: Node, ctx: OpContext) -> list[Output]:
    return [(_expand_shape(node, ctx, ctx.shape(node, 0)), ctx.dtype(node, 0))]


def _expand_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    shape = _expand_shape(node, ctx, values[0].shape)
    return [np.ascontiguousarray(np.broadcast_to(values[0], shape))]


def _expand_native(node: Node, ctx: OpContext) -> str | None:
    return "expansions of rank > 4" if len(ctx.shapes[node.outputs[0]]) > 4 else None


def _expand_emit(b: Builder, node: Node) -> None:
    from featherdeploy.runtime.ops.eltwise import broadcast_view, operand_view

    out_shape = b.shapes[node.outputs[0]]
    y = b.new_tensor(node.outputs[0], out_shape)
    b.copy(broadcast_view(operand_view(b, node.inputs[0]), as4(out_shape)), y.view())


# ----------------------------------------------------------------------------- pad


def _pad_params(node: Node, ctx: OpContext, rank: int) -> tuple[list[int], float, str]:
    """(pads as begin..., end..., constant value, mode) of a Pad node."""
    mode = node.attr_str("mode", "constant")
    if ctx.opset < 11:
        pads = list(node.attr_ints("pads", ()) or ())
        value = node.attr_float("value", 0.0)
    else:
        pads = _ints(node, ctx.const(node, 1), "pads")
        constant = ctx.const(node, 2) if node.input(2) else None
        if node.input(2) and constant is None:
            raise DataDependentShapeError(f"{node.describe()}: constant_value must be a constant")
        value = float(constant.reshape(-1)[0]) if constant is not None and constant.size else 0.0
        if node.input(3):
            axes = [normalize_axis(node, a, rank) for a in _ints(node, ctx.const(node, 3), "axes")]
            if len(pads) != 2 * len(axes):
                raise ModelLoadError(f"{node.describe()}: {len(pads)} pads for axes {axes}")
            full = [0] * (2 * rank)
            for k, axis in enumerate(axes):
                full[axis], full[axis + rank] = pads[k], pads[k + len(axes)]
            pads = full
    if len(pads) != 2 * rank:
        raise ModelLoadError(f"{node.describe()}: {len(pads)} pads for rank {rank}")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ModelLoadError(f"{node.describe()}: unknown mode {mode!r}")
    return pads, value, mode


def _pad_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    pads, _, _ = _pad_params(node, ctx, len(x))
    rank = len(x)
    shape = tuple(d + pads[i] + pads[i + rank] for i, d in enumerate(x))
    return [(_check_size(node, shape), ctx.dtype(node, 0))]


def _pad_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0]
    rank = x.ndim
    pads, value, mode = _pad_params(node, ctx, rank)
    crop = tuple(slice(max(0, -pads[i]), x.shape[i] - max(0, -pads[i + rank]))
                 for i in range(rank))
    x = x[crop]
    widths = [(max(0, pads[i]), max(0, pads[i + rank])) for i in range(rank)]
    numpy_mode = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}
    if mode == "constant":
        return [np.pad(x, widths, mode="constant", constant_values=value)]
    return [np.pad(x, widths, mode=numpy_mode[mode])]


def _pad_native(node: Node, ctx: OpContext) -> str | None:
    x = ctx.shape(node, 0)
    pads, _, mode = _pad_params(node, ctx, len(x))
    if mode != "constant" or min(pads) < 0 or len(x) > 4:
        return "only constant padding (no cropping) of rank <= 4"
    return None


def _pad_emit(b: Builder, node: Node) -> None:
    from featherdeploy.runtime import _native

    x_shape = b.shapes[node.inputs[0]]
    rank = len(x_shape)
    pads, value, _ = _pad_params(node, _ctx(b), rank)
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    fill = _native.FillSpec()
    fill.value = value
    b.emit(fill, dst=y.view())
    interior = y.view()
    for axis in range(rank):
        interior = interior.shifted(axis + 4 - rank, pads[axis], x_shape[axis])
    b.copy(b.view(node.inputs[0]), interior)


# ----------------------------------------------------------------------------- shape plumbing


def _shape_value(node: Node, x: tuple[int, ...]) -> np.ndarray:
    rank = len(x)
    start, end = node.attr_int("start", 0), node.attr_int("end", rank)
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return np.asarray(x[start:end], np.int64)


def _shape_infer(node: Node, ctx: OpContext) -> list[Output]:
    return [(_shape_value(node, ctx.shape(node, 0)).shape, np.dtype(np.int64))]


def _shape_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [_shape_value(node, values[0].shape)]


def _size_infer(node: Node, ctx: OpContext) -> list[Output]:
    return [((), np.dtype(np.int64))]


def _size_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [np.asarray(values[0].size, np.int64)]


def _gather_axis(node: Node, rank: int) -> int:
    return normalize_axis(node, node.attr_int("axis", 0), rank)


def _gather_infer(node: Node, ctx: OpContext) -> list[Output]:
    x, idx = ctx.shape(node, 0), ctx.shape(node, 1)
    axis = _gather_axis(node, len(x))
    return [((*x[:axis], *idx, *x[axis + 1:]), ctx.dtype(node, 0))]


def _gather_native(node: Node, ctx: OpContext) -> str | None:
    idx = ctx.const(node, 1)
    x = ctx.shape(node, 0)
    if idx is None:
        return "indices computed at run time"
    if len(x) > 4 or idx.size > 64 or idx.ndim > 1 or len(ctx.shapes[node.outputs[0]]) > 4:
        return "gathers of rank > 4, of many indices or of index matrices"
    return None


def _gather_emit(b: Builder, node: Node) -> None:
    """One copy per index: the slice of the input at that index into its place."""
    x_shape = b.shapes[node.inputs[0]]
    axis = _gather_axis(node, len(x_shape))
    idx = np.asarray(b.graph.constants[node.inputs[1]]).astype(np.int64).reshape(-1)
    out_shape = b.shapes[node.outputs[0]]
    y = b.new_tensor(node.outputs[0], out_shape)
    src = b.view(node.inputs[0])
    pad = 4 - len(x_shape)
    # The output seen with the input's rank: the gathered axis holds the indices in order.
    y_dims = (*x_shape[:axis], idx.size, *x_shape[axis + 1:])
    dst = y.view() if y.spatial and y_dims == out_shape else y.compact_view(as4(y_dims))
    for k, i in enumerate(idx):
        i = int(i) + (x_shape[axis] if i < 0 else 0)
        if not 0 <= i < x_shape[axis]:
            raise InputError(f"{node.describe()}: index {int(idx[k])} out of range")
        b.copy(src.shifted(axis + pad, i, 1), dst.shifted(axis + pad, k, 1))


def _gather_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x, idx = values
    axis = _gather_axis(node, x.ndim)
    if not np.issubdtype(idx.dtype, np.integer):
        raise ModelLoadError(f"{node.describe()}: indices must be integers")
    if idx.size and (idx.min() < -x.shape[axis] or idx.max() >= x.shape[axis]):
        raise InputError(f"{node.describe()}: indices out of range for dim {x.shape[axis]}")
    return [np.take(x, idx.astype(np.int64), axis=axis)]


def _cast_dtype(node: Node) -> np.dtype:
    to = node.attr_int("to", 0)
    if to not in ONNX_DTYPES:
        raise ModelLoadError(f"{node.describe()}: unsupported target type {to}")
    return np.dtype(ONNX_DTYPES[to])


def _cast_infer(node: Node, ctx: OpContext) -> list[Output]:
    return [(ctx.shape(node, 0), _cast_dtype(node))]


def _cast_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    with np.errstate(all="ignore"):
        return [values[0].astype(_cast_dtype(node))]


def _cast_native(node: Node, ctx: OpContext) -> str | None:
    same = ctx.dtype(node, 0) == _cast_dtype(node) == np.float32
    return None if same else "casts between types"


def _constant_of_shape_value(node: Node, ctx: OpContext) -> tuple[tuple[int, ...], np.ndarray]:
    shape = tuple(_ints(node, ctx.const(node, 0), "the shape"))
    value = node.attr_tensor("value")
    value = np.zeros(1, np.float32) if value is None else value.reshape(-1)
    if value.size != 1:
        raise ModelLoadError(f"{node.describe()}: value must hold one element")
    return _check_size(node, shape), value


def _constant_of_shape_infer(node: Node, ctx: OpContext) -> list[Output]:
    shape, value = _constant_of_shape_value(node, ctx)
    return [(shape, value.dtype)]


def _constant_of_shape_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext
                                ) -> list[np.ndarray]:
    shape, value = _constant_of_shape_value(node, ctx)
    return [np.full(shape, value[0], value.dtype)]


def _range_value(node: Node, values: list[np.ndarray]) -> np.ndarray:
    start, limit, delta = (v.reshape(-1)[0] for v in values)
    if delta == 0:
        raise ModelLoadError(f"{node.describe()}: delta is 0")
    count = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    if count > MAX_ELEMENTS:
        raise InputError(f"{node.describe()}: {count} elements")
    return (start + np.arange(count) * delta).astype(values[0].dtype)


def _range_infer(node: Node, ctx: OpContext) -> list[Output]:
    values = [ctx.const(node, i) for i in range(3)]
    if any(v is None for v in values):
        raise DataDependentShapeError(f"{node.describe()}: start, limit and delta must be "
                                      "constants")
    return [(_range_value(node, values).shape, ctx.dtype(node, 0))]  # type: ignore[arg-type]


def _range_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [_range_value(node, values)]


def _tile_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    repeats = _ints(node, ctx.const(node, 1), "repeats")
    if len(repeats) != len(x) or min(repeats, default=0) < 0:
        raise ModelLoadError(f"{node.describe()}: repeats {repeats} for rank {len(x)}")
    return [(_check_size(node, tuple(d * r for d, r in zip(x, repeats, strict=True))),
             ctx.dtype(node, 0))]


def _tile_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [np.tile(values[0], [int(r) for r in values[1].reshape(-1)])]


def _where_infer(node: Node, ctx: OpContext) -> list[Output]:
    shapes = [ctx.shape(node, i) for i in range(3)]
    try:
        return [(tuple(np.broadcast_shapes(*shapes)), ctx.dtype(node, 1))]
    except ValueError:
        raise ModelLoadError(f"{node.describe()}: shapes {shapes} do not broadcast") from None


def _where_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    return [np.where(values[0].astype(bool), values[1], values[2]).astype(values[1].dtype)]


def _logic(fn: Callable[..., np.ndarray], unary: bool = False) -> tuple[Callable, Callable]:
    def infer(node: Node, ctx: OpContext) -> list[Output]:
        shapes = [ctx.shape(node, i) for i in range(1 if unary else 2)]
        try:
            return [(tuple(np.broadcast_shapes(*shapes)), np.dtype(np.bool_))]
        except ValueError:
            raise ModelLoadError(f"{node.describe()}: shapes {shapes} do not broadcast") from None

    def evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
        return [np.asarray(fn(*values), np.bool_)]
    return infer, evaluate


def _register() -> None:
    squeeze = _shaped(lambda n, c, x: _squeeze_shape(n, c, x))
    unsqueeze = _shaped(lambda n, c, x: _unsqueeze_shape(n, c, x))
    flatten = _shaped(lambda n, c, x: _flatten_shape(n, x))
    register(
        OpDef("Reshape", _reshape_infer, _reshape_like, emit_reshape, inputs=(2, 2)),
        OpDef("Flatten", flatten[0], flatten[1], emit_reshape),
        OpDef("Squeeze", squeeze[0], squeeze[1], emit_reshape, inputs=(1, 2)),
        OpDef("Unsqueeze", unsqueeze[0], unsqueeze[1], emit_reshape, inputs=(1, 2)),
        OpDef("Identity", _same, _identity, emit_reshape),
        OpDef("Dropout", _dropout_infer, _dropout_evaluate, emit_reshape, _dropout_native,
              inputs=(1, 3), outputs=(1, 2)),
        OpDef("Concat", _concat_infer, _concat_evaluate, _concat_emit, inputs=(1, 2 ** 16)),
        OpDef("Split", _split_infer, _split_evaluate, _split_emit, inputs=(1, 2),
              outputs=(1, 2 ** 16)),
        OpDef("Slice", _slice_infer, _slice_evaluate, _slice_emit, _slice_native,
              inputs=(1, 5)),
        OpDef("Expand", _expand_infer, _expand_evaluate, _expand_emit, _expand_native,
              inputs=(2, 2)),
        OpDef("Shape", _shape_infer, _shape_evaluate, shape_only=True),
        OpDef("Size", _size_infer, _size_evaluate, shape_only=True),
        OpDef("Gather", _gather_infer, _gather_evaluate, _gather_emit, _gather_native,
              inputs=(2, 2)),
        OpDef("Pad", _pad_infer, _pad_evaluate, _pad_emit, _pad_native, inputs=(1, 4)),
        OpDef("Cast", _cast_infer, _cast_evaluate, emit_reshape, _cast_native),
        OpDef("ConstantOfShape", _constant_of_shape_infer, _constant_of_shape_evaluate),
        OpDef("Range", _range_infer, _range_evaluate, inputs=(3, 3)),
        OpDef("Tile", _tile_infer, _tile_evaluate, inputs=(2, 2)),
        OpDef("Where", _where_infer, _where_evaluate, inputs=(3, 3)),
    )
    for op, fn in (("Equal", np.equal), ("Less", np.less), ("Greater", np.greater),
                   ("LessOrEqual", np.less_equal), ("GreaterOrEqual", np.greater_equal),
                   ("And", np.logical_and), ("Or", np.logical_or), ("Xor", np.logical_xor)):
        infer, evaluate = _logic(fn)
        register(OpDef(op, infer, evaluate, inputs=(2, 2)))
    infer, evaluate = _logic(np.logical_not, unary=True)
    register(OpDef("Not", infer, evaluate))


_register()
