"""TrainConfig validation: every field type-checked in one place, ranges, one-line CLI errors."""

import math

import pytest
import yaml

from featherdeploy.train.__main__ import main as train_main
from featherdeploy.train.config import ConfigError, TrainConfig, resolve_config, to_yaml


@pytest.mark.parametrize("values, message", [
    ({"epochs": "five"}, r"epochs must be an integer, got 'five' \(str\)"),
    ({"epochs": 2.5}, r"epochs must be an integer, got 2.5"),
    ({"epochs": 3.0}, r"epochs must be an integer"),
    ({"batch_size": True}, r"batch_size must be an integer, got True \(bool\)"),
    ({"sparsity": "0.9"}, r"sparsity must be a finite number, got '0.9' \(str"),
    ({"weight_decay": "5e-4"}, r"weight_decay .* YAML"),  # PyYAML reads 5e-4 as text
    ({"lr": [0.1]}, r"lr must be a finite number, got \[0.1\] \(list\)"),
    ({"name": 123}, r"name must be a string, got 123 \(int\)"),
    ({"amp": "yes"}, r"amp must be true or false"),
    ({"limit_train": 2.0}, r"limit_train must be an integer or null"),
    ({"model_kwargs": [1]}, r"model_kwargs must be a mapping"),
    ({"theta": True}, r"theta must be"),
    ({"dataset": "mnist"}, r"unknown dataset 'mnist'"),
    ({"name": ".."}, r"bad run name"),
    ({"seed": -1}, r"seed must be in \[0, 2\*\*32 - 1\], got -1"),
    ({"seed": 2**32}, r"seed must be in"),
    ({"warmup_epochs": math.nan}, r"warmup_epochs must be a finite number, got nan"),
    ({"warmup_epochs": 5.0, "epochs": 4}, r"warmup_epochs must be in \[0, epochs\]"),
    ({"lr": math.inf}, r"lr must be a finite number"),
    ({"lr": 0.0}, r"lr must be > 0"),
    ({"weight_decay": math.inf}, r"weight_decay must be a finite number, got inf"),
    ({"weight_decay": -1e-4}, r"weight_decay must be >= 0"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"momentum": math.nan}, r"momentum must be a finite number"),
    ({"grad_clip": math.inf}, r"grad_clip must be a finite number or null"),
    ({"p": math.inf}, r"p must be a finite number"),
    ({"alpha": math.nan}, r"alpha must be a finite number"),
])
def test_bad_values_are_one_clear_config_error(values, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(values, None)


def test_good_values_still_resolve_and_ints_become_floats():
    config = resolve_config({"lr": 1, "sparsity": 0, "theta": "AUTO", "limit_train": 8,
                             "warmup_epochs": 2}, {"epochs": 4})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.sparsity == 0.0 and config.theta == "auto"
    assert config.warmup_epochs == 2.0 and config.limit_train == 8
    assert TrainConfig().validate() == TrainConfig()
    assert resolve_config(yaml.safe_load(to_yaml(config)), None) == config  # round trip


def test_yaml_type_errors_exit_2_with_one_line(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    for text, culprit in (("epochs: five\n", "epochs"), ("sparsity: '0.9'\n", "sparsity"),
                          ("lr: [0.1]\n", "lr"), ("name: 123\n", "name"),
                          ("batch_size: true\n", "batch_size"), ("epochs: 2.5\n", "epochs")):
        config.write_text(text)
        code = train_main(["--config", str(config), "--runs-dir", str(tmp_path / "runs"),
                           "--dataset", "synthetic"])
        err = capsys.readouterr().err
        assert code == 2, text
        assert err.startswith(f"error: {culprit} must be") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, culprit", [
    (["--seed", "-1"], "seed"),
    (["--warmup-epochs", "nan"], "warmup_epochs"),
    (["--weight-decay", "inf"], "weight_decay"),
    (["--lr", "nan"], "lr"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags, culprit):
    code = train_main(["--name", "x", "--runs-dir", str(tmp_path), "--dataset", "synthetic",
                       "--epochs", "1", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {culprit} must be") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_relative_data_dir_is_recorded_absolute(tmp_path, monkeypatch):
    # compile and bench read data_dir from model.pt / report.json, from any working directory
    monkeypatch.chdir(tmp_path)
    assert resolve_config({"data_dir": "data"}, None).data_dir == str(tmp_path / "data")
    assert resolve_config({"data_dir": "/srv/data"}, None).data_dir == "/srv/data"
    assert resolve_config({}, None).data_dir is None
