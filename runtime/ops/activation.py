"""Activations and element-wise functions: every ONNX operator that maps to a native kind
(activation.h), with its parameters and NumPy reference, described once. The same description
serves the standalone op (a native unary step) and its fusion into the preceding conv's
epilogue (``runtime/passes/activation_fusion.py``).

Adding an activation: one ``Activation`` entry here and its kind in runtime/native/activation.h
and kernels/activation_simd.h (docs/ADDING_AN_OP.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.fusion import FusedActivation
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["Activation", "ACTIVATIONS", "ACTIVATION_OP", "activation_of", "apply_activation"]

_INTERNAL = "featherdeploy"  # runtime.ops.conv_transpose.INTERNAL_DOMAIN
# Internal op (domain featherdeploy) the fusion passes write for an activation with no ONNX
# operator of its own (x * Sigmoid(x), x * HardSigmoid(x)); attribute "activation".
ACTIVATION_OP = "Activation"

# (node, context) -> the activation, or None when its parameters are not constants.
ParamsFn = Callable[[Node, OpContext], FusedActivation | None]


@dataclass(frozen=True)
class Activation:
    """An ONNX operator computed by one native activation kind."""

    op_type: str
    params: ParamsFn
    inputs: tuple[int, int] = (1, 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def apply_activation(x: np.ndarray, act: FusedActivation, channel_axis: int = 1) -> np.ndarray:
    """NumPy reference of every kind (float64 inside)."""
    y = x.astype(np.float64)
    kind = act.kind
    if kind == "clip":
        return np.clip(y, act.lo, act.hi).astype(x.dtype)
    if kind == "leaky_relu":
        out = np.where(y < 0, act.alpha * y, y)
    elif kind == "prelu":
        shape = [1] * y.ndim
        shape[channel_axis] = -1
        slopes = np.broadcast_to(np.asarray(act.slopes, np.float64),
                                 (y.shape[channel_axis],)).reshape(shape)
        out = np.where(y < 0, slopes * y, y)
    elif kind == "sigmoid":
        out = _sigmoid(y)
    elif kind == "hard_sigmoid":
        out = np.clip(act.alpha * y + act.beta, 0.0, 1.0)
    elif kind == "silu":
        out = y * _sigmoid(y)
    elif kind == "tanh":
        out = np.tanh(y)
    elif kind == "elu":
        out = np.where(y < 0, act.alpha * np.expm1(np.minimum(y, 0.0)), y)
    elif kind == "hard_swish":
        out = y * np.clip(act.alpha * y + act.beta, 0.0, 1.0)
    elif kind == "mish":
        out = y * np.tanh(np.logaddexp(0.0, y))
    elif kind in _FUNCTIONS:
        with np.errstate(all="ignore"):
            out = _FUNCTIONS[kind](y)
    elif kind == "none":
        out = y
    else:
        raise ValueError(f"unknown activation kind {kind!r}")
    return out.astype(x.dtype)


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


_FUNCTIONS = {
    "erf": _erf, "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "abs": np.abs,
    "neg": np.negative, "reciprocal": np.reciprocal, "floor": np.floor, "ceil": np.ceil,
    "softplus": lambda x: np.logaddexp(0.0, x),
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
}


def _scalar_bound(node: Node, ctx: OpContext, index: int, default: float) -> float | None:
    name = node.input(index)
    if not name:
        return default
    value = ctx.constants.get(name)
    if value is None:
        return None
    if value.size != 1:
        raise ModelLoadError(f"{node.describe()}: min and max must be scalars, got shape "
                             f"{value.shape}")
    return float(value.reshape(-1)[0])


def _clip(node: Node, ctx: OpContext) -> FusedActivation | None:
    if ctx.opset < 11:
        lo = node.attr_float("min", -math.inf)
        hi = node.attr_float("max", math.inf)
    else:
        lo, hi = _scalar_bound(node, ctx, 1, -math.inf), _scalar_bound(node, ctx, 2, math.inf)
        if lo is None or hi is None:
            return None
    return FusedActivation("clip", lo=lo, hi=hi)


def _prelu(node: Node, ctx: OpContext) -> FusedActivation | None:
    """Per-channel (or single) slopes of an NCHW-like input; other broadcasts are not a native
    activation (the node then runs as a Mul-like op on ONNX Runtime)."""
    slope = ctx.const(node, 1)
    x = ctx.shapes.get(node.input(0))
    if slope is None or x is None or len(x) < 2:
        return None
    try:
        full = np.broadcast_shapes(slope.shape, x)
    except ValueError:
        raise ModelLoadError(f"{node.describe()}: slope {slope.shape} does not broadcast to "
                             f"{x}") from None
    if full != tuple(x):
        return None
    if slope.size == 1:
        return FusedActivation("prelu", slopes=(float(slope.reshape(-1)[0]),))
    padded = (1,) * (len(x) - slope.ndim) + slope.shape
    if padded[1] != x[1] or any(d != 1 for i, d in enumerate(padded) if i != 1):
        return None
    return FusedActivation("prelu", slopes=tuple(float(v) for v in slope.reshape(-1)))


def _fixed(kind: str, **params: float) -> ParamsFn:
    return lambda node, ctx: FusedActivation(kind, **params)


def _with_alpha(kind: str, alpha: float, beta: float | None = None) -> ParamsFn:
    def params(node: Node, ctx: OpContext) -> FusedActivation:
        if beta is None:
            return FusedActivation(kind, alpha=node.attr_float("alpha", alpha))
        return FusedActivation(kind, alpha=node.attr_float("alpha", alpha),
                               beta=node.attr_float("beta", beta))
    return params


def _gelu(node: Node, ctx: OpContext) -> FusedActivation | None:
    """Gelu (opset 20): the exact form; the tanh approximation is not a native kind."""
    return FusedActivation("gelu") if node.attr_str("approximate", "none") == "none" else None


ACTIVATIONS: dict[str, Activation] = {a.op_type: a for a in (
    Activation("Relu", _fixed("clip", lo=0.0)),
    Activation("Clip", _clip, inputs=(1, 3)),
    Activation("LeakyRelu", _with_alpha("leaky_relu", 0.01)),
    Activation("PRelu", _prelu, inputs=(2, 2)),
    Activation("Sigmoid", _fixed("sigmoid")),
    Activation("HardSigmoid", _with_alpha("hard_sigmoid", 0.2, 0.5)),
    Activation("Tanh", _fixed("tanh")),
    Activation("Elu", _with_alpha("elu", 1.0)),
    Activation("HardSwish", _fixed("hard_swish", alpha=1.0 / 6.0, beta=0.5)),
    Activation("Erf", _fixed("erf")),
    Activation("Sqrt", _fixed("sqrt")),
    Activation("Exp", _fixed("exp")),
    Activation("Log", _fixed("log")),
    Activation("Abs", _fixed("abs")),
    Activation("Neg", _fixed("neg")),
    Activation("Reciprocal", _fixed("reciprocal")),
    Activation("Floor", _fixed("floor")),
    Activation("Ceil", _fixed("ceil")),
    Activation("Softplus", _fixed("softplus")),
    Activation("Mish", _fixed("mish")),
    Activation("Gelu", _gelu),
)}


def activation_of(node: Node, ctx: OpContext) -> FusedActivation | None:
    """The activation ``node`` computes, or None (not an activation, or runtime parameters)."""
    if node.op == ACTIVATION_OP and node.domain == _INTERNAL:
        return node.attrs["activation"]
    entry = ACTIVATIONS.get(node.op) if node.domain in ("", "ai.onnx") else None
    return entry.params(node, ctx) if entry is not None else None


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    return [(ctx.shape(node, 0), ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    act = activation_of(node, ctx)
    x = values[0]
    if act is not None:
        return [apply_activation(x, act)]
    if node.op == "Gelu":  # approximate="tanh"
        y = x.astype(np.float64)
        inner = math.sqrt(2.0 / math.pi) * (y + 0.044715 * y**3)
        return [(0.5 * y * (1.0 + np.tanh(inner))).astype(x.dtype)]
    slope = values[1]  # PRelu with a slope NumPy broadcasts another way
    return [np.where(x < 0, slope * x, x).astype(x.dtype)]


def _native(node: Node, ctx: OpContext) -> str | None:
    act = activation_of(node, ctx)
    if act is None:
        return "its parameters are not constants of a native form"
    if act.kind == "clip" and not act.lo <= act.hi:
        return "Clip bounds are NaN or min > max"
    return None


def _emit(b: Builder, node: Node) -> None:
    from featherdeploy.runtime.ops.normalization import emit_unary

    shape = b.shapes[node.outputs[0]]
    channels = shape[1] if len(shape) > 1 else 1
    act = activation_of(node, _context(b))
    assert act is not None  # checked by _native
    emit_unary(b, node, act.to_native(channels))


def _context(b: Builder) -> OpContext:
    return OpContext(b.graph.opset, b.shapes, {}, b.graph.constants)


for _entry in ACTIVATIONS.values():
    register(OpDef(_entry.op_type, _infer, _evaluate, _emit, _native, inputs=_entry.inputs))
register(OpDef(ACTIVATION_OP, _infer, _evaluate, _emit, _native, domain=_INTERNAL))
