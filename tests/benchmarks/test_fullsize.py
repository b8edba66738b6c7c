"""The full-size peer suite (benchmarks/fullsize*.py, benchmarks/_peer_worker.py) on fakes and a
tiny model: the report on fake timings, the prunable-layer rule, the worker protocol and the
parent's handling of workers that crash or lie, and a --quick end-to-end run of ORT and our
engine. Nothing here times anything that matters; the peers' own venvs are used only by the
optional round trip at the end."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import _peer_worker as peer_worker
from benchmarks.bench_models import prunable_convs, sparsify_convs
from benchmarks.fullsize_models import (
    FULLSIZE_MODELS,
    MODERN_MODELS,
    BenchModelError,
    FullsizeModelSpec,
    check_not_degenerate,
    fullsize_model_path,
)
from benchmarks.fullsize_report import (
    OUTPUT_REL_TOL,
    ContenderResult,
    SuiteRow,
    format_report,
    row_from_dict,
)
from benchmarks.workers import WorkerError, WorkerProcess
from featherdeploy.runtime.bench import timing_from_samples
from tests.compile.helpers import TinyNet

FLOAT_TOL = 1e-9
TINY_CHW = (3, 16, 16)
ENGINE_REL_TOL = 1e-4  # engine vs ORT on the tiny model (float32, other summation orders)


def _timing(ms: float, batch: int = 1):
    return timing_from_samples([ms], batch=batch)


def _ok(name: str, ort_ms: float, ms: float, *, rel_err: float = 1e-7,
        rss: float = 100.0) -> ContenderResult:
    return ContenderResult(name, "ok", version="1.0", ort=_timing(ort_ms), timing=_timing(ms),
                           rel_err=rel_err, max_abs_ref=2.5, rss_mib=rss, base_rss_mib=30.0,
                           load_s=0.5, calls_per_round=1)


def _tiny_spec() -> FullsizeModelSpec:
    return FullsizeModelSpec("tiny", TINY_CHW, lambda: TinyNet(in_channels=3))


# ------------------------------------------------------------------------------ the report

def _fake_rows() -> list[SuiteRow]:
    first = SuiteRow(
        model="resnet18", sparsity=0.9, batch=1, threads=2, dense_macs=100, sparse_macs=10,
        contenders={
            "engine": _ok("engine", 20.0, 10.0, rss=150.0),  # 2.00x
            "deepsparse": _ok("deepsparse", 30.0, 20.0),  # 1.50x
            "mnn": ContenderResult("mnn", "failed", note="load: MNN worker died during 'load' "
                                   "(exit code -11): Segmentation fault", rss_mib=None),
            "openvino": ContenderResult("openvino", "not installed", note="OpenVINO: no x"),
        }, ort_rss_mib=162.4)
    second = SuiteRow(
        model="resnet18", sparsity=0.95, batch=16, threads=1, dense_macs=100, sparse_macs=5,
        contenders={
            "engine": _ok("engine", 40.0, 10.0, rel_err=0.5),  # 4.00x but wrong
            "deepsparse": _ok("deepsparse", 40.0, 8.0),  # 5.00x
            "mnn": ContenderResult("mnn", "failed", note="load: MNN worker died during 'load' "
                                   "(exit code -11): Segmentation fault"),
            "openvino": _ok("openvino", 10.0, 10.0),
        }, ort_note="ORT died")
    return [first, second]


def test_speedups_and_ratios_on_fake_timings() -> None:
    first, second = _fake_rows()
    assert first.speedup("engine") == pytest.approx(2.0, abs=FLOAT_TOL)
    assert first.ratio("engine", "deepsparse") == pytest.approx(2.0 / 1.5, abs=FLOAT_TOL)
    assert first.ratio("engine", "mnn") is None and first.ratio("engine", "openvino") is None
    assert second.contenders["engine"].wrong_output
    assert not second.contenders["deepsparse"].wrong_output
    assert not first.contenders["mnn"].wrong_output  # failed: nothing was checked
    assert second.ratio("engine", "deepsparse") == pytest.approx(0.8, abs=FLOAT_TOL)


def test_markdown_tables_cells_and_footnotes() -> None:
    text = format_report(_fake_rows(), peers=("engine", "deepsparse", "mnn", "openvino"),
                         versions={"engine": "(abc1234)", "deepsparse": "1.8.0",
                                   "mnn": "3.6.1", "openvino": "2026.4.1"},
                         header=["CPU: Test CPU (AVX-512), 2 logical CPUs, 2 cores"],
                         context="measured on fakes")
    lines = text.splitlines()
    assert lines[0] == "CPU: Test CPU (AVX-512), 2 logical CPUs, 2 cores"
    table = lines[lines.index(next(x for x in lines if x.startswith("| model"))):]
    assert table[0] == ("| model | sparsity | batch | threads | engine (abc1234) "
                        "| DeepSparse 1.8.0 | MNN 3.6.1 | OpenVINO 2026.4.1 "
                        "| engine / DeepSparse | engine / MNN | engine / OpenVINO | ORT MiB "
                        "| engine MiB | DeepSparse MiB | MNN MiB | OpenVINO MiB |")
    assert table[2] == ("| resnet18 | 90% | 1 | 2 | 2.00x | 1.50x | failed [1] | not installed "
                        "| 1.33 | n/a | n/a | 162 | 150 | 100 | n/a | - |")
    assert table[3] == ("| resnet18 | 95% | 16 | 1 | 4.00x (wrong output) | 5.00x | failed [1] "
                        "| 1.00x | 0.80 | n/a | 4.00 | failed [2] | 100 | 100 | n/a | 100 |")
    errors = lines[lines.index(next(x for x in lines if x.startswith("| model | sparsity | batch "
                                                                      "| threads | max abs"))):]
    assert errors[2] == "| resnet18 | 90% | 1 | 2 | 2.5 | 1.0e-07 | 1.0e-07 | - | - |"
    assert errors[3] == "| resnet18 | 95% | 16 | 1 | 2.5 | 5.0e-01 (!) | 1.0e-07 | - | 1.0e-07 |"
    assert "[1] MNN: load: MNN worker died during 'load' (exit code -11): Segmentation fault" \
        in lines
    assert "[2] ORT alone: ORT died" in lines and "measured on fakes" in lines
    assert f"tolerance {OUTPUT_REL_TOL:g}" in text


def test_markdown_leaves_out_peers_not_asked_for() -> None:
    row = SuiteRow(model="m", sparsity=0.9, batch=1, threads=1, dense_macs=1, sparse_macs=1,
                   contenders={"engine": _ok("engine", 3.0, 1.0)}, ort_rss_mib=50.0)
    table = [x for x in format_report([row], peers=("engine",), versions={}).splitlines()
             if x.startswith("| ")]
    assert table[0] == "| model | sparsity | batch | threads | engine | ORT MiB | engine MiB |"
    assert table[1] == "| m | 90% | 1 | 1 | 3.00x | 50 | 100 |"


def test_rows_round_trip_through_json() -> None:
    for row in _fake_rows():
        data = json.loads(json.dumps(row.to_dict()))
        assert row_from_dict(data) == row
        assert data["contenders"]["engine"]["speedup"] == row.speedup("engine")
        assert data["engine_vs"]["deepsparse"] == row.ratio("engine", "deepsparse")


# --------------------------------------------------------------------- models and the rule

def test_one_prunable_layer_rule_skips_stem_and_depthwise() -> None:
    model = TinyNet(in_channels=3)
    assert list(prunable_convs(model, keep_stem_dense=True, keep_depthwise_dense=True)) == ["pw"]
    assert list(prunable_convs(model, keep_stem_dense=True)) == ["dw", "pw"]
    assert list(prunable_convs(model, keep_stem_dense=False)) == ["conv1", "dw", "pw"]
    zeros = sparsify_convs(model, 0.9, torch.Generator().manual_seed(0), keep_stem_dense=True,
                           keep_depthwise_dense=True)
    assert zeros == {"pw": round(0.9 * 8 * 16)}
    assert int((model.pw.weight == 0).sum()) == zeros["pw"]
    assert int((model.dw.weight == 0).sum()) == 0 and int((model.conv1.weight == 0).sum()) == 0
    assert int((model.fc.weight == 0).sum()) == 0


@pytest.mark.parametrize("name", MODERN_MODELS)
def test_modern_models_prune_grouped_and_se_convs_not_depthwise(name: str) -> None:
    model = FULLSIZE_MODELS[name].build()
    convs = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    chosen = prunable_convs(model, keep_stem_dense=True, keep_depthwise_dense=True)
    stem = next(iter(convs))
    assert stem not in chosen
    for conv_name, conv in convs.items():
        depthwise = 1 < conv.groups == conv.in_channels  # one group per input channel
        assert (conv_name in chosen) == (conv_name != stem and not depthwise), conv_name
    assert len(chosen) >= len(convs) // 2  # most of the convs, whatever the network
    if name == "regnet_y_400mf":  # grouped, not depthwise: pruned
        assert any(1 < conv.groups < conv.in_channels for conv in chosen.values())


def test_only_batchnorms_after_a_conv_must_be_folded() -> None:
    from onnx import TensorProto, helper

    from benchmarks.bench_models import unfolded_batchnorms

    def bn(name: str, source: str) -> object:
        return helper.make_node("BatchNormalization", [source, "s", "b", "m", "v"], [name],
                                name=name)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Concat", ["c", "x"], ["cat"], axis=1, name="cat"),
             bn("after_conv", "c"), bn("after_concat", "cat"), bn("after_input", "x")]
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [value], [value])
    assert unfolded_batchnorms(helper.make_model(graph)) == ["after_conv"]


def test_degenerate_outputs_are_refused() -> None:
    check_not_degenerate(np.array([[1.0, 2.0], [1.5, 2.0]]), "ok")
    with pytest.raises(BenchModelError, match="degenerate"):
        check_not_degenerate(np.array([[1e-9, 2e-9], [1e-9, 2e-9]]), "flat")
    with pytest.raises(BenchModelError, match="degenerate"):
        check_not_degenerate(np.zeros((2, 3)), "zeros")


def test_model_file_is_cached_and_sparse(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    models = {"tiny": _tiny_spec()}
    path = fullsize_model_path("tiny", 0.9, tmp_path, models=models)
    stamp = path.stat().st_mtime_ns
    assert fullsize_model_path("tiny", 0.9, tmp_path, models=models).stat().st_mtime_ns == stamp
    proto = onnx.load(str(path))
    assert proto.ir_version == 8 and proto.opset_import[0].version == 13
    assert not any(node.op_type == "BatchNormalization" for node in proto.graph.node)
    convs = {node.input[1]: node for node in proto.graph.node if node.op_type == "Conv"}
    weights = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    densities = sorted(np.count_nonzero(weights[name]) / weights[name].size for name in convs)
    assert densities[0] == pytest.approx(1.0 - round(0.9 * 128) / 128)  # the 1x1 conv
    assert densities[1:] == [1.0, 1.0]  # stem and depthwise stay dense
    with pytest.raises(BenchModelError, match="unknown model"):
        fullsize_model_path("nope", 0.9, tmp_path, models=models)


# ----------------------------------------------------------------------- the worker protocol

def test_worker_protocol_errors_are_replies() -> None:
    requests = io.StringIO('{"op": "time", "slot": "peer", "runs": 2}\n{"op": "nope"}\n'
                           'not json\n{"op": "load", "slot": "p", "backend": "tvm", '
                           '"model": "m", "input": "x", "threads": 1}\n{"op": "memory"}\n'
                           '{"op": "quit"}\n{"op": "memory"}\n')
    replies = io.StringIO()
    peer_worker.serve(requests, replies)
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert len(answers) == 5  # nothing after quit
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "not loaded" in answers[0]["error"] and "unknown op" in answers[1]["error"]
    assert answers[2]["error"].startswith("JSONDecodeError")
    assert "unknown backend 'tvm'" in answers[3]["error"]
    assert answers[4]["vm_hwm_kib"] >= answers[4]["vm_rss_kib"] > 0


def test_worker_reports_a_missing_library(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("MNN") is not None:
        pytest.skip("MNN is installed in this Python")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 4, 4), dtype=np.float32))
    reply = peer_worker.handle(peer_worker.WorkerState(), {
        "op": "load", "slot": "peer", "backend": "mnn", "model": "m.mnn",
        "input": str(tmp_path / "x.npy"), "threads": 1})
    assert reply["ok"] is False and reply["missing"] is True
    assert "mnn is not installed" in reply["error"]


def test_relative_error_and_memory_fields(tmp_path: Path) -> None:
    got = peer_worker.relative_error(np.array([1.0, 2.5]), np.array([1.0, 2.0]))
    assert got["rel_err"] == pytest.approx(0.25) and got["max_abs_ref"] == 2.0
    assert peer_worker.relative_error(np.zeros(3), np.zeros(2))["rel_err"] is None
    status = tmp_path / "status"
    status.write_text("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n")
    assert peer_worker.memory_kib(str(status)) == {"vm_hwm_kib": 2048, "vm_rss_kib": 1024}


FAKE_WORKER = '''#!{python}
"""A fake peer worker: answers like _peer_worker.py until the op named by FAKE_DIE_AT."""
import json, os, sys
die_at = os.environ.get("FAKE_DIE_AT", "")
mode = os.environ.get("FAKE_MODE", "")
for line in sys.stdin:
    request = json.loads(line)
    op = request["op"]
    if op == "quit":
        break
    if op == die_at and request.get("slot", "peer") == "peer":
        print("fake worker: crashing in " + op, file=sys.stderr, flush=True)
        os._exit(9)
    if op == "load" and mode == "missing" and request["slot"] == "peer":
        reply = {{"ok": False, "missing": True, "error": "peer is not installed (fake)"}}
    elif op == "memory":
        reply = {{"ok": True, "vm_hwm_kib": 4096, "vm_rss_kib": 2048}}
    elif op == "load":
        reply = {{"ok": True, "version": "9.9", "load_s": 0.1}}
    elif op == "compare":
        reply = {{"ok": True, "rel_err": 0.0, "max_abs_ref": 1.0, "max_abs_diff": 0.0}}
    elif op == "time":
        if mode == "garbage":
            print("this is not json", flush=True)
            continue
        ms = 2.0 if request["slot"] == "ort" else 1.0
        reply = {{"ok": True, "samples_ms": [ms] * request["runs"]}}
    else:
        reply = {{"ok": True}}
    print(json.dumps(reply), flush=True)
'''


def _fake_python(tmp_path: Path) -> Path:
    """An executable that ignores its script argument and plays a peer worker."""
    path = tmp_path / "fake-python"
    path.write_text(FAKE_WORKER.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _job(tmp_path: Path):
    from benchmarks.fullsize import RowJob

    return RowJob("tiny", 0.9, tmp_path / "m.onnx", tmp_path / "x.npy", 1, 1, tmp_path / "logs")


@pytest.mark.parametrize(("die_at", "mode", "status", "words"), [
    ("", "", "ok", []),
    ("load", "", "failed", ["load:", "died during 'load'", "exit code 9",
                            "fake worker: crashing in load"]),
    ("time", "", "failed", ["timing:", "died during 'time'", "crashing in time"]),
    ("", "garbage", "failed", ["timing:", "not JSON", "this is not json"]),
    ("", "missing", "not installed", ["peer is not installed (fake)"]),
])
def test_measure_contender_turns_worker_failures_into_notes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, die_at: str, mode: str, status: str,
        words: list[str]) -> None:
    from benchmarks.fullsize import measure_contender

    monkeypatch.setenv("FAKE_DIE_AT", die_at)
    monkeypatch.setenv("FAKE_MODE", mode)
    result = measure_contender("mnn", _fake_python(tmp_path), _job(tmp_path), rounds=2, warmup=1)
    assert result.status == status
    for word in words:
        assert word in result.note
    if status == "ok":
        assert result.speedup == pytest.approx(2.0) and result.rss_mib == pytest.approx(4.0)
        assert result.version == "9.9" and result.rel_err == 0.0 and not result.wrong_output
    if die_at == "time":  # what was measured before the crash is kept
        assert result.rss_mib == pytest.approx(4.0) and result.rel_err == 0.0


def test_missing_python_is_not_installed(tmp_path: Path) -> None:
    from benchmarks.fullsize import measure_contender

    result = measure_contender("openvino", tmp_path / "no" / "python", _job(tmp_path),
                               rounds=1, warmup=0)
    assert result.status == "not installed" and "no " in result.note
    with pytest.raises(WorkerError) as exc:
        WorkerProcess(tmp_path / "nope", Path("x.py"), tmp_path / "log", label="X")
    assert exc.value.missing and "not an executable file" in str(exc.value)


def test_mnn_conversion_without_mnn_is_not_installed(tmp_path: Path) -> None:
    import importlib.util

    from benchmarks.fullsize import _MnnFiles, measure_contender

    if importlib.util.find_spec("_tools") is not None:
        pytest.skip("MNN's converter is installed in this Python")
    model = fullsize_model_path("tiny", 0.9, tmp_path, models={"tiny": _tiny_spec()})
    job = dataclasses.replace(_job(tmp_path), onnx_path=model)
    files = _MnnFiles(Path(sys.executable), tmp_path / "logs", rebuild=False)
    result = measure_contender("mnn", Path(sys.executable), job, rounds=1, warmup=0,
                               model_file=files.get)
    assert result.status == "not installed" and "MNN is not installed" in result.note
    assert not list(tmp_path.glob("*.mnn")) and not list(tmp_path.glob(".*.tmp"))


# ------------------------------------------------------------------------ end to end, quick

def test_quick_run_of_ort_and_engine_on_a_tiny_model(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.fullsize import main

    json_path, md_path = tmp_path / "out" / "suite.json", tmp_path / "out" / "suite.md"
    code = main(["--quick", "--models", "tiny", "--sparsities", "90", "--batches", "2",
                 "--threads", "1", "--peers", "engine,mnn", "--mnn-python",
                 str(tmp_path / "no-mnn" / "python"), "--models-dir", str(tmp_path / "models"),
                 "--json", str(json_path), "--markdown", str(md_path)],
                models={"tiny": _tiny_spec()})
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.startswith("CPU: ") and md_path.read_text() == out.out
    data = json.loads(json_path.read_text())
    assert data["finished"] is True and data["machine"]["cpu_model"]
    (row,) = data["rows"]
    assert (row["model"], row["sparsity"], row["batch"], row["threads"]) == ("tiny", 0.9, 2, 1)
    engine, mnn = row["contenders"]["engine"], row["contenders"]["mnn"]
    assert engine["status"] == "ok", engine["note"]
    assert engine["rel_err"] < ENGINE_REL_TOL and engine["speedup"] > 0
    assert engine["ort"]["runs"] == engine["timing"]["runs"] == 3 * engine["calls_per_round"]
    assert engine["rss_mib"] > engine["base_rss_mib"] > 0 and row["ort_rss_mib"] > 0
    assert mnn["status"] == "not installed" and row["engine_vs"]["mnn"] is None
    table_row = next(x for x in out.out.splitlines() if x.startswith("| tiny "))
    assert "| not installed |" in table_row
    # a second run with --resume reuses the row instead of measuring it again
    assert main(["--quick", "--models", "tiny", "--sparsities", "90", "--batches", "2",
                 "--threads", "1", "--peers", "engine,mnn", "--mnn-python",
                 str(tmp_path / "no-mnn" / "python"), "--models-dir", str(tmp_path / "models"),
                 "--json", str(json_path), "--resume"], models={"tiny": _tiny_spec()}) == 0
    resumed = capsys.readouterr()
    if "+dirty" not in data["commit"]:  # a dirty checkout never resumes (the code may differ)
        assert "tiny s=90%" not in resumed.err
        assert json.loads(json_path.read_text())["rows"] == data["rows"]


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.fullsize import main

    assert main(["--models", "nope", "--models-dir", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["--rounds", "0"]) == 2
    for bad in (["--peers", "tvm"], ["--sparsities", "100"], ["--batches", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(bad)
        assert exc.value.code == 2
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["--models", "resnet18", "--json", str(folder)]) == 2
    assert "not a regular file" in capsys.readouterr().err


# ------------------------------------------------------------- optional: the real peer venvs

PEER_PYTHON_ENV = {"deepsparse": "FEATHERDEPLOY_DEEPSPARSE_PYTHON",
                   "mnn": "FEATHERDEPLOY_MNN_PYTHON", "openvino": "FEATHERDEPLOY_OPENVINO_PYTHON"}


@pytest.mark.parametrize("peer", sorted(PEER_PYTHON_ENV))
def test_peer_round_trip_on_a_tiny_model(tmp_path: Path, peer: str) -> None:
    from benchmarks.fullsize import RowJob, _input_file, _MnnFiles, measure_contender
    from featherdeploy.runtime.bench import load_onnx_model

    python = os.environ.get(PEER_PYTHON_ENV[peer])
    if not python:
        pytest.skip(f"optional peer: set {PEER_PYTHON_ENV[peer]} to the python of its venv")
    model = fullsize_model_path("tiny", 0.9, tmp_path, models={"tiny": _tiny_spec()})
    x = _input_file(tmp_path, load_onnx_model(model), 2, 0)
    job = RowJob("tiny", 0.9, model, x, 2, 1, tmp_path / "logs")
    convert = _MnnFiles(Path(python), tmp_path / "logs", False).get if peer == "mnn" else None
    result = measure_contender(peer, Path(python), job, rounds=2, warmup=1, model_file=convert)
    assert result.status == "ok", result.note
    assert result.rel_err < ENGINE_REL_TOL and result.rss_mib > 0 and result.speedup > 0
