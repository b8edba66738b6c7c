"""The parent side of the benchmark workers: a subprocess speaking JSON lines.

A peer runs in its own venv as ``PYTHON WORKER_SCRIPT`` (``_deepsparse_worker.py``,
``_peer_worker.py``): one request per line on its stdin, one reply per line on its stdout, its
stderr in a log file. The worker times itself, so a :data:`runtime.bench.Sampler` built on
:meth:`WorkerProcess.sampler` adds no IPC to the samples. Any failure (the process died, no reply
within the timeout, a reply that is not JSON, ``"ok": false``) is one :class:`WorkerError`
naming the worker and quoting the end of its log, so a benchmark can put it in a table cell.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from featherdeploy.runtime.bench import Sampler

__all__ = ["WorkerError", "WorkerProcess", "DEFAULT_REPLY_TIMEOUT_S"]

DEFAULT_REPLY_TIMEOUT_S = 900.0  # one reply (a compile of the largest model) never takes this long
LOG_TAIL_LINES = 5


class WorkerError(Exception):
    """A worker could not be started, died, timed out or answered with an error.
    ``missing`` is True when it says its library is not installed."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class WorkerProcess:
    """A long-lived worker subprocess (``python script``), its stderr in ``log_path``."""

    def __init__(self, python: Path, script: Path, log_path: Path, *, label: str,
                 env: Mapping[str, str] | None = None, args: Sequence[str] = (),
                 timeout_s: float = DEFAULT_REPLY_TIMEOUT_S) -> None:
        self.label = label
        self.timeout_s = timeout_s
        if not Path(python).is_file() or not os.access(python, os.X_OK):
            raise WorkerError(f"{label}: not an executable file: {python}", missing=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_path = log_path
        self._log: TextIO = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 (see close)
        try:
            self._proc = subprocess.Popen(
                [str(python), str(script), *args], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._log, text=True,
                env=dict(os.environ if env is None else env))
        except OSError as exc:
            self._log.close()
            raise WorkerError(f"{label}: cannot start {python}: {exc}") from exc

    @property
    def pid(self) -> int:
        return self._proc.pid

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request and wait for its reply; :class:`WorkerError` if the worker died,
        timed out, replied with something that is not JSON, or answered with an error."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        op = message.get("op", "?")
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"{self.label} worker died before {op!r}{self._exit_note()}: "
                              f"{self.log_tail()}") from exc
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            timed_out = not ready
            self._proc.kill()  # a late reply would answer the wrong request: never reuse it
            self._proc.wait()
            what = (f"gave no reply to {op!r} within {self.timeout_s:g} s" if timed_out
                    else f"died during {op!r}{self._exit_note()}")
            raise WorkerError(f"{self.label} worker {what}: {self.log_tail()}")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError as exc:
            self._proc.kill()
            self._proc.wait()
            raise WorkerError(f"{self.label} worker answered {op!r} with a line that is not "
                              f"JSON: {line.strip()[:200]!r}") from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error", "unknown error") if isinstance(reply, dict) else reply
            missing = isinstance(reply, dict) and bool(reply.get("missing"))
            raise WorkerError(f"{self.label}: {error}", missing=missing)
        return reply

    def sampler(self, **fields: Any) -> Sampler:
        """A :data:`Sampler` whose samples the worker measures in its own process:
        ``{"op": "time", "runs": k, **fields}`` -> ``samples_ms``."""
        def sample(count: int) -> list[float]:
            reply = self.request({"op": "time", "runs": count, **fields})
            return [float(s) for s in reply["samples_ms"]]
        return sample

    def _exit_note(self) -> str:
        """' (exit code N)' once the process has ended, else ''."""
        code = self._proc.poll()
        return "" if code is None else f" (exit code {code})"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Last lines of the worker's stderr, for error messages."""
        self._log.flush()
        text = self._log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or f"(no output; see {self._log_path})"

    def close(self) -> None:
        """Ask the worker to quit; kill it (by its own pid) if it does not."""
        try:
            if self._proc.poll() is None and self._proc.stdin is not None:
                self._proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self._proc.stdin.close()
            self._proc.wait(timeout=30)
        except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._log.close()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
