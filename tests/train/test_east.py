"""EAST parts: ERK by hand, DyReLU coefficients, weight sharing, cyclic schedule, regrowth."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featherdeploy.train.config import ConfigError, resolve_config
from featherdeploy.train.east.cyclic import (
    MAX_PERIOD,
    MIN_PERIOD,
    CyclicSchedule,
    auto_period,
    regrow_layer,
)
from featherdeploy.train.east.dyrelu import (
    DyReLUB,
    attach_dyrelu,
    dyrelu_beta,
    remove_dyrelu,
    set_dyrelu_beta,
)
from featherdeploy.train.east.erk import (
    apportion_counts,
    count_threshold,
    erk_densities,
    erk_pruned_counts,
    erk_thresholds,
    pruned_count,
)
from featherdeploy.train.east.weight_sharing import (
    SharedConv2d,
    materialize_shared_weights,
    share_resnet_weights,
)
from featherdeploy.train.loop import _check_resumable
from featherdeploy.train.models import build_model
from featherdeploy.train.prunable import prunable_parameters
from featherdeploy.train.schedule import cubic_sparsity
from featherdeploy.train.sparsify import FeatherSparsifier, SparsityConfig

DENSITY_TOL = 1e-12
OUTPUT_TOL = 1e-6
COEF_TOL = 1e-6

# raw = sum(shape) / prod(shape): a 11/36, b 18/288 = 1/16, c 10/16
TINY_SHAPES = {"a.weight": (4, 1, 3, 3), "b.weight": (8, 4, 3, 3), "c.weight": (2, 8)}


# ------------------------------------------------------------------------------- ERK

def test_erk_densities_by_hand_with_clipping_redistributed():
    # D = 0.25 of N = 340 keeps 85. eps = 85 / (11 + 18 + 10) makes c's density 1.36 > 1:
    # clip c to 1 (16 weights), then eps = (85 - 16) / (11 + 18) = 69 / 29.
    densities = erk_densities(TINY_SHAPES, 0.25)
    eps = 69 / 29
    assert densities["c.weight"] == 1.0
    assert densities["a.weight"] == pytest.approx(eps * 11 / 36, rel=DENSITY_TOL)
    assert densities["b.weight"] == pytest.approx(eps / 16, rel=DENSITY_TOL)
    kept = sum(math.prod(s) * densities[n] for n, s in TINY_SHAPES.items())
    assert kept == pytest.approx(85.0, rel=DENSITY_TOL)
    # Before clipping, a would have had 85/39 * 11/36 < eps * 11/36: clipping was redistributed.
    assert densities["a.weight"] > 85 / 39 * 11 / 36


def test_erk_counts_and_thresholds_are_exact():
    # k = 0.75: total pruned floor(339 * 0.75) + 1 = 255; ideal a = 36 - 759/29 = 9.83,
    # b = 288 - 1242/29 = 245.17, c = 0 -> floors 9 + 245 + 0 = 254, a has the larger remainder.
    assert erk_pruned_counts(TINY_SHAPES, 0.75) == {"a.weight": 10, "b.weight": 245,
                                                    "c.weight": 0}
    torch.manual_seed(0)
    weights = {name: torch.randn(shape) for name, shape in TINY_SHAPES.items()}
    taus = erk_thresholds(weights, 0.75)
    pruned = {name: int((w.abs() <= taus[name]).sum()) for name, w in weights.items()
              if float(taus[name]) > 0}
    assert pruned == {"a.weight": 10, "b.weight": 245}
    assert float(taus["c.weight"]) == 0.0
    assert erk_pruned_counts(TINY_SHAPES, 0.0) == {name: 0 for name in TINY_SHAPES}


def test_count_rule_and_apportioning():
    assert pruned_count(1000, 0.9) == 900  # floor(999 * 0.9) + 1
    assert pruned_count(1000, 0.0) == 0
    assert apportion_counts({"x": 1.5, "y": 1.5, "z": 0.0}, {"x": 9, "y": 9, "z": 9}, 4) == {
        "x": 2, "y": 2, "z": 0}
    assert apportion_counts({"x": 3.0, "y": 1.0}, {"x": 9, "y": 9}, 3) == {"x": 3, "y": 0}
    assert apportion_counts({"x": 5.0, "y": 0.5}, {"x": 3, "y": 9}, 4) == {"x": 3, "y": 1}
    with pytest.raises(ValueError, match="cannot place"):
        apportion_counts({"x": 1.0}, {"x": 2}, 3)


def test_count_threshold_prunes_exactly_count():
    w = torch.tensor([0.5, -0.1, 0.3, -0.9, 0.2])
    assert float(count_threshold(w, 2)) == pytest.approx(0.2)
    assert int((w.abs() <= count_threshold(w, 2)).sum()) == 2
    assert float(count_threshold(w, 0)) == 0.0


def test_erk_allocation_in_sparsifier_on_resnet():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    sparsifier = FeatherSparsifier(model, SparsityConfig(target=0.999, allocation="erk"))
    sparsifier.update(0.999)
    zeros, total = sparsifier.counts()
    assert zeros == pruned_count(total, 0.999)
    per_layer = {fqn: float((w.abs() > tau).float().mean()) for (fqn, w), tau in zip(
        sparsifier.latent_weights().items(), sparsifier.thresholds().values(), strict=True)}
    # Every layer keeps something (global magnitude pruning at 99.9% may empty whole layers).
    assert min(per_layer.values()) > 0
    # The stem (raw 23/144) is denser than a 3x3 64->64 conv (raw 134/36864).
    assert per_layer["conv1.weight"] > per_layer["layer3.2.conv2.weight"]


# ---------------------------------------------------------------------------- DyReLU

def _fixed_dyrelu(channels: int = 2) -> DyReLUB:
    """fc1 = 0, fc2 weight 0 and bias (ln 3, -ln 3, ln 3, 0) per channel: theta = .5,-.5,.5,0."""
    module = DyReLUB(channels)
    with torch.no_grad():
        for p in (module.fc1_weight, module.fc1_bias, module.fc2_weight):
            p.zero_()
        module.fc2_bias.copy_(torch.tensor([math.log(3), -math.log(3), math.log(3), 0.0]
                                           * channels))
    return module


def test_dyrelu_coefficients_at_beta_one():
    module = _fixed_dyrelu()
    x = torch.tensor([1.0, -1.0, -0.1, 2.0]).view(1, 2, 2, 1)
    coefs = module.coefficients(x)  # a1 = 1 + .5, a2 = -.5, b1 = .5 * .5, b2 = 0
    expected = torch.tensor([1.5, -0.5, 0.25, 0.0]).expand(1, 2, 4)
    assert coefs.shape == (1, 2, 4)
    assert torch.allclose(coefs, expected, atol=COEF_TOL)
    # y = max(1.5 x + .25, -.5 x): 1 -> 1.75, -1 -> .5, -.1 -> .1, 2 -> 3.25
    y = module(x).flatten()
    assert torch.allclose(y, torch.tensor([1.75, 0.5, 0.1, 3.25]), atol=COEF_TOL)
    module.set_beta(0.5)
    blended = torch.tensor([1.25, -0.25, 0.125, 0.0]).expand(1, 2, 4)
    assert torch.allclose(module.coefficients(x), blended, atol=COEF_TOL)


def test_dyrelu_at_beta_zero_is_exactly_relu():
    torch.manual_seed(0)
    module = DyReLUB(8)
    x = torch.randn(3, 8, 5, 5)
    assert not torch.equal(module(x), F.relu(x))  # random DyReLU is not ReLU
    module.set_beta(0.0)
    assert torch.equal(module.coefficients(x),
                       torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(3, 8, 4))
    x.requires_grad_(True)
    y = module(x)
    assert torch.equal(y, F.relu(x))
    y.sum().backward()
    assert all(p.grad is None for p in module.parameters())  # phased out: no gradient


@pytest.mark.parametrize("epochs, window", [
    (160, (40.0, 79.0)), (250, (62.5, 124.0)), (8, (2.0, 3.0)), (5, (1.25, 1.5)),
    (4, (1.0, 1.5)), (2, (0.5, 0.75)),
])
def test_dyrelu_phase_out_ends_at_half_minus_one_epoch(epochs, window):
    # EAST: beta goes 1 -> 0 from epoch E/4 to E/2 - 1 (authors' code: end_ghost_epoch =
    # milestones[0] - 1); a run too short for that window ends halfway to E/2.
    config = resolve_config(None, {"epochs": epochs, "dyrelu_phasing": True})
    assert (config.dyrelu_start, config.dyrelu_end) == window


def test_dyrelu_beta_schedule():
    assert [dyrelu_beta(t, 10, 20) for t in (0, 10, 15, 20, 25)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError):
        dyrelu_beta(0, 5, 5)


def test_attach_and_remove_dyrelu_on_resnet():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    plain_keys = list(model.state_dict())
    names = attach_dyrelu(model, (1, 12, 12))
    assert len(names) == 1 + 3 * 3 * 2  # stem + two per block
    assert model.get_submodule("layer3.2.relu2").channels == 64
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    assert not any(isinstance(m, nn.Linear) for m in model.get_submodule("layer1.0.relu1")
                   .modules())
    assert list(prunable_parameters(model)) == [k for k in plain_keys if k.endswith("weight")
                                                and "bn" not in k
                                                and not k.endswith("shortcut.1.weight")]
    with pytest.raises(ValueError, match="beta"):
        remove_dyrelu(model)
    set_dyrelu_beta(model, 0.0)
    assert remove_dyrelu(model) == names
    assert list(model.state_dict()) == plain_keys
    assert type(model.layer1[0].relu1) is nn.ReLU


class _ReusedRelu(nn.Module):
    """One ReLU module applied twice, as torchvision's ResNet blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))))


def test_dyrelu_refuses_reused_relu():
    with pytest.raises(ValueError, match="called 2 time"):
        attach_dyrelu(_ReusedRelu(), (1, 8, 8))


# -------------------------------------------------------------------- weight sharing

def _pair():
    torch.manual_seed(0)
    shared = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    torch.manual_seed(0)
    plain = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    return shared, plain


def test_shared_blocks_use_same_storage_and_count_once():
    shared, plain = _pair()
    names = share_resnet_weights(shared)
    assert names == [f"layer{s}.2.conv{c}" for s in (1, 2, 3) for c in (1, 2)]
    for stage in (shared.layer1, shared.layer2, shared.layer3):
        for conv in ("conv1", "conv2"):
            block2 = getattr(stage[2], conv)
            assert isinstance(block2, SharedConv2d)
            assert block2.source is getattr(stage[1], conv)
            assert block2.source.weight.data_ptr() == getattr(stage[1], conv).weight.data_ptr()
    unique = list(prunable_parameters(shared))
    assert len(unique) == len(prunable_parameters(plain)) - 6
    assert not any(name.startswith(tuple(names)) for name in unique)
    removed = sum(getattr(plain.get_submodule(n.rsplit(".", 1)[0]),
                          n.rsplit(".", 1)[1]).weight.numel() for n in names)
    assert sum(p.numel() for p in shared.parameters()) == (
        sum(p.numel() for p in plain.parameters()) - removed + 6)
    assert all(p.ndim == 0 for n, p in shared.named_parameters() if n.endswith("scale"))


def test_shared_model_equals_explicitly_duplicated_model():
    shared, plain = _pair()
    names = share_resnet_weights(shared)
    with torch.no_grad():
        for index, name in enumerate(names):
            module = shared.get_submodule(name)
            module.scale.fill_(0.6 + 0.1 * index)
            parent, attr = name.rsplit(".", 1)
            getattr(plain.get_submodule(parent), attr).weight.copy_(
                module.source.weight * module.scale)
    x = torch.randn(3, 1, 12, 12)
    shared.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.allclose(shared(x), plain(x), atol=OUTPUT_TOL)
    # One gradient for the shared storage, and one for each scalar (eval: BN stats unchanged).
    shared(x).sum().backward()
    assert shared.layer1[1].conv1.weight.grad is not None
    assert shared.layer1[2].conv1.scale.grad is not None
    materialize_shared_weights(shared)
    assert list(shared.state_dict()) == list(plain.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(shared.state_dict()[key], value), key


def test_sharing_under_feather_prunes_with_one_mask():
    shared, plain = _pair()
    share_resnet_weights(shared)
    sparsifier = FeatherSparsifier(shared, SparsityConfig(target=0.9))
    sparsifier.update(0.9)
    zeros, total = sparsifier.counts()
    assert total == sum(p.numel() for p in prunable_parameters(shared).values())
    full = sum(p.numel() for p in prunable_parameters(plain).values())
    assert total - zeros == full - pruned_count(full, 0.9)  # the unshared model's nonzeros
    model = sparsifier.finalize()
    materialize_shared_weights(model)
    source, copy = model.layer2[1].conv2.weight, model.layer2[2].conv2.weight
    assert torch.equal(source == 0, copy == 0)
    assert torch.equal(copy, source * 1.0)  # scale still 1


@pytest.mark.parametrize("allocation", ["backbone", "erk"])
@pytest.mark.parametrize("target", [0.99, 0.995, 0.999])
def test_sharing_keeps_the_unshared_models_nonzero_count(allocation, target):
    # EAST's code: adjusted_density = total_params * density / non_shared_params, i.e. the
    # unique weights keep as many nonzeros as plain Feather keeps in the unshared model
    # (ResNet-20 at 99.9 %: 271, not the 174 of pruning the unique weights to 99.9 %).
    shared, plain = _pair()
    share_resnet_weights(shared)
    reference = FeatherSparsifier(plain, SparsityConfig(target=target, allocation=allocation))
    sparsifier = FeatherSparsifier(shared, SparsityConfig(target=target, allocation=allocation))
    full = sum(p.numel() for p in prunable_parameters(plain).values())
    for k in (0.2, 0.5, 0.9, target):  # along the ramp: clipped at 0 pruned, then exact
        reference.update(k)
        sparsifier.update(k)
        zeros, unique = sparsifier.counts()
        ref_zeros, ref_total = reference.counts()
        assert ref_total - ref_zeros == full - pruned_count(full, k)
        assert unique - zeros == min(full - pruned_count(full, k), unique), k
    if target == 0.999:
        assert unique - zeros == 271
    assert sparsifier.model_numel == full == reference.model_numel
    assert sparsifier.shared_numel == full - unique > 0


def test_sharing_refuses_models_without_stages():
    model = build_model("mobilenet_v1", in_channels=3, num_classes=10, image_size=32)
    with pytest.raises(ValueError, match="ResNet stages"):
        share_resnet_weights(model)


# ---------------------------------------------------------------------- cyclic schedule

def test_cyclic_schedule_values():
    # T = 1000, t2 = 500, t3 = 700, t4 = 750: two cycles of 100 steps, period 25, d = 0.01, m = 3.
    schedule = CyclicSchedule(1000, 0.99, multiple=3.0, cycles=2, period=25, cycle_end=0.7)
    assert schedule.bounds == (500, 700) and schedule.update_stop == 750
    assert schedule.target_k(250) == cubic_sparsity(250, 1000, 0.99)
    assert schedule.density(500) == pytest.approx(0.01)
    assert schedule.density(525) == pytest.approx(0.02)  # quarter cycle: swing 1/2
    assert schedule.density(550) == pytest.approx(0.03)  # peak m * d
    assert schedule.density(559) == pytest.approx(0.03)  # held for the period
    assert schedule.density(600) == pytest.approx(0.01)
    assert schedule.density(650) == pytest.approx(0.03)
    assert schedule.last_cycle_update == 675  # its density holds 25 steps, up to t3
    assert schedule.target_k(700) == 0.99 and schedule.target_k(999) == 0.99
    assert [schedule.is_update(t) for t in (500, 510, 525, 675, 700, 725, 740, 750)] == [
        False, False, True, True, True, True, False, False]
    # r(t) = r0 (1 + cos(pi t / T)) / 2: decayed over the whole run, as the authors' CosineDecay.
    assert schedule.death_fraction(699) == 0.0
    assert schedule.death_fraction(700) == pytest.approx(0.15 * (1 + math.cos(0.7 * math.pi)))
    assert schedule.death_fraction(725) == pytest.approx(0.15 * (1 + math.cos(0.725 * math.pi)))
    assert 0.05 < schedule.death_fraction(725) < schedule.death_fraction(700) < 0.07
    assert schedule.death_fraction(750) == 0.0


def test_cyclic_period_rule_and_validation():
    assert auto_period(4000, 40) == 100
    assert auto_period(1600, 40) == 40
    assert auto_period(400, 40) == MIN_PERIOD == 25  # floored: 10 would be too frequent
    assert auto_period(5, 40) == 25
    auto = CyclicSchedule(1000, 0.99)  # cycles 500..650, death + regrowth 650..750
    assert auto.bounds == (500, 650) and auto.update_stop == 750
    assert auto.resolved_period == 25 and auto.death_period == 25
    assert auto.last_cycle_update == 625
    assert [auto.is_update(t) for t in (600, 625, 650, 675, 725, 740, 750, 775)] == [
        True, True, True, True, True, False, False, False]
    with pytest.raises(ValueError, match="multiple"):
        CyclicSchedule(100, 0.5, multiple=3.0)


@pytest.mark.parametrize("total", [234, 468, 2340, 23_400])
def test_cyclic_updates_are_spaced_and_end_by_three_quarters(total):
    # A regrown weight needs steps to grow before the next update (period floor), and the last
    # topology change leaves the last quarter (cosine LR near 0 there; BatchNorm statistics then
    # follow the final topology): RigL stops at 75 %.
    schedule = CyclicSchedule(total, 0.999)
    updates = [t for t in range(total) if schedule.is_update(t)]
    assert updates and max(updates) < 0.75 * total
    gaps = [b - a for a, b in zip(updates, updates[1:], strict=False)]
    # (the last density of the cycles holds P to 2P - 1 steps, up to t3)
    assert all(MIN_PERIOD <= gap < 2 * MAX_PERIOD for gap in gaps), gaps
    assert all(schedule.target_k(t) == 0.999 for t in range(math.ceil(0.75 * total), total))


def test_regrow_lifts_largest_gradient_and_kills_weakest():
    latent = torch.tensor([0.9, -0.8, 0.1, 0.05, -0.02, 0.3])
    grad = torch.tensor([0.0, 0.0, 0.2, -5.0, 1.0, 0.0])
    tau = torch.tensor(0.1)  # pruned: indices 2, 3, 4
    # Growth from 3 to 4 active: index 3 (|grad| 5) takes the largest magnitude outside the
    # kept {0, 1, 5}, 0.1 from index 2, which gets 0.05 in return; sign of -grad is +.
    grown = latent.clone()
    assert regrow_layer(grown, grad, tau, keep=4, grow=1) == 1
    assert grown.tolist() == pytest.approx([0.9, -0.8, 0.05, 0.1, -0.02, 0.3])
    active = grown.abs() > count_threshold(grown, 6 - 4)
    assert active.tolist() == [True, True, False, True, False, True]
    # Death + regrowth at 3 active: index 3 swaps magnitudes with the weakest active (0.3).
    swapped = latent.clone()
    regrow_layer(swapped, grad, tau, keep=3, grow=1)
    assert swapped.tolist() == pytest.approx([0.9, -0.8, 0.1, 0.3, -0.02, 0.05])
    active = swapped.abs() > count_threshold(swapped, 6 - 3)
    assert active.tolist() == [True, True, False, True, False, False]
    assert sorted(swapped.abs().tolist()) == sorted(latent.abs().tolist())  # only permuted
    assert regrow_layer(latent.clone(), None, tau, keep=4, grow=1) == 0


def test_sparsifier_regrow_keeps_exact_counts():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1, num_classes=4, image_size=12)
    sparsifier = FeatherSparsifier(model, SparsityConfig(target=0.99, allocation="erk"))
    sparsifier.update(0.99)
    F.cross_entropy(model(torch.randn(8, 1, 12, 12)), torch.randint(0, 4, (8,))).backward()
    zeros_before, total = sparsifier.counts()
    lifted = sparsifier.regrow(0.97, death_fraction=0.0)  # density 1% -> 3%: growth only
    assert lifted == zeros_before - pruned_count(total, 0.97)
    sparsifier.update(0.97)
    assert sparsifier.counts()[0] == pruned_count(total, 0.97)
    model.zero_grad()
    F.cross_entropy(model(torch.randn(8, 1, 12, 12)), torch.randint(0, 4, (8,))).backward()
    assert sparsifier.regrow(0.97, death_fraction=0.3) > 0  # swaps at fixed density
    sparsifier.update(0.97)
    assert sparsifier.counts()[0] == pruned_count(total, 0.97)


# ------------------------------------------------------------------------------ config

@pytest.mark.parametrize("extra, message", [
    ({"cyclic_sparsity": True, "backbone": "flops"}, "ERK"),
    ({"init": "erk", "backbone": "uniform"}, "ERK"),
    ({"init": "random"}, "init"),
    ({"dyrelu_phasing": True, "dyrelu_end": 9.0}, "dyrelu"),
    ({"weight_sharing": True, "model": "mobilenet_v1"}, "weight sharing"),
    ({"cyclic_sparsity": True, "sparsity": 0.5}, "cyclic_multiple"),
    ({"cyclic_sparsity": True, "sparsity": 0.99, "theta": 0.0}, "theta"),
    ({"cyclic_sparsity": True, "sparsity": 0.99, "cyclic_end": 0.4}, "cyclic_end"),
])
def test_bad_east_configs_are_one_clear_error(extra, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config(None, {"epochs": 4, **extra})


def test_east_config_resolves_defaults_and_old_runs_still_resume():
    config = resolve_config(None, {"epochs": 8, "dyrelu_phasing": True, "init": "erk"})
    assert (config.dyrelu_start, config.dyrelu_end) == (2.0, 3.0)  # E/4, E/2 - 1
    assert config.allocation == "erk"
    assert resolve_config(None, {"cyclic_sparsity": True, "sparsity": 0.99}).allocation == "erk"
    plain = resolve_config(None, {}).to_dict()
    before_east = {k: v for k, v in plain.items()
                   if not k.startswith(("dyrelu", "cyclic", "weight_sharing", "init"))}
    _check_resumable(before_east, plain)  # a checkpoint written before these fields existed
    with pytest.raises(ConfigError, match="weight_sharing"):
        _check_resumable(before_east, {**plain, "weight_sharing": True})
