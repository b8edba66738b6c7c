"""Engine API and CLI: bad inputs give one clear error, concurrency is safe, no torch anywhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from featherdeploy.runtime import (
    Engine,
    EngineError,
    EngineOptions,
    InputError,
    ModelLoadError,
    PlannerOptions,
    UnsupportedOpError,
)
from featherdeploy.runtime.__main__ import main
from tests.runtime.onnx_cases import (
    assert_close,
    ort_run,
    random_input,
    run_in_threads,
    save_model,
)

REPO = Path(__file__).resolve().parents[2]


def _small_cnn(path: Path, batch: str | int = "n") -> Path:
    """Conv(3->8, pad 1) + Relu -> Conv(8->8, stride 2) + Add(residual via 1x1) + Relu -> GAP ->
    Flatten -> Gemm(10) -> Softmax."""
    rng = np.random.default_rng(0)

    def w(*shape, density=0.5):
        return (rng.standard_normal(shape) * (rng.random(shape) < density)).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3, density=1.0), "b1": w(8, density=1.0), "w2": w(8, 8, 3, 3),
             "w3": w(8, 8, 1, 1), "fc": w(10, 8, density=1.0), "fcb": w(10, density=1.0)}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2]),
        helper.make_node("Conv", ["r1", "w3"], ["c3"], name="short", strides=[2, 2]),
        helper.make_node("Add", ["c2", "c3"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 10, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return save_model(model, path)


@pytest.fixture()
def small_model(tmp_path) -> Path:
    return _small_cnn(tmp_path / "small.onnx")


def test_small_cnn_matches_ort(small_model):
    x = random_input((3, 3, 10, 10))
    assert_close(Engine(small_model, threads=2).run(x), ort_run(small_model, x))


@pytest.mark.parametrize("bad,match", [
    (np.zeros((3, 10, 10), np.float32), "rank 4"),
    (np.zeros((1, 4, 10, 10), np.float32), "dim 1 must be 3"),
    (np.zeros((1, 3, 10, 11), np.float32), "dim 3 must be 10"),
    (np.zeros((1, 3, 10, 10), np.float64), "float32"),
    (np.zeros((1, 3, 10, 10), np.int32), "float32"),
    ([[1.0]], "numpy.ndarray"),
])
def test_bad_input_raises_input_error(small_model, bad, match):
    with pytest.raises(InputError, match=match):
        Engine(small_model, threads=1).run(bad)


def test_static_batch_is_enforced(tmp_path):
    path = _small_cnn(tmp_path / "static.onnx", batch=2)
    engine = Engine(path, threads=1)
    assert engine.run(random_input((2, 3, 10, 10))).shape == (2, 10)
    with pytest.raises(InputError, match="dim 0 must be 2"):
        engine.run(random_input((3, 3, 10, 10)))


def test_non_contiguous_input_is_accepted(small_model):
    x = random_input((2, 3, 10, 20))[:, :, :, ::2]
    expected = ort_run(small_model, np.ascontiguousarray(x))
    assert_close(Engine(small_model, threads=1).run(x), expected)


def test_truncated_and_garbled_models(tmp_path, small_model):
    data = small_model.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbled = tmp_path / "garbled.onnx"
    garbled.write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    for path in (truncated, garbled):
        with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
            Engine(path)
    with pytest.raises(ModelLoadError, match="cannot read model file"):
        Engine(tmp_path / "missing.onnx")


def _with_node(small_model: Path, tmp_path: Path, node) -> Path:
    model = onnx.load(str(small_model))
    model.graph.node.append(node)
    model.graph.output[0].name = node.output[0]
    return save_model(model, tmp_path / "extra.onnx")


def test_unsupported_op_runs_on_ort_or_fails_in_strict_mode(tmp_path, small_model):
    path = _with_node(small_model, tmp_path, helper.make_node("Sin", ["y"], ["z"], name="sin"))
    x = random_input((2, 3, 10, 10))
    assert_close(Engine(path).run(x), ort_run(path, x))
    with pytest.raises(UnsupportedOpError, match=r'Sin: "sin"'):
        Engine(path, options=EngineOptions(backend="native", fallback=False))


def test_custom_domain_op_is_named(tmp_path, small_model):
    node = helper.make_node("FusedThing", ["y"], ["z"], name="custom", domain="com.example")
    path = _with_node(small_model, tmp_path, node)
    with pytest.raises(UnsupportedOpError, match='FusedThing: "custom"'):
        Engine(path, options=EngineOptions(backend="native", fallback=False))
    with pytest.raises(EngineError, match="ONNX Runtime cannot load"):
        Engine(path)  # nobody runs it: one clear error


def test_undefined_input_is_a_load_error(tmp_path, small_model):
    node = helper.make_node("Add", ["y", "nowhere"], ["z"], name="dangling")
    with pytest.raises(ModelLoadError, match="undefined input 'nowhere'"):
        Engine(_with_node(small_model, tmp_path, node))


def test_concurrent_runs_equal_sequential(small_model):
    engine = Engine(small_model, threads=2)
    inputs = [random_input((b % 3 + 1, 3, 10, 10), seed=b) for b in range(16)]
    sequential = [engine.run(x) for x in inputs]
    results: dict[int, np.ndarray] = {}

    def worker(k: int) -> None:
        for i in range(k, len(inputs), 4):
            for _ in range(5):
                out = engine.run(inputs[i])
                if i in results:
                    np.testing.assert_array_equal(out, results[i])
                results[i] = out

    errors = run_in_threads(worker, 4)
    assert not errors, errors
    for i, expected in enumerate(sequential):
        np.testing.assert_array_equal(results[i], expected)


def test_threads_argument_is_validated(small_model):
    from featherdeploy.runtime import EngineError

    with pytest.raises(EngineError, match="threads"):
        Engine(small_model, threads=0)


def test_runtime_never_imports_torch(tmp_path, small_model):
    """Run the CLI and the API in a subprocess where importing torch raises."""
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x_path, random_input((2, 3, 10, 10)))
    script = textwrap.dedent(f"""
        import sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is forbidden in the runtime")
                return None
        sys.meta_path.insert(0, NoTorch())
        import numpy as np
        from featherdeploy import runtime
        from featherdeploy.runtime.__main__ import main
        assert main(["run", {str(small_model)!r}, "--input", {str(x_path)!r},
                     "--output", {str(y_path)!r}, "--threads", "2"]) == 0
        runtime.Engine({str(small_model)!r}).run(np.load({str(x_path)!r}))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", runtime.native_isa())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok ")
    assert_close(np.load(y_path), ort_run(small_model, np.load(x_path)))


def test_importing_runtime_is_cheap():
    script = ("import sys, featherdeploy.runtime.macs; "
              "heavy = ('onnx', 'featherdeploy.runtime._native', 'featherdeploy.runtime.engine'); "
              "print([m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_run_writes_output(tmp_path, small_model, capsys):
    x = random_input((2, 3, 10, 10))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    assert main(["run", str(small_model), "--input", str(tmp_path / "x.npy"),
                 "--output", str(out), "--threads", "1"]) == 0
    assert_close(np.load(out), ort_run(small_model, x))
    out_text = capsys.readouterr().out
    assert "y (2, 10)" in out_text and "coverage: 10 of 10 nodes" in out_text


def test_cli_bad_inputs_exit_2(tmp_path, small_model, capsys):
    np.save(tmp_path / "wrong.npy", np.zeros((1, 5, 10, 10), np.float32))
    out = tmp_path / "y.npy"
    assert main(["run", str(small_model), "--input", str(tmp_path / "wrong.npy"),
                 "--output", str(out)]) == 2
    assert "dim 1 must be 3" in capsys.readouterr().err
    assert not out.exists()  # nothing half-written
    assert main(["run", str(tmp_path / "none.onnx"), "--input", str(tmp_path / "wrong.npy"),
                 "--output", str(out)]) == 2
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    assert main(["run", str(small_model), "--input", str(tmp_path / "bad.npy"),
                 "--output", str(out)]) == 2
    assert "cannot read input array" in capsys.readouterr().err


def test_cli_bench_is_dispatched(small_model, tmp_path, capsys):
    code = main(["bench", str(small_model), "--batch", "1", "--threads", "1", "--rounds", "1",
                 "--warmup", "0"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()


def test_python_m_runtime_entry_point(small_model, tmp_path):
    done = subprocess.run([sys.executable, "-m", "featherdeploy.runtime", "run", str(small_model),
                           "--input", str(tmp_path / "missing.npy"),
                           "--output", str(tmp_path / "y.npy")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "error:" in done.stderr


def test_dynamic_spatial_dims_plan_per_input(tmp_path):
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((4, 3, 3, 3)) * (rng.random((4, 3, 3, 3)) < 0.5)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[1, 1, 1, 1])], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = save_model(model, tmp_path / "dyn.onnx")
    engine = Engine(path, threads=2)
    for shape in ((1, 3, 5, 9), (2, 3, 12, 7)):
        x = random_input(shape)
        assert_close(engine.run(x), ort_run(path, x))


@pytest.mark.parametrize("threads", [1, 2])
def test_batches_run_in_interleaved_groups_and_a_tail(tmp_path, threads):
    """37 images: two batch-interleaved groups of 16 and an interleaved tail of 5; every image's
    output equals ONNX Runtime's and the engine's own batch-1 result."""
    path = _small_cnn(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(threads=threads, backend="native",
                                                batch_layout="interleaved"))
    x = random_input((37, 3, 10, 10), seed=4)
    got = engine.run(x)
    assert engine.tune([37])[37].startswith("interleaved groups of 16")
    assert_close(got, ort_run(path, x))
    singles = np.concatenate([engine.run(x[i:i + 1]) for i in range(0, 37, 6)])
    assert_close(got[::6], singles)
    interleaved = [key for key in engine._programs if key[2]]
    assert {key[0][0][1][0] for key in interleaved} == {16, 5}


@pytest.mark.parametrize("grouped_s,kept", [(2.0, False), (0.5, True)])
def test_a_layout_that_loses_the_timing_is_not_kept(tmp_path, monkeypatch, grouped_s, kept):
    """16 images timed interleaved against image by image: the losing interleaved program (an
    arena for 16 images) leaves the cache; the winner stays and serves (a split batch, timed
    next against the winner, ties it here and is not kept)."""
    import featherdeploy.runtime.engine as engine_module

    results = [(grouped_s, 1.0)]

    def timed(first, second, **_):
        first()
        second()
        return results.pop(0) if results else (1.0, 1.0)

    monkeypatch.setattr(engine_module, "compare_streams", timed)
    path = _small_cnn(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(threads=1, backend="native"))
    x = random_input((16, 3, 10, 10), seed=6)
    assert_close(engine.run(x), ort_run(path, x))
    assert any(key[2] for key in engine._programs) == kept
    assert engine.tune([16])[16].startswith("interleaved" if kept else "planar")


@pytest.mark.parametrize("tail_wins", [False, True])
def test_the_tail_interleaves_only_when_its_group_size_wins(tmp_path, monkeypatch, tail_wins):
    """37 images, groups of 16 timed as winning: the tail of 5 runs as one interleaved group
    only when groups of that size (4) also win the timing, else image by image (on a 224-px
    network an interleaved tail of 3 was 1.5x slower). Outputs equal ORT's either way."""
    path = _small_cnn(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(threads=2, backend="native"))
    timed = []

    def ratio(images, batch, lanes):  # interleaved time / image by image
        timed.append(lanes)
        return 0.5 if lanes == 16 or tail_wins else 2.0

    monkeypatch.setattr(engine, "_interleaved_ratio", ratio)
    x = random_input((37, 3, 10, 10), seed=4)
    assert_close(engine.run(x), ort_run(path, x))
    assert sorted(timed) == [4, 16]
    interleaved = {key[0][0][1][0] for key in engine._programs if key[2]}
    assert interleaved == ({16, 5} if tail_wins else {16})


def test_interleave_lanes_rule(tmp_path):
    """Powers of two up to the batch and max_lanes, within the activation budget."""
    from featherdeploy.runtime.graph import load_graph
    from featherdeploy.runtime.planner.batch import interleave_lanes

    graph = load_graph(_small_cnn(tmp_path / "m.onnx"))
    images = {"x": (3, 10, 10)}
    opts = PlannerOptions()
    assert [interleave_lanes(graph, images, b, opts) for b in (1, 2, 3, 7, 8, 32)] == [
        1, 2, 2, 4, 8, 16]
    largest_bytes = 8 * 10 * 10 * 4  # conv1's output per image
    assert interleave_lanes(graph, images, 32,
                            PlannerOptions(lanes_budget_bytes=4 * largest_bytes)) == 4
    assert interleave_lanes(graph, images, 32,
                            PlannerOptions(lanes_budget_bytes=largest_bytes)) == 1
    untimed = PlannerOptions(untimed_lanes_budget_bytes=2 * largest_bytes)
    assert interleave_lanes(graph, images, 32, untimed, timed=False) == 2
    assert interleave_lanes(graph, images, 32, untimed) == 16
    # beyond the untimed budget a group must fill whole vectors per position
    partial = PlannerOptions(lanes_budget_bytes=8 * largest_bytes,
                             untimed_lanes_budget_bytes=2 * largest_bytes)
    assert interleave_lanes(graph, images, 32, partial, vector_floats=16) == 2
    assert interleave_lanes(graph, images, 32, partial, vector_floats=8) == 8


@pytest.mark.parametrize("layout", ["planar", "auto"])
def test_batch_layout_choice(tmp_path, layout):
    """planar never interleaves; auto times both layouts once per group size and keeps one.
    Both give ORT's results."""
    path = _small_cnn(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(threads=2, backend="native",
                                                batch_layout=layout))
    x = random_input((9, 3, 10, 10), seed=6)
    assert_close(engine.run(x), ort_run(path, x))
    choice = engine.tune([9])[9]
    if layout == "planar":
        assert choice.startswith("planar")
    else:
        assert choice.startswith(("planar", "interleaved groups of 8"))


def test_bad_options_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATHERDEPLOY_BATCH_LAYOUT", "diagonal")
    with pytest.raises(EngineError, match="batch_layout must be one of"):
        Engine(_small_cnn(tmp_path / "m.onnx"), backend="native")
    with pytest.raises(EngineError, match="threads must be in"):
        EngineOptions(threads=10000)
    with pytest.raises(EngineError, match="jit must be bool"):
        EngineOptions(jit=1)


def test_interleave_lanes_count_activations_not_weights(tmp_path):
    """A big 1x1 weight (4 MB) on a tiny plane: only activations bound the group size."""
    from featherdeploy.runtime.graph import load_graph
    from featherdeploy.runtime.planner.batch import interleave_lanes
    from tests.runtime.onnx_cases import single_node_model

    weight = np.zeros((1024, 1024, 1, 1), np.float32)
    weight[::7, ::5] = 1.0
    model = single_node_model("Conv", ("n", 1024, 2, 2), initializers={"w": weight})
    graph = load_graph(save_model(model, tmp_path / "m.onnx"))
    opts = PlannerOptions()
    assert interleave_lanes(graph, {"x": (1024, 2, 2)}, 32, opts) == opts.max_lanes


def test_group_size_is_worked_out_once_per_shapes(tmp_path, monkeypatch):
    """Which group sizes fit specializes the whole graph (16 ms for ResNet-50): done at the
    first batch of a size, not on every run."""
    import featherdeploy.runtime.engine as engine_module

    calls = []
    original = engine_module.interleave_lanes

    def counted(*args, **kwargs):
        calls.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_module, "interleave_lanes", counted)
    path = _small_cnn(tmp_path / "m.onnx")
    engine = Engine(path, options=EngineOptions(threads=1, backend="native"))
    for batch in (16, 16, 5, 16, 5):
        x = random_input((batch, 3, 10, 10), seed=batch)
        assert_close(engine.run(x), ort_run(path, x))
    assert sorted(set(calls)) == sorted(calls)  # each batch size once
