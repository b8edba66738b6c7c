"""Acceptance benchmark: our engine and DeepSparse vs ONNX Runtime dense on the same ONNX files.

Builds the benchmark models (``benchmarks/bench_models.py``: ResNet-20x2, CIFAR MobileNetV1,
ResNet-50 conv2_x; random unstructured sparsity on every conv but the stem; BN folded; IR 8,
opset 13) and, in one run, times ORT dense, our engine (``runtime.Engine``) and - when
``--deepsparse-python`` names a Python with deepsparse installed - DeepSparse, for each batch size
and thread count. Contenders alternate round by round (``runtime.bench``) and medians are quoted,
because this VM is noisy (docs/performance.md). DeepSparse runs in its own venv as a subprocess
(``benchmarks/_deepsparse_worker.py``) and times itself, so no IPC cost enters its figures.

Target: our speedup >= 1.25x DeepSparse's at 90/95/98%; at 0% no slower than 1.5x ORT dense.
A contender that is missing or fails says "n/a" with the reason; no number is ever invented.

    python -m benchmarks.engine_vs_peers --deepsparse-python /tmp/ds/bin/python \
        --markdown benchmarks/results/engine_vs_peers.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_models import (
    BENCH_MODELS,
    ONNX_IR_VERSION,
    BenchModelError,
    bench_model_path,
)
from benchmarks.reporting.machine import checkout_commit, cpu_description, cpu_line
from benchmarks.workers import WorkerError, WorkerProcess
from featherdeploy.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from featherdeploy.runtime.bench import (
    TURN_GAP_S,
    TURN_SETTLE_CALLS,
    TURN_SETTLE_S,
    BenchError,
    Sampler,
    Timing,
    compare_interleaved_samplers,
    count_model_macs,
    input_shape_for_batch,
    load_engine,
    load_onnx_model,
    local_sampler,
    make_ort_session,
    ort_reference,
)

__all__ = [
    "PeersConfig",
    "PeerRow",
    "DeepSparseWorker",
    "run_engine_vs_peers",
    "format_markdown",
    "main",
]

DEFAULT_WORK_DIR = Path("/tmp/featherdeploy-bench")
WORKER_SCRIPT = Path(__file__).with_name("_deepsparse_worker.py")
WORKER_TIMEOUT_S = 900.0  # one reply (a compile of the largest model) never takes this long
TARGET_VS_DEEPSPARSE = 1.25  # our speedup / DeepSparse's, at 90/95/98%
TARGET_DENSE_SLOWDOWN = 1.5  # at 0%: engine time <= 1.5 x ORT dense time
OUTPUT_REL_TOL = 1e-3  # max|out - ORT| / max|ORT| for a contender's output to count as correct
ROUND_TARGET_MS = 30.0  # calls per round are chosen so one contender's round takes about this
MAX_CALLS_PER_ROUND = 10
NOISY_P90_RATIO = 2.0  # p90 / median above this marks a row's verdict "(noisy)"


class PeersError(Exception):
    """Bad benchmark options or a peer that cannot be started; the CLI exits with code 2."""


@dataclass(frozen=True)
class PeersConfig:
    """What to measure and where to put it."""

    models: tuple[str, ...] = tuple(BENCH_MODELS)
    sparsities: tuple[float, ...] = (0.0, 0.9, 0.95, 0.98)
    batches: tuple[int, ...] = (1, 32)
    threads: tuple[int, ...] = (1, 2)
    rounds: int = 10
    warmup: int = 3
    work_dir: Path = DEFAULT_WORK_DIR
    deepsparse_python: Path | None = None
    seed: int = 0
    rebuild: bool = False
    per_layer: bool = False  # also time every conv as a one-node model (per-layer hints)


@dataclass(frozen=True)
class PeerRow:
    """One (model, sparsity, threads, batch) measurement of all contenders, side by side."""

    model: str
    sparsity: float
    threads: int
    batch: int
    dense_macs: int
    sparse_macs: int
    ort: Timing
    engine: Timing | None = None
    engine_note: str = ""
    engine_rel_err: float | None = None
    deepsparse: Timing | None = None
    deepsparse_note: str = ""
    deepsparse_rel_err: float | None = None
    calls_per_round: int = 1
    load_average: float = 0.0  # 1-minute load average right after the row was measured

    @property
    def ideal_speedup(self) -> float:
        """1 / (1 - s): the speedup if time fell with the share of nonzero conv weights."""
        return 1.0 / (1.0 - self.sparsity)

    def speedup(self, timing: Timing | None) -> float | None:
        """ORT dense median / the contender's median, or None without numbers."""
        return None if timing is None else self.ort.median_ms / timing.median_ms

    @property
    def ours_vs_deepsparse(self) -> float | None:
        """Our speedup / DeepSparse's (= DeepSparse median / ours)."""
        ours, theirs = self.speedup(self.engine), self.speedup(self.deepsparse)
        return None if ours is None or theirs is None else ours / theirs

    @property
    def fraction_of_ideal(self) -> float | None:
        """Our speedup / (1 / (1 - s))."""
        ours = self.speedup(self.engine)
        return None if ours is None else ours / self.ideal_speedup

    @property
    def target(self) -> str:
        """'met', 'MISSED' or 'n/a' for the acceptance target of this row."""
        if self.engine is None or self.engine_rel_err is None \
                or self.engine_rel_err > OUTPUT_REL_TOL:
            return "n/a" if self.engine is None else "MISSED (wrong output)"
        if self.sparsity == 0.0:
            ok = self.engine.median_ms <= TARGET_DENSE_SLOWDOWN * self.ort.median_ms
            return ("met" if ok else "MISSED") + (" (noisy)" if self.noisy else "")
        ratio = self.ours_vs_deepsparse
        if ratio is None:
            return "n/a"
        verdict = "met" if ratio >= TARGET_VS_DEEPSPARSE else "MISSED"
        return f"{verdict} (noisy)" if self.noisy else verdict

    @property
    def noisy(self) -> bool:
        """True when a contender's p90 exceeds ``NOISY_P90_RATIO`` x its median, or the machine
        was oversubscribed (1-minute load above the CPU count) while this row was measured:
        the ratio then says more about the other tenants than about the engines."""
        timings = [t for t in (self.ort, self.engine, self.deepsparse) if t is not None]
        spread = any(t.p90_ms > NOISY_P90_RATIO * t.median_ms for t in timings)
        return spread or self.load_average > (os.cpu_count() or 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for the JSON report."""
        def timing(t: Timing | None) -> dict[str, Any] | None:
            return None if t is None else t.to_dict()
        return {
            "model": self.model, "sparsity": self.sparsity, "threads": self.threads,
            "batch": self.batch, "dense_macs": self.dense_macs, "sparse_macs": self.sparse_macs,
            "ort": timing(self.ort), "engine": timing(self.engine),
            "engine_note": self.engine_note, "engine_rel_err": self.engine_rel_err,
            "deepsparse": timing(self.deepsparse), "deepsparse_note": self.deepsparse_note,
            "deepsparse_rel_err": self.deepsparse_rel_err,
            "engine_speedup": self.speedup(self.engine),
            "deepsparse_speedup": self.speedup(self.deepsparse),
            "ours_vs_deepsparse": self.ours_vs_deepsparse, "ideal_speedup": self.ideal_speedup,
            "fraction_of_ideal": self.fraction_of_ideal, "target": self.target,
            "calls_per_round": self.calls_per_round, "load_average": self.load_average,
            "noisy": self.noisy,
        }


# --------------------------------------------------------------------------------------------
# DeepSparse in its own venv
# --------------------------------------------------------------------------------------------

class DeepSparseWorker(WorkerProcess):
    """A long-lived ``_deepsparse_worker.py`` subprocess speaking JSON lines (see its docstring);
    its failures are :class:`PeersError`."""

    def __init__(self, python: Path, log_path: Path) -> None:
        try:
            super().__init__(python, WORKER_SCRIPT, log_path, label="DeepSparse",
                             env=dict(os.environ, NM_DISABLE_ANALYTICS="1"),
                             timeout_s=WORKER_TIMEOUT_S)
        except WorkerError as exc:
            raise PeersError(f"--deepsparse-python: {exc}") from exc

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply; raises :class:`PeersError` if the worker
        died, timed out or answered with an error."""
        try:
            return super().request(message)
        except WorkerError as exc:
            raise PeersError(str(exc)) from exc


# --------------------------------------------------------------------------------------------
# Measuring one configuration
# --------------------------------------------------------------------------------------------

def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|actual - expected| / max|expected| (inf on a shape mismatch)."""
    actual = np.asarray(actual, dtype=np.float32)
    if actual.shape != expected.shape:
        return float("inf")
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    return float(np.max(np.abs(actual - expected))) / scale


@dataclass
class _Contenders:
    """Samplers, errors and notes gathered for one (threads, batch) configuration."""

    samplers: dict[str, Sampler] = field(default_factory=dict)
    rel_err: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _add_engine(contenders: _Contenders, engine: Any, engine_note: str, x: np.ndarray,
                expected: np.ndarray) -> None:
    """Check the engine's output on ``x`` and add it as a contender, or note why not."""
    if engine is None:
        contenders.notes["engine"] = engine_note
        return
    try:
        # The first call of a shape times the engine's options (threads, batch layout): let the
        # reference run's spinning ORT threads stop first, or they would skew that choice.
        time.sleep(TURN_GAP_S)
        contenders.rel_err["engine"] = _relative_error(engine.run(x), expected)
    except Exception as exc:  # an engine failure is reported in the table, not raised
        contenders.notes["engine"] = f"engine failed to run ({type(exc).__name__}: {exc})"
        return
    contenders.samplers["engine"] = local_sampler(lambda: engine.run(x))


def _add_deepsparse(contenders: _Contenders, worker: DeepSparseWorker | None, model: Path,
                    threads: int, x: np.ndarray, expected: np.ndarray, work_dir: Path) -> None:
    """Compile DeepSparse for this configuration, check its output, add it as a contender."""
    if worker is None:
        contenders.notes["deepsparse"] = "DeepSparse not requested (--deepsparse-python)"
        return
    x_path, y_path = work_dir / "ds_input.npy", work_dir / "ds_output.npy"
    np.save(x_path, x)
    try:
        worker.request({"op": "compile", "model": str(model), "input": str(x_path),
                        "threads": threads})
        worker.request({"op": "output", "path": str(y_path)})
    except PeersError as exc:
        contenders.notes["deepsparse"] = str(exc)
        return
    contenders.rel_err["deepsparse"] = _relative_error(np.load(y_path), expected)
    contenders.samplers["deepsparse"] = worker.sampler()


def _calls_per_round(ort_ms: float) -> int:
    """Calls per round so that a round of ORT takes about ``ROUND_TARGET_MS``."""
    return max(1, min(MAX_CALLS_PER_ROUND, int(ROUND_TARGET_MS / max(ort_ms, 1e-3))))


@dataclass(frozen=True)
class _ModelFile:
    """One built benchmark model: where it is, its ONNX proto and its MACs per image."""

    name: str
    sparsity: float
    path: Path
    proto: Any
    dense_macs: int
    sparse_macs: int


def _interleave(contenders: _Contenders, batch: int, calls: int,
                config: PeersConfig) -> dict[str, Timing]:
    """The interleaved comparison; an idle gap and settling calls open each turn."""
    return compare_interleaved_samplers(contenders.samplers, batch=batch, rounds=config.rounds,
                                        warmup=config.warmup, calls_per_round=calls,
                                        settle_calls=TURN_SETTLE_CALLS, gap_s=TURN_GAP_S,
                                        settle_s=TURN_SETTLE_S)


def _measure(model: _ModelFile, threads: int, batch: int, session: Any,
             engine: tuple[Any, str], worker: DeepSparseWorker | None,
             config: PeersConfig) -> PeerRow:
    """Time all available contenders on one (threads, batch), interleaved."""
    input_name, shape = input_shape_for_batch(model.proto, batch)
    x = np.random.default_rng(config.seed).standard_normal(shape, dtype=np.float32)
    ort_sampler = local_sampler(lambda: session.run(None, {input_name: x}))
    expected = ort_reference(session, input_name, x)
    contenders = _Contenders(samplers={"ort": ort_sampler})
    _add_engine(contenders, engine[0], engine[1], x, expected)
    _add_deepsparse(contenders, worker, model.path, threads, x, expected, config.work_dir)
    calls = _calls_per_round(min(ort_sampler(2)))
    try:
        timings = _interleave(contenders, batch, calls, config)
    except PeersError as exc:  # DeepSparse died mid-run: measure the others, say why
        contenders.samplers.pop("deepsparse")
        contenders.notes["deepsparse"] = str(exc)
        timings = _interleave(contenders, batch, calls, config)
    return PeerRow(
        model=model.name, sparsity=model.sparsity, threads=threads, batch=batch,
        dense_macs=model.dense_macs, sparse_macs=model.sparse_macs, ort=timings["ort"],
        engine=timings.get("engine"), engine_note=contenders.notes.get("engine", ""),
        engine_rel_err=contenders.rel_err.get("engine"),
        deepsparse=timings.get("deepsparse"),
        deepsparse_note=contenders.notes.get("deepsparse", ""),
        deepsparse_rel_err=contenders.rel_err.get("deepsparse"), calls_per_round=calls,
        load_average=os.getloadavg()[0])


def _build_model_file(name: str, sparsity: float, config: PeersConfig) -> _ModelFile:
    """Build (or reuse from the work dir) one benchmark model and count its MACs."""
    path = bench_model_path(name, sparsity, config.work_dir, seed=config.seed,
                            rebuild=config.rebuild)
    proto = load_onnx_model(path)
    counted = count_model_macs(proto)
    return _ModelFile(name, sparsity, path, proto, counted.dense, counted.sparse)


def _layer_label(node: Any) -> str:
    """Short readable name of a Conv node ('/layer1/layer1.0/conv1/Conv' -> 'layer1.0/conv1')."""
    parts = [p for p in (node.name or node.output[0]).split("/") if p and p != "Conv"]
    return "/".join(parts[-2:]) if parts else node.output[0]


def _layer_model_files(model: _ModelFile, config: PeersConfig) -> list[_ModelFile]:
    """Every Conv of ``model`` as a one-node ONNX model of its own (cached in the work dir), for
    per-layer hints: which layers the engine loses on. Fused epilogues (ReLU, residual add) are
    not part of these, so the per-layer sum differs from the whole model."""
    import onnx

    layer_dir = config.work_dir / "layers" / model.path.stem
    extractor = None
    files = []
    convs = [node for node in model.proto.graph.node if node.op_type == "Conv"]
    for index, node in enumerate(convs):
        label = _layer_label(node)
        path = layer_dir / f"{index:02d}-{label.replace('/', '_')}.onnx"
        if config.rebuild or not path.is_file():
            extractor = extractor or onnx.utils.Extractor(
                onnx.shape_inference.infer_shapes(model.proto))  # it needs value_info
            layer = extractor.extract_model([node.input[0]], [node.output[0]])
            layer.ir_version = ONNX_IR_VERSION
            atomic_write_bytes(path, layer.SerializeToString())
        proto = load_onnx_model(path)
        counted = count_model_macs(proto)
        files.append(_ModelFile(f"{model.name} {index:02d} {label}", counted.weight_sparsity,
                                path, proto, counted.dense, counted.sparse))
    return files


def _measure_file(model: _ModelFile, config: PeersConfig,
                  worker: DeepSparseWorker | None) -> list[PeerRow]:
    """All (threads, batch) rows of one model file."""
    rows = []
    for threads in config.threads:
        session = make_ort_session(model.path, threads)
        engine = load_engine(model.path, threads)
        for batch in config.batches:
            row = _measure(model, threads, batch, session, engine, worker, config)
            print(_progress_line(row), file=sys.stderr, flush=True)
            rows.append(row)
        del engine, session  # free native threads before the next thread count
    return rows


def _model_files(config: PeersConfig) -> list[_ModelFile]:
    """The whole models of ``config`` and, with ``per_layer``, each of their convs after them."""
    files = []
    for name in config.models:
        for sparsity in config.sparsities:
            whole = _build_model_file(name, sparsity, config)
            files.append(whole)
            if config.per_layer:
                files.extend(_layer_model_files(whole, config))
    return files


def run_engine_vs_peers(config: PeersConfig) -> list[PeerRow]:
    """Measure every (model, sparsity, threads, batch) of ``config``; one row each."""
    for name in config.models:
        if name not in BENCH_MODELS:
            raise PeersError(f"unknown model {name!r}; valid: {', '.join(BENCH_MODELS)}")
    worker = None
    if config.deepsparse_python is not None:
        worker = DeepSparseWorker(config.deepsparse_python,
                                  config.work_dir / "deepsparse_worker.log")
    try:
        return [row for model in _model_files(config)
                for row in _measure_file(model, config, worker)]
    finally:
        if worker is not None:
            worker.close()


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """A number with a format spec, or 'n/a'."""
    return "n/a" if value is None else format(value, spec) + suffix


def _progress_line(row: PeerRow) -> str:
    """One-line summary printed while the benchmark runs."""
    engine_ms = _fmt(row.engine and row.engine.median_ms, ".3f")
    deepsparse_ms = _fmt(row.deepsparse and row.deepsparse.median_ms, ".3f")
    return (f"{row.model} s={row.sparsity:.0%} T={row.threads} B={row.batch}: "
            f"ORT {row.ort.median_ms:.3f} ms, engine {engine_ms} ms, DeepSparse {deepsparse_ms} ms")


MARKDOWN_HEADER = (
    "| model | threads | batch | sparsity | ORT ms | engine ms | DeepSparse ms | engine speedup "
    "| DeepSparse speedup | ours / DeepSparse | fraction of ideal | target |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def format_markdown(rows: Sequence[PeerRow], *, context: str = "", machine: str = "") -> str:
    """README-ready table (after a ``machine`` line: CPU and commit), then the measurement
    ``context`` and the reasons for every 'n/a'."""
    lines = [machine, ""] if machine else []
    lines.append(MARKDOWN_HEADER)
    for r in rows:
        lines.append(
            f"| {r.model} | {r.threads} | {r.batch} | {r.sparsity:.0%} | {r.ort.median_ms:.3f} "
            f"| {_fmt(r.engine and r.engine.median_ms, '.3f')} "
            f"| {_fmt(r.deepsparse and r.deepsparse.median_ms, '.3f')} "
            f"| {_fmt(r.speedup(r.engine), '.2f', 'x')} "
            f"| {_fmt(r.speedup(r.deepsparse), '.2f', 'x')} "
            f"| {_fmt(r.ours_vs_deepsparse, '.2f')} | {_fmt(r.fraction_of_ideal, '.2f')} "
            f"| {r.target} |")
    notes = sorted({note for r in rows for note in (r.engine_note, r.deepsparse_note) if note})
    wrong = [f"{r.model} {r.sparsity:.0%} T={r.threads} B={r.batch}: {who} relative error "
             f"{err:.2g}" for r in rows for who, err in
             (("engine", r.engine_rel_err), ("DeepSparse", r.deepsparse_rel_err))
             if err is not None and err > OUTPUT_REL_TOL]
    if context or notes or wrong:
        lines.append("")
    if context:
        lines.extend([context, ""])
    lines.extend(f"- n/a: {note}" for note in notes)
    lines.extend(f"- output mismatch vs ORT: {w}" for w in wrong)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _csv(kind: type, text: str) -> tuple[Any, ...]:
    """Parse a comma-separated list (argparse helper)."""
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad list {text!r}: {exc}") from exc


def _sparsities(text: str) -> tuple[float, ...]:
    """'0,90,95,98' (percent) -> (0.0, 0.9, 0.95, 0.98)."""
    values = tuple(p / 100.0 for p in _csv(float, text))
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"sparsities are percents in [0, 100), got {text!r}")
    return values


def _positive_ints(text: str) -> tuple[int, ...]:
    """'1,32' -> (1, 32), positive only."""
    values = _csv(int, text)
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command line of this benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=lambda t: _csv(str, t), default=tuple(BENCH_MODELS),
                        help=f"comma-separated, from {', '.join(BENCH_MODELS)}")
    parser.add_argument("--sparsities", type=_sparsities, default=(0.0, 0.9, 0.95, 0.98),
                        help="percents (default 0,90,95,98)")
    parser.add_argument("--batches", type=_positive_ints, default=(1, 32))
    parser.add_argument("--threads", type=_positive_ints, default=(1, 2))
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--quick", action="store_true", help="few runs (3 rounds, 1 warm-up)")
    parser.add_argument("--deepsparse-python", type=Path, default=None,
                        help="python of a venv with deepsparse 1.8 (e.g. /tmp/ds/bin/python)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help="cache of the built ONNX models (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached models")
    parser.add_argument("--per-layer", action="store_true",
                        help="also time every conv alone (one-node models): per-layer hints")
    parser.add_argument("--json", type=Path, default=None, help="write all results as JSON")
    parser.add_argument("--markdown", type=Path, default=None, help="write the markdown table")
    return parser


def config_from_args(args: argparse.Namespace) -> PeersConfig:
    """Resolve the CLI flags into a :class:`PeersConfig`."""
    if args.rounds < 1:
        raise PeersError("--rounds must be >= 1")
    return PeersConfig(models=tuple(args.models), sparsities=args.sparsities,
                       batches=args.batches, threads=args.threads,
                       rounds=3 if args.quick else args.rounds, warmup=1 if args.quick else 3,
                       work_dir=args.work_dir, deepsparse_python=args.deepsparse_python,
                       seed=args.seed, rebuild=args.rebuild, per_layer=args.per_layer)


def _context_line(config: PeersConfig, started: datetime, load_before: float) -> str:
    """When and under what machine load the table was measured (this VM is shared)."""
    return (f"Measured {started:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs, 1-minute load "
            f"average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
            f"medians over {config.rounds} interleaved rounds (ORT dense, engine, DeepSparse "
            f"alternating; each turn opens with {1000 * TURN_GAP_S:g} ms idle, so no "
            f"contender's spinning threads run into the next one's, then untimed calls for "
            f">= {1000 * TURN_SETTLE_S:g} ms and >= {TURN_SETTLE_CALLS} calls to bring idle "
            f"cores back to speed); speedups are vs ORT dense on the same file; "
            f"ideal = 1/(1-s).")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run the benchmark, print and write the tables. Exit 2 on bad input."""
    args = build_parser().parse_args(argv)
    started, load_before = datetime.now(timezone.utc), os.getloadavg()[0]
    try:
        config = config_from_args(args)
        rows = run_engine_vs_peers(config)
    except (PeersError, BenchError, BenchModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cpu, commit = cpu_description(), checkout_commit()
    table = format_markdown(rows, context=_context_line(config, started, load_before),
                            machine=f"{cpu_line(cpu)}; engine commit {commit}")
    print(table, end="")
    try:
        if args.markdown is not None:
            atomic_write_text(args.markdown, table)
        if args.json is not None:
            atomic_write_json(args.json, {"config": {k: str(v) for k, v in vars(config).items()},
                                          "machine": cpu, "commit": commit,
                                          "rows": [row.to_dict() for row in rows]})
    except OSError as exc:
        print(f"error: cannot write the report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
