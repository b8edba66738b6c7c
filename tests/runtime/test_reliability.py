"""What an attacker or a careless user does to the runtime: external data next to the model and
decoys in the working directory, NaN / Inf / huge inputs and weights, environment errors of the
CLI (unwritable, full, a directory, /proc, a device), invalid models ONNX Runtime refuses, and
paths that never end (/dev/zero, a FIFO). Every bad input is one EngineError (one line and exit
2 from the CLI), every answer is ONNX Runtime's. (tests/fuzz draws such cases at random.)
"""

from __future__ import annotations

import copy
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from featherdeploy.runtime import (
    Engine,
    EngineError,
    EngineOptions,
    InputError,
    ModelLoadError,
    UnsupportedOpError,
)
from featherdeploy.runtime.__main__ import main
from featherdeploy.runtime.engine import extreme
from tests.fuzz.seeds import EXTERNAL_FILE, Seed, seed_by_name
from tests.runtime.onnx_cases import assert_close

REPO = Path(__file__).resolve().parents[2]


def _write(seed: Seed, folder: Path, model: onnx.ModelProto | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes((model or seed.model).SerializeToString())
    for name, data in seed.files.items():
        (folder / name).write_bytes(data)
    return path


def _ort(path: Path | bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    model = str(path) if isinstance(path, Path) else path
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _feeds(seed: Seed, batch: int | None = None, rng: int = 0) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(rng)
    feeds = {}
    for name, shape in seed.feed_shapes.items():
        if batch is not None and name == "x":
            shape = (batch, *shape[1:])
        feeds[name] = gen.standard_normal(shape).astype(np.float32)
    return feeds


def _run(engine: Engine, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return engine.run(feeds, output_names=[o.name for o in engine.outputs])


def _refuses(path: Path, feeds: dict[str, np.ndarray] | None = None) -> bool:
    """ONNX Runtime refuses the model: at load, or at its first run on ``feeds``."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        if feeds is not None:
            session.run(None, feeds)
    except Exception:  # noqa: BLE001 - ORT's own exception types
        return True
    return False


# ----------------------------------------------------------------------------- 1: external data


def test_external_data_is_read_beside_the_model_not_in_the_cwd(tmp_path, monkeypatch):
    seed = seed_by_name("external")
    path = _write(seed, tmp_path / "model")
    feeds = _feeds(seed)
    expected = _ort(path, feeds)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_close(Engine(path, threads=1).run(feeds), expected[0])
    # A same-named weight file in the working directory is never read.
    (elsewhere / EXTERNAL_FILE).write_bytes(np.full(4096, 7.0, np.float32).tobytes())
    assert_close(Engine(path, threads=1).run(feeds), expected[0])
    # A relative model path from another folder, through the CLI.
    np.save(elsewhere / "x.npy", feeds["x"])
    rel = os.path.relpath(path, elsewhere)
    assert main(["run", rel, "--input", "x.npy", "--output", "y.npy", "--threads", "1"]) == 0
    assert_close(np.load(elsewhere / "y.npy"), expected[0])


def test_external_data_without_its_file_is_a_load_error(tmp_path, monkeypatch):
    seed = seed_by_name("external")
    folder = tmp_path / "model"
    path = _write(seed, folder)
    (folder / EXTERNAL_FILE).unlink()
    monkeypatch.chdir(tmp_path)
    (tmp_path / EXTERNAL_FILE).write_bytes(seed.files[EXTERNAL_FILE])  # the decoy
    with pytest.raises(ModelLoadError, match="is missing"):
        Engine(path)


@pytest.mark.parametrize("location", ["/etc/passwd", "../weights.bin", "sub/../../weights.bin",
                                      "", "weights.bin\0x", ".", "/dev/zero"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    seed = seed_by_name("external")
    model = copy.deepcopy(seed.model)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path = _write(seed, tmp_path / "model", model)
    (tmp_path / "weights.bin").write_bytes(seed.files[EXTERNAL_FILE])
    with pytest.raises(ModelLoadError, match="external data"):
        Engine(path)


def test_external_data_location_of_invalid_utf8_is_refused(tmp_path):
    seed = seed_by_name("external")
    data = seed.model.SerializeToString().replace(EXTERNAL_FILE.encode(), b"\xff\xfeights.bin")
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="UTF-8"):
        Engine(path)


# ----------------------------------------------------------------------------- 2: NaN in, NaN out


NAN_OPTIONS = [
    pytest.param(dict(threads=1, batch_layout="planar"), id="planar-1t"),
    pytest.param(dict(threads=2, batch_layout="planar"), id="planar-2t"),
    pytest.param(dict(threads=1, batch_layout="interleaved"), id="interleaved-1t"),
    pytest.param(dict(threads=2, batch_layout="interleaved"), id="interleaved-2t"),
]


def _assert_same_as_ort(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(e))
        finite = np.isfinite(e)
        assert_close(np.where(finite, g, 0).astype(np.float32), np.where(finite, e, 0))


@pytest.mark.parametrize("options", NAN_OPTIONS)
@pytest.mark.parametrize("name", ["cnn", "depthwise", "multi_output", "sparse_init"])
@pytest.mark.parametrize("where", ["all", "pixel", "channel"])
def test_nan_in_nan_out_as_onnx_runtime(tmp_path, name, where, options):
    """A pruned conv skips its zero weights, so 0 * NaN never happens natively; the answer is
    still ONNX Runtime's (NaN wherever dense arithmetic spreads it)."""
    seed = seed_by_name(name)
    path = _write(seed, tmp_path)
    batch = 16 if seed.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param else None
    feeds = _feeds(seed, batch)
    x = feeds["x"]
    if where == "all":
        x[...] = np.nan
    elif where == "pixel":
        x[0, 1, 2, 3] = np.nan
    else:
        x[-1, 0] = np.nan
    engine = Engine(path, options=EngineOptions(backend="native", tuning="off", **options))
    expected = _ort(path, feeds)
    got = _run(engine, feeds)
    _assert_same_as_ort(got, expected)
    if where == "all":
        assert all(np.isnan(g).any() for g in got)
    # The same engine still answers finite inputs natively and right.
    clean = _feeds(seed, batch, rng=1)
    for g, e in zip(_run(engine, clean), _ort(path, clean), strict=True):
        assert_close(g, e)


@pytest.mark.parametrize("value", [np.inf, -np.inf, 3e38, -3e38])
def test_infinite_and_huge_inputs_as_onnx_runtime(tmp_path, value):
    seed = seed_by_name("cnn")
    path = _write(seed, tmp_path)
    feeds = _feeds(seed, 4)
    feeds["x"][1, :, 3] = value
    engine = Engine(path, options=EngineOptions(backend="native", threads=2, tuning="off"))
    _assert_same_as_ort(_run(engine, feeds), _ort(path, feeds))


@pytest.mark.parametrize("value", [np.nan, np.inf, -3e38])
def test_non_finite_weights_as_onnx_runtime(tmp_path, value):
    seed = seed_by_name("multi_output")
    model = copy.deepcopy(seed.model)
    init = next(t for t in model.graph.initializer if t.name == "c1.w")
    w = numpy_helper.to_array(init).copy()
    w[0, 0, 1, 1] = value
    init.CopyFrom(numpy_helper.from_array(w, "c1.w"))
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    with pytest.warns(RuntimeWarning, match="weights hold NaN, Inf"):
        engine = Engine(path, options=EngineOptions(backend="native", threads=1))
    _assert_same_as_ort(_run(engine, feeds), _ort(path, feeds))


def test_extreme_detects_nan_inf_and_overflowing_values():
    assert not extreme(np.ones((2, 3), np.float32))
    assert not extreme(np.arange(5))  # integers are never extreme
    assert not extreme(np.zeros(0, np.float32))
    for value in (np.nan, np.inf, -np.inf, 1e30):
        x = np.ones(100, np.float32)
        x[17] = value
        assert extreme(x), value
    assert not extreme(np.full(4, 60000, np.float16))  # squared in float32
    assert extreme(np.array([1.0, np.nan], np.float16))


# ----------------------------------------------------------------------------- 3, 4: CLI


@pytest.fixture
def cli_model(tmp_path):
    seed = seed_by_name("cnn")
    path = _write(seed, tmp_path / "model")
    x = tmp_path / "x.npy"
    np.save(x, _feeds(seed)["x"])
    return path, x


def _cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def _no_temp_files(folder: Path) -> None:
    if folder.is_dir():
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], list(folder.iterdir())


def test_cli_output_under_a_file_is_one_line(cli_model, tmp_path, capsys):
    model, x = cli_model
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    err = _cli_error(capsys, ["run", str(model), "--input", str(x),
                              "--output", str(blocker / "y.npy")])
    assert "blocker" in err
    assert blocker.read_text() == "a file where a folder should be"


def test_cli_output_is_a_directory(cli_model, tmp_path, capsys):
    model, x = cli_model
    folder = tmp_path / "out.npy"
    folder.mkdir()
    err = _cli_error(capsys, ["run", str(model), "--input", str(x), "--output", str(folder)])
    assert "not a regular file" in err and folder.is_dir()
    _no_temp_files(tmp_path)


def test_cli_output_under_proc(cli_model, capsys):
    model, x = cli_model
    _cli_error(capsys, ["run", str(model), "--input", str(x), "--output", "/proc/fuzz-y.npy"])
    assert not Path("/proc/fuzz-y.npy").exists()


def test_cli_output_dev_null_is_not_replaced(cli_model, capsys):
    """As root the atomic rename would replace /dev/null with a regular file."""
    model, x = cli_model
    before = os.stat("/dev/null")
    err = _cli_error(capsys, ["run", str(model), "--input", str(x), "--output", "/dev/null"])
    assert "not a regular file" in err
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert not [p for p in Path("/dev").glob(".null.*.tmp")]


def test_cli_unwritable_output_folder(cli_model, tmp_path, capsys, monkeypatch):
    model, x = cli_model
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    if os.geteuid() == 0:  # root writes anyway: make the temp file creation fail as it would
        import featherdeploy.runtime.atomic as atomic

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    try:
        err = _cli_error(capsys, ["run", str(model), "--input", str(x),
                                  "--output", str(folder / "y.npy")])
    finally:
        folder.chmod(0o700)
    assert "Permission denied" in err and not (folder / "y.npy").exists()
    _no_temp_files(folder)


def test_cli_disk_full_leaves_nothing(cli_model, tmp_path, capsys, monkeypatch):
    model, x = cli_model
    import featherdeploy.runtime.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    out = tmp_path / "out" / "y.npy"
    out.parent.mkdir()
    out.write_bytes(b"the previous result")
    err = _cli_error(capsys, ["run", str(model), "--input", str(x), "--output", str(out)])
    assert "No space left on device" in err
    assert out.read_bytes() == b"the previous result"  # the old file stays whole
    _no_temp_files(out.parent)


def test_cli_describe_json_to_a_directory(cli_model, tmp_path, capsys):
    model, _ = cli_model
    folder = tmp_path / "report.json"
    folder.mkdir()
    _cli_error(capsys, ["describe", str(model), "--json", str(folder), "--threads", "1"])


def test_cli_environment_errors_in_a_subprocess(cli_model, tmp_path):
    """The real entry point: one line on stderr, exit 2, no traceback."""
    model, x = cli_model
    folder = tmp_path / "dir.npy"
    folder.mkdir()
    for output in (str(folder), "/proc/y.npy", "/dev/null"):
        done = subprocess.run([sys.executable, "-m", "featherdeploy.runtime", "run", str(model),
                               "--input", str(x), "--output", output, "--threads", "1"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# ----------------------------------------------------------------------------- 6, 8, 9: models


def _cnn_with(mutate) -> bytes:
    model = copy.deepcopy(seed_by_name("cnn").model)
    mutate(model)
    return model.SerializeToString()


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _set_attr(model, node_name: str, attr: AttributeProto) -> None:
    node = _node(model, node_name)
    kept = [a for a in node.attribute if a.name != attr.name]
    del node.attribute[:]
    node.attribute.extend([*kept, attr])


def _init(model, name: str, value: np.ndarray) -> None:
    init = next(t for t in model.graph.initializer if t.name == name)
    init.CopyFrom(numpy_helper.from_array(value, name))


BAD_MODELS = {
    # 6: attributes of the wrong ONNX type
    "conv strides as floats": lambda m: _set_attr(m, "conv2", helper.make_attribute(
        "strides", [1.0, 1.0])),
    "conv group as a string": lambda m: _set_attr(m, "conv2", helper.make_attribute(
        "group", "one")),
    "pool kernel_shape as an int": lambda m: _set_attr(m, "pool3", helper.make_attribute(
        "kernel_shape", 2)),
    "softmax axis as a tensor": lambda m: _set_attr(m, "softmax", helper.make_attribute(
        "axis", numpy_helper.from_array(np.array([1], np.int64)))),
    "bn epsilon as ints": lambda m: _set_attr(m, "bn1", helper.make_attribute(
        "epsilon", [1, 2])),
    "flatten axis as a graph": lambda m: _set_attr(m, "flatten", helper.make_attribute(
        "axis", helper.make_graph([], "g", [], []))),
    # 6: node input / output counts
    "conv with one input": lambda m: _node(m, "conv3").input.pop(),
    "relu with two inputs": lambda m: _node(m, "relu1").input.append("x"),
    "add with two outputs": lambda m: _node(m, "add3").output.append("extra"),
    "gemm without inputs": lambda m: _node(m, "fc").ClearField("input"),
    # 6: values out of range
    "pool stride 0": lambda m: _set_attr(m, "pool3", helper.make_attribute("strides", [0, 0])),
    "conv pads 2^31-1": lambda m: _set_attr(m, "conv2", helper.make_attribute(
        "pads", [2**31 - 1] * 4)),
    "conv dilation 2^63-1": lambda m: _set_attr(m, "conv2", helper.make_attribute(
        "dilations", [2**63 - 1] * 2)),
    "bn mean of the wrong size": lambda m: _init(m, "bn1.m", np.zeros(5, np.float32)),
    "bn scale empty": lambda m: _init(m, "bn1.g", np.zeros(0, np.float32)),
    # 8: a name defined twice
    "duplicate initializer": lambda m: m.graph.initializer.append(numpy_helper.from_array(
        np.ones((8, 8, 3, 3), np.float32), "c3.w")),
    "duplicate node output": lambda m: _node(m, "relu3").output.__setitem__(0, "r1"),
    # 9: invalid models ORT refuses
    "maxpool pads >= kernel": lambda m: _set_attr(m, "pool3", helper.make_attribute(
        "pads", [2, 2, 2, 2])),
    "flatten axis 5": lambda m: _set_attr(m, "flatten", helper.make_attribute("axis", 5)),
    "vector clip min": lambda m: _init(m, "lo", np.zeros(3, np.float32)),
    "size-0 conv bias": lambda m: _init(m, "c2.b", np.zeros(0, np.float32)),
    "auto_pad VALID with pads": lambda m: _set_attr(m, "conv2", helper.make_attribute(
        "auto_pad", "VALID")),
    "negative initializer dims": lambda m: next(
        t for t in m.graph.initializer if t.name == "c4.b").dims.__setitem__(0, -16),
    "unknown attribute": lambda m: _set_attr(m, "relu1", helper.make_attribute("alpha", 0.5)),
    "attribute twice": lambda m: _node(m, "conv1").attribute.append(
        helper.make_attribute("pads", [1, 1, 1, 1])),
    "opset 5 (Clip with 3 inputs)": lambda m: m.opset_import[0].__setattr__("version", 5),
    "int32 conv weight": lambda m: _init(m, "c1.w", np.ones((8, 3, 3, 3), np.int32)),
    "output declared int8": lambda m: m.graph.output[0].type.tensor_type.__setattr__(
        "elem_type", TensorProto.INT8),
}


ORT_RUNS = {"duplicate initializer"}  # ORT takes one of the two (test below)


@pytest.mark.parametrize("what", list(BAD_MODELS))
def test_invalid_models_are_one_clean_error(tmp_path, what):
    data = _cnn_with(BAD_MODELS[what])
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    feeds = _feeds(seed_by_name("cnn"))
    assert _refuses(path, feeds) != (what in ORT_RUNS), what
    for backend in ("native", "auto"):
        with pytest.raises(EngineError) as info:
            Engine(path, options=EngineOptions(backend=backend, threads=1)).run(feeds)
        assert str(info.value).strip()


def test_opset10_clip_reads_its_attributes(tmp_path):
    """Clip-6 (opsets 6..10) bounds are attributes; its inputs beyond the first are invalid."""
    seed = seed_by_name("depthwise")
    model = copy.deepcopy(seed.model)
    model.opset_import[0].version = 10
    clip = _node(model, "relu6")
    del clip.input[1:]
    clip.attribute.extend([helper.make_attribute("min", 0.5), helper.make_attribute("max", 2.0)])
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    assert_close(Engine(path, threads=1).run(feeds), _ort(path, feeds)[0])
    clip.input.extend(["", "six"])  # min / max as inputs at opset 10
    path = _write(seed, tmp_path, model)
    assert _refuses(path)
    with pytest.raises(ModelLoadError):
        Engine(path)


def test_ort_run_time_errors_are_engine_errors(tmp_path):
    """A model ONNX Runtime loads but fails while running (the engine delegates it): the
    failure comes out as EngineError, not as ORT's exception types."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    outs = [helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("i", TensorProto.INT64, None)]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("TopK", ["r", "k"],
                                                                        ["v", "i"])]
    graph = helper.make_graph(nodes, "g", [x, k], outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "topk.onnx"
    path.write_bytes(model.SerializeToString())
    feeds = {"x": np.ones((2, 4), np.float32), "k": np.array([9], np.int64)}  # k > 4
    for backend in ("onnxruntime", "native"):
        engine = Engine(path, options=EngineOptions(backend=backend, threads=1))
        with pytest.raises(EngineError, match="ONNX Runtime"):
            engine.run(feeds)


@pytest.mark.parametrize("threads", [10000, 0, -1, 2.5, True, "2"])
def test_bad_thread_counts_are_engine_errors(tmp_path, threads):
    path = _write(seed_by_name("cnn"), tmp_path)
    with pytest.raises(EngineError, match="threads"):
        Engine(path, threads=threads)
    with pytest.raises(EngineError, match="threads"):
        Engine(path, options=EngineOptions(threads=threads))


def test_cli_bad_threads_is_one_line(cli_model, capsys):
    model, x = cli_model
    _cli_error(capsys, ["run", str(model), "--input", str(x), "--output", "/tmp/unused.npy",
                        "--threads", "10000"])


def test_duplicate_initializer_is_refused_though_ort_runs_it(tmp_path):
    """The ONNX checker rejects a name defined twice; ORT silently takes one of them."""
    data = _cnn_with(BAD_MODELS["duplicate initializer"])
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(onnx.load_from_string(data))
    path = tmp_path / "dup.onnx"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match="defined twice"):
        Engine(path)


def test_declared_output_shapes_are_hints(tmp_path):
    """A stale declared output shape (ORT accepts it) does not make the model invalid."""
    seed = seed_by_name("cnn")
    model = copy.deepcopy(seed.model)
    for dim, value in zip(model.graph.output[0].type.tensor_type.shape.dim, (7, 3), strict=True):
        dim.dim_value = value
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    assert_close(Engine(path, threads=1).run(feeds), _ort(path, feeds)[0])


# ----------------------------------------------------------------------------- 12: endless paths


def _within(seconds: float, fn) -> BaseException | None:
    """The exception ``fn`` raised, failing the test when it takes longer than ``seconds``."""
    result: list[BaseException | None] = [None]

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001
            result[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    assert time.monotonic() - start < seconds
    return result[0]


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/urandom", "/proc/self/mem", "/"])
def test_non_regular_model_paths_fail_fast(path):
    exc = _within(10, lambda: Engine(path))
    assert isinstance(exc, ModelLoadError), exc
    assert "not a regular file" in str(exc) or "cannot read" in str(exc)


def test_fifo_model_path_fails_fast(tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    exc = _within(10, lambda: Engine(fifo))
    assert isinstance(exc, ModelLoadError) and "not a regular file" in str(exc)


def test_cli_dev_zero_model_is_one_line(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3, 8, 8), np.float32))
    _cli_error(capsys, ["run", "/dev/zero", "--input", str(x), "--output",
                        str(tmp_path / "y.npy")])


def test_input_arrays_of_the_wrong_kind_are_input_errors(tmp_path):
    seed = seed_by_name("cnn")
    engine = Engine(_write(seed, tmp_path), threads=1)
    x = _feeds(seed)["x"]
    for bad in (x.tolist(), x.astype(np.float64), x[0], x[None], np.zeros((0, 3, 8, 8),
                                                                          np.float32),
                np.float32(1.0), {"nope": x}):
        with pytest.raises(InputError):
            engine.run(bad)


# ----------------------------------------------------------------------------- found by fuzzing


@pytest.mark.parametrize("lo, hi", [(None, np.nan), (np.nan, 6.0), (3.0, 1.0)])
def test_clip_bounds_nan_or_crossed_as_onnx_runtime(tmp_path, lo, hi):
    """Clip(min > max) is max everywhere (ONNX); NaN bounds: whatever ORT does. The native
    clamp needs lo <= hi, so such a Clip runs on ONNX Runtime (it was a raw ValueError)."""
    seed = seed_by_name("depthwise")
    model = copy.deepcopy(seed.model)
    clip = _node(model, "relu6")
    model.graph.initializer.append(numpy_helper.from_array(np.array(hi, np.float32), "hi"))
    clip.input[2] = "hi"
    if lo is not None:
        model.graph.initializer.append(numpy_helper.from_array(np.array(lo, np.float32), "lo"))
        clip.input[1] = "lo"
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    _assert_same_as_ort(_run(Engine(path, threads=1), feeds), _ort(path, feeds))


@pytest.mark.parametrize("epsilon, scale_shape", [(-1.0, (16,)), (-3e38, (16,)),
                                                  (1e-5, (1, 1)), (1e-5, (1, 16))])
def test_layer_norm_odd_epsilon_and_scale_as_onnx_runtime(tmp_path, epsilon, scale_shape):
    """A negative epsilon (NaN where var + eps < 0) and a scale of more dims than the
    normalized shape: ONNX Runtime computes them (they were a raw ValueError natively)."""
    seed = seed_by_name("decoder")
    model = copy.deepcopy(seed.model)
    ln = _node(model, "ln")
    _set_attr(model, "ln", helper.make_attribute("epsilon", epsilon))
    _init(model, "ln.g", np.linspace(0.5, 1.5, int(np.prod(scale_shape)),
                                     dtype=np.float32).reshape(scale_shape))
    assert ln.op_type == "LayerNormalization"
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    if _refuses(path, feeds):
        with pytest.raises(EngineError):
            Engine(path, threads=1).run(feeds)
        return
    _assert_same_as_ort(_run(Engine(path, threads=1), feeds), _ort(path, feeds))


def _ai_onnx_twice(m):
    m.opset_import.append(helper.make_opsetid("ai.onnx", 1))


def _external_key(m, key, value):
    entry = m.graph.initializer[1].external_data.add()
    entry.key, entry.value = key, value


def _location(m, value):
    next(e for e in m.graph.initializer[1].external_data if e.key == "location").value = value


REFUSED_BY_BOTH = {  # (seed, mutation): ORT refuses at load or at its first run, so must we
    "no graph outputs": ("cnn", lambda m: m.graph.ClearField("output")),
    "default domain imported twice": ("sparse_init", _ai_onnx_twice),
    "opset 1000": ("cnn", lambda m: m.opset_import[0].__setattr__("version", 1000)),
    "output of element type 0": ("depthwise", lambda m: m.graph.output[0].type.tensor_type
                                 .__setattr__("elem_type", 0)),
    "unknown external data key": ("external", lambda m: _external_key(m, "ldngth", "8")),
    "external data through a missing folder": ("external",
                                               lambda m: _location(m, "sub/../weights.bin")),
    "GlobalAveragePool of a 1-D constant": ("sparse_init", lambda m: _node(m, "gap").input
                                            .__setitem__(0, "b2")),
    "ReduceMean axes of rank 2": ("decoder", lambda m: _init(m, "axes",
                                                             np.ones((2, 3), np.int64))),
    "Gemm C of rank 4": ("cnn", lambda m: _init(m, "fc.b", np.ones((8, 3, 1, 1), np.float32))),
    "Mul-6 broadcasting without broadcast=1": ("multi_output", lambda m: m.opset_import[0]
                                               .__setattr__("version", 6)),
}


@pytest.mark.parametrize("what", list(REFUSED_BY_BOTH))
def test_models_ort_refuses_are_refused(tmp_path, what):
    """Found by fuzzing: each of these ran natively, with invented semantics."""
    name, mutate = REFUSED_BY_BOTH[what]
    seed = seed_by_name(name)
    model = copy.deepcopy(seed.model)
    mutate(model)
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    assert _refuses(path, feeds), what
    with pytest.raises(EngineError) as info:
        Engine(path, options=EngineOptions(backend="native", threads=1)).run(feeds)
    assert str(info.value).strip()


ACCEPTED_BY_BOTH = {  # ORT runs these; they are valid enough, so the engine answers too
    "nodes out of topological order": ("cnn", lambda m: m.graph.node.reverse()),
    "IR version 0": ("cnn", lambda m: m.__setattr__("ir_version", 0)),
    "IR version 2": ("multi_output", lambda m: m.__setattr__("ir_version", 2)),
    "node of domain ai.onnx": ("decoder", lambda m: _node(m, "mul").__setattr__("domain",
                                                                               "ai.onnx")),
    "stale value_info shape": ("fallback", lambda m: m.graph.value_info.append(
        helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 2]))),
}


@pytest.mark.parametrize("what", list(ACCEPTED_BY_BOTH))
def test_models_ort_accepts_run(tmp_path, what):
    name, mutate = ACCEPTED_BY_BOTH[what]
    seed = seed_by_name(name)
    model = copy.deepcopy(seed.model)
    mutate(model)
    path = _write(seed, tmp_path, model)
    feeds = _feeds(seed)
    expected = _ort(path, feeds)
    got = _run(Engine(path, options=EngineOptions(backend="native", threads=1)), feeds)
    for g, e in zip(got, expected, strict=True):
        assert_close(g, e)


def test_opset6_models_run_on_onnx_runtime(tmp_path, capsys):
    """Legacy operators (before opset 7) are ONNX Runtime's: what it implements runs there,
    strict mode refuses the model."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Clip", ["x"], ["y"], min=-0.2, max=0.4)],
                              "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 8
    path = tmp_path / "clip6.onnx"
    path.write_bytes(model.SerializeToString())
    feeds = {"x": np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)}
    engine = Engine(path, options=EngineOptions(backend="native", threads=1))
    assert engine.backend == "onnxruntime"
    assert_close(engine.run(feeds), _ort(path, feeds)[0])
    with pytest.raises(UnsupportedOpError, match="opset 6"):
        Engine(path, options=EngineOptions(backend="native", fallback=False))
