"""Shape plumbing and data movement against ONNX Runtime (runtime/ops/shape_ops.py,
transpose.py): each op natively on an activation (batch 1 and 3, one and two threads) and folded
from constants at plan time, across attributes, opsets, ranks and negative axes."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import (
    BOOL,
    FLOAT,
    INT64,
    check_folded,
    check_model,
    check_op,
    make_model,
    tensor,
)

pytestmark = pytest.mark.aarch64  # native shape ops vs ORT, also on aarch64 (make test-aarch64)

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
X4 = [(1, 3, 4, 5), (3, 3, 4, 5)]


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def const(shape: tuple[int, ...], seed: int = 11) -> np.ndarray:
    return np.asarray(random_input(shape, seed=seed))


# ----------------------------------------------------------------------------- reshape family


@pytest.mark.parametrize("target", [[0, -1], [0, 3, -1], [0, 3, 2, 10], [0, 0, 0, 5, 1],
                                    [0, 60]])
def test_reshape_native(tmp_path, target):
    check_op(tmp_path, "Reshape", ["x", ints(*target)], X4)


@pytest.mark.parametrize("target", [[-1, 5], [6, 0, 10], [120]])
def test_reshape_native_batch_in_target(tmp_path, target):
    # the batch is merged into another dim: the declared batch is fixed (3)
    check_op(tmp_path, "Reshape", ["x", ints(*target)], [(3, 2, 4, 5)] if 120 not in target
             else [(2, 3, 4, 5)])


def test_reshape_allowzero_native(tmp_path):
    check_op(tmp_path, "Reshape", ["x", ints(3, -1, 4)], [(3, 3, 4, 5)], opset=14, allowzero=1)


@pytest.mark.parametrize(("shape", "target", "allowzero"), [
    ((2, 3, 4), [0, -1], 0), ((2, 3, 4), [4, 0, 2], 0), ((2, 3, 4), [-1], 1),
    ((2, 3, 4), [3, 2, 4], 1)])
def test_reshape_folded(tmp_path, shape, target, allowzero):
    check_folded(tmp_path, "Reshape", [const(shape), ints(*target)], opset=14,
                 allowzero=allowzero)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, 4, -1, -3])
def test_flatten(tmp_path, axis):
    check_op(tmp_path, "Flatten", ["x"], X4 if axis != 0 else [(3, 3, 4, 5)], axis=axis)
    check_folded(tmp_path, "Flatten", [const((2, 3, 4, 5))], axis=axis)


def test_flatten_rank5_and_rank2(tmp_path):
    check_op(tmp_path, "Flatten", ["x"], [(1, 3, 2, 2, 5), (3, 3, 2, 2, 5)], axis=2)
    check_op(tmp_path, "Flatten", ["x"], [(1, 7), (3, 7)], axis=-1)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[2], [-1], [2, -1], None])
def test_squeeze(tmp_path, opset, axes):
    # without axes every 1 goes, the batch too: batch 3 only
    shapes = [(1, 3, 1, 5, 1), (3, 3, 1, 5, 1)] if axes is not None else [(3, 3, 1, 5, 1)]
    folded_axes = {None: None, 2: [1], -1: [-1]}.get(axes[0] if axes and len(axes) == 1
                                                      else None, [1, -1] if axes else None)
    if opset >= 13:
        check_op(tmp_path, "Squeeze", ["x"] if axes is None else ["x", ints(*axes)], shapes,
                 opset=opset)
        check_folded(tmp_path, "Squeeze", [const((2, 1, 3, 1))] + (
            [] if folded_axes is None else [ints(*folded_axes)]), opset=opset)
    else:
        attrs = {} if axes is None else {"axes": axes}
        check_op(tmp_path, "Squeeze", ["x"], shapes, opset=opset, **attrs)
        check_folded(tmp_path, "Squeeze", [const((2, 1, 3, 1))], opset=opset,
                     **({} if folded_axes is None else {"axes": folded_axes}))


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1], [-1], [1, 3], [-1, -3], [4, 0]])
def test_unsqueeze(tmp_path, opset, axes):
    shapes = [(1, 3, 5), (3, 3, 5)]
    if opset >= 13:
        check_op(tmp_path, "Unsqueeze", ["x", ints(*axes)], shapes, opset=opset)
        check_folded(tmp_path, "Unsqueeze", [const((2, 3, 5)), ints(*axes)], opset=opset)
    else:
        check_op(tmp_path, "Unsqueeze", ["x"], shapes, opset=opset, axes=axes)
        check_folded(tmp_path, "Unsqueeze", [const((2, 3, 5))], opset=opset, axes=axes)


def test_unsqueeze_scalar_folded(tmp_path):
    check_folded(tmp_path, "Unsqueeze", [np.array(4.0, np.float32), ints(0)])


# ----------------------------------------------------------------------------- concat, split


@pytest.mark.parametrize("rank", [2, 3, 4, 5])
@pytest.mark.parametrize("count", [2, 3, 5])
def test_concat_every_axis(tmp_path, rank, count):
    """x with constants (and x again) on every axis; the batch varies when it is the axis."""
    base = (2, 3, 4, 5, 3)[:rank]
    for axis in [*range(rank), -1, -rank]:
        a = axis % rank
        inputs: list = ["x"]
        for k in range(1, count):
            shape = list(base)
            shape[a] = k
            inputs.append(const(tuple(shape), seed=k) if k % 2 else "x")
        shapes = [base, (1, *base[1:])] if a == 0 else [base]
        check_op(tmp_path, "Concat", inputs, shapes, threads=(1,), axis=axis)


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_concat_activation_with_itself(tmp_path, axis):
    check_op(tmp_path, "Concat", ["x", "x", "x"], X4, axis=axis)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_folded(tmp_path, axis):
    a = const((2, 3, 4), seed=1)
    shape = list(a.shape)
    shape[axis] = 2
    check_folded(tmp_path, "Concat", [a, const(tuple(shape), seed=2), a], axis=axis)


def test_concat_int64_folded(tmp_path):
    check_folded(tmp_path, "Concat", [ints(1, 2), ints(3), ints(-4, 5, 6)], axis=0)


SPLITS = [
    # (x shapes, axis, split sizes or None, outputs)
    ([(1, 6, 4, 5), (3, 6, 4, 5)], 1, None, 3),
    ([(1, 6, 4, 5), (3, 6, 4, 5)], 1, [1, 2, 3], 3),
    ([(1, 3, 4, 6), (3, 3, 4, 6)], -1, [4, 2], 2),
    ([(1, 3, 4, 6), (3, 3, 4, 6)], 2, None, 2),
    ([(4, 3), (4, 3)], 0, [1, 3], 2),
    ([(1, 3, 4, 2, 6), (3, 3, 4, 2, 6)], 3, None, 2),
    ([(1, 3, 4, 2, 6), (3, 3, 4, 2, 6)], -1, [1, 1, 4], 3),
]


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("case", SPLITS, ids=lambda c: f"axis{c[1]}-{c[2]}-{c[3]}")
def test_split(tmp_path, case, opset):
    shapes, axis, split, count = case
    if opset == 11:
        attrs = {"axis": axis} | ({} if split is None else {"split": split})
        check_op(tmp_path, "Split", ["x"], shapes, opset=opset, outputs=count, **attrs)
        check_folded(tmp_path, "Split", [const((6, 6, 6))], outputs=count, opset=opset,
                     axis=axis if axis < 3 else -1,
                     **({} if split is None else {"split": _fit(split, 6)}))
        return
    inputs = ["x"] if split is None else ["x", ints(*split)]
    attrs = {"axis": axis} | ({"num_outputs": count} if opset == 18 and split is None else {})
    check_op(tmp_path, "Split", inputs, shapes, opset=opset, outputs=count, **attrs)


def _fit(split: list[int], total: int) -> list[int]:
    """Sizes like ``split`` that add up to ``total``."""
    sizes = list(split[:-1])
    return [*sizes, total - sum(sizes)]


@pytest.mark.parametrize(("dim", "count"), [(7, 3), (5, 2), (10, 4), (3, 3)])
def test_split_num_outputs_uneven(tmp_path, dim, count):
    check_op(tmp_path, "Split", ["x"], [(1, dim, 3, 2), (3, dim, 3, 2)], opset=18,
             outputs=count, axis=1, num_outputs=count)
    check_folded(tmp_path, "Split", [const((2, dim))], outputs=count, opset=18, axis=-1,
                 num_outputs=count)


def test_split_opset13_input_folded(tmp_path):
    check_folded(tmp_path, "Split", [const((2, 5, 3)), ints(2, 1, 2)], outputs=3, axis=1)
    check_folded(tmp_path, "Split", [ints(1, 2, 3, 4, 5, 6)], outputs=2, axis=0)


# ----------------------------------------------------------------------------- slice


SLICES = [
    # (starts, ends, axes, steps)
    ([1], [3], [1], None),
    ([-3], [-1], [-1], None),
    ([0, 1], [I64_MAX, -1], [2, 3], [2, 1]),
    ([-1], [I64_MIN], [3], [-1]),
    ([I64_MAX], [-I64_MAX], [2], [-2]),
    ([3, 4], [0, 1], [2, 3], [-1, -2]),
    ([1, 0, 1], [3, 10, 4], [1, 2, 3], [1, 3, 2]),
    ([0], [1], [0], None),
    ([-10], [10], [1], None),
    ([2], [I64_MAX], [-2], [1]),
    ([0, 1], [-1, 4], None, None),
]


@pytest.mark.parametrize("case", SLICES, ids=str)
def test_slice_opset13(tmp_path, case):
    starts, ends, axes, steps = case
    inputs: list = ["x", ints(*starts), ints(*ends)]
    inputs += [None if axes is None else ints(*axes), None if steps is None else ints(*steps)]
    while inputs[-1] is None:
        inputs.pop()
    check_op(tmp_path, "Slice", inputs, X4 if 0 not in (axes or [0]) else [(3, 3, 4, 5)])
    check_folded(tmp_path, "Slice", [const((2, 3, 4, 5)), *inputs[1:]])


@pytest.mark.parametrize("case", [([1], [-1], [3]), ([0, -2], [2, I64_MAX], [1, 2]),
                                  ([1, 1], [1000, 3], None)], ids=str)
def test_slice_opset9_attributes(tmp_path, case):
    starts, ends, axes = case
    attrs = {"starts": starts, "ends": ends} | ({} if axes is None else {"axes": axes})
    check_op(tmp_path, "Slice", ["x"], [(3, 3, 4, 5)], opset=9, **attrs)
    check_folded(tmp_path, "Slice", [const((2, 3, 4, 5))], opset=9, **attrs)


def test_slice_rank5_runs_on_ort(tmp_path):
    check_op(tmp_path, "Slice", ["x", ints(1), ints(3), ints(3)], [(1, 2, 3, 4, 5),
                                                                   (3, 2, 3, 4, 5)],
             device="onnxruntime")


def test_slice_rank2_and_int64_folded(tmp_path):
    check_op(tmp_path, "Slice", ["x", ints(-1), ints(I64_MIN), ints(1), ints(-3)],
             [(1, 8), (3, 8)])
    check_folded(tmp_path, "Slice", [ints(10, 20, 30, 40, 50), ints(-2), ints(0), ints(0),
                                     ints(-1)])


# ----------------------------------------------------------------------------- expand, tile


@pytest.mark.parametrize(("shapes", "target"), [
    ([(1, 1, 4, 1), (3, 1, 4, 1)], [1, 3, 1, 5]),     # the input's 1s grow
    ([(1, 3, 4, 5), (3, 3, 4, 5)], [3, 1, 1]),        # a smaller target: the input's shape
    ([(1, 3, 1, 5), (2, 3, 1, 5)], [4, 1]),           # both grow
    ([(3, 1), (3, 1)], [2, 1, 3, 4]),                 # rank grows
    ([(1, 4), (1, 4)], [3, 1]),
])
def test_expand(tmp_path, shapes, target):
    check_op(tmp_path, "Expand", ["x", ints(*target)], shapes)
    check_folded(tmp_path, "Expand", [const(shapes[0]), ints(*target)])


def test_expand_rank5_runs_on_ort(tmp_path):
    check_op(tmp_path, "Expand", ["x", ints(2, 1, 1, 1, 1)], [(1, 3, 2, 2, 2)],
             device="onnxruntime")


@pytest.mark.parametrize("repeats", [[1, 2, 1, 3], [2, 1, 1, 1], [1, 1, 1, 1]])
def test_tile(tmp_path, repeats):
    check_op(tmp_path, "Tile", ["x", ints(*repeats)], X4, device="onnxruntime")
    check_folded(tmp_path, "Tile", [const((2, 3, 1, 2)), ints(*repeats)])
    check_folded(tmp_path, "Tile", [ints(1, 2, 3), ints(repeats[1] + 1)])


# ----------------------------------------------------------------------------- transpose


@pytest.mark.parametrize("perm", [None, [1, 0]])
def test_transpose_rank2(tmp_path, perm):
    attrs = {} if perm is None else {"perm": perm}
    check_op(tmp_path, "Transpose", ["x"], [(1, 7), (3, 7)], **attrs)
    check_folded(tmp_path, "Transpose", [const((3, 5))], **attrs)


@pytest.mark.parametrize("perm", [[0, 2, 1], [2, 0, 1], [1, 2, 0], None])
def test_transpose_rank3(tmp_path, perm):
    attrs = {} if perm is None else {"perm": perm}
    check_op(tmp_path, "Transpose", ["x"], [(1, 3, 5), (3, 3, 5)], **attrs)
    check_folded(tmp_path, "Transpose", [const((2, 3, 5))], **attrs)


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [3, 2, 1, 0], [1, 0, 2, 3],
                                  [0, 1, 3, 2], [2, 3, 0, 1]])
def test_transpose_rank4(tmp_path, perm):
    check_op(tmp_path, "Transpose", ["x"], [(1, 3, 4, 5), (3, 3, 4, 5)], perm=perm)
    check_folded(tmp_path, "Transpose", [const((2, 3, 4, 5))], perm=perm)


@pytest.mark.parametrize(("perm", "device"), [
    ([0, 2, 1, 3, 4], "native"),     # channel shuffle: (N, g, C/g, H*W) -> 4-D
    ([0, 1, 2, 4, 3], "native"),     # (N*C*D, H, W) swap
    ([0, 3, 4, 1, 2], "native"),     # two groups swap
    ([4, 3, 2, 1, 0], "onnxruntime"),  # nothing merges
    ([0, 2, 4, 1, 3], "onnxruntime"),
])
def test_transpose_rank5(tmp_path, perm, device):
    check_op(tmp_path, "Transpose", ["x"], [(1, 2, 3, 4, 5), (3, 2, 3, 4, 5)], perm=perm,
             device=device)
    check_folded(tmp_path, "Transpose", [const((2, 3, 2, 2, 3))], perm=perm)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle(tmp_path, groups):
    """ShuffleNet: Reshape (N, g, C/g, H, W) -> Transpose -> Reshape (N, C, H, W), all native."""
    channels, h, w = 6, 5, 7
    nodes = [
        helper.make_node("Reshape", ["x", "s5"], ["r"], name="split_groups"),
        helper.make_node("Transpose", ["r"], ["t"], name="shuffle", perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "s4"], ["y"], name="merge_groups"),
    ]
    inits = {"s5": ints(-1, groups, channels // groups, h, w), "s4": ints(-1, channels, h, w)}
    model = make_model(nodes, {"x": ["N", channels, h, w]}, ["y"], inits)
    feeds = [np.asarray(random_input((b, channels, h, w), seed=b)) for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"split_groups": "native", "shuffle": "native",
                                         "merge_groups": "native"}, threads=(1, 2))


# ----------------------------------------------------------------------------- shape, size


@pytest.mark.parametrize(("start", "end"), [(None, None), (1, None), (0, 2), (-2, None),
                                            (-3, -1), (2, 100), (-100, 1), (3, 1)])
def test_shape_start_end(tmp_path, start, end):
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape", **attrs),
             helper.make_node("Cast", ["s"], ["sf"], name="cast", to=FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["total"], name="sum", keepdims=1),
             helper.make_node("Add", ["x", "total"], ["y"], name="add")]
    model = make_model(nodes, {"x": ["N", 3, 4, 5]}, ["y", "s"], opset=15)
    feeds = [np.asarray(random_input((b, 3, 4, 5))) for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"shape": "folded", "sum": "folded", "add": "native"})


def test_size(tmp_path):
    nodes = [helper.make_node("Size", ["x"], ["s"], name="size"),
             helper.make_node("Cast", ["s"], ["sf"], name="cast", to=FLOAT),
             helper.make_node("Mul", ["x", "sf"], ["y"], name="mul")]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y", "s"])
    check_model(tmp_path, model, [np.asarray(random_input((b, 3, 4))) for b in (1, 3)],
                {"size": "folded", "mul": "native"})


def test_exporter_shape_plumbing_reshape(tmp_path):
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape (a flatten the way exporters write it)
    folds into a constant target; the Reshape itself runs natively."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = {"zero": np.array(0, np.int64), "axes0": ints(0), "minus1": ints(-1)}
    model = make_model(nodes, {"x": ["N", 3, 4, 5]}, [tensor("y", ["N", 60])], inits)
    check_model(tmp_path, model, [np.asarray(random_input((b, 3, 4, 5))) for b in (1, 3)],
                {"gather": "folded", "concat": "folded", "reshape": "native"}, threads=(1, 2))


# ----------------------------------------------------------------------------- gather


GATHERS = [
    # (axis, indices)
    (0, np.array(1, np.int64)),
    (1, np.array(2, np.int64)),
    (1, ints(0, 2)),
    (1, ints(-1, 0, -3)),
    (-1, ints(4, 0, 4)),
    (-1, np.array(-2, np.int64)),
    (2, np.array([1, 3], np.int32)),
]


@pytest.mark.parametrize(("axis", "indices"), GATHERS, ids=lambda v: str(v).replace(" ", ""))
def test_gather_constant_indices_native(tmp_path, axis, indices):
    shapes = X4 if axis != 0 else [(3, 3, 4, 5)]
    check_op(tmp_path, "Gather", ["x", indices], shapes, axis=axis)
    check_folded(tmp_path, "Gather", [const((3, 3, 4, 5)), indices], axis=axis)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_index_matrix_runs_on_ort(tmp_path, axis):
    indices = np.array([[0, -1], [1, 2]], np.int64)
    check_op(tmp_path, "Gather", ["x", indices], [(3, 3, 4, 5)], axis=axis,
             device="onnxruntime")
    check_folded(tmp_path, "Gather", [const((3, 3, 4, 5)), indices], axis=axis)


def test_gather_rank2(tmp_path):
    check_op(tmp_path, "Gather", ["x", ints(2, 0)], [(1, 5), (3, 5)], axis=1)
    check_op(tmp_path, "Gather", ["x", np.array(0, np.int64)], [(3, 5)], axis=0)


def test_gather_runtime_indices_run_on_ort(tmp_path):
    node = helper.make_node("Gather", ["x", "i"], ["y"], name="gather", axis=1)
    model = make_model([node], [tensor("x", ["N", 4, 3]), tensor("i", [2], INT64)], ["y"])
    feeds = [{"x": np.asarray(random_input((b, 4, 3))), "i": ints(3, -4)} for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"gather": "onnxruntime"})


def test_gather_int64_folded(tmp_path):
    check_folded(tmp_path, "Gather", [ints(5, 6, 7, 8), ints(-1, 0)], axis=0)
    check_folded(tmp_path, "Gather", [np.arange(12, dtype=np.int64).reshape(3, 4),
                                      np.array([[0, 2], [-1, 1]], np.int64)], axis=1)


# ----------------------------------------------------------------------------- cast


def test_cast_float_to_float_native(tmp_path):
    check_op(tmp_path, "Cast", ["x"], X4, to=FLOAT)


@pytest.mark.parametrize("to", [INT64, BOOL])
def test_cast_other_types_run_on_ort(tmp_path, to):
    nodes = [helper.make_node("Mul", ["x", "k"], ["m"], name="scale"),
             helper.make_node("Cast", ["m"], ["c"], name="cast", to=to),
             helper.make_node("Cast", ["c"], ["y"], name="back", to=FLOAT)]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y", "c"], {"k": np.float32(3.7)})
    feeds = [np.asarray(random_input((b, 3, 4))) for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"scale": "native", "cast": "onnxruntime",
                                         "back": "onnxruntime"})


@pytest.mark.parametrize(("value", "to"), [
    (np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 1e10], np.float32), INT64),
    (np.array([-3, 0, 7, 2 ** 40], np.int64), FLOAT),
    (np.array([0.0, -0.0, 1.5, np.nan], np.float32), BOOL),
    (np.array([True, False]), FLOAT),
    (np.array([True, False]), INT64),
    (np.array([-3, 0, 7], np.int64), BOOL),
])
def test_cast_folded(tmp_path, value, to):
    check_folded(tmp_path, "Cast", [value], to=to)


# ----------------------------------------------------------------------------- generators


@pytest.mark.parametrize("value", [None, np.array([2.5], np.float32), np.array([3], np.int64)])
def test_constant_of_shape(tmp_path, value):
    attrs = {} if value is None else {"value": helper.make_tensor(
        "value", FLOAT if value.dtype == np.float32 else INT64, [1], value.tolist())}
    check_folded(tmp_path, "ConstantOfShape", [ints(2, 3)], **attrs)
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill", **attrs),
             helper.make_node("Cast", ["c"], ["cf"], name="cast", to=FLOAT),
             helper.make_node("Add", ["x", "cf"], ["y"], name="add")]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y"])
    check_model(tmp_path, model, [np.asarray(random_input((b, 3, 4))) for b in (1, 3)],
                {"fill": "folded", "add": "native"})


@pytest.mark.parametrize(("start", "limit", "delta"), [
    (np.int64(0), np.int64(5), np.int64(1)), (np.int64(10), np.int64(-3), np.int64(-4)),
    (np.int64(3), np.int64(3), np.int64(1)), (np.int32(1), np.int32(10), np.int32(3)),
    (np.float32(0.5), np.float32(2.0), np.float32(0.25)),
    (np.float32(1.0), np.float32(-1.0), np.float32(-0.3)),
])
def test_range(tmp_path, start, limit, delta):
    if limit == start:  # an empty range: only its shape reaches the graph
        check_folded(tmp_path, "Shape", [np.arange(int(start), int(limit))])
        return
    check_folded(tmp_path, "Range", [start, limit, delta])


# ----------------------------------------------------------------------------- logic, where


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(tmp_path, op):
    opset = 16 if "OrEqual" in op else 13
    a = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    check_folded(tmp_path, op, [a, ints(2, 5, 3)], opset=opset)
    check_folded(tmp_path, op, [np.array([0.5, -1.0, 2.0], np.float32), np.float32(0.5)],
                 opset=opset)
    nodes = [helper.make_node(op, ["x", "t"], ["c"], name="compare"),
             helper.make_node("Cast", ["c"], ["y"], name="cast", to=FLOAT)]
    model = make_model(nodes, {"x": ["N", 3, 4]}, ["y"],
                       {"t": np.linspace(-1, 1, 4, dtype=np.float32)}, opset)
    check_model(tmp_path, model, [np.asarray(random_input((b, 3, 4))) for b in (1, 3)],
                {"compare": "onnxruntime"})


@pytest.mark.parametrize("op", ["And", "Or", "Xor", "Not"])
def test_logic(tmp_path, op):
    a = np.array([[True, False, True], [False, False, True]])
    inputs = [a] if op == "Not" else [a, np.array([True, False, False])]
    check_folded(tmp_path, op, inputs)


def test_where(tmp_path):
    cond = np.array([[True], [False], [True]])
    check_folded(tmp_path, "Where", [cond, const((3, 4)), np.float32(-1.0)])
    check_folded(tmp_path, "Where", [np.array([True, False]), ints(1, 2), ints(7)])
    check_op(tmp_path, "Where", [np.array([True, False, True, False, False]), "x",
                                 np.float32(0.25)], X4, device="onnxruntime")


# ----------------------------------------------------------------------------- pad


PADS = [
    [0, 0, 1, 2, 0, 0, 3, 1],
    [0, 1, 0, 0, 0, 2, 0, 0],
    [1, 0, 0, 1, 0, 0, 2, 0],
]


@pytest.mark.parametrize("pads", PADS, ids=str)
@pytest.mark.parametrize("value", [None, 1.5])
def test_pad_constant_native(tmp_path, pads, value):
    inputs: list = ["x", ints(*pads)] + ([] if value is None else [np.float32(value)])
    shapes = X4 if pads[0] == pads[4] == 0 else [(3, 3, 4, 5)]
    check_op(tmp_path, "Pad", inputs, shapes, opset=11)
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5)), *inputs[1:]], opset=11)


@pytest.mark.parametrize("mode", ["reflect", "edge"])
def test_pad_other_modes_run_on_ort(tmp_path, mode):
    pads = ints(0, 0, 2, 1, 0, 0, 1, 3)
    check_op(tmp_path, "Pad", ["x", pads], X4, opset=13, device="onnxruntime", mode=mode)
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5)), pads], mode=mode)


def test_pad_wrap_folded(tmp_path):
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5)), ints(0, 1, 2, 1, 0, 2, 1, 3)],
                 opset=19, mode="wrap")


@pytest.mark.parametrize("pads", [[0, 0, -1, 1, 0, 0, 1, -2], [0, 0, 0, -1, 0, 0, 0, 0]])
def test_pad_negative_crops_on_ort(tmp_path, pads):
    check_op(tmp_path, "Pad", ["x", ints(*pads)], X4, device="onnxruntime")
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5)), ints(*pads)])


@pytest.mark.parametrize(("axes", "pads"), [([2, 3], [1, 0, 2, 3]), ([-1], [2, 1]),
                                            ([1], [0, 3])])
def test_pad_axes_opset18(tmp_path, axes, pads):
    inputs = ["x", ints(*pads), np.float32(-2.0), ints(*axes)]
    check_op(tmp_path, "Pad", inputs, X4, opset=18)
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5)), *inputs[1:]], opset=18)


def test_pad_opset10_attributes(tmp_path):
    attrs = {"pads": [0, 0, 1, 1, 0, 0, 2, 0], "value": 0.5}
    check_op(tmp_path, "Pad", ["x"], X4, opset=10, **attrs)
    check_folded(tmp_path, "Pad", [const((2, 3, 4, 5))], opset=10, **attrs)


def test_pad_rank2_and_rank5(tmp_path):
    check_op(tmp_path, "Pad", ["x", ints(0, 2, 0, 1)], [(1, 5), (3, 5)])
    check_op(tmp_path, "Pad", ["x", ints(0, 0, 1, 0, 0, 0, 0, 0, 1, 0)],
             [(1, 2, 2, 3, 2)], device="onnxruntime")


# ----------------------------------------------------------------------------- identity, dropout


def test_identity_and_dropout(tmp_path):
    check_op(tmp_path, "Identity", ["x"], X4)
    check_op(tmp_path, "Dropout", ["x"], X4)
    check_op(tmp_path, "Dropout", ["x"], X4, opset=11, ratio=0.3)
    check_op(tmp_path, "Dropout", ["x", np.float32(0.4)], X4, opset=13)
    check_folded(tmp_path, "Identity", [const((2, 3))])
    check_folded(tmp_path, "Dropout", [const((2, 3))])


def test_dropout_mask_output_runs_on_ort(tmp_path):
    check_op(tmp_path, "Dropout", ["x"], X4, outputs=2, device="onnxruntime")


def test_slice_random_parameters(tmp_path):
    """Random starts / ends (INT64 bounds included), axes and steps (fixed seed), natively and
    folded; empty results are skipped (the engine refuses empty tensors)."""
    rng = np.random.default_rng(1)
    values = [-10, -5, -4, -2, -1, 0, 1, 2, 3, 5, 10, I64_MAX, I64_MIN, -I64_MAX]
    shape, done = (2, 3, 4, 5), 0
    while done < 25:
        count = int(rng.integers(1, 4))
        axes = [int(a) for a in rng.choice([0, 1, 2, 3, -1, -2, -3], size=count, replace=False)]
        if len({a % 4 for a in axes}) < count:
            continue
        starts, ends = rng.choice(values, size=count), rng.choice(values, size=count)
        steps = rng.choice([1, 2, 3, -1, -2], size=count)
        window = [slice(None)] * 4
        for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
            window[a % 4] = slice(int(s), int(e), int(st))
        if np.zeros(shape)[tuple(window)].size == 0:
            continue
        params = [ints(*starts), ints(*ends), ints(*axes), ints(*steps)]
        check_op(tmp_path, "Slice", ["x", *params], [shape], threads=(1,))
        check_folded(tmp_path, "Slice", [const(shape), *params])
        done += 1
