"""Sparsity schedules: the cubic ramp of Zhu & Gupta (2017) as used by Feather (2310.02448)."""

from __future__ import annotations

import math

__all__ = ["cubic_sparsity", "ramp_bounds"]


def ramp_bounds(total_steps: int, start_fraction: float = 0.0, end_fraction: float = 0.5
                ) -> tuple[int, int]:
    """Iterations (t1, t2) where the ramp starts and reaches the target: floor(f * T)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0.0 <= start_fraction < end_fraction <= 1.0:
        raise ValueError(
            f"need 0 <= prune_start < prune_end <= 1, got {start_fraction}, {end_fraction}")
    t1 = math.floor(start_fraction * total_steps)
    t2 = max(math.floor(end_fraction * total_steps), t1 + 1)
    return t1, t2


def cubic_sparsity(step: int, total_steps: int, final_sparsity: float,
                   start_fraction: float = 0.0, end_fraction: float = 0.5) -> float:
    """Target sparsity k(t) at iteration ``step`` of ``total_steps``.

        k(t) = 0                                  t < t1
             = kf - kf * (1 - (t - t1)/(t2 - t1))^3   t1 <= t < t2
             = kf                                 t >= t2

    with t1 = floor(start_fraction * T), t2 = floor(end_fraction * T) (Zhu & Gupta, "To prune, or
    not to prune", 2017; Feather section 3 reaches the target at half of training).
    """
    if not 0.0 <= final_sparsity < 1.0:
        raise ValueError(f"final sparsity must be in [0, 1), got {final_sparsity}")
    t1, t2 = ramp_bounds(total_steps, start_fraction, end_fraction)
    if step < t1:
        return 0.0
    if step >= t2:
        return final_sparsity
    remaining = 1.0 - (step - t1) / (t2 - t1)
    return final_sparsity - final_sparsity * remaining ** 3
