"""Batch policy: when images of a batch never interact, how many run as one batch-interleaved
group, and where a batch may switch from image by image to interleaved groups."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from featherdeploy.runtime.errors import EngineError
from featherdeploy.runtime.graph import Graph, Node, TensorInfo
from featherdeploy.runtime.ops.registry import OpContext
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.specialize import specialize

__all__ = ["BatchCut", "batch_separable", "cut_lanes", "interleave_cut", "interleave_lanes"]


def _with_batch(graph: Graph, images: dict[str, tuple[int, ...]], batch: int
                ) -> dict[str, tuple[int, ...]]:
    return {name: (batch, *shape) for name, shape in images.items()}


def batch_separable(graph: Graph, images: dict[str, tuple[int, ...]]) -> bool:
    """True when images of a batch never interact, so a plan for one image serves any batch.

    Requires a dynamic batch axis on every input and, specializing at batch 1 and 2, every
    tensor's leading dim equal to the batch with the other dims fixed (this excludes Flatten(axis
    =0), Concat or Tile on axis 0, Gemm with transA, reshapes folding the batch into another dim,
    ...), no constant folded from a shape that includes the batch, and no node that works across
    axis 0 with shapes that do not show it (:func:`_mixes_images`).
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
    ctx = one.context()
    for node in one.graph.nodes:
        for name in node.outputs:
            a, b = one.shapes.get(name), two.shapes.get(name)
            if a is None or b is None or not a or (a[0], b[0]) != (1, 2) or a[1:] != b[1:]:
                return False
        if _mixes_images(node, ctx):
            return False
    for name in graph.output_names:
        if name in one.graph.constants:
            return False
    shape_inputs = {node.inputs[1] for node in one.graph.nodes
                    if node.op == "Reshape" and len(node.inputs) > 1}
    read = {name for node in one.graph.nodes for name in node.inputs}
    return all(_same_folds(one.graph.constants, two.graph.constants, name)
               or (name in shape_inputs and _batch_led(one.graph.constants[name],
                                                       two.graph.constants[name]))
               for name in read & set(one.graph.constants))


def _axis(node: Node, ctx: OpContext, name: str, default: int) -> int:
    rank = len(ctx.shapes[node.inputs[0]])
    return node.attr_int(name, default) % max(rank, 1)


def _mixes_images(node: Node, ctx: OpContext) -> bool:
    """Nodes that combine or reorder images while every shape keeps the batch leading:
    reductions and normalizations over axis 0, Slice along axis 0 (a reversed batch),
    Gather / Concat / Split on axis 0, Transposes moving axis 0."""
    op = node.op
    if op in ("Softmax", "LogSoftmax", "Hardmax"):
        return _axis(node, ctx, "axis", -1 if ctx.opset >= 13 else 1) == 0
    if op == "LayerNormalization":
        return _axis(node, ctx, "axis", -1) == 0
    if op in ("Gather", "Concat", "Split", "CumSum"):
        return op == "CumSum" or _axis(node, ctx, "axis", 0) == 0
    if op == "Transpose":
        perm = node.attr_ints("perm")
        return bool(perm) and perm[0] != 0 or not perm and len(ctx.shapes[node.inputs[0]]) > 1
    if op == "Slice":
        rank = len(ctx.shapes[node.inputs[0]])
        if ctx.opset < 10:
            axes = node.attr_ints("axes") or list(range(len(node.attr_ints("starts"))))
        else:
            value = ctx.const(node, 3) if node.input(3) else None
            starts = ctx.const(node, 1)
            axes = ([int(a) for a in value.reshape(-1)] if value is not None else
                    list(range(starts.size)) if starts is not None else [0])
        return any(a % rank == 0 for a in axes)
    return False


def _same_folds(a: dict, b: dict, name: str) -> bool:
    """A folded constant that depends on the batch size (e.g. a Reshape target computed from
    Shape) would change with it: then a one-image plan cannot serve a batch."""
    x, y = a[name], b[name]
    return x.shape == y.shape and (x is y or bool((x == y).all()))


def _batch_led(a: object, b: object) -> bool:
    """A Reshape target computed from the input's shape that differs between batch 1 and 2 only
    in its leading entry, the batch (torch exports a dynamic batch this way: ShuffleNet's
    channel shuffle): each image reshaped with the batch-1 target is the batch's reshape."""
    x, y = np.asarray(a), np.asarray(b)
    return (x.ndim == 1 and x.shape == y.shape and x.size > 0 and (int(x[0]), int(y[0])) == (1, 2)
            and bool((x[1:] == y[1:]).all()))


def interleave_lanes(graph: Graph, images: dict[str, tuple[int, ...]], batch: int,
                     opts: PlannerOptions, timed: bool = True, vector_floats: int = 1) -> int:
    """Images per batch-interleaved group for ``batch`` images (1: run images one by one).

    The largest power of two <= min(batch, max_lanes) whose group keeps the largest 4-D
    activation within ``lanes_budget_bytes`` when timing will check that the group beats image
    by image (``timed``) and the group fills whole vectors (``vector_floats`` images a
    position: only then do the interleaved kernels run, conv_csr_strided and generated code,
    which is what can make a large group win); else also within
    ``untimed_lanes_budget_bytes``.
    """
    spec = specialize(graph, _with_batch(graph, images, 1))
    activations = [spec.shapes.get(o) for node in spec.graph.nodes for o in node.outputs]
    largest = max((math.prod(s) for s in activations if s is not None and len(s) == 4),
                  default=0)
    large = _lanes_within(largest * 4, batch, opts.max_lanes, opts.lanes_budget_bytes)
    if timed and large % vector_floats == 0:
        return large
    small = _lanes_within(largest * 4, batch, opts.max_lanes, opts.untimed_lanes_budget_bytes)
    return min(large, small)


def _lanes_within(image_bytes: int, batch: int, max_lanes: int, budget: int) -> int:
    lanes = 1
    while lanes * 2 <= min(batch, max_lanes) and lanes * 2 * image_bytes <= budget:
        lanes *= 2
    return lanes


@dataclass(frozen=True)
class BatchCut:
    """A batch split at one tensor: each image runs ``head`` (the model up to ``tensor``) on its
    own, then groups of ``lanes`` images run ``tail`` (the rest, reading only ``tensor``)
    batch-interleaved."""

    tensor: str
    lanes: int
    head: Graph
    tail: Graph


def interleave_cut(graph: Graph, images: dict[str, tuple[int, ...]], batch: int,
                   opts: PlannerOptions, vector_floats: int) -> BatchCut | None:
    """The earliest cut of the node order after which groups of ``lanes`` images fit
    ``opts.cut_lanes_budget_bytes`` (the cut tensor and every 4-D activation after it), where
    one 4-D float tensor is all that later nodes read of earlier ones; None when there is none.

    For models whose early large planes make a whole-model group too big or too slow
    (MobileNetV2 at 224 px: 112x112x96 activations) while their later, small planes are where
    interleaving pays: every weight loaded once per group, short planes filling the vectors.
    ``lanes`` (:func:`cut_lanes`) must fill whole vectors.
    """
    lanes = cut_lanes(batch, opts)
    if lanes < 2 or lanes % max(vector_floats, 1):
        return None
    try:
        spec = specialize(graph, _with_batch(graph, images, 1))
    except EngineError:
        return None
    budget = opts.cut_lanes_budget_bytes // lanes
    tail_bytes = _suffix_activation_bytes(graph.nodes, spec.shapes)
    folded = _constant_outputs(graph)
    for index, tensor in _single_tensor_cuts(graph, folded):
        shape = spec.shapes.get(tensor)
        if (shape is not None and len(shape) == 4
                and max(tail_bytes[index + 1], 4 * math.prod(shape)) <= budget
                and spec.dtypes.get(tensor) == np.float32
                and any(n.op == "Conv" for n in graph.nodes[:index + 1])
                and not _parts_fused_conv(graph, index, tensor)):
            return _split_at(graph, index, TensorInfo(tensor, np.dtype(np.float32),
                                                      (None, *shape[1:])), lanes, folded)
    return None


_CONTROL_FLOW = ("If", "Loop", "Scan")


def cut_lanes(batch: int, opts: PlannerOptions) -> int:
    """Images per group of a split batch: the largest power of two <= min(batch, max_lanes)."""
    return _lanes_within(0, batch, opts.max_lanes, 0)


def _single_tensor_cuts(graph: Graph, folded: set[str]) -> list[tuple[int, str]]:
    """(i, t) for each i where t is the one tensor computed by nodes[:i + 1] (or a graph input)
    that nodes[i + 1:] read, tensors computed from constants alone (``folded``) aside, and no
    graph output was computed yet; none in graphs with control flow, whose bodies read outer
    tensors without naming them as inputs."""
    nodes = graph.nodes
    if any(node.op in _CONTROL_FLOW for node in nodes):
        return []
    last_read: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            if name and name not in folded:
                last_read[name] = i
    for name in graph.output_names:
        last_read[name] = len(nodes)
    live = {t.name for t in graph.inputs if t.name in last_read}
    outputs = set(graph.output_names)
    cuts = []
    for i, node in enumerate(nodes[:-1]):
        live = {t for t in live if last_read[t] > i}
        live |= {o for o in node.outputs if last_read.get(o, -1) > i and o not in folded}
        if len(live) == 1 and not live & outputs:
            cuts.append((i, next(iter(live))))
        if live & outputs:
            break
    return cuts


def _constant_outputs(graph: Graph) -> set[str]:
    """Tensors computed from constants alone (exporters copy biases through Identity nodes),
    which the specialized graph folds: either part of a split may compute them."""
    folded = set(graph.constants)
    for node in graph.nodes:
        inputs = [i for i in node.inputs if i]
        if inputs and all(i in folded for i in inputs):
            folded.update(o for o in node.outputs if o)
    return folded - set(graph.constants)


def _parts_fused_conv(graph: Graph, index: int, tensor: str) -> bool:
    """True when the cut would separate a Conv from a node the passes could fuse into it: one
    whose only activation input is its output (an activation, a scale, a BatchNormalization),
    which would then run alone. (An Add of it and a tail tensor fuses into the other's Conv.)"""
    def unary_reader(node: Node) -> bool:
        activations = [i for i in node.inputs if i and i not in graph.constants]
        return node.op != "Conv" and activations == [tensor]

    return graph.nodes[index].op == "Conv" and any(
        unary_reader(node) for node in graph.nodes[index + 1:])


def _suffix_activation_bytes(nodes: list[Node], shapes: dict) -> list[float]:
    """[i]: the largest 4-D activation (bytes of one image) that nodes[i:] compute; inf when
    a shape is unknown."""
    result = [0.0] * (len(nodes) + 1)
    for i in range(len(nodes) - 1, -1, -1):
        own = 0.0
        for name in nodes[i].outputs:
            shape = shapes.get(name) if name else ()
            if shape is None:
                own = math.inf
            elif len(shape) == 4:
                own = max(own, 4.0 * math.prod(shape))
        result[i] = max(own, result[i + 1])
    return result


def _split_at(graph: Graph, index: int, cut: TensorInfo, lanes: int, folded: set[str]
              ) -> BatchCut:
    """The two graphs of a cut after nodes[index]; the tail first computes the constant-only
    tensors (``folded``) it reads that the head's part of the order computed."""
    head_nodes, tail_nodes = graph.nodes[:index + 1], graph.nodes[index + 1:]
    needed = {i for node in tail_nodes for i in node.inputs if i in folded}
    shared: list[Node] = []
    for node in reversed(head_nodes):
        if any(o in needed for o in node.outputs):
            shared.insert(0, node)
            needed.update(i for i in node.inputs if i)
    common = dict(opset=graph.opset, opsets=graph.opsets, ir_version=graph.ir_version)
    head = Graph(head_nodes, graph.constants, graph.inputs, [cut], **common)
    tail = Graph(shared + tail_nodes, graph.constants, [cut], graph.outputs, **common)
    return BatchCut(cut.name, lanes, head, tail)
