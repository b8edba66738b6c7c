"""Graph rewrites before planning, one function per pass (each returns a new node list).

- ``drop_identities``: Identity / Dropout (inference) become renames.
- ``fold_batchnorm``: Conv -> BatchNormalization folds into the conv's weight and bias
  (w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta).
- ``fuse_conv_add``: Conv -> Add(other) with ``other`` of the same shape becomes a conv with a
  residual input, added in the conv's epilogue.
- ``fuse_activation``: Conv -> Relu / Clip(constant bounds) becomes the conv's epilogue clamp.
- ``fold_constant_channels``: an output channel of a conv with no nonzero weight is the constant
  clamp(bias); when only pointwise convs read the tensor, it becomes part of their biases, they
  no longer read it, and the producer skips computing it (``SKIP_EMPTY_KEY``).
Fused attributes live in ``Node.attrs`` under private keys (``ACT_KEY``, ``RESIDUAL_KEY``,
``SKIP_EMPTY_KEY``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np

from runtime.errors import ModelLoadError, UnsupportedOpError
from runtime.graph import Graph, Node

__all__ = [
    "ACT_KEY",
    "RESIDUAL_KEY",
    "SKIP_EMPTY_KEY",
    "Activation",
    "drop_identities",
    "fold_batchnorm",
    "fuse_conv_add",
    "fuse_activation",
    "fold_constant_channels",
    "clip_bounds",
    "prepare_graph",
    "fuse_for_shapes",
]

ACT_KEY = "_fd_activation"
RESIDUAL_KEY = "_fd_residual"
SKIP_EMPTY_KEY = "_fd_skip_empty_channels"
Activation = tuple[float, float]  # clamp bounds (lo, hi); ReLU = (0, inf)


def prepare_graph(graph: Graph) -> Graph:
    """Shape-independent passes, run once at load."""
    return fold_batchnorm(drop_identities(graph))


def fuse_for_shapes(graph: Graph, shapes: dict[str, tuple[int, ...]]) -> Graph:
    """Fusions that need tensor shapes (run per planned input shape)."""
    return fold_constant_channels(fuse_activation(fuse_conv_add(graph, shapes)))


def reads(node: Node) -> list[str]:
    """The tensors ``node`` reads, a fused residual input included."""
    return [i for i in (*node.inputs, node.attrs.get(RESIDUAL_KEY)) if i]


def _consumers(nodes: list[Node]) -> Counter[str]:
    """How many times each tensor is read."""
    return Counter(i for n in nodes for i in reads(n))


def drop_identities(graph: Graph) -> Graph:
    """Remove Identity / Dropout by renaming their output to their input."""
    rename: dict[str, str] = {}
    nodes: list[Node] = []
    for node in graph.nodes:
        inputs = [rename.get(i, i) for i in node.inputs]
        if node.op in ("Identity", "Dropout") and node.outputs[0] != graph.output_name:
            rename[node.outputs[0]] = inputs[0]
            continue
        nodes.append(replace(node, inputs=inputs))
    return replace(graph, nodes=nodes)


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold BatchNormalization into the Conv that feeds only it (constant weights required)."""
    consumers = _consumers(graph.nodes)
    producer = {n.outputs[0]: n for n in graph.nodes}
    constants = dict(graph.constants)
    folded: dict[str, Node] = {}  # bn output -> new conv
    skip: set[int] = set()
    for node in graph.nodes:
        conv = producer.get(node.inputs[0]) if node.op == "BatchNormalization" else None
        if (conv is None or conv.op != "Conv" or consumers[conv.outputs[0]] != 1
                or conv.outputs[0] == graph.output_name
                or any(i not in constants for i in conv.inputs[1:] if i)
                or any(i not in constants for i in node.inputs[1:5])):
            continue
        folded[node.outputs[0]] = _fold_one(conv, node, constants)
        skip.update((id(conv), id(node)))
    nodes = []
    for node in graph.nodes:
        if node.op == "BatchNormalization" and node.outputs[0] in folded:
            nodes.append(folded[node.outputs[0]])
        elif id(node) not in skip:
            nodes.append(node)
    return replace(graph, nodes=nodes, constants=constants)


def _fold_one(conv: Node, bn: Node, constants: dict[str, np.ndarray]) -> Node:
    scale, bias, mean, var = (constants[n].astype(np.float64) for n in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    w = constants[conv.inputs[1]].astype(np.float64)
    b = _bias(conv, constants, w.shape[0])
    if scale.shape != (w.shape[0],):
        raise ModelLoadError(f"{bn.describe()}: {scale.shape[0]} channels after a "
                             f"{w.shape[0]}-channel conv")
    factor = scale / np.sqrt(var + eps)
    w_name, b_name = f"{conv.outputs[0]}::folded_w", f"{conv.outputs[0]}::folded_b"
    # Multiplying keeps pruned zeros exactly zero.
    constants[w_name] = (w * factor[:, None, None, None]).astype(np.float32)
    constants[b_name] = ((b - mean) * factor + bias).astype(np.float32)
    return replace(conv, inputs=[conv.inputs[0], w_name, b_name], outputs=[bn.outputs[0]],
                   attrs=dict(conv.attrs))


def fuse_conv_add(graph: Graph, shapes: dict[str, tuple[int, ...]]) -> Graph:
    """Conv -> Add(other of equal shape) becomes one conv with a residual; placed at the Add."""
    consumers = _consumers(graph.nodes)
    producer = {n.outputs[0]: n for n in graph.nodes}
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        if node.op != "Add" or node.inputs[0] == node.inputs[1]:
            continue
        for k in (0, 1):
            conv, other = producer.get(node.inputs[k]), node.inputs[1 - k]
            if (conv is None or conv.op != "Conv" or id(conv) in removed
                    or consumers[conv.outputs[0]] != 1 or conv.outputs[0] == graph.output_name
                    or ACT_KEY in conv.attrs or RESIDUAL_KEY in conv.attrs
                    or other in graph.constants
                    or shapes[other] != shapes[node.outputs[0]]
                    or shapes[conv.outputs[0]] != shapes[node.outputs[0]]):
                continue
            attrs = dict(conv.attrs)
            attrs[RESIDUAL_KEY] = other
            replaced[id(node)] = replace(conv, outputs=list(node.outputs), attrs=attrs)
            removed.add(id(conv))
            break
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes)


def clip_bounds(node: Node, graph: Graph, opset: int) -> Activation:
    """Clamp bounds of a Relu or Clip node (Clip: attributes before opset 11, inputs after)."""
    if node.op == "Relu":
        return (0.0, math.inf)
    if opset < 11:
        return (float(node.attrs.get("min", -math.inf)), float(node.attrs.get("max", math.inf)))
    bounds = [-math.inf, math.inf]
    for k in (1, 2):
        name = node.inputs[k] if len(node.inputs) > k else ""
        if not name:
            continue
        if name not in graph.constants:
            raise UnsupportedOpError(f"{node.describe()}: min/max must be constants")
        bounds[k - 1] = float(np.asarray(graph.constants[name]).reshape(-1)[0])
    return (bounds[0], bounds[1])


def fuse_activation(graph: Graph) -> Graph:
    """Conv (possibly with residual) -> Relu / Clip becomes the conv's clamp epilogue."""
    consumers = _consumers(graph.nodes)
    producer = {n.outputs[0]: n for n in graph.nodes}
    replaced: dict[int, Node] = {}
    removed: set[int] = set()
    for node in graph.nodes:
        if node.op not in ("Relu", "Clip"):
            continue
        conv = producer.get(node.inputs[0])
        if (conv is None or conv.op != "Conv" or id(conv) in removed or ACT_KEY in conv.attrs
                or consumers[conv.outputs[0]] != 1 or conv.outputs[0] == graph.output_name):
            continue
        attrs = dict(conv.attrs)
        attrs[ACT_KEY] = clip_bounds(node, graph, graph.opset)
        replaced[id(node)] = replace(conv, outputs=list(node.outputs), attrs=attrs)
        removed.add(id(conv))
    nodes = [replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed]
    return replace(graph, nodes=nodes)


def fold_constant_channels(graph: Graph) -> Graph:
    """Fold the constant output channels of convs into the pointwise convs that read them.

    A conv output channel c whose weights are all zero is the constant plane
    v_c = clamp(bias_c) (clamp: the fused activation). A 1x1 conv without padding (group 1) that
    reads it adds W[:, c] * v_c at every position, so when every reader of the tensor is such a
    conv: bias' = bias + W[:, E] @ v_E and W[:, E] = 0 over the constant channels E, and the
    producer is marked (``SKIP_EMPTY_KEY``) to skip its empty channels, which nothing reads
    any more. Pruned depthwise convs have many empty channels (a 3x3 filter at 90% sparsity is
    empty with probability 0.9^9 = 39%), and MobileNet's pointwise convs read them.
    """
    readers: dict[str, list[Node]] = {}
    for node in graph.nodes:
        for name in reads(node):
            readers.setdefault(name, []).append(node)
    constants = dict(graph.constants)
    replaced: dict[int, Node] = {}
    for original in graph.nodes:
        # A conv folded into already may have new empty rows (its constant columns zeroed).
        node = replaced.get(id(original), original)
        values = _constant_channels(node, constants)
        out = node.outputs[0]
        if values is None or out == graph.output_name:
            continue
        consumers = readers.get(out, [])
        if not consumers or not all(_reads_pointwise(c, out, constants) for c in consumers):
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
            or (len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in constants)):
        return None
    w = np.asarray(constants[node.inputs[1]])
    empty = ~w.reshape(w.shape[0], -1).any(axis=1)
    if not empty.any():
        return None
    bias = _bias(node, constants, w.shape[0])
    lo, hi = node.attrs.get(ACT_KEY, (-math.inf, math.inf))
    return np.where(empty, np.clip(bias, lo, hi), np.nan)


def _reads_pointwise(node: Node, name: str, constants: dict[str, np.ndarray]) -> bool:
    """True when ``node`` reads tensor ``name`` only as the input of a 1x1, unpadded, group-1
    conv with constant weights (every position of a constant plane contributes the same)."""
    if (node.op != "Conv" or node.inputs[0] != name or name in node.inputs[1:]
            or node.attrs.get(RESIDUAL_KEY) == name or node.inputs[1] not in constants
            or (len(node.inputs) > 2 and node.inputs[2] and node.inputs[2] not in constants)):
        return False
    w = constants[node.inputs[1]]
    return (w.ndim == 4 and w.shape[2:] == (1, 1) and int(node.attrs.get("group", 1)) == 1
            and not any(node.attrs.get("pads", [0]))
            and node.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _fold_into(node: Node, values: np.ndarray, constants: dict[str, np.ndarray]) -> Node:
    """``node`` (a pointwise conv) with the constant input channels (non-NaN ``values``) moved
    into its bias."""
    w = np.array(constants[node.inputs[1]], dtype=np.float32)
    bias = _bias(node, constants, w.shape[0])
    const = ~np.isnan(values)
    bias = bias + w[:, const, 0, 0].astype(np.float64) @ values[const]
    w[:, const] = 0.0
    # Named after the output (unique in a valid graph; node names need not be).
    w_name, b_name = f"{node.outputs[0]}::const_w", f"{node.outputs[0]}::const_b"
    constants[w_name], constants[b_name] = w, bias.astype(np.float32)
    return replace(node, inputs=[node.inputs[0], w_name, b_name])


def _bias(node: Node, constants: dict[str, np.ndarray], channels: int) -> np.ndarray:
    """A conv's bias (float64), zeros when it has none."""
    if len(node.inputs) > 2 and node.inputs[2]:
        return np.asarray(constants[node.inputs[2]], np.float64)
    return np.zeros(channels)
