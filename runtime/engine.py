"""The engine users call: ``Engine(path, threads=None).run(x) -> y``.

Backends: ``native`` runs the plan below; ``onnxruntime`` hands the whole model to ONNX Runtime's
dense kernels; ``auto`` (the default, overridable with the FEATHERDEPLOY_BACKEND environment
variable) picks ``onnxruntime`` only for near-dense models (weight density of Conv/Gemm weights
above ``DENSE_DELEGATE_DENSITY``), where a dense GEMM library beats direct sparse kernels, and
``native`` otherwise. The model is parsed and validated the same way whichever backend runs it.

Load (once): parse and validate the ONNX (``runtime.graph``), fold BatchNormalization
(``runtime.passes``), then plan for the model's declared input shape so that an unsupported or
inconsistent model fails at load. Run: validate ``x``, fetch (or build, once per input shape) the
native plan (``runtime.plan``) and execute it in one native call with the GIL released. Plans keep
a pool of workspaces, so concurrent ``run`` calls from several threads are safe.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import numpy as np

from runtime.errors import EngineError, InputError
from runtime.graph import Graph, load_graph
from runtime.passes import prepare_graph
from runtime.plan import CompiledPlan, batch_separable, build_plan, interleave_lanes

__all__ = ["BACKENDS", "DENSE_DELEGATE_DENSITY", "Engine", "default_threads", "weight_density"]

BACKENDS = ("auto", "native", "onnxruntime")
BACKEND_ENV = "FEATHERDEPLOY_BACKEND"
# Above this fraction of nonzero Conv/Gemm weights, ORT's dense GEMM kernels are faster than our
# direct sparse kernels (measured: native dense is 0.6-0.75x ORT at 0% sparsity).
DENSE_DELEGATE_DENSITY = 0.6
# Single-image plans faster than this (parallel) may run faster on one thread: stage hand-offs
# cost more than they save (measured: a 5M-MAC model takes 0.18 ms on 1 thread, 0.19 ms on 2).
# Such plans are timed both ways once, back to back as a stream of requests runs them (helpers
# awake); the faster one serves batch-1 calls. (Isolated requests on this VM mostly measure how
# fast an idle core wakes up; with work units claimed dynamically, a late helper costs little.)
SERIAL_PROBE_MAX_S = 0.005
# Batches: FEATHERDEPLOY_BATCH_LAYOUT=auto (time planar vs batch-interleaved once per batch size,
# keep the faster), interleaved, or planar.
BATCH_LAYOUTS = ("auto", "interleaved", "planar")
BATCH_LAYOUT_ENV = "FEATHERDEPLOY_BATCH_LAYOUT"
PROBE_RUNS = 5
PROBE_ROUNDS = 3  # the two options' streams alternate (_compare_streams)
PROBE_SETTLE_S = 0.02


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def weight_density(graph: Graph) -> float:
    """Nonzero fraction of all Conv and Gemm/MatMul weight constants (1.0 when there are none)."""
    nnz = total = 0
    for node in graph.nodes:
        if node.op in ("Conv", "Gemm", "MatMul") and len(node.inputs) > 1:
            weight = graph.constants.get(node.inputs[1])
            if weight is not None:
                nnz += int(np.count_nonzero(weight))
                total += weight.size
    return nnz / total if total else 1.0


def _resolve_backend(requested: str | None, graph: Graph) -> str:
    backend = requested or os.environ.get(BACKEND_ENV, "auto")
    if backend not in BACKENDS:
        raise EngineError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        dense = weight_density(graph) > DENSE_DELEGATE_DENSITY
        return "onnxruntime" if dense else "native"
    return backend


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise EngineError(f"ONNX Runtime cannot load {path}: {exc}") from None


def _native_module():
    from runtime import _native  # the compiled extension; imported on first use

    return _native


class Engine:
    """Sparse CPU inference of one ONNX CNN (see module docstring)."""

    def __init__(self, path: str | Path, threads: int | None = None,
                 backend: str | None = None) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise EngineError(f"threads must be a positive integer or None, got {threads!r}")
        self.path = Path(path)
        self.threads = threads or default_threads()
        self.graph: Graph = prepare_graph(load_graph(self.path))
        self.backend = _resolve_backend(backend, self.graph)
        self._ort = _ort_session(self.path, self.threads) if self.backend == "onnxruntime" else None
        self._native = _native_module()
        self._plans: dict[tuple[tuple[int, ...], int, bool], CompiledPlan] = {}
        self._lanes_known: dict[tuple[tuple[int, ...], int], int] = {}
        self._separable: dict[tuple[int, ...], bool] = {}
        self._single_threads: dict[tuple[int, ...], int] = {}
        self._lock = threading.RLock()
        # Plan now when only the batch is dynamic, so an inconsistent model fails at load (with
        # dynamic spatial dims there is no shape to plan for until the first input).
        if all(d is not None for d in self.graph.input_shape[1:]):
            self._plan_for(tuple(1 if d is None else d for d in self.graph.input_shape))

    @property
    def input_name(self) -> str:
        return self.graph.input_name

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """Declared input shape; None marks a dynamic dimension (usually the batch)."""
        return self.graph.input_shape

    def kernel_choices(self) -> dict[str, str]:
        """Conv node name -> "csr" / "bsr" as planned for the declared shape (batch 1)."""
        shape = tuple(1 if d is None else d for d in self.graph.input_shape)
        return dict(self._plan_for(shape).kernels)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for input ``x`` (float32, declared rank, declared static dims)."""
        x = self._check_input(x)
        if self._ort is not None:
            return self._ort.run(None, {self.graph.input_name: x})[0]
        batch, image = x.shape[0], tuple(x.shape[1:])
        if batch == 1:
            plan = self._single_image_plan(tuple(x.shape))
            y = np.empty(plan.output_shape, dtype=np.float32)
            plan.native.run(x, y)
            return y
        if self._is_separable(image):
            return self._run_separable(x)
        plan = self._plan_for(tuple(x.shape))
        y = np.empty(plan.output_shape, dtype=np.float32)
        plan.native.run(x, y)
        return y

    def _run_separable(self, x: np.ndarray) -> np.ndarray:
        """Images never interact: threads take whole groups of ``lanes`` images, each group
        run by one batch-interleaved plan (one image per plan when interleaving does not pay)."""
        batch, image = x.shape[0], tuple(x.shape[1:])
        lanes = self._lanes(image, batch)
        one = self._plan_for((1, *image))
        first, *rest = one.output_shape
        y = np.empty((batch * first, *rest), dtype=np.float32)
        groups, tail = divmod(batch, lanes)
        done = groups * lanes
        self._plan_for((lanes, *image), interleave=lanes > 1).native.run_images(
            x[:done], y[:done * first], groups)
        if tail:
            plan = self._plan_for((tail, *image), interleave=tail > 1)
            plan.native.run(x[done:], y[done * first:])
        return y

    def _lanes(self, image: tuple[int, ...], batch: int) -> int:
        """Images per interleaved group for this batch size (1: planar, image by image)."""
        key = (image, batch)
        known = self._lanes_known.get(key)
        if known is None:
            with self._lock:
                known = self._lanes_known.get(key)
                if known is None:
                    known = self._lanes_known[key] = self._choose_lanes(image, batch)
        return known

    def _choose_lanes(self, image: tuple[int, ...], batch: int) -> int:
        layout = os.environ.get(BATCH_LAYOUT_ENV, "auto")
        if layout not in BATCH_LAYOUTS:
            raise EngineError(f"{BATCH_LAYOUT_ENV} must be one of {BATCH_LAYOUTS}, got {layout!r}")
        lanes = interleave_lanes(self.graph, image, batch) if layout != "planar" else 1
        if lanes == 1 or layout == "interleaved":
            return lanes
        # Which layout wins depends on the model and the cache sizes (interleaving pays on small
        # planes, costs L2 misses on big ones): time both once on whole groups, one per thread.
        sample = max(1, min(batch // lanes, self.threads)) * lanes
        one = self._plan_for((1, *image))
        grouped = self._plan_for((lanes, *image), interleave=True).native
        grouped_s, planar_s = _compare_streams(
            lambda x, y: grouped.run_images(x, y, sample // lanes),
            lambda x, y: one.native.run_images(x, y, sample),
            np.zeros((sample, *image), np.float32),
            np.empty(sample * math.prod(one.output_shape), np.float32))
        return lanes if grouped_s < planar_s else 1

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise InputError(f"input must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise InputError(f"input dtype must be float32, got {x.dtype}")
        declared = self.graph.input_shape
        if x.ndim != len(declared):
            raise InputError(f"input must have rank {len(declared)} (shape "
                             f"{_shape_str(declared)}), got shape {x.shape}")
        for axis, (got, want) in enumerate(zip(x.shape, declared, strict=True)):
            if (want is not None and got != want) or got < 1:
                raise InputError(f"input dim {axis} must be {want if want else '>= 1'} (shape "
                                 f"{_shape_str(declared)}), got shape {x.shape}")
        return np.ascontiguousarray(x)

    def _is_separable(self, image: tuple[int, ...]) -> bool:
        known = self._separable.get(image)
        if known is None:
            known = self._separable[image] = batch_separable(self.graph, image)
        return known

    def _plan_for(self, shape: tuple[int, ...], threads: int | None = None, *,
                  interleave: bool = False) -> CompiledPlan:
        key = (shape, threads or self.threads, interleave)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = self._plans.get(key)
                if plan is None:
                    plan = build_plan(self.graph, shape, key[1], self._native,
                                      interleave=interleave)
                    self._plans[key] = plan
        return plan

    def _single_image_plan(self, shape: tuple[int, ...]) -> CompiledPlan:
        """The plan serving batch-1 calls: all threads, or one when that measured faster."""
        threads = self._single_threads.get(shape)
        if threads is None:
            with self._lock:
                threads = self._single_threads.get(shape)
                if threads is None:
                    threads = self._single_threads[shape] = self._probe_threads(shape)
        return self._plan_for(shape, threads)

    def _probe_threads(self, shape: tuple[int, ...]) -> int:
        parallel = self._plan_for(shape)
        if self.threads == 1:
            return 1
        parallel_s, serial_s = _compare_streams(
            parallel.native.run,
            lambda x, y: self._plan_for(shape, 1).native.run(x, y),  # built only if timed
            np.zeros(parallel.input_shape, dtype=np.float32),  # sparse kernels are data-blind
            np.empty(parallel.output_shape, dtype=np.float32),
            first_limit_s=SERIAL_PROBE_MAX_S)
        return 1 if serial_s < parallel_s else self.threads


def _compare_streams(first, second, x: np.ndarray, y: np.ndarray,
                     first_limit_s: float = math.inf) -> tuple[float, float]:
    """Median seconds of ``first(x, y)`` and ``second(x, y)``, each timed in streams of
    back-to-back calls (as a stream of requests runs them: helper threads awake), the two
    alternating over PROBE_ROUNDS so a noisy moment hits both. Stops early, second untimed (inf),
    when ``first`` is slower than ``first_limit_s``."""
    first_s: list[float] = []
    second_s: list[float] = []
    for _ in range(PROBE_ROUNDS):
        first_s += _stream_seconds(first, x, y)
        if np.median(first_s) > first_limit_s:
            return float(np.median(first_s)), math.inf
        second_s += _stream_seconds(second, x, y)
    return float(np.median(first_s)), float(np.median(second_s))


def _stream_seconds(fn, x: np.ndarray, y: np.ndarray) -> list[float]:
    """Wall times of PROBE_RUNS back-to-back calls ``fn(x, y)`` after PROBE_SETTLE_S of untimed
    calls (at least one): idle cores back to speed, helper threads awake. Timing the first calls
    mostly measures how fast the second core wakes, which favours whichever option needs it
    least (a noisy probe once served MobileNet's batch of 32 planar: 2.7x slower)."""
    settle_until = time.perf_counter() + PROBE_SETTLE_S
    while True:
        fn(x, y)
        if time.perf_counter() >= settle_until:
            break
    times = []
    for _ in range(PROBE_RUNS):
        start = time.perf_counter()
        fn(x, y)
        times.append(time.perf_counter() - start)
    return times


def _shape_str(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
