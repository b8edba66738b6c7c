"""Peak resident memory of one benchmark contender, measured in a child process of its own.

A process's RSS high-water mark (``VmHWM`` in ``/proc/self/status``) only grows, so contenders
sharing a process would hide each other's peaks. Each measurement therefore starts a fresh
Python (``python -m featherdeploy.runtime.peak_memory``) that imports the same modules whatever the
contender (numpy, onnx, onnxruntime, the native engine), loads the inputs, resets the high-water
mark to the current RSS (``/proc/self/clear_refs``, Linux >= 4.0) and reads it as the baseline;
then it loads the contender, runs it ``runs`` times on one thread of calls and reads the high-water
mark again. ``peak_mb`` is the whole child (interpreter and libraries included), ``delta_mb``
what loading and running the contender added on top of the baseline: the figure that compares
contenders. Without ``/proc`` (not Linux) the peak comes from ``getrusage`` and there is no
baseline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PeakMemory", "PeakMemoryError", "measure_peak_memory", "CONTENDERS"]

CONTENDERS = ("engine", "ort")
CHILD_TIMEOUT_S = 600.0
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"  # clear_refs value that resets VmHWM to the current RSS


class PeakMemoryError(RuntimeError):
    """The child could not load or run the contender (the message says why)."""


@dataclass(frozen=True)
class PeakMemory:
    """RSS figures of one child process, in MiB (see the module docstring)."""

    baseline_mb: float | None  # after imports and inputs, before the contender loads
    peak_mb: float             # high-water mark after loading and ``runs`` calls
    runs: int
    hwm_reset: bool            # the high-water mark was reset before the contender loaded

    @property
    def delta_mb(self) -> float | None:
        return None if self.baseline_mb is None else self.peak_mb - self.baseline_mb

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta_mb": self.delta_mb,
                "method": "child process; VmHWM after load and runs, minus VmRSS before load"}


def measure_peak_memory(contender: str, model: str | os.PathLike[str], threads: int,
                        feeds: Mapping[str, np.ndarray], *, runs: int = 3,
                        engine_overrides: Mapping[str, Any] | None = None,
                        timeout_s: float = CHILD_TIMEOUT_S) -> PeakMemory:
    """Peak RSS of ``contender`` ("engine" or "ort") loading ``model`` and running ``feeds``.
    ``engine_overrides``: EngineOptions fields for the engine (``planner`` as a dict of
    PlannerOptions fields: the request travels as JSON)."""
    if contender not in CONTENDERS:
        raise ValueError(f"contender must be one of {CONTENDERS}, got {contender!r}")
    with tempfile.TemporaryDirectory(prefix="fd-peak-") as tmp:
        inputs = {}
        for index, (name, array) in enumerate(feeds.items()):
            inputs[name] = str(Path(tmp) / f"input{index}.npy")
            np.save(inputs[name], array, allow_pickle=False)
        request = {"contender": contender, "model": str(model), "threads": threads,
                   "inputs": inputs, "runs": runs,
                   "engine_overrides": {k: v for k, v in (engine_overrides or {}).items()
                                        if v is not None}}
        root = _package_parent()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        try:
            done = subprocess.run([sys.executable, "-m", "featherdeploy.runtime.peak_memory"],
                                  input=json.dumps(request), capture_output=True, text=True,
                                  timeout=timeout_s, env=env, check=False)
        except subprocess.TimeoutExpired:
            raise PeakMemoryError(f"the {contender} child took over {timeout_s:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeakMemoryError(f"the {contender} child failed ({last})")
    reply = json.loads(lines[-1])
    return PeakMemory(baseline_mb=reply["baseline_mb"], peak_mb=reply["peak_mb"], runs=runs,
                      hwm_reset=reply["hwm_reset"])


def _package_parent() -> str:
    """The folder holding the ``featherdeploy`` package this process imported: the checkout's
    root (so the child runs this checkout, even uninstalled) or site-packages. Not this file's
    parent folder: in a wheel that is featherdeploy/, which would make ``runtime`` top-level."""
    import featherdeploy

    return str(Path(featherdeploy.__file__).resolve().parents[1])


# ------------------------------------------------------------------------------- the child

def _status_mb(key: str) -> float | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) / 1024.0  # kB
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
    except OSError:
        return False
    return True


def _peak_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


def _child(request: Mapping[str, Any]) -> dict[str, Any]:
    # Every contender's child imports the same modules, so the baselines compare.
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401

    try:
        from featherdeploy.runtime import _native  # noqa: F401
    except ImportError:  # not built: ONNX Runtime can still be measured
        pass
    from featherdeploy.runtime.bench import make_ort_session
    from featherdeploy.runtime.engine import Engine
    from featherdeploy.runtime.options import EngineOptions, PlannerOptions

    feeds = {name: np.load(path, allow_pickle=False) for name, path in request["inputs"].items()}
    reset = _reset_peak()
    baseline = _status_mb("VmRSS")
    if request["contender"] == "engine":
        overrides = dict(request["engine_overrides"])
        if "planner" in overrides:  # PlannerOptions fields, as a JSON object
            overrides["planner"] = PlannerOptions(**overrides["planner"])
        options = EngineOptions.from_env(**overrides)
        engine = Engine(request["model"], threads=request["threads"], options=options)
        for _ in range(request["runs"]):
            engine.run(feeds)
    else:
        session = make_ort_session(request["model"], request["threads"])
        for _ in range(request["runs"]):
            session.run(None, feeds)
    return {"baseline_mb": baseline if reset else None, "peak_mb": _peak_mb(),
            "hwm_reset": reset}


def main() -> int:
    """``python -m featherdeploy.runtime.peak_memory``: one JSON request on stdin, one JSON line
    out."""
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
