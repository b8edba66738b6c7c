"""Single-node graphs covering every supported operator option: engine == ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest

from featherdeploy.runtime import Engine
from tests.runtime.onnx_cases import (
    assert_close,
    conv_kernels,
    ort_run,
    random_input,
    save_model,
    single_node_model,
)

pytestmark = pytest.mark.aarch64  # every operator option, also on aarch64 (make test-aarch64)


def _check(tmp_path, model, x, threads=(1, 2)):
    path = save_model(model, tmp_path / "m.onnx")
    expected = ort_run(path, x)
    for t in threads:
        assert_close(Engine(path, threads=t).run(x), expected)


def _weight(shape, density=0.6, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)


CONV_CASES = [
    # (x shape, weight shape, attrs)
    ((2, 4, 9, 11), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 4, 8, 8), (8, 4, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 4, 9, 7), (5, 4, 3, 3), {"pads": [0, 1, 2, 1], "strides": [2, 1]}),
    ((1, 3, 10, 10), (4, 3, 5, 5), {"pads": [2, 2, 2, 2], "dilations": [2, 1]}),
    ((1, 4, 12, 13), (4, 4, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 6, 7, 9), (6, 2, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    ((2, 8, 8, 8), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    ((2, 8, 9, 9), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ((1, 8, 8, 8), (16, 4, 1, 1), {"group": 2}),
    ((1, 4, 9, 9), (6, 4, 1, 1), {"strides": [2, 2]}),
    ((1, 4, 7, 7), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 4, 8, 8), (6, 4, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ((1, 4, 8, 8), (6, 4, 3, 3), {"auto_pad": "VALID"}),
    ((1, 4, 8, 10), (6, 4, 1, 3), {"pads": [0, 1, 0, 1], "strides": [1, 3]}),
    ((1, 3, 5, 5), (2, 3, 5, 5), {}),
]


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: str(c[2]))
def test_conv_options(tmp_path, case, with_bias):
    x_shape, w_shape, attrs = case
    inits = {"w": _weight(w_shape)}
    if with_bias:
        inits["b"] = np.arange(w_shape[0], dtype=np.float32) / 3
    model = single_node_model("Conv", x_shape, initializers=inits, **attrs)
    _check(tmp_path, model, random_input(x_shape))


@pytest.mark.parametrize("density", [0.0, 0.05, 1.0])
def test_conv_density_extremes(tmp_path, density):
    inits = {"w": _weight((8, 8, 3, 3), density), "b": np.ones(8, np.float32)}
    model = single_node_model("Conv", (1, 8, 6, 6), initializers=inits, pads=[1, 1, 1, 1])
    _check(tmp_path, model, random_input((1, 8, 6, 6)))


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [0, 1, 1, 0], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "dilations": [2, 2]},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
])
def test_maxpool_options(tmp_path, attrs):
    model = single_node_model("MaxPool", (2, 3, 9, 10), **attrs)
    _check(tmp_path, model, random_input((2, 3, 9, 10)))


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [1, 2], "pads": [0, 1, 2, 0]},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_LOWER"},
])
def test_avgpool_options(tmp_path, attrs, include_pad):
    model = single_node_model("AveragePool", (1, 3, 9, 10), count_include_pad=include_pad, **attrs)
    _check(tmp_path, model, random_input((1, 3, 9, 10)))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(tmp_path, op):
    _check(tmp_path, single_node_model(op, (2, 5, 7, 3)), random_input((2, 5, 7, 3)))


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (5,), (1, 5), (3, 5), (3, 1)])
def test_gemm_options(tmp_path, trans_a, trans_b, c_shape):
    a_shape = (4, 3) if trans_a else (3, 4)
    b = _weight((5, 4) if trans_b else (4, 5), density=0.7)
    inits = {"b": b}
    if c_shape is not None:
        inits["c"] = random_input(c_shape, seed=3)
    model = single_node_model("Gemm", a_shape, initializers=inits, transA=trans_a,
                              transB=trans_b, alpha=0.7, beta=1.3)
    _check(tmp_path, model, random_input(a_shape))


@pytest.mark.parametrize("a_shape", [(3, 6), (2, 3, 6)])
def test_matmul(tmp_path, a_shape):
    model = single_node_model("MatMul", a_shape, initializers={"b": _weight((6, 4))})
    _check(tmp_path, model, random_input(a_shape))


@pytest.mark.parametrize("bounds", [(-0.5, 0.7), (0.0, None), (None, 0.3), (None, None)])
def test_clip_bounds_as_inputs(tmp_path, bounds):
    inits, inputs = {}, ["x"]
    for name, value in zip(("lo", "hi"), bounds, strict=True):
        if value is None:
            inputs.append("")
        else:
            inits[name] = np.array(value, np.float32)
            inputs.append(name)
    model = single_node_model("Clip", (2, 3, 4, 5), initializers=inits, inputs=inputs)
    _check(tmp_path, model, random_input((2, 3, 4, 5)))


def test_clip_opset6_attributes(tmp_path):
    model = single_node_model("Clip", (2, 7), opset=6, min=-0.2, max=0.4)
    _check(tmp_path, model, random_input((2, 7)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 7), (2, 2, 3, 2, 2)])
def test_relu_any_rank(tmp_path, shape):
    _check(tmp_path, single_node_model("Relu", shape), random_input(shape))


@pytest.mark.parametrize("other_shape", [(2, 3, 4, 5), (3, 1, 1), (5,), (), (2, 1, 4, 1)])
def test_add_broadcasting(tmp_path, other_shape):
    inits = {"b": random_input(other_shape, seed=4)}
    model = single_node_model("Add", (2, 3, 4, 5), initializers=inits)
    _check(tmp_path, model, random_input((2, 3, 4, 5)))


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat_axes(tmp_path, axis):
    other = [2, 3, 4, 5]
    other[axis] = 2
    inits = {"c": random_input(tuple(other), seed=5)}
    model = single_node_model("Concat", (2, 3, 4, 5), initializers=inits, axis=axis)
    _check(tmp_path, model, random_input((2, 3, 4, 5)))


@pytest.mark.parametrize("shape", [[0, -1], [-1, 5], [2, 0, 20], [0, 3, 2, 10], [120]])
def test_reshape_zero_and_minus_one(tmp_path, shape):
    model = single_node_model("Reshape", (2, 3, 4, 5),
                              initializers={"s": np.array(shape, np.int64)})
    _check(tmp_path, model, random_input((2, 3, 4, 5)))


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten_axes(tmp_path, axis):
    _check(tmp_path, single_node_model("Flatten", (2, 3, 4, 5), axis=axis),
           random_input((2, 3, 4, 5)))


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
def test_softmax_axes(tmp_path, axis):
    _check(tmp_path, single_node_model("Softmax", (2, 3, 4, 5), axis=axis),
           random_input((2, 3, 4, 5)))


def test_softmax_opset11_flattens_trailing_axes(tmp_path):
    _check(tmp_path, single_node_model("Softmax", (2, 3, 4, 5), opset=11, axis=1),
           random_input((2, 3, 4, 5)))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3)])
def test_batchnorm_standalone(tmp_path, shape):
    rng = np.random.default_rng(6)
    inits = {"g": rng.random(3, np.float32) + 0.5, "b": rng.standard_normal(3, np.float32),
             "m": rng.standard_normal(3, np.float32), "v": rng.random(3, np.float32) + 0.1}
    model = single_node_model("BatchNormalization", shape, initializers=inits, epsilon=1e-3)
    _check(tmp_path, model, random_input(shape))


def test_identity(tmp_path):
    _check(tmp_path, single_node_model("Identity", (2, 3, 4, 5)), random_input((2, 3, 4, 5)))


def test_dynamic_batch_plans_per_shape(tmp_path):
    model = single_node_model("Conv", ("n", 4, 6, 6), initializers={"w": _weight((4, 4, 3, 3))},
                              pads=[1, 1, 1, 1])
    path = save_model(model, tmp_path / "m.onnx")
    engine = Engine(path, threads=2)
    for batch in (1, 3, 1, 5):
        x = random_input((batch, 4, 6, 6), seed=batch)
        assert_close(engine.run(x), ort_run(path, x))


def test_tiny_plane_dense_1x1_uses_gemm(tmp_path):
    inits = {"w": _weight((40, 32, 1, 1), density=1.0), "b": np.ones(40, np.float32)}
    model = single_node_model("Conv", ("n", 32, 2, 2), initializers=inits)
    path = save_model(model, tmp_path / "m.onnx")
    assert list(conv_kernels(Engine(path)).values()) == ["tiny"]
    for batch in (1, 3):
        x = random_input((batch, 32, 2, 2))
        assert_close(Engine(path, threads=2).run(x), ort_run(path, x))
