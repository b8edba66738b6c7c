"""Constant output channels of convs fold into the pointwise convs that read them.

A conv output channel c whose weights are all zero is the constant plane v_c = act(bias_c)
(act: the fused activation). A 1x1 conv without padding (group 1) that reads it adds
W[:, c] * v_c at every position, so when every reader of the tensor is such a conv:
bias' = bias + W[:, E] @ v_E and W[:, E] = 0 over the constant channels E, and the producer is
marked (``SKIP_EMPTY_KEY``) to skip its empty channels, which nothing reads any more. Pruned
depthwise convs have many empty channels (a 3x3 filter at 90% sparsity is empty with
probability 0.9^9 = 39%), and MobileNet's pointwise convs read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.activation import apply_activation
from featherdeploy.runtime.ops.fusion import ACT_KEY, CLAMP_NONE, RESIDUAL_KEY, SKIP_EMPTY_KEY
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.passes.batchnorm import conv_bias
from featherdeploy.runtime.passes.common import reads

__all__ = ["fold_constant_channels"]


def fold_constant_channels(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                           opts: PlannerOptions) -> Graph:
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in reads(node):
            readers.setdefault(name, []).append(node)
    constants = dict(graph.constants)
    replaced: dict[int, Node] = {}
    for original in graph.nodes:
        # A conv folded into already may have new empty rows (its constant columns zeroed).
        node = replaced.get(id(original), original)
        values = _constant_channels(node, constants) if native(original) else None
        out = node.outputs[0]
        if values is None or out in graph.output_names:
            continue
        consumers = readers.get(out, [])
        if not consumers or not all(native(c) and _reads_pointwise(c, out, constants)
                                    for c in consumers):
            continue
        for consumer in consumers:
            current = replaced.get(id(consumer), consumer)
            replaced[id(consumer)] = _fold_into(current, values, constants)
        replaced[id(original)] = replace(node, attrs={**node.attrs, SKIP_EMPTY_KEY: True})
    nodes = [replaced.get(id(n), n) for n in graph.nodes]
    return replace(graph, nodes=nodes, constants=constants)


def _constant_channels(node: Node, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """Per output channel: its constant value where all its weights are zero, NaN elsewhere;
    None when the conv has no such channel (or is not a plain conv with constant weights)."""
    if (node.op != "Conv" or RESIDUAL_KEY in node.attrs or node.inputs[1] not in constants
            or (node.input(2) and node.inputs[2] not in constants)):
        return None
    w = np.asarray(constants[node.inputs[1]])
    empty = ~w.reshape(w.shape[0], -1).any(axis=1)
    if not empty.any():
        return None
    bias = conv_bias(node, constants, w.shape[0])
    act = node.attrs.get(ACT_KEY, CLAMP_NONE)
    value = apply_activation(bias.reshape(1, -1), act).reshape(-1)
    return np.where(empty, value, np.nan)


def _reads_pointwise(node: Node, name: str, constants: dict[str, np.ndarray]) -> bool:
    """True when ``node`` reads tensor ``name`` only as the input of a 1x1, unpadded, group-1
    conv with constant weights (every position of a constant plane contributes the same)."""
    if (node.op != "Conv" or node.inputs[0] != name or name in node.inputs[1:]
            or node.attrs.get(RESIDUAL_KEY) == name or node.inputs[1] not in constants
            or (node.input(2) and node.inputs[2] not in constants)):
        return False
    w = constants[node.inputs[1]]
    return (w.ndim == 4 and w.shape[2:] == (1, 1) and node.attr_int("group", 1) == 1
            and not any(node.attr_ints("pads", (0,)) or (0,))
            and node.attr_str("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _fold_into(node: Node, values: np.ndarray, constants: dict[str, np.ndarray]) -> Node:
    """``node`` (a pointwise conv) with the constant input channels (non-NaN ``values``) moved
    into its bias."""
    w = np.array(constants[node.inputs[1]], dtype=np.float32)
    bias = conv_bias(node, constants, w.shape[0])
    const = ~np.isnan(values)
    bias = bias + w[:, const, 0, 0].astype(np.float64) @ values[const]
    w[:, const] = 0.0
    # Named after the output (unique in a valid graph; node names need not be).
    w_name, b_name = f"{node.outputs[0]}::const_w", f"{node.outputs[0]}::const_b"
    constants[w_name], constants[b_name] = w, bias.astype(np.float32)
    return replace(node, inputs=[node.inputs[0], w_name, b_name], proto=None)
