"""The wrap -> update -> finalize lifecycle: exact sparsity, exact zeros, no wrappers left."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from featherdeploy.train.prunable import prunable_parameters
from featherdeploy.train.sparsify import FeatherSparsifier, SparsityConfig

OUTPUT_TOL = 1e-6


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, groups=8, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


def test_prunable_set_and_first_conv_option():
    net = _tiny_net()
    assert list(prunable_parameters(net)) == ["0.weight", "3.weight", "7.weight"]
    assert list(prunable_parameters(net, keep_first_conv_dense=True)) == ["3.weight", "7.weight"]


@pytest.mark.parametrize("backbone", ["global", "flops", "uniform"])
def test_update_reaches_exact_sparsity(backbone):
    net = _tiny_net()
    sparsifier = FeatherSparsifier(net, SparsityConfig(target=0.8, backbone=backbone))
    sparsifier.update(0.8)
    zeros, total = sparsifier.counts()
    assert total == 72 + 72 + 24
    if backbone == "uniform":
        assert zeros == sum(int((n - 1) * 0.8) + 1 for n in (72, 72, 24))
    else:
        assert zeros == int((total - 1) * 0.8) + 1


@pytest.mark.parametrize("operator", ["feather", "hard", "soft"])
def test_finalize_leaves_plain_model_with_exact_zeros(operator):
    net = _tiny_net()
    sparsifier = FeatherSparsifier(net, SparsityConfig(target=0.75, operator=operator))
    sparsifier.update(0.75)
    x = torch.randn(4, 1, 6, 6)
    net.eval()
    with torch.no_grad():
        wrapped_out = net(x)
    zeros, _ = sparsifier.counts()
    model = sparsifier.finalize()
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any("parametrizations" in name for name, _ in model.named_parameters())
    weights = prunable_parameters(model)
    assert all(type(w) is nn.Parameter for w in weights.values())
    assert sum(int((w == 0).sum()) for w in weights.values()) >= zeros
    with torch.no_grad():
        assert torch.allclose(model(x), wrapped_out, atol=OUTPUT_TOL)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_finalize_writes_shrunk_values_not_just_mask():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
    sparsifier = FeatherSparsifier(lin, SparsityConfig(target=0.5, operator="soft"))
    sparsifier.update(0.5)  # sorted |w| .5 1 2 3 -> tau = 1.5
    model = sparsifier.finalize()
    assert model.weight.tolist() == [[0.0, -0.5, 1.5, 0.0]]


def test_gradient_reaches_latent_weights_with_theta():
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
    sparsifier = FeatherSparsifier(lin, SparsityConfig(target=0.5, theta=0.25))
    sparsifier.update(0.5)
    lin(torch.ones(1, 4)).sum().backward()
    latent = sparsifier.latent_weights()["weight"]
    assert latent.grad.tolist() == [[0.25, 1.0, 1.0, 0.25]]
