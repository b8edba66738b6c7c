"""Resize / Upsample, MaxPool / AveragePool / global pools and ConvTranspose against ONNX Runtime
(runtime/ops/resize.py, pool.py, conv_transpose.py and the phase decomposition of
runtime/passes/conv_transpose.py): natively on activations (batch 1 and 3, planar and
batch-interleaved), folded from constants, and the configurations left to ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from featherdeploy.runtime.kernels import native as native_kernels
from featherdeploy.runtime.kernels import reference
from tests.runtime.onnx_cases import random_input
from tests.runtime.op_harness import check_folded, check_model, check_op, make_model

pytestmark = pytest.mark.aarch64  # native spatial ops vs ORT, also on aarch64 (make test-aarch64)

X = [(1, 3, 5, 7), (3, 3, 5, 7)]


def floats(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def const(shape: tuple[int, ...], seed: int = 11) -> np.ndarray:
    return np.asarray(random_input(shape, seed=seed))


# ----------------------------------------------------------------------------- resize

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [(2.0, 2.0), (1.5, 1.5), (0.75, 0.5), (3.0, 1.0), (0.6, 1.7)]


def _resize_inputs(opset: int, scales: tuple[float, float] | None = None,
                   sizes: tuple[int, int] | None = None, batch: int = 3) -> list:
    """X, roi, scales[, sizes] for this opset (roi required, as an empty tensor, before 13)."""
    roi = floats() if opset < 13 else None
    if sizes is not None:
        return ["x", roi, floats() if opset < 13 else None, ints(batch, 3, *sizes)]
    return ["x", roi, floats(1.0, 1.0, *scales)]  # type: ignore[misc]


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("scales", SCALES, ids=str)
def test_resize_linear(tmp_path, opset, transform, scales):
    attrs = {"mode": "linear", "coordinate_transformation_mode": transform}
    check_op(tmp_path, "Resize", _resize_inputs(opset, scales), X, opset=opset, threads=(1,),
             **attrs)


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("transform", [*TRANSFORMS, "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_resize_nearest(tmp_path, opset, transform, nearest_mode):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": transform,
             "nearest_mode": nearest_mode}
    for scales in [(2.0, 2.0), (1.5, 0.75), (0.5, 2.5)]:
        check_op(tmp_path, "Resize", _resize_inputs(opset, scales), X, opset=opset,
                 threads=(1,), **attrs)


@pytest.mark.parametrize("opset", [11, 13, 19])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [(10, 14), (8, 9), (3, 4), (5, 7), (1, 1), (16, 3)],
                         ids=str)
def test_resize_sizes(tmp_path, opset, mode, sizes):
    check_op(tmp_path, "Resize", _resize_inputs(opset, sizes=sizes), [(3, 3, 5, 7)],
             opset=opset, threads=(1,), mode=mode,
             coordinate_transformation_mode="asymmetric" if mode == "nearest" else "half_pixel")


@pytest.mark.parametrize("opset", [11, 13, 19])
def test_resize_defaults_two_threads(tmp_path, opset):
    check_op(tmp_path, "Resize", _resize_inputs(opset, (2.0, 2.0)), [(1, 5, 16, 16),
                                                                     (3, 5, 16, 16)],
             opset=opset)


@pytest.mark.parametrize(("mode", "attrs"), [
    ("cubic", {}),
    ("cubic", {"cubic_coeff_a": -0.5, "exclude_outside": 1}),
    ("linear", {"antialias": 1}),
])
def test_resize_left_to_ort(tmp_path, mode, attrs):
    check_op(tmp_path, "Resize", _resize_inputs(19, (0.6, 1.5)), X, opset=19,
             device="onnxruntime", mode=mode, **attrs)


def test_resize_tf_crop_and_resize_on_ort(tmp_path):
    roi = floats(0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7)
    check_op(tmp_path, "Resize", ["x", roi, floats(1, 1, 2, 2)], X, opset=13,
             device="onnxruntime", mode="linear",
             coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.5)


def test_resize_channels_or_rank3_on_ort(tmp_path):
    check_op(tmp_path, "Resize", ["x", None, floats(1, 2, 2, 2)], X, device="onnxruntime",
             mode="nearest")
    check_op(tmp_path, "Resize", ["x", None, floats(1, 1, 2)], [(1, 3, 5), (3, 3, 5)],
             device="onnxruntime", mode="linear")


@pytest.mark.parametrize(("mode", "transform"), [("nearest", "asymmetric"),
                                                 ("linear", "half_pixel"),
                                                 ("linear", "align_corners"),
                                                 ("nearest", "tf_half_pixel_for_nn")])
def test_resize_folded(tmp_path, mode, transform):
    check_folded(tmp_path, "Resize", [const((2, 3, 4, 5)), None, floats(1, 1, 1.5, 0.75)],
                 mode=mode, coordinate_transformation_mode=transform)
    check_folded(tmp_path, "Resize", [const((1, 2, 3, 3)), None, None, ints(1, 2, 7, 2)],
                 mode=mode, coordinate_transformation_mode=transform)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(2.0, 2.0), (1.5, 3.0), (0.6, 0.5), (1.0, 0.75)], ids=str)
def test_resize_opset10_scales_input(tmp_path, mode, scales):
    """Resize-10: (X, scales), asymmetric coordinates."""
    check_op(tmp_path, "Resize", ["x", floats(1, 1, *scales)], X, opset=10, mode=mode)
    check_folded(tmp_path, "Resize", [const((2, 3, 4, 5)), floats(1, 1, *scales)], opset=10,
                 mode=mode)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("axes", [[2, 3], [-2, -1], [3, 2], [3]], ids=str)
def test_resize_axes_opset18(tmp_path, mode, axes):
    """Scales or sizes for the listed axes only."""
    by_axis = {2: 1.5, 3: 0.75, -2: 1.5, -1: 0.75}
    scales = floats(*(by_axis[a] for a in axes))
    check_op(tmp_path, "Resize", ["x", None, scales], X, opset=18, mode=mode, axes=axes)
    check_folded(tmp_path, "Resize", [const((2, 3, 4, 5)), None, scales], opset=18,
                 mode=mode, axes=axes)
    sizes = ints(*({2: 8, 3: 5, -2: 8, -1: 5}[a] for a in axes))
    check_op(tmp_path, "Resize", ["x", None, None, sizes], X, opset=18, mode=mode, axes=axes)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [(10, 9), (4, 20), (3, 3)], ids=str)
def test_resize_keep_aspect_ratio(tmp_path, policy, mode, sizes):
    check_op(tmp_path, "Resize", ["x", None, None, ints(*sizes)], X, opset=19, mode=mode,
             axes=[2, 3], keep_aspect_ratio_policy=policy)
    check_folded(tmp_path, "Resize", [const((2, 3, 4, 5)), None, None, ints(*sizes)],
                 opset=19, mode=mode, axes=[2, 3], keep_aspect_ratio_policy=policy)


def test_resize_keep_aspect_ratio_every_axis(tmp_path):
    """Without axes the one factor scales batch and channels too: ONNX Runtime."""
    check_op(tmp_path, "Resize", ["x", None, None, ints(3, 3, 10, 9)], [(3, 3, 5, 7)],
             opset=19, mode="nearest", keep_aspect_ratio_policy="not_smaller",
             device="onnxruntime")
    check_op(tmp_path, "Resize", ["x", None, None, ints(3, 3, 10, 9)], [(3, 3, 5, 7)],
             opset=19, mode="nearest", keep_aspect_ratio_policy="not_larger")


@pytest.mark.parametrize(("attrs", "roi"), [
    ({"mode": "cubic"}, None),
    ({"mode": "cubic", "cubic_coeff_a": -0.5, "exclude_outside": 1}, None),
    ({"mode": "linear", "antialias": 1}, None),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     floats(0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7)),
], ids=str)
def test_resize_constant_modes_without_native_tables(tmp_path, attrs, roi):
    """No NumPy reference of these modes: a Resize of constants runs on ONNX Runtime."""
    check_folded(tmp_path, "Resize", [const((1, 2, 4, 5)), roi, floats(1, 1, 0.6, 1.5)],
                 opset=19, device="onnxruntime", **attrs)


@pytest.mark.parametrize("opset", [7, 9])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(2.0, 2.0), (1.5, 3.0), (2.0, 1.0)], ids=str)
def test_upsample(tmp_path, opset, mode, scales):
    if opset == 9:
        check_op(tmp_path, "Upsample", ["x", floats(1, 1, *scales)], X, opset=9, mode=mode)
        check_folded(tmp_path, "Upsample", [const((2, 3, 4, 5)), floats(1, 1, *scales)],
                     opset=9, mode=mode)
    else:
        check_op(tmp_path, "Upsample", ["x"], X, opset=7, mode=mode,
                 scales=[1.0, 1.0, *scales])


# ----------------------------------------------------------------------------- pools

POOLS = [
    {"kernel_shape": [1, 1]},
    {"kernel_shape": [1, 1], "strides": [2, 2]},
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [3, 3], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [0, 1, 2, 0], "ceil_mode": 1},
    {"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 2, 2, 1]},
    {"kernel_shape": [5, 5], "strides": [1, 1], "pads": [2, 2, 2, 2]},
    {"kernel_shape": [5, 3], "strides": [3, 1], "pads": [0, 1, 4, 1], "ceil_mode": 1},
    {"kernel_shape": [2, 3], "strides": [1, 2], "pads": [1, 0, 0, 2]},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"},
    {"kernel_shape": [4, 3], "auto_pad": "SAME_LOWER", "strides": [3, 2]},
    {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 2]},
]
DILATED = [
    {"kernel_shape": [3, 3], "dilations": [2, 2]},
    {"kernel_shape": [2, 3], "dilations": [2, 1], "strides": [2, 1], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 2], "dilations": [1, 3], "ceil_mode": 1, "strides": [2, 2]},
]
POOL_X = [(1, 5, 9, 11), (3, 5, 9, 11)]


@pytest.mark.parametrize("attrs", POOLS + DILATED, ids=str)
def test_maxpool(tmp_path, attrs):
    check_op(tmp_path, "MaxPool", ["x"], POOL_X, opset=12, **attrs)


@pytest.mark.parametrize("attrs", POOLS, ids=str)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_avgpool(tmp_path, attrs, include_pad):
    check_op(tmp_path, "AveragePool", ["x"], POOL_X, threads=(1,),
             count_include_pad=include_pad, **attrs)


@pytest.mark.parametrize("attrs", DILATED, ids=str)
@pytest.mark.parametrize("include_pad", [0, 1])
def test_avgpool_dilations_opset19(tmp_path, attrs, include_pad):
    check_op(tmp_path, "AveragePool", ["x"], POOL_X, opset=19, threads=(1,),
             count_include_pad=include_pad, **attrs)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [POOLS[5], POOLS[7], POOLS[10], POOLS[14], DILATED[1]],
                         ids=str)
@pytest.mark.parametrize("plane", [(8, 8), (31, 17)], ids=str)
def test_pool_batch_interleaved(tmp_path, op, attrs, plane):
    """Batch 16 of small planes in the batch-interleaved layout (and a tail group of 3)."""
    opset = 19 if "dilations" in attrs else 13
    check_op(tmp_path, op, ["x"], [(16, 3, *plane), (19, 3, *plane)], opset=opset,
             engine_options={"batch_layout": "interleaved"}, **attrs)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_folded(tmp_path, op):
    check_folded(tmp_path, op, [const((2, 3, 6, 7))], kernel_shape=[3, 2], strides=[2, 2],
                 pads=[1, 0, 1, 1])
    check_folded(tmp_path, op, [const((1, 2, 5, 5))], kernel_shape=[2, 2], ceil_mode=1,
                 strides=[2, 2])


def test_maxpool_indices_and_storage_order_on_ort(tmp_path):
    check_op(tmp_path, "MaxPool", ["x"], POOL_X, outputs=2, device="onnxruntime",
             kernel_shape=[2, 2], strides=[2, 2])
    check_op(tmp_path, "MaxPool", ["x"], POOL_X, outputs=2, device="onnxruntime",
             kernel_shape=[3, 3], storage_order=1)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pools(tmp_path, op):
    check_op(tmp_path, op, ["x"], [(1, 7, 5, 3), (3, 7, 5, 3)])
    check_op(tmp_path, op, ["x"], [(16, 5, 4, 4)], engine_options={"batch_layout":
                                                                   "interleaved"})
    check_op(tmp_path, op, ["x"], [(1, 7, 9), (3, 7, 9)], device="onnxruntime")
    check_op(tmp_path, op, ["x"], [(1, 3, 2, 3, 4)], device="onnxruntime")
    check_folded(tmp_path, op, [const((2, 3, 4, 5))])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (1, 3), (7, 3), (7, 7), (14, 14), (1, 16),
                                (3, 17), (56, 56), (9, 33)], ids=str)
def test_global_pools_of_padded_and_compact_planes(tmp_path, op, hw):
    """Planes of fewer floats than a vector (1x1, 2x2, 1x3: a scalar loop), narrower than a
    vector (3 columns: at every width; 7: from 8 floats), whole vectors and one float (17), and
    wide ones; compact (the graph input) and with zero borders (a 3x3
    conv's output, laid out for the next 3x3 conv)."""
    check_op(tmp_path, op, ["x"], [(1, 3, *hw), (2, 3, *hw)])
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((4, 3, 3, 3)) * (rng.random((4, 3, 3, 3)) < 0.5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1] * 4),
             helper.make_node(op, ["c"], ["p"], name="pool"),
             helper.make_node("Conv", ["c", "w2"], ["y2"], name="conv2", pads=[1] * 4)]
    w2 = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    model = make_model(nodes, {"x": ["N", 3, *hw]}, ["p", "y2"], {"w": w, "w2": w2})
    feeds = [np.asarray(random_input((b, 3, *hw), seed=b)) for b in (1, 2)]
    check_model(tmp_path, model, feeds, {"pool": "native"}, threads=(1, 2))


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("hw", [(7, 19), (2, 40), (7, 7)], ids=str)
def test_native_global_pools_propagate_nan(kind, hw):
    """The native step keeps a NaN (NaN in, NaN out; the engine hands NaN inputs to ONNX
    Runtime, whose max drops them, so this is the kernel on its own, against NumPy)."""
    h, w = hw
    x = np.asarray(random_input((1, 4, h, w), seed=1))
    x[0, 1, 0, 0] = np.nan    # first vector: later maxima must not replace it
    x[0, 2, h - 1, w - 1] = np.nan  # in a row's partial last vector
    y = native_kernels.global_pool(x, kind=kind).reshape(-1)
    want = reference.global_pool(x, kind=kind).reshape(-1)
    np.testing.assert_allclose(y, want, rtol=1e-5)
    assert np.isnan(y[1]) and np.isnan(y[2]) and not np.isnan(y[[0, 3]]).any()


# ----------------------------------------------------------------------------- conv transpose


def _sparse_weight(shape: tuple[int, ...], density: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)


CONV_TRANSPOSE = [
    # (in channels, out channels per group, kernel, attributes)
    (3, 5, 2, {"strides": [2, 2]}),
    (5, 3, 3, {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    (4, 7, 4, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    (3, 3, 3, {"strides": [1, 1], "pads": [1, 1, 1, 1]}),
    (3, 5, 3, {}),
    (3, 5, 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),     # output 2H - 1
    (3, 4, 4, {"strides": [3, 2], "output_padding": [2, 1], "pads": [1, 0, 0, 1]}),
    (4, 3, 3, {"strides": [2, 2], "group": 2, "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    (6, 5, 2, {"strides": [2, 2], "group": 2}),
    (3, 5, 3, {"strides": [2, 2], "output_shape": [10, 14]}),
    (3, 5, 3, {"strides": [2, 2], "output_shape": [11, 15]}),
    (3, 5, 3, {"strides": [2, 2], "output_shape": [10, 14], "auto_pad": "SAME_UPPER"}),
    (3, 5, 3, {"strides": [2, 2], "output_shape": [9, 13], "auto_pad": "SAME_LOWER"}),
    (5, 3, 4, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    (5, 3, 3, {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
]
# A phase with fewer outputs than the input has rows would need a crop: ONNX Runtime.
CONV_TRANSPOSE_ORT = [
    (7, 3, 3, {"strides": [3, 3], "pads": [1, 1, 1, 1]}),
    (7, 3, 3, {"strides": [3, 3], "pads": [0, 1, 2, 1]}),
]


@pytest.mark.parametrize("case", CONV_TRANSPOSE + CONV_TRANSPOSE_ORT,
                         ids=lambda c: f"{c[:3]}-{c[3]}")
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose(tmp_path, case, bias):
    cin, cout, k, attrs = case
    w = _sparse_weight((cin, cout, k, k), 0.5)
    group = attrs.get("group", 1)
    inputs = ["x", w] + ([np.linspace(-1, 1, cout * group, dtype=np.float32)] if bias else [])
    check_op(tmp_path, "ConvTranspose", inputs, [(1, cin, 5, 7), (3, cin, 5, 7)],
             device="onnxruntime" if case in CONV_TRANSPOSE_ORT else "native", **attrs)


@pytest.mark.parametrize("density", [0.1, 0.0])
def test_conv_transpose_very_sparse(tmp_path, density):
    w = _sparse_weight((8, 5, 4, 4), density, seed=3)
    check_op(tmp_path, "ConvTranspose", ["x", w, floats(*range(5))],
             [(1, 8, 6, 6), (3, 8, 6, 6)], strides=[2, 2], pads=[1, 1, 1, 1])


def test_conv_transpose_batch_interleaved(tmp_path):
    w = _sparse_weight((5, 3, 3, 3), 0.5)
    check_op(tmp_path, "ConvTranspose", ["x", w], [(16, 5, 6, 6), (18, 5, 6, 6)],
             strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1],
             engine_options={"batch_layout": "interleaved"})


@pytest.mark.parametrize("attrs", [
    {"dilations": [2, 2]},
    {"dilations": [2, 1], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"strides": [4, 4], "pads": [0, 0, 0, 0]},      # kernel 3 < stride 4: phases without taps
])
def test_conv_transpose_left_to_ort(tmp_path, attrs):
    w = _sparse_weight((3, 5, 3, 3), 0.5)
    check_op(tmp_path, "ConvTranspose", ["x", w], X, device="onnxruntime", **attrs)


def test_conv_transpose_computed_weight_on_ort(tmp_path):
    from onnx import helper

    from tests.runtime.op_harness import check_model, make_model

    nodes = [helper.make_node("Relu", ["w"], ["wr"], name="relu"),
             helper.make_node("ConvTranspose", ["x", "wr"], ["y"], name="deconv",
                              strides=[2, 2])]
    model = make_model(nodes, {"x": [1, 3, 4, 4], "w": [3, 2, 3, 3]}, ["y"])
    feeds = {"x": const((1, 3, 4, 4)), "w": const((3, 2, 3, 3), seed=2)}
    check_model(tmp_path, model, feeds, {"relu": "native", "deconv": "onnxruntime"})


def test_conv_transpose_folded(tmp_path):
    w = _sparse_weight((3, 2, 3, 3), 0.7)
    check_folded(tmp_path, "ConvTranspose", [const((1, 3, 4, 5)), w, floats(0.5, -1)],
                 strides=[2, 2], pads=[1, 1, 0, 0], output_padding=[1, 0])
    check_folded(tmp_path, "ConvTranspose", [const((1, 3, 4, 5)), w], dilations=[2, 2])


# ----------------------------------------------------------------------------- 1-D and 3-D


ND_CONVS = [
    # (x shapes, weight shape, attributes)
    ([(1, 3, 11), (3, 3, 11)], (5, 3, 3), {"pads": [1, 1]}),
    ([(1, 4, 12), (3, 4, 12)], (6, 2, 4), {"strides": [2], "group": 2, "pads": [2, 1]}),
    ([(1, 3, 10)], (4, 3, 3), {"dilations": [3], "pads": [3, 2]}),
    ([(1, 3, 9)], (4, 3, 2), {"strides": [2], "auto_pad": "SAME_LOWER"}),
    ([(1, 3, 4, 5, 6), (2, 3, 4, 5, 6)], (5, 3, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
    ([(1, 2, 5, 5, 5)], (3, 2, 2, 3, 1), {"strides": [2, 1, 2], "auto_pad": "VALID"}),
]


@pytest.mark.parametrize("case", ND_CONVS, ids=lambda c: f"{c[1]}-{c[2]}")
def test_conv_1d_3d_run_on_ort(tmp_path, case):
    shapes, w_shape, attrs = case
    w = _sparse_weight(w_shape, 0.6)
    check_op(tmp_path, "Conv", ["x", w, floats(*range(w_shape[0]))], shapes,
             device="onnxruntime", **attrs)
    check_folded(tmp_path, "Conv", [const(shapes[0]), w], device="onnxruntime", **attrs)


ND_POOLS = [
    ([(1, 3, 11), (3, 3, 11)], {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ([(1, 3, 11)], {"kernel_shape": [2], "strides": [2], "ceil_mode": 1}),
    ([(1, 3, 10)], {"kernel_shape": [3], "auto_pad": "SAME_UPPER", "strides": [3]}),
    ([(1, 3, 4, 5, 6), (2, 3, 4, 5, 6)], {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2]}),
    ([(1, 2, 5, 5, 5)], {"kernel_shape": [3, 3, 3], "pads": [1, 1, 1, 1, 1, 1],
                         "strides": [2, 2, 2], "ceil_mode": 1}),
]


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("case", ND_POOLS, ids=lambda c: str(c[1]))
def test_pool_1d_3d_run_on_ort(tmp_path, op, case):
    shapes, attrs = case
    check_op(tmp_path, op, ["x"], shapes, device="onnxruntime", **attrs)
    check_folded(tmp_path, op, [const(shapes[0])], device="onnxruntime", **attrs)


@pytest.mark.parametrize(("shapes", "w_shape", "attrs"), [
    ([(1, 3, 7), (3, 3, 7)], (3, 5, 4), {"strides": [2], "pads": [1, 1]}),
    ([(1, 4, 7)], (4, 3, 3), {"strides": [2], "group": 2, "output_padding": [1]}),
    ([(1, 3, 7)], (3, 2, 3), {"strides": [2], "output_shape": [14]}),
    ([(1, 2, 3, 4, 3)], (2, 3, 2, 2, 2), {"strides": [2, 2, 2]}),
])
def test_conv_transpose_1d_3d_run_on_ort(tmp_path, shapes, w_shape, attrs):
    check_op(tmp_path, "ConvTranspose", ["x", _sparse_weight(w_shape, 0.6)], shapes,
             device="onnxruntime", **attrs)


def test_conv1d_between_native_ops(tmp_path):
    """An audio-like chain: the 1-D conv on ONNX Runtime between native element-wise ops."""
    from onnx import helper

    from tests.runtime.op_harness import check_model, make_model

    nodes = [helper.make_node("Mul", ["x", "k"], ["m"], name="scale"),
             helper.make_node("Conv", ["m", "w"], ["c"], name="conv1d", pads=[1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool1d", kernel_shape=[2],
                              strides=[2]),
             helper.make_node("ReduceMean", ["p"], ["y"], name="mean", axes=[-1])]
    inits = {"k": np.float32(0.5), "w": _sparse_weight((6, 3, 3), 0.7)}
    model = make_model(nodes, {"x": ["N", 3, 16]}, ["y"], inits)
    feeds = [const((b, 3, 16), seed=b) for b in (1, 3)]
    check_model(tmp_path, model, feeds, {"scale": "native", "conv1d": "onnxruntime",
                                         "relu": "native", "pool1d": "onnxruntime",
                                         "mean": "native"}, threads=(1, 2))


# ----------------------------------------------------------------------------- random sweeps


def test_pools_random_attributes(tmp_path):
    """Random kernels, strides, pads, dilations, ceil_mode and count_include_pad (fixed seed),
    batch 1 planar and batches 16 and 3 batch-interleaved."""
    rng = np.random.default_rng(2)
    done = 0
    while done < 24:
        op = ("MaxPool", "AveragePool")[done % 2]
        kernel = [int(k) for k in rng.integers(1, 6, size=2)]
        attrs: dict = {"kernel_shape": kernel, "strides": rng.integers(1, 4, size=2).tolist(),
                       "pads": [int(rng.integers(0, k)) for k in (*kernel, *kernel)],
                       "ceil_mode": int(rng.integers(0, 2))}
        if rng.random() < 0.5:
            attrs["dilations"] = rng.integers(1, 3, size=2).tolist()
        if op == "AveragePool":
            attrs["count_include_pad"] = int(rng.integers(0, 2))
        h, w = (int(v) for v in rng.integers(4, 14, size=2))
        reach = [(k - 1) * d + 1 for k, d in zip(kernel, attrs.get("dilations", [1, 1]),
                                                 strict=True)]
        pads = attrs["pads"]
        if h + pads[0] + pads[2] < reach[0] or w + pads[1] + pads[3] < reach[1]:
            continue
        layout = "interleaved" if done % 3 else "planar"
        check_op(tmp_path, op, ["x"], [(1, 3, h, w), (16, 3, h, w), (3, 3, h, w)], opset=19,
                 engine_options={"batch_layout": layout}, **attrs)
        done += 1


def test_conv_transpose_random_attributes(tmp_path):
    """Random kernels, strides, pads, output_padding, groups (fixed seed): natively where the
    phases are plain stride-1 convs, else on ONNX Runtime; equal to ONNX Runtime either way."""
    from featherdeploy.runtime.graph import Node
    from featherdeploy.runtime.ops.geometry import conv_transpose_geometry, transpose_phases

    rng = np.random.default_rng(3)
    done = 0
    while done < 20:
        kernel = rng.integers(1, 6, size=2)
        stride = rng.integers(1, 4, size=2)
        group = int(rng.integers(1, 3))
        cin, cout = group * int(rng.integers(1, 4)), int(rng.integers(1, 4))
        attrs = {"strides": stride.tolist(), "group": group,
                 "pads": [int(rng.integers(0, k)) for k in (*kernel, *kernel)],
                 "output_padding": [int(rng.integers(0, s)) for s in stride]}
        h, w = (int(v) for v in rng.integers(2, 8, size=2))
        geo_node = Node("ConvTranspose", "op", ["x", "w"], ["y"], attrs, "", None)
        w_shape = (cin, cout, *kernel)
        try:
            geo = conv_transpose_geometry(geo_node, (1, cin, h, w), w_shape)
        except Exception:  # an empty output: not a valid model
            continue
        device = "native" if transpose_phases(geo, (h, w)) is not None else "onnxruntime"
        bias = [np.linspace(-1, 1, cout * group, dtype=np.float32)] if done % 2 else []
        check_op(tmp_path, "ConvTranspose", ["x", _sparse_weight(w_shape, 0.5, done), *bias],
                 [(1, cin, h, w), (3, cin, h, w)], device=device, **attrs)
        done += 1


def test_resize_random_sizes_and_scales(tmp_path):
    """Random scales or sizes, modes and coordinate transformations (fixed seed)."""
    rng = np.random.default_rng(4)
    transforms = [*TRANSFORMS, "tf_half_pixel_for_nn"]
    done = 0
    while done < 30:
        mode = ("nearest", "linear")[done % 2]
        attrs = {"mode": mode, "coordinate_transformation_mode":
                 transforms[int(rng.integers(0, 5 if mode == "nearest" else 4))]}
        if mode == "nearest":
            attrs["nearest_mode"] = NEAREST_MODES[int(rng.integers(0, 4))]
        h, w = (int(v) for v in rng.integers(1, 12, size=2))
        opset = (11, 13, 19)[done % 3]
        if rng.random() < 0.5:
            scales = rng.choice([0.25, 0.5, 0.6, 0.75, 1.25, 1.5, 1.7, 2.0, 2.5, 3.0], size=2)
            if int(h * scales[0]) < 1 or int(w * scales[1]) < 1:
                continue
            inputs = _resize_inputs(opset, tuple(scales))
        else:
            sizes = tuple(int(v) for v in rng.integers(1, 20, 2))
            if attrs["coordinate_transformation_mode"] == "tf_half_pixel_for_nn" and (
                    sizes[0] == h or sizes[1] == w):
                continue  # ONNX Runtime treats an unscaled axis specially in this mode
            inputs = _resize_inputs(opset, sizes=sizes, batch=2)
        check_op(tmp_path, "Resize", inputs, [(2, 3, h, w)], opset=opset, threads=(1,),
                 **attrs)
        done += 1
