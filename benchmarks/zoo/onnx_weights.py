"""Find, prune and measure the weight tensors of an ONNX graph (onnx + numpy only).

A weight is a constant of rank >= 2 feeding a Conv, ConvTranspose or ConvInteger weight input, or
either operand of Gemm, MatMul or MatMulInteger. Constants are initializers or the ``value`` of a
``Constant`` node (PaddlePaddle's exporter stores conv weights that way). For the quantized
ConvInteger / MatMulInteger, "zero" means the weight's zero point, so the dequantized weight is
exactly 0; their magnitude is |w - zero_point|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["WeightRef", "find_weights", "prune_onnx_weights", "weight_zero_fractions"]

# op type -> indices of the inputs that may hold a weight
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,), "ConvTranspose": (1,), "ConvInteger": (1,),
    "Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1)}
# op type -> index of the zero-point input of operand i (quantized ops only)
ZERO_POINT_INPUT: dict[str, dict[int, int]] = {
    "ConvInteger": {1: 3}, "MatMulInteger": {0: 2, 1: 3}}


@dataclass
class WeightRef:
    """A weight constant: its tensor proto (to read and overwrite in place), the consuming op,
    and the zero point that stands for 0 (0 for float weights)."""

    name: str
    tensor: onnx.TensorProto
    op_type: str
    zero_point: int = 0


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Value name -> tensor proto, for initializers and Constant nodes with a ``value``."""
    tensors = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    tensors[node.output[0]] = attr.t
    return tensors


def _zero_point(node: onnx.NodeProto, index: int, tensors: dict[str, onnx.TensorProto]) -> int:
    """The scalar zero point of operand ``index`` of a quantized op (0 when absent)."""
    zp_index = ZERO_POINT_INPUT.get(node.op_type, {}).get(index)
    if zp_index is None or zp_index >= len(node.input) or node.input[zp_index] not in tensors:
        return 0
    values = numpy_helper.to_array(tensors[node.input[zp_index]]).reshape(-1)
    if values.size != 1:
        raise ValueError(f"per-channel zero point on {node.name or node.op_type} is not supported")
    return int(values[0])


def find_weights(graph: onnx.GraphProto) -> list[WeightRef]:
    """Every weight constant of the main graph, once each (a shared tensor is listed once)."""
    tensors = _constant_tensors(graph)
    found: dict[str, WeightRef] = {}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for index in WEIGHT_INPUTS.get(node.op_type, ()):
            name = node.input[index] if index < len(node.input) else ""
            tensor = tensors.get(name)
            if tensor is None or len(tensor.dims) < 2 or name in found:
                continue
            found[name] = WeightRef(name, tensor, node.op_type,
                                    _zero_point(node, index, tensors))
    return list(found.values())


def _pruned_array(array: np.ndarray, zero_point: int, sparsity: float) -> np.ndarray:
    """A copy of ``array`` with its ``ceil(sparsity * size)`` smallest-|w - zp| entries set to
    ``zero_point`` (stable order, so exactly that many)."""
    flat = array.reshape(-1).copy()
    count = min(flat.size, math.ceil(sparsity * flat.size - 1e-9))
    magnitude = np.abs(flat.astype(np.float64) - zero_point)
    flat[np.argsort(magnitude, kind="stable")[:count]] = zero_point
    return flat.reshape(array.shape)


def prune_onnx_weights(model: onnx.ModelProto, sparsity: float) -> int:
    """Magnitude-prune every weight of ``model``'s main graph in place, per tensor. Returns the
    number of tensors pruned."""
    weights = find_weights(model.graph)
    for ref in weights:
        array = numpy_helper.to_array(ref.tensor)
        pruned = numpy_helper.from_array(_pruned_array(array, ref.zero_point, sparsity),
                                         ref.tensor.name)
        ref.tensor.CopyFrom(pruned)
    return len(weights)


def weight_zero_fractions(model: onnx.ModelProto) -> dict[str, float]:
    """Weight name -> fraction of entries equal to its zero point (0 for float weights)."""
    result: dict[str, float] = {}
    for ref in find_weights(model.graph):
        array = numpy_helper.to_array(ref.tensor)
        result[ref.name] = float(np.count_nonzero(array == ref.zero_point)) / array.size
    return result
