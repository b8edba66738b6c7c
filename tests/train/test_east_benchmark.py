"""benchmarks/extreme_sparsity.py: grid, tables, atomic output, skipping finished points."""

import csv
import io

import pytest

from benchmarks import extreme_sparsity as bench


def test_grid_and_overrides(tmp_path):
    points = bench.grid([0.99, 0.995, 0.999], [0, 1])
    assert len(points) == 3 * 6 * 2
    assert points[0] == bench.Point(0.99, "feather", 0)
    assert [p.variant for p in points[:12:2]] == list(bench.VARIANTS)
    assert points[10].name == "east_s99_seed0"
    setting = bench.Setting(epochs=2, limit_train=100)
    overrides = bench.point_overrides(points[10], setting, tmp_path)
    assert overrides["runs_dir"] == str(tmp_path / f"v{bench.ABLATION_VERSION}_e2_n100_t-all")
    assert overrides["epochs"] == 2 and overrides["limit_train"] == 100
    assert "limit_test" not in overrides
    assert {k: overrides[k] for k in bench.EAST_OPTIONS} == bench.EAST_OPTIONS
    cyclic = bench.point_overrides(bench.Point(0.99, "cyclic", 0), setting, tmp_path)
    assert cyclic["cyclic_sparsity"] and cyclic["init"] == "erk"
    assert "weight_sharing" not in cyclic and "dyrelu_phasing" not in cyclic
    with pytest.raises(ValueError, match="unknown variants"):
        bench.grid([0.99], [0], ["nope"])


def _result(acc, unique=271, deployed=271, macs=1000):
    return {"test_acc": acc, "sparsity": 0.999, "unique_sparsity": 1 - unique / 270224,
            "unique_numel": 270224, "deployed_nonzeros": deployed, "sparse_macs": macs,
            "dense_macs": 10**7, "seconds": 1.0}


def test_table_reports_seeds_mean_gain_and_counts():
    results = {bench.Point(0.999, "feather", 0): _result(0.10),
               bench.Point(0.999, "feather", 1): _result(0.20),
               bench.Point(0.999, "sharing", 0): _result(0.30, deployed=400),
               bench.Point(0.999, "east", 0): _result(0.50, deployed=380, macs=2000),
               bench.Point(0.999, "east", 1): _result(0.70, deployed=390, macs=3000)}
    table = bench.results_markdown(results, [0, 1], "## header")
    assert "| 99.9 % | Feather | 10.00 | 20.00 | 15.00 | - | 271 | 271 | 1,000 |" in table
    assert "| 99.9 % | + weight sharing | 30.00 | - | 30.00 | +15.00 | 271 | 400 | 1,000 |" in table
    assert ("| 99.9 % | full EAST | 50.00 | 70.00 | 60.00 | +45.00 | 271 | 380-390 | 2,500 |"
            in table)
    assert "+ weight sharing +15.00, full EAST +45.00 points" in table
    assert "differ" not in table
    rows = list(csv.DictReader(io.StringIO(bench.results_csv(results))))
    assert [(r["variant"], r["seed"]) for r in rows] == [
        ("feather", "0"), ("feather", "1"), ("sharing", "0"), ("east", "0"), ("east", "1")]
    assert rows[0]["unique_nonzeros"] == "271" and rows[3]["deployed_nonzeros"] == "380"
    results[bench.Point(0.999, "erk", 0)] = _result(0.4, unique=270)
    assert "unique nonzeros differ" in bench.results_markdown(results, [0, 1], "## header")


def test_main_runs_every_variant_once_then_skips_finished_points(tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("dataset: synthetic\nmodel: resnet20\nbatch_size: 64\nsparsity: 0.9\n")
    out, table_csv = tmp_path / "results" / "table.md", tmp_path / "results" / "table.csv"
    argv = ["--config", str(config), "--sparsities", "0.99", "--seeds", "0", "--epochs", "2",
            "--limit-train", "128", "--limit-test", "64", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(out), "--csv", str(table_csv)]
    assert bench.main([*argv, "--workers", "2"]) == 0
    first = out.read_text()
    for label in bench.LABELS.values():
        assert f"| 99 % | {label} |" in first
    assert "2 epochs, train images: 128" in first
    assert "differ" not in first  # equal unique nonzeros across the variants
    rows = list(csv.DictReader(io.StringIO(table_csv.read_text())))
    assert [r["variant"] for r in rows] == list(bench.VARIANTS)
    assert len({r["unique_nonzeros"] for r in rows}) == 1
    sharing = {r["variant"]: int(r["deployed_nonzeros"]) for r in rows}
    assert sharing["sharing"] > sharing["feather"]  # materialized copies are deployed

    def no_training(*args, **kwargs):
        raise AssertionError("a finished point was trained again")

    monkeypatch.setattr("featherdeploy.train.loop.run_training", no_training)
    assert bench.main(argv) == 0
    assert out.read_text() == first
    assert bench.main([*argv, "--variants", "nope"]) == 2
    assert "unknown variants" in capsys.readouterr().err


def test_interrupted_point_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text("dataset: synthetic\nmodel: resnet20\nbatch_size: 64\n")
    argv = ["--config", str(config), "--sparsities", "0.99", "--seeds", "0", "--epochs", "2",
            "--limit-train", "128", "--limit-test", "64", "--variants", "east",
            "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "t.md"),
            "--csv", str(tmp_path / "t.csv")]
    import featherdeploy.train.loop as loop

    real = loop.run_training
    calls = []

    def killed_after_first_epoch(config, **kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            def stop(record):
                raise KeyboardInterrupt
            return real(config, on_epoch_end=stop, **kwargs)
        return real(config, **kwargs)

    monkeypatch.setattr("featherdeploy.train.loop.run_training", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    assert bench.main(argv) == 0
    assert calls[0] == {"resume": False, "overwrite": True}
    assert calls[1] == {"resume": True, "overwrite": False}
