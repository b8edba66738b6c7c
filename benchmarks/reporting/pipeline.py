"""Per-point plumbing shared by the frontier and ablation sweeps.

A sweep point is trained, compiled and benchmarked by the project's own CLIs run as subprocesses
(`python -m featherdeploy.train`, `python -m featherdeploy.compile`, `python -m benchmarks.bench`);
this module builds their command lines, writes each point's resolved train config, and reads back
the JSON files the stages leave behind (`runs/NAME/summary.json`, `artifacts/NAME/bench.json`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.stages import Stage, python_module_argv, run_stage
from featherdeploy.runtime.atomic import atomic_write_text

__all__ = [
    "PointPaths",
    "load_yaml_mapping",
    "check_keys",
    "merged_train_config",
    "validate_train_config",
    "write_point_config",
    "train_stage",
    "compile_stage",
    "bench_stage",
    "run_stages",
    "read_json_file",
    "format_percent_id",
]

# Run-identity keys the sweep sets on the command line; a sweep file must not set them.
_RESERVED_TRAIN_KEYS = ("name", "runs_dir", "progress")


@dataclass(frozen=True)
class PointPaths:
    """Where one point's files live."""

    point_id: str
    config: Path      # resolved train config written for this point
    run_dir: Path     # runs/ID (train output)
    artifact_dir: Path  # artifacts/ID (compile + bench output)
    log_dir: Path

    @classmethod
    def for_point(cls, point_id: str, *, state_dir: Path, runs_dir: Path,
                  artifacts_dir: Path) -> PointPaths:
        """Standard layout: configs and logs under the sweep's state directory."""
        return cls(point_id, state_dir / "configs" / f"{point_id}.yaml", runs_dir / point_id,
                   artifacts_dir / point_id, state_dir / "logs")


def load_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (train.config's reader); BenchInputError else."""
    from featherdeploy.train.config import ConfigError, load_yaml_config

    try:
        return load_yaml_config(path)
    except ConfigError as error:
        raise BenchInputError(str(error)) from error


def check_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """BenchInputError naming unknown keys (typos must not be silently ignored)."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BenchInputError(f"unknown keys {unknown} in {where}; allowed: {sorted(allowed)}")


def load_sweep_spec(spec_cls: type, path: str | os.PathLike[str],
                    tuple_fields: Sequence[str], overrides: Mapping[str, Any]) -> Any:
    """Build a frozen sweep-spec dataclass from a YAML file; ``overrides`` win over the file.

    List-valued keys named in ``tuple_fields`` become tuples; ``train`` must be a mapping of
    TrainConfig fields; the spec's own ``validate()`` checks the values.
    """
    data = load_yaml_mapping(path)
    check_keys(data, {f.name for f in dataclasses.fields(spec_cls)}, str(path))
    data.update({k: v for k, v in overrides.items() if v is not None})
    for key in tuple_fields:
        if key in data:
            if not isinstance(data[key], list):
                raise BenchInputError(f"{key} in {path} must be a list")
            data[key] = tuple(data[key])
    if not isinstance(data.get("train", {}), dict):
        raise BenchInputError(f"train in {path} must be a mapping of TrainConfig fields")
    try:
        return spec_cls(**data).validate()
    except TypeError as error:
        raise BenchInputError(f"{path}: {error}") from error


def merged_train_config(base_config: str | None, common: Mapping[str, Any],
                        point: Mapping[str, Any]) -> dict[str, Any]:
    """Base config file values <- sweep-wide train values <- the point's own values."""
    merged = dict(load_yaml_mapping(base_config)) if base_config else {}
    for layer in (common, point):
        reserved = sorted(set(layer) & set(_RESERVED_TRAIN_KEYS))
        if reserved:
            raise BenchInputError(f"a sweep may not set {reserved}; the sweep names each run")
        merged.update(layer)
    for key in _RESERVED_TRAIN_KEYS:
        merged.pop(key, None)
    return merged


def validate_train_config(values: Mapping[str, Any], point_id: str) -> None:
    """Check a point's train config with the train stage's own validator (fail before running)."""
    from featherdeploy.train.config import ConfigError, resolve_config

    try:
        resolve_config(dict(values), {"name": point_id})
    except ConfigError as error:
        raise BenchInputError(f"sweep point {point_id}: {error}") from error


def write_point_config(path: Path, values: Mapping[str, Any]) -> Path:
    """Write the point's resolved train config (YAML) atomically."""
    import yaml

    atomic_write_text(path, yaml.safe_dump(dict(values), sort_keys=True))
    return path


def train_stage(paths: PointPaths) -> Stage:
    """`python -m featherdeploy.train --config CFG --name ID --runs-dir DIR --no-progress
    [--resume]`.

    A point killed after its first checkpoint resumes from it; one killed before (run directory
    not empty, no checkpoint) starts again with --overwrite.
    """
    args = ["--config", str(paths.config), "--name", paths.point_id,
            "--runs-dir", str(paths.run_dir.parent), "--no-progress"]
    if (paths.run_dir / "checkpoint.pt").exists():
        args.append("--resume")
    elif paths.run_dir.is_dir() and any(paths.run_dir.iterdir()):
        args.append("--overwrite")
    return Stage("train", python_module_argv("featherdeploy.train", *args),
                 paths.run_dir / "summary.json")


def compile_stage(paths: PointPaths) -> Stage:
    """`python -m featherdeploy.compile runs/ID --out artifacts/ID`."""
    argv = python_module_argv("featherdeploy.compile", str(paths.run_dir),
                              "--out", str(paths.artifact_dir))
    return Stage("compile", argv, paths.artifact_dir / "report.json")


def bench_stage(paths: PointPaths, *, threads: int, rounds: int, limit: int | None) -> Stage:
    """`python -m benchmarks.bench artifacts/ID` at batch 1, one thread count, ORT dense vs us."""
    args = [str(paths.artifact_dir), "--threads", str(threads), "--batches", "1",
            "--rounds", str(rounds), "--no-ort-sparse"]
    if limit is not None:
        args += ["--limit", str(limit)]
    return Stage("bench", python_module_argv("benchmarks.bench", *args),
                 paths.artifact_dir / "bench.json")


def run_stages(stages: list[Stage], paths: PointPaths, *,
               timeout_s: float | None = None) -> None:
    """Run the stages in order (each skipped when already done); the first failure raises."""
    for stage in stages:
        run_stage(stage, paths.log_dir / f"{paths.point_id}.{stage.name}.log",
                  timeout_s=timeout_s)


def read_json_file(path: Path) -> dict[str, Any]:
    """A stage's JSON output; a clear error if a stage claimed success without it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RuntimeError(f"cannot read {path}: {error}") from error


def format_percent_id(fraction: float) -> str:
    """Sparsity fraction -> id fragment: 0.95 -> '95', 0.995 -> '99p5', 0 -> '0'."""
    return f"{round(fraction * 100, 6):g}".replace(".", "p")
