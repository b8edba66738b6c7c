"""TrainConfig: the one typed configuration of a training run; YAML files and CLI flags fill it in.

The resolved config is written beside every run (``runs/NAME/config.yaml``) and embedded in
``model.pt`` so artifacts describe themselves.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "TrainConfig", "load_yaml_config", "resolve_config", "to_yaml",
           "type_problem", "INITS", "SHARING_MODELS", "MAX_SEED"]

INITS: tuple[str, ...] = ("none", "erk")
SHARING_MODELS: tuple[str, ...] = ("resnet20", "resnet50")
# numpy's classic seed range; the loop derives per-epoch seeds as seed * 100_003 + epoch, which
# stays far below torch.manual_seed's 2**64 limit for any seed in it.
MAX_SEED = 2**32 - 1


class ConfigError(ValueError):
    """A config value or file is invalid; the message says which and what is allowed."""


@dataclass
class TrainConfig:
    """Every knob of a run. Defaults: Feather's CIFAR recipe (docs/algorithms.md section 3)."""

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
    # EAST tricks for extreme sparsity (docs/algorithms.md section 5; train/east/)
    init: str = "none"  # "erk": per-layer ERK allocation instead of the backbone's
    dyrelu_phasing: bool = False
    dyrelu_start: float | None = None  # epoch where DyReLU starts phasing out (None: E/4)
    dyrelu_end: float | None = None  # epoch from which it is plain ReLU (None: E/2 - 1)
    weight_sharing: bool = False
    cyclic_sparsity: bool = False
    cyclic_multiple: float = 3.0
    cyclic_cycles: int = 2
    cyclic_period: int | None = None  # iterations between updates (None: 100 or >= 20 per cycle)
    cyclic_end: float = 0.65  # fraction of iterations where the cycles end (regrowth ends at 0.75)
    # execution
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def validate(self) -> TrainConfig:
        """Raise ConfigError for any value of the wrong type or outside its domain; return self."""
        from featherdeploy.train.backbones import BACKBONES
        from featherdeploy.train.feather import OPERATORS

        problem = type_problem(self)
        _check(problem is None, str(problem))  # first: the range checks below compare numbers
        self._validate_names()
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
        self._validate_optimizer()
        _check(0 <= self.seed <= MAX_SEED, f"seed must be in [0, 2**32 - 1], got {self.seed}")
        _check(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"),
               f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        for limit in (self.limit_train, self.limit_test):
            _check(limit is None or limit >= 1, "limits must be >= 1")
        self._validate_east()
        return self

    def _validate_names(self) -> None:
        from featherdeploy.train.data_arrays import DATASET_NAMES
        from featherdeploy.train.models import MODEL_NAMES

        # The name is one folder under runs_dir: "..", "." or "a/b" would write elsewhere.
        _check(bool(self.name) and "/" not in self.name and self.name not in (".", "..")
               and "\0" not in self.name, f"bad run name {self.name!r}")
        for path in (self.runs_dir, self.data_dir or ""):
            _check("\0" not in path, f"path {path!r} holds a NUL byte")
        _check(self.dataset in DATASET_NAMES,
               f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASET_NAMES)}")
        _check(self.model in MODEL_NAMES,
               f"unknown model {self.model!r}; choose from {', '.join(MODEL_NAMES)}")

    def _validate_optimizer(self) -> None:
        # Finiteness is the type check's; these are the ranges where SGD means something.
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        _check(0 <= self.warmup_epochs <= self.epochs,
               f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        _check(0.0 <= self.label_smoothing < 1.0,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(self.grad_clip is None or self.grad_clip > 0,
               f"grad_clip must be > 0 (or null), got {self.grad_clip}")

    def _validate_east(self) -> None:
        _check(self.init in INITS, f"init must be one of {INITS}, got {self.init!r}")
        _check(self.allocation == "backbone" or self.backbone == "global",
               f"init erk / cyclic sparsity set a per-layer ERK allocation and cannot be combined "
               f"with backbone {self.backbone!r}; leave backbone at 'global'")
        start, end = self.dyrelu_window
        _check(0.0 <= start < end <= self.epochs,
               f"need 0 <= dyrelu_start < dyrelu_end <= epochs, got {start}, {end}")
        _check(not self.weight_sharing or self.model in SHARING_MODELS,
               f"weight sharing needs a ResNet with >= 3 blocks per stage: {SHARING_MODELS}")
        if self.cyclic_sparsity:
            _check(self.sparsity > 0.0, "cyclic sparsity needs a sparsity > 0")
            _check(self.cyclic_multiple >= 1.0
                   and self.cyclic_multiple * (1.0 - self.sparsity) <= 1.0,
                   f"cyclic_multiple must be >= 1 and keep multiple * density <= 1, got "
                   f"{self.cyclic_multiple} at density {1.0 - self.sparsity:.6g}")
            _check(self.cyclic_cycles >= 1, "cyclic_cycles must be >= 1")
            _check(self.cyclic_period is None or self.cyclic_period >= 1,
                   "cyclic_period must be >= 1")
            _check(self.prune_end < self.cyclic_end <= 1.0,
                   f"need prune_end < cyclic_end <= 1, got {self.prune_end}, {self.cyclic_end}")
            _check(self.theta == "auto" or self.theta > 0.0,
                   "cyclic sparsity regrows by gradient magnitude and needs theta > 0")

    @property
    def allocation(self) -> str:
        """'erk' when --init erk or --cyclic-sparsity (which allocates by ERK), else 'backbone'."""
        return "erk" if self.init == "erk" or self.cyclic_sparsity else "backbone"

    @property
    def dyrelu_window(self) -> tuple[float, float]:
        """(start, end) epochs of the DyReLU phase-out: the given values or (E/4, E/2 - 1)."""
        from featherdeploy.train.east.dyrelu import default_window

        default_start, default_end = default_window(self.epochs)
        start = default_start if self.dyrelu_start is None else self.dyrelu_start
        end = default_end if self.dyrelu_end is None else self.dyrelu_end
        return start, end

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def type_problem(instance: Any) -> str | None:
    """What is wrong with the first field of dataclass ``instance`` whose value does not fit its
    annotation, or None. YAML and JSON hand over whatever the user typed, so this is stricter
    than isinstance: a bool is no int, 2.5 is no int, a float must be finite (an int is a fine
    float). The one type check of every config dataclass (TrainConfig, CompileOptions)."""
    hints = typing.get_type_hints(type(instance))
    for item in dataclasses.fields(instance):
        value, expected = getattr(instance, item.name), hints[item.name]
        if not _fits(value, expected):
            return (f"{item.name} must be {_describe(expected)}, got {value!r} "
                    f"({type(value).__name__}{_text_hint(value, expected)})")
    return None


def _fits(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in args)
    if expected is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected in (bool, str, type(None)):
        return isinstance(value, expected)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(key, args[0]) for key in value)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        items = args[:1] * len(value) if args[1:] == (Ellipsis,) else args
        return len(items) == len(value) and all(
            _fits(v, t) for v, t in zip(value, items, strict=True))
    raise TypeError(f"type_problem cannot check {expected!r}; teach _fits")  # a new field type


_TYPE_NAMES = {float: "a finite number", int: "an integer", bool: "true or false",
               str: "a string", type(None): "null"}


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(expected))
    if origin is dict:
        return "a mapping"
    if origin is tuple:
        return "a list"
    return _TYPE_NAMES.get(expected, str(expected))


def _text_hint(value: Any, expected: Any) -> str:
    """Why a number may have arrived as text: PyYAML (YAML 1.1) reads 5e-4 without a dot as a
    string, and quotes make any number one."""
    if not isinstance(value, str) or not _fits(0.0, expected):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return "; YAML reads quoted numbers and exponents without a dot as text: write 5.0e-4"


def _coerce(name: str, value: Any) -> Any:
    """Normalise a raw YAML/CLI value for field ``name``: theta 'auto' in any case, ints as floats
    for float fields. Everything else is left as typed for the type check to judge."""
    if name == "theta" and isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    float_fields = {f.name for f in dataclasses.fields(TrainConfig) if "float" in str(f.type)}
    if name in float_fields and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_yaml_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (empty file -> {}); ConfigError otherwise.

    The one YAML reader of the project: compile and benchmark CLIs wrap its error in their own.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
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
    if config.dyrelu_phasing:  # record the epochs actually used, not "default"
        config.dyrelu_start, config.dyrelu_end = config.dyrelu_window
    config.validate()
    if config.data_dir is not None:  # model.pt is compiled and benchmarked from other folders
        config.data_dir = str(Path(config.data_dir).absolute())
    return config


def to_yaml(config: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
