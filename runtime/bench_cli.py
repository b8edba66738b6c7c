"""``featherdeploy bench``: our engine against ONNX Runtime dense on one ONNX file, with what
deepsparse.benchmark, OpenVINO's benchmark_app, onnxruntime_perf_test and TFLite's
benchmark_model report (docs/benchmarking.md).

Per configuration (thread count x batch size) each contender is loaded, its plans built and run
once, each step timed separately (load, plan build, first inference); then both are timed side
by side in interleaved rounds (``runtime.bench.compare_interleaved``: the contenders alternate,
every turn opening with an idle gap and untimed settling calls), for a number of rounds or for
``-t`` seconds; optionally the throughput of N concurrent streams (Python threads each calling
``run``), a per-step profile of the engine and the peak memory of each contender (a child
process each, ``runtime.peak_memory``). The report names the machine, the kernels (ISA) and the
package versions; ``--json`` writes every statistic, atomically.

Which peer command our numbers correspond to, at T threads and batch N:
our sync latency (one call at a time) = ``deepsparse.benchmark MODEL -s sync -b N -ncores T``
(DeepSparse defaults to ``-s async`` and reports the mean: compare with our mean, or pass
``-s sync``) = ``onnxruntime_perf_test -e cpu -x T MODEL`` = ``benchmark_app -m MODEL -hint
latency -nthreads T -b N``; ``--streams S`` is comparable to ``deepsparse.benchmark -s async
-nstreams S``, ``onnxruntime_perf_test -c S`` and ``benchmark_app -hint throughput -nstreams S``.
None of those tools alternates contenders, which is why we do.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from featherdeploy.runtime.atomic import atomic_write_json, check_writable_target
from featherdeploy.runtime.bench import (
    DEFAULT_CALLS_PER_ROUND,
    DEFAULT_ROUNDS,
    DEFAULT_WARMUP,
    INPUT_SEED,
    ORT_SESSION_SETTINGS,
    TURN_GAP_S,
    TURN_SETTLE_CALLS,
    TURN_SETTLE_S,
    BenchError,
    ModelMacs,
    Timing,
    compare_interleaved,
    count_model_macs,
    load_engine,
    load_onnx_model,
    make_ort_session,
)
from featherdeploy.runtime.bench_inputs import (
    InputsError,
    InputSpec,
    batch_of,
    make_feeds,
    model_inputs,
    read_input_files,
)
from featherdeploy.runtime.errors import EngineError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "BenchSettings", "Startup", "ContenderResult", "BenchRow",
           "BenchReport", "bench_model", "peer_commands", "format_report",
           "add_bench_arguments", "settings_from_args", "run_bench"]

SCHEMA = "featherdeploy.bench"
SCHEMA_VERSION = 2
CONTENDERS = ("ort", "engine")
# The engine's outputs must match ORT's within this (float32, different summation orders).
OUTPUT_ATOL = 1e-3
OUTPUT_RTOL = 1e-3
MEMORY_RUNS = 3  # calls the memory child makes after loading
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class BenchSettings:
    """What the bench CLI fills in (one field per flag)."""

    batches: tuple[int | None, ...] = (1, 32)  # None: as --shape / --input give it
    threads: tuple[int, ...] = (1, 2)
    rounds: int = DEFAULT_ROUNDS
    duration_s: float = 0.0  # > 0: rounds until this many seconds per timed phase (-t)
    warmup: int = DEFAULT_WARMUP
    calls_per_round: int = DEFAULT_CALLS_PER_ROUND
    streams: int = 1
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    input_files: Mapping[str, str] = field(default_factory=dict)
    seed: int = INPUT_SEED
    profile: bool = False
    profile_reps: int = 10
    memory: bool = True
    engine_overrides: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> BenchSettings:
        if not self.batches or not self.threads:
            raise BenchError("need at least one batch size and one thread count")
        if any(b is not None and b < 1 for b in self.batches) or min(self.threads) < 1:
            raise BenchError("batch sizes and thread counts must be >= 1")
        if self.rounds < 1 or self.warmup < 0 or self.calls_per_round < 1:
            raise BenchError("--rounds and --calls-per-round must be >= 1 and --warmup >= 0")
        if not (self.duration_s >= 0 and math.isfinite(self.duration_s)):
            raise BenchError(f"-t must be a duration >= 0 in seconds, got {self.duration_s}")
        if self.streams < 1 or self.profile_reps < 1:
            raise BenchError("--streams and the profile repetitions must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"batches": list(self.batches), "threads": list(self.threads),
                "rounds": self.rounds, "duration_s": self.duration_s, "warmup": self.warmup,
                "calls_per_round": self.calls_per_round, "streams": self.streams,
                "shapes": {k: list(v) for k, v in self.shapes.items()},
                "input_files": dict(self.input_files), "seed": self.seed,
                "profile": self.profile, "profile_reps": self.profile_reps,
                "memory": self.memory, "turn_gap_s": TURN_GAP_S,
                "turn_settle_calls": TURN_SETTLE_CALLS, "turn_settle_s": TURN_SETTLE_S}


@dataclass(frozen=True)
class Startup:
    """One-off costs of a contender, in ms: loading it (engine: ``Engine(...)``, which parses
    and checks the model and plans the batch-1 shape when the input shape is fixed; ONNX
    Runtime: creating the session, graph optimizations included), building the plans for this
    configuration (engine: ``Engine.prepare``, timed choices included; None for ONNX Runtime,
    which does that at load) and the first inference."""

    load_ms: float
    plan_ms: float | None
    first_run_ms: float


@dataclass(frozen=True)
class ContenderResult:
    """Everything measured for one contender in one configuration; ``note`` says why a part
    has no numbers."""

    startup: Startup | None = None
    latency: Timing | None = None
    streams: Timing | None = None  # one sample per burst of all streams; batch = its images
    memory: Any = None  # runtime.peak_memory.PeakMemory
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"startup": asdict(self.startup) if self.startup else None,
                "latency": self.latency.to_dict() if self.latency else None,
                "streams": _streams_dict(self.streams),
                "memory": self.memory.to_dict() if self.memory else None, "note": self.note}


@dataclass(frozen=True)
class BenchRow:
    """One configuration (threads, batch): ORT dense and our engine, side by side."""

    threads: int
    batch: int
    input_shapes: dict[str, tuple[int, ...]]
    ort: ContenderResult
    engine: ContenderResult
    engine_backend: str | None = None  # what Engine(...) chose (auto: ORT for near-dense)
    engine_choice: str = ""  # what runs for this batch (Engine.prepare)
    max_abs_diff: float | None = None
    outputs_match: bool | None = None
    elapsed_s: dict[str, float] = field(default_factory=dict)  # per timed phase
    profile: Any = None  # runtime.profile.Profile

    @property
    def speedup(self) -> float | None:
        """ORT median / engine median, or None without engine numbers."""
        if self.engine.latency is None or self.ort.latency is None:
            return None
        return self.ort.latency.median_ms / self.engine.latency.median_ms

    def to_dict(self, model: str, settings: BenchSettings) -> dict[str, Any]:
        return {"threads": self.threads, "batch": self.batch,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "ort": self.ort.to_dict(), "engine": self.engine.to_dict(),
                "engine_backend": self.engine_backend, "engine_choice": self.engine_choice,
                "speedup": self.speedup, "max_abs_diff": self.max_abs_diff,
                "outputs_match": self.outputs_match, "elapsed_s": dict(self.elapsed_s),
                "profile": self.profile.to_dict() if self.profile else None,
                "peer_commands": peer_commands(model, self.threads, self.batch, settings,
                                               self.input_shapes)}


@dataclass(frozen=True)
class BenchReport:
    """A whole bench run: the machine, the software, the model and one row per configuration."""

    model: str
    settings: BenchSettings
    machine: Any  # runtime.machine.MachineInfo
    isa: str
    versions: dict[str, str | None]
    engine_options: dict[str, Any]
    inputs: list[InputSpec]
    macs: ModelMacs
    rows: list[BenchRow]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(
        timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.created,
                "model": self.model, "machine": {**self.machine.to_dict(), "isa": self.isa},
                "versions": self.versions, "engine_options": self.engine_options,
                "ort_options": ORT_SESSION_SETTINGS, "settings": self.settings.to_dict(),
                "inputs": [{"name": s.name, "dtype": s.dtype.name, "dims": list(s.dims)}
                           for s in self.inputs],
                "macs": self.macs.to_dict(), "ideal_speedup": _ideal_speedup(self.macs),
                "rows": [row.to_dict(self.model, self.settings) for row in self.rows]}


# ------------------------------------------------------------------------------ measuring

def bench_model(path: str | os.PathLike[str], settings: BenchSettings | None = None
                ) -> BenchReport:
    """Benchmark one ONNX file under ``settings``; :class:`BenchError` for bad input."""
    from featherdeploy.runtime.machine import machine_info, package_versions
    from featherdeploy.runtime.options import EngineOptions

    settings = (settings or BenchSettings()).validate()
    model = load_onnx_model(path)
    try:
        specs = model_inputs(model)
        names = [s.name for s in specs]
        for flag, given in (("--shape", settings.shapes), ("--input", settings.input_files)):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise InputsError(f"{flag} names {unknown}, but the model's inputs are {names}")
        arrays = read_input_files(settings.input_files, specs)
        feeds_by_batch = [make_feeds(specs, batch, shapes=settings.shapes, arrays=arrays,
                                     seed=settings.seed) for batch in settings.batches]
    except InputsError as exc:
        raise BenchError(str(exc)) from None
    try:
        options = EngineOptions.from_env(**settings.engine_overrides)
    except EngineError as exc:
        raise BenchError(str(exc)) from None
    macs = count_model_macs(model, {n: x.shape for n, x in feeds_by_batch[0].items()})
    _initialize_libraries()
    rows = [_bench_one(Path(path), threads, feeds, settings, options)
            for threads in settings.threads for feeds in feeds_by_batch]
    return BenchReport(model=str(path), settings=settings, machine=machine_info(),
                       isa=_isa(options.isa), versions=package_versions(),
                       engine_options=asdict(options), inputs=specs, macs=macs, rows=rows)


def _initialize_libraries() -> None:
    """Pay each library's once-per-process start-up before anything is timed, so the first
    configuration's load time is the model's, as in the peers (onnxruntime_perf_test creates
    its ORT environment before it times the session): our engine's modules and native
    extension, and ONNX Runtime's environment (made with its first session)."""
    from onnx import TensorProto, helper

    try:
        importlib.import_module("featherdeploy.runtime.engine")
    except ImportError:
        pass  # load_engine reports it
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "init", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    import onnxruntime

    onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _isa(isa: str) -> str:
    try:
        from featherdeploy.runtime import native_isa

        return native_isa(isa)
    except Exception as exc:  # no native extension: say so rather than guess
        return f"unavailable ({type(exc).__name__})"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000.0


def _start_ort(path: Path, threads: int, feeds: dict[str, np.ndarray]
               ) -> tuple[Any, Startup, list[np.ndarray]]:
    session, load_ms = _timed(lambda: make_ort_session(path, threads))
    try:
        outputs, first_ms = _timed(lambda: session.run(None, feeds))
    except Exception as exc:  # ORT raises its own exception types; the baseline must run
        raise BenchError(f"ONNX Runtime cannot run the model on "
                         f"{_shapes_text(feeds)}: {' '.join(str(exc).split())}") from None
    return session, Startup(load_ms, None, first_ms), list(outputs)


def _start_engine(path: Path, threads: int, feeds: dict[str, np.ndarray], options: Any,
                  output_names: list[str]) -> tuple[Any, ContenderResult, str, list | None]:
    (engine, note), load_ms = _timed(lambda: load_engine(path, threads, options))
    if engine is None:
        return None, ContenderResult(note=note), "", None
    try:
        choice, plan_ms = _timed(lambda: engine.prepare({n: x.shape for n, x in feeds.items()}))
        outputs, first_ms = _timed(lambda: engine.run(feeds, output_names=output_names))
    except Exception as exc:  # an engine that cannot run the model gets a note, not a number
        return None, ContenderResult(note=f"engine failed to run ({type(exc).__name__}: "
                                          f"{exc})"), "", None
    return engine, ContenderResult(startup=Startup(load_ms, plan_ms, first_ms)), choice, outputs


def _outputs_check(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray]
                   ) -> tuple[float, bool]:
    """Largest |engine - ORT| over all outputs, and whether all are within the tolerances."""
    worst, match = 0.0, True
    for got, want in zip(actual, expected, strict=True):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            return math.inf, False
        if got.size:
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            known = diff[~np.isnan(diff)]  # NaN in both is a match, NaN in one a mismatch
            worst = max(worst, float(known.max())) if known.size else worst
            match = match and bool(np.allclose(got, want, atol=OUTPUT_ATOL, rtol=OUTPUT_RTOL,
                                               equal_nan=True))
    return worst, match


def _bench_one(path: Path, threads: int, feeds: dict[str, np.ndarray],
               settings: BenchSettings, options: Any) -> BenchRow:
    """Load, check and time both contenders on one (threads, batch)."""
    batch = batch_of({n: x.shape for n, x in feeds.items()})
    session, ort_startup, expected = _start_ort(path, threads, feeds)
    output_names = [o.name for o in session.get_outputs()]
    engine, engine_result, choice, actual = _start_engine(path, threads, feeds, options,
                                                          output_names)
    diff, match = _outputs_check(actual, expected) if actual is not None else (None, None)
    calls: dict[str, Callable[[], Any]] = {"ort": lambda: session.run(None, feeds)}
    if engine is not None:
        calls["engine"] = lambda: engine.run(feeds)
    elapsed: dict[str, float] = {}
    latency, elapsed["latency"] = _timed(lambda: _interleaved(calls, batch, settings))
    elapsed["latency"] /= 1000.0
    streams: dict[str, Timing] = {}
    if settings.streams > 1:
        streams, elapsed["streams"] = _timed(lambda: _streams(calls, batch, settings))
        elapsed["streams"] /= 1000.0
    profile, profile_note = _profile(engine, feeds, settings)
    memory = _memory(path, threads, feeds, settings, engine is not None)
    ort = ContenderResult(ort_startup, latency["ort"], streams.get("ort"), memory["ort"][0],
                          memory["ort"][1])
    if engine is not None:
        note = "; ".join(filter(None, [memory["engine"][1], profile_note]))
        engine_result = replace(engine_result, latency=latency["engine"],
                                streams=streams.get("engine"), memory=memory["engine"][0],
                                note=note)
    return BenchRow(threads=threads, batch=batch,
                    input_shapes={n: tuple(x.shape) for n, x in feeds.items()}, ort=ort,
                    engine=engine_result, engine_backend=getattr(engine, "backend", None),
                    engine_choice=choice, max_abs_diff=diff, outputs_match=match,
                    elapsed_s=elapsed, profile=profile)


def _interleaved(calls: Mapping[str, Callable[[], Any]], images: int,
                 settings: BenchSettings) -> dict[str, Timing]:
    rounds = 1 if settings.duration_s > 0 else settings.rounds
    return compare_interleaved(calls, batch=images, rounds=rounds, warmup=settings.warmup,
                               calls_per_round=settings.calls_per_round, gap_s=TURN_GAP_S,
                               settle_calls=TURN_SETTLE_CALLS, settle_s=TURN_SETTLE_S,
                               duration_s=settings.duration_s)


def _streams(calls: Mapping[str, Callable[[], Any]], batch: int, settings: BenchSettings
             ) -> dict[str, Timing]:
    """Throughput of ``settings.streams`` Python threads each making ``calls_per_round`` calls
    at once: one timed sample per burst, contenders interleaved as for latency."""
    count, per_stream = settings.streams, settings.calls_per_round
    pools = {name: ThreadPoolExecutor(max_workers=count, thread_name_prefix=f"bench-{name}")
             for name in calls}

    def burst(name: str) -> Callable[[], None]:
        fn, pool = calls[name], pools[name]

        def stream() -> None:
            for _ in range(per_stream):
                fn()

        def run() -> None:
            for future in [pool.submit(stream) for _ in range(count)]:
                future.result()
        return run

    try:
        return _interleaved({name: burst(name) for name in calls}, batch * count * per_stream,
                            replace(settings, calls_per_round=1))
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True)


def _profile(engine: Any, feeds: dict[str, np.ndarray], settings: BenchSettings
             ) -> tuple[Any, str]:
    if not settings.profile or engine is None:
        return None, ""
    try:
        return engine.profile(feeds, reps=settings.profile_reps), ""
    except EngineError as exc:
        return None, f"no profile: {exc}"


def _memory(path: Path, threads: int, feeds: dict[str, np.ndarray], settings: BenchSettings,
            with_engine: bool) -> dict[str, tuple[Any, str]]:
    from featherdeploy.runtime.peak_memory import PeakMemoryError, measure_peak_memory

    result: dict[str, tuple[Any, str]] = {name: (None, "") for name in CONTENDERS}
    if not settings.memory:
        return result
    for name in CONTENDERS:
        if name == "engine" and not with_engine:
            continue
        try:
            result[name] = (measure_peak_memory(name, path, threads, feeds, runs=MEMORY_RUNS,
                                                engine_overrides=settings.engine_overrides), "")
        except PeakMemoryError as exc:
            result[name] = (None, f"no peak memory: {exc}")
    return result


# -------------------------------------------------------------------------------- reporting

def peer_commands(model: str, threads: int, batch: int, settings: BenchSettings,
                  input_shapes: Mapping[str, tuple[int, ...]] | None = None) -> dict[str, str]:
    """The peer tools' commands that measure what our rows measure (docs/benchmarking.md).

    DeepSparse only has a time-based mode (default 10 s); the others take our call count.
    Shapes are passed on when ``--shape`` sized dynamic dims."""
    calls = settings.rounds * settings.calls_per_round
    seconds = f"{settings.duration_s:g}"
    timed = bool(settings.duration_s)
    ds_shapes = ov_shapes = ""
    if settings.shapes and input_shapes:
        ds_shapes = " -shapes " + ",".join(f"[{','.join(map(str, s))}]"
                                           for s in input_shapes.values())
        ov_shapes = " -data_shape " + ",".join(f"{n}[{','.join(map(str, s))}]"
                                               for n, s in input_shapes.items())
    commands = {
        "deepsparse": f"deepsparse.benchmark {model} -s sync -b {batch} -ncores {threads}"
                      + (f" -t {seconds}" if timed else "") + ds_shapes,
        "onnxruntime": f"onnxruntime_perf_test -e cpu -x {threads} "
                       + (f"-m duration -t {seconds}" if timed else f"-m times -r {calls}")
                       + f" {model}",
        "openvino": f"benchmark_app -m {model} -hint latency -nthreads {threads} -b {batch} "
                    + (f"-t {seconds}" if timed else f"-niter {calls}") + ov_shapes,
    }
    if settings.streams > 1:
        n = settings.streams
        commands["deepsparse_streams"] = (f"deepsparse.benchmark {model} -s async -nstreams {n} "
                                          f"-b {batch} -ncores {threads}{ds_shapes}")
        commands["onnxruntime_streams"] = (f"onnxruntime_perf_test -e cpu -x {threads} -c {n} "
                                           f"{model}")
        commands["openvino_streams"] = (f"benchmark_app -m {model} -hint throughput -nstreams "
                                        f"{n} -nthreads {threads} -b {batch}{ov_shapes}")
    return commands


def _ideal_speedup(macs: ModelMacs) -> float | None:
    """Dense MACs / sparse MACs: the speedup if time were proportional to useful work."""
    return macs.dense / macs.sparse if macs.sparse else None


def _cell(value: float | None, fmt: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, fmt)


def _shapes_text(feeds: Mapping[str, Any]) -> str:
    return ", ".join(f"{n} {'x'.join(map(str, x.shape))} {x.dtype}" for n, x in feeds.items())


def _versions_text(versions: Mapping[str, str | None]) -> str:
    return ", ".join(f"{name} {version or 'not installed'}" for name, version in versions.items())


def _contender_line(name: str, result: ContenderResult) -> str:
    s, t = result.startup, result.latency
    memory = result.memory
    peak = ("n/a" if memory is None else f"{memory.peak_mb:.0f}"
            + (f" (+{memory.delta_mb:.0f})" if memory.delta_mb is not None else ""))
    cells = [name, _cell(s and s.load_ms, ".1f"), _cell(s and s.plan_ms, ".1f", "-"),
             _cell(s and s.first_run_ms, ".2f")]
    cells += [_cell(t and getattr(t, key), ".3f") for key in
              ("mean_ms", "std_ms", "min_ms", "median_ms", "p90_ms", "p99_ms")]
    cells += [_cell(t and t.throughput_ips, ".1f"),
              _cell(result.streams and result.streams.throughput_ips, ".1f", "-"), peak]
    return "| " + " | ".join(cells) + " |"


def format_report(report: BenchReport, profile_top: int = 15) -> str:
    """The human-readable report: context lines, then one table per configuration."""
    macs, settings = report.macs, report.settings
    timing = (f"interleaved rounds for {settings.duration_s:g} s" if settings.duration_s
              else f"{settings.rounds} interleaved rounds")
    lines = [
        f"model: {report.model}",
        f"machine: {report.machine.describe()}; engine kernels: {report.isa}",
        f"versions: {_versions_text(report.versions)}",
        "inputs: " + ", ".join(s.describe() for s in report.inputs)
        + (f"; generated with seed {settings.seed}" if len(settings.input_files)
           < len(report.inputs) else ""),
        f"MACs per image: dense {macs.dense:,}  sparse {macs.sparse:,}  "
        f"(weight sparsity {macs.weight_sparsity:.1%}, ideal speedup "
        f"{_cell(_ideal_speedup(macs), '.2f')}x)",
        f"timing: {timing} x {settings.calls_per_round} calls per contender, contenders "
        f"alternating, each turn after {TURN_GAP_S * 1000:.0f} ms idle and "
        f">= {TURN_SETTLE_S * 1000:.0f} ms of untimed calls; ms per call of a whole batch",
        "peers: at T threads and batch N, our latency = deepsparse.benchmark -s sync -b N "
        "-ncores T (DeepSparse's default async mode reports a mean), onnxruntime_perf_test "
        "-e cpu -x T, benchmark_app -hint latency -nthreads T -b N",
    ]
    header = ("| contender | load ms | plan ms | first ms | mean | std | min | p50 | p90 | p99 "
              "| img/s | streams img/s | peak MB (+delta) |")
    for row in report.rows:
        shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in row.input_shapes.items())
        lines += ["", f"threads {row.threads}, batch {row.batch} ({shapes})"
                  + (f"; engine: {row.engine_backend}, {row.engine_choice}"
                     if row.engine_backend else ""),
                  header, "|" + "---|" * 13,
                  _contender_line("ORT dense", row.ort), _contender_line("engine", row.engine)]
        if row.engine.latency is None:
            check = row.engine.note
        elif row.outputs_match:
            check = f"outputs match ORT (max |diff| {row.max_abs_diff:.3g})"
        else:
            check = f"MISMATCH max|diff|={row.max_abs_diff:.3g}"
        speedup = _cell(row.speedup, ".2f")
        lines.append(f"speedup (ORT p50 / engine p50): {speedup}x; {check}")
        if row.engine.latency is not None and row.engine.note:
            lines.append(f"note: {row.engine.note}")
        if row.profile is not None:
            lines += ["", row.profile.format(profile_top)]
    return "\n".join(lines)


def _streams_dict(timing: Timing | None) -> dict[str, Any] | None:
    if timing is None:
        return None
    return {"throughput_ips": timing.throughput_ips, "images_per_burst": timing.batch,
            "burst": timing.to_dict()}


# -------------------------------------------------------------------------------------- CLI

def _int_list(text: str) -> list[int]:
    """Parse '1,32' into [1, 32] (argparse type; positive integers only)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from exc
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``featherdeploy bench MODEL.onnx``."""
    from featherdeploy.runtime.cli import add_engine_option_arguments

    parser.description = (
        "Time our engine against ONNX Runtime dense on one ONNX file: load, plan-build and "
        "first-inference times, then mean, std, min, p50/p90/p99 and images/s per contender, "
        "the contenders alternating within every round (none of the peer tools does; it is "
        "our defence against a noisy machine); optionally streams, a per-step profile and "
        "peak memory. The report names the CPU, the kernels' ISA and the versions.")
    parser.epilog = ("Peers: our latency at T threads and batch N = deepsparse.benchmark MODEL "
                     "-s sync -b N -ncores T (DeepSparse defaults to -s async and reports the "
                     "mean: compare our mean) = onnxruntime_perf_test -e cpu -x T MODEL = "
                     "benchmark_app -m MODEL -hint latency -nthreads T -b N; --streams S ~ "
                     "deepsparse.benchmark -s async -nstreams S, onnxruntime_perf_test -c S, "
                     "benchmark_app -hint throughput -nstreams S. See docs/benchmarking.md.")
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument("--batch", type=_int_list, default=None,
                        help="comma-separated batch sizes (default 1,32, or as --shape / "
                             "--input give it)")
    parser.add_argument("--threads", type=_int_list, default=[1, 2],
                        help="comma-separated thread counts (default 1,2)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help="interleaved timed rounds per configuration (default %(default)s)")
    length.add_argument("-t", "--time", dest="duration", type=float, default=0.0,
                        metavar="SECONDS",
                        help="time-based: interleaved rounds for SECONDS per configuration "
                             "(and again for --streams)")
    parser.add_argument("--calls-per-round", type=int, default=DEFAULT_CALLS_PER_ROUND,
                        help="timed calls per contender per round (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                        help="untimed calls per contender first (default %(default)s)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=DxDxD",
                        help="an input's whole shape, for dynamic dims (repeat per input; "
                             "its leading dim is the batch unless --batch is given)")
    parser.add_argument("--input", action="append", default=[], metavar="NAME=FILE",
                        help="feed this .npy array (FILE alone for a one-input model; repeat "
                             "per input); rows are cycled to each --batch size")
    parser.add_argument("--seed", type=int, default=INPUT_SEED,
                        help="seed of the generated inputs (default %(default)s)")
    parser.add_argument("--streams", type=int, default=1,
                        help="also measure throughput with this many concurrent streams "
                             "(Python threads each calling run)")
    parser.add_argument("--profile", action="store_true",
                        help="time each native step of the engine's plan (each alone on one "
                             "thread) and print the most expensive")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory measurement (a child process per "
                             "contender and configuration)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write every statistic as JSON (atomically)")
    add_engine_option_arguments(parser)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """BenchSettings from the parsed flags; :class:`BenchError` for bad specs."""
    from featherdeploy.runtime.cli import engine_option_overrides, parse_shape_specs

    try:
        shapes = parse_shape_specs(args.shape)
        files = _input_files(args.input, args.model)
    except EngineError as exc:
        raise BenchError(str(exc)) from None
    batches: tuple[int | None, ...]
    if args.batch is not None:
        batches = tuple(args.batch)
    else:
        batches = (None,) if shapes or files else (1, 32)
    return BenchSettings(batches=batches, threads=tuple(args.threads), rounds=args.rounds,
                         duration_s=args.duration, warmup=args.warmup,
                         calls_per_round=args.calls_per_round, streams=args.streams,
                         shapes=shapes, input_files=files, seed=args.seed, profile=args.profile,
                         memory=args.memory,
                         engine_overrides={k: v for k, v in engine_option_overrides(args).items()
                                           if v is not None}).validate()


def _input_files(specs: Sequence[str], model: str) -> dict[str, str]:
    """``--input`` specs by input name. Only a bare FILE needs the model's input names here
    (NAME=FILE names are checked against the model when it is loaded for the run)."""
    from featherdeploy.runtime.cli import parse_input_specs

    if not specs:
        return {}
    if all("=" in spec for spec in specs):
        names = [spec.partition("=")[0] for spec in specs]
    else:
        names = [s.name for s in model_inputs(load_onnx_model(model))]
    return parse_input_specs(specs, names)


def run_bench(args: argparse.Namespace) -> int:
    """Run the bench subcommand; returns the exit code (2 for bad input, one line on stderr,
    and no JSON written)."""
    try:
        if args.json is not None:
            check_writable_target(args.json)
        report = bench_model(args.model, settings_from_args(args))
    except (BenchError, InputsError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # an unwritable --json target
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_report(report))
    if args.json is None:
        return 0
    try:
        atomic_write_json(args.json, report.to_dict())
    except OSError as exc:
        print(f"error: cannot write {args.json}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
