"""Run a sweep under one tqdm progress bar, and summarize what an invocation did.

Shared by the frontier and ablation CLIs. The bar counts settled points (done, failed, skipped
because already finished or held by another process); its postfix names the point running now.
Stage output goes to per-point log files, so the bar owns the terminal.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.reporting.sweep import (
    DONE,
    PointResult,
    PointRunner,
    SweepOutcome,
    SweepPoint,
    run_sweep,
)

__all__ = ["run_with_progress", "print_outcome", "print_dry_run"]


def run_with_progress(points: Sequence[SweepPoint], runner: PointRunner,
                      state_dir: str | os.PathLike[str], *, limit: int | None, dry_run: bool,
                      retry_failed: bool, progress: bool) -> SweepOutcome:
    """`run_sweep` with one progress bar over the whole sweep (disabled for dry runs)."""
    from tqdm import tqdm

    bar = tqdm(total=len(points), desc="sweep", unit="point", disable=dry_run or not progress)
    started_here: set[str] = set()

    def run(point: SweepPoint) -> Mapping[str, Any]:
        started_here.add(point.id)
        bar.set_postfix_str(point.id)
        return runner(point)

    def settled(point_id: str, result: PointResult | None) -> None:
        bar.update(1)
        # Only announce failures of this invocation; old ones are listed in the report.
        if result is not None and result.status != DONE and point_id in started_here:
            bar.write(f"point {point_id} failed: {(result.error or '').splitlines()[0]}")

    try:
        return run_sweep(points, run, state_dir, retry_failed=retry_failed, limit=limit,
                         dry_run=dry_run, on_progress=settled)
    finally:
        bar.close()


def print_outcome(outcome: SweepOutcome, paths: Sequence[Path], started: float,
                  unit: str = "points") -> None:
    """One summary line, each failure on stderr, and the files written."""
    print(f"ran {len(outcome.ran)} {unit} in {(time.monotonic() - started) / 60:.1f} min; "
          f"{len(outcome.skipped_done)} already finished, {len(outcome.busy)} held by another "
          f"process, {len(outcome.pending)} pending, {len(outcome.failed)} failed")
    for point_id in outcome.failed:
        print(f"FAILED {point_id}: {outcome.results[point_id].error}", file=sys.stderr)
    print("wrote " + ", ".join(str(p) for p in paths))


def print_dry_run(points: Sequence[SweepPoint], outcome: SweepOutcome) -> None:
    """Each point's id and recorded status (pending when it never finished)."""
    for point in points:
        result = outcome.results.get(point.id)
        print(f"{point.id}: {result.status if result else 'pending'}")
