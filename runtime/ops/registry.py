"""The op registry: one :class:`OpDef` per ONNX operator the engine knows, registered by the op
family modules of this package (``runtime/ops/*.py``).

An op family module describes each of its operators once: how to infer its outputs' shapes and
dtypes, its NumPy reference (ONNX semantics; also used to fold constant subgraphs), whether and
how it runs natively (an emitter into the planner, and a check of the cases the native kernels
cover), and its MACs. Everything else derives from the registry: the natively supported set
(:func:`native_ops`), shape inference and constant folding (``runtime.specialize``), the
partition into native and ONNX Runtime segments (``runtime.partition``) and the planner's
dispatch. docs/ADDING_AN_OP.md says which files a new operator touches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featherdeploy.runtime.errors import DataDependentShapeError, ModelLoadError
from featherdeploy.runtime.graph import ONNX_DOMAINS, Node

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["OpContext", "OpDef", "Output", "register", "get_op", "native_ops", "known_ops",
           "OP_MODULES"]

# The op family modules; each registers its operators when imported.
OP_MODULES = ("conv", "conv_transpose", "pool", "activation", "eltwise", "gemm",
              "normalization", "softmax", "shape_ops", "reduce", "resize", "transpose")

Output = tuple[tuple[int, ...], np.dtype]  # (shape, dtype) of one node output


@dataclass
class OpContext:
    """What an op's functions see of the graph around a node: the opset, every tensor's shape
    and dtype known so far, and the constants (initializers and folded values)."""

    opset: int
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    constants: dict[str, np.ndarray]

    def shape(self, node: Node, index: int) -> tuple[int, ...]:
        """Shape of input ``index`` of ``node`` (a missing optional input is a model error)."""
        name = node.input(index)
        if not name:
            raise ModelLoadError(f"{node.describe()}: input {index} is required")
        if name not in self.shapes:
            raise ModelLoadError(f"{node.describe()}: the shape of {name!r} is unknown")
        return self.shapes[name]

    def dtype(self, node: Node, index: int) -> np.dtype:
        return self.dtypes[node.input(index)]

    def const(self, node: Node, index: int) -> np.ndarray | None:
        """Input ``index`` as a constant array, None when omitted or computed at run time."""
        name = node.input(index)
        return self.constants.get(name) if name else None

    def required_const(self, node: Node, index: int, what: str) -> np.ndarray:
        value = self.const(node, index)
        if value is None:
            raise DataDependentShapeError(f"{node.describe()}: {what} must be a constant")
        return value


InferFn = Callable[[Node, OpContext], list[Output]]
EvaluateFn = Callable[[Node, list[np.ndarray], OpContext], list[np.ndarray]]
NativeCheckFn = Callable[[Node, OpContext], str | None]
EmitFn = Callable[["Builder", Node], None]
MacsFn = Callable[[Node, OpContext], tuple[int, int]]
ReadsPositionMajorFn = Callable[["Builder", Node, str], bool]


@dataclass(frozen=True)
class OpDef:
    """One operator.

    - ``infer``: output (shape, dtype) list; raises ModelLoadError / InputError on bad models
      or inputs.
    - ``evaluate``: NumPy reference with ONNX semantics (None: the op cannot be folded; no
      results: this node is not folded).
    - ``emit``: adds native steps for the node to the planner (None: never native).
    - ``native``: None when this node, with these shapes, runs natively; else the reason not.
    - ``macs``: (dense, sparse) multiply-adds of the node, for coverage reports.
    - ``inputs`` / ``outputs``: allowed counts (min, max) checked before anything else.
    - ``shape_only``: the outputs depend only on input shapes (Shape, Size): folded as soon as
      shapes are known.
    - ``reads_position_major``: whether the emitter reads input ``name`` of this node in place
      when it is stored position-major (runtime/planner/layout.py; None: never, the planner
      then stores that input channel-major).
    """

    op_type: str
    infer: InferFn
    evaluate: EvaluateFn | None = None
    emit: EmitFn | None = None
    native: NativeCheckFn | None = None
    macs: MacsFn | None = None
    inputs: tuple[int, int] = (1, 1)
    outputs: tuple[int, int] = (1, 1)
    domain: str = ""
    shape_only: bool = False
    reads_position_major: ReadsPositionMajorFn | None = None
    attrs: dict[str, Any] = field(default_factory=dict)  # family-specific data (activations)

    def check_arity(self, node: Node) -> None:
        """Input and output counts within the operator's limits (trailing "" are omitted)."""
        inputs = len(node.inputs)
        while inputs and not node.inputs[inputs - 1]:
            inputs -= 1
        low, high = self.inputs
        if not low <= inputs <= high:
            raise ModelLoadError(f"{node.describe()}: takes {low}..{high} inputs, got {inputs}")
        low, high = self.outputs
        if not low <= len(node.outputs) <= high:
            raise ModelLoadError(f"{node.describe()}: has {low}..{high} outputs, "
                                 f"got {len(node.outputs)}")


_REGISTRY: dict[tuple[str, str], OpDef] = {}
_LOADED = False


def register(*defs: OpDef) -> None:
    """Adds operators (each op type once per domain)."""
    for op in defs:
        key = (op.domain, op.op_type)
        if key in _REGISTRY:
            raise ValueError(f"operator {op.op_type} registered twice")
        _REGISTRY[key] = op


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in OP_MODULES:
            importlib.import_module(f"featherdeploy.runtime.ops.{module}")


def get_op(node: Node) -> OpDef | None:
    """The registered operator of ``node`` (None: unknown to the engine)."""
    _load()
    domain = "" if node.domain in ONNX_DOMAINS else node.domain
    return _REGISTRY.get((domain, node.op))


def known_ops() -> Sequence[OpDef]:
    _load()
    return list(_REGISTRY.values())


def native_ops() -> frozenset[str]:
    """Op types with a native implementation (for some shapes and attributes)."""
    return frozenset(op.op_type for op in known_ops() if op.emit is not None)
