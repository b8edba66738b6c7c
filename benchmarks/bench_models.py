"""Build the benchmark ONNX models of the engine-vs-peers benchmark (docs/performance.md).

Models: ResNet-20x2 (widths 32/64/128, 3x32x32, 100 classes), the CIFAR MobileNetV1 (3x32x32) and
ResNet-50's conv2_x stage (torchvision ``resnet50().layer1``: three bottlenecks 64->256 at 56x56,
input 64x56x56) as a model of its own. Every conv but the stem gets random unstructured sparsity
(exactly ``round(s * numel)`` zeros per layer, seeded); the FC layer stays dense. BatchNorm gets
random statistics so that folding it is not the identity, then ``torch.onnx.export`` (TorchScript
exporter, eval mode, opset 13) folds it into the convs; the file is saved with IR version 8 so
that DeepSparse 1.8 accepts it. Files are cached by name in a work directory.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featherdeploy.runtime.atomic import atomic_write_bytes

__all__ = [
    "BenchModelSpec",
    "BENCH_MODELS",
    "BenchModelError",
    "ONNX_IR_VERSION",
    "ONNX_OPSET",
    "build_bench_torch_model",
    "randomize_batchnorm",
    "prunable_convs",
    "sparsify_convs",
    "unfolded_batchnorms",
    "export_onnx",
    "bench_model_path",
]

ONNX_IR_VERSION = 8  # DeepSparse 1.8 reads IR <= 8; onnx 1.23 would write 14
ONNX_OPSET = 13
FILE_FORMAT_TAG = "v1"  # bump when the recipe below changes, so stale cached files are not reused


class BenchModelError(Exception):
    """Unknown model name or bad sparsity; benchmark CLIs exit with code 2."""


@dataclass(frozen=True)
class BenchModelSpec:
    """One benchmark model: how to build it, its input (C, H, W) and whether it has a stem."""

    name: str
    input_chw: tuple[int, int, int]
    build: Callable[[], nn.Module]
    has_stem: bool  # the stem (first conv) stays dense; a bare stage has none


def _resnet20x2() -> nn.Module:
    """CIFAR ResNet-20 with widths 32/64/128 (train.models registry)."""
    from featherdeploy.train.models import build_model
    return build_model("resnet20", in_channels=3, num_classes=100, image_size=32, width=2)


def _mobilenet_v1() -> nn.Module:
    """CIFAR MobileNetV1 with its stride-1 stem (train.models registry)."""
    from featherdeploy.train.models import build_model
    return build_model("mobilenet_v1", in_channels=3, num_classes=100, image_size=32)


def _resnet50_conv2x() -> nn.Module:
    """ResNet-50's conv2_x stage: torchvision resnet50's ``layer1`` (64 -> 256 channels, 56x56)."""
    from torchvision.models import resnet50
    return resnet50(weights=None).layer1


BENCH_MODELS: dict[str, BenchModelSpec] = {
    "resnet20x2": BenchModelSpec("resnet20x2", (3, 32, 32), _resnet20x2, True),
    "mobilenet_v1": BenchModelSpec("mobilenet_v1", (3, 32, 32), _mobilenet_v1, True),
    "resnet50_conv2x": BenchModelSpec("resnet50_conv2x", (64, 56, 56), _resnet50_conv2x, False),
}


def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm2d random affine parameters and running statistics, so the folded
    conv weights and biases differ from the unfolded ones (a real test of folding)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))


def _stem_name(model: nn.Module) -> str | None:
    """Name of the first Conv2d in registration order (the stem), or None."""
    return next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    """A depthwise conv: one group per input channel (channel multiplier 1 or more)."""
    return conv.groups > 1 and conv.groups == conv.in_channels


def prunable_convs(model: nn.Module, *, keep_stem_dense: bool,
                   keep_depthwise_dense: bool = False) -> dict[str, nn.Conv2d]:
    """The one rule of the benchmarks for which layers get sparsity: every Conv2d, except the
    stem (the first Conv2d) when ``keep_stem_dense`` and depthwise convs when
    ``keep_depthwise_dense``; Linear layers never. Module name -> conv, in registration order."""
    stem = _stem_name(model) if keep_stem_dense else None
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and name != stem
            and not (keep_depthwise_dense and _is_depthwise(module))}


def sparsify_convs(model: nn.Module, sparsity: float, generator: torch.Generator, *,
                   keep_stem_dense: bool, keep_depthwise_dense: bool = False) -> dict[str, int]:
    """Zero exactly ``round(sparsity * numel)`` random weights of every conv that
    :func:`prunable_convs` selects. Returns conv name -> zero count."""
    if not 0.0 <= sparsity < 1.0:
        raise BenchModelError(f"sparsity must be in [0, 1), got {sparsity}")
    zeros: dict[str, int] = {}
    with torch.no_grad():
        for name, module in prunable_convs(model, keep_stem_dense=keep_stem_dense,
                                           keep_depthwise_dense=keep_depthwise_dense).items():
            flat = module.weight.view(-1)
            count = int(round(sparsity * flat.numel()))
            flat[torch.randperm(flat.numel(), generator=generator)[:count]] = 0.0
            zeros[name] = count
    return zeros


def build_bench_torch_model(name: str, sparsity: float, *, seed: int = 0) -> nn.Module:
    """The seeded benchmark model ``name`` at ``sparsity`` (0..1), in eval mode."""
    spec = _spec(name)
    torch.manual_seed(seed)
    model = spec.build()
    generator = torch.Generator().manual_seed(seed)
    randomize_batchnorm(model, generator)
    sparsify_convs(model, sparsity, generator, keep_stem_dense=spec.has_stem)
    return model.eval()


def unfolded_batchnorms(proto: Any) -> list[str]:
    """Names of the BatchNormalization nodes that read a Conv's output: the exporter folds
    those into the conv, so any left means folding failed. A BatchNorm after something else
    (DenseNet's pre-activation BN after a Concat or a pooling) cannot be folded and stays."""
    producers = {output: node.op_type for node in proto.graph.node for output in node.output}
    return [node.name or node.output[0] for node in proto.graph.node
            if node.op_type == "BatchNormalization" and producers.get(node.input[0]) == "Conv"]


def export_onnx(model: nn.Module, input_chw: tuple[int, int, int], path: Path) -> None:
    """Export with a dynamic batch dim, BN folded into every conv it follows, opset 13, IR
    version 8; written atomically."""
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(model.eval(), (torch.zeros((1, *input_chw)),), buffer, dynamo=False,
                      opset_version=ONNX_OPSET, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = ONNX_IR_VERSION
    unfolded = unfolded_batchnorms(proto)
    if unfolded:
        raise BenchModelError(f"BatchNorm was not folded when exporting {path.name}: "
                              f"{', '.join(unfolded[:5])}")
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())


def bench_model_path(name: str, sparsity: float, work_dir: Path, *, seed: int = 0,
                     rebuild: bool = False) -> Path:
    """Path of the cached ONNX file for (name, sparsity, seed), building it when missing."""
    spec = _spec(name)
    percent = round(sparsity * 100, 2)
    path = work_dir / f"{name}-s{percent:g}-seed{seed}-{FILE_FORMAT_TAG}.onnx"
    if rebuild or not path.is_file():
        export_onnx(build_bench_torch_model(name, sparsity, seed=seed), spec.input_chw, path)
    return path


def conv_weight_sparsity(path: Path) -> dict[str, float]:
    """Fraction of zeros of every 4-D (conv) initializer of an ONNX file, by initializer name."""
    import onnx
    from onnx import numpy_helper

    result: dict[str, float] = {}
    for tensor in onnx.load(str(path)).graph.initializer:
        if len(tensor.dims) == 4:
            array = numpy_helper.to_array(tensor)
            result[tensor.name] = 1.0 - np.count_nonzero(array) / array.size
    return result


def _spec(name: str) -> BenchModelSpec:
    """The spec of a benchmark model, or :class:`BenchModelError` naming the valid ones."""
    if name not in BENCH_MODELS:
        raise BenchModelError(f"unknown benchmark model {name!r}; valid: "
                              f"{', '.join(BENCH_MODELS)}")
    return BENCH_MODELS[name]
