"""Backend choice: auto delegates near-dense models to ONNX Runtime, keeps sparse ones native."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from featherdeploy.runtime.engine import Engine, weight_density
from featherdeploy.runtime.errors import EngineError, UnsupportedOpError
from featherdeploy.runtime.options import EngineOptions, OptionsError
from featherdeploy.runtime.tuning import compare_streams

TOL = 1e-4


def _conv_model(path, sparsity: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    weight[rng.random(weight.shape) < sparsity] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 10, 10])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return float(np.count_nonzero(weight)) / weight.size


def _matmul_model(path):
    """Channels-last linears (x: (N, 6, 16) @ (16, 16), 90% zero): the dense GEMM path."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((16, 16)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.9] = 0.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="linear")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 16])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def _ort(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None,
                                                                                  {"x": x})[0]


@pytest.mark.parametrize("sparsity, expected", [(0.0, "onnxruntime"), (0.9, "native")])
def test_auto_backend_by_density(tmp_path, monkeypatch, sparsity, expected):
    monkeypatch.setenv("FEATHERDEPLOY_BACKEND", "auto")
    path = tmp_path / "m.onnx"
    density = _conv_model(path, sparsity)
    engine = Engine(path, threads=1)
    assert weight_density(engine.graph) == pytest.approx(density)
    assert (density > EngineOptions().dense_delegate_density) == (expected == "onnxruntime")
    assert engine.backend == expected
    x = np.random.default_rng(1).standard_normal((3, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _ort(path, x), rtol=TOL, atol=TOL)


def test_explicit_backends_agree(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.0)
    x = np.random.default_rng(2).standard_normal((2, 4, 10, 10)).astype(np.float32)
    native = Engine(path, threads=2, backend="native")
    delegated = Engine(path, threads=2, backend="onnxruntime")
    assert (native.backend, delegated.backend) == ("native", "onnxruntime")
    np.testing.assert_allclose(native.run(x), delegated.run(x), rtol=TOL, atol=TOL)


def test_bad_backend_and_unsupported_ops(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    with pytest.raises(EngineError, match="backend"):
        Engine(path, backend="gpu")
    model = onnx.load(path)
    model.graph.node.append(helper.make_node("Sin", ["y"], ["z"], name="sin"))
    model.graph.output[0].name = "z"
    onnx.save(model, path)
    x = np.random.default_rng(4).standard_normal((2, 4, 10, 10)).astype(np.float32)
    expected = _ort(path, x)
    for backend in ("onnxruntime", "native"):  # native: Sin runs on ONNX Runtime
        np.testing.assert_allclose(Engine(path, backend=backend).run(x), expected, rtol=TOL,
                                   atol=TOL)
    with pytest.raises(UnsupportedOpError, match='Sin: "sin"'):
        Engine(path, options=EngineOptions(backend="native", fallback=False))


def test_batch_one_thread_choice(tmp_path):
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    x = np.random.default_rng(3).standard_normal((1, 4, 10, 10)).astype(np.float32)
    engine = Engine(path, threads=2, backend="native")
    got = engine.run(x)
    assert engine.tune([1])[1] in ("one image, 1 thread(s)", "one image, 2 thread(s)")
    np.testing.assert_allclose(got, _ort(path, x), rtol=TOL, atol=TOL)
    # Without tuning every thread serves, and the answer is the same.
    untuned = Engine(path, options=EngineOptions(threads=2, backend="native", tuning="off"))
    np.testing.assert_array_equal(untuned.run(x), got)
    assert untuned.tune([1]) == {1: "one image, 2 thread(s)"}


def test_probe_stops_when_the_first_option_is_slow():
    calls = {"first": 0, "second": 0}

    def first():
        calls["first"] += 1

    def second():
        calls["second"] += 1

    first_s, second_s = compare_streams(first, second, first_limit_s=-1.0)
    assert second_s == float("inf") and calls["second"] == 0 and calls["first"] > 0
    first_s, second_s = compare_streams(first, second)
    assert calls["second"] > 0 and second_s < float("inf")


@pytest.mark.parametrize("seconds,ort_faster", [((2.0, 1.0), True), ((1.0, 2.0), False),
                                                ((1.0, 0.97), False)], ids=str)
def test_auto_runs_shapes_ort_measured_faster_on_ort(tmp_path, monkeypatch, seconds, ort_faster):
    """backend=auto times the native program against ONNX Runtime dense once per input shapes
    (above compare_ort_above_ms) and runs those shapes on ORT when it was faster by more than
    the margin (tuning.ORT_MARGIN); describe() says which."""
    import featherdeploy.runtime.engine as engine_module

    path = tmp_path / "m.onnx"
    _matmul_model(path)
    calls = []

    def timed(native, ort_run, **_):
        calls.append((native(), ort_run()))
        return seconds

    monkeypatch.setattr(engine_module, "compare_streams", timed)
    # (one thread, planar batches: no other choice is timed)
    engine = Engine(path, options=EngineOptions(threads=1, batch_layout="planar",
                                                compare_ort_above_ms=0.0))
    x = np.random.default_rng(3).standard_normal((2, 6, 16)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(engine.run(x), _ort(path, x), rtol=TOL, atol=TOL)
    assert len(calls) == 1  # once per shapes
    report = engine.describe(input_shapes={"x": (2, 6, 16)}).format()
    assert ("measured faster" in report) == ort_faster
    assert (engine._dense is not None) == ort_faster  # a losing ORT session is not kept
    engine.run(x[:1])
    assert len(calls) == 2  # new shapes, timed again


@pytest.mark.parametrize("options", [dict(backend="native"), dict(tuning="off"),
                                     dict(compare_ort_above_ms=float("inf")), {},
                                     dict(compare_ort_above_ms=0.0)], ids=str)
def test_no_ort_comparison_when_fixed_or_small(tmp_path, monkeypatch, options):
    """An explicit backend, tuning off, an infinite threshold, (default threshold) a run
    shorter than compare_ort_above_ms, or a program of sparse convs without ONNX Runtime
    segments: nothing is compared and no ORT session is made."""
    import featherdeploy.runtime.engine as engine_module

    def fail(*_):
        raise AssertionError("compared with ONNX Runtime")

    monkeypatch.setattr(engine_module, "compare_streams", fail)
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    engine = Engine(path, options=EngineOptions(threads=1, **options))
    x = np.random.default_rng(4).standard_normal((1, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _ort(path, x), rtol=TOL, atol=TOL)
    assert engine._dense is None


def test_compare_threshold_is_validated():
    with pytest.raises(OptionsError, match="compare_ort_above_ms"):
        EngineOptions(compare_ort_above_ms=float("nan"))


@pytest.mark.parametrize("seconds,one_thread_program,threads", [
    ([(1.0, 2.0)], False, 2),
    ([(1.0, 1.1), (1.0, 0.9)], True, 1),
    ([(1.0, 1.1), (1.0, 1.2)], False, 2)], ids=["clearly-parallel", "close-serial",
                                                "close-parallel"])
def test_thread_choice_builds_a_one_thread_program_only_when_close(
        tmp_path, monkeypatch, seconds, one_thread_program, threads):
    """Batch 1 on 2 threads: the parallel plan is first timed against itself run on the
    calling thread; clearly faster (tuning.SERIAL_PLAN_MARGIN), it serves without a one-thread
    program in memory; otherwise the one-thread program is built and the faster one serves,
    and a one-thread program that lost is forgotten (its weights and arena freed)."""
    import featherdeploy.runtime.engine as engine_module

    timings = list(seconds)

    def timed(first, second, **_):
        first()
        second()
        return timings.pop(0)

    monkeypatch.setattr(engine_module, "compare_streams", timed)
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    engine = Engine(path, options=EngineOptions(threads=2, backend="native"))
    x = np.random.default_rng(5).standard_normal((1, 4, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(engine.run(x), _ort(path, x), rtol=TOL, atol=TOL)
    assert timings == []
    assert any(key[1] == 1 for key in engine._programs) == one_thread_program
    assert engine.tune([1]) == {1: f"one image, {threads} thread(s)"}


def test_run_serial_equals_run_on_the_calling_thread(tmp_path):
    """Plan.run_serial (the thread choice's one-thread cost) gives the parallel run's result
    bit for bit, and no helper thread takes part."""
    path = tmp_path / "m.onnx"
    _conv_model(path, 0.9)
    engine = Engine(path, options=EngineOptions(threads=2, backend="native", tuning="off"))
    x = np.random.default_rng(6).standard_normal((1, 4, 10, 10)).astype(np.float32)
    plan = engine._program((("x", x.shape),)).single_plan
    parallel = [np.empty(s, np.float32) for s in plan.output_shapes]
    serial = [np.empty(s, np.float32) for s in plan.output_shapes]
    plan.native.run([x], parallel)
    helped = plan.native.helper_units
    plan.native.run_serial([x], serial)
    np.testing.assert_array_equal(serial[0], parallel[0])
    assert plan.native.helper_units == helped
