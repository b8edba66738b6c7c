"""`make bench`: latency, throughput, MACs and deployed accuracy of one compiled artifact.

For `artifacts/NAME/` (written by `featherdeploy compile`) this measures, side by side in one run
(docs/performance.md: only ratios measured together mean something on a shared VM):

- latency at batch 1 and throughput at batch 32, with 1 and 2 threads, of three contenders:
  ONNX Runtime on the dense `model.onnx`, ONNX Runtime on `model.sparse.onnx` (sparse
  initializers; ORT densifies them at load, so this shows the disk-only saving), and our engine;
  all timed with the shared harness `runtime.bench.compare_interleaved`;
- dense and sparse MACs per image (`runtime.bench.count_model_macs`, the one MAC formula);
- the top-1 accuracy of the deployed model as run by our engine on the full test set, and the
  number of images on which its top-1 differs from ONNX Runtime's (must be zero).

Writes `bench.json`, `bench.md` and `bench_latency.png` into the artifact directory (atomically)
and prints the table. Exit codes: 0 ok, 1 the engine is missing or disagrees with ORT,
2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.machine import MachineInfo, machine_info
from benchmarks.reporting.plots import PlotSpec, grouped_bar_png
from benchmarks.reporting.tables import (
    Column,
    fmt_int,
    fmt_macs,
    fmt_ms,
    fmt_pct,
    fmt_speedup,
    markdown_table,
)
from featherdeploy.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = [
    "BenchSettings",
    "Contender",
    "CONTENDERS",
    "AccuracyResult",
    "TimingRow",
    "BenchResult",
    "BenchRunError",
    "ArtifactInfo",
    "read_artifact_info",
    "measure_accuracy",
    "measure_timings",
    "bench_artifact",
    "bench_markdown",
    "latency_chart_png",
    "write_bench_outputs",
    "find_timing",
    "main",
]

BENCH_FORMAT = "featherdeploy-bench"
BENCH_VERSION = 1
JSON_NAME = "bench.json"
MARKDOWN_NAME = "bench.md"
CHART_NAME = "bench_latency.png"
DENSE_ONNX = "model.onnx"
SPARSE_ONNX = "model.sparse.onnx"
REPORT_JSON = "report.json"


class BenchRunError(RuntimeError):
    """The benchmark ran but its result is not acceptable (engine missing, top-1 mismatch)."""


@dataclass(frozen=True)
class Contender:
    """A timed contender: key used in JSON, human label, which ONNX file it runs."""

    key: str
    label: str
    model_file: str


CONTENDERS = (
    Contender("ort_dense", "ORT dense (model.onnx)", DENSE_ONNX),
    Contender("ort_sparse", "ORT sparse-init (model.sparse.onnx)", SPARSE_ONNX),
    Contender("engine", "featherdeploy engine", DENSE_ONNX),
)
BASELINE = "ort_dense"


@dataclass(frozen=True)
class BenchSettings:
    """What to measure. Defaults are the `make bench` matrix (a few minutes on 2 cores)."""

    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 32)
    rounds: int = 40
    warmup: int = 3
    contenders: tuple[str, ...] = tuple(c.key for c in CONTENDERS)
    accuracy_batch: int = 250
    limit: int | None = None  # test images for the accuracy pass; None = the full test set

    def validate(self) -> BenchSettings:
        """Raise BenchInputError for impossible values; return self."""
        known = {c.key for c in CONTENDERS}
        if not self.threads or min(self.threads) < 1:
            raise BenchInputError(f"threads must be positive integers, got {self.threads}")
        if not self.batches or min(self.batches) < 1:
            raise BenchInputError(f"batches must be positive integers, got {self.batches}")
        if self.rounds < 1 or self.warmup < 0 or self.accuracy_batch < 1:
            raise BenchInputError("need rounds >= 1, warmup >= 0, accuracy batch >= 1")
        if self.limit is not None and self.limit < 1:
            raise BenchInputError(f"limit must be >= 1, got {self.limit}")
        if BASELINE not in self.contenders or "engine" not in self.contenders:
            raise BenchInputError(f"contenders must include {BASELINE!r} and 'engine'")
        unknown = sorted(set(self.contenders) - known)
        if unknown:
            raise BenchInputError(f"unknown contenders {unknown}; known: {sorted(known)}")
        return self


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 of the engine and of ORT dense over the same images, and where they disagree."""

    images: int
    engine_correct: int
    ort_correct: int
    disagreements: int
    disagreeing_indices: tuple[int, ...] = ()  # the first few, for debugging

    @property
    def engine_top1(self) -> float:
        """Fraction of images the engine classifies correctly."""
        return self.engine_correct / self.images

    @property
    def ort_top1(self) -> float:
        """Fraction of images ORT dense classifies correctly."""
        return self.ort_correct / self.images

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the derived top-1 fractions."""
        data = asdict(self)
        data["disagreeing_indices"] = list(self.disagreeing_indices)
        data.update(engine_top1=self.engine_top1, ort_top1=self.ort_top1,
                    agree=self.disagreements == 0)
        return data


@dataclass(frozen=True)
class TimingRow:
    """One contender at one (threads, batch): the harness's Timing fields plus the speedup."""

    contender: str
    threads: int
    batch: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    throughput_ips: float
    speedup_vs_ort_dense: float  # ORT dense median / this median, same (threads, batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class ArtifactInfo:
    """What the bench needs to know about a compiled artifact directory."""

    directory: Path
    dataset: str | None
    data_dir: str | None
    sparsity: float | None  # achieved weight sparsity from the compile report, if stated


@dataclass
class BenchResult:
    """Everything `bench.json` holds."""

    artifact: str
    machine: MachineInfo
    dense_macs: int
    sparse_macs: int
    weight_sparsity: float
    accuracy: AccuracyResult
    timings: list[TimingRow]
    settings: BenchSettings
    dataset: str | None = None
    prunable_sparsity: float | None = None  # from the compile report, when it states it
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The bench.json document."""
        return {
            "format": BENCH_FORMAT, "version": BENCH_VERSION, "artifact": self.artifact,
            "machine": self.machine.to_dict(), "dataset": self.dataset,
            "macs": {"dense": self.dense_macs, "sparse": self.sparse_macs,
                     "unit": "MACs per image (1 multiply-add = 1 MAC)"},
            "weight_sparsity": self.weight_sparsity,
            "prunable_sparsity": self.prunable_sparsity,
            "accuracy": self.accuracy.to_dict(),
            "timings": [row.to_dict() for row in self.timings],
            "settings": {**asdict(self.settings),
                         "contender_labels": {c.key: c.label for c in CONTENDERS}},
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------
# Reading the artifact
# ------------------------------------------------------------------------------------------

def _first_key(mapping: Any, paths: Sequence[Sequence[str]]) -> Any:
    """The value at the first key path present in a nested dict (None if none is)."""
    for path in paths:
        node = mapping
        for key in path:
            if not isinstance(node, dict) or key not in node:
                node = None
                break
            node = node[key]
        if node is not None:
            return node
    return None


def read_artifact_info(directory: str | Path) -> ArtifactInfo:
    """Check the artifact directory and read dataset / sparsity from its compile report."""
    root = Path(directory)
    if not root.is_dir():
        raise BenchInputError(f"artifact directory not found: {root} (run `make compile` first)")
    for name in (DENSE_ONNX, SPARSE_ONNX):
        if not (root / name).is_file():
            raise BenchInputError(f"{root / name} is missing; is {root} a compile output?")
    report: Any = {}
    if (root / REPORT_JSON).is_file():
        try:
            report = json.loads((root / REPORT_JSON).read_text(encoding="utf-8"))
        except ValueError as error:
            raise BenchInputError(f"{root / REPORT_JSON} is not valid JSON: {error}") from error
    # Keys of compile/report.py: the run's TrainConfig under "config", totals under "totals".
    dataset = _first_key(report, [("config", "dataset"), ("source", "dataset")])
    data_dir = _first_key(report, [("config", "data_dir")])
    sparsity = _first_key(report, [("totals", "prunable_sparsity")])
    return ArtifactInfo(root, dataset, data_dir,
                        float(sparsity) if isinstance(sparsity, int | float) else None)


# ------------------------------------------------------------------------------------------
# Measuring
# ------------------------------------------------------------------------------------------

RunFn = Callable[[np.ndarray], np.ndarray]


def _top1(logits: np.ndarray) -> np.ndarray:
    # (N, classes) -> (N,); argmax takes the first of tied maxima in both runs alike.
    return np.asarray(logits).reshape(len(logits), -1).argmax(axis=1)


def measure_accuracy(engine_run: RunFn, ort_run: RunFn, images: np.ndarray, labels: np.ndarray,
                     *, batch: int = 250, keep_indices: int = 20) -> AccuracyResult:
    """Top-1 of both runners over all images, and the images where their predictions differ."""
    if len(images) != len(labels) or len(images) == 0:
        raise BenchInputError(f"need as many labels as images (> 0), got {len(images)} images "
                              f"and {len(labels)} labels")
    engine_correct = ort_correct = 0
    differing: list[int] = []
    for start in range(0, len(images), batch):
        x = np.ascontiguousarray(images[start:start + batch], dtype=np.float32)
        y = labels[start:start + batch]
        engine_pred, ort_pred = _top1(engine_run(x)), _top1(ort_run(x))
        engine_correct += int((engine_pred == y).sum())
        ort_correct += int((ort_pred == y).sum())
        differing.extend(int(i) + start for i in np.flatnonzero(engine_pred != ort_pred))
    return AccuracyResult(images=len(images), engine_correct=engine_correct,
                          ort_correct=ort_correct, disagreements=len(differing),
                          disagreeing_indices=tuple(differing[:keep_indices]))


def _batch_of(images: np.ndarray, batch: int) -> np.ndarray:
    """The first `batch` test images (tiled if there are fewer), contiguous float32."""
    reps = -(-batch // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:batch], dtype=np.float32)


def _speedup_rows(timings: dict[str, Any], threads: int, batch: int) -> list[TimingRow]:
    """Timing objects of one (threads, batch) -> rows with the speedup vs ORT dense."""
    base = timings[BASELINE].median_ms
    return [TimingRow(contender=key, threads=threads, batch=batch, median_ms=t.median_ms,
                      p90_ms=t.p90_ms, mean_ms=t.mean_ms, min_ms=t.min_ms, runs=t.runs,
                      throughput_ips=t.throughput_ips, speedup_vs_ort_dense=base / t.median_ms)
            for key, t in timings.items()]


def measure_timings(runner_factories: dict[str, Callable[[int], RunFn]], images: np.ndarray,
                    settings: BenchSettings) -> list[TimingRow]:
    """Time every contender at every (threads, batch), interleaved, with the shared harness.

    `runner_factories[key](threads)` builds a runner for that thread count (sessions are built
    once per thread count and reused for every batch size).
    """
    from featherdeploy.runtime.bench import (
        TURN_GAP_S,
        TURN_SETTLE_CALLS,
        TURN_SETTLE_S,
        compare_interleaved,
    )

    rows: list[TimingRow] = []
    for threads in settings.threads:
        runners = {key: factory(threads) for key, factory in runner_factories.items()}
        for batch in settings.batches:
            x = _batch_of(images, batch)
            calls = {key: (lambda run=run, x=x: run(x)) for key, run in runners.items()}
            timings = compare_interleaved(calls, batch=batch, rounds=settings.rounds,
                                          warmup=settings.warmup, gap_s=TURN_GAP_S,
                                          settle_calls=TURN_SETTLE_CALLS,
                                          settle_s=TURN_SETTLE_S)
            rows.extend(_speedup_rows(timings, threads, batch))
    return rows


def _ort_factory(path: Path) -> Callable[[int], RunFn]:
    def build(threads: int) -> RunFn:
        from featherdeploy.runtime.bench import make_ort_session

        session = make_ort_session(path, threads)
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})[0]
    return build


def _engine_factory(path: Path) -> Callable[[int], RunFn]:
    def build(threads: int) -> RunFn:
        from featherdeploy.runtime.bench import load_engine

        engine, reason = load_engine(path, threads)
        if engine is None:
            raise BenchRunError(reason)
        return engine.run
    return build


def _runner_factories(directory: Path, settings: BenchSettings) -> dict[str, Callable]:
    by_key = {c.key: c for c in CONTENDERS}
    factories = {}
    for key in settings.contenders:
        path = directory / by_key[key].model_file
        factories[key] = _engine_factory(path) if key == "engine" else _ort_factory(path)
    return factories


def bench_artifact(directory: str | Path, images: np.ndarray, labels: np.ndarray,
                   settings: BenchSettings = BenchSettings()) -> BenchResult:
    """Measure one artifact directory on the given test images (see the module docstring)."""
    from featherdeploy.runtime.bench import BenchError, count_model_macs, load_onnx_model

    settings.validate()
    info = read_artifact_info(directory)
    try:
        macs = count_model_macs(load_onnx_model(info.directory / DENSE_ONNX))
        factories = _runner_factories(info.directory, settings)
        max_threads = max(settings.threads)
        accuracy = measure_accuracy(factories["engine"](max_threads),
                                    factories[BASELINE](max_threads), images, labels,
                                    batch=settings.accuracy_batch)
        timings = measure_timings(factories, images, settings)
    except BenchError as error:
        raise BenchInputError(str(error)) from error
    return BenchResult(artifact=str(info.directory), machine=machine_info(),
                       dense_macs=macs.dense, sparse_macs=macs.sparse,
                       weight_sparsity=macs.weight_sparsity, accuracy=accuracy, timings=timings,
                       settings=settings, dataset=info.dataset,
                       prunable_sparsity=info.sparsity)


# ------------------------------------------------------------------------------------------
# Reporting
# ------------------------------------------------------------------------------------------

def find_timing(rows: Sequence[TimingRow], contender: str, threads: int,
                batch: int) -> TimingRow | None:
    """The row of one contender at one (threads, batch), or None."""
    for row in rows:
        if (row.contender, row.threads, row.batch) == (contender, threads, batch):
            return row
    return None


_LABELS = {c.key: c.label for c in CONTENDERS}
TIMING_COLUMNS = (
    Column("threads", "threads"),
    Column("batch", "batch"),
    Column("contender", "engine", lambda key: _LABELS.get(key, key)),
    Column("median_ms", "median latency (ms/batch)", fmt_ms),
    Column("p90_ms", "p90 latency (ms/batch)", fmt_ms),
    Column("throughput_ips", "throughput (images/s)", lambda v: f"{v:.1f}"),
    Column("speedup_vs_ort_dense", "speedup vs ORT dense", fmt_speedup),
)


def bench_markdown(result: BenchResult) -> str:
    """bench.md: machine, MACs, accuracy check and the timing table."""
    acc = result.accuracy
    verdict = ("identical top-1 on every image" if acc.disagreements == 0 else
               f"top-1 DIFFERS on {acc.disagreements} images (first: "
               f"{list(acc.disagreeing_indices)})")
    lines = [
        f"# Benchmark: {result.artifact}",
        "",
        f"- Machine: {result.machine.describe()}",
        f"- Dense MACs per image: {fmt_int(result.dense_macs)} ({fmt_macs(result.dense_macs)})",
        f"- Sparse MACs per image: {fmt_int(result.sparse_macs)} ({fmt_macs(result.sparse_macs)}),"
        f" weight sparsity {fmt_pct(result.weight_sparsity)} (Conv/Gemm weights; MACs, not FLOPs)",
        f"- Test top-1 as run by our engine: {fmt_pct(acc.engine_top1)} on {acc.images} images"
        f" ({result.dataset or 'dataset not stated'}); ORT dense: {fmt_pct(acc.ort_top1)};"
        f" {verdict}",
        f"- Timing: medians of {result.settings.rounds} interleaved rounds per contender"
        " (runtime.bench.compare_interleaved; each turn opens with an idle gap, so no"
        " contender's spinning threads run into the next one's, and untimed settling calls);"
        " ORT with intra-op threads = threads.",
        "",
        markdown_table([row.to_dict() for row in result.timings], TIMING_COLUMNS),
    ]
    lines.extend(f"- Note: {note}" for note in result.notes)
    return "\n".join(lines) + "\n"


def latency_chart_png(result: BenchResult) -> bytes:
    """Bars of median latency per image, one group per (threads, batch), one bar per engine."""
    groups = [(t, b) for t in result.settings.threads for b in result.settings.batches]
    bars: dict[str, list[float]] = {}
    for key in result.settings.contenders:
        values = []
        for threads, batch in groups:
            row = find_timing(result.timings, key, threads, batch)
            values.append(float("nan") if row is None else row.median_ms / batch)
        bars[_LABELS[key]] = values
    spec = PlotSpec(title=f"Latency by engine - {Path(result.artifact).name}",
                    xlabel="threads, batch size",
                    ylabel="median latency per image (ms)")
    return grouped_bar_png([f"{t} thr, B={b}" for t, b in groups], bars, spec)


def write_bench_outputs(result: BenchResult, out_dir: str | Path) -> list[Path]:
    """Write bench.json, bench.md and the latency chart atomically; returns their paths."""
    out = Path(out_dir)
    paths = [out / JSON_NAME, out / MARKDOWN_NAME, out / CHART_NAME]
    # Chart and table first, bench.json last: bench.json is the sweep's "bench done" marker.
    atomic_write_bytes(paths[2], latency_chart_png(result))
    atomic_write_text(paths[1], bench_markdown(result))
    atomic_write_json(paths[0], result.to_dict())
    return paths


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from error


def build_parser() -> argparse.ArgumentParser:
    """argparse for `python -m benchmarks.bench ARTIFACT_DIR`."""
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path, help="compile output directory, artifacts/NAME")
    parser.add_argument("--threads", type=_int_tuple, default=defaults.threads,
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--batches", type=_int_tuple, default=defaults.batches,
                        help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds)
    parser.add_argument("--warmup", type=int, default=defaults.warmup)
    parser.add_argument("--no-ort-sparse", action="store_true",
                        help="skip timing ORT on model.sparse.onnx")
    parser.add_argument("--limit", type=int, default=None,
                        help="accuracy on the first N test images only (default: all)")
    parser.add_argument("--dataset", default=None, help="override the dataset of the report")
    parser.add_argument("--data-dir", default=None, help="override the dataset directory")
    return parser


def _settings_from_args(args: argparse.Namespace) -> BenchSettings:
    contenders = tuple(c.key for c in CONTENDERS
                       if not (args.no_ort_sparse and c.key == "ort_sparse"))
    return BenchSettings(threads=args.threads, batches=args.batches, rounds=args.rounds,
                         warmup=args.warmup, contenders=contenders, limit=args.limit).validate()


def load_test_set(info: ArtifactInfo, dataset: str | None, data_dir: str | None,
                  limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Test images and labels of the artifact's dataset (torch-free loader of train/)."""
    from featherdeploy.train.data_arrays import DatasetError, load_test_arrays

    name = dataset or info.dataset
    if name is None:
        raise BenchInputError(f"{info.directory / REPORT_JSON} does not name the dataset; "
                              "pass --dataset (and --data-dir)")
    try:
        return load_test_arrays(name, data_dir or info.data_dir, limit=limit)
    except (DatasetError, ValueError) as error:
        raise BenchInputError(f"cannot load the {name} test set: {error}") from error


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings_from_args(args)
        info = read_artifact_info(args.artifact)
        images, labels = load_test_set(info, args.dataset, args.data_dir, settings.limit)
        result = bench_artifact(args.artifact, images, labels, settings)
    except BenchInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BenchRunError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.dataset or args.data_dir:
        result.dataset = args.dataset or result.dataset
    paths = write_bench_outputs(result, args.artifact)
    print(bench_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    if result.accuracy.disagreements:
        print(f"error: engine top-1 differs from ORT on {result.accuracy.disagreements} images",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
