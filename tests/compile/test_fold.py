"""BN folding (compile/fold.py): equivalence, which pairs fold, zeros kept, input untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from featherdeploy.compile.fold import find_conv_bn_pairs, fold_batchnorms, fold_conv_bn
from tests.compile.helpers import TinyNet, randomize_batchnorm_, sparsify_

FOLD_ATOL = 1e-5  # float32 rounding of one extra multiply-add per output
FOLD_RTOL = 1e-5


@pytest.mark.parametrize("conv_bias", [False, True])
@pytest.mark.parametrize("affine", [False, True])
def test_fold_conv_bn_matches_conv_then_bn(conv_bias: bool, affine: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=conv_bias)
    bn = randomize_batchnorm_(nn.Sequential(nn.BatchNorm2d(6, affine=affine)))[0].eval()
    x = torch.randn(2, 4, 7, 7)
    weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        expected = bn(conv(x))
        got = nn.functional.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(got, expected, atol=FOLD_ATOL, rtol=FOLD_RTOL)


def test_fold_conv_bn_by_hand() -> None:
    conv = nn.Conv2d(1, 1, 1, bias=True)
    bn = nn.BatchNorm2d(1, eps=0.0).eval()
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        bn.running_mean.fill_(3.0)
        bn.running_var.fill_(4.0)  # std 2
        bn.weight.fill_(5.0)
        bn.bias.fill_(7.0)
    weight, bias = fold_conv_bn(conv.weight, conv.bias, bn)
    assert weight.item() == 5.0  # 2 * 5 / 2
    assert bias.item() == 2.0  # (1 - 3) * 5 / 2 + 7


class PreActivation(nn.Module):
    """BN -> ReLU -> conv (not foldable) and conv -> BN where the conv output is reused."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_pre = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(torch.relu(self.bn_pre(x)))
        z = self.bn1(y) + y  # conv1's output has two users: folding would change `+ y`
        return self.bn2(self.conv2(z)).flatten(1)


def test_only_conv_followed_by_bn_with_single_use_is_folded() -> None:
    model = PreActivation().eval()
    assert find_conv_bn_pairs(model) == [("conv2", "bn2")]


def test_fold_batchnorms_equivalent_keeps_zeros_and_input() -> None:
    torch.manual_seed(1)
    model = randomize_batchnorm_(sparsify_(TinyNet(), 0.7, seed=2), seed=3).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fold_batchnorms(model)
    assert result.method == "fx"
    assert result.pairs == [("conv1", "bn1"), ("dw", "bn2")]
    assert isinstance(result.model.bn1, nn.Identity) and isinstance(result.model.bn2, nn.Identity)
    for key, value in model.state_dict().items():  # the input model is not modified
        assert torch.equal(value, before[key])
    for name in ("conv1", "dw"):
        original = getattr(model, name).weight
        folded = getattr(result.model, name).weight
        assert torch.equal(folded == 0, original == 0)
    x = torch.randn(4, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), atol=FOLD_ATOL, rtol=FOLD_RTOL)


def test_untraceable_model_is_returned_unfolded() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return y if y.sum() > 0 else -y  # data-dependent branch: fx cannot trace

    result = fold_batchnorms(Branchy())
    assert result.method == "none" and result.pairs == []
    assert "trace" in result.note
    assert isinstance(result.model.bn, nn.BatchNorm2d)
