"""The resumable sweep state machine (benchmarks.reporting.sweep) driven by fake point runners,
and the subprocess stage runner (benchmarks.reporting.stages)."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks.reporting.stages import Stage, StageFailedError, run_stage
from benchmarks.reporting.sweep import DONE, FAILED, SweepPoint, SweepState, run_sweep
from tests.e2e.fakes import RecordingRunner

POINTS = [SweepPoint(f"p{i}", {"i": i}) for i in range(5)]


class CountingRunner(RecordingRunner):
    """Fake runner: metrics derived from params, optional failing ids, records every call."""

    def __init__(self, failing: tuple[str, ...] = ()) -> None:
        super().__init__(lambda point: {"square": point.params["i"] ** 2}, failing)


def test_runs_every_point_once_then_resumes_with_nothing_to_do(tmp_path):
    runner = CountingRunner()
    first = run_sweep(POINTS, runner, tmp_path)
    assert runner.calls == ["p0", "p1", "p2", "p3", "p4"]
    assert first.ran == runner.calls
    assert {pid: r.metrics["square"] for pid, r in first.results.items()} == \
        {"p0": 0, "p1": 1, "p2": 4, "p3": 9, "p4": 16}
    again = CountingRunner()
    second = run_sweep(POINTS, again, tmp_path)
    assert again.calls == []
    assert second.skipped_done == [p.id for p in POINTS]
    assert second.results["p3"].metrics == {"square": 9}
    stored = json.loads((tmp_path / "points" / "p3.json").read_text())
    assert stored["status"] == DONE and stored["params"] == {"i": 3}


def test_failure_is_recorded_and_does_not_stop_the_sweep(tmp_path):
    outcome = run_sweep(POINTS, CountingRunner(failing=("p1",)), tmp_path)
    assert outcome.failed == ["p1"]
    assert outcome.results["p1"].status == FAILED
    assert outcome.results["p1"].error == "RuntimeError: boom at p1"
    assert [pid for pid, r in outcome.results.items() if r.status == DONE] == \
        ["p0", "p2", "p3", "p4"]
    # Without retry the failure stays; by default a rerun retries it (and it now succeeds).
    keep = CountingRunner()
    assert run_sweep(POINTS, keep, tmp_path, retry_failed=False).failed == ["p1"]
    assert keep.calls == []
    retry = CountingRunner()
    assert run_sweep(POINTS, retry, tmp_path).failed == []
    assert retry.calls == ["p1"]


def test_limit_and_dry_run(tmp_path):
    dry = CountingRunner()
    outcome = run_sweep(POINTS, dry, tmp_path, dry_run=True)
    assert dry.calls == [] and outcome.pending == [p.id for p in POINTS]
    assert not (tmp_path / "points").exists()
    limited = CountingRunner()
    outcome = run_sweep(POINTS, limited, tmp_path, limit=2)
    assert limited.calls == ["p0", "p1"]
    assert outcome.pending == ["p2", "p3", "p4"]
    rest = CountingRunner()
    run_sweep(POINTS, rest, tmp_path)
    assert rest.calls == ["p2", "p3", "p4"]


def test_killed_sweep_continues_where_it_stopped(tmp_path):
    class KilledAt(CountingRunner):
        def __call__(self, point):
            if point.id == "p2":
                raise KeyboardInterrupt  # what Ctrl-C / a kill does mid-point
            return super().__call__(point)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(POINTS, KilledAt(), tmp_path)
    state = SweepState(tmp_path)
    assert state.load("p1").status == DONE
    assert state.load("p2") is None  # no half result
    with state.try_lock("p2") as locked:
        assert locked  # the killed run's lock was released
    resumed = CountingRunner()
    run_sweep(POINTS, resumed, tmp_path)
    assert resumed.calls == ["p2", "p3", "p4"]


def test_point_locked_by_another_process_is_left_alone(tmp_path):
    state = SweepState(tmp_path)
    runner = CountingRunner()
    with state.try_lock("p3") as locked:
        assert locked
        outcome = run_sweep(POINTS, runner, tmp_path)
    assert "p3" not in runner.calls
    assert outcome.busy == ["p3"]
    assert "p3" not in outcome.results


def test_point_another_process_finishes_meanwhile_is_reported(tmp_path):
    """Two workers share a sweep: the one finishing last reports every point, including those
    the other worker held (and finished) while this one was busy elsewhere."""
    from benchmarks.reporting.sweep import PointResult

    state = SweepState(tmp_path)

    class OtherFinishesP3(CountingRunner):
        def __call__(self, point):
            if point.id == "p4":  # meanwhile the other worker records p3
                state.record(PointResult("p3", DONE, {}, metrics={"acc": 0.5}))
            return super().__call__(point)

    with state.try_lock("p3") as locked:
        assert locked
        outcome = run_sweep(POINTS, OtherFinishesP3(), tmp_path)
    assert outcome.busy == ["p3"]
    assert outcome.results["p3"].metrics == {"acc": 0.5}


def _slow_worker(state_dir: str, log_path: str) -> None:
    def runner(point: SweepPoint) -> dict:
        with open(log_path, "a", encoding="utf-8") as log:  # O_APPEND: one line per write
            log.write(f"{point.id} {os.getpid()}\n")
        time.sleep(0.2)
        return {"pid": os.getpid()}
    run_sweep(POINTS, runner, state_dir)


def test_two_processes_share_a_sweep_without_running_a_point_twice(tmp_path):
    log = tmp_path / "calls.log"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_slow_worker, args=(str(tmp_path / "state"), str(log)))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    ran = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert ran == sorted(p.id for p in POINTS)  # each point exactly once
    state = SweepState(tmp_path / "state")
    assert all(state.load(p.id).status == DONE for p in POINTS)


def test_point_ids_are_checked(tmp_path):
    with pytest.raises(ValueError, match="must match"):
        SweepPoint("../escape", {})
    with pytest.raises(ValueError, match="duplicate"):
        run_sweep([SweepPoint("a", {}), SweepPoint("a", {})], CountingRunner(), tmp_path)


def _python_stage(tmp_path: Path, code: str, marker: Path) -> Stage:
    return Stage("demo", [sys.executable, "-c", code], marker)


def test_stage_runs_until_its_marker_exists(tmp_path):
    marker = tmp_path / "out" / "done.json"
    code = (f"import pathlib; p = pathlib.Path({str(marker)!r}); "
            "p.parent.mkdir(parents=True); p.write_text('{}'); print('hello')")
    log = tmp_path / "logs" / "demo.log"
    assert run_stage(_python_stage(tmp_path, code, marker), log) is True
    assert "hello" in log.read_text()
    # Done marker present: the stage is skipped (the command would fail if it ran again).
    assert run_stage(_python_stage(tmp_path, code, marker), log) is False


def test_stage_failure_names_code_and_log_tail(tmp_path):
    code = "import sys; print('line one'); print('the real cause'); sys.exit(3)"
    stage = _python_stage(tmp_path, code, tmp_path / "never.json")
    with pytest.raises(StageFailedError, match=r"demo exited with code 3(.|\n)*the real cause"):
        run_stage(stage, tmp_path / "demo.log")


def test_stage_that_exits_zero_without_its_marker_fails(tmp_path):
    stage = _python_stage(tmp_path, "pass", tmp_path / "missing.json")
    with pytest.raises(StageFailedError, match="did not write"):
        run_stage(stage, tmp_path / "demo.log")


def test_train_stage_resumes_or_restarts_a_killed_point(tmp_path):
    from benchmarks.reporting.pipeline import PointPaths, train_stage

    paths = PointPaths.for_point("pt", state_dir=tmp_path / "state", runs_dir=tmp_path / "runs",
                                 artifacts_dir=tmp_path / "artifacts")
    fresh = train_stage(paths)
    assert "--resume" not in fresh.argv and "--overwrite" not in fresh.argv
    assert fresh.done_marker == tmp_path / "runs" / "pt" / "summary.json"
    paths.run_dir.mkdir(parents=True)
    (paths.run_dir / "config.yaml").write_text("x: 1\n")  # killed before the first checkpoint
    assert "--overwrite" in train_stage(paths).argv
    (paths.run_dir / "checkpoint.pt").write_bytes(b"")  # killed after an epoch
    argv = train_stage(paths).argv
    assert "--resume" in argv and "--overwrite" not in argv
    assert argv[argv.index("--name") + 1] == "pt"
    assert argv[argv.index("--runs-dir") + 1] == str(tmp_path / "runs")
