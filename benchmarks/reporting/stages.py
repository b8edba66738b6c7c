"""Run the train / compile / bench CLIs of one sweep point as subprocesses.

Subprocesses isolate points: a crash (or an out-of-memory kill) of one point fails that point only,
and the sweep records it and moves on. Each stage is skipped when its completion marker exists
(the file the stage writes last: `summary.json`, `report.json`, `bench.json`), so a point that was
killed half-way resumes at the first unfinished stage. Output goes to a log file per stage so one
progress bar can own the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Stage", "StageFailedError", "run_stage", "python_module_argv", "log_tail"]

_TAIL_LINES = 8
# `benchmarks` is not an installed package: make `python -m benchmarks.bench` importable from
# any working directory by putting the repository root on the child's PYTHONPATH.
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stage:
    """One CLI invocation: a name for logs, the argv, and the file whose presence means done."""

    name: str
    argv: Sequence[str]
    done_marker: Path


class StageFailedError(RuntimeError):
    """A stage's subprocess exited non-zero; the message names the stage, code and log tail."""


def python_module_argv(module: str, *args: str) -> list[str]:
    """argv running `python -m module args...` with the current interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def log_tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines of a log file (empty string if it does not exist)."""
    if not path.exists():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run_stage(stage: Stage, log_path: Path, *, cwd: Path | None = None,
              timeout_s: float | None = None) -> bool:
    """Run the stage unless its marker exists. Returns True if it ran, False if it was done.

    Raises StageFailedError (with the log's tail) on a non-zero exit or a timeout.
    """
    if stage.done_marker.exists():
        return False
    log_path.parent.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH"))
                                  if p)
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=python_path)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(str(a) for a in stage.argv) + "\n")
        log.flush()
        try:
            completed = subprocess.run(list(stage.argv), stdout=log, stderr=subprocess.STDOUT,
                                       cwd=cwd, env=env, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise StageFailedError(f"{stage.name} timed out after {timeout_s} s "
                                   f"(log: {log_path})") from error
    if completed.returncode != 0:
        raise StageFailedError(f"{stage.name} exited with code {completed.returncode} "
                               f"(log: {log_path}):\n{log_tail(log_path)}")
    if not stage.done_marker.exists():
        raise StageFailedError(f"{stage.name} exited 0 but did not write {stage.done_marker} "
                               f"(log: {log_path})")
    return True
