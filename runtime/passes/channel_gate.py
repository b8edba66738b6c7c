"""Mul(x, g) with a per-channel gate g (1, C, 1, 1), read only by a conv, becomes that conv
reading x with its weights scaled by g: conv(x * g) has weights w[:, c] * g[c].

This is the squeeze-and-excitation gate of MobileNetV3, EfficientNet, GhostNet and RegNetY
(global pooling -> 1x1 conv -> activation -> 1x1 conv -> sigmoid -> Mul with the block's tensor).
The Mul is a pass over the block's widest tensor (read and written once more); scaling the
stored weights of the conv after it costs one multiply per nonzero weight (ScaleWeights step,
runtime/ops/conv.py). One image per plan only: the gate differs between images. Runs last, so
constant channels of x are never folded into a gated conv's bias.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.fusion import GATE_KEY
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers

__all__ = ["fold_channel_gate"]


def fold_channel_gate(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                      opts: PlannerOptions) -> Graph:
    reads = consumers(graph.nodes)
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node)
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    merged = dict(graph.merged)
    for node in graph.nodes:
        found = _gated(node, graph, shapes, native, reads, readers)
        if found is None:
            continue
        x, gate, conv = found
        if id(conv) in replaced or id(conv) in removed:
            continue
        attrs = dict(conv.attrs)
        attrs[GATE_KEY] = gate
        replaced[id(conv)] = replace(conv, inputs=[x, *conv.inputs[1:]], attrs=attrs,
                                     proto=None)
        removed.add(id(node))
        merged[node.outputs[0]] = conv.outputs[0]
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes, merged=merged)


def _gated(node: Node, graph: Graph, shapes: dict, native: Callable[[Node], bool],
           reads: dict, readers: dict[str, list[Node]]) -> tuple[str, str, Node] | None:
    """(x, g, the conv reading x * g) when ``node`` is such a Mul, else None."""
    if node.op != "Mul" or len(node.inputs) != 2 or not native(node):
        return None
    out = node.outputs[0]
    if reads[out] != 1 or out in graph.output_names or not readers.get(out):
        return None
    conv = readers[out][0]
    if (conv.op != "Conv" or not native(conv) or conv.inputs[0] != out
            or GATE_KEY in conv.attrs or conv.attr_int("group", 1) != 1):
        return None
    for k in (0, 1):
        x, gate = node.inputs[k], node.inputs[1 - k]
        xs, gs = shapes.get(x), shapes.get(gate)
        if (xs is not None and len(xs) == 4 and xs[0] == 1 and gs == (1, xs[1], 1, 1)
                and x not in graph.constants and gate not in graph.constants
                and shapes.get(out) == xs):
            return x, gate, conv
    return None
