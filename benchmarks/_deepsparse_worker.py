"""DeepSparse timing worker, run by the Python of a separate DeepSparse venv (a subprocess).

DeepSparse 1.8 needs numpy < 2 and onnx 1.14, so it lives in its own venv and is only an optional
benchmark peer, never a dependency (docs/performance.md). This script imports nothing from the
project. It speaks JSON lines: one request per stdin line, one reply per stdout line, so the parent
(``benchmarks/engine_vs_peers.py``) can interleave DeepSparse rounds with its own contenders while
DeepSparse times itself (no IPC overhead in the samples).

Requests (every reply carries ``"ok"``; failures add ``"error"``):
    {"op": "compile", "model": PATH, "input": X.npy, "threads": T}
        compile the model for the batch of X (the input reused for timing) on T cores
    {"op": "output", "path": Y.npy}   run once on X and save the first output
    {"op": "time", "runs": K}         K timed calls -> {"samples_ms": [...]}
    {"op": "quit"}
A one-shot job also works: {"op": "job", "model", "input", "threads", "warmup", "runs"} compiles,
warms up, times and replies with the samples.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")


class WorkerState:
    """The compiled engine and its input, kept between requests."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.inputs: list[Any] = []


def _compile(state: WorkerState, request: dict[str, Any]) -> dict[str, Any]:
    """Compile the model for the batch of the given input on the given number of cores."""
    import numpy as np
    from deepsparse import compile_model

    x = np.ascontiguousarray(np.load(request["input"]), dtype=np.float32)
    state.engine = None  # free the previous engine's threads and memory first
    start = time.perf_counter()
    state.engine = compile_model(request["model"], batch_size=int(x.shape[0]),
                                 num_cores=int(request["threads"]))
    state.inputs = [x]
    return {"ok": True, "compile_s": time.perf_counter() - start}


def _time(state: WorkerState, runs: int) -> dict[str, Any]:
    """``runs`` timed calls on the compiled engine, one wall-clock sample (ms) per call."""
    if state.engine is None:
        return {"ok": False, "error": "no compiled engine (send 'compile' first)"}
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        state.engine.run(state.inputs)
        samples.append((time.perf_counter() - start) * 1000.0)
    return {"ok": True, "samples_ms": samples}


def _output(state: WorkerState, path: str) -> dict[str, Any]:
    """Run once and save the first output, so the parent can check it against ORT."""
    import numpy as np

    if state.engine is None:
        return {"ok": False, "error": "no compiled engine (send 'compile' first)"}
    np.save(path, state.engine.run(state.inputs)[0])
    return {"ok": True}


def handle(state: WorkerState, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one request."""
    op = request.get("op")
    if op == "compile":
        return _compile(state, request)
    if op == "time":
        return _time(state, int(request["runs"]))
    if op == "output":
        return _output(state, request["path"])
    if op == "job":
        reply = _compile(state, request)
        _time(state, int(request.get("warmup", 3)))
        reply.update(_time(state, int(request["runs"])))
        return reply
    return {"ok": False, "error": f"unknown op {op!r}"}


def serve(requests: TextIO, replies: TextIO) -> None:
    """Answer requests line by line until 'quit' or end of input."""
    state = WorkerState()
    for line in requests:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            if request.get("op") == "quit":
                break
            reply = handle(state, request)
        except Exception as exc:  # report to the parent instead of dying mid-protocol
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def main() -> int:
    """Keep the protocol on the real stdout; route library chatter on fd 1 to stderr."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
