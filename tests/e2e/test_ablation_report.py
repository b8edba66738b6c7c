"""The ablation CLI with an injected fake runner: the paper's grids, shared points run once,
mean / sample std over seeds exact, report files, failures reported, resumable."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from benchmarks import ablation
from benchmarks.reporting.plots import PNG_MAGIC
from benchmarks.reporting.sweep import DONE, FAILED, PointResult, SweepPoint
from tests.e2e.fakes import RecordingRunner

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
STD_TOLERANCE = 1e-12  # statistics.stdev vs the hand formula, same float inputs


def fake_top1(params: dict) -> float:
    """Seed-dependent, exactly representable accuracies."""
    return 0.5 + params["sparsity"] / 4 + params["theta"] / 16 + params["seed"] / 64


def _fake_metrics(point: SweepPoint) -> dict:
    return {"top1": fake_top1(point.params), "achieved_sparsity": point.params["sparsity"],
            "train_seconds": 1.0}


def FakeRunner(failing: tuple[str, ...] = ()) -> RecordingRunner:
    return RecordingRunner(_fake_metrics, failing, "train exited with code 2")


def write_sweep(tmp_path: Path, **extra) -> Path:
    spec = {"name": "abl", "base_config": None, "seeds": [0, 1],
            "operators": ["hard", "feather"], "operator_sparsities": [0.5, 0.75],
            "thetas": [0.0, 1.0], "theta_sparsities": [0.75],
            "out_dir": str(tmp_path / "report"), **extra}
    path = tmp_path / "ablation.yaml"
    path.write_text(json.dumps(spec))
    return path


def test_default_grid_matches_the_paper_figures():
    spec = ablation.load_ablation_spec(ablation.DEFAULT_SWEEP)
    assert spec.operators == ("hard", "soft", "feather")
    assert spec.operator_sparsities == (0.9, 0.95, 0.98, 0.99)
    assert spec.operator_theta == 1.0
    assert spec.thetas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert spec.theta_sparsities == (0.95, 0.99)
    assert spec.seeds == (0, 1, 2)
    points = ablation.ablation_points(spec)
    # 3 x 4 operator runs + 5 x 2 theta runs - 2 shared (feather, theta 1, 95/99%), x 3 seeds.
    assert len(points) == (12 + 10 - 2) * 3
    assert len({p.id for p in points}) == len(points)
    assert {p.params["p"] for p in points} == {3.0}


def test_aggregate_mean_and_sample_std():
    spec = ablation.AblationSpec(seeds=(0, 1, 2), operators=("soft",),
                                 operator_sparsities=(0.9,), thetas=(1.0,),
                                 theta_sparsities=(0.9,), theta_operator="soft")
    values = [0.8, 0.825, 0.7]
    results = {p.id: PointResult(p.id, DONE, p.params, {"top1": v, "achieved_sparsity": 0.9})
               for p, v in zip(ablation.ablation_points(spec), values, strict=True)}
    groups = ablation.aggregate(spec, results)
    assert len(groups) == 2  # one per study; both read the same three runs
    group = groups[0]
    assert group.seeds_done == 3 and group.top1_per_seed == tuple(values)
    assert group.top1_mean == statistics.fmean(values)
    mean = sum(values) / 3
    hand_std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert abs(group.top1_std - hand_std) <= STD_TOLERANCE


def test_partial_and_failed_seeds_are_counted():
    spec = ablation.AblationSpec(seeds=(0, 1, 2), operators=("hard",),
                                 operator_sparsities=(0.9,), thetas=(0.5,),
                                 theta_sparsities=(0.9,))
    points = [p for p in ablation.ablation_points(spec) if p.params["operator"] == "hard"]
    results = {points[0].id: PointResult(points[0].id, DONE, points[0].params,
                                         {"top1": 0.75, "achieved_sparsity": 0.9}),
               points[1].id: PointResult(points[1].id, FAILED, points[1].params, error="x")}
    group = ablation.aggregate(spec, results)[0]
    assert (group.seeds_done, group.seeds_total, group.failed) == (1, 3, 1)
    assert group.top1_mean == 0.75 and group.top1_std == 0.0


def test_cli_writes_report_with_numbers_unchanged(tmp_path):
    runner = FakeRunner()
    code = ablation.main(["--sweep", str(write_sweep(tmp_path)), "--no-progress"],
                         runner=runner)
    assert code == EXIT_OK
    # (2 ops x 2 sparsities + 2 thetas x 1 sparsity - 1 shared) x 2 seeds
    assert len(runner.calls) == 5 * 2 and len(set(runner.calls)) == 10
    out = tmp_path / "report"
    with open(out / "ablation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 + 2
    for row in rows:
        params = {"sparsity": float(row["sparsity"]), "theta": float(row["theta"])}
        per_seed = [fake_top1({**params, "seed": s}) for s in (0, 1)]
        assert float(row["top1_mean"]) == statistics.fmean(per_seed)
        assert [float(v) for v in row["top1_per_seed"].split()] == per_seed
        assert row["seeds"] == "2/2"
    for name in ("fig2_operators.png", "fig3_theta.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    markdown = (out / "ablation.md").read_text()
    assert "top-1 std" in markdown and "cores" in markdown
    assert (out / "index.html").read_text().count("data:image/png;base64,") == 2
    again = FakeRunner()
    ablation.main(["--sweep", str(write_sweep(tmp_path)), "--no-progress"], runner=again)
    assert again.calls == []


def test_cli_reports_failures(tmp_path, capsys):
    failing = "abl-hard-s50-t1-seed1"
    code = ablation.main(["--sweep", str(write_sweep(tmp_path)), "--no-progress"],
                         runner=FakeRunner(failing=(failing,)))
    assert code == EXIT_FAILED
    assert failing in capsys.readouterr().err
    assert f"{failing}: RuntimeError: train exited with code 2" in \
        (tmp_path / "report" / "ablation.md").read_text()


@pytest.mark.parametrize("extra, message", [
    ({"thetas": [0.5, 2.0]}, "theta must be in [0, 1]"),
    ({"seeds": [1, 1]}, "without repeats"),
    ({"operator_sparsities": [0.0]}, "fractions in (0, 1)"),
    ({"typo_key": 1}, "unknown keys"),
])
def test_bad_sweep_exits_2(tmp_path, capsys, extra, message):
    code = ablation.main(["--sweep", str(write_sweep(tmp_path, **extra))], runner=FakeRunner())
    assert code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
