"""The frontier CLI with an injected fake point runner: grid, resumability, report files with
the numbers carried through unchanged, failures reported, bad input -> exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import frontier
from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.pipeline import merged_train_config
from benchmarks.reporting.plots import PNG_MAGIC
from benchmarks.reporting.sweep import SweepPoint
from tests.e2e.fakes import RecordingRunner

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def fake_metrics(point: SweepPoint) -> dict:
    """Distinct, exactly representable numbers per point, derived from its params."""
    target = point.params["target"]
    bonus = 0.001 if point.params["backbone"] == "flops" else 0.0
    return {"achieved_sparsity": target + 0.0001, "top1": 0.875 - target / 8 + bonus,
            "train_top1": 0.5, "dense_macs": 31_021_952,
            "sparse_macs": int(31_021_952 * (1 - target)) + 7,
            "engine_ms_b1": 1.25 - target, "ort_dense_ms_b1": 2.5,
            "speedup_vs_ort_dense": 2.5 / (1.25 - target), "train_seconds": 3.0, "threads": 1}


def FakeRunner(failing: tuple[str, ...] = ()) -> RecordingRunner:
    return RecordingRunner(fake_metrics, failing, "train exited with code 1 (log: x.log)")


def write_sweep(tmp_path: Path, **extra) -> Path:
    spec = {"name": "tiny", "base_config": None, "targets": [0.0, 0.5, 0.75],
            "backbones": ["global", "flops"], "out_dir": str(tmp_path / "report"), **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(spec))  # JSON is valid YAML
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_default_grid_has_one_shared_dense_point():
    spec = frontier.FrontierSpec()
    ids = [p.id for p in frontier.frontier_points(spec)]
    assert len(ids) == 11  # 5 sparse targets x 2 backbones + 1 dense
    assert ids[0] == "frontier-dense"
    assert "frontier-flops-99" in ids and "frontier-global-80" in ids


def test_default_sweep_file_matches_the_issue():
    spec = frontier.load_frontier_spec(frontier.DEFAULT_SWEEP)
    assert spec.targets == (0.0, 0.8, 0.9, 0.95, 0.98, 0.99)
    assert spec.backbones == ("global", "flops")


def test_report_carries_numbers_unchanged(tmp_path):
    runner = FakeRunner()
    code = frontier.main(["--sweep", str(write_sweep(tmp_path)), "--no-progress"], runner=runner)
    assert code == EXIT_OK
    assert runner.calls == ["tiny-dense", "tiny-global-50", "tiny-flops-50", "tiny-global-75",
                            "tiny-flops-75"]
    out = tmp_path / "report"
    rows = read_csv(out / "frontier.csv")
    assert [(r["backbone"], float(r["target"])) for r in rows] == [
        ("global", 0.0), ("global", 0.5), ("global", 0.75),
        ("flops", 0.0), ("flops", 0.5), ("flops", 0.75)]
    for row in rows:
        point = SweepPoint(row["point"], {"target": float(row["target"]),
                                          "backbone": "dense" if row["target"] == "0.0"
                                          else row["backbone"]})
        expected = fake_metrics(point)
        for key in ("achieved_sparsity", "top1", "engine_ms_b1", "speedup_vs_ort_dense"):
            assert float(row[key]) == expected[key], key
        assert int(row["sparse_macs"]) == expected["sparse_macs"]
        assert int(row["dense_macs"]) == expected["dense_macs"]
        assert row["status"] == "done"
    # The dense point appears in both backbone lines, with identical numbers.
    assert rows[0]["point"] == rows[3]["point"] == "tiny-dense"
    assert rows[0]["top1"] == rows[3]["top1"]
    markdown = (out / "frontier.md").read_text()
    assert "dense MACs / image" in markdown and "sparse MACs / image" in markdown
    assert "cores" in markdown  # the machine is stated
    for name in ("top1_vs_macs.png", "top1_vs_latency.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "engine latency B=1 (ms)" in page


def test_rerun_skips_done_points_and_report_only_runs_nothing(tmp_path):
    sweep = write_sweep(tmp_path)
    frontier.main(["--sweep", str(sweep), "--no-progress", "--limit", "2"], runner=FakeRunner())
    rows = read_csv(tmp_path / "report" / "frontier.csv")
    assert sorted({r["status"] for r in rows}) == ["done", "pending"]
    idle = FakeRunner()
    frontier.main(["--sweep", str(sweep), "--report-only"], runner=idle)
    assert idle.calls == []
    rest = FakeRunner()
    assert frontier.main(["--sweep", str(sweep), "--no-progress"], runner=rest) == EXIT_OK
    assert rest.calls == ["tiny-flops-50", "tiny-global-75", "tiny-flops-75"]


def test_failed_point_is_reported_not_hidden(tmp_path, capsys):
    runner = FakeRunner(failing=("tiny-flops-75",))
    code = frontier.main(["--sweep", str(write_sweep(tmp_path)), "--no-progress"], runner=runner)
    assert code == EXIT_FAILED
    assert "FAILED tiny-flops-75" in capsys.readouterr().err
    out = tmp_path / "report"
    failed = [r for r in read_csv(out / "frontier.csv") if r["status"] == "failed"]
    assert [r["point"] for r in failed] == ["tiny-flops-75"]
    assert failed[0]["top1"] == ""  # no made-up number
    assert "train exited with code 1" in (out / "frontier.md").read_text()
    assert "train exited with code 1" in (out / "index.html").read_text()


def test_dry_run_lists_points(tmp_path, capsys):
    runner = FakeRunner()
    assert frontier.main(["--sweep", str(write_sweep(tmp_path)), "--dry-run"],
                         runner=runner) == EXIT_OK
    assert runner.calls == []
    assert "tiny-global-75: pending" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    ({"targets": [0.5, 1.5]}, "targets"),
    ({"colour": "red"}, "unknown keys"),
    ({"backbones": "global"}, "must be a list"),
])
def test_bad_sweep_file_exits_2(tmp_path, capsys, extra, message):
    code = frontier.main(["--sweep", str(write_sweep(tmp_path, **extra))], runner=FakeRunner())
    assert code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_bad_train_value_is_caught_before_running(tmp_path, capsys):
    sweep = write_sweep(tmp_path, train={"epochs": 0})
    assert frontier.main(["--sweep", str(sweep)]) == EXIT_BAD_INPUT
    assert "tiny-dense" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_sweep_may_not_rename_runs():
    with pytest.raises(BenchInputError, match="may not set"):
        merged_train_config(None, {"name": "x"}, {})


def test_point_metrics_reads_stage_outputs():
    summary = {"sparsity": 0.9, "test_acc": 0.8, "seconds": 12.5}
    bench = {"accuracy": {"disagreements": 0, "engine_top1": 0.8125},
             "macs": {"dense": 100, "sparse": 10},
             "timings": [{"contender": "engine", "threads": 1, "batch": 1, "median_ms": 0.5},
                         {"contender": "ort_dense", "threads": 1, "batch": 1, "median_ms": 2.0}]}
    metrics = frontier.point_metrics(summary, bench, threads=1)
    assert metrics["top1"] == 0.8125 and metrics["achieved_sparsity"] == 0.9
    assert metrics["sparse_macs"] == 10 and metrics["dense_macs"] == 100
    assert metrics["speedup_vs_ort_dense"] == 4.0
    with pytest.raises(RuntimeError, match="no batch-1 timings at 2 threads"):
        frontier.point_metrics(summary, bench, threads=2)
    bench["accuracy"]["disagreements"] = 3
    with pytest.raises(RuntimeError, match="differs from ORT on 3 images"):
        frontier.point_metrics(summary, bench, threads=1)
