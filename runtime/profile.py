"""Where the time goes: seconds per native step of a program, like ONNX Runtime's per-node
profile or DeepSparse's per-layer timings. ``Engine.profile()`` and ``featherdeploy bench
--profile`` report it.

What is measured: the native plan's own timer (``Plan.profile`` in ``runtime/native/exec/``)
runs each step alone on the calling thread, ``reps`` times, and keeps each step's fastest run
(robust to a noisy machine). Steps therefore run without the thread split and without the row
wavefronts a normal run uses, so the shares describe the work of each step, not how a
multi-threaded run overlaps it. An ONNX Runtime segment of a partly native model is one entry
(its fastest whole run). The timer is a separate entry point, so ``run`` pays nothing for it.

``timeline_program`` (``Engine.profile(..., real_run=True)``) measures the other view: real
runs, threads, wavefronts and row bands included, cut where the run's own structure allows (the
plan's ``timeline``). An entry is a stage of a parallel run or a step of a serial one; a wavefront
group (or its row bands) is one entry naming its steps, the rows between bands one per member.
Each entry keeps its fastest of ``reps`` runs, so the entries may sum to less than any one run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from featherdeploy.runtime.program import Program

__all__ = ["StepTime", "Profile", "profile_program", "timeline_program", "DEFAULT_PROFILE_REPS"]

DEFAULT_PROFILE_REPS = 10
ORT_STEP = "onnxruntime"
STEPS_ALONE = "each step alone on one thread, fastest of reps"
REAL_RUN = "real runs (threads, wavefronts, row bands), each entry's fastest of reps"


@dataclass(frozen=True)
class StepTime:
    """The fastest of ``reps`` runs of one step (or one ONNX Runtime segment)."""

    index: int          # position in the program, over all segments
    node: str           # the ONNX node the step serves ("" for layout copies and the like)
    step: str           # native step name (e.g. "conv_csr") or "onnxruntime"
    detail: str         # the step's own description (kernel, layout, split)
    seconds: float


@dataclass(frozen=True)
class Profile:
    """Per-step times of one program (see the module docstring for what they measure)."""

    steps: tuple[StepTime, ...]
    reps: int
    input_shapes: dict[str, tuple[int, ...]]
    method: str = STEPS_ALONE

    @property
    def total_s(self) -> float:
        return sum(s.seconds for s in self.steps)

    def shares(self) -> list[float]:
        """Each step's fraction of the total (they sum to 1; all 0 for an empty profile)."""
        total = self.total_s
        return [s.seconds / total if total > 0 else 0.0 for s in self.steps]

    def to_dict(self) -> dict[str, Any]:
        return {"reps": self.reps, "total_ms": 1000.0 * self.total_s,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
                "method": self.method,
                "steps": [{**asdict(s), "ms": 1000.0 * s.seconds, "share": share}
                          for s, share in zip(self.steps, self.shares(), strict=True)]}

    def format(self, top: int = 15) -> str:
        """The ``top`` most expensive steps as a Markdown table."""
        shares = self.shares()
        order = sorted(range(len(self.steps)), key=lambda i: -self.steps[i].seconds)[:top]
        lines = [f"profile: {len(self.steps)} entries, {1000.0 * self.total_s:.3f} ms in total "
                 f"({self.method.replace('reps', str(self.reps))})",
                 "| # | node | step | ms | share | detail |", "|---|---|---|---|---|---|"]
        for i in order:
            s = self.steps[i]
            lines.append(f"| {s.index} | {s.node} | {s.step} | {1000.0 * s.seconds:.4f} | "
                         f"{100.0 * shares[i]:.1f}% | {s.detail} |")
        return "\n".join(lines)


def profile_program(program: Program, feeds: dict[str, np.ndarray],
                    reps: int = DEFAULT_PROFILE_REPS) -> Profile:
    """Time every step of ``program`` on ``feeds`` (arrays of the program's input shapes)."""

    def entries(plan: Any, inputs: list[np.ndarray], outputs: list[np.ndarray]
                ) -> list[tuple[str, str, str, float]]:
        seconds = plan.native.profile(inputs, outputs, reps)  # also computes the outputs
        return [(record.node or "", name, detail, float(sec))
                for (record, name, detail), sec in zip(plan.steps(), seconds, strict=True)]

    return _per_segment(program, feeds, reps, entries, STEPS_ALONE)


def timeline_program(program: Program, feeds: dict[str, np.ndarray],
                     reps: int = DEFAULT_PROFILE_REPS) -> Profile:
    """Wall time per entry of real runs of ``program`` on ``feeds`` (see the module docstring)."""

    def entries(plan: Any, inputs: list[np.ndarray], outputs: list[np.ndarray]
                ) -> list[tuple[str, str, str, float]]:
        described, rows = plan.steps(), []
        for first, last, sec in plan.native.timeline(inputs, outputs, reps):
            record, name, detail = described[first]
            if last > first:
                name = f"wavefront of {last - first + 1}"
                detail = ", ".join(f"{d[1]} {d[0].node or ''}".strip()
                                   for d in described[first:last + 1])
            rows.append((record.node or "", name, detail, float(sec)))
        return rows

    return _per_segment(program, feeds, reps, entries, REAL_RUN)


def _per_segment(program: Program, feeds: dict[str, np.ndarray], reps: int,
                 native_entries: Callable[[Any, list[np.ndarray], list[np.ndarray]],
                                          list[tuple[str, str, str, float]]],
                 method: str) -> Profile:
    """Runs the program segment by segment: each native plan's (node, step, detail, seconds)
    entries from ``native_entries`` (which also computes its outputs), each ONNX Runtime
    segment as one entry (its fastest whole run)."""
    from featherdeploy.runtime.program import NativeSegment

    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    values = dict(feeds)
    steps: list[StepTime] = []
    for runner in program.runners:
        if isinstance(runner, NativeSegment):
            plan = runner.plan
            inputs = [np.ascontiguousarray(values[n], np.float32) for n in runner.segment.inputs]
            outputs = [np.empty(shape, np.float32) for shape in plan.output_shapes]
            for entry in native_entries(plan, inputs, outputs):
                steps.append(StepTime(len(steps), *entry))
        else:
            outputs, sec = _fastest(lambda r=runner: r.run(values), reps)
            first = runner.segment.nodes[0]
            steps.append(StepTime(len(steps), first.name, ORT_STEP,
                                  f"{len(runner.segment.nodes)} node(s) from {first.op}", sec))
        values.update(zip(runner.segment.outputs, outputs, strict=True))
    shapes = {name: tuple(int(d) for d in x.shape) for name, x in feeds.items()}
    return Profile(tuple(steps), reps, shapes, method)


def _fastest(fn: Any, reps: int) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best
