"""Conv -> BatchNormalization folds into the conv:
w' = w * g / sqrt(v + eps),  b' = (b - m) * g / sqrt(v + eps) + beta
(multiplying keeps pruned zeros exactly zero)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.normalization import batchnorm_affine
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.common import consumers, producers

__all__ = ["fold_batchnorm", "conv_bias"]


def conv_bias(node: Node, constants: dict[str, np.ndarray], channels: int) -> np.ndarray:
    """A conv's bias (float64), zeros when it has none."""
    if node.input(2):
        return np.asarray(constants[node.inputs[2]], np.float64).reshape(-1)
    return np.zeros(channels)


def fold_batchnorm(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                   opts: PlannerOptions) -> Graph:
    """Fold each native BatchNormalization into the native Conv that feeds only it (constant
    weights and statistics required)."""
    reads = consumers(graph.nodes)
    producer = producers(graph.nodes)
    constants = dict(graph.constants)
    folded: dict[int, Node] = {}  # id(bn) -> new conv
    skip: set[int] = set()
    for node in graph.nodes:
        conv = producer.get(node.inputs[0]) if node.op == "BatchNormalization" else None
        if (conv is None or conv.op != "Conv" or not native(conv) or not native(node)
                or reads[conv.outputs[0]] != 1 or conv.outputs[0] in graph.output_names
                or any(node.outputs[1:])
                or any(i not in constants for i in conv.inputs[1:] if i)
                or any(i not in constants for i in node.inputs[1:5])):
            continue
        folded[id(node)] = _fold_one(conv, node, constants)
        skip.add(id(conv))
    nodes = [folded.get(id(n), n) for n in graph.nodes if id(n) not in skip]
    merged = {**graph.merged, **{n.inputs[0]: n.outputs[0] for n in graph.nodes
                                 if id(n) in folded}}
    return replace(graph, nodes=nodes, constants=constants, merged=merged)


def _fold_one(conv: Node, bn: Node, constants: dict[str, np.ndarray]) -> Node:
    w = np.asarray(constants[conv.inputs[1]], np.float64)
    factor, _ = batchnorm_affine(bn, *(constants[n] for n in bn.inputs[1:5]))
    if factor.shape != (w.shape[0],):
        raise ModelLoadError(f"{bn.describe()}: {factor.shape[0]} channels after a "
                             f"{w.shape[0]}-channel conv")
    mean, beta = (np.asarray(constants[bn.inputs[i]], np.float64).reshape(-1) for i in (3, 2))
    b = conv_bias(conv, constants, w.shape[0])
    w_name, b_name = f"{bn.outputs[0]}::folded_w", f"{bn.outputs[0]}::folded_b"
    constants[w_name] = (w * factor[:, None, None, None]).astype(np.float32)
    constants[b_name] = ((b - mean) * factor + beta).astype(np.float32)
    return replace(conv, inputs=[conv.inputs[0], w_name, b_name], outputs=[bn.outputs[0]],
                   attrs=dict(conv.attrs), proto=None)
