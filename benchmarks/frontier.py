"""`make frontier`: accuracy / MACs / latency frontier over target sparsities x backbones.

Each point (backbone, target sparsity) is trained, compiled and benchmarked by the project's CLIs
run as subprocesses (`benchmarks.reporting.pipeline`), under the resumable sweep state machine
(`benchmarks.reporting.sweep`): kill it and rerun, it continues where it stopped; a failing point
is recorded and listed in the report, the others still run. The dense point (target 0) does not
depend on the backbone, so it is trained once and shared by every backbone's line.

Outputs in `reports/frontier/` (or the sweep's `out_dir`): `frontier.csv`, `frontier.md`,
`top1_vs_macs.png`, `top1_vs_latency.png` and the self-contained `index.html`.
The sweep is described by a YAML file (default `configs/sweeps/frontier.yaml`); see
`configs/sweeps/` for a CIFAR-100 grid meant for a GPU machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.reporting.bundle import ReportBundle, write_report_bundle
from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.machine import MachineInfo, machine_info
from benchmarks.reporting.pipeline import (
    PointPaths,
    bench_stage,
    compile_stage,
    format_percent_id,
    load_sweep_spec,
    merged_train_config,
    read_json_file,
    run_stages,
    train_stage,
    validate_train_config,
    write_point_config,
)
from benchmarks.reporting.plots import PlotSpec, Series, line_plot_png
from benchmarks.reporting.sweep import DONE, PointResult, PointRunner, SweepPoint
from benchmarks.reporting.sweep_cli import run_sweep_main, sweep_parser
from benchmarks.reporting.tables import (
    Column,
    fmt_macs,
    fmt_ms,
    fmt_pct,
    fmt_speedup,
)

__all__ = [
    "FrontierSpec",
    "load_frontier_spec",
    "frontier_points",
    "pipeline_runner",
    "point_metrics",
    "frontier_rows",
    "FRONTIER_COLUMNS",
    "write_frontier_report",
    "main",
]

DEFAULT_SWEEP = Path("configs/sweeps/frontier.yaml")
DENSE = "dense"
CSV_NAME, MD_NAME, HTML_NAME = "frontier.csv", "frontier.md", "index.html"
MACS_PLOT, LATENCY_PLOT = "top1_vs_macs.png", "top1_vs_latency.png"


@dataclass(frozen=True)
class FrontierSpec:
    """A frontier sweep: the grid, the shared train settings and where everything goes."""

    name: str = "frontier"
    base_config: str | None = "configs/default.yaml"
    train: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields for all points
    targets: tuple[float, ...] = (0.0, 0.8, 0.9, 0.95, 0.98, 0.99)
    backbones: tuple[str, ...] = ("global", "flops")
    bench_threads: int = 1
    bench_rounds: int = 30
    bench_limit: int | None = None  # accuracy images per point (None: the full test set)
    runs_dir: str = "runs"
    artifacts_dir: str = "artifacts"
    out_dir: str = "reports/frontier"
    stage_timeout_s: float | None = None

    def validate(self) -> FrontierSpec:
        """BenchInputError for an empty or out-of-range grid; returns self."""
        if not self.targets or not self.backbones:
            raise BenchInputError("a frontier needs at least one target and one backbone")
        if any(not 0.0 <= t < 1.0 for t in self.targets):
            raise BenchInputError(f"targets are sparsity fractions in [0, 1): {self.targets}")
        if len(set(self.targets)) != len(self.targets):
            raise BenchInputError(f"duplicate targets: {self.targets}")
        if self.bench_threads < 1 or self.bench_rounds < 1:
            raise BenchInputError("bench_threads and bench_rounds must be >= 1")
        return self

    @property
    def state_dir(self) -> Path:
        """Resumable sweep state (results, locks, point configs, logs)."""
        return Path(self.out_dir) / "state"


def load_frontier_spec(path: str | Path, **overrides: Any) -> FrontierSpec:
    """Read a sweep YAML file (keys = FrontierSpec fields); `overrides` win over the file."""
    return load_sweep_spec(FrontierSpec, path, ("targets", "backbones"), overrides)


def frontier_points(spec: FrontierSpec) -> list[SweepPoint]:
    """One point per (backbone, target > 0) plus a single shared dense point for target 0."""
    points = []
    for target in sorted(spec.targets):
        if target == 0.0:
            points.append(SweepPoint(f"{spec.name}-{DENSE}",
                                     {"backbone": DENSE, "target": 0.0, "sparsity": 0.0}))
            continue
        for backbone in spec.backbones:
            points.append(SweepPoint(f"{spec.name}-{backbone}-{format_percent_id(target)}",
                                     {"backbone": backbone, "target": target,
                                      "sparsity": target}))
    return points


def _train_values(spec: FrontierSpec, point: SweepPoint) -> dict[str, Any]:
    own = {"sparsity": point.params["sparsity"]}
    if point.params["backbone"] != DENSE:
        own["backbone"] = point.params["backbone"]
    return merged_train_config(spec.base_config, spec.train, own)


def _paths(spec: FrontierSpec, point_id: str) -> PointPaths:
    return PointPaths.for_point(point_id, state_dir=spec.state_dir, runs_dir=Path(spec.runs_dir),
                                artifacts_dir=Path(spec.artifacts_dir))


def validate_points(spec: FrontierSpec, points: Sequence[SweepPoint]) -> None:
    """Resolve every point's train config with the train validator before anything runs."""
    for point in points:
        validate_train_config(_train_values(spec, point), point.id)


def point_metrics(summary: Mapping[str, Any], bench: Mapping[str, Any],
                  threads: int) -> dict[str, Any]:
    """The frontier's numbers for one point from its summary.json and bench.json."""
    accuracy = bench["accuracy"]
    if accuracy["disagreements"]:
        raise RuntimeError(f"engine top-1 differs from ORT on {accuracy['disagreements']} "
                           "images (see bench.md)")
    timing = {(t["contender"], t["threads"], t["batch"]): t for t in bench["timings"]}
    engine, ort = timing.get(("engine", threads, 1)), timing.get(("ort_dense", threads, 1))
    if engine is None or ort is None:
        raise RuntimeError(f"bench.json has no batch-1 timings at {threads} threads")
    return {
        "achieved_sparsity": summary["sparsity"],
        "top1": accuracy["engine_top1"],
        "train_top1": summary.get("test_acc"),
        "dense_macs": bench["macs"]["dense"],
        "sparse_macs": bench["macs"]["sparse"],
        "engine_ms_b1": engine["median_ms"],
        "ort_dense_ms_b1": ort["median_ms"],
        "speedup_vs_ort_dense": ort["median_ms"] / engine["median_ms"],
        "train_seconds": summary.get("seconds"),
        "threads": threads,
    }


def pipeline_runner(spec: FrontierSpec) -> PointRunner:
    """The real point runner: train -> compile -> bench subprocesses, then read the metrics."""
    def run(point: SweepPoint) -> dict[str, Any]:
        paths = _paths(spec, point.id)
        write_point_config(paths.config, _train_values(spec, point))
        stages = [train_stage(paths), compile_stage(paths),
                  bench_stage(paths, threads=spec.bench_threads, rounds=spec.bench_rounds,
                              limit=spec.bench_limit)]
        run_stages(stages, paths, timeout_s=spec.stage_timeout_s)
        summary = read_json_file(paths.run_dir / "summary.json")
        bench = read_json_file(paths.artifact_dir / "bench.json")
        return point_metrics(summary, bench, spec.bench_threads)
    return run


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------

FRONTIER_COLUMNS = (
    Column("backbone", "backbone"),
    Column("target", "target sparsity", fmt_pct),
    Column("achieved_sparsity", "achieved sparsity", fmt_pct),
    Column("top1", "top-1 (engine, test set)", fmt_pct),
    Column("dense_macs", "dense MACs / image", fmt_macs),
    Column("sparse_macs", "sparse MACs / image", fmt_macs),
    Column("engine_ms_b1", "engine latency B=1 (ms)", fmt_ms),
    Column("ort_dense_ms_b1", "ORT dense latency B=1 (ms)", fmt_ms),
    Column("speedup_vs_ort_dense", "speedup vs ORT dense", fmt_speedup),
    Column("status", "status"),
    Column("point", "point"),
)


def frontier_rows(spec: FrontierSpec, results: Mapping[str, PointResult]) -> list[dict[str, Any]]:
    """One row per (backbone, target) in grid order; the dense point appears in every backbone.

    Metrics are copied unchanged from the point results; points without a result are 'pending'.
    """
    rows = []
    by_target = {p.params["target"]: p for p in frontier_points(spec) if p.params["target"] == 0}
    for backbone in spec.backbones:
        for target in sorted(spec.targets):
            point_id = (by_target[target].id if target == 0.0 else
                        f"{spec.name}-{backbone}-{format_percent_id(target)}")
            result = results.get(point_id)
            row: dict[str, Any] = {"backbone": backbone, "target": target, "point": point_id,
                                   "status": result.status if result else "pending"}
            if result is not None and result.status == DONE:
                row.update(result.metrics)
            rows.append(row)
    return rows


def _series(rows: Sequence[Mapping[str, Any]], backbones: Sequence[str], x_key: str) -> list:
    series = []
    for backbone in backbones:
        done = [r for r in rows if r["backbone"] == backbone and r["status"] == DONE]
        if done:
            series.append(Series(backbone, [r[x_key] for r in done],
                                 [100.0 * r["top1"] for r in done]))
    return series


def frontier_plots(rows: Sequence[Mapping[str, Any]], backbones: Sequence[str],
                   machine: MachineInfo, threads: int) -> dict[str, bytes]:
    """PNG bytes of top-1 vs sparse MACs (log x) and top-1 vs engine latency, by file name."""
    plots = {}
    macs = _series(rows, backbones, "sparse_macs")
    if macs:
        plots[MACS_PLOT] = line_plot_png(macs, PlotSpec(
            "Top-1 vs sparse MACs", "sparse MACs per image (log scale)",
            "top-1 accuracy (%)", logx=True))
        latency = _series(rows, backbones, "engine_ms_b1")
        plots[LATENCY_PLOT] = line_plot_png(latency, PlotSpec(
            f"Top-1 vs engine latency (batch 1, {threads} thread{'s' if threads > 1 else ''}, "
            f"{machine.simd} CPU)",
            "engine latency at batch 1 (ms)", "top-1 accuracy (%)"))
    return plots


def _context_lines(spec: FrontierSpec, outcome_results: Mapping[str, PointResult],
                   machine: MachineInfo) -> list[str]:
    seconds = sum(r.seconds for r in outcome_results.values())
    threads = spec.bench_threads
    return [
        f"Machine: {machine.describe()}. Latency: median of {spec.bench_rounds} interleaved "
        f"runs, batch 1, {threads} thread{'s' if threads > 1 else ''}, ORT dense on the same "
        "model.onnx as the baseline.",
        "Costs are MACs per image (one multiply-add = 1 MAC; FLOPs ~ 2 x MACs), Conv and "
        "Linear layers only. Top-1 is the deployed model run by our engine on the test set.",
        f"Train settings: base config {spec.base_config}, overrides {dict(spec.train)}.",
        f"Wall time of the finished points: {seconds / 60:.1f} min "
        f"(train + compile + bench, summed over {len(outcome_results)} points). "
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
    ]


def _failure_lines(results: Mapping[str, PointResult]) -> list[str]:
    return [f"{r.id}: {r.error}" for r in results.values() if r.status != DONE]


def write_frontier_report(spec: FrontierSpec, results: Mapping[str, PointResult],
                          out_dir: str | Path, machine: MachineInfo) -> list[Path]:
    """Write CSV, Markdown, PNG plots and the HTML page (each atomically); returns the paths."""
    rows = frontier_rows(spec, results)
    bundle = ReportBundle(
        title=f"Sparsity frontier: {spec.name}", caption=f"Frontier on {machine.describe()}",
        context=_context_lines(spec, results, machine), rows=rows, columns=FRONTIER_COLUMNS,
        plots=frontier_plots(rows, spec.backbones, machine, spec.bench_threads),
        failures=_failure_lines(results))
    return write_report_bundle(bundle, out_dir, CSV_NAME, MD_NAME, HTML_NAME)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, runner: PointRunner | None = None) -> int:
    """CLI entry point (a runner can be injected for tests); returns the exit code."""
    args = sweep_parser("python -m benchmarks.frontier", __doc__, DEFAULT_SWEEP).parse_args(argv)

    def prepare(args: argparse.Namespace):
        spec = load_frontier_spec(args.sweep, out_dir=args.out)
        points = frontier_points(spec)
        if runner is not None:
            return spec, points, runner
        validate_points(spec, points)
        return spec, points, pipeline_runner(spec)

    return run_sweep_main(args, prepare, lambda spec, results: write_frontier_report(
        spec, results, spec.out_dir, machine_info()))


if __name__ == "__main__":
    sys.exit(main())
