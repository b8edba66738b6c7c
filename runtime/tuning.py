"""The choices the engine times rather than guesses, and how they are timed.

Four choices depend on the machine more than any rule captures: whether a single image runs
faster on all threads or on one (stage hand-offs cost more than they save on small models),
how a batch runs (batch-interleaved or image by image: interleaving pays on small planes, costs
L2 misses on big ones; and, when it does not interleave whole, whether image by image up to a
cut and interleaved after it, ``planner.batch.interleave_cut``, beats image by image), whether
a plan's serial runs compute its wavefront groups as row wavefronts or member by member (the
rows a member writes are read back from cache, against the wavefront's finer-grained calls:
ResNet-50 at 16 images ran 1.06x slower member by member, MobileNetV2's depthwise blocks 0.93x
the time, one thread, AMD EPYC Zen4; the L2 and L3 sizes decide), and, for
``backend="auto"``, whether the native program beats ONNX Runtime dense on the whole model at
all (a model whose time goes to operators the sparse kernels do not speed up, or to ONNX
Runtime segments and the hand-offs between them, may not; then it runs on ONNX Runtime for
those shapes). Each is timed once, in streams of back-to-back calls as a stream of requests
runs them (helper threads awake), the two options alternating so a noisy moment hits both. With
``EngineOptions.tuning = "off"`` nothing is timed: all threads, interleaved groups whenever
they fit (never split), row wavefronts, native whatever ONNX Runtime does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import CompiledPlan

__all__ = ["PROBE_RUNS", "PROBE_ROUNDS", "PROBE_SETTLE_S", "SERIAL_PROBE_MAX_S",
           "SERIAL_PLAN_MARGIN", "SPLIT_MARGIN", "WAVEFRONT_MARGIN", "ORT_PROBE_GAP_S",
           "ORT_MARGIN", "ORT_GEMM_SHARE", "compare_streams", "time_serial_wavefronts"]

PROBE_RUNS = 5
PROBE_ROUNDS = 3
PROBE_SETTLE_S = 0.02
# Single-image plans slower than this on all threads are not timed on one (measured: a 5M-MAC
# model takes 0.18 ms on 1 thread, 0.19 ms on 2; big models always win with more threads).
SERIAL_PROBE_MAX_S = 0.005
# A parallel plan at least this much faster than itself run on one thread keeps its threads
# without a one-thread program built to compare (that program holds a second copy of the
# packed weights and the arena: MobileNetV2 at batch 1 peaked 15 MiB above ONNX Runtime). The
# one-thread program's own layouts make it at most ~10% faster than the parallel plan run
# serially (column segments: ResNet-20x2 batch 1, 3-10% on Intel Xeon; MobileNetV2's steps sum
# to the same on AMD EPYC Zen4), so a parallel plan 1/0.9 = 1.11x faster than that run also
# beats the one-thread program. (At 0.8, ShuffleNetV2 and MobileNetV2 at batch 1, whose two
# threads are 1.1-1.3x faster than one, built it and peaked above ONNX Runtime, AMD EPYC Zen4.)
SERIAL_PLAN_MARGIN = 0.9
# A batch runs split (image by image, then interleaved) only when that measured this much
# faster than image by image: it holds a second copy of the packed weights and a group's arena,
# and one timing of two options this close picked the slower on RegNetY-400MF (6%, AMD EPYC
# Zen4, one thread).
SPLIT_MARGIN = 0.95

# Serial runs go member by member only when that measured this much faster than row
# wavefronts (the fixed rule, and the measured winner on the small models they were made for).
WAVEFRONT_MARGIN = 0.97

# Against ONNX Runtime: its intra-op threads spin for a while after a run, so a stream started
# right after one shares the cores with them (EfficientNet-B0's native program, 1.6x faster,
# measured slower that way); each stream then opens with this much idle.
ORT_PROBE_GAP_S = 0.1
# ONNX Runtime takes over only when it measured this much faster than the native program: a
# wrong switch costs the native speedup, a wrong stay at most the margin.
ORT_MARGIN = 0.95
# Compared only when ONNX Runtime runs part of the program, or when at least this share of its
# MACs is in MatMul / Gemm (ConvNeXt's channels-last linears: native 0.58x); programs of sparse
# convs measured 1.15-5x ORT over the model zoo (docs/performance-log.md).
ORT_GEMM_SHARE = 0.2

Call = Callable[[], object]


def compare_streams(first: Call, second: Call, first_limit_s: float = math.inf,
                    gap_s: float = 0.0) -> tuple[float, float]:
    """Median seconds of ``first()`` and ``second()``, each timed in streams of back-to-back
    calls, alternating over PROBE_ROUNDS, each stream after ``gap_s`` of idle. Stops early,
    second untimed (inf), when ``first`` is slower than ``first_limit_s``."""
    first_s: list[float] = []
    second_s: list[float] = []
    for _ in range(PROBE_ROUNDS):
        time.sleep(gap_s)
        first_s += _stream_seconds(first)
        if np.median(first_s) > first_limit_s:
            return float(np.median(first_s)), math.inf
        time.sleep(gap_s)
        second_s += _stream_seconds(second)
    return float(np.median(first_s)), float(np.median(second_s))


def _stream_seconds(fn: Call) -> list[float]:
    """Wall times of PROBE_RUNS back-to-back calls after PROBE_SETTLE_S of untimed calls (at
    least one): idle cores back to speed, helper threads awake. Timing the first calls mostly
    measures how fast the second core wakes, which favours whichever option needs it least (a
    noisy probe once served MobileNet's batch of 32 planar: 2.7x slower)."""
    settle_until = time.perf_counter() + PROBE_SETTLE_S
    while True:
        fn()
        if time.perf_counter() >= settle_until:
            break
    times = []
    for _ in range(PROBE_RUNS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_serial_wavefronts(plan: CompiledPlan) -> bool | None:
    """Times the serial runs of ``plan`` (one thread, or each thread on its own images) with its
    wavefront groups as row wavefronts and member by member, and keeps member by member when it
    is WAVEFRONT_MARGIN faster (``native.serial_wavefronts``; results are bit-identical either
    way). Returns the choice, or None when the plan has no such groups."""
    native = plan.native
    if not native.serial_wave_groups:
        return None
    images = native.threads  # run_images: one image (or group) per thread, as a batch runs

    def batch(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (images * shape[0], *shape[1:])

    inputs = [np.zeros(batch(s), np.float32) for s in plan.input_shapes]
    outputs = [np.empty(batch(s), np.float32) for s in plan.output_shapes]

    def run(wavefronts: bool) -> None:
        native.serial_wavefronts = wavefronts
        if images > 1:
            native.run_images(inputs, outputs, images)
        else:
            native.run(inputs, outputs)

    waves_s, layers_s = compare_streams(lambda: run(True), lambda: run(False))
    native.serial_wavefronts = layers_s >= WAVEFRONT_MARGIN * waves_s
    return bool(native.serial_wavefronts)
