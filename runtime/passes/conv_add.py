"""Conv -> Add(other of the same shape) becomes one conv with a residual input, added in the
conv's epilogue (placed where the Add was)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.fusion import ACT_KEY, RESIDUAL_KEY
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers, producers

__all__ = ["fuse_conv_add"]


def fuse_conv_add(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                  opts: PlannerOptions) -> Graph:
    reads = consumers(graph.nodes)
    producer = producers(graph.nodes)
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        if node.op != "Add" or not native(node) or node.inputs[0] == node.inputs[1]:
            continue
        for k in (0, 1):
            conv, other = producer.get(node.inputs[k]), node.inputs[1 - k]
            if (conv is None or conv.op != "Conv" or not native(conv) or id(conv) in removed
                    or reads[conv.outputs[0]] != 1 or conv.outputs[0] in graph.output_names
                    or ACT_KEY in conv.attrs or RESIDUAL_KEY in conv.attrs
                    or other in graph.constants
                    or shapes.get(other) != shapes.get(node.outputs[0])
                    or shapes.get(conv.outputs[0]) != shapes.get(node.outputs[0])):
                continue
            attrs = dict(conv.attrs)
            attrs[RESIDUAL_KEY] = other
            replaced[id(node)] = replace(conv, outputs=list(node.outputs), attrs=attrs,
                                         proto=None)
            removed.add(id(conv))
            break
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    merged = dict(graph.merged)
    for node in graph.nodes:
        if id(node) in replaced:
            conv = producer[next(i for i in node.inputs if producer.get(i) is not None
                                 and id(producer[i]) in removed)]
            merged[conv.outputs[0]] = node.outputs[0]
    return replace(graph, nodes=nodes, merged=merged)
