"""What the passes share: which tensors a node reads, how often each tensor is read."""

from __future__ import annotations

from collections import Counter

from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.fusion import RESIDUAL_KEY

__all__ = ["reads", "consumers", "producers"]


def reads(node: Node) -> list[str]:
    """The tensors ``node`` reads, a fused residual input included."""
    return [i for i in (*node.inputs, node.attrs.get(RESIDUAL_KEY)) if i]


def consumers(nodes: list[Node]) -> Counter[str]:
    """How many times each tensor is read."""
    return Counter(i for n in nodes for i in reads(n))


def producers(nodes: list[Node]) -> dict[str, Node]:
    return {o: n for n in nodes for o in n.outputs if o}
