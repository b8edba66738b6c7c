"""Concat -> Reshape (N, G, C/G, H, W) -> Transpose (0, 2, 1, 3, 4) -> Reshape (N, C, H, W), the
channel shuffle of ShuffleNet, becomes one Concat that writes each input's channels straight to
their shuffled places: channel a of group g (concat channel g * C/G + a) lands at a * G + g.

Each of the four nodes is a full copy of the block's tensor; the fused Concat copies once, each
input's piece of a group into a view with channel stride G (runtime/ops/shape_ops.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.fusion import SHUFFLE_KEY
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers

__all__ = ["fuse_channel_shuffle"]

SHUFFLE_PERM = (0, 2, 1, 3, 4)


def fuse_channel_shuffle(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                         opts: PlannerOptions) -> Graph:
    reads = consumers(graph.nodes)
    reader: dict[str, Node] = {}
    for node in graph.nodes:
        for name in node.inputs:
            reader[name] = node
    removed: set[int] = set()
    replaced: dict[int, Node] = {}
    merged = dict(graph.merged)
    for node in graph.nodes:
        chain = _shuffle_chain(node, graph, shapes, native, reads, reader)
        if chain is None:
            continue
        groups, tail = chain
        attrs = {**node.attrs, SHUFFLE_KEY: groups}
        replaced[id(node)] = replace(node, outputs=[tail[-1].outputs[0]], attrs=attrs,
                                     proto=None)
        removed.update(id(n) for n in tail)
        for n in tail:
            merged[n.inputs[0]] = tail[-1].outputs[0]
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes, merged=merged)


def _shuffle_chain(node: Node, graph: Graph, shapes: dict, native: Callable[[Node], bool],
                   reads: dict, reader: dict[str, Node]) -> tuple[int, list[Node]] | None:
    """(G, [Reshape, Transpose, Reshape]) when ``node`` is a channel Concat followed by a
    channel shuffle that nothing else reads midway, else None."""
    out = shapes.get(node.outputs[0]) if node.outputs else None
    if (node.op != "Concat" or not native(node) or out is None or len(out) != 4
            or node.attr_int("axis", 1) not in (1, -3) or SHUFFLE_KEY in node.attrs):
        return None
    tail: list[Node] = []
    name = node.outputs[0]
    for op in ("Reshape", "Transpose", "Reshape"):
        nxt = reader.get(name)
        if (reads[name] != 1 or name in graph.output_names or nxt is None or nxt.op != op
                or not native(nxt) or nxt.inputs[0] != name):
            return None
        tail.append(nxt)
        name = nxt.outputs[0]
    n, c, h, w = out
    grouped = shapes.get(tail[0].outputs[0])
    if grouped is None or len(grouped) != 5 or grouped[0] != n or grouped[3:] != (h, w):
        return None
    groups = grouped[1]
    if groups < 2 or groups * grouped[2] != c:
        return None
    if tuple(tail[1].attr_ints("perm", ())) != SHUFFLE_PERM or shapes.get(name) != out:
        return None
    return groups, tail
