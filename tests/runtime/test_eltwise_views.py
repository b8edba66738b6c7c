"""Element-wise steps (steps/eltwise.cpp: copy, fill, unary, binary) on batch-interleaved views
(the images of a position adjacent, dim 0 of stride 1, as interleaved plans store them), mixed
with planar and broadcast views: each step's output equals NumPy's on the same strided arrays,
on one thread and two. The steps reorder such views so a row is contiguous; this checks the
reordering never changes which element goes where."""

from __future__ import annotations

import numpy as np
import pytest

from featherdeploy.runtime.ops.fusion import CLAMP_NONE, FusedActivation
from featherdeploy.runtime.planner.layout import native

N, C, H, W = 16, 3, 5, 7
PAD = 1  # a zero border around each interleaved plane, as convs read it


def _interleaved_strides(pad: int) -> tuple[int, int, int, int]:
    """(n, c, h, w) strides of planes (H + 2 pad) x (W + 2 pad) positions of N floats."""
    row = (W + 2 * pad) * N
    return 1, (H + 2 * pad) * row, row, N


def _planar_strides() -> tuple[int, int, int, int]:
    return C * H * W, H * W, W, 1


LAYOUTS = {"interleaved": lambda: _interleaved_strides(PAD),
           "interleaved_compact": lambda: _interleaved_strides(0),
           "planar": _planar_strides}


def _buffer(layout: str) -> tuple[np.ndarray, int, tuple[int, ...]]:
    """A flat buffer big enough for the layout, the origin of element (0, 0, 0, 0), strides."""
    strides = LAYOUTS[layout]()
    origin = strides[2] * PAD + strides[3] * PAD if layout == "interleaved" else 0
    size = origin + sum((d - 1) * s for d, s in zip((N, C, H, W), strides, strict=True)) + 1
    size += strides[2] * PAD + strides[3] * PAD if layout == "interleaved" else 0
    return np.zeros(size, np.float32), origin, strides


def _strided(flat: np.ndarray, origin: int, strides: tuple[int, ...],
             dims: tuple[int, ...] = (N, C, H, W)) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(flat[origin:], dims, [4 * s for s in strides])


def _view(space: str, slot: int, origin: int, dims, strides):
    n = native()
    return n.View(n.SPACES[space], slot, origin, tuple(dims), tuple(strides))


def _run(spec_fn, inputs: list[np.ndarray], out: np.ndarray, threads: int) -> np.ndarray:
    n = native()
    options = n.PlanOptions()
    options.threads = threads
    plan = n.Plan(options, 16, [np.zeros(1, np.float32)], [x.size for x in inputs], [out.size])
    plan.add(spec_fn())
    result = out.copy()
    plan.run(inputs, [result])
    return result


def _filled(layout: str, seed: int) -> tuple[np.ndarray, int, tuple[int, ...], np.ndarray]:
    flat, origin, strides = _buffer(layout)
    values = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(np.float32)
    _strided(flat, origin, strides)[...] = values
    return flat, origin, strides, values


PAIRS = [("interleaved", "interleaved"), ("interleaved_compact", "interleaved_compact"),
         ("interleaved", "interleaved_compact"), ("planar", "interleaved"),
         ("interleaved", "planar")]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("src_layout", "dst_layout"), PAIRS)
def test_copy(src_layout, dst_layout, threads):
    src, s_origin, s_strides, values = _filled(src_layout, 1)
    dst, d_origin, d_strides = _buffer(dst_layout)
    dst[:] = 7.0  # untouched border floats must stay

    def spec():
        s = native().CopySpec()
        s.src = _view("input", 0, s_origin, (N, C, H, W), s_strides)
        s.dst = _view("output", 0, d_origin, (N, C, H, W), d_strides)
        return s

    out = _run(spec, [src], dst, threads)
    np.testing.assert_array_equal(_strided(out, d_origin, d_strides), values)
    expected_rest = dst.copy()
    _strided(expected_rest, d_origin, d_strides)[...] = values
    np.testing.assert_array_equal(out, expected_rest)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("layout", ["interleaved", "interleaved_compact"])
def test_fill(layout, threads):
    dst, origin, strides = _buffer(layout)

    def spec():
        s = native().FillSpec()
        s.dst = _view("output", 0, origin, (N, C, H, W), strides)
        s.value = 2.5
        return s

    out = _run(spec, [np.zeros(1, np.float32)], dst, threads)
    expected = dst.copy()
    _strided(expected, origin, strides)[...] = 2.5
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act", ["none", "relu", "relu6", "sigmoid"])
@pytest.mark.parametrize(("src_layout", "dst_layout"), PAIRS)
def test_unary_affine_per_channel(src_layout, dst_layout, act, threads):
    """BatchNorm-like affine per channel, then an activation; NaN in, NaN out (clamps too)."""
    src, s_origin, s_strides, values = _filled(src_layout, 2)
    values[0, 0, 0, :3] = np.nan
    values[3, 2, 4, -2:] = np.nan
    _strided(src, s_origin, s_strides)[...] = values
    dst, d_origin, d_strides = _buffer(dst_layout)
    scale = np.array([0.5, -2.0, 3.0], np.float32)
    shift = np.array([1.0, 0.25, -4.0], np.float32)
    fused = {"none": CLAMP_NONE, "relu": FusedActivation("clip", lo=0.0, hi=np.inf),
             "relu6": FusedActivation("clip", lo=0.0, hi=6.0),
             "sigmoid": FusedActivation("sigmoid")}[act]

    def spec():
        s = native().UnarySpec()
        s.src = _view("input", 0, s_origin, (N, C, H, W), s_strides)
        s.dst = _view("output", 0, d_origin, (N, C, H, W), d_strides)
        s.scale, s.shift, s.act = scale, shift, fused.to_native(C)
        return s

    out = _run(spec, [src], dst, threads)
    y = values * scale.reshape(1, C, 1, 1) + shift.reshape(1, C, 1, 1)
    y = {"none": y, "relu": np.maximum(y, 0), "relu6": np.minimum(np.maximum(y, 0), 6),
         "sigmoid": 1 / (1 + np.exp(-y))}[act]
    got = _strided(out, d_origin, d_strides)
    assert np.isnan(got).sum() == np.isnan(y).sum() == 5
    np.testing.assert_allclose(got, y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("relu6", [False, True])
@pytest.mark.parametrize("broadcast_first", [False, True])
@pytest.mark.parametrize("operand", ["tensor", "per_image_channel", "per_image_channel_compact",
                                     "per_channel"])
@pytest.mark.parametrize("layout", ["interleaved", "interleaved_compact"])
def test_binary_with_broadcast(layout, operand, broadcast_first, relu6, threads):
    """a - b (or b - a: the order matters) with b a whole tensor, one value per (image,
    channel) (a squeeze-and-excitation gate: stored images adjacent per channel, or compact
    image by image as the gate's fully-connected path leaves it) or one per channel
    (broadcast over the images: stride 0 on dim 0)."""
    a, a_origin, a_strides, a_values = _filled(layout, 3)
    dst, d_origin, d_strides = _buffer(layout)
    if operand == "tensor":
        b, b_origin, b_strides, b_values = _filled(layout, 4)
        b_dims = (N, C, H, W)
    elif operand == "per_image_channel":
        b_values = np.random.default_rng(5).standard_normal((N, C, 1, 1)).astype(np.float32)
        b = b_values.transpose(1, 0, 2, 3).reshape(-1).copy()  # images adjacent per channel
        b_origin, b_strides, b_dims = 0, (1, N, 0, 0), (N, C, H, W)
    elif operand == "per_image_channel_compact":
        b_values = np.random.default_rng(7).standard_normal((N, C, 1, 1)).astype(np.float32)
        b = b_values.reshape(-1).copy()
        b_origin, b_strides, b_dims = 0, (C, 1, 0, 0), (N, C, H, W)
    else:
        b_values = np.random.default_rng(6).standard_normal((1, C, 1, 1)).astype(np.float32)
        b = b_values.reshape(-1).copy()
        b_origin, b_strides, b_dims = 0, (0, 1, 0, 0), (1, C, H, W)

    def spec():
        s = native().BinarySpec()
        tensor = _view("input", 0, a_origin, (N, C, H, W), a_strides)
        broadcast = _view("input", 1, b_origin, b_dims, b_strides)
        s.a, s.b = (broadcast, tensor) if broadcast_first else (tensor, broadcast)
        s.dst = _view("output", 0, d_origin, (N, C, H, W), d_strides)
        s.op = int(native().BINARY_OPS["sub"])
        s.act = (FusedActivation("clip", lo=0.0, hi=6.0) if relu6 else CLAMP_NONE).to_native(C)
        return s

    out = _run(spec, [a, b], dst, threads)
    want = b_values - a_values if broadcast_first else a_values - b_values
    if relu6:
        want = np.minimum(np.maximum(want, 0), 6)
    np.testing.assert_allclose(_strided(out, d_origin, d_strides), want, rtol=1e-6, atol=1e-6)
