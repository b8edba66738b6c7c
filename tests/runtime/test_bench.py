"""Tests of the shared timing harness and the ``bench`` subcommand (runtime/bench.py), plus the
pure parts of the engine-vs-peers benchmark (row arithmetic, markdown, worker protocol)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime import bench
from runtime.bench import (
    BenchError,
    Timing,
    compare_interleaved,
    compare_interleaved_samplers,
    count_model_macs,
    input_shape_for_batch,
    time_callable,
    timing_from_samples,
)

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
    assert timing.p90_ms == pytest.approx(float(np.percentile(samples, 90)), abs=FLOAT_TOL)


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
    bench.add_bench_arguments(parser)
    return parser.parse_args(argv)


def _engine_importable() -> bool:
    import importlib
    return hasattr(importlib.import_module("runtime"), "Engine")


def test_bench_cli_on_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_path, json_path = tmp_path / "tiny.onnx", tmp_path / "out" / "bench.json"
    _tiny_model(model_path)
    code = bench.run_bench(_parse([str(model_path), "--batch", "1,3", "--threads", "1",
                                   "--rounds", "3", "--warmup", "1", "--json", str(json_path)]))
    assert code == 0
    printed = capsys.readouterr().out
    assert f"dense {TINY_DENSE_MACS:,}" in printed and f"sparse {TINY_SPARSE_MACS:,}" in printed
    report = json.loads(json_path.read_text())
    assert report["macs"]["dense_macs"] == TINY_DENSE_MACS
    assert [(row["threads"], row["batch"]) for row in report["rows"]] == [(1, 1), (1, 3)]
    for row in report["rows"]:
        assert row["ort"]["runs"] == 3 and row["ort"]["median_ms"] > 0
        if row["engine"] is None:  # never a number without a reason
            assert row["speedup"] is None
            assert row["engine_note"].startswith("engine ")
            assert "n/a" in printed
        else:
            assert row["outputs_match"] is True
            assert row["speedup"] == pytest.approx(
                row["ort"]["median_ms"] / row["engine"]["median_ms"])
    if not _engine_importable():
        assert all(row["engine_note"].startswith("engine not available")
                   for row in report["rows"])


def test_bench_cli_bad_model_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_path = tmp_path / "bench.json"
    missing = tmp_path / "missing.onnx"
    assert bench.run_bench(_parse([str(missing), "--json", str(json_path)])) == 2
    assert "model file not found" in capsys.readouterr().err
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not an onnx model\xff")
    assert bench.run_bench(_parse([str(garbage), "--json", str(json_path)])) == 2
    err = capsys.readouterr().err
    assert "not a valid ONNX model" in err and "Traceback" not in err
    assert not json_path.exists()


def test_bench_cli_rejects_bad_lists() -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(["m.onnx", "--batch", "0,2"])
    assert exc.value.code == 2


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
    code = ("import sys; from runtime import bench; "
            f"bench.bench_model({str(model_path)!r}, batches=[1], threads=[1], rounds=1, "
            "warmup=0); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "False"


def test_python_m_runtime_bench_dispatch(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from runtime.__main__ import main

    assert main(["bench", str(tmp_path / "missing.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err
    model_path = tmp_path / "tiny.onnx"
    _tiny_model(model_path)
    assert main(["bench", str(model_path), "--batch", "2", "--threads", "1", "--rounds", "2"]) == 0
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
