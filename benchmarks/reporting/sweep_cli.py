"""The command line shared by the sweep scripts (`benchmarks.frontier`, `benchmarks.ablation`).

Both parse the same flags, load a sweep spec, run its points resumably under one progress bar and
write a report; only the spec, the point runner and the report differ, and they are passed in.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.reporting.errors import BenchInputError
from benchmarks.reporting.progress import print_dry_run, print_outcome, run_with_progress
from benchmarks.reporting.sweep import PointResult, PointRunner, SweepPoint

__all__ = ["sweep_parser", "run_sweep_main"]

# prepare(args) -> (spec, points, runner); raises BenchInputError for bad input.
Prepare = Callable[[argparse.Namespace], tuple[Any, Sequence[SweepPoint], PointRunner]]
WriteReport = Callable[[Any, Mapping[str, PointResult]], list[Path]]


def sweep_parser(prog: str, description: str | None, default_sweep: Path,
                 unit: str = "points") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, default=default_sweep,
                        help="sweep YAML file (default %(default)s)")
    parser.add_argument("--out", default=None, help="report directory (overrides the sweep's)")
    parser.add_argument("--limit", type=int, default=None,
                        help=f"run at most N {unit} in this invocation")
    parser.add_argument("--dry-run", action="store_true",
                        help=f"list the {unit} and their state; run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from the recorded results; run nothing")
    parser.add_argument("--no-retry-failed", action="store_true",
                        help=f"leave {unit} that failed before as failed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_sweep_main(args: argparse.Namespace, prepare: Prepare, write_report: WriteReport,
                   unit: str = "points") -> int:
    """Run the sweep the parsed flags ask for; returns the exit code (0 ok, 1 failures, 2 input)."""
    started = time.monotonic()
    try:
        if args.limit is not None and args.limit < 0:
            raise BenchInputError("--limit must be >= 0")
        spec, points, runner = prepare(args)
    except BenchInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    outcome = run_with_progress(points, runner, spec.state_dir, limit=args.limit,
                                dry_run=args.dry_run or args.report_only,
                                retry_failed=not args.no_retry_failed,
                                progress=not args.no_progress)
    if args.dry_run:
        print_dry_run(points, outcome)
        return 0
    paths = write_report(spec, outcome.results)
    print_outcome(outcome, paths, started, unit=unit)
    return 1 if outcome.failed else 0
