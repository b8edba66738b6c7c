"""Element-wise binary operators with NumPy broadcasting: Add, Sub, Mul, Div, Pow, and the
variadic Max, Min, Sum, Mean (natively with two inputs). Natively on float32 tensors of rank
<= 4 (or equal shapes); integer arithmetic (shape plumbing) is folded at plan time or left to
ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.fusion import CLAMP_NONE
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, register
from featherdeploy.runtime.planner.layout import SymView, as4, native

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["BINARY", "broadcast_view", "operand_view"]


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division truncating toward zero (C semantics, as ONNX Runtime)."""
    quotient = np.abs(a) // np.where(b == 0, 1, np.abs(b))
    return (np.sign(a) * np.sign(b) * quotient).astype(np.result_type(a, b))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return _int_div(a, b)
    return a / b


def _max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum(a, b)  # NaN in either gives NaN


def _min(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.minimum(a, b)


# op -> (native op name, NumPy function)
BINARY: dict[str, tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]] = {
    "Add": ("add", np.add), "Sub": ("sub", np.subtract), "Mul": ("mul", np.multiply),
    "Div": ("div", _div), "Pow": ("pow", np.power), "Max": ("max", _max), "Min": ("min", _min),
    "Sum": ("add", np.add),
}


def _broadcast_shape(node: Node, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ModelLoadError(f"{node.describe()}: shapes {shapes} do not broadcast") from None


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    names = [n for n in node.inputs if n]
    shapes = [ctx.shapes[n] if n in ctx.shapes else ctx.shape(node, i)
              for i, n in enumerate(names)]
    dtypes = {ctx.dtypes[n] for n in names}
    if node.op != "Pow" and len(dtypes) != 1:
        kinds = sorted(map(str, dtypes))
        raise ModelLoadError(f"{node.describe()}: inputs of different types {kinds}")
    return [(_broadcast_shape(node, shapes), ctx.dtypes[names[0]])]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    if node.op == "Mean":
        total = values[0].astype(np.float64)
        for v in values[1:]:
            total = total + v
        return [(total / len(values)).astype(values[0].dtype)]
    fn = BINARY[node.op][1]
    result = values[0]
    with np.errstate(all="ignore"):
        for v in values[1:]:
            result = fn(result, v)
    return [np.asarray(result).astype(values[0].dtype)]


def _native(node: Node, ctx: OpContext) -> str | None:
    names = [n for n in node.inputs if n]
    if len(names) != 2 or node.op == "Mean":
        return "only two-input forms run natively"
    out = ctx.shapes[node.outputs[0]]
    if len(out) > 4 and any(ctx.shapes[n] != out for n in names):
        return "broadcasting beyond rank 4"
    return None


def broadcast_view(view: SymView, out4: tuple[int, ...]) -> SymView:
    """View of an operand broadcast (NumPy rules) to the 4-D output dims: stride 0 where 1."""
    strides = tuple(0 if d == 1 and o != 1 else s
                    for d, o, s in zip(view.dims, out4, view.strides, strict=True))
    return SymView(view.buf, view.space, view.origin, tuple(out4), strides,  # type: ignore[arg-type]
                   view.slot)


def operand_view(b: Builder, name: str) -> SymView:
    """A 4-D view of an operand: constants straight from the plan's constant table."""
    if name in b.graph.constants and name not in b.tensors:
        value = np.asarray(b.graph.constants[name], np.float32)
        return b.const_view(value, as4(value.shape))
    return b.view(name)


def _emit(b: Builder, node: Node) -> None:
    out_shape = b.shapes[node.outputs[0]]
    a, c = (operand_view(b, name) for name in node.inputs[:2])
    y = b.new_tensor(node.outputs[0], out_shape)
    out4 = as4(out_shape)
    spec = native().BinarySpec()
    spec.op = int(native().BINARY_OPS[BINARY[node.op][0]])
    spec.act = CLAMP_NONE.to_native(out4[1])
    b.emit(spec, a=broadcast_view(a, out4), b=broadcast_view(c, out4), dst=y.view()
           if y.spatial or len(out_shape) <= 4 else y.compact_view(out4))


register(*(OpDef(op, _infer, _evaluate, _emit, _native, inputs=(2, 2))
           for op in ("Add", "Sub", "Mul", "Div", "Pow")),
         *(OpDef(op, _infer, _evaluate, _emit, _native, inputs=(1, 2 ** 16))
           for op in ("Max", "Min", "Sum", "Mean")))
