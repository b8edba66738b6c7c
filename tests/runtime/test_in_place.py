"""A conv with a fused residual writes its output over the residual when nothing reads the
residual later (planner Builder.output_over_residual); planes start their interiors on cache
lines."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime.graph import load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.builder import Builder
from featherdeploy.runtime.planner.layout import VMAX, spatial_tensor
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input

pytestmark = pytest.mark.aarch64  # native in-place outputs, also on aarch64 (make test-aarch64)


def _bottleneck(reuse_residual_later: bool) -> onnx.ModelProto:
    """1x1 -> relu (a) -> 3x3 -> relu -> 1x1 (+ a) -> relu -> 1x1, 8 channels at 20x20; with
    ``reuse_residual_later`` a final Add reads ``a`` once more."""
    rng = np.random.default_rng(1)
    inits = {}
    for name, shape in (("w0", (8, 8, 1, 1)), ("w1", (8, 8, 3, 3)), ("w2", (8, 8, 1, 1)),
                        ("w3", (8, 8, 1, 1))):
        w = rng.standard_normal(shape).astype(np.float32)
        w[rng.random(shape) < 0.5] = 0.0
        inits[name] = w
    inits["b2"] = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="c0"),
             helper.make_node("Relu", ["c0"], ["a"], name="relu0"),
             helper.make_node("Conv", ["a", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="c2"),
             helper.make_node("Add", ["c2", "a"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="c3")]
    if reuse_residual_later:
        nodes.append(helper.make_node("Add", ["c3", "a"], ["y"], name="again"))
    else:
        nodes.append(helper.make_node("Identity", ["c3"], ["y"], name="out"))
    return graph_model(nodes, ["N", 8, 20, 20], inits, name="bottleneck")


@pytest.mark.parametrize("reuse_later", [False, True])
@pytest.mark.parametrize("batch", [1, 5, 16])
@pytest.mark.parametrize("threads", [1, 2])
def test_output_over_residual_equals_ort(tmp_path, monkeypatch, reuse_later, batch, threads):
    """Planar (threads split the stream by whole vectors: row_split_min_bytes = 0), interleaved
    groups of 16 (row kernels) and of 5 (general epilogue, overlapping row tails): the output
    goes over the residual only when nothing reads the residual later, and equals ORT."""
    reused = []
    original = Builder.output_over_residual

    def spy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        reused.append(result is not None)
        return result

    monkeypatch.setattr(Builder, "output_over_residual", spy)
    path = tmp_path / "bottleneck.onnx"
    onnx.save(_bottleneck(reuse_later), str(path))
    x = random_input((batch, 8, 20, 20), seed=batch)
    # Channel-major throughout: c0 (BSR) writes `a` channel-major, and an output goes over a
    # residual only in the residual's own layout.
    planner = PlannerOptions(row_split_min_bytes=0, position_major=False)
    with use_options(EngineOptions(planner=planner)):
        plan = plan_graph(load_graph(path), x.shape, threads, interleave=batch > 1)
    # c2's output goes over `a` unless the final Add reads `a` later (that Add, fused into c3,
    # may then write over `a` itself when c3's output is not the caller's array).
    assert reused[0] is (not reuse_later)
    for _ in range(3):  # the residual must be intact at every call, whichever thread ran what
        assert_close(run_plan(plan, x), ort_run(path, x))


@pytest.mark.parametrize("shape,pad", [((1, 64, 56, 56), 1), ((1, 32, 32, 32), 1),
                                       ((2, 3, 10, 17), 2), ((3, 5, 13, 16), 0)])
def test_plane_interiors_start_cache_lines(shape, pad):
    """Planes at least a vector wide: every (image, channel) plane's first interior float is
    64-byte aligned, so 1x1 convs load and every conv stores whole lines."""
    t = spatial_tensor(shape, pad, PlannerOptions())
    for n in range(shape[0]):
        for c in range(shape[1]):
            assert (t.origin + n * t.ss + c * t.cs) % VMAX == 0
    assert t.buf.size >= t.lead + shape[0] * t.ss  # the lead fits in the buffer
