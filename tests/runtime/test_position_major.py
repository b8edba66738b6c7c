"""Position-major interleaved tensors (runtime/planner/layout.py ``Tensor.position_major``): a
position's channels adjacent, for tensors that only group-1 strided CSR convs write and read
(runtime/ops/conv.py ``_position_major_output``; ConvSpec ``in_ws`` / ``out_ws`` / ``res_ws``).

What can go wrong: a tap offset, position step, zero border or residual addressed with the
channel-major strides; a tile or kernel whose tap order assumes channel-major offsets; a reader
other than such a conv seeing a position-major tensor. The tests run small networks in which
every combination occurs (channel-major input and position-major output, and back; residuals
of either order; strides, dilations, 1x1 and 3x3; generated tiles and the CSR kernel; one and
two threads; a poisoned arena) against ONNX Runtime and against the channel-major plan."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime import _native
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.layout import spatial_tensor
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input


def _sparse(rng: np.random.Generator, shape: tuple[int, ...], density: float) -> np.ndarray:
    w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.3)
    w[rng.random(shape) >= density] = 0.0
    return w


def _chain(channels: int, kernel: int, stride: int, dilation: int) -> onnx.ModelProto:
    """a = relu(conv_a(x)) (kernel, stride, dilation; one output channel without weights);
    b = relu(conv_b(a)) 3x3 dilated; c = relu(conv_c(b) + a) 1x1; d = conv_d(c) 3x3 stride 2
    + relu; y = conv_e(d) 1x1, the graph output. a..d have only conv readers."""
    rng = np.random.default_rng(channels * 100 + kernel * 10 + stride + dilation)
    wa = _sparse(rng, (channels, 3, kernel, kernel), 0.25)
    wa[5] = 0.0  # an empty output channel: the readers' taps on it are dropped
    inits = {"wa": wa, "ba": rng.standard_normal(channels).astype(np.float32),
             "wb": _sparse(rng, (channels, channels, 3, 3), 0.3),
             "wc": _sparse(rng, (channels, channels, 1, 1), 0.4),
             "wd": _sparse(rng, (channels, channels, 3, 3), 0.3),
             "we": _sparse(rng, (8, channels, 1, 1), 0.5)}
    pad_a = dilation * (kernel - 1) // 2
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a0"], name="a", pads=[pad_a] * 4,
                         strides=[stride] * 2, dilations=[dilation] * 2),
        helper.make_node("Relu", ["a0"], ["a"], name="a_relu"),
        helper.make_node("Conv", ["a", "wb"], ["b0"], name="b", pads=[dilation] * 4,
                         dilations=[dilation] * 2),
        helper.make_node("Relu", ["b0"], ["b"], name="b_relu"),
        helper.make_node("Conv", ["b", "wc"], ["c0"], name="c"),
        helper.make_node("Add", ["c0", "a"], ["c1"], name="c_add"),
        helper.make_node("Relu", ["c1"], ["c"], name="c_relu"),
        helper.make_node("Conv", ["c", "wd"], ["d0"], name="d", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Relu", ["d0"], ["d"], name="d_relu"),
        helper.make_node("Conv", ["d", "we"], ["y"], name="e"),
    ]
    return graph_model(nodes, ["N", 3, 20, 20], inits, name="chain")


def _plan(path, shape, threads: int, *, position_major: bool = True, jit: bool = True,
          poison: bool = False):
    planner = PlannerOptions(position_major=position_major, poison_arena=poison)
    with use_options(EngineOptions(jit=jit, planner=planner)):
        return plan_graph(load_graph(path), shape, threads, interleave=True)


def _orders(specs) -> set[str]:
    """Which of input, output and residual some conv addresses position-major."""
    found = set()
    for s in specs:
        found |= {k for k, ws in (("in", s.in_ws), ("out", s.out_ws), ("res", s.res_ws)) if ws}
    return found


CASES = [(3, 1, 1), (3, 2, 1), (1, 1, 1), (3, 1, 2), (5, 2, 1)]  # kernel, stride, dilation


@pytest.mark.parametrize("kernel,stride,dilation", CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("jit", [True, False])
def test_position_major_chain_equals_ort(tmp_path, conv_specs, kernel, stride, dilation,
                                         threads, jit):
    """Every conv but the first and last reads and writes position-major (the first reads the
    interleaved input, the last writes the caller's array), and the result equals ORT and the
    channel-major plan, on 1 and 2 threads, with generated tiles and with the CSR kernel."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(32, kernel, stride, dilation), str(path))
    x = random_input((16, 3, 20, 20), seed=kernel + stride + dilation)
    plan = _plan(path, x.shape, threads, jit=jit)
    assert _orders(conv_specs) == {"in", "out", "res"}
    first, last = conv_specs[0], conv_specs[-1]
    assert (first.in_ws, first.out_ws > 0) == (0, True)
    assert (last.in_ws > 0, last.out_ws) == (True, 0)
    # Strided convs carry no stream mask: a position-major stream is C times a plane (at 224
    # px the masks took 570 MB of ResNet-50's plan).
    assert all(len(s.mask) == 0 for s in conv_specs if s.strided)
    expected = ort_run(path, x)
    for _ in range(2):  # the arena is reused between calls
        assert_close(run_plan(plan, x), expected)
    channel_major = _plan(path, x.shape, threads, position_major=False, jit=jit)
    assert_close(run_plan(channel_major, x), run_plan(plan, x))


@pytest.mark.parametrize("batch", [16, 32])
def test_position_major_poisoned_arena(tmp_path, batch):
    """With the workspace starting as NaN, nothing reads a float no step wrote: the zero
    borders of position-major tensors are where convs read their padding, and the channel
    without weights is never read. Groups of 32 images put two vectors at each position."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(32, 3, 1, 1), str(path))
    x = random_input((batch, 3, 20, 20), seed=batch)
    y = run_plan(_plan(path, x.shape, 1, poison=True), x)
    assert np.isfinite(y).all()
    assert_close(y, ort_run(path, x))


def test_position_major_nan_stays_in_its_image(tmp_path):
    """NaN in one image's input gives NaN in that image's output and nowhere else."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(32, 3, 1, 1), str(path))
    x = random_input((16, 3, 20, 20), seed=1)
    x[6, 1, 4, 7] = np.nan
    y = run_plan(_plan(path, x.shape, 2), x)
    assert np.isnan(y[6]).any()
    others = np.delete(y, 6, axis=0)
    assert np.isfinite(others).all()
    assert_close(others, np.delete(ort_run(path, x), 6, axis=0))


def _mixed_readers() -> onnx.ModelProto:
    """p = conv(x) is read by a conv and by a depthwise conv; q = conv(p) by a conv and a
    MaxPool; r = conv(q) only by a conv (position-major)."""
    rng = np.random.default_rng(9)
    c = 32
    inits = {n: _sparse(rng, (c, c, 3, 3), 0.3) for n in ("wq", "wr", "ws")}
    inits["wp"] = _sparse(rng, (c, 3, 3, 3), 0.6)
    inits["wdw"] = _sparse(rng, (c, 1, 3, 3), 1.0)
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "wp"], ["p"], name="p", **same),
             helper.make_node("Conv", ["p", "wdw"], ["dw"], name="dw", group=c, **same),
             helper.make_node("Conv", ["p", "wq"], ["q"], name="q", **same),
             helper.make_node("MaxPool", ["q"], ["m"], name="pool", kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["q", "wr"], ["r"], name="r", **same),
             helper.make_node("Conv", ["r", "ws"], ["s"], name="s", **same),
             helper.make_node("Add", ["s", "m"], ["t"], name="t"),
             helper.make_node("Add", ["t", "dw"], ["y"], name="y")]
    return graph_model(nodes, ["N", 3, 12, 12], inits, name="mixed")


def test_other_readers_keep_channel_major(tmp_path, conv_specs):
    """A tensor some depthwise conv or non-conv step reads stays channel-major; only r, read
    by one conv alone, is position-major. Equal to ORT."""
    path = tmp_path / "mixed.onnx"
    onnx.save(_mixed_readers(), str(path))
    x = random_input((16, 3, 12, 12), seed=2)
    plan = _plan(path, x.shape, 2)
    writes = [s.out_ws > 0 for s in conv_specs]
    reads = [s.in_ws > 0 for s in conv_specs]
    assert sum(writes) == 1 and sum(reads) == 1
    assert writes.index(True) + 1 == reads.index(True)  # r, then s reading it
    assert_close(run_plan(plan, x), ort_run(path, x))


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_position_major_tensor_layout(pad):
    """A position's channels are adjacent runs of `lanes` floats; every padded position is
    either interior (its view) or covered by exactly one border view, none outside the
    buffer."""
    lanes, c, h, w = 16, 5, 4, 6
    t = spatial_tensor((lanes, c, h, w), pad, PlannerOptions(), lanes, position_major=True)
    assert (t.cs, t.ws, t.rs, t.lanes) == (lanes, c * lanes, (w + 2 * pad) * c * lanes, lanes)
    hits = np.zeros(t.buf.size, np.int32)

    def mark(view, weight: int) -> None:
        idx = np.zeros((1,), np.int64) + view.origin
        for d, s in zip(view.dims, view.strides, strict=True):
            idx = (idx[:, None] + np.arange(d)[None, :] * s).reshape(-1)
        assert idx.min() >= 0 and idx.max() < t.buf.size
        np.add.at(hits, idx, weight)

    mark(t.view(), 1)
    stream = t.stream_view().boxes()
    assert sorted(stream.dims) == sorted((c, h, w, lanes))
    if pad:
        border = t.buf.border
        for view in [*border.ends, *([border.gaps] if border.gaps else [])]:
            mark(view, 100)
    plane = hits[: (h + 2 * pad) * t.rs]
    assert set(np.unique(plane)) <= ({1, 100} if pad else {1})
    assert (plane == 1).sum() == lanes * c * h * w


def test_position_major_off_plans_channel_major(tmp_path, conv_specs):
    """PlannerOptions(position_major=False): no conv addresses a position-major tensor."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(32, 3, 1, 1), str(path))
    x = random_input((16, 3, 20, 20), seed=3)
    plan = _plan(path, x.shape, 1, position_major=False)
    assert _orders(conv_specs) == set()
    assert_close(run_plan(plan, x), ort_run(path, x))



def test_other_readers_get_a_channel_major_copy(tmp_path, monkeypatch, conv_specs):
    """Were a position-major tensor read by anything but such a conv (depthwise convs, max
    pooling, element-wise steps, the graph output), the planner hands that reader a
    channel-major copy: forced here by storing every conv output position-major."""
    import featherdeploy.runtime.ops.conv as conv_ops

    monkeypatch.setattr(conv_ops, "_position_major_output", lambda b, name: True)
    path = tmp_path / "mixed.onnx"
    onnx.save(_mixed_readers(), str(path))
    x = random_input((16, 3, 12, 12), seed=4)
    plan = _plan(path, x.shape, 2)
    assert sum(s.out_ws > 0 for s in conv_specs) == 3  # q, r and s (p runs on BSR)
    assert_close(run_plan(plan, x), ort_run(path, x))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_reads_position_major(tmp_path, conv_specs, op):
    """A conv whose only reader is a global pool writes position-major; the pool walks it in
    place (as after ResNet's last block). Equal to ORT, NaN in one image staying there."""
    rng = np.random.default_rng(11)
    inits = {"wa": _sparse(rng, (32, 3, 3, 3), 0.25), "wb": _sparse(rng, (48, 32, 1, 1), 0.3)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "wb"], ["b"], name="b"),
             helper.make_node(op, ["b"], ["y"], name="pool")]
    path = tmp_path / "pool.onnx"
    onnx.save(graph_model(nodes, ["N", 3, 9, 11], inits, name="pool"), str(path))
    x = random_input((16, 3, 9, 11), seed=5)
    x[3, 0, 2, 2] = np.nan
    plan = _plan(path, x.shape, 2)
    assert [s.out_ws > 0 for s in conv_specs] == [True, True]
    y = run_plan(plan, x)
    assert np.isnan(y[3]).any() and np.isfinite(np.delete(y, 3, axis=0)).all()
    assert_close(np.delete(y, 3, axis=0), np.delete(ort_run(path, x), 3, axis=0))


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_position_major_on_every_isa(tmp_path, conv_specs, isa):
    """The portable and AVX2 builds (4 or 8 floats a vector: several vectors a position, no
    generated tiles) run the same position-major plan and equal ORT."""
    from featherdeploy.runtime import native_isa

    if native_isa(isa) != isa:
        pytest.skip(f"this CPU runs no {isa} kernels")
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(32, 3, 2, 1), str(path))
    x = random_input((16, 3, 20, 20), seed=9)
    planner = PlannerOptions(position_major=True)
    with use_options(EngineOptions(isa=isa, planner=planner)):
        plan = plan_graph(load_graph(path), x.shape, 2, interleave=True)
    assert _orders(conv_specs) == {"in", "out", "res"}
    assert_close(run_plan(plan, x), ort_run(path, x))


def _few_taps_chain(density: float) -> onnx.ModelProto:
    """a = relu(conv_a(x)) 3x3, read by b alone: position-major; b = conv_b(a) 1x1 of this
    density (0.1: ~3 taps per output channel; 0.02: also each input load feeds ~1 FMA of a
    tile); y = conv_c(b) 1x1."""
    rng = np.random.default_rng(11)
    inits = {"wa": _sparse(rng, (32, 3, 3, 3), 0.5), "wb": _sparse(rng, (64, 32, 1, 1), density),
             "wc": _sparse(rng, (8, 64, 1, 1), 0.5)}
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a0"], name="a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a0"], ["a"], name="a_relu"),
             helper.make_node("Conv", ["a", "wb"], ["b"], name="b"),
             helper.make_node("Conv", ["b", "wc"], ["y"], name="c")]
    return graph_model(nodes, ["N", 3, 20, 20], inits, name="few_taps")


@pytest.mark.skipif(_native.native_isa() != "avx512" or not sys.platform.startswith("linux"),
                    reason="the code generator targets x86-64 AVX-512 on Linux")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("density", [0.1, 0.02])
def test_few_taps_on_position_major_input_run_generated_code(tmp_path, conv_specs, threads,
                                                             density):
    """A 1x1 conv with few taps a channel or little input reuse keeps the CSR kernel on a
    channel-major input (test_jit) but runs generated tiles on a position-major one, whose CSR
    chunks would read 16 positions' worth of every input channel; equal to ORT and to the CSR
    kernel."""
    path = tmp_path / "few_taps.onnx"
    onnx.save(_few_taps_chain(density), str(path))
    x = random_input((16, 3, 20, 20), seed=4)
    plan = _plan(path, x.shape, threads)
    b = next(name for record, name, _ in plan.steps() if record.node == "b")
    assert b == "conv_jit"
    assert conv_specs[1].in_ws > 0  # b reads a position-major
    assert_close(run_plan(plan, x), ort_run(path, x))
    csr = _plan(path, x.shape, threads, jit=False)
    np.testing.assert_array_equal(run_plan(plan, x), run_plan(csr, x))
