"""Tests of the shared timing harness and the ``bench`` subcommand (runtime/bench.py), plus the
pure parts of the engine-vs-peers benchmark (row arithmetic, markdown, worker protocol)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from featherdeploy.runtime import bench, bench_cli
from featherdeploy.runtime.bench import (
    BenchError,
    Timing,
    compare_interleaved,
    compare_interleaved_samplers,
    count_model_macs,
    input_shape_for_batch,
    time_callable,
    timing_from_samples,
)
from featherdeploy.runtime.errors import EngineError

FLOAT_TOL = 1e-9  # pure float arithmetic on small numbers


class FakeClock:
    """A clock that only moves when the code under test 'works' (advance)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance_ms(self, ms: float) -> None:
        self.now += ms / 1000.0


# ----------------------------------------------------------------------------------- harness

def test_timing_from_samples_statistics() -> None:
    timing = timing_from_samples([10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0], batch=4)
    assert timing.runs == 10
    assert timing.batch == 4
    assert timing.median_ms == pytest.approx(5.5, abs=FLOAT_TOL)
    # linear interpolation: position 0.9 * 9 = 8.1 between 9 and 10
    assert timing.p90_ms == pytest.approx(9.1, abs=FLOAT_TOL)
    assert timing.mean_ms == pytest.approx(5.5, abs=FLOAT_TOL)
    assert timing.min_ms == pytest.approx(1.0, abs=FLOAT_TOL)
    assert timing.throughput_ips == pytest.approx(4 * 1000.0 / 5.5, rel=FLOAT_TOL)


def test_timing_from_samples_matches_numpy_percentiles() -> None:
    samples = list(np.random.default_rng(3).exponential(2.0, size=37))
    timing = timing_from_samples(samples, batch=1)
    assert timing.median_ms == pytest.approx(float(np.median(samples)), abs=FLOAT_TOL)
    assert timing.p50_ms == timing.median_ms
    assert timing.p90_ms == pytest.approx(float(np.percentile(samples, 90)), abs=FLOAT_TOL)
    assert timing.p99_ms == pytest.approx(float(np.percentile(samples, 99)), abs=FLOAT_TOL)
    assert timing.std_ms == pytest.approx(float(np.std(samples, ddof=1)), abs=FLOAT_TOL)
    assert timing.max_ms == max(samples) and timing.min_ms == min(samples)
    assert timing.to_dict()["p50_ms"] == timing.median_ms


def test_timing_of_one_sample_has_zero_spread() -> None:
    timing = timing_from_samples([2.0], batch=1)
    assert (timing.std_ms, timing.p99_ms, timing.max_ms) == (0.0, 2.0, 2.0)


def test_timing_from_samples_rejects_empty_and_bad_batch() -> None:
    with pytest.raises(BenchError):
        timing_from_samples([], batch=1)
    with pytest.raises(BenchError):
        timing_from_samples([1.0], batch=0)


def test_time_callable_warmup_min_runs_and_min_seconds() -> None:
    clock = FakeClock()
    calls = []

    def work() -> None:
        calls.append(1)
        clock.advance_ms(10.0)

    timing = time_callable(work, batch=2, warmup=2, min_runs=3, min_seconds=0.05, clock=clock)
    # 3 runs give 30 ms < 50 ms, so it keeps going to 5 runs; warm-up calls are not samples
    assert timing.runs == 5
    assert len(calls) == 2 + 5
    assert timing.median_ms == pytest.approx(10.0, abs=1e-6)
    assert timing.throughput_ips == pytest.approx(200.0, rel=1e-6)


def test_time_callable_stops_at_min_runs_when_slow_enough() -> None:
    clock = FakeClock()
    timing = time_callable(lambda: clock.advance_ms(100.0), batch=1, warmup=0, min_runs=4,
                           min_seconds=0.1, clock=clock)
    assert timing.runs == 4


def test_compare_interleaved_rotates_order_and_counts() -> None:
    clock = FakeClock()
    log: list[str] = []

    def contender(name: str, ms: float):
        def call() -> None:
            log.append(name)
            clock.advance_ms(ms)
        return call

    timings = compare_interleaved({"a": contender("a", 1.0), "b": contender("b", 3.0)}, batch=1,
                                  rounds=4, warmup=1, calls_per_round=2, clock=clock)
    assert log[:2] == ["a", "b"]  # warm-up
    assert log[2:] == ["a", "a", "b", "b", "b", "b", "a", "a"] * 2  # order rotates each round
    assert timings["a"].runs == 8 and timings["b"].runs == 8
    assert timings["a"].median_ms == pytest.approx(1.0, abs=1e-6)
    assert timings["b"].median_ms == pytest.approx(3.0, abs=1e-6)


def test_compare_interleaved_samplers_settle_calls_and_wrong_count() -> None:
    requested: list[int] = []

    def sampler(count: int) -> list[float]:
        requested.append(count)
        return [2.0] * count

    timings = compare_interleaved_samplers({"x": sampler}, batch=8, rounds=3, warmup=2,
                                           calls_per_round=4, settle_calls=1)
    assert requested == [2] + [1, 4] * 3
    assert timings["x"].runs == 12
    events: list[object] = []
    compare_interleaved_samplers(
        {"a": lambda count: events.append("a") or [1.0] * count,
         "b": lambda count: events.append("b") or [1.0] * count},
        batch=1, rounds=2, warmup=0, gap_s=0.25, sleep=events.append)
    assert events == [0.25, "a", 0.25, "b", 0.25, "b", 0.25, "a"]  # an idle gap opens each turn
    events.clear()
    compare_interleaved_samplers({"a": lambda count: events.append("a") or [1.0] * count},
                                 batch=1, rounds=1, warmup=1, gap_s=0.5, sleep=events.append)
    assert events == [0.5, "a", 0.5, "a"]  # ... and each contender's warm-up
    clock = FakeClock()
    settles: list[int] = []

    def slow(count: int) -> list[float]:  # each call takes 10 ms on the fake clock
        settles.append(count)
        clock.advance_ms(10.0 * count)
        return [0.01] * count

    compare_interleaved_samplers({"s": slow}, batch=1, rounds=1, warmup=0, settle_calls=1,
                                 settle_s=0.035, sleep=lambda s: None, clock=clock)
    assert settles == [1, 1, 1, 1, 1]  # settle until 35 ms have passed (4 calls), then 1 timed
    clock = FakeClock()
    counted: list[int] = []

    def five_ms(count: int) -> list[float]:
        counted.append(count)
        clock.advance_ms(5.0 * count)
        return [5.0] * count

    timings = compare_interleaved_samplers({"a": five_ms, "b": five_ms}, batch=1, rounds=1,
                                           warmup=0, duration_s=0.1, sleep=lambda s: None,
                                           clock=clock)
    assert timings["a"].runs == timings["b"].runs == 10  # whole rounds of 10 ms until 100 ms
    with pytest.raises(BenchError, match="duration_s >= 0"):
        compare_interleaved_samplers({"a": five_ms}, batch=1, duration_s=-1.0)
    with pytest.raises(BenchError, match="returned 1 samples"):
        compare_interleaved_samplers({"bad": lambda count: [1.0]}, batch=1, rounds=1, warmup=0,
                                     calls_per_round=2)


# ------------------------------------------------------------------------------- MAC counting

def _tiny_model(path: Path | None = None, *, sparse_conv: bool = False) -> onnx.ModelProto:
    """x(N,2,8,8) -> Conv 3x3 s2 p1 (4 out) -> Relu -> depthwise 1x1 Conv (group 4)
    -> GlobalAveragePool -> Flatten -> Gemm(5, transB) -> y."""
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    conv_w.reshape(-1)[::3] = 0.0  # 24 of 72 weights are zero
    dw_w = np.array([1.0, 0.0, 2.0, 0.0], np.float32).reshape(4, 1, 1, 1)
    fc_w = rng.standard_normal((5, 4)).astype(np.float32)
    initializers = [numpy_helper.from_array(dw_w, "dw_w"), numpy_helper.from_array(fc_w, "fc_w"),
                    numpy_helper.from_array(np.zeros(4, np.float32), "conv_b")]
    sparse_initializers = []
    if sparse_conv:
        flat = conv_w.reshape(-1)
        nonzero = np.flatnonzero(flat).astype(np.int64)
        sparse_initializers.append(helper.make_sparse_tensor(
            numpy_helper.from_array(flat[nonzero], "conv_w"),
            numpy_helper.from_array(nonzero, "conv_w_idx"), list(conv_w.shape)))
    else:
        initializers.append(numpy_helper.from_array(conv_w, "conv_w"))
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1],
                         strides=[2, 2], name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Conv", ["r", "dw_w"], ["d"], group=4, name="dw"),
        helper.make_node("GlobalAveragePool", ["d"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], initializers,
        sparse_initializer=sparse_initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if path is not None:
        onnx.save(model, str(path))
    return model


# Hand counts: conv 4*2*3*3 * 4*4 = 1152 dense, 48/72 kept -> 768; depthwise 4*1*1*1 * 4*4 = 64
# dense, 2/4 kept -> 32; Gemm 5*4 = 20, all kept.
TINY_DENSE_MACS = 1152 + 64 + 20
TINY_SPARSE_MACS = 768 + 32 + 20


@pytest.mark.parametrize("sparse_conv", [False, True])
def test_count_model_macs_by_hand(sparse_conv: bool) -> None:
    macs = count_model_macs(_tiny_model(sparse_conv=sparse_conv))
    assert [(layer.node, layer.dense, layer.sparse) for layer in macs.layers] == [
        ("conv", 1152, 768), ("dw", 64, 32), ("fc", 20, 20)]
    assert macs.dense == TINY_DENSE_MACS
    assert macs.sparse == TINY_SPARSE_MACS
    assert (macs.nnz, macs.numel) == (48 + 2 + 20, 72 + 4 + 20)


def test_count_model_macs_matmul_weight() -> None:
    weight = numpy_helper.from_array(np.eye(6, 3, dtype=np.float32), "w")  # 3 nonzeros of 18
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 7, 3])], [weight])
    macs = count_model_macs(helper.make_model(graph))
    assert (macs.dense, macs.sparse) == (7 * 6 * 3, 7 * 6 * 3 // 6)


def test_count_model_macs_through_a_computed_reshape() -> None:
    # A channel shuffle as torch exports it with a dynamic batch: the Reshape target comes from
    # Shape -> Gather -> Concat, where ONNX shape inference stops; the conv after it counts.
    n = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 3, 3])
    ints = {name: numpy_helper.from_array(np.array(v, np.int64), name)
            for name, v in (("zero", 0), ("groups", [2, 2, 3, 3]), ("flat", [4, 3, 3]))}
    conv_w = numpy_helper.from_array(np.ones((6, 4, 1, 1), np.float32), "w")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "groups"], ["shape5"], axis=0),
        helper.make_node("Reshape", ["x", "shape5"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Concat", ["n1", "flat"], ["shape4"], axis=0),
        helper.make_node("Reshape", ["t", "shape4"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w"], ["y"], name="after_shuffle"),
    ]
    axes = numpy_helper.from_array(np.array([0], np.int64), "axes")
    graph = helper.make_graph(nodes, "shuffle", [n],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [*ints.values(), axes, conv_w])
    macs = count_model_macs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    assert [(layer.node, layer.dense) for layer in macs.layers] == [("after_shuffle", 6 * 4 * 9)]


def test_input_shape_for_batch() -> None:
    model = _tiny_model()
    assert input_shape_for_batch(model, 32) == ("x", (32, 2, 8, 8))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    assert input_shape_for_batch(model, 1) == ("x", (1, 2, 8, 8))
    with pytest.raises(BenchError, match="fixed batch size of 1"):
        input_shape_for_batch(model, 32)
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    with pytest.raises(BenchError, match="dim 2 is not a fixed size"):
        input_shape_for_batch(model, 1)


# ---------------------------------------------------------------------------------- bench CLI

def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_cli.add_bench_arguments(parser)
    return parser.parse_args(argv)


def _engine_importable() -> bool:
    import importlib
    return hasattr(importlib.import_module("featherdeploy.runtime"), "Engine")


def _sparse_two_input_model(path: Path) -> Path:
    """x(N,4,H,W) -> Conv 3x3 p1 (8 out, 80% zeros) -> Relu -> + s(N,8,H,W) -> Conv 1x1
    (80% zeros) -> Relu -> y: two inputs, dynamic image size, native on every op."""
    rng = np.random.default_rng(0)

    def sparse(shape: tuple[int, ...]) -> np.ndarray:
        return (rng.standard_normal(shape) * (rng.random(shape) < 0.2)).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Add", ["r1", "s"], ["a"], name="add"),
             helper.make_node("Conv", ["a", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["y"], name="relu2")]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"]),
                       helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])],
        [numpy_helper.from_array(sparse((8, 4, 3, 3)), "w1"),
         numpy_helper.from_array(sparse((8, 8, 1, 1)), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


TWO_NODES = {"conv1", "relu1", "add", "conv2", "relu2"}
STREAMS = 2


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One run with every option that adds a measurement (shapes for dynamic dims, two
    batches, streams, profile, peak memory), on the native backend; its JSON."""
    if not _engine_importable():
        pytest.skip("the native engine is not built")
    tmp = tmp_path_factory.mktemp("bench")
    model = _sparse_two_input_model(tmp / "two.onnx")
    json_path = tmp / "out" / "bench.json"
    code = bench_cli.run_bench(_parse([
        str(model), "--shape", "x=1x4x12x10", "--shape", "s=1x8x12x10", "--batch", "1,3",
        "--threads", "1", "--rounds", "3", "--calls-per-round", "4", "--warmup", "1",
        "--streams", str(STREAMS), "--profile", "--backend", "native", "--json",
        str(json_path)]))
    assert code == 0
    return json.loads(json_path.read_text())


def test_bench_json_names_machine_versions_and_options(full_report: dict) -> None:
    from featherdeploy.runtime import native_isa

    assert (full_report["schema"], full_report["schema_version"]) == ("featherdeploy.bench", 2)
    machine = full_report["machine"]
    assert machine["cpu_model"] and machine["cores"] >= 1 and machine["isa"] == native_isa()
    versions = full_report["versions"]
    assert versions["onnxruntime"] and versions["numpy"] and versions["python"]
    assert "featherdeploy" in versions
    assert full_report["engine_options"]["backend"] == "native"
    assert full_report["settings"]["streams"] == STREAMS
    assert full_report["settings"]["shapes"] == {"x": [1, 4, 12, 10], "s": [1, 8, 12, 10]}
    assert [i["name"] for i in full_report["inputs"]] == ["x", "s"]
    assert full_report["macs"]["dense_macs"] == 8 * 4 * 9 * 120 + 8 * 8 * 120


def test_bench_json_every_statistic_is_sane(full_report: dict) -> None:
    rows = full_report["rows"]
    assert [(r["threads"], r["batch"]) for r in rows] == [(1, 1), (1, 3)]
    for row in rows:
        assert row["input_shapes"] == {"x": [row["batch"], 4, 12, 10],
                                       "s": [row["batch"], 8, 12, 10]}
        assert row["engine_backend"] == "native" and row["outputs_match"] is True
        for name in ("ort", "engine"):
            latency = row[name]["latency"]
            assert latency["runs"] == 3 * 4
            assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] \
                <= latency["p99_ms"] <= latency["max_ms"]
            assert latency["mean_ms"] > 0 and latency["std_ms"] >= 0
            startup = row[name]["startup"]
            assert startup["load_ms"] > 0 and startup["first_run_ms"] > 0
        assert row["ort"]["startup"]["plan_ms"] is None  # ORT plans inside session creation
        assert row["engine"]["startup"]["plan_ms"] > 0
        assert row["speedup"] == pytest.approx(row["ort"]["latency"]["median_ms"]
                                               / row["engine"]["latency"]["median_ms"])
        b = row["batch"]
        assert row["peer_commands"]["deepsparse"].endswith(
            f"-s sync -b {b} -ncores 1 -shapes [{b},4,12,10],[{b},8,12,10]")
        assert f"-data_shape x[{b},4,12,10],s[{b},8,12,10]" in row["peer_commands"]["openvino"]
        assert "-m times -r 12" in row["peer_commands"]["onnxruntime"]


def test_bench_streams_report_throughput(full_report: dict) -> None:
    for row in full_report["rows"]:
        assert row["elapsed_s"]["streams"] > 0
        for name in ("ort", "engine"):
            streams = row[name]["streams"]
            burst = streams["burst"]
            assert streams["images_per_burst"] == row["batch"] * STREAMS * 4
            assert streams["throughput_ips"] == pytest.approx(
                streams["images_per_burst"] * 1000.0 / burst["median_ms"])
            assert burst["runs"] == 3 and streams["throughput_ips"] > 0


def test_bench_profile_shares_sum_to_one_and_name_plan_steps(full_report: dict) -> None:
    for row in full_report["rows"]:
        profile = row["profile"]
        steps = profile["steps"]
        assert sum(s["share"] for s in steps) == pytest.approx(1.0, abs=1e-9)
        assert all(0 <= s["share"] <= 1 and s["ms"] >= 0 for s in steps)
        assert {s["node"] for s in steps} - {""} <= TWO_NODES
        assert {s["node"] for s in steps if s["step"].startswith("conv")} == {"conv1", "conv2"}


def test_bench_peak_memory_per_contender(full_report: dict) -> None:
    for row in full_report["rows"]:
        for name in ("ort", "engine"):
            memory = row[name]["memory"]
            assert memory["peak_mb"] > 0 and memory["runs"] >= 1
            if memory["hwm_reset"]:
                assert 0 <= memory["delta_mb"] <= memory["peak_mb"]
                assert memory["baseline_mb"] + memory["delta_mb"] == pytest.approx(
                    memory["peak_mb"])


def test_engine_profile_and_prepare(tmp_path: Path) -> None:
    if not _engine_importable():
        pytest.skip("the native engine is not built")
    from featherdeploy.runtime import Engine, EngineOptions

    engine = Engine(_sparse_two_input_model(tmp_path / "two.onnx"),
                    options=EngineOptions(backend="native", threads=1))
    feeds = {"x": np.ones((2, 4, 6, 5), np.float32), "s": np.ones((2, 8, 6, 5), np.float32)}
    assert engine.prepare({"x": (2, 4, 6, 5), "s": (2, 8, 6, 5)})
    profile = engine.profile(feeds, reps=2)
    plan = engine._program_for_report(tuple((n, x.shape) for n, x in feeds.items()), 2)
    assert [s.step for s in profile.steps] == plan.single_plan.native.step_names()
    assert sum(profile.shares()) == pytest.approx(1.0)
    real = engine.profile(feeds, reps=2, real_run=True)  # one thread: a span per serial entry
    assert real.method != profile.method and real.to_dict()["method"] == real.method
    assert len(real.steps) <= len(profile.steps) and real.total_s > 0
    with pytest.raises(EngineError, match="input shapes must name"):
        engine.prepare({"x": (2, 4, 6, 5)})
    with pytest.raises(EngineError, match="cannot have shape"):
        engine.prepare({"x": (2, 5, 6, 5), "s": (2, 8, 6, 5)})


def test_bench_time_based_mode_runs_about_the_time_asked(tmp_path: Path) -> None:
    import time

    model_path, json_path = tmp_path / "tiny.onnx", tmp_path / "t.json"
    _tiny_model(model_path)
    start = time.perf_counter()
    code = bench_cli.run_bench(_parse([str(model_path), "--batch", "1", "--threads", "1",
                                       "-t", "1.0", "--no-memory", "--json", str(json_path)]))
    wall = time.perf_counter() - start
    assert code == 0
    row = json.loads(json_path.read_text())["rows"][0]
    # Generous bounds: a round is about 0.3 s of gaps and settling plus the calls; the whole
    # run adds loading and checking on a shared machine.
    assert 1.0 <= row["elapsed_s"]["latency"] <= 1.0 + 5.0
    assert 1.0 <= wall <= 1.0 + 60.0
    assert row["ort"]["latency"]["runs"] >= 5  # at least one round of 5 calls


def test_bench_inputs_from_npy_files_cycled_to_each_batch(tmp_path: Path) -> None:
    model_path, json_path = tmp_path / "tiny.onnx", tmp_path / "f.json"
    _tiny_model(model_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(5).standard_normal((3, 2, 8, 8),
                                                                        dtype=np.float32))
    code = bench_cli.run_bench(_parse([str(model_path), "--input", f"x={tmp_path / 'x.npy'}",
                                       "--batch", "1,5", "--threads", "1", "--rounds", "1",
                                       "--no-memory", "--json", str(json_path)]))
    assert code == 0
    report = json.loads(json_path.read_text())
    assert [r["input_shapes"]["x"][0] for r in report["rows"]] == [1, 5]
    assert report["settings"]["input_files"] == {"x": str(tmp_path / "x.npy")}


def test_make_feeds_seed_shapes_and_cycling() -> None:
    from featherdeploy.runtime.bench_inputs import InputSpec, make_feeds

    specs = [InputSpec("x", np.dtype(np.float32), (None, 2, None)),
             InputSpec("k", np.dtype(np.int64), (None, 3))]
    shapes = {"x": (1, 2, 5)}
    one = make_feeds(specs, 4, shapes=shapes, arrays={}, seed=1)
    assert one["x"].shape == (4, 2, 5) and one["k"].shape == (4, 3)
    assert one["k"].dtype == np.int64 and set(np.unique(one["k"])) <= {0, 1}
    again = make_feeds(specs, 4, shapes=shapes, arrays={}, seed=1)
    other = make_feeds(specs, 4, shapes=shapes, arrays={}, seed=2)
    assert np.array_equal(one["x"], again["x"]) and not np.array_equal(one["x"], other["x"])
    rows = np.arange(2 * 2 * 5, dtype=np.float32).reshape(2, 2, 5)
    cycled = make_feeds(specs, 3, shapes=shapes, arrays={"x": rows}, seed=0)["x"]
    assert np.array_equal(cycled, rows[[0, 1, 0]])
    assert make_feeds(specs, None, shapes=shapes, arrays={"x": rows}, seed=0)["x"].shape[0] == 2


BAD_INPUTS = [  # (extra args, files to create, a phrase of the one-line error)
    (["MISSING"], {}, "model file not found"),
    (["--shape", "x=1x2xbad"], {}, "--shape must be NAME=DxDxD"),
    (["--shape", "nope=1x2x8x8"], {}, "the model's inputs are ['x']"),
    (["--input", "NOTNPY"], {"NOTNPY": b"not an array"}, "cannot read input array"),
    (["--input", "MISSINGNPY"], {}, "cannot read input array"),
    (["--input", "F64"], {"F64": np.zeros((1, 2, 8, 8))}, "must be float32"),
    (["--input", "RANK"], {"RANK": np.zeros((2, 8, 8), np.float32)}, "has rank 4"),
    (["--input", "z=GOOD"], {"GOOD": np.zeros((1, 2, 8, 8), np.float32)}, "--input names ['z']"),
    (["--streams", "0"], {}, "--streams"),
]


@pytest.mark.parametrize(("extra", "files", "phrase"), BAD_INPUTS,
                         ids=[case[2][:20] for case in BAD_INPUTS])
def test_bench_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                extra: list, files: dict, phrase: str) -> None:
    from featherdeploy.runtime.__main__ import main

    model_path, json_path = tmp_path / "tiny.onnx", tmp_path / "bad.json"
    _tiny_model(model_path)
    paths = {"MISSING": str(tmp_path / "missing.onnx"), "MISSINGNPY": str(tmp_path / "no.npy")}
    for key, content in files.items():
        paths[key] = str(tmp_path / f"{key.lower()}.npy")
        if isinstance(content, bytes):
            Path(paths[key]).write_bytes(content)
        else:
            np.save(paths[key], content)
    args = [re.sub(r"[A-Z][A-Z0-9]{2,}", lambda m: paths.get(m[0], m[0]), a) for a in extra]
    model = [] if args[0] == paths["MISSING"] else [str(model_path)]
    code = main(["bench", *model, *args, "--no-memory", "--rounds", "1", "--json",
                 str(json_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and phrase in err and "Traceback" not in err
    assert not json_path.exists() and not list(tmp_path.glob(".bad.json*"))


def test_bench_cli_on_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path, json_path = tmp_path / "tiny.onnx", tmp_path / "out" / "bench.json"
    _tiny_model(model_path)
    code = bench_cli.run_bench(_parse([str(model_path), "--batch", "1,3", "--threads", "1",
                                       "--rounds", "3", "--calls-per-round", "1", "--warmup",
                                       "1", "--no-memory", "--json", str(json_path)]))
    assert code == 0
    printed = capsys.readouterr().out
    assert f"dense {TINY_DENSE_MACS:,}" in printed and f"sparse {TINY_SPARSE_MACS:,}" in printed
    assert "deepsparse.benchmark -s sync" in printed
    report = json.loads(json_path.read_text())
    assert report["macs"]["dense_macs"] == TINY_DENSE_MACS
    assert [(row["threads"], row["batch"]) for row in report["rows"]] == [(1, 1), (1, 3)]
    for row in report["rows"]:
        assert row["ort"]["latency"]["runs"] == 3 and row["ort"]["latency"]["median_ms"] > 0
        assert row["ort"]["memory"] is None and row["profile"] is None
        if row["engine"]["latency"] is None:  # never a number without a reason
            assert row["speedup"] is None
            assert row["engine"]["note"].startswith("engine ")
            assert "n/a" in printed
        else:
            assert row["outputs_match"] is True
            assert row["speedup"] == pytest.approx(
                row["ort"]["latency"]["median_ms"] / row["engine"]["latency"]["median_ms"])
    if not _engine_importable():
        assert all(row["engine"]["note"].startswith("engine not available")
                   for row in report["rows"])


def test_bench_cli_rejects_bad_lists() -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(["m.onnx", "--batch", "0,2"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        _parse(["m.onnx", "--rounds", "3", "-t", "2"])  # one way to say how long


# ------------------------------------------------------------------ engine-vs-peers pure parts

def _timing(ms: float, batch: int = 1) -> Timing:
    return timing_from_samples([ms], batch=batch)


def test_peer_row_ratios_and_targets() -> None:
    from benchmarks.engine_vs_peers import PeerRow, format_markdown

    sparse = PeerRow(model="m", sparsity=0.9, threads=1, batch=1, dense_macs=100,
                     sparse_macs=10, ort=_timing(10.0), engine=_timing(1.0), engine_rel_err=0.0,
                     deepsparse=_timing(2.0), deepsparse_rel_err=0.0)
    assert sparse.speedup(sparse.engine) == pytest.approx(10.0)
    assert sparse.ours_vs_deepsparse == pytest.approx(2.0)
    assert sparse.fraction_of_ideal == pytest.approx(1.0)
    assert sparse.target == "met"
    close = PeerRow(model="m", sparsity=0.95, threads=2, batch=32, dense_macs=100,
                    sparse_macs=5, ort=_timing(10.0), engine=_timing(1.0), engine_rel_err=0.0,
                    deepsparse=_timing(1.2), deepsparse_rel_err=0.0)
    assert close.target == "MISSED"  # 1.2x < 1.25x DeepSparse
    dense_slow = PeerRow(model="m", sparsity=0.0, threads=1, batch=1, dense_macs=100,
                         sparse_macs=100, ort=_timing(10.0), engine=_timing(16.0),
                         engine_rel_err=0.0)
    assert dense_slow.target == "MISSED"
    missing = PeerRow(model="m", sparsity=0.9, threads=1, batch=1, dense_macs=100,
                      sparse_macs=10, ort=_timing(10.0), engine_note="engine not available (x)",
                      deepsparse_note="DeepSparse not requested")
    assert missing.target == "n/a" and missing.ours_vs_deepsparse is None
    loaded = dataclasses.replace(sparse, load_average=1000.0)
    assert loaded.noisy and loaded.target == "met (noisy)"
    spread = dataclasses.replace(sparse, deepsparse=timing_from_samples([1.0, 1.0, 1.0, 9.0, 9.0],
                                                                        batch=1))
    assert spread.noisy and spread.target.endswith("(noisy)")
    table = format_markdown([sparse, close, dense_slow, missing])
    lines = table.splitlines()
    assert lines[2] == ("| m | 1 | 1 | 90% | 10.000 | 1.000 | 2.000 | 10.00x | 5.00x | 2.00 "
                        "| 1.00 | met |")
    assert lines[5].count("n/a") == 7
    assert "- n/a: engine not available (x)" in lines
    assert "measured here" in format_markdown([sparse], context="measured here").splitlines()
    named = format_markdown([sparse], machine="CPU: X (AVX2); engine commit abc").splitlines()
    assert named[0] == "CPU: X (AVX2); engine commit abc" and named[2] == lines[0]


def test_deepsparse_worker_protocol_errors() -> None:
    from benchmarks import _deepsparse_worker as worker

    requests = io.StringIO('{"op": "time", "runs": 2}\n{"op": "nope"}\nnot json\n'
                           '{"op": "quit"}\n{"op": "time", "runs": 1}\n')
    replies = io.StringIO()
    worker.serve(requests, replies)
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert len(answers) == 3  # nothing after quit
    assert all(answer["ok"] is False for answer in answers)
    assert "compile" in answers[0]["error"] and "unknown op" in answers[1]["error"]
    assert answers[2]["error"].startswith("JSONDecodeError")


def test_layer_model_files_one_conv_each(tmp_path: Path) -> None:
    from benchmarks.engine_vs_peers import PeersConfig, _layer_model_files, _ModelFile

    path = tmp_path / "tiny.onnx"
    proto = _tiny_model(path)
    whole = _ModelFile("tiny", 0.5, path, proto, TINY_DENSE_MACS, TINY_SPARSE_MACS)
    layers = _layer_model_files(whole, PeersConfig(work_dir=tmp_path / "work"))
    assert [layer.name for layer in layers] == ["tiny 00 conv", "tiny 01 dw"]
    assert [(layer.dense_macs, layer.sparse_macs) for layer in layers] == [(1152, 768), (64, 32)]
    assert layers[1].sparsity == pytest.approx(0.5, abs=FLOAT_TOL)
    for layer in layers:
        assert [node.op_type for node in layer.proto.graph.node] == ["Conv"]
        assert layer.proto.ir_version == 8
        assert input_shape_for_batch(layer.proto, 2)[1][0] == 2


def test_bench_never_imports_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    model_path = tmp_path / "tiny.onnx"
    _tiny_model(model_path)
    code = ("import sys; from featherdeploy.runtime import bench_cli; "
            f"bench_cli.bench_model({str(model_path)!r}, bench_cli.BenchSettings(batches=(1,), "
            "threads=(1,), rounds=1, warmup=0, memory=False)); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "False"


def test_python_m_runtime_bench_dispatch(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from featherdeploy.runtime.__main__ import main

    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err
    model_path = tmp_path / "tiny.onnx"
    _tiny_model(model_path)
    assert main(["bench", str(model_path), "--batch", "2", "--threads", "1", "--rounds", "2",
                 "--no-memory"]) == 0
    assert f"dense {TINY_DENSE_MACS:,}" in capsys.readouterr().out


def test_engine_vs_peers_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.engine_vs_peers import main

    markdown = tmp_path / "table.md"
    assert main(["--models", "nope", "--markdown", str(markdown)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["--models", "resnet20x2", "--deepsparse-python", str(tmp_path / "no-python"),
                 "--work-dir", str(tmp_path / "work")]) == 2
    assert "not an executable file" in capsys.readouterr().err
    assert not markdown.exists()
    with pytest.raises(SystemExit) as exc:
        main(["--sparsities", "100"])
    assert exc.value.code == 2


def test_jit_ab_measures_both_engines_and_rejects_bad_lists(tmp_path: Path) -> None:
    from benchmarks.jit_ab import main, measure
    from tests.runtime.onnx_cases import single_node_model

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((24, 24, 3, 3)) * (rng.random((24, 24, 3, 3)) < 0.5))
    path = tmp_path / "conv.onnx"
    onnx.save(single_node_model("Conv", ("N", 24, 8, 8), initializers={"w": w.astype(np.float32)},
                                pads=[1, 1, 1, 1]), str(path))
    csr_ms, jit_ms = measure(path, batch=16, threads=1, rounds=2)  # raises if outputs differ
    assert csr_ms > 0 and jit_ms > 0
    for bad in (["--models", "nope"], ["--sparsities", "100"], ["--threads", "0"],
                ["--batches", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(bad)
        assert exc.value.code == 2


DEEPSPARSE_PYTHON_ENV = "FEATHERDEPLOY_DEEPSPARSE_PYTHON"  # e.g. /tmp/ds/bin/python
DEEPSPARSE_REL_TOL = 1e-4


@pytest.mark.skipif(not os.environ.get(DEEPSPARSE_PYTHON_ENV),
                    reason=f"optional peer: set {DEEPSPARSE_PYTHON_ENV} to a deepsparse python")
def test_deepsparse_worker_round_trip(tmp_path: Path) -> None:
    from benchmarks.engine_vs_peers import DeepSparseWorker, _relative_error

    model_path, x_path, y_path = tmp_path / "tiny.onnx", tmp_path / "x.npy", tmp_path / "y.npy"
    _tiny_model(model_path)
    x = np.random.default_rng(1).standard_normal((3, 2, 8, 8), dtype=np.float32)
    np.save(x_path, x)
    worker = DeepSparseWorker(Path(os.environ[DEEPSPARSE_PYTHON_ENV]), tmp_path / "ds.log")
    try:
        worker.request({"op": "compile", "model": str(model_path), "input": str(x_path),
                        "threads": 1})
        worker.request({"op": "output", "path": str(y_path)})
        assert len(worker.sampler()(4)) == 4
    finally:
        worker.close()
    expected = bench.ort_reference(bench.make_ort_session(model_path, 1), "x", x)
    assert _relative_error(np.load(y_path), expected) < DEEPSPARSE_REL_TOL
