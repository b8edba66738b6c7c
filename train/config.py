"""TrainConfig: the one typed configuration of a training run; YAML files and CLI flags fill it in.

The resolved config is written beside every run (``runs/NAME/config.yaml``) and embedded in
``model.pt`` so artifacts describe themselves.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "TrainConfig", "load_yaml_config", "resolve_config", "to_yaml"]


class ConfigError(ValueError):
    """A config value or file is invalid; the message says which and what is allowed."""


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults follow Feather's CIFAR recipe (ALGORITHMS.md section 3)."""

    name: str = "default"
    runs_dir: str = "runs"
    # data and model
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    limit_train: int | None = None
    limit_test: int | None = None
    # optimisation: SGD momentum 0.9, cosine per iteration to 0, grad-norm clip 3
    epochs: int = 160
    batch_size: int = 128
    eval_batch_size: int = 512
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float | None = 3.0
    # sparsity (Feather)
    sparsity: float = 0.9
    backbone: str = "global"
    alpha: float = 1.0
    operator: str = "feather"
    p: float = 3.0
    theta: float | str = "auto"
    prune_start: float = 0.0
    prune_end: float = 0.5
    keep_first_conv_dense: bool = False
    # execution
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def validate(self) -> TrainConfig:
        """Raise ConfigError for any value outside its domain; return self."""
        from train.backbones import BACKBONES
        from train.feather import OPERATORS
        from train.models import MODEL_NAMES

        _check(bool(self.name) and "/" not in self.name, f"bad run name {self.name!r}")
        _check(self.model in MODEL_NAMES,
               f"unknown model {self.model!r}; choose from {', '.join(MODEL_NAMES)}")
        _check(isinstance(self.model_kwargs, dict), "model_kwargs must be a mapping")
        _check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _check(self.backbone in BACKBONES, f"backbone must be one of {BACKBONES}")
        _check(self.operator in OPERATORS, f"operator must be one of {OPERATORS}")
        _check(self.p >= 1.0, f"p must be >= 1, got {self.p}")
        _check(self.theta == "auto" or (isinstance(self.theta, float) and 0.0 <= self.theta <= 1.0),
               f"theta must be 'auto' or a number in [0, 1], got {self.theta!r}")
        _check(0.0 <= self.prune_start < self.prune_end <= 1.0,
               "need 0 <= prune_start < prune_end <= 1")
        _check(self.epochs >= 1 and self.batch_size >= 1 and self.eval_batch_size >= 1,
               "epochs and batch sizes must be >= 1")
        _check(self.lr > 0 and math.isfinite(self.lr), f"lr must be positive, got {self.lr}")
        _check(self.weight_decay >= 0 and 0 <= self.momentum < 1, "bad weight_decay/momentum")
        _check(0.0 <= self.label_smoothing < 1.0, "label_smoothing must be in [0, 1)")
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive")
        _check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
               f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        for limit in (self.limit_train, self.limit_test):
            _check(limit is None or limit >= 1, "limits must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _coerce(name: str, value: Any) -> Any:
    """Normalise a raw YAML/CLI value for field ``name`` (theta 'auto' or float, ints as floats)."""
    if name == "theta":
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"theta must be 'auto' or a number, got {value!r}") from exc
    float_fields = {f.name for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)}
    if name in float_fields and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of TrainConfig fields (unknown keys are an error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return data


def resolve_config(file_values: dict[str, Any] | None = None,
                   overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML values <- CLI overrides (None means 'not given'); validated."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    merged: dict[str, Any] = {}
    for source in (file_values or {}, overrides or {}):
        unknown = sorted(set(source) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        merged.update({k: _coerce(k, v) for k, v in source.items() if v is not None})
    try:
        config = TrainConfig(**merged)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    return config.validate()


def to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
