"""A timing worker for one contender of the full-size suite, run by the Python of that
contender's venv as a subprocess (``benchmarks/fullsize.py``, docs/peers.md).

Every contender lives in its own venv and its own process: DeepSparse 1.8 needs numpy < 2 and
onnx 1.14, MNN and OpenVINO bring their own native libraries, and a fresh process per measurement
gives each contender's peak RSS (``VmHWM``) alone. Each worker also loads ONNX Runtime dense (the
baseline) into the same process, so the parent can alternate blocks of both and every ratio is
measured side by side; the worker times itself (``time.perf_counter`` per call), so no IPC enters
the samples. This script imports only the stdlib and numpy at start; a backend's library is
imported when that backend is loaded, and ``engine`` imports this project's ``runtime``
(the parent puts the repository on ``PYTHONPATH``).

Protocol: one JSON request per stdin line, one JSON reply per stdout line; every reply carries
``"ok"``, failures add ``"error"`` (and ``"missing": true`` when the backend's library is not
installed). Library chatter on fd 1 is routed to stderr, so it cannot corrupt the protocol.

    {"op": "load", "slot": S, "backend": B, "model": PATH, "input": X.npy, "threads": T}
        load backend B (ort, engine, deepsparse, mnn, openvino) for the batch of X on T threads
        into slot S -> {"version", "load_s"}
    {"op": "run", "slot": S, "runs": K}          K untimed calls (warm-up)
    {"op": "time", "slot": S, "runs": K}         K timed calls -> {"samples_ms": [...]}
    {"op": "compare", "slot": S, "reference": R} one call of each -> {"rel_err", "max_abs_diff",
                                                  "max_abs_ref", "shape", "reference_shape"}
    {"op": "memory"}                             -> {"vm_hwm_kib", "vm_rss_kib"} of this process
    {"op": "quit"}

``python _peer_worker.py convert-mnn IN.onnx OUT.mnn`` converts a model with MNN's converter
(``--detectSparseSpeedUp``: sparse convs get MNN's sparse kernels). It calls the converter's
native entry point directly: the ``mnnconvert`` script would also pip-install and call a
telemetry SDK.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")  # DeepSparse: no usage reporting

EXIT_MISSING = 3  # convert-mnn: the converter's library is not installed
Runner = Callable[[], np.ndarray]  # one inference on the loaded input -> the first output


class MissingBackend(Exception):
    """The backend's library cannot be imported in this Python."""


@dataclass
class Loaded:
    """A backend loaded into a slot: its inference call and its library's version."""

    run: Runner
    version: str


# --------------------------------------------------------------------------------------------
# Backends: each returns (runner, version) for a model, an input batch and a thread count
# --------------------------------------------------------------------------------------------

def _import(module: str) -> Any:
    """Import a backend's library; :class:`MissingBackend` when it is not installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingBackend(f"{type(exc).__name__}: {exc}") from exc


def _load_ort(model: str, x: np.ndarray, threads: int) -> Loaded:
    """ONNX Runtime dense, configured as ``runtime.bench.make_ort_session``: T intra-op
    threads, one inter-op thread, sequential execution, all graph optimizations."""
    ort = _import("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return Loaded(lambda: session.run(None, feed)[0], ort.__version__)


def _load_engine(model: str, x: np.ndarray, threads: int) -> Loaded:
    """Our engine (``runtime.Engine``) with its default options."""
    runtime = _import("featherdeploy.runtime")
    engine = runtime.Engine(model, threads=threads)
    return Loaded(lambda: engine.run(x), "this checkout")  # the parent names the commit


def _load_deepsparse(model: str, x: np.ndarray, threads: int) -> Loaded:
    """DeepSparse 1.8 compiled for the batch of ``x`` on ``threads`` cores."""
    deepsparse = _import("deepsparse")
    engine = deepsparse.compile_model(model, batch_size=int(x.shape[0]), num_cores=threads)
    inputs = [x]
    return Loaded(lambda: engine.run(inputs)[0], deepsparse.__version__)


def _load_mnn(model: str, x: np.ndarray, threads: int) -> Loaded:
    """MNN on the CPU, precision "high" (float32), on a ``.mnn`` file converted with
    ``--detectSparseSpeedUp`` (``model``; see :func:`convert_mnn`). A call copies the input in,
    runs the session and copies the output out, as an application would."""
    mnn = _import("MNN")
    interpreter = mnn.Interpreter(model)
    session = interpreter.createSession({"backend": "CPU", "precision": "high",
                                         "numThread": threads})
    device_input = interpreter.getSessionInput(session)
    interpreter.resizeTensor(device_input, tuple(x.shape))
    interpreter.resizeSession(session)
    host_input = mnn.Tensor(tuple(x.shape), mnn.Halide_Type_Float, x,
                            mnn.Tensor_DimensionType_Caffe)
    device_output = interpreter.getSessionOutput(session)
    shape = tuple(device_output.getShape())
    host_output = mnn.Tensor(shape, mnn.Halide_Type_Float, np.zeros(shape, dtype=np.float32),
                             mnn.Tensor_DimensionType_Caffe)

    def run() -> np.ndarray:
        device_input.copyFrom(host_input)
        interpreter.runSession(session)
        device_output.copyToHostTensor(host_output)
        return np.array(host_output.getNumpyData(), dtype=np.float32).reshape(shape)
    return Loaded(run, getattr(mnn, "__version__", "") or mnn.version())


def _load_openvino(model: str, x: np.ndarray, threads: int) -> Loaded:
    """OpenVINO on the CPU (dense), reshaped to the batch of ``x``, latency hint, float32."""
    ov = _import("openvino")
    core = ov.Core()
    network = core.read_model(model)
    network.reshape({network.inputs[0].get_any_name(): ov.PartialShape(list(x.shape))})
    compiled = core.compile_model(network, "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    output = compiled.outputs[0]
    return Loaded(lambda: request.infer({0: x})[output], ov.__version__)


BACKENDS: dict[str, Callable[[str, np.ndarray, int], Loaded]] = {
    "ort": _load_ort, "engine": _load_engine, "deepsparse": _load_deepsparse,
    "mnn": _load_mnn, "openvino": _load_openvino,
}


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------

def memory_kib(status_path: str = "/proc/self/status") -> dict[str, int]:
    """Peak (VmHWM) and current (VmRSS) resident set size of this process, in KiB."""
    fields = {}
    with open(status_path, encoding="ascii") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0])
    return {"vm_hwm_kib": fields["VmHWM"], "vm_rss_kib": fields["VmRSS"]}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    """max|actual - expected| / max|expected|, with both maxima; ``rel_err`` None on a shape
    mismatch."""
    actual = np.asarray(actual, dtype=np.float32)
    expected = np.asarray(expected, dtype=np.float32)
    reply: dict[str, Any] = {"shape": list(actual.shape), "reference_shape": list(expected.shape),
                             "max_abs_ref": float(np.max(np.abs(expected))) if expected.size
                             else 0.0}
    if actual.shape != expected.shape:
        reply.update(rel_err=None, max_abs_diff=None)
        return reply
    diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    reply.update(max_abs_diff=diff, rel_err=diff / max(reply["max_abs_ref"], 1e-12))
    return reply


class WorkerState:
    """Loaded backends by slot name."""

    def __init__(self) -> None:
        self.slots: dict[str, Loaded] = {}

    def slot(self, name: str) -> Loaded:
        if name not in self.slots:
            raise KeyError(f"slot {name!r} is not loaded (send 'load' first)")
        return self.slots[name]


def _load(state: WorkerState, request: dict[str, Any]) -> dict[str, Any]:
    backend = request["backend"]
    if backend not in BACKENDS:
        return {"ok": False, "error": f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}"}
    x = np.ascontiguousarray(np.load(request["input"]), dtype=np.float32)
    state.slots.pop(request["slot"], None)  # free a previous occupant first
    start = time.perf_counter()
    try:
        loaded = BACKENDS[backend](request["model"], x, int(request["threads"]))
    except MissingBackend as exc:
        return {"ok": False, "missing": True, "error": f"{backend} is not installed ({exc})"}
    state.slots[request["slot"]] = loaded
    return {"ok": True, "version": loaded.version, "load_s": time.perf_counter() - start}


def _time(run: Runner, runs: int) -> list[float]:
    """``runs`` timed calls, one wall-clock sample (ms) each."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def handle(state: WorkerState, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request (see the module docstring)."""
    op = request.get("op")
    if op == "load":
        return _load(state, request)
    if op == "run":
        run = state.slot(request["slot"]).run
        for _ in range(int(request["runs"])):
            run()
        return {"ok": True}
    if op == "time":
        return {"ok": True, "samples_ms": _time(state.slot(request["slot"]).run,
                                                int(request["runs"]))}
    if op == "compare":
        actual = state.slot(request["slot"]).run()
        expected = state.slot(request["reference"]).run()
        return {"ok": True, **relative_error(actual, expected)}
    if op == "memory":
        return {"ok": True, **memory_kib()}
    return {"ok": False, "error": f"unknown op {op!r}"}


def serve(requests: TextIO, replies: TextIO, state: WorkerState | None = None) -> None:
    """Answer requests line by line until 'quit' or end of input; a failing request is
    answered with its error, never by dying mid-protocol."""
    state = WorkerState() if state is None else state
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("op") == "quit":
                break
            reply = handle(state, request)
        except Exception as exc:  # report to the parent, keep serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def convert_mnn(source: str, target: str) -> int:
    """Convert an ONNX file to MNN with sparse kernels detected; 0 when ``target`` was written
    (the converter returns True even when it fails, so its output file is the only signal),
    ``EXIT_MISSING`` without MNN, else 1."""
    try:
        import _tools  # MNN's native converter module (the mnn wheel installs it top-level)
    except ImportError as exc:
        print(f"MNN is not installed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return EXIT_MISSING
    if os.path.exists(target):
        os.unlink(target)
    _tools.mnnconvert(["mnnconvert", "-f", "ONNX", "--modelFile", source, "--MNNModel", target,
                       "--bizCode", "biz", "--detectSparseSpeedUp"])
    return 0 if os.path.isfile(target) and os.path.getsize(target) > 0 else 1


def main(argv: list[str]) -> int:
    """Serve the protocol on the real stdout (library output on fd 1 goes to stderr), or
    ``convert-mnn IN OUT``."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    if argv[:1] == ["convert-mnn"] and len(argv) == 3:
        return convert_mnn(argv[1], argv[2])
    if argv:
        print(f"usage: {sys.argv[0]} [convert-mnn IN.onnx OUT.mnn]", file=sys.stderr)
        return 2
    serve(sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
