"""Batch policy: when images of a batch never interact, and how many run as one
batch-interleaved group."""

from __future__ import annotations

import math

from runtime.errors import EngineError
from runtime.graph import Graph
from runtime.options import PlannerOptions
from runtime.specialize import specialize

__all__ = ["batch_separable", "interleave_lanes"]


def _with_batch(graph: Graph, images: dict[str, tuple[int, ...]], batch: int
                ) -> dict[str, tuple[int, ...]]:
    return {name: (batch, *shape) for name, shape in images.items()}


def batch_separable(graph: Graph, images: dict[str, tuple[int, ...]]) -> bool:
    """True when images of a batch never interact, so a plan for one image serves any batch.

    Requires a dynamic batch axis on every input, every tensor's leading dim proportional to the
    batch with the other dims fixed (checked by specializing at batch 1 and 2; this excludes
    Flatten(axis=0), Concat on axis 0, Gemm with transA, ...), no constant folded from a shape
    that includes the batch, and no Softmax reducing over axis 0.
    """
    if not graph.inputs or any(t.shape is None or not t.shape or t.shape[0] is not None
                               for t in graph.inputs):
        return False
    try:
        one = specialize(graph, _with_batch(graph, images, 1))
        two = specialize(graph, _with_batch(graph, images, 2))
    except EngineError:
        return False
    if set(one.graph.constants) != set(two.graph.constants) or len(one.graph.nodes) != len(
            two.graph.nodes):
        return False
    for node in one.graph.nodes:
        for name in node.outputs:
            a, b = one.shapes.get(name), two.shapes.get(name)
            if a is None or b is None or not a or b[0] != 2 * a[0] or a[1:] != b[1:]:
                return False
        if node.op == "Softmax":
            rank = len(one.shapes[node.inputs[0]] or ())
            axis = node.attr_int("axis", -1 if graph.opset >= 13 else 1)
            if rank == 0 or axis % rank == 0:
                return False
    for name in graph.output_names:
        if name in one.graph.constants:
            return False
    return all(_same_folds(one.graph.constants, two.graph.constants, name)
               for name in one.graph.constants)


def _same_folds(a: dict, b: dict, name: str) -> bool:
    """A folded constant that depends on the batch size (e.g. a Reshape target computed from
    Shape) would change with it: then a one-image plan cannot serve a batch."""
    x, y = a[name], b[name]
    return x.shape == y.shape and (x is y or bool((x == y).all()))


def interleave_lanes(graph: Graph, images: dict[str, tuple[int, ...]], batch: int,
                     opts: PlannerOptions) -> int:
    """Images per batch-interleaved group for ``batch`` images (1: run images one by one).

    The largest power of two <= min(batch, max_lanes) whose group keeps the largest 4-D
    activation within ``lanes_budget_bytes``.
    """
    spec = specialize(graph, _with_batch(graph, images, 1))
    activations = [spec.shapes.get(o) for node in spec.graph.nodes for o in node.outputs]
    largest = max((math.prod(s) for s in activations if s is not None and len(s) == 4),
                  default=0)
    lanes = 1
    while (lanes * 2 <= min(batch, opts.max_lanes)
           and lanes * 2 * largest * 4 <= opts.lanes_budget_bytes):
        lanes *= 2
    return lanes
