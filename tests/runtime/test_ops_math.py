"""Arithmetic, element-wise functions, reductions, normalization, Softmax, Gemm and MatMul
against ONNX Runtime (runtime/ops/eltwise.py, activation.py, reduce.py, normalization.py,
softmax.py, gemm.py): natively on activations (batch 1 and 3) and folded from constants, with
broadcasting in every direction, negative axes and every attribute form."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import (
    check_folded,
    check_model,
    check_op,
    make_model,
    tensor,
)

pytestmark = pytest.mark.aarch64  # native math ops vs ORT, also on aarch64 (make test-aarch64)

X4 = [(1, 3, 4, 5), (3, 3, 4, 5)]


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def const(shape: tuple[int, ...], seed: int = 11, positive: bool = False) -> np.ndarray:
    value = np.asarray(random_input(shape, seed=seed))
    return np.abs(value) + np.float32(0.5) if positive else value


# ----------------------------------------------------------------------------- binary arithmetic

BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum"]
# the other operand of x (N, 3, 4, 5)
OPERANDS = [(), (1,), (5,), (3, 1, 1), (1, 3, 1, 1), (4, 5), (1, 1, 4, 1), (1, 3, 4, 5)]


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("other", OPERANDS, ids=str)
def test_binary_constant_operand(tmp_path, op, other):
    positive = op in ("Pow", "Div")
    k = const(other, positive=positive)
    check_op(tmp_path, op, ["x", k], X4, threads=(1,), positive=op == "Pow")
    if op in ("Sub", "Div", "Pow"):  # the constant first
        check_op(tmp_path, op, [k, "x"], X4, threads=(1,), positive=True)


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize(("x_shape", "z_shape"), [
    ((3, 1, 5), (4, 1)),            # both operands broadcast
    ((1, 4, 1), (3, 1, 5)),
    ((3, 4, 5), (3, 4, 5)),
    ((5,), (3, 1, 1)),               # the batch dim broadcasts inside z
])
def test_binary_two_activations(tmp_path, op, x_shape, z_shape):
    node = helper.make_node(op, ["x", "z"], ["y"], name="op")
    model = make_model([node], {"x": ["N", *x_shape], "z": list(z_shape)}, ["y"])
    feeds = []
    for b in (1, 3):
        x = np.asarray(random_input((b, *x_shape), seed=b))
        z = np.asarray(random_input(z_shape, seed=7))
        if op in ("Pow", "Div"):
            x, z = np.abs(x) + np.float32(0.5), np.abs(z) + np.float32(0.5)
        feeds.append({"x": x, "z": z})
    check_model(tmp_path, model, feeds, {"op": "native"}, threads=(1, 2))


@pytest.mark.parametrize("op", BINARY)
def test_binary_folded(tmp_path, op):
    a, b = const((3, 1, 5), positive=True), const((4, 1), seed=3, positive=True)
    check_folded(tmp_path, op, [a, b])
    check_folded(tmp_path, op, [np.float32(1.5), const((2, 3), positive=True)])


@pytest.mark.parametrize("op", ["Add", "Mul", "Max"])
def test_binary_rank5(tmp_path, op):
    shapes = [(1, 2, 3, 2, 4), (3, 2, 3, 2, 4)]
    check_op(tmp_path, op, ["x", "x"], shapes)                      # equal shapes: native
    check_op(tmp_path, op, ["x", const((3, 1, 4))], shapes, device="onnxruntime")


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_integer_arithmetic_folded(tmp_path, op):
    a = ints(-7, 7, -7, 7, 0, -9, 9, 1)
    b = ints(2, 2, -2, -2, 3, 4, -4, -5)
    check_folded(tmp_path, op, [a, b])
    check_folded(tmp_path, op, [a.astype(np.int32), np.array(3, np.int32)])


def test_integer_division_truncates_toward_zero(tmp_path):
    a = ints(-7, 7, -7, 7, -1, 1, -6, 6)
    b = ints(2, 2, -2, -2, 3, -3, 3, -4)
    check_folded(tmp_path, "Div", [a, b])
    check_folded(tmp_path, "Div", [a.reshape(2, 4), ints(-3)])


def test_pow_integer_exponent(tmp_path):
    check_op(tmp_path, "Pow", ["x", np.array(2, np.int64)], X4)
    check_op(tmp_path, "Pow", ["x", np.float32(3.0)], X4)
    check_op(tmp_path, "Pow", ["x", np.float32(0.5)], X4, positive=True)
    check_folded(tmp_path, "Pow", [ints(2, -3, 4), ints(3, 2, 0)])


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
def test_variadic(tmp_path, op):
    # two inputs natively (Mean on ONNX Runtime), one or three inputs on ONNX Runtime
    check_op(tmp_path, op, ["x", const((3, 1, 1))], X4,
             device="onnxruntime" if op == "Mean" else "native")
    check_op(tmp_path, op, ["x"], X4, device="onnxruntime")
    check_op(tmp_path, op, ["x", const((5,)), const((4, 1), seed=2)], X4, device="onnxruntime")
    check_folded(tmp_path, op, [const((2, 3)), const((3,), seed=2), const((2, 1), seed=3)])
    check_folded(tmp_path, op, [const((2, 3))])


# ----------------------------------------------------------------------------- element-wise

UNARY = ["Erf", "Sqrt", "Exp", "Log", "Abs", "Neg", "Reciprocal", "Floor", "Ceil", "Softplus"]
POSITIVE = ("Sqrt", "Log", "Reciprocal")


@pytest.mark.parametrize("op", UNARY)
@pytest.mark.parametrize("shapes", [X4, [(1, 7), (3, 7)], [(1, 5, 6), (3, 5, 6)],
                                    [(1, 3, 2, 3, 4), (2, 3, 2, 3, 4)]], ids=lambda s: len(s[0]))
def test_unary(tmp_path, op, shapes):
    check_op(tmp_path, op, ["x"], shapes, positive=op in POSITIVE, threads=(1,))


@pytest.mark.parametrize("op", UNARY)
def test_unary_folded_and_two_threads(tmp_path, op):
    check_op(tmp_path, op, ["x"], [(1, 5, 16, 16), (3, 5, 16, 16)], positive=op in POSITIVE,
             threads=(2,))
    check_folded(tmp_path, op, [const((2, 3, 4), positive=op in POSITIVE)])


@pytest.mark.parametrize("op", ["Exp", "Softplus", "Erf"])
def test_unary_large_magnitudes(tmp_path, op):
    """Values far into the tails (Exp up to 80: large but finite)."""
    values = np.linspace(-80, 80, 3 * 7, dtype=np.float32).reshape(1, 3, 7)
    node = helper.make_node(op, ["x"], ["y"], name="op")
    model = make_model([node], {"x": [1, 3, 7]}, ["y"])
    check_model(tmp_path, model, values, {"op": "native"}, atol=1e-4)


# ----------------------------------------------------------------------------- reductions

REDUCE = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
          "ReduceSumSquare"]
AXES = [[1], [2, 3], [-1], [-2, -1], [0], [0, 1, 2, 3], [1, -1], None]


def _reduce_args(op: str, axes: list[int] | None, as_input: bool
                 ) -> tuple[int, list, dict]:
    """(opset, extra inputs, attributes) of a reduction with these axes in either form."""
    if as_input:
        opset = 13 if op == "ReduceSum" else 18
        return opset, ([] if axes is None else [ints(*axes)]), {}
    opset = 11 if op == "ReduceSum" else 13
    return opset, [], ({} if axes is None else {"axes": axes})


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("as_input", [False, True], ids=["attribute", "input"])
def test_reduce(tmp_path, op, axes, keepdims, as_input):
    opset, extra, attrs = _reduce_args(op, axes, as_input)
    shapes = [(3, 3, 4, 5)] if axes is None or 0 in axes else X4
    check_op(tmp_path, op, ["x", *extra], shapes, opset=opset, threads=(1,),
             keepdims=keepdims, **attrs)
    if keepdims:
        check_folded(tmp_path, op, [const((2, 3, 4, 5)), *extra], opset=opset,
                     keepdims=keepdims, **attrs)


@pytest.mark.parametrize("op,axes,step", [
    ("ReduceMean", [2, 3], "global_avg_pool"), ("ReduceMax", [-2, -1], "global_max_pool"),
    ("ReduceMean", [1, 2, 3], "reduce: mean"), ("ReduceL2", [2, 3], "reduce: l2")])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_spatial_reductions_run_as_global_pools(tmp_path, op, axes, step, keepdims):
    """A mean or max over both spatial axes of a 4-D tensor is a global pool and runs on its
    vector step; other reductions keep the general one. Both equal ONNX Runtime."""
    engine = check_op(tmp_path, op, ["x"], X4, opset=13, keepdims=keepdims, axes=axes)
    steps = [s for node in engine.describe(X4[0][0], {"x": X4[0]}).nodes for s in node.steps]
    assert step in steps, steps


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax"])
def test_reduce_noop_with_empty_axes(tmp_path, op):
    """(the attribute came with axes as an input)"""
    opset, _, _ = _reduce_args(op, None, as_input=True)
    check_op(tmp_path, op, ["x"], X4, opset=opset, noop_with_empty_axes=1)
    check_op(tmp_path, op, ["x"], [(3, 3, 4, 5)], opset=opset, noop_with_empty_axes=0)
    check_op(tmp_path, op, ["x", np.zeros(0, np.int64)], X4, opset=opset,
             noop_with_empty_axes=1)
    check_op(tmp_path, op, ["x", np.zeros(0, np.int64)], [(3, 3, 4, 5)], opset=opset)
    check_folded(tmp_path, op, [const((2, 3))], opset=opset, noop_with_empty_axes=1)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceL2"])
def test_reduce_other_ranks(tmp_path, op):
    opset = 13
    attrs = {} if op == "ReduceSum" else {"axes": [-1]}
    extra = [ints(-1)] if op == "ReduceSum" else []
    check_op(tmp_path, op, ["x", *extra], [(1, 7), (3, 7)], opset=opset, **attrs)
    check_op(tmp_path, op, ["x", *extra], [(1, 5, 6), (3, 5, 6)], opset=opset, keepdims=0,
             **attrs)
    check_op(tmp_path, op, ["x", *extra], [(1, 3, 2, 2, 4)], opset=opset, device="onnxruntime",
             **attrs)


def test_reduce_int64_folded(tmp_path):
    check_folded(tmp_path, "ReduceProd", [ints(2, 3, 4)], keepdims=0)
    check_folded(tmp_path, "ReduceSum", [ints(2, 3, 4), ints(0)], keepdims=1)
    check_folded(tmp_path, "ReduceMax", [np.arange(12, dtype=np.int64).reshape(3, 4)], axes=[1],
                 keepdims=0)


# ----------------------------------------------------------------------------- normalization


def _bn_params(channels: int, seed: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(channels, np.float32) + 0.5, rng.standard_normal(channels, np.float32),
            rng.standard_normal(channels, np.float32), rng.random(channels, np.float32) + 0.1]


@pytest.mark.parametrize("shapes", [[(1, 5), (3, 5)], [(1, 7, 6), (3, 7, 6)],
                                    [(1, 3, 4, 5), (3, 3, 4, 5)],
                                    [(1, 5, 2, 3, 2), (2, 5, 2, 3, 2)]], ids=lambda s: len(s[0]))
@pytest.mark.parametrize("opset", [9, 15])
def test_batchnorm_standalone(tmp_path, shapes, opset):
    params = _bn_params(shapes[0][1])
    check_op(tmp_path, "BatchNormalization", ["x", *params], shapes, opset=opset, epsilon=1e-3)
    check_folded(tmp_path, "BatchNormalization", [const((2, shapes[0][1], 3)), *params],
                 opset=opset)


def test_batchnorm_after_relu_not_conv(tmp_path):
    params = _bn_params(3)
    names = ["g", "b", "m", "v"]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", *names], ["y"], name="bn")]
    model = make_model(nodes, {"x": ["N", 3, 4, 5]}, ["y"], dict(zip(names, params,
                                                                   strict=True)))
    check_model(tmp_path, model, [np.asarray(random_input(s)) for s in X4],
                {"relu": "native", "bn": "native"}, threads=(1, 2))


LAYERNORM = [
    # (x shapes, axis, scale/bias shape)
    ([(1, 6, 8), (3, 6, 8)], -1, (8,)),
    ([(1, 6, 8), (3, 6, 8)], -2, (6, 8)),
    ([(1, 6, 8), (3, 6, 8)], 1, (6, 8)),
    ([(1, 3, 4, 5), (3, 3, 4, 5)], -1, (5,)),
    ([(1, 3, 4, 5), (3, 3, 4, 5)], 1, (3, 4, 5)),
    ([(1, 3, 4, 5), (3, 3, 4, 5)], -2, (4, 5)),
    ([(1, 7), (3, 7)], -1, (7,)),
]


@pytest.mark.parametrize("case", LAYERNORM, ids=lambda c: f"axis{c[1]}-{c[2]}")
@pytest.mark.parametrize("bias", [False, True])
def test_layernorm(tmp_path, case, bias):
    shapes, axis, pshape = case
    params = [const(pshape, seed=2, positive=True)] + ([const(pshape, seed=3)] if bias else [])
    check_op(tmp_path, "LayerNormalization", ["x", *params], shapes, opset=17, axis=axis,
             epsilon=1e-4)
    check_folded(tmp_path, "LayerNormalization", [const(shapes[0]), *params], opset=17,
                 axis=axis)


def test_layernorm_extra_outputs_run_on_ort(tmp_path):
    check_op(tmp_path, "LayerNormalization", ["x", const((5,), positive=True)], X4, opset=17,
             outputs=3, device="onnxruntime")


# ----------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("shapes", [[(1, 7), (3, 7)], [(1, 5, 6), (3, 5, 6)], X4,
                                    [(1, 2, 3, 4, 5), (2, 2, 3, 4, 5)]], ids=lambda s: len(s[0]))
@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_every_axis(tmp_path, shapes, opset):
    rank = len(shapes[0])
    for axis in [*range(rank), -1, -rank]:
        # axis 0 (and, before opset 13, everything from it) mixes the batch: batch fixed
        run = shapes if axis % rank != 0 else shapes[1:]
        check_op(tmp_path, "Softmax", ["x"], run, opset=opset, threads=(1,), axis=axis)
    check_folded(tmp_path, "Softmax", [const(shapes[1])], opset=opset, axis=1)


def test_softmax_default_axis(tmp_path):
    check_op(tmp_path, "Softmax", ["x"], X4, opset=11)
    check_op(tmp_path, "Softmax", ["x"], X4, opset=13)


# ----------------------------------------------------------------------------- gemm, matmul


def _gemm_case(trans_a: int, trans_b: int, m: int, k: int, n: int) -> tuple:
    a_shape = (k, m) if trans_a else (m, k)
    b = const((n, k) if trans_b else (k, n), seed=4)
    return a_shape, b


@pytest.mark.parametrize("trans_a", [0, 1])
@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (), (5,), (1, 5), (3, 1), (3, 5)], ids=str)
def test_gemm(tmp_path, trans_a, trans_b, c_shape):
    a_shape, b = _gemm_case(trans_a, trans_b, 3, 4, 5)
    inputs = ["x", b] + ([] if c_shape is None else [const(c_shape, seed=5)])
    attrs = {"transA": trans_a, "transB": trans_b, "alpha": 0.7, "beta": -1.3}
    check_op(tmp_path, "Gemm", inputs, [a_shape], threads=(1,), **attrs)
    check_folded(tmp_path, "Gemm", [const(a_shape), *inputs[1:]], **attrs)


@pytest.mark.parametrize("c_shape", [None, (7,), (1, 7)], ids=str)
def test_gemm_batch_rows(tmp_path, c_shape):
    """A = (batch, K): one plan per batch size."""
    inputs = ["x", const((7, 6), seed=4)] + ([] if c_shape is None else [const(c_shape)])
    check_op(tmp_path, "Gemm", inputs, [(1, 6), (3, 6), (16, 6)], transB=1)


def test_gemm_computed_b_and_c(tmp_path):
    nodes = [helper.make_node("Relu", ["w"], ["wr"], name="relu_b"),
             helper.make_node("Gemm", ["x", "wr", "c"], ["y"], name="gemm", transB=1,
                              alpha=0.5, beta=2.0)]
    model = make_model(nodes, {"x": [3, 4], "w": [5, 4], "c": [3, 5]}, ["y"])
    feeds = {"x": np.asarray(random_input((3, 4))), "w": np.asarray(random_input((5, 4), 1)),
             "c": np.asarray(random_input((3, 5), 2))}
    check_model(tmp_path, model, feeds, {"gemm": "native"}, threads=(1, 2))


@pytest.mark.parametrize("batch", [1, 16])
def test_classifier_head_of_a_batch_splits_among_threads(tmp_path, batch):
    """Global pool, Flatten and Gemm at a plan's end: one image's run on the calling thread,
    a batch's (pool input >= 256 K floats, >= 4 M products) split among 2 and 3 threads."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1000, 512)).astype(np.float32)
    bias = rng.standard_normal(1000).astype(np.float32)
    conv_w = rng.standard_normal((512, 8, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "cw"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1)]
    model = make_model(nodes, {"x": ["N", 8, 7, 7]}, ["y"], {"cw": conv_w, "w": w, "b": bias})
    x = np.asarray(random_input((batch, 8, 7, 7), seed=batch))
    check_model(tmp_path, model, x, {"pool": "native", "fc": "native"}, threads=(1, 2, 3),
                batch_layout="interleaved")


def test_large_gemm_splits_among_threads(tmp_path):
    """A (32, 640) x (640, 300) Gemm (6 M products) alone in its plan, on 1 to 3 threads."""
    inputs = ["x", const((300, 640), seed=4), const((300,), seed=5)]
    check_op(tmp_path, "Gemm", inputs, [(32, 640)], threads=(1, 2, 3), transB=1)


@pytest.mark.parametrize("shapes", [[(3, 6)], [(1, 3, 6), (3, 3, 6)],
                                    [(1, 2, 3, 6), (3, 2, 3, 6)],
                                    [(1, 2, 2, 3, 6), (2, 2, 2, 3, 6)]], ids=lambda s: len(s[0]))
def test_matmul_constant_2d_b(tmp_path, shapes):
    check_op(tmp_path, "MatMul", ["x", const((6, 5))], shapes)


@pytest.mark.parametrize(("a", "b"), [
    ((2, 3, 6), (2, 6, 5)),
    ((2, 3, 6), (1, 6, 5)),
    ((2, 1, 3, 6), (4, 6, 5)),       # batch dims broadcast both ways
    ((2, 4, 3, 6), (4, 6, 5)),
    ((1, 4, 3, 6), (2, 1, 6, 5)),
])
def test_matmul_batched_constant_b(tmp_path, a, b):
    check_op(tmp_path, "MatMul", ["x", const(b)], [a])
    check_folded(tmp_path, "MatMul", [const(a), const(b, seed=3)])


@pytest.mark.parametrize(("a", "b"), [((2, 3, 6), (2, 6, 5)), ((2, 1, 3, 6), (1, 4, 6, 5)),
                                      ((3, 6), (2, 6, 5)), ((4, 3, 6), (6, 5))])
def test_matmul_computed_operands(tmp_path, a, b):
    """Attention-like: both operands are activations."""
    node = helper.make_node("MatMul", ["x", "z"], ["y"], name="matmul")
    model = make_model([node], {"x": list(a), "z": list(b)}, ["y"])
    feeds = {"x": np.asarray(random_input(a)), "z": np.asarray(random_input(b, seed=1))}
    check_model(tmp_path, model, feeds, {"matmul": "native"}, threads=(1, 2))


def test_matmul_vectors_run_on_ort(tmp_path):
    check_op(tmp_path, "MatMul", ["x", const((6,))], [(3, 6)], device="onnxruntime")
    check_op(tmp_path, "MatMul", [const((6,)), "x"], [(2, 6, 4)], device="onnxruntime")
    check_op(tmp_path, "MatMul", ["x", const((6,))], [(6,)], device="onnxruntime")  # a scalar
    check_folded(tmp_path, "MatMul", [const((6,)), const((6, 2))])


def test_matmul_batched_beyond_rank4_runs_on_ort(tmp_path):
    check_op(tmp_path, "MatMul", ["x", const((2, 2, 2, 6, 5))], [(2, 2, 2, 3, 6)],
             device="onnxruntime")


def test_matmul_integer_folded(tmp_path):
    node = helper.make_node("MatMul", ["a", "b"], ["c"], name="mm")
    cast = helper.make_node("Cast", ["c"], ["cf"], name="cast", to=1)
    add = helper.make_node("Add", ["x", "cf"], ["y"], name="add")
    inits = {"a": np.arange(6, dtype=np.int64).reshape(2, 3) - 2,
             "b": np.arange(12, dtype=np.int64).reshape(3, 4) - 5}
    model = make_model([node, cast, add], [tensor("x", [2, 4])], ["y"], inits)
    check_model(tmp_path, model, np.asarray(random_input((2, 4))), {"mm": "folded"})
