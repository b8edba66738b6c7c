"""Row wavefronts (native exec/wavefront.cpp): when a plan runs serially (one thread, or each
thread on its own images), runs of up to ``PlannerOptions.wavefront_layers`` consecutive convs
are computed in sweeps, each as far as the rows it reads exist, so the rows a conv writes are read
by the next one moments later, from cache. In parallel plans, groups of interleaved convs on
tensors out of L2 run in row bands, one per thread (native ``WaveBands``); other groups run layer
by layer there. Results are bit-identical to layer by layer.

Members: batch-interleaved strided convs (one row per sweep; rows shorter than a kernel chunk
stay layer by layer), stride-1 planar CSR convs of one image in the contiguous ("fast")
layout (enough rows per sweep for a chunk, ranges cut at whole vectors), and direct strided
convs of one image (exact rows).
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

from featherdeploy.runtime.planner.layout import ARENA, Buf, SymView, native, pair_chunk_vectors

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import StepRecord

__all__ = ["wavefront_runs", "run_buffers", "mark_wavefronts", "views_disjoint_or_equal",
           "buffers_disjoint_or_equal"]


def _conv_views(record: StepRecord) -> list[SymView]:
    return [v for v in (record.views.get("input"), record.views.get("output"),
                        record.views.get("residual")) if isinstance(v, SymView)]


def _member(record: StepRecord, vector_floats: int) -> bool:
    """True when a step can join a row wavefront: a conv on arena tensors only that is either
    batch-interleaved and strided (no stride-phase scratch, no column-segment halos) with output
    rows at least a chunk long (shorter rows are computed a few at a time, which row-by-row calls
    would undo), a stride-1 planar CSR conv of one image whose output (and residual) share
    its stream's layout, computed in whole vectors (ConvStep::by_vectors), or a direct strided
    conv of one image (its rows are exact)."""
    spec = record.spec
    if not isinstance(spec, native().ConvSpec):
        return False
    if spec.phase_split or spec.gather or spec.halo:
        return False
    out = record.views["output"]
    if spec.direct:
        if out.dims[0] != 1:
            return False
    elif spec.strided:
        if out.dims[3] // vector_floats < pair_chunk_vectors(vector_floats):
            return False
    elif not (spec.lanes == 1 and not spec.bsr and spec.fast
              and (spec.stride_h, spec.stride_w) == (1, 1) and out.dims[0] == 1):
        return False
    return all(v.space == ARENA and v.buf is not None for v in _conv_views(record))


def wavefront_runs(records: list[StepRecord], layers: int, vector_floats: int
                   ) -> list[list[int]]:
    """Step indices of the row wavefronts to try: each run of consecutive member-capable convs
    cut into groups of at most ``layers`` where the fewest floats cross a cut (_cut_groups)."""
    if layers < 2:
        return []
    groups: list[list[int]] = []
    run: list[int] = []
    for index, record in enumerate([*records, None]):
        if record is not None and _member(record, vector_floats):
            run.append(index)
            continue
        groups += [g for g in _cut_groups(records, run, layers) if len(g) >= 2]
        run = []
    return groups


def _crossing_floats(records: list[StepRecord], run: list[int]) -> list[int]:
    """Per cut after run position j: the floats of the tensors members up to j write and
    members after j read. A tensor inside a group is read rows after it is written, from
    cache; one crossing a cut goes out to memory and back (MobileNetV2's expanded 6C-channel
    tensors, against the C-channel block outputs between blocks)."""
    outputs = [records[i].views["output"] for i in run]
    readers: dict[int, list[int]] = {}  # id(buf) -> positions of the members reading it
    for pos, index in enumerate(run):
        for name in ("input", "residual"):
            view = records[index].views.get(name)
            if isinstance(view, SymView) and view.buf is not None:
                readers.setdefault(id(view.buf), []).append(pos)
    cuts = [0] * (len(run) - 1)
    for pos, out in enumerate(outputs):
        # Read up to the next member writing the same storage (a residual written in place:
        # that member still reads this tensor, later ones read its own).
        rewrite = next((p for p in range(pos + 1, len(run)) if outputs[p].buf is out.buf),
                       len(run))
        last = max((p for p in readers.get(id(out.buf), []) if pos < p <= rewrite),
                   default=pos)
        for cut in range(pos, last):
            cuts[cut] += math.prod(out.dims)
    return cuts


def _cut_groups(records: list[StepRecord], run: list[int], layers: int) -> list[list[int]]:
    """``run`` cut into groups of at most ``layers`` with the fewest floats crossing the cuts
    (ties: fewer groups), by dynamic programming over the cut positions."""
    if not run:
        return []
    cuts = _crossing_floats(records, run)
    best: list[tuple[int, int, int]] = [(0, 0, 0)]  # per prefix: (floats, groups, last start)
    for end in range(1, len(run) + 1):
        best.append(min((best[start][0] + (cuts[start - 1] if start else 0),
                         best[start][1] + 1, start)
                        for start in range(max(0, end - layers), end)))
    groups: list[list[int]] = []
    end = len(run)
    while end:
        start = best[end][2]
        groups.append(run[start:end])
        end = start
    return groups[::-1]


def run_buffers(records: list[StepRecord], runs: list[list[int]]) -> list[list[Buf]]:
    """The arena buffers each run's convs read or write, their activations and whatever else
    they read from the arena (gated weights: runtime/ops/conv.py): the memory planner keeps any
    two of them coinciding or apart, since a run's members execute interleaved and a buffer
    whose last step is an early member is still read while a later member writes."""
    return [[v.buf for i in run for v in records[i].views.values()
             if getattr(v, "buf", None) is not None] for run in runs]


def _view_id(view: SymView | None) -> tuple | None:
    """Where a placed arena view's floats are: same id = same memory, same layout."""
    if view is None:
        return None
    return view.offset(), view.dims, view.strides, view.position_stride


def views_disjoint_or_equal(views: list[SymView]) -> bool:
    """True when any two placed views either are the same view or share no float."""
    spans = {}
    for view in views:
        first = view.offset()
        spans[_view_id(view)] = (first, first + view.reach())
    ordered = sorted(spans.values())
    return all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(ordered))


def buffers_disjoint_or_equal(bufs: list[Buf]) -> bool:
    """True when any two placed buffers either hold one layout at one offset or share no
    float. (Views alone do not say it: a conv's last masked store runs past its view into the
    plane slack, and the memory planner may pack another layout there.)"""
    spans = {(b.offset, b.key): (b.offset, b.offset + b.size) for b in bufs}
    ordered = sorted(spans.values())
    return all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(ordered))


def mark_wavefronts(records: list[StepRecord], layers: int, vector_floats: int,
                    band_min_bytes: int) -> list[list[int]]:
    """Once buffers are placed: mark the specs of every wavefront run whose views are whole
    tensors that either coincide or do not overlap in memory, buffers included (native
    WaveInfo, common.h), and return the marked runs. Storage reused within a run is then always
    a tensor of the same layout, so row r of one is row r of the other and the members' guards
    keep a row from being overwritten before every earlier member has read it."""
    marked = []
    for group in wavefront_runs(records, layers, vector_floats):
        members = [records[i] for i in group]
        views = [v for r in members for v in _conv_views(r)]
        if (views_disjoint_or_equal(views)
                and buffers_disjoint_or_equal([v.buf for v in views if v.buf is not None])):
            _mark_group(members, len(marked), vector_floats, band_min_bytes)
            marked.append(group)
    return marked


def _view_bytes(view: SymView) -> int:
    return 4 * math.prod(view.dims)


def _mark_group(members: list[StepRecord], number: int, vector_floats: int,
                band_min_bytes: int) -> None:
    """Each member's producers and guards, as positions in the group, and its rows per sweep
    (WaveInfo): one for strided convs (their chunks are rows); for planar ones enough rows for
    one kernel chunk, cut at whole vectors (the last runs into the next row) except for direct
    convs, whose ranges are exact rows."""
    outs = [_view_id(r.views["output"]) for r in members]
    chunk_floats = 2 * pair_chunk_vectors(vector_floats) * vector_floats

    def last_writer(view: SymView | None, before: int) -> int:
        return max((j for j in range(before) if outs[j] == _view_id(view)), default=-1)

    def view(record: StepRecord, name: str) -> Any:
        return record.views.get(name)

    # Row bands on several threads (native WaveBands) need exact rows (interleaved members)
    # and no member writing where an earlier one wrote, except over its own residual row by row
    # (bands and the fill write the rows of one tensor in their own order), and pay only out of
    # cache (PlannerOptions.wave_band_min_bytes).
    overwrites_only_residuals = all(
        j == last_writer(view(members[i], "residual"), i)
        for i in range(len(members)) for j in range(i) if outs[j] == outs[i])
    bands = (all(r.spec.strided for r in members) and overwrites_only_residuals
             and max(_view_bytes(r.views["output"]) for r in members) >= band_min_bytes)
    for i, record in enumerate(members):
        spec = record.spec
        planar = not spec.strided
        wave = native().WaveInfo()
        wave.group = number
        wave.in_from = last_writer(view(record, "input"), i)
        wave.res_from = last_writer(view(record, "residual"), i)
        # Earlier members reading what this one overwrites: its residual, or the storage of a
        # tensor that died within the group.
        wave.guard_in = [k for k in range(i) if _view_id(view(members[k], "input")) == outs[i]]
        wave.guard_res = [k for k in range(i)
                          if _view_id(view(members[k], "residual")) == outs[i]]
        wave.reach_rows = record.wave_reach_rows
        wave.step = -(-chunk_floats // spec.stream_rs) if planar else 1
        wave.overhang = int(planar and not spec.direct)
        wave.bands = bands
        spec.wave = wave
