"""Row-band schedules (runtime/bands.py, Plan::set_schedule): readiness, coverage, validation,
and conv chains run band by band equal to ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import Engine, _native
from runtime.bands import BandStep, band_schedule, rows_ready
from runtime.graph import load_graph
from runtime.passes import prepare_graph
from runtime.plan import build_plan
from tests.runtime.onnx_cases import assert_close, ort_run, random_input


def _step(index, reads, writes, *, residual=None, rows=16, kernel_rows=3, pad_top=1, stride=1,
          in_rows=16):
    return BandStep(index=index, reads=reads, residual=residual, writes=writes, out_rows=rows,
                    in_rows=in_rows, kernel_rows=kernel_rows, pad_top=pad_top, stride=stride,
                    row_bytes=1000)


@pytest.mark.parametrize("done,kernel_rows,pad_top,stride,expected", [
    (5, 3, 1, 1, 4),     # a 3x3 conv trails its input by one row
    (5, 1, 0, 1, 5),     # 1x1
    (5, 3, 1, 2, 2),     # stride 2: row 2 needs input rows up to 4 + 1 = 5
    (0, 3, 1, 1, 0),
    (16, 3, 1, 1, 16),   # complete input: every output row
])
def test_rows_ready(done, kernel_rows, pad_top, stride, expected):
    step = _step(0, "x", "y", kernel_rows=kernel_rows, pad_top=pad_top, stride=stride,
                 rows=16 // stride)
    assert rows_ready(step, done, step.out_rows) == expected


def test_schedule_covers_every_step_and_respects_readiness():
    a, b, c = object(), object(), object()
    steps = {1: _step(1, "input", a), 2: _step(2, a, b), 3: _step(3, b, c, residual=a,
                                                                kernel_rows=1, pad_top=0)}
    schedule = band_schedule(5, steps, band_bytes=3000)  # 3 rows per band
    assert schedule[0] == (0, -1, -1) and schedule[-1] == (4, -1, -1)
    done = {1: 0, 2: 0, 3: 0}
    for k, r0, r1 in schedule[1:-1]:
        assert r0 == done[k] and r1 > r0
        if k == 2:
            assert rows_ready(steps[2], done[1], 16) >= r1
        if k == 3:
            assert r1 <= min(done[2], done[1])
        done[k] = r1
    assert done == {1: 16, 2: 16, 3: 16}
    # Interleaved: the chain's last conv starts before the first one finishes.
    order = [k for k, _, _ in schedule]
    assert order.index(3) < len(order) - 1 - order[::-1].index(1)


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
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 8, 20, 20])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "chain", [x], [y],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("band_bytes", [1, 4000, 10**9])
@pytest.mark.parametrize("batch", [1, 16])
def test_conv_chain_in_bands_equals_ort(tmp_path, monkeypatch, band_bytes, batch):
    """Bands of one row up to whole layers, planar single images and an interleaved group."""
    import runtime.bands
    import runtime.plan

    monkeypatch.setattr(runtime.bands, "BAND_BYTES", band_bytes)
    monkeypatch.setenv("FEATHERDEPLOY_BATCH_LAYOUT", "interleaved")
    schedules = []

    def recording(*args, **kwargs):
        schedules.append(band_schedule(*args, **kwargs))
        return schedules[-1]

    monkeypatch.setattr(runtime.plan, "band_schedule", recording)
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model("N"), str(path))
    x = random_input((batch, 8, 20, 20))
    assert_close(Engine(path, threads=1).run(x), ort_run(path, x))
    banded = [[e for e in s if e[1] >= 0] for s in schedules]
    # The three convs run by rows: ~one row per band (20 rows each; the trailing rows of the
    # 3x3 convs finish in the last band), or one band of 20 rows each.
    entries = max(len(b) for b in banded)
    assert entries == 3 if band_bytes == 10**9 else entries > 3 * 5


def test_set_schedule_rejects_bad_schedules(tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model(1), str(path))
    graph = prepare_graph(load_graph(path))
    plan = build_plan(graph, (1, 8, 20, 20), 1, _native).native
    steps = len(plan.step_names())
    conv = plan.step_names().index("conv_csr")
    whole = [(k, -1, -1) for k in range(steps)]
    bad = {
        "missing step": whole[:-1],
        "out of order": [whole[1], whole[0], *whole[2:]],
        "rows not ascending": [*whole[:conv], (conv, 5, 20), (conv, 0, 5), *whole[conv + 1:]],
        "rows not covered": [*whole[:conv], (conv, 0, 19), *whole[conv + 1:]],
        "rows of a whole-only step": [(0, 0, 1), *whole[1:]],
        "not triples": [0, -1],
    }
    for what, schedule in bad.items():
        flat = schedule if what == "not triples" else [v for e in schedule for v in e]
        with pytest.raises(ValueError, match="schedule"):
            plan.set_schedule(flat)
    plan.set_schedule([v for e in [*whole[:conv], (conv, 0, 7), (conv, 7, 20),
                                   *whole[conv + 1:]] for v in e])


@pytest.mark.parametrize("min_bytes", [0, 10**12])
@pytest.mark.parametrize("batch", [1, 16])
def test_threads_split_rows_or_channels_equal_ort(tmp_path, monkeypatch, min_bytes, batch):
    """Two threads split big convs by output rows (ROW_SPLIT_MIN_BYTES) or by channels, on a
    planar image and on an interleaved group."""
    import runtime.plan

    monkeypatch.setattr(runtime.plan, "ROW_SPLIT_MIN_BYTES", min_bytes)
    path = tmp_path / "chain.onnx"
    onnx.save(_chain_model("N"), str(path))
    x = random_input((batch, 8, 20, 20))
    graph = prepare_graph(load_graph(path))
    plan = build_plan(graph, x.shape, 2, _native, interleave=batch > 1)
    assert ("conv_csr_strided" in plan.native.step_names()) == (batch > 1)
    y = np.empty(plan.output_shape, np.float32)
    for _ in range(3):  # helpers claim different units each time
        plan.native.run(x, y)
        assert_close(y, ort_run(path, x))
