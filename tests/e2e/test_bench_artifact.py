"""`benchmarks.bench` on a small hand-built artifact: accuracy counts, MACs, timing matrix,
output files, CLI errors. Uses the real engine and ONNX Runtime (no training needed)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks import bench
from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.plots import PNG_MAGIC

EXIT_OK, EXIT_BAD_INPUT = 0, 2
CHANNELS, CLASSES, SIZE = 4, 3, 12  # the synthetic dataset is 1 x 12 x 12, 10 classes
IR_VERSION = 8  # onnxruntime accepts at most 13 (docs/performance.md: set it explicitly)


def _weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((CHANNELS, 1, 3, 3)).astype(np.float32)
    conv[np.abs(conv) < 0.8] = 0.0  # about half the weights pruned
    gemm = rng.standard_normal((10, CHANNELS)).astype(np.float32)
    bias = rng.standard_normal(CHANNELS).astype(np.float32)
    return conv, bias, gemm


def _graph(initializers, sparse_initializers=()) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                      ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=list(initializers), sparse_initializer=list(sparse_initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    return model


def _sparse_tensor(name: str, dense: np.ndarray) -> onnx.SparseTensorProto:
    flat = dense.reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)  # linearized (COO) indices
    values = numpy_helper.from_array(flat[indices], name)
    return helper.make_sparse_tensor(values, numpy_helper.from_array(indices, name + "_idx"),
                                     list(dense.shape))


@pytest.fixture
def artifact(tmp_path):
    conv, bias, gemm = _weights()
    dense = [numpy_helper.from_array(conv, "conv_w"), numpy_helper.from_array(bias, "conv_b"),
             numpy_helper.from_array(gemm, "fc_w")]
    onnx.save(_graph(dense), str(tmp_path / "model.onnx"))
    sparse = _graph(dense[1:], [_sparse_tensor("conv_w", conv)])
    onnx.save(sparse, str(tmp_path / "model.sparse.onnx"))
    (tmp_path / "report.json").write_text(json.dumps(
        {"config": {"dataset": "synthetic", "data_dir": None},
         "totals": {"prunable_sparsity": 0.5}}))
    return tmp_path


def _ort_logits(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _images(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 1, SIZE, SIZE)).astype(np.float32)


def test_bench_artifact_measures_everything(artifact):
    images = _images(40)
    predictions = _ort_logits(artifact / "model.onnx", images).argmax(1)
    labels = predictions.copy()
    labels[::4] = (labels[::4] + 1) % 10  # every 4th label wrong: top-1 exactly 30 / 40
    settings = bench.BenchSettings(threads=(1, 2), batches=(1, 8), rounds=3, warmup=1,
                                   accuracy_batch=16)
    result = bench.bench_artifact(artifact, images, labels, settings)

    assert result.accuracy.images == 40
    assert result.accuracy.ort_correct == 30
    assert result.accuracy.engine_correct == 30
    assert result.accuracy.disagreements == 0
    conv, _, _ = _weights()
    conv_dense = CHANNELS * 1 * 9 * SIZE * SIZE
    assert result.dense_macs == conv_dense + 10 * CHANNELS
    nnz = int(np.count_nonzero(conv))
    assert result.sparse_macs == (conv_dense * nnz + conv.size // 2) // conv.size + 10 * CHANNELS
    assert result.prunable_sparsity == 0.5 and result.dataset == "synthetic"
    keys = {(r.contender, r.threads, r.batch) for r in result.timings}
    assert keys == {(c, t, b) for c in ("ort_dense", "ort_sparse", "engine")
                    for t in (1, 2) for b in (1, 8)}
    for row in result.timings:
        assert row.runs == 3 and row.median_ms > 0
        if row.contender == "ort_dense":
            assert row.speedup_vs_ort_dense == 1.0


def test_outputs_written_and_consistent(artifact, tmp_path):
    images = _images(16)
    labels = _ort_logits(artifact / "model.onnx", images).argmax(1)
    settings = bench.BenchSettings(threads=(1,), batches=(1,), rounds=2, warmup=0)
    result = bench.bench_artifact(artifact, images, labels, settings)
    out = tmp_path / "out"
    bench.write_bench_outputs(result, out)
    data = json.loads((out / "bench.json").read_text())
    assert data["format"] == "featherdeploy-bench" and data["version"] == 1
    assert data["accuracy"]["engine_top1"] == 1.0 and data["accuracy"]["agree"] is True
    assert data["macs"]["dense"] == result.dense_macs
    assert data["machine"]["cores"] >= 1
    engine = bench.find_timing(result.timings, "engine", 1, 1)
    assert [t for t in data["timings"] if t["contender"] == "engine"][0]["median_ms"] == \
        engine.median_ms
    markdown = (out / "bench.md").read_text()
    assert "| threads | batch | engine | median latency (ms/batch)" in markdown
    assert "Dense MACs per image" in markdown and "cores" in markdown
    assert (out / "bench_latency.png").read_bytes().startswith(PNG_MAGIC)


def test_measure_accuracy_reports_disagreements():
    logits = np.eye(10, dtype=np.float32)[np.arange(12) % 10]  # image i predicts class i % 10

    def reference(x):
        return logits[x[:, 0, 0, 0].astype(int)]

    def off_by_one_on_5(x):
        out = reference(x).copy()
        index = x[:, 0, 0, 0].astype(int)
        out[index == 5] = np.roll(out[index == 5], 1, axis=1)
        return out

    images = np.arange(12, dtype=np.float32).reshape(12, 1, 1, 1)
    labels = np.arange(12) % 10
    result = bench.measure_accuracy(off_by_one_on_5, reference, images, labels, batch=5)
    assert (result.ort_correct, result.engine_correct) == (12, 11)
    assert result.disagreements == 1 and result.disagreeing_indices == (5,)
    with pytest.raises(BenchInputError, match="as many labels"):
        bench.measure_accuracy(reference, reference, images, labels[:3])


def test_cli_on_the_synthetic_test_set(artifact, capsys):
    code = bench.main([str(artifact), "--threads", "1", "--batches", "1,4", "--rounds", "2",
                       "--warmup", "0", "--limit", "32"])
    printed = capsys.readouterr().out
    data = json.loads((artifact / "bench.json").read_text())
    assert data["accuracy"]["images"] == 32
    assert code == EXIT_OK, f"engine top-1 differs from ORT: {data['accuracy']}"
    assert "featherdeploy engine" in printed and "wrote" in printed


@pytest.mark.parametrize("setup, message", [
    ("missing", "artifact directory not found"),
    ("empty", "model.onnx is missing"),
    ("no_dataset", "does not name the dataset"),
])
def test_cli_bad_input_exits_2(tmp_path, artifact, capsys, setup, message):
    target = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "no_dataset": artifact}
    (tmp_path / "empty").mkdir()
    if setup == "no_dataset":
        (artifact / "report.json").write_text("{}")
    assert bench.main([str(target[setup])]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (target[setup] / "bench.json").exists()


def test_cli_rejects_bad_settings(artifact, capsys):
    assert bench.main([str(artifact), "--threads", "0"]) == EXIT_BAD_INPUT
    assert "threads must be positive" in capsys.readouterr().err
