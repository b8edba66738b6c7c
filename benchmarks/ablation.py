"""`make ablation`: the Feather paper's ablations at small scale, 3 seeds per point.

- Operator study (paper Fig. 2): thresholding operator (hard, soft, feather p=3) x target sparsity
  (90, 95, 98, 99 %) with theta = 1 (plain straight-through estimator).
- STE-scale study (paper Fig. 3): theta in {0, 0.25, 0.5, 0.75, 1} at 95 and 99 % with the
  feather operator.

Each (operator, sparsity, theta, seed) is one training run (`python -m featherdeploy.train` as a
subprocess, a short schedule set in `configs/sweeps/ablation.yaml`); points shared by both studies
(feather, theta 1, 95 / 99 %) run once. The sweep is resumable and parallel-safe: each point holds a
lock while it runs and stores its result atomically, so several `make ablation` processes can share
the work and a killed one can simply be restarted (`benchmarks.reporting.sweep`).

Outputs in `reports/ablation/`: `ablation.csv`, `ablation.md`, `fig2_operators.png`,
`fig3_theta.png` (mean +- sample standard deviation over seeds) and `index.html`.
"""

from __future__ import annotations

import argparse
import statistics
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
from benchmarks.reporting.tables import Column, fmt_pct

__all__ = [
    "AblationSpec",
    "load_ablation_spec",
    "ablation_points",
    "train_runner",
    "AblationGroup",
    "aggregate",
    "ABLATION_COLUMNS",
    "write_ablation_report",
    "main",
]

DEFAULT_SWEEP = Path("configs/sweeps/ablation.yaml")
OPERATOR_STUDY, THETA_STUDY = "operator (Fig. 2)", "theta (Fig. 3)"
CSV_NAME, MD_NAME, HTML_NAME = "ablation.csv", "ablation.md", "index.html"
FIG2, FIG3 = "fig2_operators.png", "fig3_theta.png"


@dataclass(frozen=True)
class AblationSpec:
    """The two studies' grids, seeds, shared train settings and output places."""

    name: str = "ablation"
    base_config: str | None = "configs/default.yaml"
    train: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    operators: tuple[str, ...] = ("hard", "soft", "feather")
    operator_sparsities: tuple[float, ...] = (0.9, 0.95, 0.98, 0.99)
    operator_theta: float = 1.0
    thetas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    theta_sparsities: tuple[float, ...] = (0.95, 0.99)
    theta_operator: str = "feather"
    p: float = 3.0
    runs_dir: str = "runs"
    out_dir: str = "reports/ablation"
    stage_timeout_s: float | None = None

    def validate(self) -> AblationSpec:
        """BenchInputError for empty grids or values outside their domains; returns self."""
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise BenchInputError(f"seeds must be a non-empty list without repeats: {self.seeds}")
        for sparsity in self.operator_sparsities + self.theta_sparsities:
            if not 0.0 < sparsity < 1.0:
                raise BenchInputError(f"sparsities are fractions in (0, 1), got {sparsity}")
        for theta in (*self.thetas, self.operator_theta):
            if not 0.0 <= theta <= 1.0:
                raise BenchInputError(f"theta must be in [0, 1], got {theta}")
        if not self.operators or not self.thetas:
            raise BenchInputError("need at least one operator and one theta")
        return self

    @property
    def state_dir(self) -> Path:
        """Resumable sweep state (results, locks, point configs, logs)."""
        return Path(self.out_dir) / "state"


_TUPLE_FIELDS = ("seeds", "operators", "operator_sparsities", "thetas", "theta_sparsities")


def load_ablation_spec(path: str | Path, **overrides: Any) -> AblationSpec:
    """Read a sweep YAML file (keys = AblationSpec fields); `overrides` win over the file."""
    return load_sweep_spec(AblationSpec, path, _TUPLE_FIELDS, overrides)


def _point_id(spec: AblationSpec, operator: str, sparsity: float, theta: float, seed: int) -> str:
    theta_id = f"{theta:g}".replace(".", "p")
    return f"{spec.name}-{operator}-s{format_percent_id(sparsity)}-t{theta_id}-seed{seed}"


def _configurations(spec: AblationSpec) -> list[tuple[str, str, float, float]]:
    """(study, operator, sparsity, theta) of both studies, in report order."""
    configs = [(OPERATOR_STUDY, op, s, spec.operator_theta)
               for op in spec.operators for s in spec.operator_sparsities]
    configs += [(THETA_STUDY, spec.theta_operator, s, t)
                for s in spec.theta_sparsities for t in spec.thetas]
    return configs


def ablation_points(spec: AblationSpec) -> list[SweepPoint]:
    """One point per distinct (operator, sparsity, theta, seed); shared configurations run once.

    Seeds are the outer loop, so an interrupted sweep already has one seed of every configuration.
    """
    points: dict[str, SweepPoint] = {}
    for seed in spec.seeds:
        for _, operator, sparsity, theta in _configurations(spec):
            point_id = _point_id(spec, operator, sparsity, theta, seed)
            points.setdefault(point_id, SweepPoint(point_id, {
                "operator": operator, "sparsity": sparsity, "theta": theta, "seed": seed,
                "p": spec.p}))
    return list(points.values())


def _train_values(spec: AblationSpec, point: SweepPoint) -> dict[str, Any]:
    return merged_train_config(spec.base_config, spec.train, dict(point.params))


def _paths(spec: AblationSpec, point_id: str) -> PointPaths:
    return PointPaths.for_point(point_id, state_dir=spec.state_dir, runs_dir=Path(spec.runs_dir),
                                artifacts_dir=spec.state_dir / "unused")


def validate_points(spec: AblationSpec, points: Sequence[SweepPoint]) -> None:
    """Resolve every point's train config with the train validator before anything runs."""
    for point in points:
        validate_train_config(_train_values(spec, point), point.id)


def train_runner(spec: AblationSpec) -> PointRunner:
    """The real point runner: one training subprocess, then top-1 and sparsity from summary."""
    def run(point: SweepPoint) -> dict[str, Any]:
        paths = _paths(spec, point.id)
        write_point_config(paths.config, _train_values(spec, point))
        run_stages([train_stage(paths)], paths, timeout_s=spec.stage_timeout_s)
        summary = read_json_file(paths.run_dir / "summary.json")
        return {"top1": summary["test_acc"], "achieved_sparsity": summary["sparsity"],
                "train_seconds": summary.get("seconds")}
    return run


# ------------------------------------------------------------------------------------------
# Aggregation and report
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AblationGroup:
    """One configuration of one study, aggregated over its finished seeds."""

    study: str
    operator: str
    sparsity: float
    theta: float
    seeds_done: int
    seeds_total: int
    top1_mean: float | None
    top1_std: float | None  # sample standard deviation (n - 1); 0 with a single seed
    achieved_sparsity_mean: float | None
    top1_per_seed: tuple[float, ...]
    failed: int

    def to_row(self) -> dict[str, Any]:
        """Table / CSV record."""
        return {"study": self.study, "operator": self.operator, "sparsity": self.sparsity,
                "theta": self.theta, "seeds": f"{self.seeds_done}/{self.seeds_total}",
                "top1_mean": self.top1_mean, "top1_std": self.top1_std,
                "achieved_sparsity": self.achieved_sparsity_mean,
                "top1_per_seed": " ".join(repr(v) for v in self.top1_per_seed),
                "failed": self.failed}


def _group(study: str, operator: str, sparsity: float, theta: float,
           results: Sequence[PointResult | None]) -> AblationGroup:
    done = [r for r in results if r is not None and r.status == DONE]
    top1 = tuple(float(r.metrics["top1"]) for r in done)
    achieved = [float(r.metrics["achieved_sparsity"]) for r in done]
    std = statistics.stdev(top1) if len(top1) > 1 else (0.0 if top1 else None)
    return AblationGroup(
        study=study, operator=operator, sparsity=sparsity, theta=theta, seeds_done=len(done),
        seeds_total=len(results), top1_mean=statistics.fmean(top1) if top1 else None,
        top1_std=std, achieved_sparsity_mean=statistics.fmean(achieved) if achieved else None,
        top1_per_seed=top1, failed=sum(1 for r in results if r is not None and r.status != DONE))


def aggregate(spec: AblationSpec, results: Mapping[str, PointResult]) -> list[AblationGroup]:
    """Every configuration of both studies with mean / std of top-1 over its finished seeds."""
    return [_group(study, op, s, t,
                   [results.get(_point_id(spec, op, s, t, seed)) for seed in spec.seeds])
            for study, op, s, t in _configurations(spec)]


def _fmt_pp(value: float) -> str:
    # Top-1 std in percentage points.
    return f"{100.0 * value:.2f} pp"


ABLATION_COLUMNS = (
    Column("study", "study"),
    Column("operator", "operator"),
    Column("sparsity", "target sparsity", fmt_pct),
    Column("theta", "theta (STE scale)", lambda v: f"{v:g}"),
    Column("seeds", "seeds done"),
    Column("top1_mean", "top-1 mean", fmt_pct),
    Column("top1_std", "top-1 std", _fmt_pp),
    Column("achieved_sparsity", "achieved sparsity (mean)", fmt_pct),
    Column("failed", "failed runs"),
    Column("top1_per_seed", "top-1 per seed (fraction)"),
)


def _mean_std_series(groups: Sequence[AblationGroup], study: str, line_key: str,
                     x_key: str, x_scale: float) -> list[Series]:
    lines: dict[str, list[AblationGroup]] = {}
    for group in groups:
        if group.study == study and group.top1_mean is not None:
            label = (group.operator if line_key == "operator"
                     else f"{100 * group.sparsity:g}% sparsity")
            lines.setdefault(label, []).append(group)
    return [Series(label, [x_scale * getattr(g, x_key) for g in members],
                   [100.0 * g.top1_mean for g in members],
                   [100.0 * (g.top1_std or 0.0) for g in members])
            for label, members in lines.items()]


def ablation_plots(groups: Sequence[AblationGroup], seeds: int) -> dict[str, bytes]:
    """Fig. 2 (top-1 vs sparsity per operator) and Fig. 3 (top-1 vs theta per sparsity)."""
    plots = {}
    fig2 = _mean_std_series(groups, OPERATOR_STUDY, "operator", "sparsity", 100.0)
    if fig2:
        plots[FIG2] = line_plot_png(fig2, PlotSpec(
            f"Thresholding operator, theta = 1 (mean +- std, {seeds} seeds)",
            "target sparsity (%)", "top-1 accuracy (%)", dodge=0.12))
    fig3 = _mean_std_series(groups, THETA_STUDY, "sparsity", "theta", 1.0)
    if fig3:
        plots[FIG3] = line_plot_png(fig3, PlotSpec(
            f"STE scale theta, feather operator (mean +- std, {seeds} seeds)",
            "theta (gradient scale of pruned weights, unitless)", "top-1 accuracy (%)",
            dodge=0.01))
    return plots


def _context_lines(spec: AblationSpec, results: Mapping[str, PointResult],
                   machine: MachineInfo) -> list[str]:
    hours = sum(r.seconds for r in results.values()) / 3600
    return [
        f"Machine: {machine.describe()}. Base config {spec.base_config}, overrides "
        f"{dict(spec.train)}, feather p = {spec.p:g}, seeds {list(spec.seeds)}.",
        "Top-1 is the finalized sparse model's accuracy on the test set (train stage's "
        "evaluation); std is the sample standard deviation over seeds, in percentage points.",
        f"Training time of the finished runs: {hours:.2f} h summed over {len(results)} runs. "
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}.",
    ]


def write_ablation_report(spec: AblationSpec, results: Mapping[str, PointResult],
                          out_dir: str | Path, machine: MachineInfo) -> list[Path]:
    """Write CSV, Markdown, the two PNG figures and the HTML page atomically; returns paths."""
    groups = aggregate(spec, results)
    bundle = ReportBundle(
        title=f"Feather ablations: {spec.name}", caption=f"Ablations on {machine.describe()}",
        context=_context_lines(spec, results, machine),
        rows=[group.to_row() for group in groups], columns=ABLATION_COLUMNS,
        plots=ablation_plots(groups, len(spec.seeds)),
        failures=[f"{r.id}: {r.error}" for r in results.values() if r.status != DONE],
        failure_heading="Failed runs")
    return write_report_bundle(bundle, out_dir, CSV_NAME, MD_NAME, HTML_NAME)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, runner: PointRunner | None = None) -> int:
    """CLI entry point (a runner can be injected for tests); returns the exit code."""
    parser = sweep_parser("python -m benchmarks.ablation", __doc__, DEFAULT_SWEEP, unit="runs")
    args = parser.parse_args(argv)

    def prepare(args: argparse.Namespace):
        spec = load_ablation_spec(args.sweep, out_dir=args.out)
        points = ablation_points(spec)
        if runner is not None:
            return spec, points, runner
        validate_points(spec, points)
        return spec, points, train_runner(spec)

    return run_sweep_main(args, prepare, lambda spec, results: write_ablation_report(
        spec, results, spec.out_dir, machine_info()), unit="runs")


if __name__ == "__main__":
    sys.exit(main())
