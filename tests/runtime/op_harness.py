"""Shared checks of the op tests (test_ops_shapes.py, test_ops_math.py, test_ops_spatial.py,
test_partition.py, test_multi_io.py): a graph built by hand runs on the engine and on ONNX
Runtime, outputs compared, and ``Engine.describe()`` says where each node ran.

Two paths per op:

- native: the op reads a graph input (an activation), so it runs natively unless its op module
  leaves that configuration to ONNX Runtime (:func:`check_model` with ``devices``);
- folded: every input of the op is a constant, so the engine evaluates it with the op's NumPy
  reference at plan time; the result is added to a graph input of the result's shape
  (:func:`check_folded`, which also checks that the node is gone from the plan).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from featherdeploy.runtime import Engine, EngineOptions
from tests.runtime.onnx_cases import assert_close, random_input

__all__ = ["make_model", "check_model", "check_folded", "check_op", "declared_shape",
           "ort_outputs", "engine_outputs", "devices", "tensor", "FLOAT", "INT64", "BOOL"]

FLOAT, INT64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def tensor(name: str, shape: Sequence | None, elem: int = FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def make_model(nodes: list, inputs: Mapping[str, Sequence | None] | list,
               outputs: Sequence[str] | list, initializers: Mapping[str, np.ndarray] | None = None,
               opset: int = 13) -> onnx.ModelProto:
    """IR-8 model: float32 graph inputs (name -> shape, str dims symbolic; or ValueInfoProtos),
    outputs by name (types left to inference; or ValueInfoProtos), initializers by name."""
    ins = [v if isinstance(v, onnx.ValueInfoProto) else tensor(v, inputs[v])  # type: ignore[index]
           for v in inputs]
    # (an output whose rank shape inference cannot tell must be given typed)
    outs = [o if isinstance(o, onnx.ValueInfoProto) else
            helper.make_empty_tensor_value_info(o) for o in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(nodes, "test", ins, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Output types as ONNX's shape inference gives them (the checker wants them).
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    known = {v.name: v.type for v in (*inferred.graph.value_info, *inferred.graph.input)}
    known.update((t.name, helper.make_tensor_type_proto(t.data_type, list(t.dims)))
                 for t in inferred.graph.initializer)
    known.update((v.name, v.type) for v in inferred.graph.output if v.type.WhichOneof("value"))
    for out in model.graph.output:  # (graph inputs, initializers and repeats: by name)
        if not out.type.WhichOneof("value") and out.name in known:
            out.type.CopyFrom(known[out.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(model: onnx.ModelProto, x: np.ndarray | Mapping[str, np.ndarray]
           ) -> dict[str, np.ndarray]:
    if isinstance(x, Mapping):
        return dict(x)
    return {model.graph.input[0].name: x}


def ort_outputs(path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(feeds))


def engine_outputs(engine: Engine, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    out = engine.run(dict(feeds))
    return out if isinstance(out, list) else [out]


def compare(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray],
            atol: float | None = None) -> None:
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        got = np.asarray(got)
        if want.dtype == np.float32:
            if atol is None:
                assert_close(got, want)
            else:
                assert_close(got, want, atol=atol)
        else:
            assert got.dtype == want.dtype, (got.dtype, want.dtype)
            np.testing.assert_array_equal(got, want)


def devices(engine: Engine, feeds: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Node name -> device of the plan for these input shapes (folded nodes are absent)."""
    shapes = {k: v.shape for k, v in feeds.items()}
    report = engine.describe(input_shapes=shapes)
    return {n.node: n.device for n in report.nodes}


def options(threads: int = 1, **kwargs: object) -> EngineOptions:
    """Native backend; no timing (tuning off) unless asked: the fixed rules choose."""
    kwargs.setdefault("tuning", "off")
    return EngineOptions(backend="native", threads=threads, **kwargs)  # type: ignore[arg-type]


def check_model(tmp_path: Path, model: onnx.ModelProto,
                x: np.ndarray | Mapping[str, np.ndarray] | list,
                devices_expected: Mapping[str, str] | None = None,
                threads: Sequence[int] = (1,), atol: float | None = None,
                **engine_options: object) -> Engine:
    """The engine (native backend) equals ONNX Runtime on every output, for each thread count
    and each of the inputs (one array, a dict name -> array, or a list of those: several
    batches run by one engine); the nodes named in ``devices_expected`` ran on that device
    ("native", "onnxruntime", or "folded": absent from the plan) for every input. Returns the
    last engine."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    cases = [_feeds(model, v) for v in (x if isinstance(x, list) else [x])]
    expected = [ort_outputs(path, feeds) for feeds in cases]
    engine = None
    for t in threads:
        with warnings.catch_warnings():  # nodes on ONNX Runtime are what some tests expect
            warnings.filterwarnings("ignore", ".*run on ONNX Runtime", RuntimeWarning)
            engine = Engine(path, options=options(t, **engine_options))
            for feeds, want in zip(cases, expected, strict=True):
                compare(engine_outputs(engine, feeds), want, atol)
    assert engine is not None
    for feeds in cases if devices_expected else ():
        where = devices(engine, feeds)
        for name, device in devices_expected.items():  # type: ignore[union-attr]
            if device == "folded":
                assert name not in where, (name, where)
            else:
                assert where.get(name) == device, (name, where)
    return engine


def check_folded(tmp_path: Path, op: str, inputs: Sequence[np.ndarray | None],
                 outputs: int = 1, opset: int = 13, device: str = "folded",
                 **attrs: object) -> None:
    """``op`` on constant inputs (None: an omitted optional input) is folded at plan time: its
    outputs, as graph outputs (shape and dtype exact) and each (cast to float32) added to a
    graph input of its shape, equal ONNX Runtime's, and the node is gone from the plan (or,
    with ``device``, ran there instead)."""
    inits = {f"k{i}": np.asarray(v) for i, v in enumerate(inputs) if v is not None}
    names = [f"k{i}" if v is not None else "" for i, v in enumerate(inputs)]
    outs = [f"c{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, name="folded_op", **attrs)
    # The op's results (by ONNX Runtime) give the shapes of the graph inputs.
    probe = make_model([node], [], outs, inits, opset)
    path = tmp_path / "probe.onnx"
    onnx.save(probe, str(path))
    values = ort_outputs(path, {})
    nodes, graph_inputs, graph_outputs = [node], {}, []
    for i, value in enumerate(values):
        source = outs[i]
        if value.dtype != np.float32:
            nodes.append(helper.make_node("Cast", [outs[i]], [f"f{i}"], name=f"cast{i}",
                                          to=TensorProto.FLOAT))
            source = f"f{i}"
        # (a rank-0 graph input comes back with shape (1,): engine._checked, see the report)
        graph_inputs[f"x{i}"] = value.shape or (1,)
        nodes.append(helper.make_node("Add", [f"x{i}", source], [f"y{i}"], name=f"add{i}"))
        graph_outputs += [f"y{i}", outs[i]]
    model = make_model(nodes, graph_inputs, graph_outputs, inits, opset)
    feeds = {name: np.asarray(random_input(tuple(shape), seed=i))
             for i, (name, shape) in enumerate(graph_inputs.items())}
    check_model(tmp_path, model, feeds, {"folded_op": device})


def declared_shape(shapes: Sequence[Sequence[int]]) -> list:
    """A declared input shape covering every shape of ``shapes``: dims that differ symbolic."""
    return [dims[0] if len(set(dims)) == 1 else ("N" if i == 0 else f"d{i}")
            for i, dims in enumerate(zip(*shapes, strict=True))]


def check_op(tmp_path: Path, op: str, inputs: Sequence[str | np.ndarray | None],
             x_shapes: Sequence[Sequence[int]], opset: int = 13, device: str | None = "native",
             outputs: int = 1, threads: Sequence[int] = (1, 2), atol: float | None = None,
             engine_options: Mapping[str, object] | None = None, positive: bool = False,
             **attrs: object) -> Engine:
    """One ``op`` node ("op") whose inputs are the graph input "x" (where ``inputs`` says "x"),
    constants (arrays) or omitted (None); runs every shape of ``x_shapes`` (declared with the
    dims that differ symbolic) on the engine and ONNX Runtime, and checks the node's device.
    ``positive``: inputs |x| + 0.5 (for Sqrt, Log, Pow); ``device`` None: not checked."""
    inits, names = {}, []
    for i, value in enumerate(inputs):
        if isinstance(value, str):
            names.append(value)
        elif value is None:
            names.append("")
        else:
            inits[f"k{i}"] = np.asarray(value)
            names.append(f"k{i}")
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, name="op", **attrs)
    model = make_model([node], {"x": declared_shape(x_shapes)}, outs, inits, opset)
    feeds = [np.asarray(random_input(tuple(s), seed=k)) for k, s in enumerate(x_shapes)]
    if positive:
        feeds = [np.abs(f) + np.float32(0.5) for f in feeds]
    return check_model(tmp_path, model, feeds, {"op": device} if device else None, threads, atol,
                       **(engine_options or {}))
