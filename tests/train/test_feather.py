"""Hand-checkable values of the thresholding operators and their STE backward (Feather, sec. 3)."""

import pytest
import torch

from featherdeploy.train.feather import (
    FeatherWeight,
    auto_theta,
    feather_threshold,
    threshold_values,
)

TOL = 1e-6
W = torch.tensor([-3.0, -1.0, 0.5, 1.0, 2.0, 4.0])
TAU = torch.tensor(1.0)


def test_hard_keeps_values_above_tau():
    out = threshold_values(W, TAU, "hard")
    assert out.tolist() == [-3.0, 0.0, 0.0, 0.0, 2.0, 4.0]


def test_soft_shrinks_by_tau():
    out = threshold_values(W, TAU, "soft")
    assert out.tolist() == [-2.0, 0.0, 0.0, 0.0, 1.0, 3.0]


def test_feather_p3_is_cube_root_of_cube_gap():
    out = threshold_values(W, TAU, "feather", p=3.0)
    expected = [-(26.0 ** (1 / 3)), 0.0, 0.0, 0.0, 7.0 ** (1 / 3), 63.0 ** (1 / 3)]
    assert torch.allclose(out, torch.tensor(expected), atol=TOL)


def test_feather_p1_equals_soft():
    assert torch.allclose(threshold_values(W, TAU, "feather", p=1.0),
                          threshold_values(W, TAU, "soft"), atol=TOL)


def test_feather_large_p_approaches_hard():
    out = threshold_values(W, TAU, "feather", p=60.0)
    assert torch.allclose(out, threshold_values(W, TAU, "hard"), atol=1e-2)


def test_feather_no_nan_near_tau_in_half_precision():
    w = torch.tensor([1.0, 1.0001, -1.0001], dtype=torch.float16)
    out = threshold_values(w, torch.tensor(1.0), "feather")
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("theta", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("operator", ["feather", "hard", "soft"])
def test_ste_backward_mask(operator, theta):
    w = W.clone().requires_grad_(True)
    feather_threshold(w, TAU, operator=operator, theta=theta).sum().backward()
    # |w| > 1 passes the gradient unchanged; pruned weights (|w| <= 1) get theta.
    assert w.grad.tolist() == [1.0, theta, theta, theta, 1.0, 1.0]


def test_zero_tau_is_identity():
    w = W.clone().requires_grad_(True)
    out = feather_threshold(w, torch.tensor(0.0))
    assert out is w


def test_auto_theta_follows_paper_rule():
    assert auto_theta(0.95) == 0.5
    assert auto_theta(0.99) == 0.5
    assert auto_theta(0.9499) == 1.0
    assert auto_theta(0.0) == 1.0


def test_parametrization_state_roundtrip():
    p = FeatherWeight("feather", 3.0, 0.5)
    p.set_tau(1.0)
    q = FeatherWeight("feather", 3.0, 0.5)
    q.load_state_dict(p.state_dict())
    assert torch.equal(q(W), p(W))
    assert q(W)[1] == 0.0
