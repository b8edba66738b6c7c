"""The torch part of the zoo: a registry of torchvision, timm and custom models at their native
resolution, their non-degenerate random weights, pruning, and the ONNX export users do."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx
import torch
from torch import nn

from benchmarks.zoo.common import DEFAULT_OPSET, ONNX_IR_VERSION, ZooError
from benchmarks.zoo.torch_prep import calibrate_bn, has_batchnorm, prune_model, randomize_bn_affine

__all__ = ["TorchModelSpec", "TORCH_MODELS", "prepare_torch_model", "export_onnx_bytes",
           "pruned_torch_model"]

CLASSIFIER_BATCHES = (1, 8)
DETECTOR_BATCHES = (1, 4)
LAYERNORM_OPSET = 17  # LayerNormalization exists from opset 17; torch users of ConvNeXt use it


@dataclass(frozen=True)
class TorchModelSpec:
    """One torch model of the zoo: how to build it, its input, outputs and export opset.

    ``post_calibration`` runs after the BatchNorm statistics are measured and before export
    (RepVGG's reparameterization into its deploy form: it folds the BatchNorms it needs).
    """

    name: str
    kind: str  # "torchvision", "timm" or "custom"
    source: str
    build: Callable[[], nn.Module]
    input_hw: tuple[int, int] = (224, 224)
    opset: int = DEFAULT_OPSET
    output_names: tuple[str, ...] = ("logits",)
    batch_sizes: tuple[int, ...] = CLASSIFIER_BATCHES
    task: str = "classification"
    post_calibration: Callable[[nn.Module], nn.Module] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """The batch-1 NCHW input shape."""
        return (1, 3, *self.input_hw)


def _torchvision(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    """A builder of ``torchvision.models.<name>(weights=None, **kwargs)``."""
    def build() -> nn.Module:
        import torchvision.models as models
        return getattr(models, name)(weights=None, **kwargs)
    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    """A builder of ``timm.create_model(name, pretrained=False)``."""
    def build() -> nn.Module:
        import timm
        return timm.create_model(name, pretrained=False)
    return build


def _reparameterize(model: nn.Module) -> nn.Module:
    """timm's deploy form: every RepVGG block's branches fused into one 3x3 conv."""
    from timm.utils import reparameterize_model
    return reparameterize_model(model)


def _yolo() -> nn.Module:
    from benchmarks.zoo.custom_models import YoloV8Style
    return YoloV8Style()


def _dbnet() -> nn.Module:
    from benchmarks.zoo.custom_models import DBTextDetector
    return DBTextDetector()


def _tv(name: str, *notes: str, **kwargs: object) -> TorchModelSpec:
    """A torchvision classifier at 224x224."""
    return TorchModelSpec(name, "torchvision", f"torchvision.models.{name}",
                          _torchvision(name, **kwargs), notes=notes)


def _registry() -> dict[str, TorchModelSpec]:
    """Every torch model of the zoo by name."""
    specs = [
        _tv("resnet18"), _tv("resnet50"), _tv("mobilenet_v2"), _tv("mobilenet_v3_small"),
        _tv("mobilenet_v3_large"), _tv("efficientnet_b0"), _tv("regnet_y_400mf"),
        _tv("shufflenet_v2_x1_0"), _tv("densenet121"), _tv("squeezenet1_1"), _tv("mnasnet1_0"),
        _tv("googlenet", "inception blocks; aux heads off (as in eval mode)",
            aux_logits=False, init_weights=True),
        TorchModelSpec("convnext_tiny", "torchvision", "torchvision.models.convnext_tiny",
                       _torchvision("convnext_tiny"), opset=LAYERNORM_OPSET,
                       notes=("opset 17 for LayerNormalization",)),
        TorchModelSpec("ghostnet_100", "timm", "timm:ghostnet_100", _timm("ghostnet_100")),
        TorchModelSpec("repvgg_a0", "timm", "timm:repvgg_a0", _timm("repvgg_a0"),
                       post_calibration=_reparameterize,
                       notes=("deploy form: timm.utils.reparameterize_model",)),
        TorchModelSpec("repvgg_a0_train", "timm", "timm:repvgg_a0", _timm("repvgg_a0"),
                       notes=("training form: 3x3, 1x1 and identity-BN branches",)),
        TorchModelSpec("yolov8n_style", "custom", "benchmarks.zoo.custom_models.YoloV8Style",
                       _yolo, input_hw=(640, 640), output_names=("p3_s8", "p4_s16", "p5_s32"),
                       batch_sizes=DETECTOR_BATCHES, task="detection",
                       notes=("raw decoupled head maps: 64 box (4 x 16 DFL) + 80 class channels",)),
        TorchModelSpec("dbnet_resnet18", "custom", "benchmarks.zoo.custom_models.DBTextDetector",
                       _dbnet, input_hw=(640, 640), output_names=("prob",),
                       batch_sizes=DETECTOR_BATCHES, task="text-detection"),
    ]
    return {spec.name: spec for spec in specs}


TORCH_MODELS: dict[str, TorchModelSpec] = _registry()


def prepare_torch_model(spec: TorchModelSpec, seed: int, *, randomize_bn: bool = True) -> nn.Module:
    """Build ``spec``'s model with seeded init, random BatchNorm affine and running statistics
    measured on N(0, 1) inputs (skipped when not ``randomize_bn``), then the post-calibration
    step. Returns it in eval mode."""
    torch.manual_seed(seed)
    model = spec.build().eval()
    if randomize_bn and has_batchnorm(model):
        generator = torch.Generator().manual_seed(seed)
        randomize_bn_affine(model, generator)
        calibrate_bn(model, [_calibration_shape(spec)], generator)
    if spec.post_calibration is not None:
        model = spec.post_calibration(model)
    return model.eval()


def pruned_torch_model(model: nn.Module, spec: TorchModelSpec, sparsity: float, seed: int) -> int:
    """Magnitude-prune ``model`` in place, then measure its BatchNorm statistics again (the
    stand-in for the fine-tuning that follows pruning). Returns the number of pruned tensors."""
    count = len(prune_model(model, sparsity))
    if has_batchnorm(model):
        calibrate_bn(model, [_calibration_shape(spec)], torch.Generator().manual_seed(seed + 1))
    return count


def _calibration_shape(spec: TorchModelSpec) -> tuple[int, ...]:
    """A small random batch at the native resolution."""
    return (4, 3, *spec.input_hw) if max(spec.input_hw) <= 320 else (2, 3, *spec.input_hw)


def export_onnx_bytes(model: nn.Module, spec: TorchModelSpec) -> bytes:
    """``torch.onnx.export`` as users call it (TorchScript exporter, eval mode, dynamic batch,
    the spec's opset), saved with IR version 8. No simplification: the exporter's shape
    plumbing stays."""
    buffer = io.BytesIO()
    axes = {name: {0: "batch"} for name in ("input", *spec.output_names)}
    with torch.no_grad():
        torch.onnx.export(model.eval(), (torch.randn(spec.input_shape),), buffer, dynamo=False,
                          opset_version=spec.opset, input_names=["input"],
                          output_names=list(spec.output_names), dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def torch_spec(name: str) -> TorchModelSpec:
    """The spec called ``name`` or :class:`ZooError`."""
    if name not in TORCH_MODELS:
        raise ZooError(f"unknown torch model {name!r}")
    return TORCH_MODELS[name]
