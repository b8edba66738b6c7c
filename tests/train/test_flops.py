"""Tests for train.flops: hand-checkable MACs, the papers' model counts, and the sparsity report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize
from torchvision.models import resnet50

from featherdeploy.train.flops import layer_macs, sparsity_report
from featherdeploy.train.models import build_model

RESNET50_DENSE_MACS = 4_089_184_256  # docs/algorithms.md section 6
CIFAR100 = dict(in_channels=3, num_classes=100, image_size=32)


def test_tiny_conv_with_stride_padding_groups_dilation() -> None:
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2, dilation=2, bias=False)
    # Output side: floor((9 + 2*1 - 2*(3-1) - 1) / 2) + 1 = 4.
    # MACs: 6 out channels * (4 / 2 groups) in channels * 3 * 3 kernel * 4 * 4 outputs = 1728.
    (layer,) = layer_macs(nn.Sequential(conv), (4, 9, 9)).values()
    assert layer.fqn == "0.weight" and layer.op == "Conv"
    assert layer.weight_shape == (6, 2, 3, 3) and layer.numel == 108
    assert layer.dense_macs == 1728


def test_rectangular_kernel_and_input() -> None:
    conv = nn.Conv2d(3, 5, kernel_size=(1, 3), stride=(1, 2), padding=(0, 1))
    # Output: 7 x (floor((10 + 2 - 3) / 2) + 1 = 5); MACs 5 * 3 * 1 * 3 * 7 * 5 = 1575.
    (layer,) = layer_macs(nn.Sequential(conv), (3, 7, 10)).values()
    assert layer.dense_macs == 1575


def test_linear_and_conv_in_sequence() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    layers = layer_macs(model, (2, 6, 6))
    assert list(layers) == ["0.weight", "3.weight"]
    assert layers["0.weight"].dense_macs == 3 * 2 * 3 * 3 * 4 * 4  # 4x4 output
    assert layers["3.weight"].dense_macs == 48 * 5
    assert layers["3.weight"].op == "Gemm"


def test_sparse_macs_scale_by_density_with_rounding() -> None:
    linear = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0, 0, 2], [0, 0, 0, 0], [0, 3, 0, 0]]))
    (layer,) = layer_macs(nn.Sequential(linear), (1, 1, 4)).values()
    # A (1, 1, 4) input gives a (1, 1, 1, 3) output: one row of 12 MACs.
    assert (layer.numel, layer.nnz, layer.dense_macs) == (12, 3, 12)
    assert layer.sparse_macs == 3 and layer.sparsity == 9 / 12


def test_shared_module_counts_every_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    layers = layer_macs(Twice(), (2, 3, 3))
    assert layers["conv.weight"].dense_macs == 2 * (2 * 2 * 9)


def test_mode_hooks_and_statistics_restored() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
    running_mean = model[1].running_mean.clone()
    layer_macs(model, (1, 5, 5))
    assert model.training and model[0].training
    assert not model[0]._forward_hooks
    assert torch.equal(model[1].running_mean, running_mean)
    model.eval()
    layer_macs(model, (1, 5, 5))
    assert not model.training


def test_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        layer_macs(nn.Sequential(nn.Conv2d(1, 1, 1)), (1, 5))


def test_resnet50_dense_and_uniform_99() -> None:
    torch.manual_seed(0)
    model = resnet50(weights=None)
    layers = layer_macs(model, (3, 224, 224))
    assert sum(layer.dense_macs for layer in layers.values()) == RESNET50_DENSE_MACS
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                _prune_smallest(module.weight, 0.99)
    report = sparsity_report(model, (3, 224, 224), list(layers))
    # The paper's "GMP 41 MFLOPs" = 40.9M MACs.
    assert round(report["totals"]["sparse_macs"] / 1e5) == 409
    assert report["totals"]["sparsity"] == pytest.approx(0.99, abs=1e-6)


def _prune_smallest(weight: torch.Tensor, ratio: float) -> None:
    """Zero the round(ratio * numel) smallest-magnitude entries in place."""
    count = round(ratio * weight.numel())
    order = weight.abs().flatten().argsort()
    weight.view(-1)[order[:count]] = 0.0


def test_resnet20x2_macs_by_hand() -> None:
    model = build_model("resnet20", width=2, **CIFAR100)
    # Per-layer MACs = weights * output pixels: 32x32 in stage 1, 16x16 in 2, 8x8 in 3.
    stem = 3 * 32 * 9 * 32 * 32
    stage1 = 6 * (32 * 32 * 9) * 32 * 32
    stage2 = (32 * 64 * 9 + 32 * 64 + 5 * 64 * 64 * 9) * 16 * 16
    stage3 = (64 * 128 * 9 + 64 * 128 + 5 * 128 * 128 * 9) * 8 * 8
    expected = stem + stage1 + stage2 + stage3 + 128 * 100
    total = sum(layer.dense_macs for layer in layer_macs(model, (3, 32, 32)).values())
    assert total == expected
    assert round(total / 1e5) == 1624  # the paper's 162.4M


@pytest.mark.parametrize("name, paper_macs_100k", [("mobilenet_v1", 464),
                                                   ("densenet40_24", 2882)])
def test_paper_model_macs(name: str, paper_macs_100k: int) -> None:
    model = build_model(name, **CIFAR100)
    total = sum(layer.dense_macs for layer in layer_macs(model, (3, 32, 32)).values())
    assert round(total / 1e5) == paper_macs_100k


def test_sparsity_report_totals_and_json() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0, 0, 0, 0] = 1.0  # 1 of 18 conv weights non-zero
        model[2].weight.fill_(1.0)
        model[2].weight[0, :16] = 0.0  # 16 of 96 linear weights zero
    report = json.loads(json.dumps(sparsity_report(model, (1, 6, 6), ["0.weight"])))
    conv_dense = 2 * 1 * 9 * 4 * 4
    assert list(report["layers"]) == ["0.weight"]
    assert report["layers"]["0.weight"]["weight_shape"] == [2, 1, 3, 3]
    assert report["totals"] == {"numel": 18, "nnz": 1, "sparsity": 17 / 18,
                                "dense_macs": conv_dense, "sparse_macs": round(conv_dense / 18)}
    assert report["all_layers_dense_macs"] == conv_dense + 96
    assert report["all_layers_sparse_macs"] == round(conv_dense / 18) + 80


def test_sparsity_report_unknown_fqn() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="1.weight"):
        sparsity_report(model, (1, 5, 5), ["1.weight"])


class _HalfMask(nn.Module):
    """A parametrization zeroing the first half of the output channels."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(weight)
        mask[: weight.shape[0] // 2] = 0.0
        return weight * mask


def test_parametrized_weights_count_effective_zeros() -> None:
    # The training stage wraps weights in parametrizations; FQNs and zeros must see through them.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False))
    parametrize.register_parametrization(model[0], "weight", _HalfMask())
    report = sparsity_report(model, (1, 5, 5), ["0.weight"])
    assert report["totals"]["nnz"] == 18 and report["totals"]["numel"] == 36
