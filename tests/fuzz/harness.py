"""Fuzz harness of the runtime: mutated models and bad inputs, each case in forked children,
classified against ONNX Runtime.

    python -m tests.fuzz.harness --cases 10000 --seed 0 --out reports/fuzz [--jobs 1]
    python -m tests.fuzz.harness --replay reports/fuzz/cases/00042-differs   # one saved case
    python -m tests.fuzz.harness --index 42 --seed 0                         # one case again

Cases come from ``tests.fuzz.mutate.make_case(index, seed)`` (seed models of
``tests.fuzz.seeds``; byte-level and protobuf-level mutations, bad inputs, random engine
options). Each case runs the engine in one forked child and ONNX Runtime in another, each with a
timeout (and a retry with a longer one before a case counts as a hang), memory and core-dump
limits, and its working directory a scratch folder holding decoys of any external-data file. A
case is classified as:

- ``crash``: the engine's child died of a signal (SIGSEGV, SIGABRT, ...) or exited without a
  result;
- ``hang``: it did not finish within the timeouts;
- ``other_exception``: it raised an exception that is not a ``runtime.EngineError`` with a
  message (the CLI: an exception out of ``main``, or an exit code other than 0 and 2);
- ``clean_error``: an ``EngineError`` with a message, on a model and inputs ORT runs;
- ``both_refuse``: an ``EngineError``, and ORT refuses (or crashes on) the case too;
- ``match``: both ran and every output agrees: same names and shapes, NaN exactly where ORT
  has NaN ("NaN in, NaN out"), the same infinities, and finite values within
  ``1e-4 * max(1, max |ORT output|) + 1e-4 * |ORT value|``;
- ``differs``: both ran and some output does not agree (or two runs of one engine differ).
  When only finite values differ, ONNX's reference evaluator on the model widened to float64
  arbitrates: if it agrees with the engine and not with ORT (whose float32 sums lose digits a
  model can amplify), the case is a ``match`` and listed as such in the report;
- ``ort_refuses_engine_runs``: ORT refuses the case and the engine answers; not counted as a
  failure, but every one is listed to be looked at (the answer must be the ONNX-spec one).

``crash``, ``hang``, ``other_exception`` and ``differs`` are failures: the report lists each
with its mutations and a reproducer folder (model bytes, external files, feeds, the case as
JSON) under ``OUT/cases/``, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import pickle
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tests.fuzz.mutate import Case, make_case

__all__ = ["CLASSES", "FAILURES", "REVIEW", "Outcome", "CaseResult", "run_case", "run_cases",
           "classify", "compare_outputs", "main"]

CLASSES = ("match", "clean_error", "both_refuse", "ort_refuses_engine_runs", "differs",
           "other_exception", "crash", "hang")
FAILURES = ("crash", "hang", "other_exception", "differs")
REVIEW = ("ort_refuses_engine_runs",)
ATOL = RTOL = 1e-4
TIMEOUT_S = 20.0
RETRY_TIMEOUT_S = 90.0
MEMORY_LIMIT = 6 << 30


@dataclass
class Outcome:
    """What one child reported: ``ok`` (outputs by name), ``error`` (an exception), ``crash``
    (a signal or no result), ``hang``."""

    status: str
    names: list[str] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    error_type: str = ""
    message: str = ""
    engine_error: bool = False
    stage: str = ""
    traceback: str = ""
    detail: str = ""
    seconds: float = 0.0

    def brief(self) -> str:
        if self.status == "ok":
            return f"ok {[getattr(o, 'shape', None) for o in self.outputs]}"
        if self.status == "error":
            return f"{self.error_type} at {self.stage}: {_clip(self.message, 300)}"
        return f"{self.status}: {self.detail}"


@dataclass
class CaseResult:
    index: int
    seed_model: str
    kind: str
    mutations: list[str]
    cls: str
    detail: str
    engine: str
    ort: str
    seconds: float
    reproducer: str = ""


# ----------------------------------------------------------------------------- children


def _fork_call(fn: Any, cwd: Path, timeout: float, log: Path) -> Outcome:
    """``fn()`` in a forked child with ``cwd`` as its working directory; its return value (an
    Outcome) comes back through a file."""
    result_path = log.with_suffix(".result")
    result_path.unlink(missing_ok=True)
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            _child_setup(cwd, log)
            outcome = fn()
            with open(result_path, "wb") as handle:
                pickle.dump(outcome, handle, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:  # noqa: BLE001 - anything left is reported by the exit code
            with contextlib.suppress(BaseException):
                traceback.print_exc()
            code = 3
        finally:
            os._exit(code)
    status = _wait(pid, timeout)
    seconds = time.monotonic() - start
    if status is None:
        return Outcome("hang", detail=f"no result after {timeout:.0f} s", seconds=seconds)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return Outcome("crash", detail=f"killed by {signal.Signals(sig).name}; stderr: "
                                       f"{_tail(log)}", seconds=seconds)
    code = os.WEXITSTATUS(status)
    try:
        with open(result_path, "rb") as handle:
            outcome = pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError):
        return Outcome("crash", detail=f"exit code {code} without a result; stderr: "
                                       f"{_tail(log)}", seconds=seconds)
    outcome.seconds = seconds
    return outcome


def _wait(pid: int, timeout: float) -> int | None:
    """The child's wait status, or None after killing it at the timeout."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    deadline = time.monotonic() + timeout
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            if fd is not None:
                select.select([fd], [], [], left)
            else:
                time.sleep(min(left, 0.005))
    finally:
        if fd is not None:
            os.close(fd)


def _child_setup(cwd: Path, log: Path) -> None:
    faulthandler.disable()  # (pytest's would print a crash on the terminal, not in the log)
    os.chdir(cwd)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    warnings.simplefilter("ignore")
    for key in [k for k in os.environ if k.startswith("FEATHERDEPLOY_")]:
        del os.environ[key]  # the case's options alone decide


def _tail(log: Path, chars: int = 1500) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text[-chars:].strip().splitlines())


def _engine_child(model_path: Path, case: Case) -> Outcome:
    """The engine on the case, through the API or the CLI."""
    from featherdeploy.runtime.errors import EngineError

    stage = "load"
    try:
        if case.driver == "cli":
            return _cli_child(model_path, case)
        from featherdeploy.runtime import Engine, EngineOptions, PlannerOptions

        options = EngineOptions(**case.options, planner=PlannerOptions(**case.planner))
        engine = Engine(model_path, options=options)
        names = [o.name for o in engine.outputs]
        feeds: Any = case.feeds
        if len(feeds) == 1 and len(engine.inputs) == 1 and case.index % 2:
            feeds = next(iter(feeds.values()))  # the single-array form
        stage = "run"
        outputs = engine.run(feeds, output_names=names)
        if case.repeat:
            stage = "second run"
            again = engine.run(feeds, output_names=names)
            for name, a, b in zip(names, outputs, again, strict=True):
                if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                    return Outcome("ok", names, outputs, detail=f"nondeterministic: {name}")
        if case.describe:
            stage = "describe"
            shapes = {k: np.shape(v) for k, v in case.feeds.items()}
            try:
                report = engine.describe(input_shapes=shapes)
                report.format()
                json.dumps(report.to_dict())
                engine.coverage()
            except EngineError:
                pass  # a clean refusal of a report is fine once the model ran
        return Outcome("ok", names, [np.asarray(o) for o in outputs])
    except EngineError as exc:
        return Outcome("error", error_type=type(exc).__name__, message=str(exc),
                       engine_error=bool(str(exc).strip()), stage=stage)
    except Exception as exc:  # noqa: BLE001 - the class this harness looks for
        return Outcome("error", error_type=type(exc).__name__, message=str(exc), stage=stage,
                       traceback=traceback.format_exc())


def _cli_child(model_path: Path, case: Case) -> Outcome:
    """``featherdeploy run`` in-process: exit 2 with a message is a clean error, an exception out
    of main() or another exit code is not."""
    from featherdeploy.runtime.__main__ import PROG, main

    for option in ("batch_layout", "isa", "tuning"):  # what the CLI reads from the environment
        os.environ[f"FEATHERDEPLOY_{option.upper()}"] = str(case.options[option])
    argv = ["run", os.path.relpath(model_path), "--threads", str(case.options["threads"]),
            "--backend", case.options["backend"]]
    for name, value in case.feeds.items():
        path = f"in_{len(argv)}.npy"
        np.save(path, np.asarray(value), allow_pickle=False)
        argv += ["--input", f"{name}={path}" if len(case.feeds) > 1 or case.index % 2 else path]
    out = "out.npz" if case.index % 3 == 0 else "out.npy"
    argv += ["--output", out]
    if not case.options["fallback"]:
        argv.append("--strict")
    if not case.options["jit"]:
        argv.append("--no-jit")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001
        return Outcome("error", error_type=type(exc).__name__, message=str(exc), stage="cli",
                       traceback=traceback.format_exc())
    message = err.getvalue().strip()
    usage = message.splitlines()[-1].startswith(f"{PROG} run: error:") if message \
        else False  # argparse: usage, then one error line
    if code == 2 and (message.startswith("error: ") or usage) and not os.path.exists(out):
        return Outcome("error", error_type="cli exit 2", message=message, engine_error=True,
                       stage="cli")
    if code != 0:
        return Outcome("error", error_type=f"cli exit {code}", message=message, stage="cli")
    if out.endswith(".npz"):
        with np.load(out) as data:
            names = list(data.files)
            return Outcome("ok", names, [data[n] for n in names], detail="cli npz")
    return Outcome("ok", [], [np.load(out)], detail="cli npy")  # names unknown: by position


def _ort_child(model_path: Path, case: Case) -> Outcome:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    stage = "load"
    try:
        session = ort.InferenceSession(str(model_path), options,
                                       providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        stage = "run"
        outputs = session.run(None, case.feeds)
        return Outcome("ok", names, [np.asarray(o) for o in outputs])
    except Exception as exc:  # noqa: BLE001 - ORT's own exception types
        return Outcome("error", error_type=type(exc).__name__, message=str(exc), stage=stage)


# ----------------------------------------------------------------------------- one case


def _write_case(case: Case, folder: Path) -> Path:
    """model/model.onnx with its files, and cwd/ with the decoys; returns the model path."""
    model_dir, cwd = folder / "model", folder / "cwd"
    model_dir.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(exist_ok=True)
    model_path = model_dir / "model.onnx"
    model_path.write_bytes(case.model)
    for where, files in ((model_dir, case.files), (cwd, case.cwd_files)):
        for name, data in files.items():
            target = where / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return model_path


def run_case(case: Case, scratch: Path, timeout: float = TIMEOUT_S,
             retry_timeout: float = RETRY_TIMEOUT_S) -> tuple[CaseResult, Outcome, Outcome]:
    """Runs ORT and the engine on ``case`` in forked children and classifies the result."""
    start = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix=f"case{case.index}-", dir=scratch))
    try:
        model_path = _write_case(case, folder)
        cwd = folder / "cwd"
        ort = _fork_call(lambda: _ort_child(model_path, case), cwd, timeout, folder / "ort.log")
        if ort.status == "hang":
            ort = _fork_call(lambda: _ort_child(model_path, case), cwd, retry_timeout,
                             folder / "ort.log")
        engine = _fork_call(lambda: _engine_child(model_path, case), cwd, timeout,
                            folder / "engine.log")
        if engine.status == "hang":
            engine = _fork_call(lambda: _engine_child(model_path, case), cwd, retry_timeout,
                                folder / "engine.log")
        cls, detail = classify(engine, ort)
        if cls == "differs" and "max |diff|" in detail:
            reference = _fork_call(lambda: _float64_child(model_path, case), cwd, retry_timeout,
                                   folder / "reference.log")
            if (reference.status == "ok" and compare_outputs(engine, reference) is None
                    and compare_outputs(ort, reference) is not None):
                cls, detail = "match", f"{FLOAT64_ARBITER}: {detail}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result = CaseResult(case.index, case.seed, case.kind, case.mutations, cls, detail,
                        engine.brief(), ort.brief(), round(time.monotonic() - start, 3))
    return result, engine, ort


FLOAT64_ARBITER = "the float64 reference agrees with the engine, not with ORT's float32"


def _float64_child(model_path: Path, case: Case) -> Outcome:
    """ONNX's reference evaluator on the model with its float32 tensors widened to float64:
    the arbiter when the engine and ORT differ by more than rounding (ORT sums in float32; the
    engine's reductions sum in double)."""
    import onnx
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data
    from onnx.reference import ReferenceEvaluator

    from featherdeploy.runtime.graph import _sparse_to_dense

    try:
        model = onnx.load(str(model_path), load_external_data=False)
        graph = model.graph
        for t in graph.initializer:
            if uses_external_data(t):
                load_external_data_for_tensor(t, str(model_path.parent))
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
        for sparse in graph.sparse_initializer:  # as dense initializers
            graph.initializer.append(numpy_helper.from_array(_sparse_to_dense(sparse),
                                                             sparse.values.name))
        graph.ClearField("sparse_initializer")
        keep = {n.input[i] for n in graph.node if n.op_type in ("Resize", "Upsample")
                for i in range(1, len(n.input))}
        tensors = list(graph.initializer) + [a.t for n in graph.node for a in n.attribute
                                             if n.op_type == "Constant" and a.name == "value"]
        for t in tensors:
            if t.data_type == TensorProto.FLOAT and t.name not in keep:
                t.CopyFrom(numpy_helper.from_array(
                    numpy_helper.to_array(t).astype(np.float64), t.name))
        for v in [*graph.input, *graph.output]:
            if v.type.tensor_type.elem_type == TensorProto.FLOAT:
                v.type.tensor_type.elem_type = TensorProto.DOUBLE
        del graph.value_info[:]
        feeds = {k: np.asarray(v).astype(np.float64) if np.asarray(v).dtype == np.float32
                 else v for k, v in case.feeds.items()}
        with np.errstate(all="ignore"):
            outputs = ReferenceEvaluator(model, new_ops=[_InferenceBatchNorm()]).run(None, feeds)
        return Outcome("ok", [o.name for o in graph.output], [np.asarray(o) for o in outputs])
    except Exception as exc:  # noqa: BLE001 - no arbiter then: the case stays "differs"
        return Outcome("error", error_type=type(exc).__name__, message=str(exc))


def _InferenceBatchNorm() -> Any:  # noqa: N802 - makes the OpRun class (onnx imported lazily)
    """BatchNormalization in inference mode at every opset (ONNX's reference evaluator runs
    opsets 9..13 in training mode, since it fills in the default momentum)."""
    from onnx.reference.op_run import OpRun

    class BatchNormalization(OpRun):
        op_domain = ""

        def _run(self, x, scale, bias, mean, var, epsilon=None, **_):  # noqa: ANN001
            eps = 1e-5 if epsilon is None else epsilon
            shape = (-1,) + (1,) * (x.ndim - 2)
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
            return ((y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype),)

    return BatchNormalization


def classify(engine: Outcome, ort: Outcome) -> tuple[str, str]:
    """The class of a case from the two children's outcomes (see the module docstring)."""
    if engine.status in ("crash", "hang"):
        return engine.status, engine.detail
    ort_ok = ort.status == "ok"
    if engine.status == "error":
        if not engine.engine_error:
            return "other_exception", f"{engine.error_type}: {_clip(engine.message, 300)}"
        return ("clean_error" if ort_ok else "both_refuse"), engine.message.split("\n")[0][:300]
    if engine.detail.startswith("nondeterministic"):
        return "differs", engine.detail
    if not ort_ok:
        return "ort_refuses_engine_runs", f"ORT: {ort.brief()}"
    problem = compare_outputs(engine, ort)
    return ("differs", problem) if problem else ("match", "")


def compare_outputs(engine: Outcome, ort: Outcome) -> str | None:
    """None when the engine's outputs agree with ORT's, else what differs."""
    if engine.detail == "cli npz":  # one array per distinct output name
        if set(engine.names) != set(ort.names):
            return f"output names {sorted(engine.names)}, ORT {sorted(set(ort.names))}"
        wanted = dict(zip(reversed(ort.names), reversed(ort.outputs), strict=True))
        ort = Outcome("ok", engine.names, [wanted[n] for n in engine.names])
    if len(engine.outputs) != len(ort.outputs):
        return f"{len(engine.outputs)} outputs, ORT {len(ort.outputs)}"
    if engine.names and engine.names != ort.names:
        return f"output names {engine.names}, ORT {ort.names}"
    for name, got, want in zip(ort.names, engine.outputs, ort.outputs, strict=True):
        problem = _compare_one(np.asarray(got), np.asarray(want))
        if problem:
            return f"output {name!r}: {problem}"
    return None


def _compare_one(got: np.ndarray, want: np.ndarray) -> str | None:
    if got.shape != want.shape:
        return f"shape {got.shape}, ORT {want.shape}"
    if want.dtype.kind not in "fc" or got.dtype.kind not in "fc":
        if not np.array_equal(got.astype(want.dtype, copy=False) if got.dtype.kind != "O"
                              else got, want):
            return f"values differ ({got.dtype} vs ORT {want.dtype})"
        return None
    a, b = got.astype(np.float64), want.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        where = np.argwhere(nan_a != nan_b)[0]
        return (f"NaN positions differ ({int(nan_b.sum())} NaN in ORT, {int(nan_a.sum())} in "
                f"the engine; first at {tuple(int(i) for i in where)}: "
                f"{a[tuple(where)]} vs ORT {b[tuple(where)]})")
    inf_b = np.isinf(b)
    if (np.isinf(a) != inf_b).any() or (a[inf_b] != b[inf_b]).any():
        where = np.argwhere((np.isinf(a) != inf_b) | (inf_b & (a != b)))[0]
        return (f"infinities differ; first at {tuple(int(i) for i in where)}: "
                f"{a[tuple(where)]} vs ORT {b[tuple(where)]}")
    finite = np.isfinite(b)
    if not finite.any():
        return None
    scale = max(1.0, float(np.abs(b[finite]).max()))
    excess = np.abs(a[finite] - b[finite]) - (ATOL * scale + RTOL * np.abs(b[finite]))
    if (excess > 0).any():
        i = int(np.argmax(excess))
        return (f"max |diff| {float(np.abs(a[finite] - b[finite]).max()):.4g} at scale "
                f"{scale:.4g} (worst: {a[finite][i]:.6g} vs ORT {b[finite][i]:.6g})")
    return None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- reproducers


def save_reproducer(case: Case, result: CaseResult, engine: Outcome, ort: Outcome,
                    folder: Path) -> Path:
    """Everything needed to run the case again (``--replay``)."""
    target = folder / f"{case.index:05d}-{result.cls}"
    shutil.rmtree(target, ignore_errors=True)
    _write_case(case, target)
    with open(target / "feeds.pkl", "wb") as handle:
        pickle.dump(case.feeds, handle)
    info = {"case": {k: v for k, v in asdict(case).items()
                     if k not in ("model", "files", "feeds", "cwd_files")},
            "files": sorted(case.files), "cwd_files": sorted(case.cwd_files),
            "result": asdict(result), "engine_traceback": engine.traceback,
            "engine_message": engine.message, "ort_message": ort.message}
    (target / "case.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return target


def load_reproducer(folder: Path) -> Case:
    info = json.loads((folder / "case.json").read_text())["case"]
    model_dir, cwd = folder / "model", folder / "cwd"
    files = {str(p.relative_to(model_dir)): p.read_bytes() for p in model_dir.rglob("*")
             if p.is_file() and p.name != "model.onnx"}
    cwd_files = {str(p.relative_to(cwd)): p.read_bytes() for p in cwd.rglob("*") if p.is_file()}
    with open(folder / "feeds.pkl", "rb") as handle:
        feeds = pickle.load(handle)  # noqa: S301 - our own reproducer
    return Case(**{**info, "model": (model_dir / "model.onnx").read_bytes(), "files": files,
                   "feeds": feeds, "cwd_files": cwd_files})


# ----------------------------------------------------------------------------- many cases


def _warm_imports() -> None:
    """Import everything the children use once, before forking (they start warm)."""
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    import featherdeploy.runtime.__main__  # noqa: F401
    import featherdeploy.runtime.describe  # noqa: F401
    import featherdeploy.runtime.engine  # noqa: F401
    from featherdeploy.runtime import _native  # noqa: F401
    from featherdeploy.runtime.ops.registry import known_ops

    known_ops()
    with contextlib.suppress(ImportError):
        import scipy.special  # noqa: F401


def _one(args: tuple[int, int, str, str]) -> tuple[CaseResult, str]:
    index, seed, scratch, out = args
    case = make_case(index, seed)
    result, engine, ort = run_case(case, Path(scratch))
    path = ""
    if out and (result.cls in FAILURES or result.cls in REVIEW):
        path = str(save_reproducer(case, result, engine, ort, Path(out) / "cases"))
    result.reproducer = path
    return result, engine.traceback


def run_cases(indices: list[int], seed: int, out: Path | None = None, jobs: int = 1,
              progress: bool = False) -> dict[str, Any]:
    """Runs the cases and returns the report (counts per class, every failure)."""
    _warm_imports()
    start = time.monotonic()
    results: list[CaseResult] = []
    tracebacks: dict[int, str] = {}
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        work = [(i, seed, scratch, str(out) if out else "") for i in indices]
        if jobs > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                iterator = pool.imap_unordered(_one, work, chunksize=4)
                for n, (result, tb) in enumerate(iterator, 1):
                    _collect(result, tb, results, tracebacks, n, len(work), start, progress)
        else:
            for n, item in enumerate(work, 1):
                result, tb = _one(item)
                _collect(result, tb, results, tracebacks, n, len(work), start, progress)
    results.sort(key=lambda r: r.index)
    return _report(results, tracebacks, seed, time.monotonic() - start)


def _collect(result: CaseResult, tb: str, results: list[CaseResult], tracebacks: dict[int, str],
             n: int, total: int, start: float, progress: bool) -> None:
    results.append(result)
    if tb:
        tracebacks[result.index] = tb
    if progress and (result.cls in FAILURES or n % 500 == 0 or n == total):
        counts = Counter(r.cls for r in results)
        bad = sum(counts[c] for c in FAILURES)
        print(f"[{n}/{total} {time.monotonic() - start:.0f}s] failures {bad}"
              + (f" | #{result.index} {result.cls}: {_clip(result.detail, 160)}"
                 if result.cls in FAILURES else ""), flush=True)


def _report(results: list[CaseResult], tracebacks: dict[int, str], seed: int,
            seconds: float) -> dict[str, Any]:
    counts = Counter(r.cls for r in results)
    by_kind: dict[str, Counter] = {}
    for r in results:
        by_kind.setdefault(r.kind, Counter())[r.cls] += 1
    by_mutation: dict[str, Counter] = {}
    for r in results:
        for name in {m.split(":")[0] for m in r.mutations} or {r.kind}:
            key = f"{r.kind}/{name}" if r.kind in ("proto", "bytes") else r.kind
            by_mutation.setdefault(key, Counter())[r.cls] += 1
    clean = Counter(f"{r.engine.split(':')[0]}: {_clip(r.detail, 90)}" for r in results
                    if r.cls == "clean_error")
    return {
        "seed": seed, "cases": len(results), "seconds": round(seconds, 1),
        "counts": {c: counts.get(c, 0) for c in CLASSES},
        "failures": sum(counts.get(c, 0) for c in FAILURES),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
        "failed": [{**asdict(r), "traceback": tracebacks.get(r.index, "")}
                   for r in results if r.cls in FAILURES],
        "ort_refuses_engine_runs": [asdict(r) for r in results if r.cls in REVIEW],
        "matched_by_float64_reference": [asdict(r) for r in results
                                         if r.detail.startswith(FLOAT64_ARBITER)],
        "clean_errors_on_models_ort_runs": dict(clean.most_common(40)),
        "indices": {c: [r.index for r in results if r.cls == c] for c in CLASSES
                    if c != "match" and counts.get(c)},
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"{report['cases']} cases (seed {report['seed']}) in {report['seconds']} s"]
    for cls, count in report["counts"].items():
        mark = "  <- failure" if cls in FAILURES and count else ""
        lines.append(f"  {cls:26s} {count:6d}{mark}")
    for r in report["failed"][:50]:
        lines.append(f"#{r['index']} {r['cls']} [{r['seed_model']}/{r['kind']}] "
                     f"{'; '.join(r['mutations'])}")
        lines.append(f"    {_clip(r['detail'], 300)}")
        if r["reproducer"]:
            lines.append(f"    reproducer: {r['reproducer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.harness",
                                     description="fuzz the runtime against ONNX Runtime")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder (report.json, cases/) or a .json file for the report")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--index", type=int, action="append", default=[],
                        help="run only this case index (repeatable)")
    parser.add_argument("--replay", type=Path, default=None, help="a saved reproducer folder")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.replay is not None:
        return _replay(args.replay)
    out_dir, report_path = None, None
    if args.out is not None:
        if args.out.suffix == ".json":
            report_path, out_dir = args.out, args.out.parent / (args.out.stem + "-cases")
        else:
            out_dir, report_path = args.out, args.out / "report.json"
        out_dir.mkdir(parents=True, exist_ok=True)
    indices = args.index or list(range(args.start, args.start + args.cases))
    report = run_cases(indices, args.seed, out_dir, max(1, args.jobs), progress=not args.quiet)
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(format_report(report))
    if report_path is not None:
        print(f"report: {report_path}")
    return 1 if report["failures"] else 0


def _replay(folder: Path) -> int:
    _warm_imports()
    case = load_reproducer(folder)
    print(case.summary())
    with tempfile.TemporaryDirectory(prefix="fuzz-replay-") as scratch:
        result, engine, ort = run_case(case, Path(scratch))
    print(f"class: {result.cls}\n  {result.detail}\n  engine: {engine.brief()}\n"
          f"  ort: {ort.brief()}")
    if engine.traceback:
        print(engine.traceback)
    return 1 if result.cls in FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

