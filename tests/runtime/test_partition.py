"""Partition (runtime/partition.py): operators the engine does not run natively (Sin, Cos, LSTM,
ArgMax, NonZero, options a native op refuses) at the graph input, in the middle and at the
output, in parallel branches, with several outputs and int64 tensors between segments: results
equal ONNX Runtime, describe() shows each node's device, the segments are as few as the graph
allows, and strict mode lists every node that cannot run natively."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from featherdeploy.runtime import Engine, EngineOptions, UnsupportedOpError
from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import check_model, make_model, tensor

NATIVE, ORT = "native", "onnxruntime"


def _conv(name: str, x: str, y: str, cin: int, cout: int, inits: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((cout, cin, 3, 3)) * (rng.random((cout, cin, 3, 3)) < 0.5)
    inits[f"{name}_w"] = w.astype(np.float32)
    inits[f"{name}_b"] = rng.standard_normal(cout).astype(np.float32)
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name,
                            pads=[1, 1, 1, 1])


def _node(op: str, inputs: list[str], output: str, name: str, **attrs: object):
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def _feeds(shape: tuple[int, ...], batches=(1, 3)) -> list[np.ndarray]:
    return [np.asarray(random_input((b, *shape[1:]), seed=b)) for b in batches]


def _kinds(engine: Engine) -> list[str]:
    """The kinds of the segments of the program run last."""
    return [s.kind for s in engine._last.partition.segments]


def _check(tmp_path, nodes, inits, outputs, devices, segments, x_shape=("N", 3, 6, 7),
           opset: int = 13) -> Engine:
    model = make_model(nodes, {"x": list(x_shape)}, outputs, inits, opset)
    engine = check_model(tmp_path, model, _feeds((1, *x_shape[1:])), devices, threads=(1, 2))
    engine.run(_feeds((1, *x_shape[1:]), batches=(1,))[0])
    assert _kinds(engine) == segments, _kinds(engine)
    return engine


# ----------------------------------------------------------------------------- positions


@pytest.mark.parametrize("op", ["Sin", "Cos"])
def test_unsupported_at_the_input(tmp_path, op):
    inits: dict = {}
    nodes = [_node(op, ["x"], "s", "unsupported"), _conv("conv", "s", "c", 3, 5, inits),
             _node("Relu", ["c"], "y", "relu")]
    _check(tmp_path, nodes, inits, ["y"], {"unsupported": ORT, "conv": NATIVE}, [ORT, NATIVE])


@pytest.mark.parametrize("op", ["Sin", "Cos"])
def test_unsupported_in_the_middle(tmp_path, op):
    inits: dict = {}
    nodes = [_conv("conv1", "x", "c1", 3, 5, inits, seed=1),
             _node("Relu", ["c1"], "r", "relu"),
             _node(op, ["r"], "s", "unsupported"),
             _conv("conv2", "s", "c2", 5, 4, inits, seed=2),
             _node("Add", ["c2", "k"], "y", "bias")]
    inits["k"] = np.float32(0.25)
    _check(tmp_path, nodes, inits, ["y"],
           {"conv1": NATIVE, "unsupported": ORT, "conv2": NATIVE, "bias": NATIVE},
           [NATIVE, ORT, NATIVE])


@pytest.mark.parametrize("op", ["Sin", "Cos"])
def test_unsupported_at_the_output(tmp_path, op):
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 5, inits), _node("Relu", ["c"], "r", "relu"),
             _node(op, ["r"], "y", "unsupported")]
    _check(tmp_path, nodes, inits, ["y"], {"conv": NATIVE, "unsupported": ORT}, [NATIVE, ORT])


def test_unsupported_everywhere(tmp_path):
    inits: dict = {}
    nodes = [_node("Sin", ["x"], "s", "sin_in"), _conv("conv1", "s", "c1", 3, 5, inits, 1),
             _node("Cos", ["c1"], "m", "cos_mid"), _conv("conv2", "m", "c2", 5, 5, inits, 2),
             _node("Sin", ["c2"], "y", "sin_out")]
    _check(tmp_path, nodes, inits, ["y"], {"sin_in": ORT, "conv1": NATIVE, "cos_mid": ORT,
                                           "conv2": NATIVE, "sin_out": ORT},
           [ORT, NATIVE, ORT, NATIVE, ORT])


def test_parallel_unsupported_branches_share_a_segment(tmp_path):
    """Sin and Cos on two branches of one conv output: one ONNX Runtime segment between two
    native ones (the order keeps each kind together)."""
    inits: dict = {}
    nodes = [_conv("conv1", "x", "c1", 3, 4, inits, 1),
             _node("Sin", ["c1"], "a", "sin"),
             _node("Relu", ["c1"], "r", "relu"),
             _node("Cos", ["c1"], "b", "cos"),
             _node("Add", ["a", "b"], "s", "add"),
             _node("Mul", ["s", "r"], "m", "mul"),
             _conv("conv2", "m", "y", 4, 3, inits, 2)]
    _check(tmp_path, nodes, inits, ["y"], {"sin": ORT, "cos": ORT, "relu": NATIVE,
                                           "add": NATIVE, "conv2": NATIVE},
           [NATIVE, ORT, NATIVE])


def test_independent_chains_group_by_kind(tmp_path):
    """Two chains conv -> unsupported -> conv with two outputs: three segments, not five."""
    inits: dict = {}
    nodes = [_conv("conv1", "x", "a", 3, 4, inits, 1), _node("Sin", ["a"], "b", "sin"),
             _conv("conv2", "b", "y1", 4, 4, inits, 2),
             _conv("conv3", "x", "c", 3, 4, inits, 3), _node("Cos", ["c"], "d", "cos"),
             _conv("conv4", "d", "y2", 4, 4, inits, 4)]
    _check(tmp_path, nodes, inits, ["y1", "y2"], {"sin": ORT, "cos": ORT, "conv4": NATIVE},
           [NATIVE, ORT, NATIVE])


# ----------------------------------------------------------------------------- outputs, int64


def test_outputs_from_both_kinds_of_segment(tmp_path):
    inits: dict = {}
    nodes = [_conv("conv1", "x", "c1", 3, 5, inits, 1), _node("Sin", ["c1"], "s", "sin"),
             _conv("conv2", "s", "c2", 5, 4, inits, 2), _node("Relu", ["c2"], "y", "relu")]
    engine = _check(tmp_path, nodes, inits, ["s", "y", "c1"],
                    {"conv1": NATIVE, "sin": ORT, "conv2": NATIVE}, [NATIVE, ORT, NATIVE])
    x = _feeds((1, 3, 6, 7))[1]
    s, y, c1 = engine.run(x)
    only = engine.run(x, output_names=["c1", "s"])
    np.testing.assert_array_equal(only[0], c1)
    np.testing.assert_array_equal(only[1], s)
    assert y.shape == (3, 4, 6, 7)


def test_int64_tensors_between_segments(tmp_path):
    """ArgMax (int64, on ONNX Runtime) as a graph output and, cast back to float, scaling a
    native tensor; a Cast between types runs on ONNX Runtime too."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 5, inits),
             _node("ArgMax", ["c"], "idx", "argmax", axis=1, keepdims=1),
             _node("Cast", ["idx"], "idx_f", "to_float", to=TensorProto.FLOAT),
             _node("Mul", ["c", "idx_f"], "y", "scale")]
    engine = _check(tmp_path, nodes, inits, ["y", "idx"],
                    {"conv": NATIVE, "argmax": ORT, "to_float": ORT, "scale": NATIVE},
                    [NATIVE, ORT, NATIVE])
    _, idx = engine.run(_feeds((1, 3, 6, 7))[0])
    assert idx.dtype == np.int64 and idx.shape == (1, 1, 6, 7)


def test_shapes_known_only_at_run_time(tmp_path):
    """NonZero's output shape depends on the data: everything that reads it, down to the Add
    that joins the conv output, runs on ONNX Runtime."""
    inits: dict = {"zero": np.float32(0.0)}
    nodes = [_conv("conv", "x", "c", 3, 4, inits),
             _node("Greater", ["x", "zero"], "positive", "greater"),
             _node("NonZero", ["positive"], "where", "nonzero"),
             _node("Shape", ["where"], "count_shape", "shape"),
             _node("Cast", ["count_shape"], "counts", "cast", to=TensorProto.FLOAT),
             _node("ReduceMax", ["counts"], "count", "reduce", keepdims=0),
             _node("Add", ["c", "count"], "y", "add")]
    _check(tmp_path, nodes, inits, ["y"],
           {"conv": NATIVE, "nonzero": ORT, "shape": ORT, "add": ORT}, [NATIVE, ORT])


def test_gather_with_topk_indices(tmp_path):
    """int64 indices computed at run time (TopK) select channels: Gather on ONNX Runtime."""
    inits: dict = {"k": np.array([2], np.int64)}
    nodes = [_conv("conv", "x", "c", 3, 6, inits),
             _node("ReduceMean", ["c"], "m", "mean", axes=[0, 2, 3], keepdims=0),
             helper.make_node("TopK", ["m", "k"], ["vals", "idx"], name="topk"),
             _node("Gather", ["c", "idx"], "g", "gather", axis=1),
             _node("Relu", ["g"], "y", "relu")]
    _check(tmp_path, nodes, inits, ["y", "vals"],
           {"conv": NATIVE, "mean": NATIVE, "topk": ORT, "gather": ORT, "relu": NATIVE},
           [NATIVE, ORT, NATIVE])


def test_lstm_between_native_ops(tmp_path):
    """A recurrent layer (ONNX shape inference gives its output shapes) between native ops."""
    seq, batch, feat, hidden = 5, 2, 6, 4
    rng = np.random.default_rng(3)
    inits = {"w": rng.standard_normal((1, 4 * hidden, feat)).astype(np.float32) * 0.5,
             "r": rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.5,
             "b": rng.standard_normal((1, 8 * hidden)).astype(np.float32) * 0.1,
             "scale": np.float32(0.5), "head": rng.standard_normal((hidden, 3)).astype(
                 np.float32), "axes": np.array([1], np.int64)}
    nodes = [_node("Mul", ["x", "scale"], "xs", "scale_in"),
             helper.make_node("LSTM", ["xs", "w", "r", "b"], ["seq_out", "h_last"],
                              name="lstm", hidden_size=hidden),
             _node("Squeeze", ["seq_out", "axes"], "h", "squeeze"),
             _node("MatMul", ["h", "head"], "y", "head")]
    model = make_model(nodes, {"x": [seq, batch, feat]}, ["y", "h_last"], inits)
    x = np.asarray(random_input((seq, batch, feat)))
    engine = check_model(tmp_path, model, x, {"scale_in": NATIVE, "lstm": ORT,
                                              "squeeze": NATIVE, "head": NATIVE})
    assert _kinds(engine) == [NATIVE, ORT, NATIVE]


def test_native_op_with_refused_options(tmp_path):
    """Known ops whose options the native kernels do not cover (reflect Pad, dilated
    ConvTranspose, a 1-D MaxPool) run on ONNX Runtime in place."""
    inits: dict = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                   "up_w": np.random.default_rng(2).standard_normal((5, 2, 3, 3)).astype(
                       np.float32), "flat": np.array([0, 5, -1], np.int64)}
    nodes = [_conv("conv", "x", "c", 3, 5, inits),
             _node("Pad", ["c", "pads"], "p", "reflect", mode="reflect"),
             _node("ConvTranspose", ["p", "up_w"], "u", "deconv", dilations=[2, 2]),
             _node("Reshape", ["c", "flat"], "f", "flatten"),
             _node("MaxPool", ["f"], "y1", "pool1d", kernel_shape=[3], strides=[2])]
    _check(tmp_path, nodes, inits, ["u", "y1"],
           {"conv": NATIVE, "reflect": ORT, "deconv": ORT, "flatten": NATIVE,
            "pool1d": ORT}, [NATIVE, ORT])


# ----------------------------------------------------------------------------- strict mode


def test_strict_mode_lists_every_unsupported_node(tmp_path):
    inits: dict = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}
    nodes = [_node("Sin", ["x"], "s", "sin_in"), _conv("conv1", "s", "c1", 3, 5, inits, 1),
             _node("Cos", ["c1"], "m", "cos_mid"),
             _node("Pad", ["m", "pads"], "p", "pad_reflect", mode="reflect"),
             _conv("conv2", "p", "c2", 5, 5, inits, 2),
             _node("Sin", ["c2"], "y", "sin_out")]
    model = make_model(nodes, {"x": [1, 3, 6, 7]}, ["y"], inits)
    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError) as info:
        Engine(path, options=EngineOptions(backend="native", fallback=False))
    message = str(info.value)
    assert message.startswith("4 node(s) cannot run natively"), message
    assert re.search(r'Sin: "sin_in" \(operator unknown to the engine\), "sin_out"', message)
    assert 'Cos: "cos_mid"' in message
    assert re.search(r'Pad: "pad_reflect" \(only constant padding', message)
    assert "conv1" not in message and "conv2" not in message
    # with fallback the same model runs
    x = np.asarray(random_input((1, 3, 6, 7)))
    check_model(tmp_path, model, x, {"sin_in": ORT, "conv1": NATIVE, "pad_reflect": ORT})


def test_strict_mode_accepts_a_fully_native_model(tmp_path):
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 5, inits), _node("Relu", ["c"], "y", "relu")]
    model = make_model(nodes, {"x": ["N", 3, 6, 7]}, ["y"], inits)
    check_model(tmp_path, model, _feeds((1, 3, 6, 7)), {"conv": NATIVE}, fallback=False)


def test_strict_mode_names_runtime_shapes_and_types(tmp_path):
    """Nodes left to ONNX Runtime for their shapes or types are listed with that reason."""
    inits: dict = {"zero": np.float32(0.0)}
    nodes = [_node("Greater", ["x", "zero"], "positive", "greater"),
             _node("NonZero", ["positive"], "where", "nonzero"),
             _node("Cast", ["where"], "wf", "cast", to=TensorProto.FLOAT),
             _node("ReduceSum", ["wf"], "y", "sum", keepdims=0)]
    model = make_model(nodes, [tensor("x", [1, 3, 4])], ["y"], inits)
    path = tmp_path / "m.onnx"
    import onnx

    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError) as info:
        Engine(path, options=EngineOptions(backend="native", fallback=False))
    message = str(info.value)
    for name in ("greater", "nonzero", "cast", "sum"):
        assert f'"{name}"' in message, message
    assert "shapes known only at run time" in message


# ------------------------------------------------------------- shape inputs from data


def _int_input(name: str, length: int):
    return helper.make_tensor_value_info(name, TensorProto.INT64, [length])


def test_slice_starts_from_data_run_on_ort(tmp_path):
    """A known op whose shape-deciding input is computed at run time loads (no 'must be a
    constant' error) and runs on ONNX Runtime; what does not depend on it stays native."""
    inits = {"ends": np.array([3], np.int64), "axes": np.array([1], np.int64)}
    nodes = [_node("Relu", ["x"], "r", "relu"),
             _node("Slice", ["r", "starts", "ends", "axes"], "y", "slice")]
    model = make_model(nodes, [tensor("x", ["N", 5, 4, 4]), _int_input("starts", 1)], ["y"],
                       inits)
    feeds = [{"x": np.asarray(random_input((b, 5, 4, 4), seed=b)),
              "starts": np.array([s], np.int64)} for b, s in ((1, 0), (2, 1))]
    check_model(tmp_path, model, feeds, {"relu": NATIVE, "slice": ORT}, threads=(1, 2))


def test_pad_value_from_data_runs_on_ort(tmp_path):
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}
    nodes = [_node("Pad", ["x", "pads", "value"], "y", "pad")]
    model = make_model(nodes, [tensor("x", ["N", 2, 3, 3]), tensor("value", [])], ["y"], inits)
    feeds = {"x": np.asarray(random_input((1, 2, 3, 3), seed=1)),
             "value": np.array(2.5, np.float32)}
    check_model(tmp_path, model, feeds, {"pad": ORT})


def test_strict_mode_lists_a_data_dependent_node(tmp_path):
    inits = {"ends": np.array([3], np.int64), "axes": np.array([1], np.int64)}
    nodes = [_node("Slice", ["x", "starts", "ends", "axes"], "y", "slice")]
    model = make_model(nodes, [tensor("x", [1, 5, 4, 4]), _int_input("starts", 1)], ["y"], inits)
    path = tmp_path / "m.onnx"
    import onnx
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError, match="slice"):
        Engine(path, options=EngineOptions(backend="native", fallback=False, tuning="off"))
