"""The plan builder: op emitters add typed native step specs with symbolic views; once every
node is emitted, buffers are placed, row splits and wavefronts chosen, views resolved and the
native plan built.

Each op's emitter lives with its op (``runtime/ops/``); this module holds the bookkeeping they
share: where each activation is stored, copies between layouts, the constants table and the
plan's inputs and outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from featherdeploy.runtime.const_tables import (
    SHARED_CONST_MIN_FLOATS,
    TABLE_SLACK_FLOATS,
    constant_table,
    shared_constant,
)
from featherdeploy.runtime.errors import ModelLoadError, UnsupportedOpError
from featherdeploy.runtime.graph import Graph, Node
from featherdeploy.runtime.ops.fusion import RESIDUAL_KEY
from featherdeploy.runtime.ops.registry import get_op
from featherdeploy.runtime.options import EngineOptions, PlannerOptions
from featherdeploy.runtime.planner.layout import (
    CONST,
    INPUT,
    OUTPUT,
    VMAX,
    Buf,
    SymOffset,
    SymView,
    Tensor,
    as4,
    compact_strides,
    flat_tensor,
    native,
    round_up,
    segment_tensor,
    spatial_tensor,
    tensor_lanes,
)
from featherdeploy.runtime.planner.memory import (
    ZeroNeed,
    border_zeroing,
    free_from,
    peak_live,
    place_buffers,
    zero_positions,
)
from featherdeploy.runtime.planner.pads import assign_pads, border_reads, plan_phase_layouts
from featherdeploy.runtime.planner.threads import RowSplitCandidate, choose_row_splits
from featherdeploy.runtime.planner.wavefront import mark_wavefronts, run_buffers, wavefront_runs

__all__ = ["StepRecord", "CompiledPlan", "Builder", "build_plan"]


@dataclass
class StepRecord:
    """One emitted native step: the node it serves, its spec and the spec fields that are set
    from symbolic views once buffers are placed."""

    node: str | None
    op: str
    spec: Any
    views: dict[str, SymView | SymOffset]
    wave_reach_rows: int = 0  # convs: input rows a row reads below its first (kernel reach)


@dataclass
class CompiledPlan:
    """A native plan for one set of input shapes, with what the engine needs around it."""

    native: Any
    input_names: list[str]
    input_shapes: list[tuple[int, ...]]
    output_names: list[str]
    output_shapes: list[tuple[int, ...]]
    records: list[StepRecord] = field(default_factory=list)
    wavefronts: list[list[int]] = field(default_factory=list)  # step indices of each group
    interleave: bool = False
    # Memory (runtime/planner/memory.py): the most floats of buffers live at one step (a lower
    # bound of the arena, native.arena_floats), and the border floats zero steps clear per call.
    peak_live_floats: int = 0
    zeroed_floats: int = 0
    # Whether serial runs' wavefront choice was timed (tuning.time_serial_wavefronts).
    wavefronts_timed: bool = False

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for C-contiguous float32 inputs of the planned shapes."""
        outputs = [np.empty(shape, np.float32) for shape in self.output_shapes]
        self.native.run(inputs, outputs)
        return outputs

    def steps(self) -> list[tuple[StepRecord, str, str]]:
        """(record, native step name, native detail) of every step, in order."""
        return list(zip(self.records, self.native.step_names(), self.native.step_details(),
                        strict=True))


class Builder:
    """Emits steps with symbolic buffers, then places buffers and builds the native plan."""

    def __init__(self, graph: Graph, shapes: dict[str, tuple[int, ...]], threads: int,
                 options: EngineOptions, interleave: bool = False) -> None:
        self.graph, self.shapes, self.threads = graph, shapes, threads
        self.options: EngineOptions = options
        self.opts: PlannerOptions = options.planner
        self.interleave = interleave
        self.vector_floats = int(native().vector_floats(options.isa))
        self.pads = assign_pads(graph, shapes, self.opts, interleave)
        # Tensors whose border a conv reads as its zero padding (Buf.border_read).
        self.border_reads = {name for name, pad in border_reads(
            graph, shapes, self.opts, interleave).items() if pad > 0}
        self.phase_layouts = plan_phase_layouts(graph, shapes, self.pads, self.opts, interleave)
        self.relayouts: dict[tuple[str, int | str], Tensor] = {}
        self.tensors: dict[str, Tensor] = {}
        self.records: list[StepRecord] = []
        self.bufs: list[Buf] = []
        self.consts: list[np.ndarray] = []  # small constants, packed into table 0
        self.const_size = 0
        self.const_tables: list[np.ndarray] = []  # large constants: tables 1, 2, ... (shared)
        self.outputs_written: set[str] = set()
        self.node: Node | None = None  # the node being emitted
        self.node_index = -1
        self.readers = _readers(graph)
        self.reader_nodes: dict[str, list[Node]] = {}  # the nodes reading each tensor
        for n in graph.nodes:
            for name in dict.fromkeys(reads(n)):
                self.reader_nodes.setdefault(name, []).append(n)
        # Index of the last node reading each tensor (a fused residual counts as a read).
        self.last_read = {name: i for i, n in enumerate(graph.nodes) for name in reads(n)}
        self.row_split_candidates: dict[str, RowSplitCandidate] = {}  # by output name
        # Channel slices stored as views of their source's planes (alias_channels), and those
        # sources: no conv writes its output over either (output_over_residual).
        self.aliased: set[str] = set()

    # -- tensors
    def new_tensor(self, name: str, shape: tuple[int, ...], segments: bool = False,
                   position_major: bool = False) -> Tensor:
        if segments:
            t = segment_tensor(shape, max(1, self.pads.get(name, 0)), self.vector_floats)
        elif len(shape) == 4:
            t = spatial_tensor(shape, self.pads.get(name, 0), self.opts,
                               tensor_lanes(shape, self.interleave, self.opts), position_major)
        else:
            t = flat_tensor(shape)
        t.buf.border_read = name in self.border_reads
        self.bufs.append(t.buf)
        self.tensors[name] = t
        return t

    def alias_channels(self, name: str, source: str, start: int) -> bool:
        """Stores ``name``, channels [start, start + C) of ``source``, as a view of the
        source's planes instead of a copy (a Split or Slice on channels: ShuffleNet's branch
        split), when both have one layout (pad, lanes). The source's storage then lives as long
        as the slice is read. False (nothing done) otherwise."""
        x, shape = self.tensors.get(source), self.shapes[name]
        if (x is None or not x.spatial or x.segments or x.position_major or len(shape) != 4
                or name in self.graph.output_names or self.pads.get(name, 0) != x.pad
                or tensor_lanes(shape, self.interleave, self.opts) != x.ws
                or shape[:1] + shape[2:] != x.shape[:1] + x.shape[2:]):
            return False
        self.tensors[name] = replace(x, shape=shape, lead=x.lead + start * x.cs)
        x.buf.border_read |= name in self.border_reads
        self.aliased.update((name, source))
        return True

    def output_over_residual(self, name: str, shape: tuple[int, ...], res_name: str,
                             input_name: str, segments: bool = False,
                             position_major: bool = False) -> Tensor | None:
        """The fused residual's tensor, reused as the storage of output ``name``, when nothing
        reads the residual later, the conv's input is other storage (other output channels'
        taps read every input position) and both share one layout: the epilogue then reads each
        residual vector and overwrites it with the output (the store hits the line the load
        just brought in, instead of fetching a fresh output line). None otherwise."""
        res, x = self.tensors.get(res_name), self.tensors.get(input_name)
        if (res is None or x is None or x.buf is res.buf or res_name in self.graph.output_names
                or len(shape) != 4 or self.last_read.get(res_name) != self.node_index
                or res_name in self.aliased):
            return None
        pad = self.pads.get(name, 0)
        fresh = (segment_tensor(shape, max(1, pad), self.vector_floats) if segments
                 else spatial_tensor(shape, pad, self.opts,
                                     tensor_lanes(shape, self.interleave, self.opts),
                                     position_major))
        if replace(fresh, buf=res.buf) != res:
            return None
        res.buf.border_read |= name in self.border_reads
        self.tensors[name] = res
        return res

    def new_buf(self, key: tuple, size: int) -> Buf:
        buf = Buf(key, size)
        self.bufs.append(buf)
        return buf

    def const_view(self, array: np.ndarray, dims: tuple[int, ...] | None = None) -> SymView:
        """A view of ``array`` among the plan's constants (its ``slot`` is the table)."""
        data = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        d = as4(tuple(array.shape) if dims is None else dims)
        if data.size >= SHARED_CONST_MIN_FLOATS:
            self.const_tables.append(shared_constant(data))
            return SymView(None, CONST, 0, d, compact_strides(d),  # type: ignore[arg-type]
                           len(self.const_tables))
        origin = self.const_size
        self.consts.append(data)
        padded = round_up(max(data.size, 1), VMAX)
        if padded > data.size:
            self.consts.append(np.zeros(padded - data.size, dtype=np.float32))
        self.const_size += padded
        return SymView(None, CONST, origin, d, compact_strides(d))  # type: ignore[arg-type]

    def emit(self, spec: Any, *, wave_reach_rows: int = 0,
             **views: SymView | SymOffset) -> StepRecord:
        """Appends a native step; ``views`` are the spec fields set once buffers are placed."""
        index = len(self.records)
        for value in views.values():
            buf = value.buf
            if buf is not None:
                buf.first = index if buf.first < 0 else min(buf.first, index)
                buf.last = max(buf.last, index)
        node = self.node
        record = StepRecord(node.name if node else None, node.op if node else "io", spec,
                            views, wave_reach_rows)
        self.records.append(record)
        return record

    def copy(self, src: SymView, dst: SymView) -> None:
        self.emit(native().CopySpec(), src=src, dst=dst)

    def tensor(self, name: str, position_major_ok: bool = False) -> Tensor:
        """Storage of activation ``name``; a constant used as an activation is copied in once;
        a column-segment tensor is seen through a planar copy, a position-major one (unless
        the caller addresses that layout: ``position_major_ok``) through a channel-major copy
        (each made once)."""
        if name not in self.tensors:
            if name not in self.graph.constants:
                raise ModelLoadError(f"tensor {name!r} is used before it is produced")
            value = np.asarray(self.graph.constants[name], np.float32)
            t = self.new_tensor(name, tuple(value.shape))
            self.copy(self.const_view(value, as4(t.shape)), t.view())
        t = self.tensors[name]
        if t.segments:
            key = (name, "planar")
            if key not in self.relayouts:
                planar = spatial_tensor(t.shape, self.pads.get(name, 0), self.opts)
                planar.buf.border_read = name in self.border_reads
                self.bufs.append(planar.buf)
                spec = native().SegmentCopySpec()
                spec.to_segments = False
                self.emit(spec, planar=planar.view(), segments=t.stream_view())
                self.relayouts[key] = planar
            return self.relayouts[key]
        if t.position_major and not position_major_ok:
            key = (name, "channel-major")
            if key not in self.relayouts:
                copy = spatial_tensor(t.shape, t.pad, self.opts, t.lanes)
                copy.buf.border_read = name in self.border_reads
                self.bufs.append(copy.buf)
                self.copy(t.view(), copy.view())
                self.relayouts[key] = copy
            return self.relayouts[key]
        return t

    def segment_tensor(self, name: str, pad: int) -> Tensor:
        """Activation ``name`` in the column-segment layout with at least ``pad`` (>= 1) pad
        rows: itself, or a copy of its planar storage with the halos filled (made once)."""
        t = self.tensors.get(name)
        if t is not None and t.segments and t.pad >= pad:
            t.buf.border_read |= pad > 0
            return t
        key = (name, "segments")
        if key not in self.relayouts or self.relayouts[key].pad < pad:
            x = self.tensor(name)
            seg = segment_tensor(x.shape, max(1, pad, x.pad), self.vector_floats)
            self.bufs.append(seg.buf)
            spec = native().SegmentCopySpec()
            spec.to_segments = True
            self.emit(spec, planar=x.view(), segments=seg.stream_view())
            self.relayouts[key] = seg
        copy = self.relayouts[key]
        copy.buf.border_read |= pad > 0
        return copy

    def relayout(self, name: str, lanes: int, pad: int) -> Tensor:
        """A copy of 4-D activation ``name`` in the other layout (planar <-> interleaved), for
        the rare conv whose input and output planes fall on different sides of
        ``interleave_max_pixels`` without a stride-phase split to convert on the way."""
        key = (name, lanes)
        if key not in self.relayouts:
            x = self.tensor(name)
            t = spatial_tensor(x.shape, max(pad, x.pad), self.opts, lanes)
            self.bufs.append(t.buf)
            self.copy(x.view(), t.view())
            self.relayouts[key] = t
        copy = self.relayouts[key]
        copy.buf.border_read |= pad > 0
        return copy

    def flat(self, name: str) -> Tensor:
        """Compact copy of a 4-D padded tensor (or the tensor itself if already compact)."""
        t = self.tensor(name)
        if not t.spatial:
            return t
        if t.compact:
            return Tensor(t.shape, t.buf)  # already compact: the same storage, seen flat
        flat = flat_tensor(t.shape)
        self.bufs.append(flat.buf)
        self.copy(t.view(), flat.compact_view(as4(t.shape)))
        return flat

    def flat_scratch(self, shape: tuple[int, ...]) -> Tensor:
        """A compact buffer of ``shape`` for a step whose output is then copied elsewhere."""
        flat = flat_tensor(shape)
        self.bufs.append(flat.buf)
        return flat

    def compact_output(self, name: str) -> tuple[Tensor, Tensor]:
        """(where a step writing row-major output writes, the tensor ``name``): the same
        when ``name``'s storage is compact; else a scratch that finish_compact copies over."""
        y = self.new_tensor(name, self.shapes[name])
        return (y if y.compact else self.flat_scratch(y.shape)), y

    def finish_compact(self, written: Tensor, y: Tensor) -> None:
        if written is not y:
            self.copy(written.compact_view(as4(y.shape)), y.view())

    def view(self, name: str) -> SymView:
        """A 4-D view of any activation (rank > 4: a compact copy seen as one row)."""
        t = self.tensor(name)
        if t.spatial or len(t.shape) <= 4:
            return t.view()
        return t.compact_view(as4(t.shape))

    # -- graph boundary
    def emit_inputs(self) -> None:
        for slot, name in enumerate(self.graph.input_names):
            t = self.new_tensor(name, self.shapes[name])
            dims = as4(t.shape)
            src = SymView(None, INPUT, 0, dims, compact_strides(dims), slot)  # type: ignore[arg-type]
            dst = t.view() if t.spatial or len(t.shape) <= 4 else t.compact_view(dims)
            self.copy(src, dst)

    def output_slot(self, name: str) -> int | None:
        """The output array a producer may write directly: ``name`` is a graph output (once),
        4-D, read by no node, and the plan is not interleaved."""
        names = self.graph.output_names
        if (names.count(name) != 1 or self.readers.get(name) or len(self.shapes[name]) != 4
                or self.interleave):
            return None
        return names.index(name)

    def output_view(self, name: str) -> SymView | None:
        """The caller's output array for ``name`` (compact), when its producer may write it
        directly (see output_slot); marks the output as written."""
        slot = self.output_slot(name)
        if slot is None:
            return None
        shape = self.shapes[name]
        self.outputs_written.add(name)
        return SymView(None, OUTPUT, 0, shape, compact_strides(shape), slot)  # type: ignore[arg-type]

    def emit_outputs(self) -> None:
        self.node = None
        for slot, name in enumerate(self.graph.output_names):
            if name in self.outputs_written:
                continue
            dims = as4(self.shapes[name])
            dst = SymView(None, OUTPUT, 0, dims, compact_strides(dims), slot)  # type: ignore[arg-type]
            self.copy(self.view(name), dst)

    # -- finish
    def place_memory(self) -> tuple[int, int]:
        """Places the buffers and inserts the zero steps their borders need (memory.py), kept
        out of runs of convs that may form a row wavefront. Returns (arena floats, floats
        zeroed per call)."""
        runs = wavefront_runs(self.records, self.opts.wavefront_layers, self.vector_floats)
        arena = place_buffers(self.bufs, len(self.records), self.opts.memory,
                              run_buffers(self.records, runs),
                              self.opts.pack_arena_above_bytes // 4)
        needs = border_zeroing(self.bufs, arena_zeroed=not self.opts.poison_arena)
        for need in needs:
            need.views = self.unwritten_border(need.buf)
        if self.opts.poison_arena:
            needs += self.skipped_planes()
        positions = zero_positions(needs, runs)
        records: list[StepRecord] = []
        zeroed = 0
        for index, record in enumerate(self.records):
            if index in positions:
                views = [v for need in positions[index] for v in need.views]
                zeroed += sum(math.prod(v.dims) for v in views)
                spec = native().ZeroSpec()
                spec.dst = [v.resolve() for v in views]
                records.append(StepRecord(None, "zero", spec, {}))
            records.append(record)
        self.records = records
        return arena, zeroed

    def skipped_planes(self) -> list[ZeroNeed]:
        """The output planes convs skip (ConvSpec.skip_empty: channels without taps, which
        the readers weigh by 0), zeroed before the conv. Only in a poisoned arena: there
        NaN * 0 would be NaN, while data another tensor left behind gives 0 as before."""
        needs = []
        for index, record in enumerate(self.records):
            spec, out = record.spec, record.views.get("output")
            if (isinstance(spec, native().ConvSpec) and spec.skip_empty and not spec.bsr
                    and isinstance(out, SymView) and out.buf is not None):
                axis = 0 if out.position_stride else 1  # boxes(): channels lead
                planes = [out.boxes().shifted(axis, int(c), 1)
                          for c in np.flatnonzero(np.diff(spec.ptr) == 0)]
                if planes:
                    needs.append(ZeroNeed(out.buf, free_from(out.buf, self.bufs), index, planes))
        return needs

    def unwritten_border(self, buf: Buf) -> list[SymView]:
        """The parts of ``buf``'s border its first step does not write: all of it, or only the
        ends when that step is a conv storing the whole stream with masked zeros in the pad
        columns (the "fast" layout, kernels/conv_kernels.h; not the strided and direct
        kernels, which store valid positions only, nor one skipping empty channels)."""
        border = buf.border
        assert border is not None
        spec = self.records[buf.first].spec
        out = self.records[buf.first].views.get("output")
        fast = (isinstance(spec, native().ConvSpec) and spec.fast and not spec.strided
                and not spec.direct and not spec.skip_empty and isinstance(out, SymView)
                and _same_floats(out, border.stream))
        return border.ends if fast or border.gaps is None else [*border.ends, border.gaps]

    def build_native(self) -> CompiledPlan:
        choose_row_splits(self.row_split_candidates)
        arena, zeroed = self.place_memory()
        # Marked in every plan; parallel runs use only the groups marked for row bands.
        wavefronts = mark_wavefronts(self.records, self.opts.wavefront_layers, self.vector_floats,
                                     self.opts.wave_band_min_bytes)
        assert VMAX <= TABLE_SLACK_FLOATS  # every table's zero slack covers one vector
        small = np.concatenate(self.consts) if self.consts else np.zeros(0, np.float32)
        self.consts = []
        tables = [constant_table(small), *self.const_tables]
        n = native()
        options = n.PlanOptions()
        options.threads, options.isa, options.jit = self.threads, self.options.isa, self.options.jit
        options.poison_arena = self.opts.poison_arena
        ins = [math.prod(self.shapes[k]) for k in self.graph.input_names]
        outs = [math.prod(self.shapes[k]) for k in self.graph.output_names]
        plan = n.Plan(options, arena, tables, ins, outs)
        for record in self.records:
            for field_name, value in record.views.items():
                setattr(record.spec, field_name, value.resolve())
            plan.add(record.spec)
        return CompiledPlan(plan, self.graph.input_names,
                            [self.shapes[k] for k in self.graph.input_names],
                            self.graph.output_names,
                            [self.shapes[k] for k in self.graph.output_names],
                            self.records, wavefronts, self.interleave,
                            peak_live(self.bufs), zeroed)


def _same_floats(view: SymView, stream: SymView) -> bool:
    """True when a 4-D view covers exactly a border's stream (all planes cs apart; a planar
    batch's images follow each other, ss = c * cs)."""
    (n, c, h, w), (ss, cs, rs, ws) = view.dims, view.strides
    return (view.buf is stream.buf and view.space == stream.space
            and view.origin == stream.origin and (n == 1 or ss == c * cs)
            and (n * c, h, w) == stream.dims[1:] and (cs, rs, ws) == stream.strides[1:])


def reads(node: Node) -> list[str]:
    """The tensors ``node`` reads, a fused residual input included."""
    return [i for i in (*node.inputs, node.attrs.get(RESIDUAL_KEY)) if i]


def _readers(graph: Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.nodes:
        for name in reads(node):
            counts[name] = counts.get(name, 0) + 1
    return counts


def build_plan(graph: Graph, shapes: dict[str, tuple[int, ...]], threads: int,
               options: EngineOptions, *, interleave: bool = False) -> CompiledPlan:
    """Plan a native graph (every node natively supported, passes applied, shapes of every
    tensor known) whose inputs and outputs are the plan's.

    ``interleave`` stores every 4-D activation batch-interleaved (the images of a position
    adjacent), so each conv runs the whole batch as one long stream: short streams of small
    planes fill the vectors and every weight is loaded once per batch instead of once per image.
    """
    builder = Builder(graph, shapes, threads, options, interleave)
    builder.emit_inputs()
    for builder.node_index, node in enumerate(graph.nodes):
        op = get_op(node)
        if op is None or op.emit is None:
            raise UnsupportedOpError(f"no native kernel for {node.describe()}")
        builder.node = node
        op.emit(builder, node)
    builder.emit_outputs()
    return builder.build_native()
