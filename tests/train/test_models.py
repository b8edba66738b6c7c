"""Tests for train.models: shapes, exact weight counts, structure, determinism, ONNX export."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from featherdeploy.train.models import MODEL_NAMES, ModelError, build_model, model_kwargs

# float32 torch vs ONNX Runtime on the same graph: only summation order differs.
ONNX_ATOL = 1e-4
ONNX_RTOL = 1e-3
# Module types a model may contain (Sequential/containers excluded: they do no compute).
ALLOWED_LEAVES = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.ReLU, nn.AdaptiveAvgPool2d,
                  nn.AvgPool2d, nn.MaxPool2d, nn.Identity)
ALLOWED_ONNX_OPS = {"Conv", "BatchNormalization", "Relu", "Add", "Concat", "GlobalAveragePool",
                    "AveragePool", "MaxPool", "Flatten", "Gemm", "Identity"}
# Dataset shapes: (in_channels, image_size, num_classes).
FASHION_MNIST = (1, 28, 10)
CIFAR100 = (3, 32, 100)
LIGHT_MODELS = [name for name in MODEL_NAMES if name != "resnet50"]


def conv_linear_weights(model: nn.Module) -> int:
    """Number of Conv2d + Linear weights (what the paper calls the prunable weights)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def build(name: str, shape: tuple[int, int, int], **kwargs: object) -> nn.Module:
    channels, size, classes = shape
    return build_model(name, in_channels=channels, num_classes=classes, image_size=size, **kwargs)


@pytest.mark.parametrize("shape", [FASHION_MNIST, CIFAR100], ids=["fmnist", "cifar100"])
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_output_shape(name: str, shape: tuple[int, int, int]) -> None:
    channels, size, classes = shape
    torch.manual_seed(0)
    model = build(name, shape).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, channels, size, size))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


def test_resnet50_small_input_shape() -> None:
    model = build("resnet50", FASHION_MNIST).eval()
    assert model.conv1.weight.shape == (64, 1, 3, 3)
    assert isinstance(model.maxpool, nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_resnet20x2_matches_paper_weight_count() -> None:
    assert conv_linear_weights(build("resnet20", CIFAR100, width=2)) == 1_092_960


def test_resnet20_width1_weight_count_by_hand() -> None:
    # stem 3*16*9; stage1 6 convs 16*16*9; stage2 16*32*9 + 5*32*32*9 + 1x1 16*32;
    # stage3 32*64*9 + 5*64*64*9 + 1x1 32*64; fc 64*100.
    expected = (3 * 16 * 9 + 6 * 16 * 16 * 9 + (16 * 32 * 9 + 5 * 32 * 32 * 9 + 16 * 32)
                + (32 * 64 * 9 + 5 * 64 * 64 * 9 + 32 * 64) + 64 * 100)
    assert conv_linear_weights(build("resnet20", CIFAR100)) == expected


def test_mobilenet_v1_matches_paper_weight_count() -> None:
    assert conv_linear_weights(build("mobilenet_v1", CIFAR100)) == 3_287_488


def test_densenet40_24_matches_paper_weight_count() -> None:
    assert conv_linear_weights(build("densenet40_24", CIFAR100)) == 703_920


def test_resnet20_stage_structure_supports_weight_sharing() -> None:
    model = build("resnet20", CIFAR100, width=2)
    for stage, channels in (("layer1", 32), ("layer2", 64), ("layer3", 128)):
        blocks = getattr(model, stage)
        assert isinstance(blocks, nn.Sequential) and len(blocks) == 3
        for index, block in enumerate(blocks):
            for attr in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
                assert hasattr(block, attr), f"{stage}.{index} lacks {attr}"
            assert block.conv2.weight.shape == (channels, channels, 3, 3)
            # Blocks past the first keep the shape, so their shortcut is the identity.
            assert (len(block.shortcut) == 0) == (index > 0 or stage == "layer1")
    assert model.layer2[0].conv1.stride == (2, 2)
    assert model.layer2[0].shortcut[0].kernel_size == (1, 1)


def test_mobilenet_width_mult_scales_channels() -> None:
    model = build("mobilenet_v1", CIFAR100, width_mult=0.5)
    assert model.conv1.out_channels == 16
    assert model.fc.in_features == 512


def test_torchvision_resnet_keeps_imagenet_stem_for_large_inputs() -> None:
    model = build_model("resnet18", in_channels=1, num_classes=7, image_size=96)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    small = build_model("resnet18", in_channels=3, num_classes=7, image_size=96, small_input=True)
    assert small.conv1.weight.shape == (64, 3, 3, 3)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_only_exportable_module_types(name: str) -> None:
    model = build(name, FASHION_MNIST)
    leaves = [m for m in model.modules() if not list(m.children())]
    for module in leaves:
        if isinstance(module, nn.Sequential):  # an empty Sequential is an identity shortcut
            continue
        assert isinstance(module, ALLOWED_LEAVES), f"{name}: {type(module).__name__}"


@pytest.mark.parametrize("name", ["resnet20", "densenet40_24"])
def test_construction_is_deterministic_given_seed(name: str) -> None:
    torch.manual_seed(123)
    first = build(name, FASHION_MNIST).state_dict()
    torch.manual_seed(123)
    second = build(name, FASHION_MNIST).state_dict()
    torch.manual_seed(124)
    third = build(name, FASHION_MNIST).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["conv1.weight"], third["conv1.weight"])


def test_unknown_model_names_valid_ones() -> None:
    with pytest.raises(ModelError, match="resnet20.*mobilenet_v1.*densenet40_24"):
        build_model("vgg16", in_channels=3, num_classes=10, image_size=32)


def test_unknown_kwarg_names_valid_ones() -> None:
    with pytest.raises(ModelError, match="depth.*valid: width"):
        build_model("resnet20", in_channels=3, num_classes=10, image_size=32, depth=56)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": 1.5}])
def test_bad_width_rejected(kwargs: dict) -> None:
    with pytest.raises(ModelError, match="width"):
        build_model("resnet20", in_channels=3, num_classes=10, image_size=32, **kwargs)


def test_bad_sizes_rejected() -> None:
    with pytest.raises(ModelError, match="num_classes"):
        build_model("resnet20", in_channels=3, num_classes=0, image_size=32)
    with pytest.raises(ModelError, match="small_input"):
        build_model("resnet18", in_channels=3, num_classes=10, image_size=32, small_input="yes")


def test_model_error_is_a_value_error() -> None:
    assert issubclass(ModelError, ValueError)


def test_registry_import_does_not_import_torch() -> None:
    # Config validation reads MODEL_NAMES without paying for (or needing) torch.
    code = ("import sys, featherdeploy.train.models; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_kwargs_lists_defaults() -> None:
    assert model_kwargs("resnet20") == {"width": 1}
    assert model_kwargs("mobilenet_v1") == {"width_mult": 1.0}
    assert model_kwargs("densenet40_24") == {}
    assert model_kwargs("resnet50") == {"small_input": None}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter is deprecated
@pytest.mark.parametrize("name, kwargs", [("resnet20", {}), ("mobilenet_v1", {"width_mult": 0.25}),
                                          ("densenet40_24", {})])
def test_onnx_opset13_export_matches_torch(name: str, kwargs: dict, tmp_path) -> None:
    torch.manual_seed(0)
    model = build(name, FASHION_MNIST, **kwargs).eval()
    x = torch.randn(2, 1, 28, 28)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=13, dynamo=False,
                      input_names=["input"], output_names=["logits"])
    graph = onnx.load(str(path)).graph
    assert {node.op_type for node in graph.node} <= ALLOWED_ONNX_OPS
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(ours, expected, atol=ONNX_ATOL, rtol=ONNX_RTOL)
