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
from collections.abc import Callable, Hashable, Iterator, Mapping

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from featherdeploy.compile.errors import CompileError
from featherdeploy.runtime.formats import ConvAttributes

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
    """Weight FQN -> name of the Conv/Gemm initializer in ``proto`` that holds that weight.

    The exporter renames weights it rewrites (``"onnx::Conv_203"``) and shares equal tensors, so
    matching goes in passes: same name and values; same values and shape; and, for weights the
    exporter itself rescaled (BN folded by the exporter when ``torch.fx`` could not trace), the
    same shape and zero pattern. Ties are resolved in graph order. Raises :class:`CompileError`
    when a weight has no counterpart.
    """
    initializers = {init.name: init for init in proto.graph.initializer}
    arrays = {name: numpy_helper.to_array(initializers[name])
              for name in weight_initializers(proto)}  # graph order
    mapping = {fqn: fqn for fqn, weight in weights.items()
               if fqn in arrays and arrays[fqn].shape == weight.shape
               and np.array_equal(arrays[fqn], weight)}
    for key in (_content_key, _zero_pattern_key):
        pending = [fqn for fqn in weights if fqn not in mapping]
        if pending:
            mapping.update(_match_by_key(pending, weights, arrays, key))
    missing = [fqn for fqn in weights if fqn not in mapping]
    if missing:
        raise CompileError(f"weights {missing} have no matching Conv/Gemm initializer in the "
                           f"exported ONNX graph")
    return {fqn: mapping[fqn] for fqn in weights}


def _match_by_key(pending: list[str], weights: Mapping[str, np.ndarray],
                  arrays: Mapping[str, np.ndarray], key: Callable[[np.ndarray], Hashable]
                  ) -> dict[str, str]:
    table: dict[Hashable, list[str]] = {}
    for name, array in arrays.items():  # graph order
        table.setdefault(key(array), []).append(name)
    matched = {}
    for fqn in pending:
        names = table.get(key(weights[fqn]))
        if names:  # several candidates: take them in order; the last one may be shared
            matched[fqn] = names.pop(0) if len(names) > 1 else names[0]
    return matched


def _content_key(array: np.ndarray) -> Hashable:
    normalized = np.where(array == 0, np.float32(0), array).astype(np.float32)  # -0.0 == 0.0
    return tuple(array.shape), normalized.tobytes()


def _zero_pattern_key(array: np.ndarray) -> Hashable:
    return tuple(array.shape), np.packbits(array != 0).tobytes()


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
