"""A resumable, parallel-safe sweep over named points (the frontier and ablation state machine).

State lives in a directory, one file per point, so nothing global is ever rewritten:

    STATE/points/<id>.json   the point's result, written atomically when it finishes
                             (status "done" with metrics, or "failed" with the error)
    STATE/locks/<id>.lock    held with flock(2) while some process runs the point

A point moves  pending -> running (lock held) -> done | failed.  A killed process loses its lock
automatically (the kernel drops flock locks when the file is closed), so rerunning the sweep simply
continues: done points are skipped, points locked by a live process are left to it, everything
else (including failed points, unless `retry_failed=False`) runs. Two processes may therefore share
one sweep. The point runner is injected, so tests drive the state machine with a fake one.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from featherdeploy.runtime.atomic import atomic_write_json

__all__ = [
    "SweepPoint",
    "PointResult",
    "PointRunner",
    "SweepOutcome",
    "SweepState",
    "run_sweep",
    "DONE",
    "FAILED",
]

DONE = "done"
FAILED = "failed"
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: a filesystem-safe unique id and its parameters (JSON-ready)."""

    id: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not _ID_PATTERN.match(self.id):
            raise ValueError(f"sweep point id {self.id!r} must match {_ID_PATTERN.pattern}")


@dataclass(frozen=True)
class PointResult:
    """What a finished point left behind: status, its params, metrics or error, wall time."""

    id: str
    status: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    finished_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "id": self.id, "status": self.status, "params": dict(self.params),
            "metrics": dict(self.metrics), "error": self.error, "seconds": self.seconds,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointResult:
        """Inverse of to_dict."""
        return cls(id=data["id"], status=data["status"], params=data.get("params", {}),
                   metrics=data.get("metrics", {}), error=data.get("error"),
                   seconds=float(data.get("seconds", 0.0)), finished_at=data.get("finished_at", ""))


# A runner executes one point and returns its metrics; raising any Exception marks it failed.
PointRunner = Callable[[SweepPoint], Mapping[str, Any]]


@dataclass
class SweepOutcome:
    """What one invocation of run_sweep saw and did."""

    results: dict[str, PointResult]        # latest result of every finished point (any process)
    ran: list[str] = field(default_factory=list)       # points this invocation executed
    skipped_done: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)      # locked by another live process
    pending: list[str] = field(default_factory=list)   # not run (limit reached / dry run)

    @property
    def failed(self) -> list[str]:
        """Ids whose latest result is a failure."""
        return [pid for pid, result in self.results.items() if result.status == FAILED]


class SweepState:
    """The on-disk state of one sweep (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def result_path(self, point_id: str) -> Path:
        """Where the point's result JSON lives."""
        return self.root / "points" / f"{point_id}.json"

    def lock_path(self, point_id: str) -> Path:
        """The point's lock file."""
        return self.root / "locks" / f"{point_id}.lock"

    def load(self, point_id: str) -> PointResult | None:
        """The recorded result, or None if the point never finished."""
        path = self.result_path(point_id)
        if not path.exists():
            return None
        return PointResult.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def record(self, result: PointResult) -> None:
        """Store a result atomically (replacing an older one, e.g. a failure now retried)."""
        atomic_write_json(self.result_path(result.id), result.to_dict())

    @contextmanager
    def try_lock(self, point_id: str) -> Iterator[bool]:
        """Hold the point's lock for the duration of the block; yields False if someone has it."""
        path = self.lock_path(point_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            # The pid is for people inspecting a running sweep; the lock itself is the flock.
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield True
        finally:
            os.close(fd)  # closing drops the flock


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _execute(point: SweepPoint, runner: PointRunner) -> PointResult:
    """Run one point, turning any exception into a failed result (one point never kills a sweep)."""
    start = time.monotonic()
    try:
        metrics = dict(runner(point))
    except Exception as error:  # noqa: BLE001 - recorded and reported, not hidden
        message = f"{type(error).__name__}: {error}"
        return PointResult(point.id, FAILED, point.params, error=message,
                           seconds=time.monotonic() - start, finished_at=_now())
    return PointResult(point.id, DONE, point.params, metrics=metrics,
                       seconds=time.monotonic() - start, finished_at=_now())


def _check_unique(points: Sequence[SweepPoint]) -> None:
    seen: set[str] = set()
    for point in points:
        if point.id in seen:
            raise ValueError(f"duplicate sweep point id {point.id!r}")
        seen.add(point.id)


def _needs_run(result: PointResult | None, retry_failed: bool) -> bool:
    if result is None:
        return True
    return result.status == FAILED and retry_failed


def run_sweep(points: Sequence[SweepPoint], runner: PointRunner, state_dir: str | os.PathLike[str],
              *, retry_failed: bool = True, limit: int | None = None, dry_run: bool = False,
              on_progress: Callable[[str, PointResult | None], None] | None = None) -> SweepOutcome:
    """Run every point that is not done yet, in order, skipping points another process holds.

    `limit` caps how many points this invocation executes; `dry_run` executes none (it only
    reports the state). `on_progress(point_id, result)` is called once per point as it is settled
    (result None when the point was left to another process or not run).
    """
    _check_unique(points)
    state = SweepState(state_dir)
    outcome = SweepOutcome(results={})
    for point in points:
        result = state.load(point.id)
        if not _needs_run(result, retry_failed):
            outcome.skipped_done.append(point.id)
        elif dry_run or (limit is not None and len(outcome.ran) >= limit):
            outcome.pending.append(point.id)
        else:
            result = _run_locked(point, runner, state, retry_failed, outcome)
        if result is not None:
            outcome.results[point.id] = result
        if on_progress is not None:
            on_progress(point.id, result)
    # Points another process held may have finished meanwhile: the report should include them.
    for point_id in outcome.busy:
        result = state.load(point_id)
        if result is not None:
            outcome.results[point_id] = result
    return outcome


def _run_locked(point: SweepPoint, runner: PointRunner, state: SweepState, retry_failed: bool,
                outcome: SweepOutcome) -> PointResult | None:
    with state.try_lock(point.id) as locked:
        if not locked:
            outcome.busy.append(point.id)
            return state.load(point.id)
        # Re-check under the lock: another process may have finished it since we looked.
        result = state.load(point.id)
        if not _needs_run(result, retry_failed):
            outcome.skipped_done.append(point.id)
            return result
        result = _execute(point, runner)
        state.record(result)
        outcome.ran.append(point.id)
        return result
