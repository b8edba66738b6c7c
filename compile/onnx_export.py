"""Dense ONNX export: torch model -> checked ``onnx.ModelProto`` with a dynamic batch axis.

Graph interface (documented contract for the runtime and users):
    input  ``"input"``  float32 ``[batch, C, H, W]`` (normalised images, NCHW)
    output ``"logits"`` float32 ``[batch, num_classes]``

Uses the legacy TorchScript exporter (``dynamo=False``), which keeps exact zeros in weights.
Afterwards, Identity nodes that merely alias an initializer (the exporter deduplicates equal
tensors, e.g. identical biases, and inserts them) are removed by pointing consumers at the
initializer, so every Conv/Gemm reads its weight straight from an initializer.
Reference: timm ``utils/onnx.py`` (export + ``check_model(full_check=True)``); ONNX IR spec.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import sys
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from compile.errors import CompileError
from runtime.formats import ConvAttributes

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "remove_initializer_identities",
           "weight_initializers", "map_weights_to_initializers", "conv_attributes", "save_onnx"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
WEIGHT_OPS = ("Conv", "Gemm")


def export_onnx(model: nn.Module, input_shape: tuple[int, int, int], *, opset: int = 13,
                ir_version: int = 8) -> onnx.ModelProto:
    """Export ``model`` (eval mode) for ``(C, H, W)`` inputs; raises :class:`CompileError`."""
    example = torch.zeros((1, *input_shape), dtype=torch.float32)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _silenced_stdout_fd():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model.eval(), (example,), buffer, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as exc:  # the exporter raises many types for unsupported layers
        raise CompileError(f"the ONNX exporter cannot handle this model: "
                           f"{type(exc).__name__}: {_first_line(exc)}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    remove_initializer_identities(proto)
    proto.ir_version = ir_version
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # checker raises ValidationError / InferenceError
        raise CompileError(f"exported ONNX model fails onnx.checker: {_first_line(exc)}") from exc
    return proto


@contextlib.contextmanager
def _silenced_stdout_fd() -> Iterator[None]:
    """Point file descriptor 1 at /dev/null: on failure the exporter's C++ side prints its whole
    IR graph to stdout, which would bury our one-line error."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio may still buffer exporter output
        os.dup2(saved, 1)
        os.close(saved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def remove_initializer_identities(proto: onnx.ModelProto) -> int:
    """Drop ``Identity(initializer)`` nodes, rewiring their consumers; returns how many."""
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    alias = {node.output[0]: node.input[0] for node in graph.node
             if node.op_type == "Identity" and node.input[0] in initializers
             and node.output[0] not in outputs}
    if not alias:
        return 0
    kept = [node for node in graph.node
            if not (node.op_type == "Identity" and node.output and node.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(alias)


def weight_initializers(proto: onnx.ModelProto) -> dict[str, tuple[str, onnx.NodeProto]]:
    """Initializer name -> (op type, node) for every Conv/Gemm weight input (input 1)."""
    initializers = {init.name for init in proto.graph.initializer}
    return {node.input[1]: (node.op_type, node) for node in proto.graph.node
            if node.op_type in WEIGHT_OPS and len(node.input) > 1
            and node.input[1] in initializers}


def map_weights_to_initializers(proto: onnx.ModelProto,
                                weights: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Weight FQN -> name of the ONNX initializer holding the same tensor.

    The exporter renames weights it rewrites (``"onnx::Conv_203"``), so names are matched first
    and otherwise tensors are matched by exact bytes and shape, in graph order. Raises
    :class:`CompileError` when a weight has no counterpart.
    """
    candidates = weight_initializers(proto)
    arrays = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer
              if init.name in candidates}
    by_content: dict[tuple[tuple[int, ...], bytes], list[str]] = {}
    for name, array in arrays.items():
        by_content.setdefault(_content_key(array), []).append(name)
    mapping: dict[str, str] = {}
    for fqn, weight in weights.items():
        if fqn in arrays and _content_key(arrays[fqn]) == _content_key(weight):
            mapping[fqn] = fqn
            continue
        names = by_content.get(_content_key(weight))
        if not names:
            raise CompileError(f"weight {fqn} {tuple(weight.shape)} has no matching Conv/Gemm "
                               f"initializer in the exported ONNX graph")
        mapping[fqn] = names.pop(0) if len(names) > 1 else names[0]
    return mapping


def _content_key(array: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    normalized = np.where(array == 0, np.float32(0), array).astype(np.float32)  # -0.0 == 0.0
    return tuple(array.shape), normalized.tobytes()


def conv_attributes(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> ConvAttributes:
    """The Conv node's attributes with ONNX defaults filled in (explicit pads only)."""
    attrs = {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if auto_pad not in (b"NOTSET", "NOTSET"):
        raise CompileError(f"Conv node {node.name}: auto_pad={auto_pad!r} is not supported")
    kernel = tuple(attrs.get("kernel_shape", weight_shape[2:]))
    return ConvAttributes(kernel_shape=kernel, strides=tuple(attrs.get("strides", (1, 1))),
                          pads=tuple(attrs.get("pads", (0, 0, 0, 0))),
                          dilations=tuple(attrs.get("dilations", (1, 1))),
                          groups=int(attrs.get("group", 1)))


def save_onnx(proto: onnx.ModelProto, path: str) -> int:
    """Serialize ``proto`` to ``path`` (inside the compile's temp dir); returns the byte size."""
    blob = proto.SerializeToString()
    with open(path, "wb") as handle:
        handle.write(blob)
    return len(blob)
