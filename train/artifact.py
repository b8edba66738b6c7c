"""``model.pt``: the finalized, self-describing model artifact the compile stage consumes.

A plain dict (no pickled classes, loads with ``torch.load(weights_only=True)``):

    format "featherdeploy.model", version 1, model_name, model_kwargs, input_shape [C, H, W],
    num_classes, dataset, data_dir, mean, std, prunable (weight FQNs), config (resolved
    TrainConfig dict), state_dict (plain weights with exact zeros; no parametrizations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featherdeploy.runtime.atomic import atomic_writer

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_VERSION", "ArtifactError", "ModelMeta",
           "atomic_torch_save", "non_finite_tensor", "save_model_artifact", "load_model_artifact"]

ARTIFACT_FORMAT = "featherdeploy.model"
ARTIFACT_VERSION = 1


class ArtifactError(ValueError):
    """model.pt is missing, corrupt, of another format/version, or does not fit its model."""


@dataclass
class ModelMeta:
    model_name: str
    model_kwargs: dict[str, Any]
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset: str
    data_dir: str | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    prunable: list[str]
    config: dict[str, Any] = field(default_factory=dict)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save through :func:`runtime.atomic.atomic_writer` (temp file, fsync, rename)."""
    with atomic_writer(path) as handle:
        torch.save(obj, handle)


def non_finite_tensor(model: nn.Module) -> str | None:
    """The name of the first float parameter or buffer holding NaN or Inf, or None."""
    # A float64 sum is NaN/Inf iff an entry is (|float32| < 3.4e38: no overflow), and is
    # several times cheaper than an elementwise isfinite on ResNet-50's 25M weights.
    with torch.no_grad():
        for name, tensor in chain(model.named_parameters(), model.named_buffers()):
            if tensor.is_floating_point() and not torch.isfinite(
                    tensor.sum(dtype=torch.float64)):
                return name
    return None


def save_model_artifact(path: str | Path, model: nn.Module, meta: ModelMeta) -> None:
    """Write model.pt atomically; a model with NaN/Inf weights is refused (ArtifactError)."""
    bad = non_finite_tensor(model)
    if bad is not None:
        raise ArtifactError(f"{bad} holds NaN or Inf; refusing to write {path}")
    payload = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "model_name": meta.model_name,
        "model_kwargs": dict(meta.model_kwargs),
        "input_shape": list(meta.input_shape),
        "num_classes": meta.num_classes,
        "dataset": meta.dataset,
        "data_dir": meta.data_dir,
        "mean": list(meta.mean),
        "std": list(meta.std),
        "prunable": list(meta.prunable),
        "config": meta.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_torch_save(payload, path)


def _read_payload(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ArtifactError(f"model artifact not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ArtifactError(f"cannot read {path}: not a valid model.pt ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} is not a {ARTIFACT_FORMAT} artifact")
    if payload.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{path} has format version {payload.get('version')}; "
                            f"this build reads version {ARTIFACT_VERSION}")
    return payload


def load_model_artifact(path: str | Path) -> tuple[nn.Module, ModelMeta]:
    """Rebuild the model from its name/kwargs and load the weights (eval mode, CPU)."""
    from featherdeploy.train.models import build_model

    path = Path(path)
    payload = _read_payload(path)
    channels, size, _ = payload["input_shape"]
    meta = ModelMeta(
        model_name=payload["model_name"], model_kwargs=payload["model_kwargs"],
        input_shape=tuple(payload["input_shape"]), num_classes=payload["num_classes"],
        dataset=payload["dataset"], data_dir=payload["data_dir"],
        mean=tuple(payload["mean"]), std=tuple(payload["std"]),
        prunable=list(payload["prunable"]), config=payload.get("config", {}))
    model = build_model(meta.model_name, in_channels=channels, num_classes=meta.num_classes,
                        image_size=size, **meta.model_kwargs)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit {meta.model_name}: {exc}") from exc
    return model.eval(), meta
