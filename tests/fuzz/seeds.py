"""Seed models of the fuzz harness, built in code (no files, no torch).

Each seed is a small valid model ONNX Runtime runs, covering what the engine does natively and
what it hands to ONNX Runtime: a pruned CNN (Conv, BatchNormalization, Relu, Clip, residual Add,
pooling, Gemm, Softmax), a depthwise block, a two-input multi-output graph, shape plumbing
(Shape, Gather, Unsqueeze, Concat, Reshape), Resize / ConvTranspose / Sigmoid / Mul / HardSwish /
ReduceMean / LayerNormalization, a model with ``sparse_initializer``s (linear and per-dim COO
indices), one with external data, and one with operators the engine lacks (ONNX Runtime
segments between native ones). Weights are ~70% zeros so ``backend="auto"`` stays native.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["Seed", "SEEDS", "seed_by_name", "build_seeds", "EXTERNAL_FILE"]

EXTERNAL_FILE = "weights.bin"


@dataclass
class Seed:
    """A model, the external-data files beside it (name -> bytes), and the concrete shapes its
    inputs are fed with (dynamic dims resolved)."""

    name: str
    model: onnx.ModelProto
    feed_shapes: dict[str, tuple[int, ...]]
    files: dict[str, bytes] = field(default_factory=dict)


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], density: float = 0.3,
            scale: float = 0.5) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32) * scale
    w[rng.random(shape) >= density] = 0.0
    return w


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray],
           opset: int = 13, name: str = "seed") -> onnx.ModelProto:
    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="featherdeploy-fuzz")
    model.ir_version = 8
    return _typed_outputs(model)


def _typed_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Outputs declared with the shapes ONNX infers (the checker wants a shape on each)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.output)}
    for out in model.graph.output:
        if out.name in types and types[out.name].tensor_type.HasField("shape"):
            out.type.CopyFrom(types[out.name])
    return model


def _x(name: str = "x", shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape or ["N", 3, 8, 8])


def _y(name: str = "y", shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _bn(rng: np.random.Generator, prefix: str, c: int) -> dict[str, np.ndarray]:
    return {f"{prefix}.g": (rng.random(c) + 0.5).astype(np.float32),
            f"{prefix}.b": (rng.standard_normal(c) * 0.1).astype(np.float32),
            f"{prefix}.m": (rng.standard_normal(c) * 0.1).astype(np.float32),
            f"{prefix}.v": (rng.random(c) + 0.5).astype(np.float32)}


def cnn(rng: np.random.Generator) -> Seed:
    """Conv-BN-Relu, strided conv + Clip(0, 6), residual Add, MaxPool, AveragePool, 1x1 conv,
    GlobalAveragePool, Flatten, Gemm, Softmax."""
    inits = {"c1.w": _sparse(rng, (8, 3, 3, 3)), **_bn(rng, "bn1", 8),
             "c2.w": _sparse(rng, (8, 8, 3, 3)), "c2.b": _sparse(rng, (8,), 0.8),
             "c3.w": _sparse(rng, (8, 8, 3, 3)),
             "c4.w": _sparse(rng, (16, 8, 1, 1)), "c4.b": _sparse(rng, (16,), 0.8),
             "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
             "fc.w": _sparse(rng, (10, 16)), "fc.b": _sparse(rng, (10,), 0.9)}
    nodes = [
        helper.make_node("Conv", ["x", "c1.w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.g", "bn1.b", "bn1.m", "bn1.v"],
                         ["b1"], name="bn1", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="clip2"),
        helper.make_node("Conv", ["r2", "c3.w"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c3", "r1"], ["a3"], name="add3"),
        helper.make_node("Relu", ["a3"], ["r3"], name="relu3"),
        helper.make_node("MaxPool", ["r3"], ["p3"], name="pool3", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["p3", "c4.w", "c4.b"], ["c4"], name="conv4"),
        helper.make_node("AveragePool", ["c4"], ["p4"], name="avg4", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1], count_include_pad=0),
        helper.make_node("GlobalAveragePool", ["p4"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
    ]
    return Seed("cnn", _model(nodes, [_x()], [_y()], inits), {"x": (2, 3, 8, 8)})


def depthwise(rng: np.random.Generator) -> Seed:
    """MobileNet-style: stride-2 stem, depthwise 3x3 + ReLU6 (opset-13 Clip), pointwise,
    LeakyRelu, GlobalMaxPool; static batch 1."""
    inits = {"stem.w": _sparse(rng, (8, 3, 3, 3)), "stem.b": _sparse(rng, (8,), 0.8),
             "dw.w": _sparse(rng, (8, 1, 3, 3), 0.5), "dw.b": _sparse(rng, (8,), 0.8),
             "pw.w": _sparse(rng, (12, 8, 1, 1)), "six": np.array(6.0, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], name="stem",
                         strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s"], ["sr"], name="stem_relu"),
        helper.make_node("Conv", ["sr", "dw.w", "dw.b"], ["d"], name="dw", group=8,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["d", "", "six"], ["dr"], name="relu6"),
        helper.make_node("Conv", ["dr", "pw.w"], ["p"], name="pw"),
        helper.make_node("LeakyRelu", ["p"], ["pr"], name="leaky", alpha=0.1),
        helper.make_node("GlobalMaxPool", ["pr"], ["y"], name="gmp"),
    ]
    return Seed("depthwise", _model(nodes, [_x(shape=[1, 3, 12, 12])], [_y()], inits),
                {"x": (1, 3, 12, 12)})


def multi_output(rng: np.random.Generator) -> Seed:
    """Two inputs (an image and a per-channel scale), three outputs, one of them an
    intermediate tensor other nodes also read."""
    inits = {"c1.w": _sparse(rng, (6, 3, 3, 3)), "c1.b": _sparse(rng, (6,), 0.8),
             "h1.w": _sparse(rng, (4, 6, 1, 1)), "h2.w": _sparse(rng, (2, 6, 3, 3))}
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["feat"], name="trunk",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["feat", "s"], ["scaled"], name="scale"),
        helper.make_node("Relu", ["scaled"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "h1.w"], ["h1"], name="head1"),
        helper.make_node("GlobalMaxPool", ["h1"], ["h1p"], name="head1_pool"),
        helper.make_node("Flatten", ["h1p"], ["cls"], name="head1_flat"),
        helper.make_node("Conv", ["r", "h2.w"], ["h2"], name="head2", pads=[0, 0, 0, 0]),
        helper.make_node("Sigmoid", ["h2"], ["box"], name="head2_sigmoid"),
    ]
    inputs = [_x(shape=["N", 3, 8, 8]),
              helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 6, 1, 1])]
    outputs = [_y("cls"), _y("box"), _y("feat")]
    return Seed("multi_output", _model(nodes, inputs, outputs, inits),
                {"x": (2, 3, 8, 8), "s": (1, 6, 1, 1)})


def shape_plumbing(rng: np.random.Generator) -> Seed:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (an exporter's flatten), then MatMul."""
    inits = {"c.w": _sparse(rng, (4, 4, 3, 3)), "axis0": np.array(0, np.int64),
             "minus1": np.array([-1], np.int64), "ax": np.array([0], np.int64),
             "fc.w": _sparse(rng, (4 * 6 * 6, 5)), "fc.b": _sparse(rng, (5,), 0.8)}
    nodes = [
        helper.make_node("Conv", ["x", "c.w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "axis0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "ax"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "fc.w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "fc.b"], ["y"], name="bias"),
    ]
    model = _model(nodes, [_x(shape=["N", 4, 6, 6])], [_y(shape=["N", 5])], inits)
    return Seed("shape_plumbing", model, {"x": (2, 4, 6, 6)})


def decoder(rng: np.random.Generator) -> Seed:
    """Resize (nearest, x2), ConvTranspose (stride 2), Sigmoid, Mul, HardSwish, ReduceMean,
    LayerNormalization (opset 17)."""
    inits = {"c.w": _sparse(rng, (4, 3, 3, 3)), "c.b": _sparse(rng, (4,), 0.8),
             "scales": np.array([1, 1, 2, 2], np.float32),
             "t.w": _sparse(rng, (4, 3, 2, 2), 0.5), "t.b": _sparse(rng, (3,), 0.8),
             "axes": np.array([1], np.int64),
             "ln.g": (rng.random(16) + 0.5).astype(np.float32),
             "ln.b": (rng.standard_normal(16) * 0.1).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "c.w", "c.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "", "scales"], ["up"], name="resize", mode="nearest"),
        helper.make_node("Sigmoid", ["up"], ["gate"], name="sigmoid"),
        helper.make_node("Mul", ["up", "gate"], ["m"], name="mul"),
        helper.make_node("HardSwish", ["m"], ["hs"], name="hardswish"),
        helper.make_node("ConvTranspose", ["c", "t.w", "t.b"], ["t"], name="deconv",
                         strides=[2, 2]),
        helper.make_node("ReduceMean", ["hs", "axes"], ["rm"], name="reduce_mean",
                         keepdims=1),
        helper.make_node("Mul", ["rm", "t"], ["fused"], name="combine"),
        helper.make_node("LayerNormalization", ["fused", "ln.g", "ln.b"], ["y"], name="ln",
                         axis=-1, epsilon=1e-5),
    ]
    return Seed("decoder", _model(nodes, [_x(shape=["N", 3, 8, 8])], [_y()], inits, opset=18),
                {"x": (1, 3, 8, 8)})


def sparse_init(rng: np.random.Generator) -> Seed:
    """Conv weights as COO sparse_initializers: linear indices and per-dim [nnz, rank]."""
    w1 = _sparse(rng, (6, 3, 3, 3))
    w2 = _sparse(rng, (6, 6, 1, 1), 0.5)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap"),
    ]
    model = _model(nodes, [_x()], [_y(shape=["N", 6, 1, 1])], {"b2": _sparse(rng, (6,), 0.8)})
    linear = np.flatnonzero(w1).astype(np.int64)
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(w1.reshape(-1)[linear], "w1"),
        numpy_helper.from_array(linear, "w1.idx"), list(w1.shape)))
    coords = np.argwhere(w2).astype(np.int64)
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(
        numpy_helper.from_array(w2[tuple(coords.T)], "w2"),
        numpy_helper.from_array(coords, "w2.idx"), list(w2.shape)))
    return Seed("sparse_init", model, {"x": (2, 3, 8, 8)})


def external(rng: np.random.Generator) -> Seed:
    """Both conv weights in one external data file beside the model."""
    w1, w2 = _sparse(rng, (8, 3, 3, 3)), _sparse(rng, (4, 8, 3, 3))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"], name="gap"),
    ]
    model = _model(nodes, [_x()], [_y()], {"w1": w1, "w2": w2})
    blob = b""
    for tensor in model.graph.initializer:
        raw = numpy_helper.to_array(tensor).tobytes()
        tensor.ClearField("float_data")
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", EXTERNAL_FILE), ("offset", str(len(blob))),
                           ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        blob += raw + b"\0" * (-len(raw) % 64)
    return Seed("external", model, {"x": (1, 3, 8, 8)}, {EXTERNAL_FILE: blob})


def fallback(rng: np.random.Generator) -> Seed:
    """Operators the engine runs on ONNX Runtime (Selu, Greater/Where) between native convs:
    the partition's segments and the coverage report."""
    inits = {"c1.w": _sparse(rng, (6, 3, 3, 3)), "c2.w": _sparse(rng, (6, 6, 3, 3)),
             "c2.b": _sparse(rng, (6,), 0.8), "zero": np.array(0.0, np.float32),
             "half": np.array(0.5, np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "c1.w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Selu", ["c1"], ["s"], name="selu"),
        helper.make_node("Conv", ["s", "c2.w", "c2.b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Greater", ["c2", "zero"], ["pos"], name="greater"),
        helper.make_node("Mul", ["c2", "half"], ["neg"], name="half"),
        helper.make_node("Where", ["pos", "c2", "neg"], ["w"], name="where"),
        helper.make_node("AveragePool", ["w"], ["y"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
    ]
    return Seed("fallback", _model(nodes, [_x()], [_y()], inits), {"x": (1, 3, 8, 8)})


SEED_BUILDERS: dict[str, Callable[[np.random.Generator], Seed]] = {
    f.__name__: f for f in (cnn, depthwise, multi_output, shape_plumbing, decoder, sparse_init,
                            external, fallback)}
SEEDS = tuple(SEED_BUILDERS)


def build_seeds(seed: int = 0) -> list[Seed]:
    """Every seed model (weights drawn from ``seed``)."""
    return [seed_by_name(name, seed) for name in SEEDS]


def seed_by_name(name: str, seed: int = 0) -> Seed:
    rng = np.random.default_rng([seed, SEEDS.index(name)])
    return SEED_BUILDERS[name](rng)
