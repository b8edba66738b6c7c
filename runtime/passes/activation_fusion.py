"""Conv (possibly with a fused residual) -> activation becomes the conv's epilogue activation.

Any operator ``runtime/ops/activation.py`` maps to a native kind fuses (Relu, Clip, LeakyRelu,
PRelu, Sigmoid, HardSigmoid, Tanh, Elu), and the SiLU pattern x * Sigmoid(x) fuses
as one kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from runtime.graph import Graph, Node
from runtime.ops.activation import activation_of
from runtime.ops.fusion import ACT_KEY, FusedActivation
from runtime.ops.registry import OpContext
from runtime.passes.common import consumers, producers

__all__ = ["fuse_activation"]


def fuse_activation(graph: Graph, shapes: dict, native: Callable[[Node], bool]) -> Graph:
    reads = consumers(graph.nodes)
    producer = producers(graph.nodes)
    ctx = OpContext(graph.opset, shapes, {}, graph.constants)
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        fused = _fusable(node, ctx, reads, producer, native, graph)
        if fused is None:
            continue
        conv, act, dropped = fused
        attrs = dict(conv.attrs)
        attrs[ACT_KEY] = act
        replaced[id(node)] = replace(conv, outputs=list(node.outputs), attrs=attrs, proto=None)
        removed.update(id(n) for n in (conv, *dropped))
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes)


def _fusable(node: Node, ctx: OpContext, reads: dict, producer: dict,
             native: Callable[[Node], bool], graph: Graph
             ) -> tuple[Node, FusedActivation, list[Node]] | None:
    """(conv, activation, other nodes replaced) when ``node`` ends a fusable pattern."""
    if not native(node):
        return None
    silu = _silu(node, reads, producer, native, graph)
    if silu is not None:
        conv, sigmoid = silu
        return conv, FusedActivation("silu"), [sigmoid]
    act = activation_of(node, ctx)
    conv = producer.get(node.input(0))
    if act is None or not _plain_conv(conv, reads, native, graph, limit=1):
        return None
    return conv, act, []


def _plain_conv(conv: Node | None, reads: dict, native: Callable[[Node], bool], graph: Graph,
                limit: int) -> bool:
    """A native conv without a fused activation whose output is read ``limit`` times and is
    not a graph output."""
    return (conv is not None and conv.op == "Conv" and native(conv) and ACT_KEY not in conv.attrs
            and reads[conv.outputs[0]] == limit and conv.outputs[0] not in graph.output_names)


def _silu(node: Node, reads: dict, producer: dict, native: Callable[[Node], bool],
          graph: Graph) -> tuple[Node, Node] | None:
    """(conv, sigmoid) when ``node`` is Mul(conv, Sigmoid(conv)) in either order."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    for k in (0, 1):
        conv, sigmoid = producer.get(node.inputs[k]), producer.get(node.inputs[1 - k])
        if (sigmoid is not None and sigmoid.op == "Sigmoid" and native(sigmoid)
                and sigmoid.inputs[0] == node.inputs[k] and reads[sigmoid.outputs[0]] == 1
                and conv is not None and conv.op == "Conv" and native(conv)
                and ACT_KEY not in conv.attrs and reads[conv.outputs[0]] == 2
                and conv.outputs[0] not in graph.output_names):
            return conv, sigmoid
    return None
