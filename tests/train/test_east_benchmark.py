"""benchmarks/extreme_sparsity.py: grid, table, atomic output and skipping finished points."""

import pytest

from benchmarks import extreme_sparsity as bench


def test_grid_and_overrides(tmp_path):
    points = bench.grid([0.995, 0.999], [0, 1])
    assert len(points) == 8
    assert points[0] == bench.Point(0.995, "feather", 0)
    assert points[2].name == "east_s99.5_seed0"
    setting = bench.Setting(epochs=2, limit_train=100)
    overrides = bench.point_overrides(points[2], setting, tmp_path)
    assert overrides["runs_dir"] == str(tmp_path / "e2_n100_t-all")
    assert overrides["epochs"] == 2 and overrides["limit_train"] == 100
    assert "limit_test" not in overrides
    assert {k: overrides[k] for k in bench.EAST_OPTIONS} == bench.EAST_OPTIONS
    with pytest.raises(ValueError, match="unknown variants"):
        bench.grid([0.99], [0], ["nope"])


def test_table_reports_seeds_mean_and_gain():
    summary = {"sparsity": 0.999, "unique_sparsity": 0.999, "sparse_macs": 1000}
    results = {bench.Point(0.999, "feather", 0): {**summary, "test_acc": 0.10},
               bench.Point(0.999, "feather", 1): {**summary, "test_acc": 0.20},
               bench.Point(0.999, "east", 0): {**summary, "test_acc": 0.50},
               bench.Point(0.999, "east", 1): {**summary, "test_acc": 0.70}}
    table = bench.results_markdown(results, [0, 1], "## header")
    assert "| 99.9 % | feather | 10.00 | 20.00 | 15.00 | 99.900 % | 1,000 |" in table
    assert "| 99.9 % | east | 50.00 | 70.00 | 60.00 |" in table
    assert "EAST - Feather = +45.00 points" in table


def test_main_runs_once_then_skips_finished_points(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("dataset: synthetic\nmodel: resnet20\nbatch_size: 64\nsparsity: 0.9\n")
    out = tmp_path / "results" / "table.md"
    argv = ["--config", str(config), "--sparsities", "0.99", "--seeds", "0", "--epochs", "2",
            "--limit-train", "128", "--limit-test", "64", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(out)]
    assert bench.main(argv) == 0
    first = out.read_text()
    assert "| 99 % | feather |" in first and "| 99 % | east |" in first
    assert "2 epochs, train images: 128" in first

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr("train.loop.run_training", no_training)
    assert bench.main(argv) == 0
    assert out.read_text() == first
    assert bench.main([*argv, "--variants", "nope"]) == 2
    assert "unknown variants" in capsys.readouterr().err
