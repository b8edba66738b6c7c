"""Weight-specialised machine-code conv tiles (runtime/native/jit/jit_x86.cpp): on batch-interleaved
groups of 16 images on AVX-512, a conv whose input loads feed enough FMAs runs as "conv_jit".
Its outputs must equal the CSR kernel's bit for bit (each channel adds its taps in CSR order)
and the NumPy reference within the kernel tolerance, for every geometry, epilogue and thread
split; EngineOptions(jit=False) turns it off."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from featherdeploy.runtime import _native
from featherdeploy.runtime.kernels import native as nat
from featherdeploy.runtime.kernels import reference as ref
from featherdeploy.runtime.options import EngineOptions
from tests.runtime.onnx_cases import assert_close, random_input

pytestmark = pytest.mark.skipif(
    _native.native_isa() != "avx512" or not sys.platform.startswith("linux"),
    reason="the code generator targets x86-64 AVX-512 on Linux (not this CPU or OS)")

LANES = 16
ATOL = RTOL = 1e-4  # the bound; the CSR kernel's outputs are compared bit for bit


def _weight(shape, density, seed=3):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)


def _plan(x, w, b, geometry, residual, clamp, threads, jit=True):
    with nat.batch_interleaved(), nat.use_options(EngineOptions(jit=jit)):
        return nat.conv2d_plan(x.shape, w, b, **geometry, residual=residual, clamp=clamp,
                               kernel="csr", threads=threads)


GEOMETRIES = [
    {"pads": (1, 1, 1, 1)},
    {"pads": (0, 0, 0, 0)},
    {"stride": (2, 2), "pads": (1, 1, 1, 1)},
    {"stride": (1, 2), "pads": (0, 1, 2, 1)},
    {"dilation": (2, 2), "pads": (2, 2, 2, 2)},
    {"group": 2, "pads": (1, 1, 1, 1)},
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
@pytest.mark.parametrize("channels,kernel", [((8, 24), 3), ((40, 50), 3), ((16, 33), 1),
                                             ((6, 20), 5)], ids=str)
@pytest.mark.parametrize("density", [0.5, 0.1])
@pytest.mark.parametrize("epilogue", ["none", "relu6+residual", "relu"])
@pytest.mark.parametrize("threads", [1, 2])
def test_jit_equals_csr_and_reference(geometry, channels, kernel, density,
                                      epilogue, threads):
    cin, cout = channels
    group = geometry.get("group", 1)
    x = random_input((LANES, cin, 11, 9))
    w = _weight((cout - cout % group, cin // group, kernel, kernel), density)
    b = np.linspace(-0.5, 0.5, w.shape[0], dtype=np.float32)
    out_hw = ref.conv2d(x, w, **geometry).shape[2:]
    residual = random_input((LANES, w.shape[0], *out_hw), seed=7) if "residual" in epilogue \
        else None
    clamp = {"none": None, "relu": (0.0, float("inf")), "relu6+residual": (0.0, 6.0)}[epilogue]
    jit_plan = _plan(x, w, b, geometry, residual, clamp, threads)
    if channels == (8, 24) and density == 0.5:  # >= 6 taps per channel, loads shared by ~12
        assert "conv_jit" in jit_plan.native.step_names()
    csr_plan = _plan(x, w, b, geometry, residual, clamp, threads, jit=False)
    assert "conv_jit" not in csr_plan.native.step_names()
    y_jit, y_csr = nat.run_plan(jit_plan, x), nat.run_plan(csr_plan, x)
    np.testing.assert_array_equal(y_jit, y_csr)
    expected = ref.conv2d(x, w, b, **geometry, residual=residual, clamp=clamp)
    assert_close(y_jit, expected, ATOL, RTOL)


def test_jit_runs_where_loads_are_shared():
    """A 3x3 conv at 50% density shares each input load between many channels of a tile: it
    runs on generated code, and equals the reference."""
    x = random_input((LANES, 32, 8, 8))
    w = _weight((32, 32, 3, 3), 0.5)
    b = np.zeros(32, np.float32)
    plan = _plan(x, w, b, {"pads": (1, 1, 1, 1)}, None, None, 1)
    assert "conv_jit" in plan.native.step_names()
    assert_close(nat.run_plan(plan, x), ref.conv2d(x, w, b, pads=(1, 1, 1, 1)), ATOL, RTOL)


@pytest.mark.parametrize("channels,epilogue,tiles", [
    (31, "none", 1), (31, "relu", 2), (60, "relu", 2), (60, "relu6", 3)])
def test_jit_tiles_take_every_register_the_clamp_leaves(channels, epilogue, tiles):
    """A tile keeps an accumulator in every vector register but the input's and the clamp
    bounds': 31 output channels without a clamp, 30 under ReLU, 29 under ReLU6; the outputs
    equal the CSR kernel's bit for bit."""
    x = random_input((LANES, 16, 5, 5))
    w = _weight((channels, 16, 1, 1), 0.5)
    b = np.linspace(-0.5, 0.5, channels, dtype=np.float32)
    clamp = {"none": None, "relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}[epilogue]
    jit_plan = _plan(x, w, b, {}, None, clamp, 1)
    assert f"jit-tiles={tiles} " in " ".join(jit_plan.native.step_details()) + " "
    csr_plan = _plan(x, w, b, {}, None, clamp, 1, jit=False)
    np.testing.assert_array_equal(nat.run_plan(jit_plan, x), nat.run_plan(csr_plan, x))
    assert_close(nat.run_plan(jit_plan, x), ref.conv2d(x, w, b, clamp=clamp), ATOL, RTOL)


def test_jit_declines_depthwise_few_taps_and_oversized_code():
    """Depthwise convs share no load between channels, convs with few taps per channel spend
    more on each tile's epilogue than they save, and a layer whose code would outgrow the
    instruction caches keeps the CSR kernel."""
    x = random_input((LANES, 32, 6, 6))
    depthwise = _weight((32, 1, 3, 3), 1.0)
    plan = _plan(x, depthwise, np.zeros(32, np.float32), {"group": 32, "pads": (1, 1, 1, 1)},
                 None, None, 1)
    assert "conv_jit" not in plan.native.step_names()
    pointwise = _weight((64, 32, 1, 1), 0.1)  # ~3 taps per channel
    plan = _plan(x, pointwise, np.zeros(64, np.float32), {}, None, None, 1)
    assert "conv_jit" not in plan.native.step_names()
    wide = random_input((LANES, 256, 4, 4))
    dense = _weight((256, 256, 3, 3), 0.6)
    plan = _plan(wide, dense, np.zeros(256, np.float32), {"pads": (1, 1, 1, 1)}, None, None, 1)
    assert "conv_jit" not in plan.native.step_names()
    assert "conv_csr_strided" in plan.native.step_names()


@pytest.mark.parametrize("threads", [1, 2])
def test_jit_large_layer_on_long_rows_runs_in_runs(threads):
    """A layer of ~290 KB of code (over the 64 KB any row length may take) on rows of 9
    positions runs on generated code, tile runs of ~32 KB each sweeping the row; equal to the
    CSR kernel bit for bit and to the reference (residual and clamp included)."""
    x = random_input((LANES, 96, 9, 9))
    w = _weight((96, 96, 3, 3), 0.5)
    b = np.linspace(-0.5, 0.5, 96, dtype=np.float32)
    residual = random_input((LANES, 96, 9, 9), seed=7)
    geometry = {"pads": (1, 1, 1, 1)}
    jit_plan = _plan(x, w, b, geometry, residual, (0.0, 6.0), threads)
    assert "conv_jit" in jit_plan.native.step_names()
    csr_plan = _plan(x, w, b, geometry, residual, (0.0, 6.0), threads, jit=False)
    y_jit = nat.run_plan(jit_plan, x)
    np.testing.assert_array_equal(y_jit, nat.run_plan(csr_plan, x))
    expected = ref.conv2d(x, w, b, **geometry, residual=residual, clamp=(0.0, 6.0))
    assert_close(y_jit, expected, ATOL, RTOL)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel_w", [1, 3])
def test_jit_prefetching_long_rows_equals_csr(threads, kernel_w):
    """Output rows of >= 128 KB (64 channels x 40 positions x 16 lanes) make the tiles prefetch
    the output and residual vectors ahead, and a 1x1 conv on rows of >= 28 positions its input
    vectors too, reaching past the tensors' ends at the last row; results equal the CSR kernel
    bit for bit and the reference. Rows of 8 positions prefetch nothing."""
    geometry = {"pads": (0, kernel_w // 2, 0, kernel_w // 2)}
    x = random_input((LANES, 32, 3, 40))
    w = _weight((64, 32, 1, kernel_w), 0.5)
    b = np.linspace(-0.5, 0.5, 64, dtype=np.float32)
    residual = random_input((LANES, 64, 3, 40), seed=7)
    jit_plan = _plan(x, w, b, geometry, residual, (0.0, 6.0), threads)
    details = " ".join(jit_plan.native.step_details())
    assert "jit-tiles" in details and "prefetch-output" in details
    assert ("prefetch-input" in details) == (kernel_w == 1)
    csr_plan = _plan(x, w, b, geometry, residual, (0.0, 6.0), threads, jit=False)
    y_jit = nat.run_plan(jit_plan, x)
    np.testing.assert_array_equal(y_jit, nat.run_plan(csr_plan, x))
    expected = ref.conv2d(x, w, b, **geometry, residual=residual, clamp=(0.0, 6.0))
    assert_close(y_jit, expected, ATOL, RTOL)
    short = _plan(x[:, :, :, :8], w, b, geometry, residual[:, :, :, :8], (0.0, 6.0), threads)
    short_details = " ".join(short.native.step_details())
    assert "jit-tiles" in short_details and "prefetch" not in short_details


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("geometry", [{"pads": (1, 1, 1, 1)},
                                      {"stride": (2, 2), "pads": (1, 0, 1, 2)},
                                      {"dilation": (2, 2), "pads": (2, 2, 2, 2)}], ids=str)
@pytest.mark.parametrize("epilogue", ["relu6+residual", "none"])
def test_jit_input_channel_blocks_equal_csr(threads, geometry, epilogue):
    """A conv whose position reads more than 64 KB of input (160 channels x 9 taps) runs a
    piece of code per input-channel block, the partial sums kept between blocks in chunks of 8
    positions (rows of 19 leave a partial chunk); bit for bit the CSR kernel (which blocks the
    same way) and within tolerance of the reference. A 3x3 conv on 48 channels (27 KB a
    position) keeps whole tiles."""
    x = random_input((LANES, 160, 7, 19))
    w = _weight((40, 160, 3, 3), 0.1)
    b = np.linspace(-0.5, 0.5, 40, dtype=np.float32)
    out_hw = ref.conv2d(x, w, **geometry).shape[2:]
    residual = random_input((LANES, 40, *out_hw), seed=7) if "residual" in epilogue else None
    clamp = (0.0, 6.0) if "relu6" in epilogue else None
    jit_plan = _plan(x, w, b, geometry, residual, clamp, threads)
    assert "jit-blocked" in " ".join(jit_plan.native.step_details())
    csr_plan = _plan(x, w, b, geometry, residual, clamp, threads, jit=False)
    y_jit = nat.run_plan(jit_plan, x)
    np.testing.assert_array_equal(y_jit, nat.run_plan(csr_plan, x))
    expected = ref.conv2d(x, w, b, **geometry, residual=residual, clamp=clamp)
    assert_close(y_jit, expected, ATOL, RTOL)
    narrow = random_input((LANES, 48, 7, 19))
    plan = _plan(narrow, _weight((40, 48, 3, 3), 0.5), b, geometry, None, clamp, threads)
    details = " ".join(plan.native.step_details())
    assert "jit-tiles" in details and "jit-blocked" not in details


def test_jit_declines_code_beyond_the_long_row_limit():
    """Past the limit for long rows (4 MB) a layer keeps the CSR kernel."""
    x = random_input((LANES, 320, 8, 8))
    dense = _weight((320, 320, 3, 3), 1.0)  # 922k FMAs of 7 bytes: 6.5 MB
    plan = _plan(x, dense, np.zeros(320, np.float32), {"pads": (1, 1, 1, 1)}, None, None, 1)
    assert "conv_jit" not in plan.native.step_names()


def _planar_block(channels: int, hw: int, density: float, tmp_path):
    """conv3x3+Relu -> conv3x3 + x -> Relu -> conv1x1 (no activation) on one planar image:
    the inner convs store into the zero-bordered stream layout the next conv reads."""
    from onnx import helper

    from tests.runtime.onnx_cases import graph_model, save_model

    def conv(name, src, dst, k):
        return helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [dst], name=name,
                                pads=[k // 2] * 4)

    inits = {}
    for i, k in enumerate((3, 3, 1)):
        inits[f"c{i}_w"] = 0.15 * _weight((channels, channels, k, k), density, seed=11 + i)
        inits[f"c{i}_b"] = np.linspace(-0.3, 0.3, channels, dtype=np.float32)
    nodes = [conv("c0", "x", "a", 3), helper.make_node("Relu", ["a"], ["a_r"]),
             conv("c1", "a_r", "b", 3), helper.make_node("Add", ["b", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["s_r"]), conv("c2", "s_r", "y", 1)]
    return save_model(graph_model(nodes, (1, channels, hw, hw), inits), tmp_path / "block.onnx")


@pytest.mark.parametrize("hw", [12, 14, 23])
@pytest.mark.parametrize("threads", [1, 2])
def test_jit_planar_convs_equal_csr_and_ort(hw, threads, tmp_path):
    """One planar image: stride-1 convs with a clamp (here ReLU, with and without a residual)
    run on generated code whose masked stores keep the stream's zero border, bit for bit equal
    to the CSR kernel and within tolerance of ONNX Runtime; the last conv (no activation)
    keeps the CSR kernel."""
    from featherdeploy.runtime import Engine
    from tests.runtime.onnx_cases import conv_kernels, ort_run

    path = _planar_block(48, hw, 0.5, tmp_path)
    x = random_input((1, 48, hw, hw))
    jit = Engine(path, options=EngineOptions(threads=threads, backend="native", jit=True))
    csr = Engine(path, options=EngineOptions(threads=threads, backend="native", jit=False))
    kinds = conv_kernels(jit)
    assert kinds["c0"] == "jit" and kinds["c1"] == "jit" and kinds["c2"] != "jit", kinds
    assert "jit" not in conv_kernels(csr).values()
    y = jit.run(x)
    np.testing.assert_array_equal(y, csr.run(x))
    assert_close(y, ort_run(path, x), ATOL, RTOL)
