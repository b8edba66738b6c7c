"""Row-band schedules: run a chain of convs band by band instead of layer by layer.

A plan run on one thread (batch 1 on one thread, or one image group of ``run_images``) normally
finishes each conv before the next starts, so every activation makes a round trip through L2 or
beyond when it outgrows L2 (ResNet-50's 256-channel 56x56 tensors are 3.2 MB; a 16-image group
of a 32-channel 32x32 tensor is 2.4 MB). Within a run of consecutive convs that can compute a
range of output rows (``ConvStep::output_rows``), the schedule computes a band of rows of the
first conv, then every row of the next conv those rows allow (a 3x3 conv with pad 1 trails its
input by one row), and so on down the chain; then the next band. Each band's rows are still in
cache when the next conv reads them.

The schedule is a list of (step, r0, r1): output rows [r0, r1) of a step, or (step, -1, -1) for
a whole step; ``Plan::set_schedule`` checks it covers every step once, rows ascending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from runtime.errors import EngineError

__all__ = ["BAND_BYTES", "MIN_GROUP", "BandStep", "band_groups", "band_schedule", "rows_ready"]

# Output bytes of one band of the widest tensor in a group. Measured (2 MB L2): ResNet-50's
# conv2_x at batch 1 ran 5% faster with 0.5-1 MB bands than layer by layer (3.76 -> 3.57 ms at
# 90%, 2.46 -> 2.34 ms at 95%), 128-256 KB bands were slower (more calls, the rows a 3x3 conv
# trails by weigh more); ResNet-20x2 and MobileNet 16-image groups did not change (+-5% noise).
# Outputs are still whole tensors, so every store still misses: rolling band buffers would be the
# next step.
BAND_BYTES = 1024 * 1024
MIN_GROUP = 2  # a lone conv gains nothing from bands


@dataclass(frozen=True)
class BandStep:
    """A conv step that can run by output rows, and the storage it reads and writes."""

    index: int              # step index in the plan
    reads: Any              # input storage (a plan Buf; identity is what matters)
    residual: Any           # residual storage or None
    writes: Any             # output storage (None: the caller's output array)
    out_rows: int
    in_rows: int
    kernel_rows: int        # input rows one output row spans: (kh - 1) * dh + 1
    pad_top: int
    stride: int
    row_bytes: int          # bytes of one output row (all channels, all lanes)


def rows_ready(step: BandStep, input_rows: int, residual_rows: int) -> int:
    """Output rows of ``step`` computable when its input has ``input_rows`` rows done (from the
    top) and its residual ``residual_rows``: output row r reads input rows up to
    r * stride - pad_top + kernel_rows - 1."""
    if input_rows >= step.in_rows:
        ready = step.out_rows
    else:
        ready = max(0, (input_rows - step.kernel_rows + step.pad_top) // step.stride + 1)
    return min(ready, residual_rows, step.out_rows)


def band_groups(step_count: int, band_steps: dict[int, BandStep]) -> list[range]:
    """Runs of at least MIN_GROUP consecutive band steps: the step ranges run band by band."""
    found, k = [], 0
    while k < step_count:
        end = k
        while end < step_count and end in band_steps:
            end += 1
        if end - k >= MIN_GROUP:
            found.append(range(k, end))
        k = max(end, k + 1)
    return found


def band_schedule(step_count: int, band_steps: dict[int, BandStep],
                  band_bytes: int | None = None) -> list[tuple[int, int, int]]:
    """The execution order of a plan of ``step_count`` steps (see the module docstring); bands
    of ``band_bytes`` (default BAND_BYTES) of the widest tensor of a group."""
    band_bytes = BAND_BYTES if band_bytes is None else band_bytes
    schedule: list[tuple[int, int, int]] = []
    k = 0
    for group in band_groups(step_count, band_steps):
        schedule += [(i, -1, -1) for i in range(k, group.start)]
        schedule += _group_schedule([band_steps[i] for i in group], band_bytes)
        k = group.stop
    return schedule + [(i, -1, -1) for i in range(k, step_count)]


def _group_schedule(steps: list[BandStep], band_bytes: int) -> list[tuple[int, int, int]]:
    producer = {id(s.writes): s for s in steps if s.writes is not None}
    height = max(s.out_rows for s in steps)
    band = max(1, band_bytes // max(s.row_bytes for s in steps))
    done = {s.index: 0 for s in steps}

    def available(storage: Any, complete: int) -> int:
        source = producer.get(id(storage)) if storage is not None else None
        return complete if source is None else done[source.index]

    schedule = []
    target = 0
    while any(done[s.index] < s.out_rows for s in steps):
        if target == height:  # every input complete, yet rows missing: inconsistent geometry
            raise EngineError("row bands: a conv chain cannot complete (internal error)")
        target = min(height, target + band)
        for s in steps:
            cap = math.ceil(target * s.out_rows / height)
            ready = rows_ready(s, available(s.reads, s.in_rows),
                               available(s.residual, s.out_rows))
            rows = min(cap, ready)
            if rows > done[s.index]:
                schedule.append((s.index, done[s.index], rows))
                done[s.index] = rows
    return schedule
