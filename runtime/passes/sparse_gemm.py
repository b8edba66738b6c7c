"""A Gemm or MatMul with a sparse constant weight becomes a 1x1 Conv, so the classifier of a
pruned network runs on the sparse conv kernels instead of a dense GEMM.

At batch 1 a classifier is a matrix-vector product whose cost is reading the weight: the dense
GEMM reads every weight (EfficientNet-B0's 1280 x 1000 is 5 MB, more than the rest of a step's
working set), the CSR kernel reads only the nonzeros and their offsets. Y = A @ B' + C with
A (N, K), B' (K, M) and C broadcast along rows becomes Conv(A as (N, K, 1, 1), W = alpha B'^T
as (M, K, 1, 1), bias = beta C) -> Flatten. A that is itself a Flatten / Reshape of an
(N, K, 1, 1) tensor (global pooling before the classifier) is read as that tensor. Weights denser
than ``PlannerOptions.sparse_gemm_density``, and products of more than one row, stay on the
dense GEMM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers, producers

__all__ = ["sparse_gemm_as_conv"]


def sparse_gemm_as_conv(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                        opts: PlannerOptions) -> Graph:
    constants = dict(graph.constants)
    producer = producers(graph.nodes)
    merged = dict(graph.merged)
    nodes: list[Node] = []
    for node in graph.nodes:
        weight = _sparse_weight(node, graph, shapes, native, opts)
        if weight is None:
            nodes.append(node)
            continue
        nodes += _as_conv(node, weight, constants, shapes, producer)
        if nodes[-2].inputs[0] != node.inputs[0]:  # the conv reads the Flatten's input
            merged[node.inputs[0]] = node.outputs[0]
    # A Flatten the conv now bypasses is dead unless something else reads it.
    read = consumers(nodes)
    nodes = [n for n in nodes if n.op not in ("Flatten", "Reshape") or any(
        read[o] or o in graph.output_names for o in n.outputs)]
    return replace(graph, nodes=nodes, constants=constants, merged=merged)


def _sparse_weight(node: Node, graph: Graph, shapes: dict, native: Callable[[Node], bool],
                   opts: PlannerOptions) -> np.ndarray | None:
    """alpha * B' as (K, M) when ``node`` is a native 2-D Gemm / MatMul whose weight is a sparse
    constant and whose C (if any) is a constant along rows; else None."""
    if node.op not in ("Gemm", "MatMul") or not native(node) or len(node.inputs) < 2:
        return None
    a, b = shapes.get(node.inputs[0]), graph.constants.get(node.inputs[1])
    # One row only: at batch 1 reading the weight is the whole cost; several rows amortize it
    # on the dense GEMM, and a conv over several 1x1 images split by channels across threads
    # wrote over its neighbours' outputs (fuzz cases 4171, 8441).
    if a is None or len(a) != 2 or a[0] != 1 or b is None or b.ndim != 2 or b.size == 0:
        return None
    if np.count_nonzero(b) > opts.sparse_gemm_density * b.size:
        return None
    if node.op == "MatMul":
        return np.asarray(b, np.float32)
    if node.attr_int("transA", 0):
        return None
    if node.input(2):
        c = graph.constants.get(node.input(2))
        if c is None or c.size not in (1, b.shape[0 if node.attr_int("transB", 0) else 1]):
            return None
    weight = b.T if node.attr_int("transB", 0) else b
    return (node.attr_float("alpha", 1.0) * np.asarray(weight, np.float64)).astype(np.float32)


def _as_conv(node: Node, weight: np.ndarray, constants: dict, shapes: dict,
             producer: dict[str, Node]) -> list[Node]:
    n, k = shapes[node.inputs[0]]
    m = weight.shape[1]
    tag = f"{node.outputs[0]}::conv"
    constants[f"{tag}_w"] = np.ascontiguousarray(weight.T.reshape(m, k, 1, 1))
    shapes[f"{tag}_w"] = (m, k, 1, 1)
    inputs = [_image_input(node.inputs[0], shapes, producer), f"{tag}_w"]
    added: list[Node] = []
    if len(shapes[inputs[0]]) != 4:  # (N, K) -> (N, K, 1, 1)
        constants[f"{tag}_shape"] = np.array([n, k, 1, 1], np.int64)
        shapes[f"{tag}_x"] = (n, k, 1, 1)
        added.append(Node("Reshape", f"{node.name}/as_image", [inputs[0], f"{tag}_shape"],
                          [f"{tag}_x"], {}))
        inputs[0] = f"{tag}_x"
    if node.op == "Gemm" and node.input(2):
        c = np.asarray(constants[node.input(2)], np.float64) * node.attr_float("beta", 1.0)
        constants[f"{tag}_b"] = np.broadcast_to(c.reshape(-1), (m,)).astype(np.float32)
        shapes[f"{tag}_b"] = (m,)
        inputs.append(f"{tag}_b")
    shapes[tag] = (n, m, 1, 1)
    conv = Node("Conv", node.name, inputs, [tag], {})
    flatten = Node("Flatten", f"{node.name}/flatten", [tag], list(node.outputs), {"axis": 1})
    return [*added, conv, flatten]


def _image_input(name: str, shapes: dict, producer: dict[str, Node]) -> str:
    """The (N, K, 1, 1) tensor a Flatten / Reshape made ``name`` (N, K) from, else ``name``."""
    source = producer.get(name)
    if source is None or source.op not in ("Flatten", "Reshape"):
        return name
    x = shapes.get(source.inputs[0])
    n, k = shapes[name]
    return source.inputs[0] if x is not None and tuple(x) == (n, k, 1, 1) else name
