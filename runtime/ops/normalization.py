"""BatchNormalization (inference) as a per-channel affine step, LayerNormalization (opset 17)
over the trailing dims from ``axis`` (steps/reduce.cpp), and the unary-step emitter that
activations share. A BatchNormalization after a conv is folded into it instead
(``runtime/passes/batchnorm.py``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.activation import apply_activation
from featherdeploy.runtime.ops.fusion import ACT_KEY, CLAMP_NONE
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["emit_unary", "batchnorm_affine"]


def batchnorm_affine(node: Node, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray,
                     var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 with y = x * scale + shift per channel."""
    eps = node.attr_float("epsilon", 1e-5)
    sizes = {np.asarray(p).size for p in (gamma, beta, mean, var)}
    if len(sizes) != 1:
        raise ModelLoadError(f"{node.describe()}: scale, bias, mean and var differ in size")
    scale = np.asarray(gamma, np.float64).reshape(-1) / np.sqrt(
        np.asarray(var, np.float64).reshape(-1) + eps)
    mean = np.asarray(mean, np.float64).reshape(-1)
    shift = np.asarray(beta, np.float64).reshape(-1) - mean * scale
    return scale, shift


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    if len(x) < 2:
        raise ModelLoadError(f"{node.describe()}: the input needs a channel axis")
    for index in range(1, 5):
        if ctx.shape(node, index) != (x[1],):
            raise ModelLoadError(f"{node.describe()}: parameter {index} of shape "
                                 f"{ctx.shape(node, index)} for {x[1]} channels")
    if node.attr_int("training_mode", 0):
        raise ModelLoadError(f"{node.describe()}: training_mode is not inference")
    return [(x, ctx.dtype(node, 0))] + [((x[1],), ctx.dtype(node, 0))] * (len(node.outputs) - 1)


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0]
    scale, shift = batchnorm_affine(node, *values[1:5])
    shape = [1, -1] + [1] * (x.ndim - 2)
    y = (x.astype(np.float64) * scale.reshape(shape) + shift.reshape(shape)).astype(x.dtype)
    if ACT_KEY in node.attrs:  # an activation fused by passes/activation_fusion.py
        y = apply_activation(y, node.attrs[ACT_KEY])
    return [y, *values[3:5]][:len(node.outputs)]


def _native(node: Node, ctx: OpContext) -> str | None:
    if any(ctx.const(node, i) is None for i in range(1, 5)):
        return "scale, bias, mean and var must be constants"
    if any(node.outputs[1:]):
        return "only the inference output is computed natively"
    return None


def emit_unary(b: Builder, node: Node, act: Any, scale: np.ndarray | None = None,
               shift: np.ndarray | None = None) -> None:
    """y = act(x * scale[c] + shift[c]) with c the channel (axis 1)."""
    x = b.tensor(node.inputs[0])
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    src, dst = x.view(), y.view()
    if not x.spatial and len(x.shape) >= 2:  # channel axis 1 of (N, C, ...) -> dim 1 of the view
        dims = (x.shape[0], x.shape[1], 1, math.prod(x.shape[2:]))
        src, dst = x.compact_view(dims), y.compact_view(dims)
    spec = native().UnarySpec()
    spec.act = act
    if scale is not None:
        spec.scale = np.ascontiguousarray(scale, dtype=np.float32)
    if shift is not None:
        spec.shift = np.ascontiguousarray(shift, dtype=np.float32)
    b.emit(spec, src=src, dst=dst)


def _emit(b: Builder, node: Node) -> None:
    params = [b.graph.constants[name] for name in node.inputs[1:5]]
    scale, shift = batchnorm_affine(node, *params)
    act = node.attrs.get(ACT_KEY, CLAMP_NONE)
    emit_unary(b, node, act.to_native(len(scale)), scale, shift)


def _ln_axis(node: Node, rank: int) -> int:
    axis = node.attr_int("axis", -1)
    if not -rank <= axis < rank:
        raise ModelLoadError(f"{node.describe()}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _ln_infer(node: Node, ctx: OpContext) -> list[Output]:
    x = ctx.shape(node, 0)
    axis = _ln_axis(node, len(x))
    normalized = x[axis:]
    for index in (1, 2):
        if node.input(index):
            try:
                np.broadcast_shapes(ctx.shape(node, index), normalized)
            except ValueError:
                raise ModelLoadError(f"{node.describe()}: parameter {index} of shape "
                                     f"{ctx.shape(node, index)} for {normalized}") from None
    stats = tuple(x[:axis]) + (1,) * (len(x) - axis)
    extra = [(stats, np.dtype(np.float32))] * (len(node.outputs) - 1)  # Mean, InvStdDev
    return [(x, ctx.dtype(node, 0)), *extra]


def _ln_evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x = values[0].astype(np.float64)
    axes = tuple(range(_ln_axis(node, x.ndim), x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True)
                        + node.attr_float("epsilon", 1e-5))
    y = (x - mean) * inv * values[1]
    if len(values) > 2 and values[2] is not None:
        y = y + values[2]
    return [y.astype(values[0].dtype), mean.astype(np.float32),
            inv.astype(np.float32)][:len(node.outputs)]


def _ln_native(node: Node, ctx: OpContext) -> str | None:
    if any(ctx.const(node, i) is None for i in (1, 2) if node.input(i)):
        return "scale and bias must be constants"
    normalized = tuple(ctx.shape(node, 0)[_ln_axis(node, len(ctx.shape(node, 0))):])
    if any(np.broadcast_shapes(ctx.shape(node, i), normalized) != normalized
           for i in (1, 2) if node.input(i)):
        return "scale or bias of more dims than the normalized shape"
    if any(node.outputs[1:]):
        return "the Mean and InvStdDev outputs"
    if node.attr_int("stash_type", 1) != 1:
        return "stash_type other than float"
    epsilon = node.attr_float("epsilon", 1e-5)
    if not 0.0 <= epsilon < math.inf:  # ONNX Runtime computes the NaN a negative one gives
        return "epsilon negative or not finite"
    return None


def _ln_emit(b: Builder, node: Node) -> None:
    shape = b.shapes[node.inputs[0]]
    axis = _ln_axis(node, len(shape))
    rows, features = math.prod(shape[:axis]), math.prod(shape[axis:])
    x = b.flat(node.inputs[0])
    dims = (1, 1, rows, features)
    spec = native().LayerNormSpec()
    spec.epsilon = node.attr_float("epsilon", 1e-5)
    normalized = tuple(shape[axis:])
    spec.scale = _per_feature(b.graph.constants[node.inputs[1]], normalized)
    if node.input(2):
        spec.bias = _per_feature(b.graph.constants[node.inputs[2]], normalized)
    written, y = b.compact_output(node.outputs[0])
    b.emit(spec, src=x.compact_view(dims), dst=written.compact_view(dims))
    b.finish_compact(written, y)


def _per_feature(value: np.ndarray, normalized: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(np.asarray(value, np.float32), normalized)
                                ).reshape(-1)


register(OpDef("BatchNormalization", _infer, _evaluate, _emit, _native, inputs=(5, 5),
               outputs=(1, 3)),
         OpDef("LayerNormalization", _ln_infer, _ln_evaluate, _ln_emit, _ln_native,
               inputs=(2, 3), outputs=(1, 3)))
