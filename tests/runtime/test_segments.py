"""Batch-1 convs on column segments (planner/layout.py segment_tensor): lane i of a position
holds column i * P + p of its row, so the batch-interleaved conv kernel runs one image with
aligned loads.

What can go wrong is in the halos (each row's positions -1 and P hold the neighbouring segments'
edge columns): written by the planar -> segments copy (segments.cpp, P = 1, 2, 4 as vector
(de-)interleaves, others element by element; checked on its own against the NumPy reference)
and by every segment conv's epilogue, and read by the next conv's edge taps. Each conv test
checks that segments were really used."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnx
import pytest
from onnx import helper

import featherdeploy.runtime.ops.conv as conv_ops
from featherdeploy.runtime import _native, native_isa
from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels import native as nat
from featherdeploy.runtime.kernels import reference as ref
from featherdeploy.runtime.options import EngineOptions
from featherdeploy.runtime.planner.layout import segment_positions
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input

pytestmark = pytest.mark.aarch64  # native column segments, also on aarch64 (make test-aarch64)


def _sparse(shape: tuple[int, ...], density: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) >= density] = 0.0
    return w


def _record(monkeypatch, decide) -> list[bool]:
    """Plans decide segments with ``decide`` (same arguments as _segment_conv), recorded."""
    calls: list[bool] = []

    def spy(*args):
        calls.append(decide(*args))
        return calls[-1]

    monkeypatch.setattr(conv_ops, "_segment_conv", spy)
    return calls


@pytest.fixture
def segment_calls(monkeypatch):
    """Records _segment_conv's verdict for every conv planned."""
    return _record(monkeypatch, conv_ops._segment_conv)


@pytest.fixture
def fit_calls(monkeypatch):
    """Every conv that fits segments runs on them (even alone), recorded."""
    return _record(monkeypatch, conv_ops._segments_fit)


@contextmanager
def _kernels(isa: str | None) -> Iterator[int]:
    """Plans within use kernel build ``isa`` (None: the CPU's own); yields its vector width."""
    isa = isa or "auto"
    if isa != "auto":
        assert native_isa(isa) == isa
    with nat.use_options(EngineOptions(isa=isa)):
        yield _native.vector_floats(isa)


# Kernel builds to check: the CPU's own, AVX2 when that is a narrower x86 build here, generic.
ISAS = [None, *(["avx2"] if native_isa() == "avx512" else []), "generic"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("positions", [1, 2, 3, 4])
@pytest.mark.parametrize("stride,kernel,pads", [(1, 3, 1), (1, 1, 0), (2, 3, 1), (2, 1, 0)])
@pytest.mark.parametrize("residual", [False, True])
def test_segment_conv_equals_reference(fit_calls, isa, positions, stride, kernel, pads,
                                       residual):
    """One conv (bias, ReLU, optional residual) on segments of 1-4 positions per lane equals
    the NumPy reference, on every kernel build (16, 8 and 4 lanes)."""
    with _kernels(isa) as lanes:
        _check_segment_conv(fit_calls, lanes, positions, stride, kernel, pads, residual)


def _check_segment_conv(fit_calls, lanes, positions, stride, kernel, pads, residual):
    width = positions * lanes
    x = random_input((1, 12, 5, width), seed=positions)
    w = _sparse((10, 12, kernel, kernel), 0.3, seed=kernel)
    b = random_input((10,), seed=3)
    out_w = (width + 2 * pads - kernel) // stride + 1
    res = random_input((1, 10, (5 + 2 * pads - kernel) // stride + 1, out_w), 4) if residual \
        else None
    args = dict(stride=(stride, stride), pads=(pads,) * 4, residual=res, clamp=(0.0, np.inf),
                kernel="csr")
    with nat.inner_output():
        y = nat.conv2d(x, w, b, **args)
    assert_close(y, ref.conv2d(x, w, b, **args))
    expected = segment_positions(width, lanes) > 0 and (
        stride == 1 or segment_positions(out_w, lanes) * stride == positions)
    assert fit_calls == [expected]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("positions", [1, 2, 3, 4, 5])
def test_segment_rows_equal_reference(isa, positions):
    """segments.cpp both ways (vector (de-)interleaves for 1, 2, 4 positions, element by
    element otherwise) equals the NumPy reference, halos included."""
    with _kernels(isa) as lanes:
        rows = random_input((3, positions * lanes), seed=positions)
        segments = nat.to_segments(rows, lanes)
        np.testing.assert_array_equal(segments, ref.to_segments(rows, lanes))
        np.testing.assert_array_equal(nat.from_segments(segments), rows)
        np.testing.assert_array_equal(ref.from_segments(segments), rows)
        with pytest.raises(ValueError, match="lanes"):
            nat.to_segments(rows, 2 * lanes)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("images", [1, 3, 4, 8, 16, 19, 32])
@pytest.mark.parametrize("width", [1, 5, 8, 16, 37, 224])
def test_interleave_images_equals_reference(isa, images, width):
    """The batch-interleaving copy (V x V tiles transposed in registers, partial tiles at a
    row's end, element by element for images beyond whole vectors) equals the NumPy transpose;
    NaN and infinities are moved, not computed."""
    with _kernels(isa):
        rows = random_input((images, width), seed=images * 1000 + width)
        rows[0, 0], rows[-1, -1] = np.nan, -np.inf
        np.testing.assert_array_equal(nat.interleave_images(rows), ref.interleave_images(rows))


def _chain(width: int) -> onnx.ModelProto:
    """3x3 (ReLU) -> 3x3 (+ first, ReLU; output over its residual) -> stride-2 3x3 and 1x1
    shortcut -> 3x3 (+ shortcut) -> global average pool, 16 channels, 80% sparse."""
    inits = {"w0": _sparse((16, 8, 3, 3), 0.2, 0), "w1": _sparse((16, 16, 3, 3), 0.2, 1),
             "w2": _sparse((16, 16, 3, 3), 0.2, 2), "wd": _sparse((16, 16, 1, 1), 0.5, 3),
             "w3": _sparse((16, 16, 3, 3), 0.2, 4), "b1": random_input((16,), 5)}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4, name="c0"),
             helper.make_node("Relu", ["c0"], ["a"], name="r0"),
             helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], pads=[1] * 4, name="c1"),
             helper.make_node("Add", ["c1", "a"], ["s1"], name="add1"),
             helper.make_node("Relu", ["s1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1] * 4, strides=[2, 2],
                              name="c2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r1", "wd"], ["d"], strides=[2, 2], name="down"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], pads=[1] * 4, name="c3"),
             helper.make_node("Add", ["c3", "d"], ["s3"], name="add3"),
             helper.make_node("GlobalAveragePool", ["s3"], ["y"], name="pool")]
    return graph_model(nodes, [1, 8, 7, width], inits, name="chain")


@pytest.mark.parametrize("width", [16, 32, 48, 64])
@pytest.mark.parametrize("threads", [1, 2])
def test_segment_chain_equals_ort(tmp_path, segment_calls, width, threads):
    """Convs reading halos that earlier convs wrote, in place over a residual, through a stride-2
    change of segment width, and back to planar for the pool (and for 8-column planes); plans
    for 2 threads stay planar."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(width), str(path))
    x = random_input((1, 8, 7, width), seed=width)
    plan = nat.plan_graph(load_graph(path), x.shape, threads)
    segments = threads == 1 and segment_positions(width, _native.vector_floats()) > 0
    assert sum(segment_calls) >= 2 if segments else not any(segment_calls)
    assert ("segment_copy" in plan.native.step_names()) == segments
    for _ in range(2):  # halos and residuals intact on every call
        assert_close(nat.run_plan(plan, x), ort_run(path, x))
