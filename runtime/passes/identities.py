"""Identity and inference Dropout (without a mask output) become renames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.options import PlannerOptions

__all__ = ["drop_identities"]


def drop_identities(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                    opts: PlannerOptions) -> Graph:
    """Remove native Identity / Dropout nodes by renaming their output to their input (a graph
    output keeps its node: its name is the caller's)."""
    rename: dict[str, str] = {}
    nodes: list[Node] = []
    outputs = set(graph.output_names)
    merged = dict(graph.merged)
    for node in graph.nodes:
        inputs = [rename.get(i, i) for i in node.inputs]
        if (node.op in ("Identity", "Dropout") and native(node) and not any(node.outputs[1:])
                and node.outputs[0] not in outputs):
            rename[node.outputs[0]] = inputs[0]
            merged[node.outputs[0]] = inputs[0]  # a rename: its producer (if any) holds it
            continue
        nodes.append(replace(node, inputs=inputs) if inputs != node.inputs else node)
    return replace(graph, nodes=nodes, merged=merged)
