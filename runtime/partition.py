"""Partition a specialized graph into native segments and ONNX Runtime segments.

A node runs natively when its operator has a native implementation (``runtime/ops/``), the
op's check accepts its attributes and shapes, its shapes are known and its activations are
float32; every other node runs on ONNX Runtime, in-process. Segments are maximal runs of nodes
of one kind in a topological order that keeps each kind together as long as it can, so a model
with a few unsupported nodes becomes few segments. In strict mode (``fallback=False``) any node
that would run on ONNX Runtime is an error listing every such op and node.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from featherdeploy.runtime.errors import DataDependentShapeError, UnsupportedOpError
from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.registry import OpContext, get_op
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes import reads, run_passes
from featherdeploy.runtime.specialize import Specialized

__all__ = ["NATIVE", "ORT", "Segment", "Partition", "node_key", "native_reasons", "partition"]

NATIVE, ORT = "native", "onnxruntime"
FLOAT32 = np.dtype(np.float32)


@dataclass
class Segment:
    """Consecutive nodes of one kind; ``inputs`` come from the graph or earlier segments,
    ``outputs`` are what later segments or the caller need."""

    kind: str
    nodes: list[Node]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


@dataclass
class Partition:
    """The graph after fusion passes (its nodes in segment order), its segments, and why each
    node left to ONNX Runtime is not native (keyed by the node's first output, which is unique;
    node names need not be)."""

    graph: Graph
    shapes: dict[str, tuple[int, ...] | None]
    dtypes: dict[str, np.dtype | None]
    segments: list[Segment]
    reasons: dict[str, str]

    @property
    def all_native(self) -> bool:
        return len(self.segments) == 1 and self.segments[0].kind == NATIVE


def node_key(node: Node) -> str:
    """A node's identity across rewrites: its first output (fused nodes keep the output of the
    pattern's last node)."""
    return node.outputs[0]


def native_reasons(spec: Specialized) -> dict[str, str]:
    """Node key -> why it cannot run natively (nodes absent from the dict can)."""
    ctx = spec.context()
    reasons = {}
    for node in spec.graph.nodes:
        reason = _reason(node, spec, ctx)
        if reason is not None:
            reasons[node_key(node)] = reason
    return reasons


def _reason(node: Node, spec: Specialized, ctx: OpContext) -> str | None:
    op = get_op(node)
    if op is None:
        return "operator unknown to the engine"
    if op.emit is None:
        return "no native kernel"
    names = [n for n in node.inputs if n] + [n for n in node.outputs if n]
    if any(spec.shapes.get(n) is None for n in names):
        return "shapes known only at run time"
    activations = [n for n in names if n not in spec.graph.constants]
    if any(spec.dtypes.get(n) != FLOAT32 for n in activations):
        return "not float32"
    if any(0 in spec.shapes[n] for n in activations):  # type: ignore[operator]
        return "empty tensor"
    if op.native is None:
        return None
    try:
        return op.native(node, ctx)
    except DataDependentShapeError:
        return "an attribute input is computed at run time"


def partition(spec: Specialized, strict: bool = False,
              opts: PlannerOptions | None = None) -> Partition:
    """Segments of ``spec`` (see the module docstring); fusion passes run on native nodes."""
    reasons = native_reasons(spec)
    if strict and reasons:
        raise UnsupportedOpError(_strict_message(spec.graph, reasons))
    original = {node_key(n) for n in spec.graph.nodes}
    native_keys = original - set(reasons)

    def is_native(node: Node) -> bool:  # nodes the passes made replace native ones
        key = node_key(node)
        return key in native_keys or key not in original

    known = {k: v for k, v in spec.shapes.items() if v is not None}
    graph = run_passes(spec.graph, known, is_native, opts)
    shapes, dtypes = dict(spec.shapes), dict(spec.dtypes)
    for name, shape in known.items():  # tensors the passes made (all float32)
        if name not in shapes:
            shapes[name], dtypes[name] = shape, np.dtype(np.float32)
    for name, value in graph.constants.items():  # the passes' new weights and biases
        if name not in shapes:
            shapes[name], dtypes[name] = tuple(value.shape), value.dtype
    kinds = {id(n): NATIVE if is_native(n) else ORT for n in graph.nodes}
    order = _grouped_order(graph.nodes, lambda n: kinds[id(n)])
    segments = _segments(order, kinds, graph)
    graph = replace(graph, nodes=order)
    return Partition(graph, shapes, dtypes, segments, reasons)


def _strict_message(graph: Graph, reasons: dict[str, str]) -> str:
    by_op: dict[str, list[str]] = defaultdict(list)
    for node in graph.nodes:
        if node_key(node) in reasons:
            by_op[node.op].append(f'"{node.name}" ({reasons[node_key(node)]})')
    lines = [f"  {op}: {', '.join(names)}" for op, names in sorted(by_op.items())]
    return (f"{len(reasons)} node(s) cannot run natively (strict mode, fallback=False):\n"
            + "\n".join(lines))


def _grouped_order(nodes: list[Node], kind: Callable[[Node], str]) -> list[Node]:
    """A topological order that continues with nodes of the current kind while any is ready
    (lowest original index first), so each kind stays in as few runs as possible."""
    index = {id(n): i for i, n in enumerate(nodes)}
    producer = {o: n for n in nodes for o in n.outputs if o}
    waiting: dict[int, int] = {}
    users: dict[int, list[Node]] = defaultdict(list)
    for node in nodes:
        deps = {id(producer[i]) for i in reads(node) if i in producer}
        deps |= {id(producer[i]) for i in _implicit_inputs(node) if i in producer}
        deps.discard(id(node))
        waiting[id(node)] = len(deps)
        for dep in deps:
            users[dep].append(node)
    ready: dict[str, list[int]] = defaultdict(list)
    for node in nodes:
        if waiting[id(node)] == 0:
            heapq.heappush(ready[kind(node)], index[id(node)])
    order: list[Node] = []
    current = kind(nodes[0]) if nodes else NATIVE
    while any(ready.values()):
        if not ready[current]:
            current = min((k for k in ready if ready[k]), key=lambda k: ready[k][0])
        node = nodes[heapq.heappop(ready[current])]
        order.append(node)
        for user in users[id(node)]:
            waiting[id(user)] -= 1
            if waiting[id(user)] == 0:
                heapq.heappush(ready[kind(user)], index[id(user)])
    return order


def _segments(order: list[Node], kinds: dict[int, str], graph: Graph) -> list[Segment]:
    segments: list[Segment] = []
    for node in order:
        kind = kinds[id(node)]
        if not segments or segments[-1].kind != kind:
            segments.append(Segment(kind, []))
        segments[-1].nodes.append(node)
    produced_by = {o: s for s, seg in enumerate(segments) for n in seg.nodes for o in n.outputs}
    needed_later: dict[str, int] = {}
    for s, seg in enumerate(segments):
        reads_here = [i for n in seg.nodes for i in (*reads(n), *_implicit_inputs(n))]
        seg.inputs = list(dict.fromkeys(
            i for i in reads_here if i not in graph.constants and produced_by.get(i) != s))
        for name in seg.inputs:
            needed_later[name] = max(needed_later.get(name, -1), s)
    for name in graph.output_names:
        needed_later[name] = len(segments)
    for s, seg in enumerate(segments):
        seg.outputs = list(dict.fromkeys(
            o for n in seg.nodes for o in n.outputs if o and needed_later.get(o, -1) > s))
    return segments


def _implicit_inputs(node: Node) -> list[str]:
    """Names a control-flow node's subgraphs read from the enclosing graph."""
    if node.proto is None:
        return []
    from onnx import AttributeProto

    names: list[str] = []
    for attr in node.proto.attribute:
        graphs = [attr.g] if attr.type == AttributeProto.GRAPH else (
            list(attr.graphs) if attr.type == AttributeProto.GRAPHS else [])
        for g in graphs:
            names += _outer_names(g)
    return names


def _outer_names(graph: object) -> list[str]:
    from onnx import AttributeProto

    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}  # type: ignore[attr-defined]
    defined |= {s.values.name for s in graph.sparse_initializer}  # type: ignore[attr-defined]
    used: list[str] = []
    for node in graph.node:  # type: ignore[attr-defined]
        used += [i for i in node.input if i and i not in defined]
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs)
            used += [i for g in subs for i in _outer_names(g) if i not in defined]
        defined |= set(node.output)
    return used
