"""A native ConvTranspose becomes stride x stride stride-1 Conv nodes (one per output phase, on
the sparse conv kernels) and a PhaseInterleave that places their outputs
(``runtime/ops/conv_transpose.py``).

Phase (r_y, r_x) computes outputs q * stride + r from kernel taps whose input offsets are
whole: conv weight W'[m, c, a, b] = w[c, m, ky_a, kx_b] (grouped: per group), pads from the
offsets (``ops.geometry.transpose_phases``), the same bias. The new tensors' shapes are added to
``shapes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.conv_transpose import INTERNAL_DOMAIN, PHASE_INTERLEAVE
from featherdeploy.runtime.ops.geometry import conv_transpose_geometry, transpose_phases
from featherdeploy.runtime.options import PlannerOptions

__all__ = ["expand_conv_transpose"]


def expand_conv_transpose(graph: Graph, shapes: dict, native: Callable[[Node], bool],
                          opts: PlannerOptions) -> Graph:
    constants = dict(graph.constants)
    nodes: list[Node] = []
    for node in graph.nodes:
        if node.op != "ConvTranspose" or not native(node):
            nodes.append(node)
            continue
        nodes += _phase_nodes(node, constants, shapes)
    return replace(graph, nodes=nodes, constants=constants)


def _phase_nodes(node: Node, constants: dict[str, np.ndarray], shapes: dict) -> list[Node]:
    x_shape = shapes[node.inputs[0]]
    w = np.asarray(constants[node.inputs[1]], np.float32)
    geo = conv_transpose_geometry(node, x_shape, w.shape)
    phases = transpose_phases(geo, (x_shape[2], x_shape[3]))
    assert phases is not None  # the op's native check
    out = node.outputs[0]
    g = geo.group
    cg, mg = w.shape[0] // g, w.shape[1]
    convs, names, order = [], [], []
    for phase in phases:
        ky, kx = phase.taps
        sub = w[:, :, list(ky)][:, :, :, list(kx)]  # (C, M/g, a, b)
        weight = np.concatenate([sub[gi * cg:(gi + 1) * cg].transpose(1, 0, 2, 3)
                                 for gi in range(g)])  # (M, C/g, a, b)
        tag = f"{out}::phase{phase.r[0]}_{phase.r[1]}"
        constants[f"{tag}_w"] = np.ascontiguousarray(weight)
        inputs = [node.inputs[0], f"{tag}_w"] + ([node.inputs[2]] if node.input(2) else [])
        attrs = {"pads": [*phase.pad_begin, *phase.pad_end], "group": g}
        convs.append(Node("Conv", f"{node.name}/phase{phase.r[0]}_{phase.r[1]}", inputs, [tag],
                          attrs))
        shapes[tag] = (x_shape[0], mg * g, *phase.out_hw)
        shapes[f"{tag}_w"] = weight.shape
        names.append(tag)
        order += list(phase.r)
    interleave = Node(PHASE_INTERLEAVE, node.name, names, [out],
                      {"strides": list(geo.stride), "phases": order,
                       "output_shape": list(shapes[out])}, domain=INTERNAL_DOMAIN)
    return [*convs, interleave]
