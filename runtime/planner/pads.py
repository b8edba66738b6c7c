"""Zero borders of 4-D activations and the stride-phase layouts strided convs read.

The border of a tensor is the largest padding any stride-1 conv reading it needs, unified across
each conv's input, output and residual when they share a spatial size, so the conv epilogue can
store its output stream contiguously straight into the next layer's padded layout.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from featherdeploy.runtime.graph import Graph
from featherdeploy.runtime.ops.fusion import RESIDUAL_KEY
from featherdeploy.runtime.ops.geometry import conv_geometry
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.planner.layout import Buf, round_up, tensor_lanes

__all__ = ["assign_pads", "border_reads", "PhaseLayout", "plan_phase_layouts",
           "reads_padded_copy", "direct_strided"]


def reads_padded_copy(stride: tuple[int, int]) -> bool:
    """True when a conv reads stride-phase copies of its input instead of the input itself."""
    return stride != (1, 1)


def direct_strided(stride: tuple[int, int], weight: np.ndarray, lanes: int,
                   opts: PlannerOptions) -> bool:
    """True when a planar strided conv skips the stride-phase split: it has at most
    ``direct_max_taps`` stored taps per output channel (a 3x3 depthwise conv, or a pruned
    1x1 with few inputs), and splitting the input would move more memory than its few taps
    compute."""
    if lanes > 1 or not reads_padded_copy(stride):
        return False
    return np.count_nonzero(weight) <= opts.direct_max_taps * weight.shape[0]


def _convs(graph: Graph) -> list[Any]:
    return [n for n in graph.nodes if n.op == "Conv" and n.inputs[0] not in graph.constants]


def _conv_reads(graph: Graph, shapes: dict[str, tuple[int, ...]], opts: PlannerOptions,
                interleave: bool) -> Iterator[tuple[Any, Any, int, bool]]:
    """(node, geometry, input lanes, reads its input in place) of every conv; the others read
    stride-phase copies, which the split pads (interleaved planes are read in place)."""
    for node in _convs(graph):
        x = node.inputs[0]
        geo = conv_geometry(node, shapes[x], shapes[node.inputs[1]])
        lanes = tensor_lanes(shapes[x], interleave, opts)
        in_place = not (reads_padded_copy(geo.stride) and lanes == 1 and not direct_strided(
            geo.stride, graph.constants[node.inputs[1]], lanes, opts))
        yield node, geo, lanes, in_place


def border_reads(graph: Graph, shapes: dict[str, tuple[int, ...]], opts: PlannerOptions,
                 interleave: bool = False) -> dict[str, int]:
    """Per 4-D tensor some conv reads in place: the widest padding such a conv needs. Where it
    is > 0 the tensor's border is read as zeros (pads unified with other tensors may give a
    border nothing reads)."""
    need: dict[str, int] = {}
    for node, geo, _, in_place in _conv_reads(graph, shapes, opts, interleave):
        if in_place:
            x = node.inputs[0]
            need[x] = max(need.get(x, 0), *geo.pad_begin, *geo.pad_end)
    return need


def assign_pads(graph: Graph, shapes: dict[str, tuple[int, ...]], opts: PlannerOptions,
                interleave: bool = False) -> dict[str, int]:
    """Border width per 4-D tensor (see the module docstring). With ``interleave`` a plane
    holds every image of the batch, so no plane counts as tiny."""
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    need = border_reads(graph, shapes, opts, interleave)
    for node, _, lanes, in_place in _conv_reads(graph, shapes, opts, interleave):
        x, y = node.inputs[0], node.outputs[0]
        res = node.attrs.get(RESIDUAL_KEY)
        if res:
            union(res, y)
        if (in_place and shapes[x][2:] == shapes[y][2:]
                and math.prod(shapes[x][2:]) * lanes > opts.small_plane):
            union(x, y)
    for x, y in _channel_slices(graph, shapes, opts, interleave):
        union(x, y)  # one layout: the slice can be a view of x's planes (alias_channels)
    group_pad: dict[str, int] = {}
    for name, pad in need.items():
        root = find(name)
        group_pad[root] = max(group_pad.get(root, 0), pad)
    return {name: group_pad.get(find(name), 0) for name, shape in shapes.items()
            if shape is not None and len(shape) == 4}


def _channel_slices(graph: Graph, shapes: dict[str, tuple[int, ...]], opts: PlannerOptions,
                    interleave: bool) -> Iterator[tuple[str, str]]:
    """(input, output) of each Split / Slice whose output differs from its 4-D input in
    channels only, on planes that get borders."""
    for node in graph.nodes:
        if node.op not in ("Split", "Slice") or not node.inputs:
            continue
        x = shapes.get(node.inputs[0])
        if x is None or len(x) != 4:
            continue
        lanes = tensor_lanes(x, interleave, opts)
        if math.prod(x[2:]) * lanes <= opts.small_plane:
            continue
        for y in node.outputs:
            out = shapes.get(y) if y else None
            if out is not None and out[:1] + out[2:] == x[:1] + x[2:]:
                yield node.inputs[0], y


@dataclass
class PhaseLayout:
    """Stride-phase planes of one input tensor, shared by its convs of one stride."""

    pad_top: int
    pad_left: int
    rows: int
    rs: int
    plane: int
    buf: Buf | None = None


def plan_phase_layouts(graph: Graph, shapes: dict[str, tuple[int, ...]], pads: dict[str, int],
                       opts: PlannerOptions, interleave: bool = False
                       ) -> dict[tuple[str, int, int, int], PhaseLayout]:
    """(input, stride_h, stride_w, output lanes) -> one phase layout covering every such conv's
    taps. The row stride also covers each conv's output row stride (so its epilogue stays
    contiguous)."""
    groups: dict[tuple[str, int, int, int], list[tuple[Any, Any]]] = {}
    for node in _convs(graph):
        geo = conv_geometry(node, shapes[node.inputs[0]], shapes[node.inputs[1]])
        if reads_padded_copy(geo.stride):
            lanes = tensor_lanes(shapes[node.outputs[0]], interleave, opts)
            groups.setdefault((node.inputs[0], *geo.stride, lanes), []).append((node, geo))
    layouts = {}
    for key, convs in groups.items():
        _, sh, sw, _ = key
        top = max(g.pad_begin[0] for _, g in convs)
        left = max(g.pad_begin[1] for _, g in convs)
        rows = rs = 0
        for node, g in convs:
            (kh, kw), (dh, dw), (oh, ow) = g.kernel, g.dilation, g.out_hw
            rows = max(rows, oh + ((kh - 1) * dh + top - g.pad_begin[0]) // sh)
            rs = max(rs, ow + ((kw - 1) * dw + left - g.pad_begin[1]) // sw,
                     ow + 2 * pads.get(node.outputs[0], 0))
        layouts[key] = PhaseLayout(top, left, rows, rs, round_up(rows * rs, 4))
    return layouts
