"""Inputs of a compile taken from a training run: model.pt, sparsity.json and the images.

A run directory (``featherdeploy train``) holds ``model.pt`` (``train/artifact.py``),
``config.yaml`` and ``sparsity.json`` (``train/flops.py``). Verification uses the first test images
of the run's dataset (``train/data_arrays.py``, torch-free) or a user-given ``.npy``; accuracy uses
the whole test set. Every failure becomes one :class:`CompileError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featherdeploy.compile.errors import CompileError

if TYPE_CHECKING:
    from torch import nn

    from featherdeploy.compile.pipeline import CompileOptions

__all__ = ["EvalData", "model_pt_path", "load_artifact", "read_sparsity_json", "run_eval_data",
           "load_inputs"]


@dataclass
class EvalData:
    """Images the compile checks on: ``verify`` for agreement, ``test`` (+labels) for accuracy."""

    verify: np.ndarray  # (N, C, H, W) float32
    source: str  # where the verification images came from
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def read_sparsity_json(path: Path) -> dict[str, Any] | None:
    """The run's sparsity.json (None when absent); a corrupt file is a :class:`CompileError`."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompileError(f"corrupt run directory: cannot parse {path}: {exc}") from exc
    if not isinstance(content, dict):
        raise CompileError(f"corrupt run directory: {path} is not a JSON object")
    return content


def model_pt_path(run: Path) -> Path:
    """``run/model.pt`` for a run directory, or ``run`` itself when it is the file."""
    path = run / "model.pt" if run.is_dir() else run
    if not path.is_file():
        raise CompileError(f"no model.pt at {path}: pass a run directory made by "
                           f"`featherdeploy train` (or its model.pt)")
    return path


def load_artifact(path: Path) -> tuple[nn.Module, Any]:
    """(eval-mode model, ModelMeta) from model.pt via ``train.artifact``."""
    from featherdeploy.train.artifact import ArtifactError, load_model_artifact

    try:
        return load_model_artifact(path)
    except (ArtifactError, ValueError, KeyError, TypeError) as exc:
        raise CompileError(f"cannot load {path}: {exc}") from exc


def run_eval_data(meta: Any, options: CompileOptions) -> EvalData:
    """Verification images (test set head or ``options.inputs``) and, if wanted, the test set."""
    if options.inputs and not options.accuracy:
        return EvalData(load_inputs(options.inputs, tuple(meta.input_shape)), options.inputs)
    images, labels = _load_test_set(meta.dataset, options.data_dir or meta.data_dir)
    if options.inputs:
        verify, source = load_inputs(options.inputs, tuple(meta.input_shape)), options.inputs
    else:
        verify, source = images[:options.verify_images], f"{meta.dataset} test set"
    return EvalData(verify, source, images, labels)


def _load_test_set(dataset: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    try:
        from featherdeploy.train.data_arrays import DatasetError, load_test_arrays
    except ImportError as exc:
        raise CompileError(f"cannot load test images ({exc}); pass --inputs FILE.npy "
                           f"and --no-accuracy") from exc
    try:
        images, labels = load_test_arrays(dataset, data_dir)
    except (DatasetError, OSError, ValueError) as exc:  # missing or malformed files
        raise CompileError(f"cannot load the {dataset} test set from {data_dir}: "
                           f"{str(exc).rstrip('.')}; "
                           f"pass --data-dir DIR (or --inputs FILE.npy --no-accuracy)") from exc
    return np.ascontiguousarray(images, dtype=np.float32), np.asarray(labels)


def load_inputs(path: str, input_shape: tuple[int, ...]) -> np.ndarray:
    """Verification inputs from a ``.npy`` file: float32, shape (N, *input_shape), finite."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CompileError(f"cannot read verification inputs {path}: {exc}") from exc
    if array.ndim != 4 or tuple(array.shape[1:]) != input_shape or len(array) == 0:
        expected = ", ".join(map(str, input_shape))
        raise CompileError(f"{path}: expected inputs of shape (N, {expected}), got {array.shape}")
    if not np.isfinite(array).all():
        raise CompileError(f"{path}: inputs hold NaN or Inf")
    return np.ascontiguousarray(array, dtype=np.float32)
