"""Quantile thresholds, exact achieved sparsity, the FLOPs-biased per-layer rule, the schedule."""

import math

import pytest
import torch

from featherdeploy.train.backbones import (
    compute_thresholds,
    flops_biased_thresholds,
    layer_constant,
    linear_quantile,
)
from featherdeploy.train.schedule import cubic_sparsity, ramp_bounds


def test_linear_quantile_interpolates():
    values = torch.tensor([4.0, 1.0, 3.0, 2.0])  # sorted 1 2 3 4; m = 3k
    assert float(linear_quantile(values, 0.5)) == pytest.approx(2.5)
    assert float(linear_quantile(values, 0.0)) == 1.0
    assert float(linear_quantile(values, 1.0)) == 4.0
    assert float(linear_quantile(values, 1 / 3)) == pytest.approx(2.0)


def test_global_quantile_exact_achieved_sparsity():
    torch.manual_seed(0)
    weights = {"a.weight": torch.randn(30, 10), "b.weight": torch.randn(50, 14)}
    n = 300 + 700
    for k in (0.5, 0.9, 0.95, 0.99):
        taus = compute_thresholds("global", weights, k)
        pruned = sum(int((w.abs() <= taus[name]).sum()) for name, w in weights.items())
        assert pruned == math.floor((n - 1) * k) + 1
        assert len({float(t) for t in taus.values()}) == 1


def test_global_hand_example():
    # |w| = 1..8 across two layers; k = 0.5 -> m = 3.5 -> tau = 4.5, prunes 1..4.
    weights = {"a.weight": torch.tensor([[1.0, -2.0], [3.0, -4.0]]),
               "b.weight": torch.tensor([[5.0, 6.0, -7.0, 8.0]])}
    taus = compute_thresholds("global", weights, 0.5)
    assert float(taus["a.weight"]) == pytest.approx(4.5)
    assert int((weights["a.weight"].abs() <= taus["a.weight"]).sum()) == 4
    assert int((weights["b.weight"].abs() <= taus["b.weight"]).sum()) == 0


def test_layer_constant():
    assert layer_constant((64, 32, 3, 3), alpha=1.0) == pytest.approx(102 ** 0.5)
    assert layer_constant((10, 64), alpha=2.0) == pytest.approx(74.0)


def test_flops_biased_per_layer_thresholds():
    # c_a = (1+4)^(1/2) = sqrt 5, c_b = (1+16)^(1/2) = sqrt 17
    wa = torch.arange(1, 5, dtype=torch.float32).reshape(1, 4)
    wb = torch.arange(1, 17, dtype=torch.float32).reshape(1, 16) / 4
    weights = {"a.weight": wa, "b.weight": wb}
    taus = flops_biased_thresholds(weights, 0.5, alpha=1.0)
    ca, cb = math.sqrt(5), math.sqrt(17)
    scores = torch.cat([wa.flatten() * ca, wb.flatten() * cb])
    tau = float(linear_quantile(scores, 0.5))
    assert float(taus["a.weight"]) == pytest.approx(tau / ca)
    assert float(taus["b.weight"]) == pytest.approx(tau / cb)
    pruned = sum(int((w.abs() <= taus[n]).sum()) for n, w in weights.items())
    assert pruned == math.floor(19 * 0.5) + 1


def test_uniform_prunes_each_layer_equally():
    torch.manual_seed(1)
    weights = {"a.weight": torch.randn(101), "b.weight": torch.randn(1001)}
    taus = compute_thresholds("uniform", weights, 0.9)
    assert int((weights["a.weight"].abs() <= taus["a.weight"]).sum()) == 91
    assert int((weights["b.weight"].abs() <= taus["b.weight"]).sum()) == 901


def test_zero_sparsity_gives_zero_thresholds():
    taus = compute_thresholds("flops", {"a.weight": torch.randn(3, 3)}, 0.0)
    assert float(taus["a.weight"]) == 0.0


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        compute_thresholds("nope", {"a.weight": torch.ones(2)}, 0.5)


def test_cubic_schedule_values():
    total, kf = 100, 0.9
    assert ramp_bounds(total) == (0, 50)
    assert cubic_sparsity(0, total, kf) == 0.0
    assert cubic_sparsity(25, total, kf) == pytest.approx(0.9 - 0.9 * 0.5 ** 3)
    assert cubic_sparsity(49, total, kf) == pytest.approx(0.9 - 0.9 * (1 / 50) ** 3)
    assert cubic_sparsity(50, total, kf) == kf
    assert cubic_sparsity(99, total, kf) == kf
    assert cubic_sparsity(5, total, kf, start_fraction=0.1) == 0.0
    assert cubic_sparsity(10, total, kf, start_fraction=0.1, end_fraction=0.3) == 0.0
    assert cubic_sparsity(20, total, kf, start_fraction=0.1, end_fraction=0.3) == pytest.approx(
        0.9 - 0.9 * 0.5 ** 3)


def test_schedule_rejects_bad_bounds():
    with pytest.raises(ValueError):
        cubic_sparsity(0, 10, 0.9, start_fraction=0.6, end_fraction=0.5)
    with pytest.raises(ValueError):
        cubic_sparsity(0, 10, 1.0)
