"""Packed weights for the runtime: CSR + BSR encodings of every prunable layer, one file.

The format (and the CSR/BSR encoders) live in ``runtime/formats.py`` so the torch-free runtime
reads exactly what compile writes; this module decides what goes in: the deployed (BN-folded)
weight as stored in ``model.onnx``, its ONNX initializer name, op and conv attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from featherdeploy.compile.errors import CompileError
from featherdeploy.compile.onnx_export import conv_attributes
from featherdeploy.runtime.formats import PackedLayer, PackFormatError, pack_weight, write_pack

__all__ = ["DEFAULT_BLOCK_SHAPES", "LayerSource", "parse_block_shapes", "build_pack_layers",
           "write_weights_pack"]

DEFAULT_BLOCK_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 4), (4, 1), (4, 4))
_BLOCK_RE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")


@dataclass(frozen=True)
class LayerSource:
    """Where one prunable layer lives in the exported graph."""

    fqn: str  # torch weight FQN
    initializer: str  # ONNX initializer name
    node: onnx.NodeProto  # the Conv / Gemm node reading it
    weight: np.ndarray  # the deployed (folded) float32 weight, as in model.onnx


def parse_block_shapes(text: str) -> tuple[tuple[int, int], ...]:
    """``"1x1,1x4,4x1"`` -> ``((1, 1), (1, 4), (4, 1))``; raises :class:`CompileError`."""
    shapes = []
    for item in text.split(","):
        match = _BLOCK_RE.match(item)
        if not match or min(int(match[1]), int(match[2])) < 1:
            raise CompileError(f"bad block shape {item!r}: expected RxC with positive ints, "
                               f"e.g. 1x4 (list: 1x1,1x4,4x1,4x4)")
        shapes.append((int(match[1]), int(match[2])))
    return tuple(dict.fromkeys(shapes))


def build_pack_layers(sources: Iterable[LayerSource], block_shapes: Iterable[tuple[int, int]],
                      conv_layout: str = "OIHW") -> list[PackedLayer]:
    """One :class:`PackedLayer` per source: CSR plus a BSR per non-1x1 block shape.

    ``conv_layout`` is the column order of conv matrices (see ``runtime/formats.py``); Gemm
    weights are always ``OI``.
    """
    shapes = [shape for shape in block_shapes if shape != (1, 1)]
    layers = []
    for src in sources:
        op = src.node.op_type
        if op == "Gemm" and _gemm_transposes_a_or_not_b(src.node):
            raise CompileError(f"{src.fqn}: Gemm without transB=1 is not packable")
        conv = conv_attributes(src.node, src.weight.shape) if op == "Conv" else None
        try:
            layers.append(pack_weight(src.fqn, src.weight, op=op, block_shapes=shapes,
                                      layout=conv_layout if op == "Conv" else "OI",
                                      onnx_initializer=src.initializer, conv=conv))
        except PackFormatError as exc:
            raise CompileError(f"cannot pack {src.fqn}: {exc}") from exc
    return layers


def _gemm_transposes_a_or_not_b(node: onnx.NodeProto) -> bool:
    attrs = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
    return attrs.get("transA", 0) != 0 or attrs.get("transB", 0) != 1


def write_weights_pack(path: str, layers: Iterable[PackedLayer] | Mapping[str, PackedLayer]
                       ) -> int:
    """Write the pack file; returns its size in bytes."""
    try:
        return write_pack(path, layers)
    except PackFormatError as exc:
        raise CompileError(f"cannot write the weights pack: {exc}") from exc
