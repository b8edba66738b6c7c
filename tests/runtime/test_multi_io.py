"""Graph interfaces against ONNX Runtime: several inputs and outputs, batch dims declared
symbolic or -1, other symbolic dims, NHWC inputs, outputs that are graph inputs passed through,
constants folded at plan time, duplicated, or read again inside the graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from featherdeploy.runtime import Engine, EngineOptions
from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import (
    check_model,
    engine_outputs,
    make_model,
    ort_outputs,
    tensor,
)

NATIVE, ORT = "native", "onnxruntime"


def _conv(name: str, x: str, y: str, cin: int, cout: int, inits: dict, seed: int = 0,
          kernel: int = 3):
    rng = np.random.default_rng(seed)
    shape = (cout, cin, kernel, kernel)
    inits[f"{name}_w"] = (rng.standard_normal(shape) * (rng.random(shape) < 0.5)).astype(
        np.float32)
    inits[f"{name}_b"] = rng.standard_normal(cout).astype(np.float32)
    return helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [y], name=name,
                            pads=[kernel // 2] * 4)


def _arr(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.asarray(random_input(shape, seed=seed))


def test_two_batched_inputs_three_outputs(tmp_path):
    """Image and mask, both with the batch dim: batches run image by image (and interleaved),
    outputs come back in graph order."""
    inits: dict = {}
    nodes = [_conv("conv_img", "img", "a", 3, 5, inits, 1),
             _conv("conv_mask", "mask", "b", 1, 5, inits, 2),
             helper.make_node("Mul", ["a", "b"], ["m"], name="mul"),
             helper.make_node("Relu", ["m"], ["feat"], name="relu"),
             helper.make_node("GlobalAveragePool", ["feat"], ["pooled"], name="gap"),
             helper.make_node("Sigmoid", ["b"], ["gate"], name="gate")]
    model = make_model(nodes, {"img": ["N", 3, 6, 7], "mask": ["N", 1, 6, 7]},
                       ["pooled", "feat", "gate"], inits)
    feeds = [{"img": _arr((b, 3, 6, 7), b), "mask": _arr((b, 1, 6, 7), b + 10)}
             for b in (1, 3, 16)]
    for layout in ("planar", "interleaved"):
        check_model(tmp_path, model, feeds, {"mul": NATIVE, "gap": NATIVE}, threads=(1, 2),
                    batch_layout=layout)


def test_input_without_batch_dim(tmp_path):
    """A per-channel gain vector next to a batched image: one program for the whole batch."""
    inits: dict = {"axes": np.array([1, 2], np.int64)}
    nodes = [_conv("conv", "x", "c", 3, 4, inits),
             helper.make_node("Unsqueeze", ["gain", "axes"], ["g"], name="unsqueeze"),
             helper.make_node("Mul", ["c", "g"], ["y"], name="mul")]
    model = make_model(nodes, {"gain": [4], "x": ["N", 3, 5, 5]}, ["y"], inits)
    feeds = [{"x": _arr((b, 3, 5, 5), b), "gain": _arr((4,), 7)} for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"conv": NATIVE, "unsqueeze": NATIVE, "mul": NATIVE},
                threads=(1, 2))


def test_batch_dim_value_minus_one(tmp_path):
    """Some exporters write -1 for the dynamic batch dim."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 4, inits), helper.make_node("Relu", ["c"], ["y"],
                                                                    name="relu")]
    model = make_model(nodes, {"x": [-1, 3, 5, 6]}, ["y"], inits)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    feeds = [_arr((b, 3, 5, 6), b) for b in (1, 2, 5)]
    engine = check_model(tmp_path, model, feeds, {"conv": NATIVE}, threads=(1, 2))
    assert engine.input_shape == (None, 3, 5, 6)


def test_symbolic_spatial_dims(tmp_path):
    """N, H and W symbolic: one plan per input shape."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 4, inits),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[2, 2],
                              strides=[2, 2], ceil_mode=1),
             helper.make_node("Resize", ["p", "", "scales"], ["y"], name="up", mode="nearest"),
             helper.make_node("ReduceMean", ["c"], ["m"], name="mean", axes=[2, 3],
                              keepdims=0)]
    inits["scales"] = np.array([1, 1, 2, 2], np.float32)
    model = make_model(nodes, {"x": ["N", 3, "H", "W"]}, ["y", "m"], inits)
    feeds = [_arr(s, k) for k, s in enumerate([(1, 3, 6, 7), (2, 3, 9, 4), (1, 3, 6, 7),
                                               (3, 3, 5, 11)])]
    check_model(tmp_path, model, feeds, {"conv": NATIVE, "pool": NATIVE, "up": NATIVE},
                threads=(1, 2))


@pytest.mark.parametrize("channels", [3, 5])
def test_nhwc_input_and_output(tmp_path, channels):
    """TensorFlow-style: Transpose right after the input and back before the output."""
    inits: dict = {}
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="to_nchw", perm=[0, 3, 1, 2]),
             _conv("conv", "t", "c", channels, 4, inits),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Transpose", ["r"], ["y"], name="to_nhwc", perm=[0, 2, 3, 1])]
    model = make_model(nodes, {"x": ["N", 6, 7, channels]}, ["y"], inits)
    feeds = [_arr((b, 6, 7, channels), b) for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"to_nchw": NATIVE, "conv": NATIVE, "to_nhwc": NATIVE},
                threads=(1, 2))


def test_input_passed_through_and_read_again(tmp_path):
    """Outputs: the graph input itself, an intermediate that later nodes read, the final."""
    inits: dict = {}
    nodes = [_conv("conv1", "x", "c1", 3, 3, inits, 1),
             _conv("conv2", "c1", "c2", 3, 3, inits, 2),
             helper.make_node("Add", ["c2", "x"], ["y"], name="add")]
    model = make_model(nodes, {"x": ["N", 3, 5, 6]}, ["x", "c1", "y"], inits)
    feeds = [_arr((b, 3, 5, 6), b) for b in (1, 3)]
    engine = check_model(tmp_path, model, feeds, {"conv1": NATIVE, "conv2": NATIVE},
                         threads=(1, 2))
    x_out, _, _ = engine.run(feeds[1])
    np.testing.assert_array_equal(x_out, feeds[1])


def test_constant_and_shape_outputs(tmp_path):
    """Outputs folded at plan time: an initializer, Shape of the input (int64), a
    ConstantOfShape of it, next to a computed output."""
    inits = {"k": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)}
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["ones"], name="fill",
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("Mul", ["k", "k"], ["k2"], name="square")]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y", "s", "ones", "k", "k2"], inits)
    feeds = [_arr((b, 3, 4), b) for b in (1, 3)]
    engine = check_model(tmp_path, model, feeds, {"relu": NATIVE, "shape": "folded",
                                                  "fill": "folded", "square": "folded"},
                         threads=(1, 2))
    outs = engine.run(feeds[1])
    assert outs[1].dtype == np.int64 and list(outs[1]) == [3, 3, 4]
    outs[3][0, 0] = 42.0  # a returned constant is the caller's copy
    np.testing.assert_array_equal(engine.run(feeds[1])[3], inits["k"])


def test_duplicate_outputs(tmp_path):
    """One tensor listed twice among the outputs, and asked for twice by name."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 4, inits), helper.make_node("Relu", ["c"], ["y"],
                                                                    name="relu")]
    model = make_model(nodes, {"x": ["N", 3, 5, 5]}, ["y", "c", "y"], inits)
    feeds = [_arr((b, 3, 5, 5), b) for b in (1, 3)]
    engine = check_model(tmp_path, model, feeds, {"conv": NATIVE, "relu": NATIVE},
                         threads=(1, 2))
    y, c, y_again = engine.run(feeds[1])
    np.testing.assert_array_equal(y, y_again)
    picked = engine.run(feeds[1], output_names=["c", "y", "c"])
    np.testing.assert_array_equal(picked[0], c)
    np.testing.assert_array_equal(picked[2], c)


def test_outputs_of_every_dtype_across_segments(tmp_path):
    """float32, int64 and bool outputs from native, ONNX Runtime and folded nodes."""
    inits = {"t": np.float32(0.0)}
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Greater", ["x", "t"], ["mask"], name="greater"),
             helper.make_node("ArgMax", ["x"], ["idx"], name="argmax", axis=-1),
             helper.make_node("Size", ["x"], ["n"], name="size")]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y", "mask", "idx", "n"], inits)
    feeds = [_arr((b, 3, 4), b) for b in (1, 3)]
    engine = check_model(tmp_path, model, feeds, {"relu": NATIVE, "greater": ORT,
                                                  "argmax": ORT, "size": "folded"})
    outs = engine.run(feeds[0])
    assert [o.dtype for o in outs] == [np.float32, np.bool_, np.int64, np.int64]


def test_many_inputs_in_any_order(tmp_path):
    """Inputs declared in an order other than they are used; several feed one Concat."""
    nodes = [helper.make_node("Concat", ["c", "a", "b"], ["cat"], name="concat", axis=1),
             helper.make_node("Mul", ["cat", "s"], ["y"], name="scale")]
    model = make_model(nodes, {"s": [1], "a": ["N", 2, 3, 3], "b": ["N", 1, 3, 3],
                               "c": ["N", 4, 3, 3]}, ["y"])
    feeds = [{"a": _arr((n, 2, 3, 3), 1), "b": _arr((n, 1, 3, 3), 2), "c": _arr((n, 4, 3, 3), 3),
              "s": _arr((1,), 4)} for n in (1, 3)]
    check_model(tmp_path, model, feeds, {"concat": NATIVE, "scale": NATIVE}, threads=(1, 2))


def test_run_argument_forms(tmp_path):
    """One input: an array or a dict; several outputs: a list, or output_names."""
    inits: dict = {}
    nodes = [_conv("conv", "x", "c", 3, 4, inits), helper.make_node("Relu", ["c"], ["y"],
                                                                    name="relu")]
    model = make_model(nodes, {"x": ["N", 3, 5, 5]}, ["y", "c"], inits)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    x = _arr((2, 3, 5, 5))
    expected = ort_outputs(path, {"x": x})
    engine = Engine(path, options=EngineOptions(backend="native", threads=1, tuning="off"))
    by_array = engine.run(x)
    by_dict = engine_outputs(engine, {"x": x})
    for got in (by_array, by_dict):
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(engine.run(x, output_names=["c"])[0], by_array[1])


def test_scalar_input_declared_rank_one(tmp_path):
    """A (1,)-shaped side input broadcast into the image."""
    nodes = [helper.make_node("Mul", ["x", "gain"], ["y"], name="mul")]
    model = make_model(nodes, [tensor("x", ["N", 3, 4]), tensor("gain", [1])], ["y"])
    feeds = [{"x": _arr((b, 3, 4), b), "gain": np.array([2.5], np.float32)} for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"mul": NATIVE})


def test_scalar_input_and_output_keep_rank_zero(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    model = make_model(nodes, [tensor("x", [])], ["y"])
    y = check_model(tmp_path, model, {"x": np.array(-1.5, np.float32)}).run(
        np.array(2.0, np.float32))
    assert y.shape == () and float(y) == 2.0


@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_batch_concatenated_with_itself_keeps_image_order(tmp_path, layout):
    """Concat(x, x, axis=0) (test-time augmentation) mixes images: never run image by image."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Concat", ["r", "r"], ["y"], name="concat", axis=0)]
    model = make_model(nodes, [tensor("x", ["N", 3, 5, 7])], ["y"])
    x = np.broadcast_to(np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1), (3, 3, 5, 7)).copy()
    engine = check_model(tmp_path, model, [x, _arr((16, 3, 5, 7))], batch_layout=layout)
    np.testing.assert_array_equal(engine.run(x)[:, 0, 0, 0], [0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("op", ["reverse", "layernorm_axis0"])
def test_ops_mixing_images_with_unchanged_shapes_run_as_a_whole_batch(tmp_path, op):
    """Shapes alone (leading dim = batch) do not show that these mix images."""
    inits: dict = {}
    if op == "reverse":
        inits.update(starts=np.array([-1], np.int64), ends=np.array([-(2**62)], np.int64),
                     axes=np.array([0], np.int64), steps=np.array([-1], np.int64))
        node = helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"],
                                name="reverse")
        opset = 13
    else:
        inits.update(scale=np.ones((2, 3, 4), np.float32), bias=np.zeros((2, 3, 4), np.float32))
        node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"],
                                name="norm", axis=0)
        opset = 17
    model = make_model([node], [tensor("x", ["N", 2, 3, 4])], ["y"], inits, opset)
    check_model(tmp_path, model, [_arr((b, 2, 3, 4), b) for b in (1, 3, 16)],
                batch_layout="interleaved")


def test_dynamic_batch_model_invalid_at_batch_one_loads(tmp_path):
    """Reshape(x, [2, -1]) is valid only for even batches: loading must not assume batch 1."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    model = make_model(nodes, [tensor("x", ["N", 3, 5, 7])], ["y"],
                       {"shape": np.array([2, -1], np.int64)})
    check_model(tmp_path, model, [_arr((2, 3, 5, 7)), _arr((4, 3, 5, 7), 1)])


@pytest.mark.parametrize("lead,separable", [("batch", True), ("twice_batch", False)])
def test_reshape_target_computed_from_the_batch(tmp_path, lead, separable):
    """Reshape to [N, 2, 3, 5, 7] -> Transpose -> Reshape to [N, 6, 5, 7] with N taken from the
    input's Shape (a channel shuffle as torch exports a dynamic batch): the folded targets
    differ between batch sizes only in their leading entry, so a one-image plan serves any
    batch. A target whose leading entry is 2N folds images together: the whole batch runs at
    once. ORT's outputs either way."""
    n_times = "n" if lead == "batch" else "n2"
    inits = {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
             "two": np.array([2], np.int64), "g5": np.array([2, 3, 5, 7], np.int64),
             "g4": np.array([6, 5, 7], np.int64), "g4_half": np.array([3, 5, 7], np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n0"], axis=0),
             helper.make_node("Unsqueeze", ["n0", "axes"], ["n"]),
             helper.make_node("Mul", ["n", "two"], ["n2"]),
             helper.make_node("Concat", [n_times, "g5" if lead == "batch" else "g4_half"],
                              ["t5"], axis=0),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "t5"], ["r5"], name="to_groups")]
    if lead == "batch":
        nodes += [helper.make_node("Transpose", ["r5"], ["t"], perm=[0, 2, 1, 3, 4]),
                  helper.make_node("Concat", ["n", "g4"], ["t4"], axis=0),
                  helper.make_node("Reshape", ["t", "t4"], ["y"], name="back")]
    else:
        nodes.append(helper.make_node("Relu", ["r5"], ["y"]))
    y = tensor("y", ["N", 6, 5, 7] if lead == "batch" else ["M", 3, 5, 7])
    model = make_model(nodes, [tensor("x", ["N", 6, 5, 7])], [y], inits)
    engine = check_model(tmp_path, model, [_arr((b, 6, 5, 7), b) for b in (1, 3, 16)],
                         batch_layout="planar")
    assert engine.tune([3])[3].startswith("planar, image by image") == separable
