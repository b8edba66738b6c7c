"""A tiny real frontier and ablation: the train, compile and bench CLIs run as subprocesses on the
synthetic dataset (two frontier points, one ablation run), then a rerun resumes with nothing to do.
"""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks import ablation, frontier

EXIT_OK = 0
# Global magnitude pruning hits the target up to ties and rounding (docs/algorithms.md section 2).
SPARSITY_TOLERANCE = 1e-3
TINY_TRAIN = {"dataset": "synthetic", "model": "resnet20", "model_kwargs": {"width": 1},
              "epochs": 1, "batch_size": 64, "limit_train": 256, "limit_test": 128,
              "device": "cpu"}


def _write(path, spec: dict):
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.slow
def test_tiny_frontier_end_to_end(tmp_path, capsys):
    sweep = _write(tmp_path / "frontier.yaml", {
        "name": "e2e", "base_config": None, "train": TINY_TRAIN, "targets": [0.0, 0.5],
        "backbones": ["global"], "bench_rounds": 2, "bench_limit": 64,
        "runs_dir": str(tmp_path / "runs"), "artifacts_dir": str(tmp_path / "artifacts"),
        "out_dir": str(tmp_path / "report"), "stage_timeout_s": 600})
    assert frontier.main(["--sweep", str(sweep), "--no-progress"]) == EXIT_OK, \
        capsys.readouterr().err
    with open(tmp_path / "report" / "frontier.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["point"], r["status"]) for r in rows] == [("e2e-dense", "done"),
                                                         ("e2e-global-50", "done")]
    assert abs(float(rows[1]["achieved_sparsity"]) - 0.5) <= SPARSITY_TOLERANCE
    assert float(rows[0]["achieved_sparsity"]) == 0.0
    assert int(rows[1]["sparse_macs"]) < int(rows[1]["dense_macs"])
    assert int(rows[0]["sparse_macs"]) == int(rows[0]["dense_macs"])
    bench_json = json.loads((tmp_path / "artifacts" / "e2e-global-50" / "bench.json").read_text())
    assert float(rows[1]["top1"]) == bench_json["accuracy"]["engine_top1"]
    assert bench_json["accuracy"]["images"] == 64 and bench_json["accuracy"]["agree"]
    assert (tmp_path / "report" / "index.html").is_file()
    capsys.readouterr()
    # Resume: everything is done, nothing runs again.
    assert frontier.main(["--sweep", str(sweep), "--no-progress"]) == EXIT_OK
    assert "ran 0 points" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_ablation_end_to_end(tmp_path, capsys):
    sweep = _write(tmp_path / "ablation.yaml", {
        "name": "e2e", "base_config": None, "train": TINY_TRAIN, "seeds": [0],
        "operators": ["hard"], "operator_sparsities": [0.5], "thetas": [1.0],
        "theta_sparsities": [0.5], "theta_operator": "hard",
        "runs_dir": str(tmp_path / "runs"), "out_dir": str(tmp_path / "report")})
    assert ablation.main(["--sweep", str(sweep), "--no-progress"]) == EXIT_OK, \
        capsys.readouterr().err
    summary = json.loads((tmp_path / "runs" / "e2e-hard-s50-t1-seed0" / "summary.json")
                         .read_text())
    with open(tmp_path / "report" / "ablation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2  # the run appears in both studies
    assert all(float(r["top1_mean"]) == summary["test_acc"] for r in rows)
    assert all(r["seeds"] == "1/1" for r in rows)
    config = (tmp_path / "report" / "state" / "configs" / "e2e-hard-s50-t1-seed0.yaml")
    assert "operator: hard" in config.read_text()
