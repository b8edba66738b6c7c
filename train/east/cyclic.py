"""Cyclic sparsity with gradient regrowth, mapped onto Feather's thresholds (EAST, 2411.13545).

Schedule (T iterations, target sparsity S, target density d = 1 - S, multiple m, c cycles):

    t <  t2 :  Feather's cubic ramp k(t) from 0 to S           (t1, t2 = prune_start/end * T)
    t2 <= t < t3 :  density D(t) = d * (1 + (m - 1) * (1 - cos(2 pi c u)) / 2),
                    u = (q - t2) / (t3 - t2), q = t rounded down to the update period P
                    (starts at d, peaks at m d in the middle of each cycle, ends at d; the
                    last update is >= P steps before t3, its density held until t3)
    t3 <= t < t4 :  sparsity S, with death + regrowth every P' steps of a fraction
                    r(t) = r0 (1 + cos(pi t / T)) / 2 of each layer's active weights
    t >= t4 :  sparsity S, no more regrowth: the topology only moves by Feather's thresholding

t3 = cycle_end * T (0.65 by default), t4 = max(UPDATE_END * T, t3) with UPDATE_END = 0.75.

Why these bounds and periods (EAST updates every 100 iterations over 250 epochs, i.e. tens of
thousands of steps; the default run here has 2,340):

- Period floor. P = (t3 - t2) // (c * 20) and P' = (t4 - t3) // 4, clipped to [MIN_PERIOD,
  MAX_PERIOD] = [25, 100]. Without the floor a short run updated every step (P = 1 at 234
  steps), so a weight regrown at one update (placed just above the threshold, RigL-style near
  zero) was the first to die at the next one before it could grow; RigL notes the same for
  too-frequent updates. 25 is a quarter of the paper's 100: on the default run each cycle still
  gets 7 density levels, and a regrown weight gets 25 SGD steps to grow.
- Last update at 75 % of training. RigL stops changing the mask at 75 % (its end of
  exploration); EAST's death rate decays to ~0 and its step LR keeps a usable rate until the end
  of its long run. Under the cosine LR used here the last 20 % has almost no learning rate, so
  late regrown weights could not grow and late deaths could not be repaired. The cycles end at
  65 %, the death + regrowth phase at 75 %.
- Death rate. r(t) decays by cosine over the whole run, as the authors' code does (its
  ``CosineDecay(death_rate, T)`` is stepped every iteration from the start), so the first death
  + regrowth update at 65 % swaps r0 (1 + cos(0.65 pi)) / 2 = 8 % of a layer's weights, not r0 =
  30 %. Restarting at r0 at t3 swapped 30 % of the few thousand weights of a 99 % model at once
  with little learning rate left (2 epochs on 15k images: 73.2 % top-1 for ERK alone, 58.6 %
  with that single 30 % update).
- BatchNorm. The last 25 % trains the final topology (the mask is frozen except for Feather's
  own gradual magnitude crossings, as in plain Feather), so the running statistics (momentum 0.1,
  ~50 steps) describe the final network: no recalibration pass is needed.

``--cyclic-period`` sets both P and P' (no floor). Layers share the density by ERK
(``train.east.erk``), each with an exact integer count.

How this maps onto Feather. Feather keeps dense latent weights w and, before every forward pass,
sets a per-layer threshold tau_l so that the layer's count-th smallest |w| is the last one pruned
(|w| <= tau_l are zero in the forward pass). So "which weights are active" is always "the a_l
largest |w| of the layer". Hence:

- Lowering the density needs nothing extra: the next threshold update prunes the smallest |w|.
- Regrowth (raising the density from a to a', or death + regrowth of g weights at fixed
  density) must activate pruned weights chosen by gradient, not magnitude. At an update step we
  pick the g pruned weights (|w| <= tau_l) with the largest |dL/dw| (the last step's gradient;
  the STE scales every pruned weight's gradient by the same theta, so the ranking is that of
  dL/dT_p(w); theta must be > 0) and *lift* them into the top a' by exchanging magnitudes:
  with K the a' - g strongest other weights, the chosen weights take the g largest magnitudes
  outside K (from the weights holding them, which take the chosen ones' small magnitudes in
  return) and the sign of -dL/dw. The magnitudes are only permuted, so no ties appear, and the
  next threshold update keeps exactly K plus the g regrown weights: the a' - g strongest old
  weights survive, the weakest die. The regrown weights sit just above the new threshold, so
  their forward value T_p(w) = (|w|^p - tau^p)^(1/p) is small (RigL starts regrown weights at
  zero) and points downhill. Regrowth runs after the optimizer step, so the gradient is fresh
  and a checkpoint written at the end of an epoch already contains the lifted weights.

The final model has exactly the target sparsity: after t3 the threshold update always uses S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from featherdeploy.train.schedule import cubic_sparsity, ramp_bounds

__all__ = ["CyclicSchedule", "auto_period", "regrow_layer", "MAX_PERIOD", "MIN_PERIOD",
           "REGROW_FRACTION", "UPDATE_END"]

MAX_PERIOD = 100  # EAST updates the density every 100 iterations
MIN_PERIOD = 25  # a regrown weight gets at least this many steps to grow before the next update
MIN_UPDATES_PER_CYCLE = 20
MIN_DEATH_UPDATES = 4
REGROW_FRACTION = 0.3  # r0, RigL's default initial death/regrowth fraction
UPDATE_END = 0.75  # RigL's end of mask updates: no regrowth in the last quarter of training


def auto_period(phase_steps: int, updates: int) -> int:
    """phase_steps // updates clipped to [MIN_PERIOD, MAX_PERIOD] (fewer updates on short runs)."""
    return min(MAX_PERIOD, max(MIN_PERIOD, phase_steps // max(updates, 1)))


@dataclass(frozen=True)
class CyclicSchedule:
    """The sparsity k(t) of a cyclic run and the steps at which regrowth happens."""

    total_steps: int
    sparsity: float
    multiple: float = 3.0
    cycles: int = 2
    period: int | None = None
    prune_start: float = 0.0
    prune_end: float = 0.5
    cycle_end: float = 0.65
    regrow_fraction: float = REGROW_FRACTION
    update_end: float = UPDATE_END

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise ValueError(f"cyclic sparsity needs a target in (0, 1), got {self.sparsity}")
        if self.multiple < 1.0 or self.multiple * (1.0 - self.sparsity) > 1.0:
            raise ValueError(f"cyclic multiple must be >= 1 with multiple * density <= 1, got "
                             f"{self.multiple} at density {1.0 - self.sparsity:.6g}")
        if self.cycles < 1 or (self.period is not None and self.period < 1):
            raise ValueError("cycles and period must be >= 1")
        if not self.prune_end < self.cycle_end <= 1.0:
            raise ValueError(f"need prune_end < cycle_end <= 1, got {self.prune_end}, "
                             f"{self.cycle_end}")
        if not 0.0 < self.update_end <= 1.0:
            raise ValueError(f"need 0 < update_end <= 1, got {self.update_end}")

    @property
    def bounds(self) -> tuple[int, int]:
        """(t2, t3): iterations where the cycles start and where they end."""
        _, t2 = ramp_bounds(self.total_steps, self.prune_start, self.prune_end)
        t3 = max(math.floor(self.cycle_end * self.total_steps), t2)
        return t2, t3

    @property
    def update_stop(self) -> int:
        """t4: no regrowth at or after this iteration (max(update_end * T, t3))."""
        _, t3 = self.bounds
        return max(math.floor(self.update_end * self.total_steps), t3)

    @property
    def resolved_period(self) -> int:
        t2, t3 = self.bounds
        if self.period is not None:
            return self.period
        return auto_period(t3 - t2, self.cycles * MIN_UPDATES_PER_CYCLE)

    @property
    def death_period(self) -> int:
        """P': iterations between death + regrowth updates after the cycles."""
        _, t3 = self.bounds
        if self.period is not None:
            return self.period
        return auto_period(self.update_stop - t3, MIN_DEATH_UPDATES)

    @property
    def last_cycle_update(self) -> int:
        """The last density update of the cycles: its density holds for >= P steps up to t3."""
        t2, t3 = self.bounds
        period = self.resolved_period
        return t2 + period * max((t3 - t2) // period - 1, 0)

    def _quantized(self, step: int) -> int:
        t2, _ = self.bounds
        period = self.resolved_period
        return min(t2 + (step - t2) // period * period, self.last_cycle_update)

    def density(self, step: int) -> float:
        """D(t) = 1 - k(t)."""
        return 1.0 - self.target_k(step)

    def target_k(self, step: int) -> float:
        """Sparsity of iteration ``step`` (exactly ``sparsity`` from t3 on)."""
        t2, t3 = self.bounds
        if step < t2:
            return cubic_sparsity(step, self.total_steps, self.sparsity, self.prune_start,
                                  self.prune_end)
        if step >= t3:
            return self.sparsity
        u = (self._quantized(step) - t2) / (t3 - t2)
        swing = (1.0 - math.cos(2.0 * math.pi * self.cycles * u)) / 2.0
        return 1.0 - (1.0 - self.sparsity) * (1.0 + (self.multiple - 1.0) * swing)

    def is_update(self, step: int) -> bool:
        """True when ``step`` starts a new period (regrowth happens just before it)."""
        t2, t3 = self.bounds
        if not t2 < step < min(self.update_stop, self.total_steps):
            return False
        if step < t3:
            return (step - t2) % self.resolved_period == 0 and step <= self.last_cycle_update
        return (step - t3) % self.death_period == 0

    def death_fraction(self, step: int) -> float:
        """r(t): r0 (1 + cos(pi t / T)) / 2 for t3 <= t < t4 (cosine over the run), else 0."""
        _, t3 = self.bounds
        if not t3 <= step < self.update_stop:
            return 0.0
        return self.regrow_fraction * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))


def _top_indices(values: Tensor, mask: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest ``values`` where ``mask`` is True (largest first)."""
    if count <= 0:
        return torch.zeros(0, dtype=torch.long, device=values.device)
    return torch.topk(values.masked_fill(~mask, -math.inf), count).indices


@torch.no_grad()
def regrow_layer(latent: Tensor, grad: Tensor | None, tau: Tensor, keep: int, grow: int) -> int:
    """Make the ``grow`` pruned weights with the largest |grad| part of the top ``keep`` (in place).

    C = the chosen weights, K = the ``keep - grow`` largest other weights, V = the ``grow``
    largest magnitudes outside K and H their holders. Weights of C outside H take the magnitudes
    of H outside C and give them theirs (a permutation of magnitudes: no new ties), and every
    chosen weight gets the sign of -grad. Afterwards the ``keep`` largest |latent| are exactly
    K and C. Returns how many weights were chosen (0 without a gradient or candidates).
    """
    if grad is None or grow <= 0 or keep <= 0:
        return 0
    flat = latent.detach().view(-1)
    magnitude = flat.abs().float()
    pruned = magnitude <= tau.float() if float(tau) > 0 else magnitude == 0
    grow = min(grow, int(pruned.sum()), keep)
    if grow == 0:
        return 0
    flat_grad = grad.detach().reshape(-1).float()
    chosen = _top_indices(flat_grad.abs(), pruned, grow)
    is_chosen = torch.zeros_like(pruned)
    is_chosen[chosen] = True
    kept = _top_indices(magnitude, ~is_chosen, keep - grow)
    outside = torch.ones_like(pruned)
    outside[kept] = False
    holders = _top_indices(magnitude, outside, grow)
    is_holder = torch.zeros_like(pruned)
    is_holder[holders] = True
    takers = chosen[~is_holder[chosen]]  # chosen weights without a top value, by |grad|
    givers = holders[~is_chosen[holders]]  # other weights holding one, by magnitude
    taken, given = magnitude[givers].clone(), magnitude[takers].clone()
    flat[givers] = (torch.sign(flat[givers]) * given.to(flat.dtype))
    flat[takers] = taken.to(flat.dtype)
    direction = -torch.sign(flat_grad[chosen])
    direction = torch.where(direction == 0, torch.ones_like(direction), direction)
    flat[chosen] = (direction * flat[chosen].abs().float()).to(flat.dtype)
    return grow
