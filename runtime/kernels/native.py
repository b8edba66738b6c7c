"""The native kernels behind the engine, one at a time (signatures of ``kernels.reference``).

Each function builds a one-node graph and plans it with the engine's own planner
(``runtime.specialize``, ``runtime.passes``, ``runtime.planner.build_plan``), so what is tested
here is exactly what a model runs: the padded layouts, the weight packing, the fused epilogue and
the native step. The first operand is the plan's input; other operands enter as constants.
Options (kernel variant, generated code, planner tunables) come from :func:`use_options`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.fusion import ACT_KEY, KERNEL_KEY, RESIDUAL_KEY, FusedActivation
from featherdeploy.runtime.options import EngineOptions
from featherdeploy.runtime.passes import run_passes
from featherdeploy.runtime.planner import CompiledPlan, build_plan
from featherdeploy.runtime.specialize import specialize

__all__ = ["use_options", "batch_interleaved", "inner_output", "conv2d", "conv2d_plan",
           "plan_graph", "run_plan", "pool2d", "global_pool", "affine", "add", "softmax", "gemm",
           "concat", "to_segments", "from_segments"]

Pads = tuple[int, int, int, int]
Clamp = tuple[float, float] | None


_INTERLEAVE: ContextVar[bool] = ContextVar("fd_interleave", default=False)
_INNER: ContextVar[bool] = ContextVar("fd_inner", default=False)
_OPTIONS: ContextVar[EngineOptions | None] = ContextVar("fd_options", default=None)


@contextmanager
def use_options(options: EngineOptions) -> Iterator[None]:
    """Within this block every kernel is planned with ``options`` (kernel variant, generated
    code, planner tunables; threads when the call does not give them)."""
    token = _OPTIONS.set(options)
    try:
        yield
    finally:
        _OPTIONS.reset(token)


def _options() -> EngineOptions:
    return _OPTIONS.get() or EngineOptions()


@contextmanager
def batch_interleaved() -> Iterator[None]:
    """Within this block every kernel runs on the batch-interleaved layout
    (``build_plan(interleave=True)``): the images of a batch are adjacent floats."""
    token = _INTERLEAVE.set(True)
    try:
        yield
    finally:
        _INTERLEAVE.reset(token)


@contextmanager
def inner_output() -> Iterator[None]:
    """Within this block the kernel's output is an inner tensor of its plan (an Identity
    copies it out), as in a model: a batch-1 conv there may run on column segments
    (runtime/planner/layout.py segment_tensor), where a plan's last conv writes the caller's
    array directly."""
    token = _INNER.set(True)
    try:
        yield
    finally:
        _INNER.reset(token)


def plan_graph(graph: Graph, shape: tuple[int, ...], threads: int | None = None,
               interleave: bool | None = None) -> CompiledPlan:
    """A native plan of a single-input graph whose nodes all run natively (specialized to
    ``shape``, passes applied)."""
    options = _options()
    spec = specialize(graph, {graph.input_name: tuple(shape)})
    shapes = {k: v for k, v in spec.shapes.items() if v is not None}
    fused = run_passes(spec.graph, shapes, lambda node: True, options.planner)
    shapes.update({k: tuple(v.shape) for k, v in fused.constants.items() if k not in shapes})
    return build_plan(fused, shapes, threads or options.resolved_threads, options,
                      interleave=_INTERLEAVE.get() if interleave is None else interleave)


def _plan(node: Node, shape: tuple[int, ...], constants: dict[str, np.ndarray],
          opset: int = 13, threads: int | None = None) -> CompiledPlan:
    nodes = [node]
    node.outputs = ["y"]
    if _INNER.get():
        node.outputs = ["inner"]
        nodes.append(Node("Identity", "out", ["inner"], ["y"]))
    graph = Graph.simple(nodes, {k: np.asarray(v) for k, v in constants.items()}, "x", shape, "y",
                         opset)
    return plan_graph(graph, shape, threads)


def run_plan(plan: CompiledPlan, x: np.ndarray) -> np.ndarray:
    """Runs a plan of this module on ``x`` (the shape it was planned for)."""
    return plan.run([np.ascontiguousarray(x, dtype=np.float32)])[0]


def _run(node: Node, x: np.ndarray, constants: dict[str, np.ndarray],
         opset: int = 13) -> np.ndarray:
    return run_plan(_plan(node, tuple(x.shape), constants, opset), x)


def _with_clamp(attrs: dict[str, Any], clamp: Clamp) -> dict[str, Any]:
    if clamp is not None:
        attrs[ACT_KEY] = FusedActivation("clip", lo=float(clamp[0]), hi=float(clamp[1]))
    return attrs


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
           stride: tuple[int, int] = (1, 1), pads: Pads = (0, 0, 0, 0),
           dilation: tuple[int, int] = (1, 1), group: int = 1,
           residual: np.ndarray | None = None, clamp: Clamp = None,
           kernel: str = "auto") -> np.ndarray:
    """Direct conv (CSR or BSR by cost, or forced by ``kernel``) with the fused epilogue."""
    return run_plan(conv2d_plan(x.shape, weight, bias, stride=stride, pads=pads,
                                dilation=dilation, group=group, residual=residual, clamp=clamp,
                                kernel=kernel), x)


def conv2d_plan(shape: tuple[int, ...], weight: np.ndarray, bias: np.ndarray | None = None, *,
                stride: tuple[int, int] = (1, 1), pads: Pads = (0, 0, 0, 0),
                dilation: tuple[int, int] = (1, 1), group: int = 1,
                residual: np.ndarray | None = None, clamp: Clamp = None, kernel: str = "auto",
                threads: int | None = None) -> CompiledPlan:
    """The plan ``conv2d`` runs, for an input of ``shape`` (its steps can be inspected, and
    ``run_plan`` runs it); ``threads`` defaults to the engine's."""
    attrs: dict[str, Any] = {"strides": list(stride), "pads": list(pads),
                             "dilations": list(dilation), "group": group}
    constants = {"w": np.asarray(weight, np.float32)}
    inputs = ["x", "w"]
    if bias is not None:
        constants["b"] = np.asarray(bias, np.float32)
        inputs.append("b")
    if residual is not None:
        constants["r"] = np.asarray(residual, np.float32)
        attrs[RESIDUAL_KEY] = "r"
    if kernel != "auto":
        attrs[KERNEL_KEY] = kernel
    node = Node("Conv", "conv", inputs, [], _with_clamp(attrs, clamp))
    return _plan(node, tuple(shape), constants, threads=threads)


def pool2d(x: np.ndarray, *, kind: str, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
           pads: Pads = (0, 0, 0, 0), dilation: tuple[int, int] = (1, 1), ceil_mode: bool = False,
           count_include_pad: bool = False) -> np.ndarray:
    """MaxPool / AveragePool step."""
    attrs = {"kernel_shape": list(kernel), "strides": list(stride), "pads": list(pads),
             "dilations": list(dilation), "ceil_mode": int(ceil_mode),
             "count_include_pad": int(count_include_pad)}
    op = "MaxPool" if kind == "max" else "AveragePool"
    return _run(Node(op, "pool", ["x"], [], attrs), x, {})


def global_pool(x: np.ndarray, *, kind: str) -> np.ndarray:
    """GlobalAveragePool / GlobalMaxPool step."""
    op = "GlobalMaxPool" if kind == "max" else "GlobalAveragePool"
    return _run(Node(op, "gpool", ["x"], []), x, {})


def affine(x: np.ndarray, scale: np.ndarray | None, shift: np.ndarray | None,
           clamp: Clamp = None) -> np.ndarray:
    """Per-channel affine + clamp step (a BatchNormalization with mean 0, var 1 - eps)."""
    channels = x.shape[1]
    eps = 1e-5
    constants = {
        "g": np.ones(channels, np.float32) if scale is None else np.asarray(scale, np.float32),
        "b": np.zeros(channels, np.float32) if shift is None else np.asarray(shift, np.float32),
        "m": np.zeros(channels, np.float32),
        "v": np.full(channels, 1.0 - eps, np.float32),
    }
    if clamp is None:
        node = Node("BatchNormalization", "bn", ["x", "g", "b", "m", "v"], [], {"epsilon": eps})
        return _run(node, x, constants)
    if scale is not None or shift is not None:
        raise ValueError("native affine: clamp with scale/shift is planned as two steps")
    constants = {"lo": np.float32(clamp[0]), "hi": np.float32(clamp[1])}
    return _run(Node("Clip", "clip", ["x", "lo", "hi"], []), x, constants)


def add(a: np.ndarray, b: np.ndarray, clamp: Clamp = None) -> np.ndarray:
    """Broadcasting add step (``b`` enters as a constant)."""
    if clamp is not None:
        raise ValueError("native add: a clamp after a standalone add is a separate step")
    return _run(Node("Add", "add", ["x", "b"], []), a, {"b": np.asarray(b, np.float32)})


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax step along ``axis``."""
    return _run(Node("Softmax", "softmax", ["x"], [], {"axis": axis}), x, {})


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
         beta: float = 1.0, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """Gemm step (``b`` and ``c`` enter as constants)."""
    attrs = {"alpha": alpha, "beta": beta, "transA": int(trans_a), "transB": int(trans_b)}
    constants = {"b": np.asarray(b, np.float32)}
    inputs = ["x", "b"]
    if c is not None:
        constants["c"] = np.asarray(c, np.float32)
        inputs.append("c")
    return _run(Node("Gemm", "gemm", inputs, [], attrs), a, constants)


def concat(xs: list[np.ndarray], axis: int) -> np.ndarray:
    """Concat step (copies into the output's sub-views); the first operand is the plan input."""
    constants = {f"c{i}": np.asarray(v, np.float32) for i, v in enumerate(xs[1:])}
    inputs = ["x", *constants]
    assert math.prod(xs[0].shape) > 0
    return _run(Node("Concat", "concat", inputs, [], {"axis": axis}), xs[0], constants)


def _segment_lanes(lanes: int) -> str:
    from featherdeploy.runtime import _native

    isa = _options().isa
    if lanes != _native.vector_floats(isa):
        raise ValueError(f"the native build has {_native.vector_floats(isa)} lanes, not {lanes}")
    return isa


def to_segments(rows: np.ndarray, lanes: int) -> np.ndarray:
    """Image rows -> column-segment rows with halos (segments.cpp; lanes = the build's)."""
    from featherdeploy.runtime import _native

    isa = _segment_lanes(lanes)
    return _native.segment_rows(np.ascontiguousarray(rows, np.float32), True, isa)


def interleave_images(rows: np.ndarray) -> np.ndarray:
    """(images, W) planar rows -> (W, images) positions (segments.cpp, the options' ISA)."""
    from featherdeploy.runtime import _native

    return _native.interleave_images(np.ascontiguousarray(rows, np.float32), _options().isa)


def from_segments(segments: np.ndarray) -> np.ndarray:
    """Column-segment rows -> image rows (segments.cpp)."""
    from featherdeploy.runtime import _native

    isa = _segment_lanes(segments.shape[-1])
    return _native.segment_rows(np.ascontiguousarray(segments, np.float32), False, isa)
