"""How threads share a conv: output-channel ranges balanced by nonzeros, or bands of output rows.

Rows are split (instead of channels) for big convs and for chains of convs that can compute row
ranges: each thread then reads mostly the rows its own core wrote one layer earlier, where
splitting channels makes every layer read half its input from the other core
(``PlannerOptions.row_split_min_bytes`` / ``row_split_chain_bytes``; docs/performance.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["balanced_bounds", "RowSplitCandidate", "choose_row_splits"]


def balanced_bounds(unit_cost: np.ndarray, parts: int) -> np.ndarray:
    """Split units into ``parts`` contiguous ranges of about equal total cost (int64 [parts+1])."""
    cum = np.concatenate([[0.0], np.cumsum(unit_cost)])
    targets = cum[-1] * np.arange(parts + 1) / parts
    bounds = np.searchsorted(cum, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(unit_cost)
    return np.maximum.accumulate(bounds)


@dataclass
class RowSplitCandidate:
    """A conv whose threads could split output rows; choose_row_splits decides once every conv
    is emitted."""

    spec: Any  # the native ConvSpec
    input_name: str
    units: int
    big: bool
    chains: bool  # group 1: may link a chain


def choose_row_splits(candidates: dict[str, RowSplitCandidate]) -> None:
    """Row splits for the big candidates and for the chained ones: a group-1 candidate whose
    input another group-1 candidate writes, or whose output one reads (keyed by output)."""
    written = {name for name, c in candidates.items() if c.chains}
    read = {c.input_name for c in candidates.values() if c.chains}
    for name, c in candidates.items():
        if c.big or (c.chains and (c.input_name in written or name in read)):
            c.spec.row_units = c.units
