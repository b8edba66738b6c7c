"""Threads split big convs by output rows (PlannerOptions.row_split_min_bytes, ConvSpec::row_units)
or by channels; both equal ONNX Runtime, on planar images and interleaved groups."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from featherdeploy.runtime.graph import Graph, Node, load_graph
from featherdeploy.runtime.kernels.native import plan_graph, run_plan, use_options
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from tests.runtime.onnx_cases import assert_close, graph_model, ort_run, random_input

pytestmark = pytest.mark.aarch64  # native row/channel splits, also on aarch64 (make test-aarch64)


def _chain_model(batch_dim) -> onnx.ModelProto:
    """conv3x3 -> relu -> conv3x3 (+ first output) -> relu -> conv1x1, 12 channels at 20x20."""
    rng = np.random.default_rng(0)
    inits = {}
    for name, shape in (("w1", (12, 8, 3, 3)), ("w2", (12, 12, 3, 3)), ("w3", (6, 12, 1, 1))):
        w = rng.standard_normal(shape).astype(np.float32)
        w[rng.random(shape) < 0.6] = 0.0
        inits[name] = w
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="r1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
             helper.make_node("Add", ["c2", "r1"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r2"], name="r2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="c3")]
    return graph_model(nodes, [batch_dim, 8, 20, 20], inits, name="chain")


@pytest.mark.parametrize("min_bytes", [0, 10**12])
@pytest.mark.parametrize("batch", [1, 16])
def test_threads_split_rows_or_channels_equal_ort(tmp_path, min_bytes, batch):
    """Two threads split big convs (every conv here with row_split_min_bytes = 0) by output rows,
    or all by channels, on a planar image and on an interleaved group."""
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model("N"), str(path))
    x = random_input((batch, 8, 20, 20))
    with use_options(EngineOptions(planner=PlannerOptions(row_split_min_bytes=min_bytes))):
        plan = plan_graph(load_graph(path), x.shape, 2, interleave=batch > 1)
    interleaved = any(d.startswith("interleaved") for d in plan.native.step_details())
    assert interleaved == (batch > 1)
    for _ in range(3):  # helpers claim different units each time
        assert_close(run_plan(plan, x), ort_run(path, x))


def test_row_units_rejected_where_rows_cannot_be_split(monkeypatch):
    """A conv that cannot compute row ranges (stride 2 on planar planes: phase split) refuses
    row units in the native plan rather than computing garbage."""
    from featherdeploy.runtime import _native
    from featherdeploy.runtime.planner.builder import Builder

    w = random_input((4, 3, 3, 3))
    spec_seen = []
    original = Builder.emit

    def emit(self, spec, **kwargs):
        if isinstance(spec, _native.ConvSpec):
            spec.row_units = 2
            spec_seen.append(spec)
        return original(self, spec, **kwargs)

    node = Node("Conv", "c", ["x", "w"], ["y"], {"strides": [2, 2], "pads": [1, 1, 1, 1]})
    graph = Graph.simple([node], {"w": w}, "x", (1, 3, 16, 16), "y")
    monkeypatch.setattr(Builder, "emit", emit)
    with pytest.raises(ValueError, match="row_units"):
        plan_graph(graph, (1, 3, 16, 16), 2)
    assert spec_seen


def _pointwise_depthwise_model() -> onnx.ModelProto:
    """conv1x1 -> relu -> depthwise conv3x3 -> relu -> conv1x1, 16 channels at 20x20, 60% of
    the weights zero."""
    rng = np.random.default_rng(1)
    inits = {}
    for name, shape in (("p1", (16, 8, 1, 1)), ("d", (16, 1, 3, 3)), ("p2", (8, 16, 1, 1))):
        w = rng.standard_normal(shape).astype(np.float32)
        w[rng.random(shape) < 0.6] = 0.0  # sparse: CSR kernels, which can split rows
        inits[name] = w
    nodes = [helper.make_node("Conv", ["x", "p1"], ["a"], name="p1"),
             helper.make_node("Relu", ["a"], ["ra"], name="ra"),
             helper.make_node("Conv", ["ra", "d"], ["b"], group=16, pads=[1, 1, 1, 1], name="d"),
             helper.make_node("Relu", ["b"], ["rb"], name="rb"),
             helper.make_node("Conv", ["rb", "p2"], ["y"], name="p2")]
    return graph_model(nodes, ["N", 8, 20, 20], inits, name="pw_dw")


@pytest.mark.parametrize(("model", "split_rows"), [
    (_chain_model("N"), [True, True, True]),
    (_pointwise_depthwise_model(), [False, False, False])])
def test_small_convs_split_rows_only_in_chains(tmp_path, conv_specs, model, split_rows):
    """Below row_split_min_bytes (here: every conv), a conv splits rows only when a group-1 conv
    that can split rows writes its input or reads its output: the chain of 3x3 convs does,
    pointwise convs between depthwise ones do not. Both equal ORT on two threads."""
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    x = random_input((1, 8, 20, 20))
    opts = PlannerOptions(row_split_min_bytes=10**12, row_split_chain_bytes=0)
    with use_options(EngineOptions(planner=opts)):
        plan = plan_graph(load_graph(path), x.shape, 2)
    assert [spec.row_units > 0 for spec in conv_specs] == split_rows
    for _ in range(3):
        assert_close(run_plan(plan, x), ort_run(path, x))


@pytest.mark.parametrize("size", [20, 45])
def test_direct_strided_conv_splits_rows(tmp_path, conv_specs, size):
    """A stride-2 depthwise conv read directly (conv_csr_direct) computes row ranges: with
    row_split_min_bytes = 0 two threads split its output rows like the pointwise convs around
    it (no switch to channel halves between them); equal to ORT on every call."""
    rng = np.random.default_rng(2)
    inits = {"p1": rng.standard_normal((16, 8, 1, 1)).astype(np.float32),
             "d": rng.standard_normal((16, 1, 3, 3)).astype(np.float32),
             "p2": rng.standard_normal((8, 16, 1, 1)).astype(np.float32)}
    inits["p1"][rng.random((16, 8, 1, 1)) < 0.6] = 0.0
    nodes = [helper.make_node("Conv", ["x", "p1"], ["a"], name="p1"),
             helper.make_node("Conv", ["a", "d"], ["b"], group=16, strides=[2, 2],
                              pads=[1, 1, 1, 1], name="d"),
             helper.make_node("Relu", ["b"], ["rb"], name="rb"),
             helper.make_node("Conv", ["rb", "p2"], ["y"], name="p2")]
    path = tmp_path / "strided.onnx"
    onnx.save(graph_model(nodes, ["N", 8, size, size], inits, name="strided"), str(path))
    x = random_input((1, 8, size, size))
    with use_options(EngineOptions(planner=PlannerOptions(row_split_min_bytes=0))):
        plan = plan_graph(load_graph(path), x.shape, 2)
    assert [(spec.direct, spec.row_units > 0) for spec in conv_specs][:2] == [(False, True),
                                                                              (True, True)]
    assert "conv_csr_direct" in plan.native.step_names()
    for _ in range(3):
        assert_close(run_plan(plan, x), ort_run(path, x))


@pytest.mark.parametrize("batch", [1, 16])
def test_uneven_row_bands_split_channels(tmp_path, conv_specs, batch):
    """Two threads split a conv's rows only when the bands come out even enough
    (PlannerOptions.row_split_max_imbalance): 14 rows (7 + 7) split by rows, the 7 rows after
    the stride-2 conv (4 + 3) by channels. Equal to ORT."""
    rng = np.random.default_rng(4)
    inits = {}
    for name, shape in (("a", (16, 8, 3, 3)), ("b", (16, 16, 3, 3)), ("c", (16, 16, 3, 3))):
        w = rng.standard_normal(shape).astype(np.float32) * np.float32(0.3)
        w[rng.random(shape) < 0.7] = 0.0
        inits[name] = w
    same = {"pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "a"], ["p"], name="a", **same),
             helper.make_node("Conv", ["p", "b"], ["q"], name="b", strides=[2, 2], **same),
             helper.make_node("Conv", ["q", "c"], ["y"], name="c", **same)]
    path = tmp_path / "uneven.onnx"
    onnx.save(graph_model(nodes, ["N", 8, 14, 14], inits, name="uneven"), str(path))
    x = random_input((batch, 8, 14, 14), seed=batch)
    with use_options(EngineOptions(planner=PlannerOptions(row_split_min_bytes=0))):
        plan = plan_graph(load_graph(path), x.shape, 2, interleave=batch > 1)
    rows = {spec.output.dims[2]: spec.row_units for spec in conv_specs}
    assert rows[14] == 2 and rows[7] == 0
    for _ in range(3):
        assert_close(run_plan(plan, x), ort_run(path, x))
