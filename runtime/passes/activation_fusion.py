"""Activations fuse into the conv before them, and x * gate(x) becomes one activation.

- Conv (possibly with a fused residual) -> activation: the conv's epilogue activation. Any
  operator ``runtime/ops/activation.py`` maps to a native kind fuses.
- BatchNormalization that stayed a standalone affine step (its input is not a conv's private
  output: DenseNet's pre-activation after each Concat) -> activation: one unary step, one
  pass over the tensor instead of two (DenseNet-121 batch 1 spends a fifth of its time there).
- Self-gating: Mul(x, Sigmoid(x)) is SiLU, Mul(x, HardSigmoid(x)) is HardSwish (exporters
  write HardSwish this way below opset 14) and Mul(x, Tanh(Softplus(x))) is Mish (below opset
  18: YOLOv4-style backbones). When x is a conv's output the kind fuses into the
  conv; otherwise the pair becomes one internal Activation node (one pass over the tensor
  instead of two, and no intermediate tensor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.activation import ACTIVATION_OP, activation_of
from featherdeploy.runtime.ops.conv_transpose import INTERNAL_DOMAIN
from featherdeploy.runtime.ops.fusion import ACT_KEY, FusedActivation
from featherdeploy.runtime.ops.registry import OpContext
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers, producers

__all__ = ["fuse_activation"]

Native = Callable[[Node], bool]


def fuse_activation(graph: Graph, shapes: dict, native: Native,
                    opts: PlannerOptions) -> Graph:
    reads = consumers(graph.nodes)
    producer = producers(graph.nodes)
    ctx = OpContext(graph.opset, shapes, {}, graph.constants)
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    merged = dict(graph.merged)
    for node in graph.nodes:
        if not native(node) or id(node) in removed:
            continue
        gated = _self_gated(node, ctx, reads, producer, native, graph)
        if gated is not None:
            source, gates, act = gated
            if (_takes_activation(source, reads, native, graph, limit=2)
                    and id(source) not in removed):
                replaced[id(node)] = _with_activation(source, act, node)
                removed.add(id(source))
                merged[source.outputs[0]] = node.outputs[0]
            else:
                replaced[id(node)] = Node(ACTIVATION_OP, node.name, [gates[0].inputs[0]],
                                          list(node.outputs), {"activation": act},
                                          domain=INTERNAL_DOMAIN)
            for gate in gates:
                removed.add(id(gate))
                merged[gate.outputs[0]] = node.outputs[0]
            continue
        act = activation_of(node, ctx)
        source = producer.get(node.input(0))
        if (act is not None and _takes_activation(source, reads, native, graph, limit=1)
                and id(source) not in removed):
            replaced[id(node)] = _with_activation(source, act, node)
            removed.add(id(source))
            merged[source.outputs[0]] = node.outputs[0]
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes, merged=merged)


def _with_activation(source: Node, act: FusedActivation, last: Node) -> Node:
    attrs = dict(source.attrs)
    attrs[ACT_KEY] = act
    return replace(source, outputs=list(last.outputs), attrs=attrs, proto=None)


# Operators whose native step applies a fused activation (ops/conv.py, ops/normalization.py).
TAKES_ACTIVATION = ("Conv", "BatchNormalization")


def _takes_activation(source: Node | None, reads: dict, native: Native, graph: Graph,
                      limit: int) -> bool:
    """A native conv or standalone BatchNormalization (native only with its one inference
    output) without a fused activation whose output is read ``limit`` times and is not a
    graph output."""
    return (source is not None and source.op in TAKES_ACTIVATION and native(source)
            and ACT_KEY not in source.attrs and reads[source.outputs[0]] == limit
            and source.outputs[0] not in graph.output_names)


# gate op -> the fused kind of x * gate(x)
_GATED = {"Sigmoid": "silu", "HardSigmoid": "hard_swish", "Tanh": "mish"}


def _self_gated(node: Node, ctx: OpContext, reads: dict, producer: dict, native: Native,
                graph: Graph) -> tuple[Node | None, list[Node], FusedActivation] | None:
    """(x's producer, the gate nodes from x on, the fused activation) when ``node`` is
    Mul(x, G(x)) in either order, G a Sigmoid, a HardSigmoid or Tanh(Softplus(.)) whose nodes
    are read only by the next one."""
    if node.op != "Mul" or len(node.inputs) != 2 or node.inputs[0] == node.inputs[1]:
        return None
    for k in (0, 1):
        x, gated = node.inputs[k], node.inputs[1 - k]
        gate = producer.get(gated)
        if gate is None or gate.op not in _GATED or not _private(gate, reads, native, graph):
            continue
        gates = [gate]
        if gate.op == "Tanh":
            inner = producer.get(gate.input(0))
            if (inner is None or inner.op != "Softplus"
                    or not _private(inner, reads, native, graph)):
                continue
            gates.insert(0, inner)
        if gates[0].inputs[0] != x:
            continue
        act = activation_of(gate, ctx)
        if act is None:
            continue
        return producer.get(x), gates, FusedActivation(_GATED[gate.op], alpha=act.alpha,
                                                       beta=act.beta)
    return None


def _private(node: Node, reads: dict, native: Native, graph: Graph) -> bool:
    """A native node whose one output is read once and is not a graph output."""
    out = node.outputs[0]
    return native(node) and reads[out] == 1 and out not in graph.output_names
