"""Run a zoo file in ONNX Runtime on random inputs and judge its outputs (numpy + onnxruntime).

An output is non-degenerate when it is finite, not vanishing (max|y| > 1e-6) and not constant
(std > 1e-6 max|y|). Random init fails this: torchvision's MobileNetV2 gives logits of ~1e-9 until
its BatchNorms are randomized. Separately, an output is flagged input-insensitive (a warning, not
a failure) when two random inputs give outputs that differ by at most 1e-4 max|y|: timm's RepVGG
at random init, but also trained classifiers whose softmax saturates on noise, and magnitude-pruned
published models whose activations die (a constant map downstream of a dead ReLU layer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OutputCheck", "RunResult", "make_feeds", "check_output", "run_and_check"]

VANISH_ABS = 1e-6
CONSTANT_REL = 1e-6
SENSITIVITY_REL = 1e-4
INT_HIGH = 10  # random ints in [0, 10) for integer inputs (ids, lengths, class indices)


@dataclass
class OutputCheck:
    """The verdict on one output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    finite: bool
    std: float
    max_abs: float
    rel_change: float  # max|y(x1) - y(x2)| / max|y(x1)|
    input_sensitive: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class RunResult:
    """One file's run: an error string, or per-output checks and the time of one run."""

    error: str | None = None
    outputs: list[OutputCheck] = field(default_factory=list)
    run_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.ok for o in self.outputs)


def make_feeds(inputs: list[dict[str, Any]], rng: np.random.Generator,
               batch: int = 1) -> dict[str, np.ndarray]:
    """One feed per manifest input at ``batch`` (it replaces dim 0): N(0, 1) floats, small
    non-negative ints, random bools."""
    feeds = {}
    for spec in inputs:
        shape = [batch, *spec["shape"][1:]]
        dtype = np.dtype(spec["dtype"])
        if np.issubdtype(dtype, np.floating):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[spec["name"]] = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            feeds[spec["name"]] = rng.integers(0, INT_HIGH, size=shape).astype(dtype)
    return feeds


def check_output(name: str, first: np.ndarray, second: np.ndarray) -> OutputCheck:
    """Judge output ``name`` from two runs on different random inputs."""
    values = first.astype(np.float64) if first.size else np.zeros(1)
    finite = bool(np.isfinite(values).all())
    max_abs = float(np.abs(values).max()) if finite else float("inf")
    std = float(values.std()) if finite else float("nan")
    delta = float(np.abs(values - second.astype(np.float64)).max()) if first.size else 0.0
    rel_change = delta / max_abs if finite and max_abs > 0 else 0.0
    sensitive = bool(finite and delta > SENSITIVITY_REL * max_abs)
    problems = []
    if not finite:
        problems.append("not finite")
    elif max_abs <= VANISH_ABS:
        problems.append(f"vanishing (max|y| = {max_abs:.2e})")
    elif std <= CONSTANT_REL * max_abs:
        problems.append("constant")
    warnings = [] if sensitive or problems else ["input-insensitive"]
    return OutputCheck(name, tuple(first.shape), str(first.dtype), finite, std, max_abs,
                       rel_change, sensitive, problems, warnings)


def _session(path: Path, threads: int) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads, warnings muted."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_and_check(path: Path, inputs: list[dict[str, Any]], *, seed: int = 0,
                  threads: int = 1) -> RunResult:
    """Run ``path`` on two random feeds (batch 1) and check every output."""
    rng = np.random.default_rng(seed)
    try:
        session = _session(path, threads)
        names = [o.name for o in session.get_outputs()]
        first = session.run(None, make_feeds(inputs, rng))
        start = time.perf_counter()
        second = session.run(None, make_feeds(inputs, rng))
        elapsed = (time.perf_counter() - start) * 1e3
    except Exception as exc:  # noqa: BLE001 - ORT raises many types; the report names it
        return RunResult(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
    checks = [check_output(n, np.asarray(a), np.asarray(b))
              for n, a, b in zip(names, first, second, strict=True)]
    return RunResult(outputs=checks, run_ms=elapsed)
