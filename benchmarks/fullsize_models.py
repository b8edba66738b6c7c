"""The full-size networks of the peer suite (issue 21), built and cached as ONNX files.

torchvision ResNet-18, ResNet-50, MobileNetV2 and DenseNet-121 (the four networks issue 21 names),
and the modern CNNs of the model zoo that run natively (EfficientNet-B0, MobileNetV3-Large,
RegNetY-400MF, ShuffleNetV2 x1.0: squeeze-and-excitation, hard-swish, grouped convs, channel
shuffles), at 3x224x224 with random weights. Every conv but the stem and the depthwise convs
gets random unstructured sparsity (exactly ``round(s * numel)`` zeros per layer, seeded:
``bench_models.sparsify_convs``, the benchmarks' one prunable-layer rule); the classifier stays
dense. Then every BatchNorm gets a random affine and running statistics measured on N(0, 1)
inputs through the pruned network (the model zoo's recipe, ``benchmarks.zoo.torch_prep``): with
torchvision's default statistics MobileNetV2's logits are ~1e-9 and a relative output check
would mean nothing. Export as in ``bench_models.export_onnx``: BN folded into every conv it
follows (DenseNet's pre-activation BNs read a concat or a pooling, so they stay
BatchNormalization nodes, as in any export of it), opset 13, IR version 8 (DeepSparse 1.8 reads
<= 8), dynamic batch, input ``input``, output ``output``. Files are written atomically and
reused by name, so a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.bench_models import BenchModelError, export_onnx, sparsify_convs

__all__ = [
    "FullsizeModelSpec",
    "FULLSIZE_MODELS",
    "CLASSIC_MODELS",
    "MODERN_MODELS",
    "FULLSIZE_FORMAT_TAG",
    "build_fullsize_torch_model",
    "fullsize_model_path",
    "check_not_degenerate",
]

FULLSIZE_FORMAT_TAG = "full-v1"  # bump when the recipe changes: stale cached files are not reused
CALIBRATION_BATCH = 4  # images per BatchNorm calibration batch (two batches, benchmarks.zoo)
DEGENERATE_SPREAD = 1e-3  # outputs must vary between images by more than this x their magnitude


@dataclass(frozen=True)
class FullsizeModelSpec:
    """One network of the suite: how to build it (random weights) and its input (C, H, W)."""

    name: str
    input_chw: tuple[int, int, int]
    build: Callable[[], nn.Module]


def _torchvision(name: str) -> Callable[[], nn.Module]:
    """A builder of ``torchvision.models.<name>(weights=None)``."""
    def build() -> nn.Module:
        import torchvision.models as models
        return getattr(models, name)(weights=None)
    return build


CLASSIC_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "densenet121")
MODERN_MODELS = ("efficientnet_b0", "mobilenet_v3_large", "regnet_y_400mf", "shufflenet_v2_x1_0")
FULLSIZE_MODELS: dict[str, FullsizeModelSpec] = {
    name: FullsizeModelSpec(name, (3, 224, 224), _torchvision(name))
    for name in (*CLASSIC_MODELS, *MODERN_MODELS)
}


def check_not_degenerate(outputs: np.ndarray, label: str) -> None:
    """:class:`BenchModelError` unless the outputs (N >= 2, ...) of N different inputs differ:
    a network whose output ignores its input would make every correctness check pass."""
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    scale = float(np.max(np.abs(outputs)))
    spread = float(np.max(np.abs(outputs - outputs[:1])))
    if not np.isfinite(scale) or scale == 0.0 or spread <= DEGENERATE_SPREAD * scale:
        raise BenchModelError(f"{label}: degenerate outputs (max |out| {scale:.3g}, largest "
                              f"difference between images {spread:.3g})")


def build_fullsize_torch_model(spec: FullsizeModelSpec, sparsity: float, *,
                               seed: int = 0) -> nn.Module:
    """The seeded network of ``spec`` at ``sparsity`` (0..1) with calibrated BatchNorms, in eval
    mode; :class:`BenchModelError` if its outputs do not depend on its input."""
    from benchmarks.zoo.torch_prep import calibrate_bn, randomize_bn_affine

    torch.manual_seed(seed)
    model = spec.build()
    generator = torch.Generator().manual_seed(seed)
    sparsify_convs(model, sparsity, generator, keep_stem_dense=True, keep_depthwise_dense=True)
    randomize_bn_affine(model, generator)
    calibrate_bn(model, [(CALIBRATION_BATCH, *spec.input_chw)], generator)
    with torch.no_grad():
        outputs = model(torch.randn((2, *spec.input_chw), generator=generator))
    check_not_degenerate(outputs.numpy(), f"{spec.name} at {sparsity:.0%}")
    return model


def fullsize_model_path(name: str, sparsity: float, models_dir: Path, *, seed: int = 0,
                        rebuild: bool = False,
                        models: dict[str, FullsizeModelSpec] | None = None) -> Path:
    """Path of the cached ONNX file for (name, sparsity, seed), built when missing.
    ``models`` is the registry to look the name up in (default :data:`FULLSIZE_MODELS`)."""
    registry = FULLSIZE_MODELS if models is None else models
    if name not in registry:
        raise BenchModelError(f"unknown model {name!r}; valid: {', '.join(registry)}")
    if not 0.0 <= sparsity < 1.0:
        raise BenchModelError(f"sparsity must be in [0, 1), got {sparsity}")
    spec = registry[name]
    percent = round(sparsity * 100, 2)
    path = models_dir / f"{name}-s{percent:g}-seed{seed}-{FULLSIZE_FORMAT_TAG}.onnx"
    if rebuild or not path.is_file():
        export_onnx(build_fullsize_torch_model(spec, sparsity, seed=seed), spec.input_chw, path)
    return path
