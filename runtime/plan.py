"""Planning: graph + concrete input shape -> native plan (layouts, kernels, buffers, steps).

Decisions made here, once per input shape (``build_plan``):
- Layout: every 4-D activation is stored as zero-padded NCHW planes; the border width of a tensor
  is the largest padding any stride-1 conv reading it needs, unified across a conv's input, output
  and residual (``assign_pads``) so that the conv epilogue can store its output stream contiguously
  straight into the next layer's padded layout. Other tensors are compact.
- Kernel per conv (``choose_conv_kernel``): CSR direct sparse conv, or BSR with blocks of
  ``BSR_BLOCK`` output channels (also the dense kernel), by a cost model on nonzeros.
- Work split: output channels (or blocks) in ``threads`` ranges balanced by nonzero count.
- Buffers: one arena per call; a buffer is reused by a later tensor of the identical layout once
  its last reader has run (so zero borders stay zero).
The native side (``runtime._native.Plan``) just executes the steps.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from runtime.errors import EngineError, InputError, ModelLoadError, UnsupportedOpError
from runtime.graph import Graph, Node, conv_geometry, infer_shapes, pool_geometry
from runtime.passes import (
    ACT_KEY,
    RESIDUAL_KEY,
    SKIP_EMPTY_KEY,
    clip_bounds,
    fuse_for_shapes,
    reads,
)

__all__ = [
    "VMAX",
    "BSR_BLOCK",
    "KERNEL_KEY",
    "CompiledPlan",
    "ConvWeights",
    "build_plan",
    "batch_separable",
    "interleave_lanes",
    "assign_pads",
    "choose_conv_kernel",
    "pack_conv_weights",
    "balanced_bounds",
    "stream_mask",
]

VMAX = 16  # floats in the widest vector of any kernel variant: alignment and read slack
BSR_BLOCK = 4  # output channels per BSR block (runtime/native/conv_kernels.h kBsrBlock)
KERNEL_KEY = "_fd_kernel"  # Conv attr forcing "csr" or "bsr" (kernel tests, benchmarks)
_ARENA, _CONST, _INPUT, _OUTPUT = 0, 1, 2, 3
_ACT_NONE, _ACT_CLIP = 0, 1
# Cost model (relative time per stored weight): a CSR tap is one unaligned load + one FMA per
# vector; a BSR tap feeds BSR_BLOCK FMAs from one load. Measured ratio on AVX-512, see report.
_CSR_COST_PER_NNZ = 1.0
_BSR_COST_PER_WEIGHT = 0.55
_UNIT_OVERHEAD = 4.0  # per output channel: epilogue and loop exits, in nonzero-equivalents
# Planes of at most this many pixels get a border only if a padded conv reads them (their
# input and output are not unified): a border wastes most vector lanes of a tiny plane and
# pushes e.g. the input of a 1x1 conv out of L1.
SMALL_PLANE = 16
# Conv work units (channel ranges or stream bands) per thread. One: each thread keeps one
# contiguous share of every layer, which measured best on a quiet machine (batch 1, 2 threads:
# ResNet-50 conv2_x 1.83 -> 1.74 ms, ResNet-20x2 0.465 -> 0.442 ms against 2 units). The price:
# a thread the OS deschedules while it holds its unit holds back half a layer (units are still
# claimed dynamically, so an idle thread takes any unit not yet started).
UNITS_PER_THREAD = 1
# Input-channel blocks of the interleaved CSR kernel (_input_channel_blocks): about L1 each, and
# enough taps per block. Same-run A/B (interleaved groups of 16, one thread): ResNet-20x2 90%
# 8.15 -> 7.35 ms with 48 KB blocks on its 64- and 128-channel layers (32 KB: 7.65; 16 KB was
# slower than none; blocking its 32-channel layers lost). With few taps per block the partial
# sums cost more than L1 saves: MobileNetV1 90% 2.53 -> 3.05 ms, ResNet-20x2 95% 4.81 -> 4.90.
# 10 taps (was 12) also blocks ResNet-20x2 90%'s stride-2 64 -> 128 conv (5 blocks of 11.5
# taps: 0.221 -> 0.181 ms per 16 images); MobileNetV1 90% unchanged (2.396 / 2.393 ms).
IC_BLOCK_BYTES = 48 * 1024
MIN_BLOCK_TAPS = 10
# Row wavefronts (_Builder.mark_wavefronts; run when a plan runs serially: one thread, or each
# thread on its own images): up to WAVEFRONT_LAYERS consecutive batch-interleaved convs run
# row by row, each a row or two behind the conv whose output it reads, so the rows a conv writes
# are read again while still cached instead of after the whole layer went out to L3. Paired
# same-run A/B, batch 32, one thread (time ratio to layer by layer): ResNet-20x2 90% 0.967 with
# 3 layers, 0.968 with 4, 0.980 with 2; MobileNetV1 98% 0.942 with 3, 1.030 with 4. One
# wavefront through the whole network was 10% slower (every layer's weights then pass through
# the caches once per row).
WAVEFRONT_LAYERS = 3
# Threads split a conv's output rows instead of its channels when its output is at least this big
# (and it can compute row ranges): each thread then reads mostly the rows its own core wrote
# one layer earlier, where splitting channels makes every layer read half its input from the
# other core. Measured at batch 1 on 2 threads: ResNet-50 conv2_x (0.9-3.4 MB tensors) 2.46 ->
# 2.15 ms at 90%; ResNet-20x2 (<= 150 KB tensors) with every conv split 4% slower, so smaller
# convs split rows only in chains (ROW_SPLIT_CHAIN_BYTES).
ROW_SPLIT_MIN_BYTES = 512 * 1024
# Smaller convs (down to this output size) split rows too when they are part of a chain: their
# input comes from, or their output goes to, another group-1 conv that can split rows, so each
# thread keeps reading the rows it wrote. Paired same-run A/B, batch 1, 2 threads (time ratio to
# channel splits below 512 KB): ResNet-20x2 0.976 at 90%, 0.939 at 95%, 0.935 at 98%;
# MobileNetV1, whose pointwise convs sit between depthwise convs (never in a chain), and the
# ResNet-50 stage unchanged. Splitting every conv of >= 64 KB instead made MobileNetV1 90% 8%
# slower; 32 KB (ResNet-20x2's 8x8 convs too) made ResNet-20x2 90% 3.6% slower.
ROW_SPLIT_CHAIN_BYTES = 64 * 1024


def reads_padded_copy(stride: tuple[int, int]) -> bool:
    """True when a conv reads stride-phase copies of its input instead of the input itself."""
    return stride != (1, 1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ----------------------------------------------------------------------------- buffers and views


@dataclass(eq=False)
class Buf:
    """An arena region; ``key`` says which tensors may share it."""

    key: tuple
    size: int
    first: int = -1
    last: int = -1
    offset: int = -1


@dataclass
class SymView:
    """A native view whose origin is known once buffers are placed."""

    buf: Buf | None
    space: int
    origin: int
    dims: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]

    def resolve(self) -> list[int]:
        base = self.buf.offset if self.buf is not None else 0
        return [self.space, base + self.origin, *self.dims, *self.strides]

    def shifted(self, axis: int, index: int, size: int) -> SymView:
        """Sub-view starting at ``index`` along ``axis`` with extent ``size``."""
        dims = list(self.dims)
        dims[axis] = size
        return SymView(self.buf, self.space, self.origin + index * self.strides[axis],
                       tuple(dims), self.strides)  # type: ignore[arg-type]


@dataclass
class SymOffset:
    """An arena offset known once buffers are placed."""

    buf: Buf
    local: int = 0

    def resolve(self) -> int:
        return self.buf.offset + self.local


def _compact_strides(dims: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def _as4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) > 4:
        return (1, 1, 1, math.prod(shape))
    return tuple([1] * (4 - len(shape)) + list(shape))  # type: ignore[return-value]


@dataclass
class Tensor:
    """Storage of one activation: padded planes (4-D) or compact.

    Spatial tensors have image stride ``ss``, channel stride ``cs``, row stride ``rs`` and
    position stride ``ws``. In the planar layout ``ws`` is 1; in the batch-interleaved layout
    (``lanes`` > 1) the ``lanes`` images of a position are adjacent (``ss`` = 1, ``ws`` = lanes).
    """

    shape: tuple[int, ...]
    buf: Buf
    pad: int = 0
    rs: int = 0
    cs: int = 0
    ss: int = 0
    ws: int = 1
    lead: int = 0  # floats before the first plane, so that every plane's interior is aligned
    segments: bool = False  # column-segment layout (_segment_tensor): only convs address it

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 4

    @property
    def lanes(self) -> int:
        return self.ws

    @property
    def origin(self) -> int:
        """Offset of the first plane's interior (row ``pad``, column ``pad``) in the buffer."""
        return self.lead + self.pad * (self.rs + self.ws)

    def view(self) -> SymView:
        """4-D view (lower ranks get leading unit dims; rank > 4 is seen as one row)."""
        if self.segments:  # no (n, c, h, w) strides reach it: _Builder.tensor gives a copy
            raise ModelLoadError("internal layout error (column segments have no NCHW view)")
        if self.spatial:
            return SymView(self.buf, _ARENA, self.origin, self.shape,
                           (self.ss, self.cs, self.rs, self.ws))  # type: ignore[arg-type]
        dims = _as4(self.shape)
        return SymView(self.buf, _ARENA, 0, dims, _compact_strides(dims))  # type: ignore[arg-type]

    def stream_view(self) -> SymView:
        """The view conv kernels address: in the interleaved layout the whole batch is one
        "image" whose rows hold W * lanes floats (position-major, image-minor)."""
        if self.ws == 1:
            return self.view()
        n, c, h, w = self.shape
        return SymView(self.buf, _ARENA, self.origin, (1, c, h, w * n),
                       (0, self.cs, self.rs, 1))

    def compact_view(self, dims: tuple[int, int, int, int]) -> SymView:
        """This compact tensor seen with other (same-size) dims."""
        return SymView(self.buf, _ARENA, 0, dims, _compact_strides(dims))  # type: ignore[arg-type]


# In an interleaved plan only planes of at most this many pixels are interleaved: small planes
# gain most (short streams fill few vector lanes), big ones least (a group outgrows L2). Measured
# on the 32x32 CIFAR models at batch 32: interleaving every plane (up to 32x32) beat stopping at
# 16x16 or 8x8 by 5-15%. Convs cross from planar to interleaved in their stride-phase split.
INTERLEAVE_MAX_PIXELS = 1024


# A strided conv with at most this many stored taps per output channel per output position
# (e.g. a depthwise conv above ~80% sparsity) is computed directly from its padded input:
# splitting the input into stride phases would cost more than reading its few taps (the split
# costs per input row and plane; measured 35-40 us per stride-2 depthwise conv of MobileNet).
DIRECT_MAX_TAPS = 2.0


def direct_strided(stride: tuple[int, int], weight: np.ndarray, lanes: int) -> bool:
    """True when a planar strided conv skips the stride-phase split (``DIRECT_MAX_TAPS``)."""
    if lanes > 1 or not reads_padded_copy(stride):
        return False
    return np.count_nonzero(weight) <= DIRECT_MAX_TAPS * weight.shape[0]


def tensor_lanes(shape: tuple[int, ...], interleave: bool) -> int:
    """Floats per position of a 4-D activation: its batch size if interleaved, else 1.
    (1x1 planes, e.g. global pooling outputs, stay planar: compact, they feed the classifier.)"""
    pixels = shape[2] * shape[3] if len(shape) == 4 else 0
    if not interleave or not 1 < pixels <= INTERLEAVE_MAX_PIXELS:
        return 1
    return shape[0]


def _spatial_tensor(shape: tuple[int, ...], pad: int, lanes: int = 1) -> Tensor:
    n, c, h, w = shape
    rs = (w + 2 * pad) * lanes
    # VMAX floats of slack per plane: a conv's last output vector may run past the plane's
    # stream (masked zeros); reads that run past a plane only feed masked lanes. Tiny planes go
    # without (it would double them) and are only written element-wise.
    big = h * w * lanes > SMALL_PLANE
    cs = _round_up((h + 2 * pad) * rs + (VMAX if big else 0), 4)
    if lanes > 1:
        return Tensor(shape, Buf(("spatial", shape, pad, lanes), c * cs + VMAX), pad, rs, cs, 1,
                      lanes)
    if h * w == 1 and pad == 0:  # compact (N, C, 1, 1): a classifier reads it without a copy
        cs = 1
    lead = 0
    if big and w >= VMAX:
        # Aligned interiors: every plane's first interior vector starts a cache line, so a 1x1
        # conv's loads and every conv's stores never straddle two lines. (Not for planes
        # narrower than a vector: there the rounded plane stride made ResNet-20x2's 8x8 3x3
        # convs 10% slower, 0.035 -> 0.039 ms.)
        cs = _round_up(cs, VMAX)
        lead = -pad * (rs + 1) % VMAX
    ss = c * cs
    return Tensor(shape, Buf(("spatial", shape, pad), n * ss + lead + VMAX), pad, rs, cs, ss,
                  lead=lead)


def segment_positions(width: int, vector_floats: int) -> int:
    """Positions per lane when a row of ``width`` columns is cut into one segment per vector
    lane (_segment_tensor), or 0 when it does not cut evenly into segments of 1 to half a pair
    chunk (the interleaved kernel's chunks must cover whole rows to write the halos)."""
    if width % vector_floats:
        return 0
    positions = width // vector_floats
    return positions if positions <= _pair_chunk_vectors(vector_floats) // 2 else 0


def _segment_tensor(shape: tuple[int, ...], pad: int, vector_floats: int) -> Tensor:
    """Column-segment layout of one image (batch-1 plans): lane i of position p holds column
    i * P + p of its row (P = segment_positions), so a row is P vectors and the conv kernel of
    the batch-interleaved layout runs it with every load aligned (planar rows put most loads
    across two cache lines). Each row's pad positions -1 and P hold the neighbouring segments'
    edge columns (halos, written by the producer); pad rows and edge lanes stay zero."""
    _, c, h, w = shape
    rs = (w // vector_floats + 2 * pad) * vector_floats
    cs = _round_up((h + 2 * pad) * rs + VMAX, VMAX)
    lead = -pad * (rs + vector_floats) % VMAX
    return Tensor(shape, Buf(("segments", shape, pad, vector_floats), c * cs + lead + VMAX), pad,
                  rs, cs, c * cs, vector_floats, lead=lead, segments=True)


def _flat_tensor(shape: tuple[int, ...]) -> Tensor:
    numel = math.prod(shape)
    return Tensor(shape, Buf(("flat", numel), _round_up(numel, VMAX) + VMAX))


# ----------------------------------------------------------------------------- pads


def assign_pads(graph: Graph, shapes: dict[str, tuple[int, ...]],
                interleave: bool = False) -> dict[str, int]:
    """Border width per 4-D tensor.

    The max pad of its stride-1 conv readers, unified over each conv's input / output / residual
    when they share a spatial size (so the conv epilogue's store is contiguous). With
    ``interleave`` a plane holds every image of the batch, so no plane counts as tiny.
    """
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    need: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "Conv" or node.inputs[0] in graph.constants:
            continue
        x, y = node.inputs[0], node.outputs[0]
        geo = conv_geometry(node, shapes[x], shapes[node.inputs[1]])
        res = node.attrs.get(RESIDUAL_KEY)
        if res:
            union(res, y)
        lanes = tensor_lanes(shapes[x], interleave)
        if (reads_padded_copy(geo.stride) and lanes == 1
                and not direct_strided(geo.stride, graph.constants[node.inputs[1]], lanes)):
            continue  # the stride-phase split pads (interleaved planes are read in place)
        need[x] = max(need.get(x, 0), *geo.pad_begin, *geo.pad_end)
        if shapes[x][2:] == shapes[y][2:] and math.prod(shapes[x][2:]) * lanes > SMALL_PLANE:
            union(x, y)
    group_pad: dict[str, int] = {}
    for name, pad in need.items():
        root = find(name)
        group_pad[root] = max(group_pad.get(root, 0), pad)
    return {name: group_pad.get(find(name), 0) for name, shape in shapes.items() if len(shape) == 4}


# ----------------------------------------------------------------------------- conv weights


@dataclass
class ConvWeights:
    """Weights laid out for one conv kernel: per unit (channel or block) a run of taps."""

    bsr: bool
    ptr: np.ndarray  # int32 [units + 1]
    off: np.ndarray  # int32 [taps]
    val: np.ndarray  # float32 [taps] (CSR) or [taps * BSR_BLOCK] (BSR)
    units: int
    unit_cost: np.ndarray  # float64 [units], for balancing threads


def choose_conv_kernel(weight: np.ndarray, group: int) -> bool:
    """True = BSR (blocks of BSR_BLOCK output channels), False = CSR, by estimated cost."""
    oc = weight.shape[0]
    ocg = oc // group
    if group > 1 and ocg % BSR_BLOCK:
        return False  # a block would straddle groups with different inputs
    nz = (weight.reshape(oc, -1) != 0)
    nnz = int(nz.sum())
    padded = np.zeros((_round_up(oc, BSR_BLOCK), nz.shape[1]), dtype=bool)
    padded[:oc] = nz
    block_taps = int(padded.reshape(-1, BSR_BLOCK, nz.shape[1]).any(axis=1).sum())
    return block_taps * BSR_BLOCK * _BSR_COST_PER_WEIGHT < nnz * _CSR_COST_PER_NNZ


def pack_conv_weights(weight: np.ndarray, group: int, tap_offsets: np.ndarray, group_stride: int,
                      bsr: bool) -> ConvWeights:
    """Lay out ``weight`` (OC, Cg, KH, KW) for the CSR or BSR kernel.

    ``tap_offsets`` (Cg*KH*KW,) is the input offset of each tap of group 0; group g adds
    ``g * group_stride``. Offsets must fit in int32.
    """
    oc = weight.shape[0]
    ocg = oc // group
    flat = weight.reshape(oc, -1).astype(np.float32)
    if bsr:
        nb = _round_up(oc, BSR_BLOCK) // BSR_BLOCK
        padded = np.zeros((nb * BSR_BLOCK, flat.shape[1]), dtype=np.float32)
        padded[:oc] = flat
        blocks = padded.reshape(nb, BSR_BLOCK, -1)
        rows, cols = np.nonzero((blocks != 0).any(axis=1))
        offsets = tap_offsets[cols] + (rows * BSR_BLOCK // ocg) * group_stride
        values = blocks[rows, :, cols].reshape(-1)
        units, per_unit = nb, np.bincount(rows, minlength=nb) * (BSR_BLOCK * _BSR_COST_PER_WEIGHT)
    else:
        rows, cols = np.nonzero(flat)
        offsets = tap_offsets[cols] + (rows // ocg) * group_stride
        values = flat[rows, cols]
        units, per_unit = oc, np.bincount(rows, minlength=oc) * _CSR_COST_PER_NNZ
    counts = np.bincount(rows, minlength=units)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    if offsets.size and (offsets.max() >= 2**31 or ptr[-1] >= 2**31):
        raise InputError("tensor too large for the engine's 32-bit offsets")
    return ConvWeights(bsr, ptr.astype(np.int32), offsets.astype(np.int32),
                       np.ascontiguousarray(values, dtype=np.float32), units,
                       per_unit.astype(np.float64) + _UNIT_OVERHEAD)


def channel_block_ptr(ptr: np.ndarray, off: np.ndarray, channel_stride: int,
                      block_channels: int, blocks: int) -> np.ndarray:
    """Where each output channel's taps of each input-channel block start (int32, units x
    (blocks + 1), flattened): taps are sorted by input channel and tap ``j`` reads input channel
    ``off[j] // channel_stride``."""
    units = len(ptr) - 1
    owner = np.repeat(np.arange(units), np.diff(ptr))
    block = (off.astype(np.int64) // channel_stride) // block_channels
    counts = np.bincount(owner * blocks + block, minlength=units * blocks).reshape(units, blocks)
    starts = np.empty((units, blocks + 1), np.int64)
    starts[:, 0] = ptr[:-1]
    starts[:, 1:] = ptr[:-1, None] + np.cumsum(counts, axis=1)
    return starts.reshape(-1).astype(np.int32)


def balanced_bounds(unit_cost: np.ndarray, parts: int) -> np.ndarray:
    """Split units into ``parts`` contiguous ranges of about equal total cost (int64 [parts+1])."""
    cum = np.concatenate([[0.0], np.cumsum(unit_cost)])
    targets = cum[-1] * np.arange(parts + 1) / parts
    bounds = np.searchsorted(cum, targets, side="left").astype(np.int64)
    bounds[0], bounds[-1] = 0, len(unit_cost)
    return np.maximum.accumulate(bounds)


def stream_mask(length: int, row_stride: int, width: int) -> np.ndarray:
    """uint32 lanes: all ones where stream position p < length and p % row_stride < width."""
    p = np.arange(_round_up(length, VMAX) + VMAX)
    valid = (p < length) & (p % row_stride < width)
    return np.where(valid, np.uint32(0xFFFFFFFF), np.uint32(0))


# ----------------------------------------------------------------------------- builder


@dataclass
class RowSplitCandidate:
    """A conv whose threads could split output rows (ROW_SPLIT_MIN_BYTES, ROW_SPLIT_CHAIN_BYTES);
    _Builder.choose_row_splits decides once every conv is emitted."""

    spec: dict
    input_name: str
    units: int
    big: bool
    chains: bool  # group 1: may link a chain


@dataclass
class CompiledPlan:
    """A native plan for one input shape, with what ``Engine.run`` needs around it."""

    native: Any
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kernels: dict[str, str] = field(default_factory=dict)  # conv node name -> "csr" / "bsr"
    wavefronts: list[list[int]] = field(default_factory=list)  # step indices of each group


class _Builder:
    """Emits steps with symbolic buffers, then places buffers and builds the native plan."""

    def __init__(self, graph: Graph, shapes: dict[str, tuple[int, ...]], pads: dict[str, int],
                 threads: int, interleave: bool = False, vector_floats: int = VMAX) -> None:
        self.graph, self.shapes, self.pads, self.threads = graph, shapes, pads, threads
        self.interleave, self.vector_floats = interleave, vector_floats
        self.relayouts: dict[tuple[str, int | str], Tensor] = {}
        self.tensors: dict[str, Tensor] = {}
        self.steps: list[tuple[str, tuple]] = []
        self.bufs: list[Buf] = []
        self.consts: list[np.ndarray] = []
        self.const_size = 0
        self.kernels: dict[str, str] = {}
        self.wavefronts: list[list[int]] = []  # step indices of each marked row wavefront
        self.phase_layouts = plan_phase_layouts(graph, shapes, pads, interleave)
        self.output_written = False
        self.output_readers = sum(i == graph.output_name for n in graph.nodes for i in n.inputs)
        # Index of the last node reading each tensor (a fused residual counts as a read).
        self.last_read = {name: i for i, n in enumerate(graph.nodes) for name in reads(n)}
        self.node_index = -1  # the node being emitted (build_plan)
        self.row_split_candidates: dict[str, RowSplitCandidate] = {}  # by output name

    # -- bookkeeping
    def new_tensor(self, name: str, shape: tuple[int, ...], segments: bool = False) -> Tensor:
        if segments:
            t = _segment_tensor(shape, max(1, self.pads.get(name, 0)), self.vector_floats)
        elif len(shape) == 4:
            t = _spatial_tensor(shape, self.pads.get(name, 0),
                                tensor_lanes(shape, self.interleave))
        else:
            t = _flat_tensor(shape)
        self.bufs.append(t.buf)
        self.tensors[name] = t
        return t

    def output_over_residual(self, name: str, shape: tuple[int, ...], res_name: str,
                             input_name: str, segments: bool = False) -> Tensor | None:
        """The fused residual's tensor, reused as the storage of output ``name``, when nothing
        reads the residual later, the conv's input is other storage (other output channels'
        taps read every input position) and both share one layout: the epilogue then reads each
        residual vector and overwrites it with the output (the store hits the line the load
        just brought in, instead of fetching a fresh output line). None otherwise."""
        res, x = self.tensors.get(res_name), self.tensors.get(input_name)
        if (res is None or x is None or x.buf is res.buf or res_name == self.graph.output_name
                or len(shape) != 4
                or self.last_read.get(res_name) != self.node_index):
            return None
        pad = self.pads.get(name, 0)
        fresh = (_segment_tensor(shape, max(1, pad), self.vector_floats) if segments
                 else _spatial_tensor(shape, pad, tensor_lanes(shape, self.interleave)))
        if replace(fresh, buf=res.buf) != res:
            return None
        self.tensors[name] = res
        return res

    def new_buf(self, key: tuple, size: int) -> Buf:
        buf = Buf(key, size)
        self.bufs.append(buf)
        return buf

    def const_view(self, array: np.ndarray, dims: tuple[int, ...] | None = None) -> SymView:
        data = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        origin = self.const_size
        self.consts.append(data)
        padded = _round_up(data.size, VMAX)
        if padded > data.size:
            self.consts.append(np.zeros(padded - data.size, dtype=np.float32))
        self.const_size += padded
        d = _as4(tuple(array.shape) if dims is None else dims)
        return SymView(None, _CONST, origin, d, _compact_strides(d))  # type: ignore[arg-type]

    def emit(self, method: str, *args: Any) -> None:
        index = len(self.steps)
        for buf in _bufs_in(args):
            buf.first = index if buf.first < 0 else min(buf.first, index)
            buf.last = max(buf.last, index)
        self.steps.append((method, args))

    def tensor(self, name: str) -> Tensor:
        """Storage of activation ``name``; a constant used as an activation is copied in once;
        a column-segment tensor is seen through a planar copy (made once)."""
        if name not in self.tensors:
            if name not in self.graph.constants:
                raise ModelLoadError(f"tensor {name!r} is used before it is produced")
            value = self.graph.constants[name]
            t = self.new_tensor(name, tuple(value.shape))
            self.emit("add_copy", self.const_view(value, _view_dims(t)), t.view())
        t = self.tensors[name]
        if t.segments:
            key = (name, "planar")
            if key not in self.relayouts:
                planar = _spatial_tensor(t.shape, self.pads.get(name, 0))
                self.bufs.append(planar.buf)
                self.emit("add_segment_copy", planar.view(), t.stream_view(), False)
                self.relayouts[key] = planar
            return self.relayouts[key]
        return t

    def segment_tensor(self, name: str, pad: int) -> Tensor:
        """Activation ``name`` in the column-segment layout with at least ``pad`` (>= 1) pad
        rows: itself, or a copy of its planar storage with the halos filled (made once)."""
        t = self.tensors.get(name)
        if t is not None and t.segments and t.pad >= pad:
            return t
        key = (name, "segments")
        if key not in self.relayouts or self.relayouts[key].pad < pad:
            x = self.tensor(name)
            seg = _segment_tensor(x.shape, max(1, pad, x.pad), self.vector_floats)
            self.bufs.append(seg.buf)
            self.emit("add_segment_copy", x.view(), seg.stream_view(), True)
            self.relayouts[key] = seg
        return self.relayouts[key]

    def relayout(self, name: str, lanes: int, pad: int) -> Tensor:
        """A copy of 4-D activation ``name`` in the other layout (planar <-> interleaved), for
        the rare conv whose input and output planes fall on different sides of
        INTERLEAVE_MAX_PIXELS without a stride-phase split to convert on the way."""
        key = (name, lanes)
        if key not in self.relayouts:
            x = self.tensor(name)
            t = _spatial_tensor(x.shape, max(pad, x.pad), lanes)
            self.bufs.append(t.buf)
            self.emit("add_copy", x.view(), t.view())
            self.relayouts[key] = t
        return self.relayouts[key]

    def flat(self, name: str) -> Tensor:
        """Compact copy of a 4-D padded tensor (or the tensor itself if already compact)."""
        t = self.tensor(name)
        if not t.spatial:
            return t
        n, c, h, w = t.shape
        if t.pad == 0 and t.ws == 1 and t.rs == w and t.cs == h * w and t.ss == c * h * w:
            return Tensor(t.shape, t.buf)  # already compact: the same storage, seen flat
        flat = _flat_tensor(t.shape)
        self.bufs.append(flat.buf)
        self.emit("add_copy", t.view(), flat.compact_view(t.shape))  # type: ignore[arg-type]
        return flat

    # -- graph boundary
    def emit_input(self, shape: tuple[int, ...]) -> None:
        t = self.new_tensor(self.graph.input_name, shape)
        dims = _view_dims(t)
        self.emit("add_copy", SymView(None, _INPUT, 0, dims, _compact_strides(dims)), t.view())

    def writes_graph_output(self, name: str) -> bool:
        """True when ``name`` is the graph output, 4-D and read by no node: its producer may
        write the caller's output array directly."""
        return (name == self.graph.output_name and self.output_readers == 0
                and len(self.shapes[name]) == 4 and not self.interleave)

    def emit_output(self) -> None:
        if self.output_written:
            return
        t = self.tensor(self.graph.output_name)
        dims = _view_dims(t)
        src = t.view() if t.spatial or len(t.shape) <= 4 else t.compact_view(dims)
        self.emit("add_copy", src, SymView(None, _OUTPUT, 0, dims, _compact_strides(dims)))

    # -- finish
    def wavefront_runs(self) -> list[list[int]]:
        """Step indices of the row wavefronts to try: runs of consecutive wavefront-capable
        convs (_wave_spec) cut into groups of at most WAVEFRONT_LAYERS."""
        groups: list[list[int]] = []
        run: list[int] = []
        for index, (method, args) in enumerate([*self.steps, ("end", ())]):
            spec = _wave_spec(method, args, self.vector_floats)
            if spec is not None and run and len(run) < WAVEFRONT_LAYERS:
                run.append(index)
                continue
            if len(run) >= 2:
                groups.append(run)
            run = [index] if spec is not None else []
        return groups

    def mark_wavefronts(self) -> list[list[int]]:
        """Once buffers are placed: mark the specs of every wavefront run whose views are
        whole tensors that either coincide or do not overlap in memory (native WaveInfo,
        common.h), and return the marked runs. Storage reused within a run is then always a
        tensor of the same layout, so row r of one is row r of the other and the members'
        guards keep a row from being overwritten before every earlier member has read it."""
        marked = []
        for group in self.wavefront_runs():
            specs = [self.steps[i][1][0] for i in group]
            if _views_disjoint_or_equal([v for spec in specs for v in _spec_views(spec)]):
                _mark_group(specs, len(marked), self.vector_floats)
                marked.append(group)
        return marked

    def place_buffers(self) -> int:
        """Offsets by liveness; a freed buffer is reused only by a tensor with the same key."""
        starts: dict[int, list[Buf]] = {}
        ends: dict[int, list[Buf]] = {}
        for buf in self.bufs:
            if buf.first < 0:
                continue
            starts.setdefault(buf.first, []).append(buf)
            ends.setdefault(buf.last, []).append(buf)
        free: dict[tuple, list[int]] = {}
        top = 0
        for index in range(len(self.steps)):
            for buf in starts.get(index, []):
                pool = free.get(buf.key)
                if pool:
                    buf.offset = pool.pop()
                else:
                    buf.offset, top = top, top + _round_up(buf.size, VMAX)
            for buf in ends.get(index, []):
                free.setdefault(buf.key, []).append(buf.offset)
        return top

    def choose_row_splits(self) -> None:
        """Row splits for the big candidates and for the chained ones: a group-1 candidate
        whose input another group-1 candidate writes, or whose output one reads."""
        written = {name for name, c in self.row_split_candidates.items() if c.chains}
        read = {c.input_name for c in self.row_split_candidates.values() if c.chains}
        for name, c in self.row_split_candidates.items():
            if c.big or (c.chains and (c.input_name in written or name in read)):
                c.spec["row_units"] = c.units

    def build_native(self, native_module: Any, input_shape: tuple[int, ...]) -> Any:
        self.choose_row_splits()
        arena = self.place_buffers()
        self.wavefronts = self.mark_wavefronts()
        consts = np.concatenate(self.consts) if self.consts else np.zeros(VMAX, np.float32)
        out_shape = self.shapes[self.graph.output_name]
        plan = native_module.Plan(self.threads, arena, consts, math.prod(input_shape),
                                  math.prod(out_shape))
        for method, args in self.steps:
            getattr(plan, method)(*[_resolve(a) for a in args])
        return plan


def _wave_spec(method: str, args: tuple, vector_floats: int) -> dict | None:
    """The conv spec of a step that can join a row wavefront, on arena tensors only: a
    batch-interleaved strided conv (no stride-phase scratch, no column-segment halos) whose
    output rows are at least a chunk long (shorter rows are computed a few at a time, which
    row-by-row calls would undo), or a stride-1 planar CSR conv of one image whose output (and
    residual) share its stream's layout, computed in whole vectors (ConvStep::by_vectors)."""
    if method != "add_conv" or WAVEFRONT_LAYERS < 2:
        return None
    spec = args[0]
    if spec["phase_split"] or spec["gather"] or spec["direct"] or spec.get("halo"):
        return None
    if spec["strided"]:
        if spec["out"].dims[3] // vector_floats < _pair_chunk_vectors(vector_floats):
            return None
    elif not (spec["lanes"] == 1 and not spec["bsr"] and spec["fast"]
              and (spec["stride_h"], spec["stride_w"]) == (1, 1) and spec["out"].dims[0] == 1):
        return None
    return spec if all(v.space == _ARENA and v.buf is not None for v in _spec_views(spec)) \
        else None


def _view_id(view: SymView | None) -> tuple | None:
    """Where a placed arena view's floats are: same id = same memory, same layout."""
    if view is None:
        return None
    return view.resolve()[1], view.dims, view.strides


def _spec_views(spec: dict) -> list[SymView]:
    return [v for v in (spec["in"], spec["out"], spec["res"]) if v is not None]


def _views_disjoint_or_equal(views: list[SymView]) -> bool:
    """True when any two placed views either are the same view or share no float."""
    spans = {}
    for view in views:
        first = view.resolve()[1]
        reach = sum((d - 1) * s for d, s in zip(view.dims, view.strides, strict=True))
        spans[_view_id(view)] = (first, first + reach + 1)
    ordered = sorted(spans.values())
    return all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(ordered))


def _mark_group(specs: list[dict], number: int, vector_floats: int) -> None:
    """Each member's producers and guards, as positions in the group, and its rows per sweep
    (WaveInfo): one for strided convs (their chunks are rows); for planar ones enough rows for
    one kernel chunk (kChunk vectors), cut at whole vectors (the last runs into the next row)."""
    outs = [_view_id(s["out"]) for s in specs]
    chunk_floats = 2 * _pair_chunk_vectors(vector_floats) * vector_floats

    def last_writer(view: SymView | None, before: int) -> int:
        return max((j for j in range(before) if outs[j] == _view_id(view)), default=-1)

    for i, spec in enumerate(specs):
        planar = not spec["strided"]
        spec.update(
            wave_group=number, wave_in=last_writer(spec["in"], i),
            wave_res=last_writer(spec["res"], i),
            # Earlier members reading what this one overwrites: its residual, or the storage
            # of a tensor that died within the group.
            wave_guard_in=[k for k in range(i) if _view_id(specs[k]["in"]) == outs[i]],
            wave_guard_res=[k for k in range(i) if _view_id(specs[k]["res"]) == outs[i]],
            wave_step=-(-chunk_floats // spec["stream_rs"]) if planar else 1,
            wave_overhang=int(planar))


def _view_dims(t: Tensor) -> tuple[int, int, int, int]:
    return _as4(t.shape)


def _bufs_in(obj: Any) -> list[Buf]:
    if isinstance(obj, (SymView, SymOffset)):
        return [obj.buf] if obj.buf is not None else []
    if isinstance(obj, dict):
        return [b for v in obj.values() for b in _bufs_in(v)]
    if isinstance(obj, (list, tuple)):
        return [b for v in obj for b in _bufs_in(v)]
    return []


def _resolve(obj: Any) -> Any:
    if isinstance(obj, (SymView, SymOffset)):
        return obj.resolve()
    if isinstance(obj, dict):
        return {k: _resolve(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------- op emitters


def _emit_conv(b: _Builder, node: Node) -> None:
    w_name = node.inputs[1]
    if w_name not in b.graph.constants:
        raise UnsupportedOpError(f"{node.describe()}: the weight must be a constant")
    weight = np.asarray(b.graph.constants[w_name], dtype=np.float32)
    geo = conv_geometry(node, b.shapes[node.inputs[0]], weight.shape)
    segments = _segment_conv(b, node, geo, weight)
    pad = max(*geo.pad_begin, *geo.pad_end)
    x = b.segment_tensor(node.inputs[0], pad) if segments else b.tensor(node.inputs[0])
    has_bias = len(node.inputs) > 2 and bool(node.inputs[2])
    bias = b.graph.constants.get(node.inputs[2]) if has_bias else None
    if has_bias and bias is None:
        raise UnsupportedOpError(f"{node.describe()}: the bias must be a constant")
    res_name = node.attrs.get(RESIDUAL_KEY)
    res = None
    if res_name:
        res = b.segment_tensor(res_name, 1) if segments else b.tensor(res_name)
    out_shape = b.shapes[node.outputs[0]]
    if segments:
        y = (b.output_over_residual(node.outputs[0], out_shape, res_name, node.inputs[0], True)
             if res_name else None) or b.new_tensor(node.outputs[0], out_shape, segments=True)
        y_view, y_rs = y.stream_view(), y.rs
    elif b.writes_graph_output(node.outputs[0]):
        # The last layer writes the caller's array directly (compact), saving a copy.
        y_view = SymView(None, _OUTPUT, 0, out_shape, _compact_strides(out_shape))
        y_rs = out_shape[3]
        b.output_written = True
    else:
        # (Not for direct strided convs: they accumulate in the output before adding the
        # residual.)
        direct_only = direct_strided(geo.stride, weight, tensor_lanes(out_shape, b.interleave))
        y = (b.output_over_residual(node.outputs[0], out_shape, res_name, node.inputs[0])
             if res_name and not direct_only else None)
        if y is None:
            y = b.new_tensor(node.outputs[0], out_shape)
        y_view, y_rs = y.stream_view(), y.rs
    # Interleaved layout: a position is `lanes` floats (one per image), so column offsets scale
    # by `lanes` and the whole batch is one stream (ConvSpec.lanes, conv_kernels.h). A planar
    # input of an interleaved output is gathered by the stride-phase split, or else relaid.
    lanes = b.vector_floats if segments else tensor_lanes(out_shape, b.interleave)
    gather = x.lanes == 1 and lanes > 1 and reads_padded_copy(geo.stride)
    if x.lanes != lanes and not gather:
        x = b.relayout(node.inputs[0], lanes, max(*geo.pad_begin, *geo.pad_end))
    if not segments and _is_tiny_dense_1x1(node, weight, geo, x):
        _emit_tiny_conv(b, node, weight, bias, x, res, y_view)
        return
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    (pt, pl), (pb, pr) = geo.pad_begin, geo.pad_end
    oh, ow = geo.out_hw
    cg = c // geo.group
    ic, ih, iw = np.meshgrid(np.arange(cg), np.arange(kh), np.arange(kw), indexing="ij")
    bsr = _conv_kernel_for(node, weight, geo.group)
    # Interleaved planes whose positions are whole vectors: the kernel computes only the valid
    # output positions (no border lanes) and reads taps in place at any stride (no phase split).
    strided = (not gather and not bsr and lanes > 1 and lanes % b.vector_floats == 0
               and max(pt, pl, pb, pr) <= x.pad)
    direct = not gather and not bsr and direct_strided(geo.stride, weight, lanes)
    spec: dict[str, Any] = {"in": x.view() if gather else x.stream_view(), "out": y_view,
                            "res": res.stream_view() if res else None, "lanes": lanes,
                            "gather": gather, "strided": strided, "direct": direct,
                            "pad_top": pt, "pad_left": pl, "stride_h": sh, "stride_w": sw,
                            "wave_reach_rows": (kh - 1) * dh}
    if strided or direct or not reads_padded_copy(geo.stride):
        if max(pt, pl, pb, pr) > x.pad:
            raise ModelLoadError(f"{node.describe()}: internal layout error (pad)")
        taps = ic * x.cs + ih * dh * x.rs + iw * dw * lanes
        group_stride, stream_rs = cg * x.cs, x.rs
        window_planes, reach = cg, (kh - 1) * dh * x.rs + (kw - 1) * dw * lanes
        spec.update(phase_split=False, split_here=False, phase_rows=0, phase_rs=0, phase_plane=0,
                    scratch_origin=0)
    else:
        # Stride phases of the input, shared by every conv with this stride reading it: with the
        # layout's pads (Pt, Pl) >= this conv's, tap (kh, kw) sits at e = k*d + P - p in
        # the shared padded frame, i.e. in phase e % s at offset e // s.
        lay = b.phase_layouts[(node.inputs[0], sh, sw, lanes)]
        # Phase planes in floats: `lanes` floats per position (one super-image when interleaved).
        images, plane, row = (1, lay.plane * lanes, lay.rs * lanes) if lanes > 1 else (
            n, lay.plane, lay.rs)
        split_here = lay.buf is None
        if split_here:
            lay.buf = b.new_buf(("phases", n, c, sh * sw, plane),
                                images * c * sh * sw * plane + VMAX)
        eh, ew = ih * dh + lay.pad_top - pt, iw * dw + lay.pad_left - pl
        taps = ((ic * sh * sw + (eh % sh) * sw + (ew % sw)) * plane
                + (eh // sh) * row + (ew // sw) * lanes)
        group_stride, stream_rs = cg * sh * sw * plane, row
        window_planes = cg * sh * sw
        reach = int(((eh // sh) * row + (ew // sw) * lanes).max())
        spec.update(phase_split=True, split_here=split_here, phase_rows=lay.rows,
                    phase_rs=lay.rs, phase_plane=plane, scratch_origin=SymOffset(lay.buf),
                    pad_top=lay.pad_top, pad_left=lay.pad_left)
    packed = pack_conv_weights(weight, geo.group, taps.reshape(-1).astype(np.int64), group_stride,
                               bsr)
    b.kernels[node.name] = "bsr" if bsr else "csr"
    width = (ow // lanes if segments else ow) * lanes  # floats of an output row
    length = (oh - 1) * stream_rs + width
    # Fast (contiguous masked) stores need the output's row stride and plane slack; the
    # caller's compact output array has no slack.
    fast = bool(y_view.space == _ARENA and y_rs == stream_rs and oh * width > SMALL_PLANE
                and (res is None or res.rs == stream_rs))
    lo, hi = node.attrs.get(ACT_KEY, (-math.inf, math.inf))
    spec.update(
        bsr=bsr, skip_empty=bool(node.attrs.get(SKIP_EMPTY_KEY)),
        stream_rs=stream_rs, stream_len=length, width=width,
        fast=fast,
        ptr=packed.ptr, off=packed.off, val=packed.val,
        bias=np.zeros(0, np.float32) if bias is None else np.asarray(bias, np.float32),
        mask=stream_mask(length, stream_rs, width),
        bounds=balanced_bounds(packed.unit_cost, UNITS_PER_THREAD * b.threads if b.threads > 1
                               else 1),
        units=packed.units,
        window_planes=window_planes, window_reach=reach, halo=segments,
        act=_ACT_CLIP if ACT_KEY in node.attrs else _ACT_NONE, lo=lo, hi=hi)
    if strided and geo.group == 1:
        blocks = _input_channel_blocks(cg, (kh - 1) * dh + 1, (kw - 1) * dw + 1, sw, lanes,
                                       b.vector_floats, len(packed.val) / max(1, packed.units))
        if blocks > 1:
            spec.update(blocks=blocks, block_ptr=channel_block_ptr(
                packed.ptr, packed.off, x.cs, -(-cg // blocks), blocks))
    # Threads split the output rows of big convs that can compute row ranges (ConvStep by_rows:
    # interleaved strided convs; stride-1 planar CSR convs of one image reading in place).
    in_place = not (bsr or direct or gather or spec.get("phase_split"))
    by_rows = strided or (lanes == 1 and n == 1 and (sh, sw) == (1, 1))
    out_bytes = 4 * out_shape[1] * y_rs * oh
    if (b.threads > 1 and in_place and by_rows
            and out_bytes >= min(ROW_SPLIT_CHAIN_BYTES, ROW_SPLIT_MIN_BYTES)):
        b.row_split_candidates[node.outputs[0]] = RowSplitCandidate(
            spec, node.inputs[0], min(oh, UNITS_PER_THREAD * b.threads),
            out_bytes >= ROW_SPLIT_MIN_BYTES, geo.group == 1)
    b.emit("add_conv", spec)


def _segment_conv(b: _Builder, node: Node, geo: Any, weight: np.ndarray) -> bool:
    """True when this conv of a one-thread batch-1 plan runs on column segments
    (_segment_tensor): it can (_segments_fit), and its input is on segments already or its output
    feeds a conv that can too (a lone segment conv would pay a layout copy in and out).

    One thread only: the halo vectors make a segment tensor 2-3x the bytes of the planar one, and
    with 2 threads half of every input crosses between the cores (ResNet-20x2 90%, batch 1: 1
    thread 0.556 -> 0.533 ms, 2 threads 0.423 -> 0.514 ms; 0.487 with threads splitting rows)."""
    if not SEGMENT_LAYOUT or b.threads != 1 or not _segments_fit(b, node, geo, weight):
        return False
    x = b.tensors.get(node.inputs[0])
    if x is not None and x.segments:
        return True
    for reader in b.graph.nodes:
        if reader.op == "Conv" and reader.inputs[0] == node.outputs[0]:
            w = np.asarray(b.graph.constants.get(reader.inputs[1], np.zeros(0)), np.float32)
            if w.ndim == 4 and _segments_fit(
                    b, reader, conv_geometry(reader, b.shapes[reader.inputs[0]], w.shape), w):
                return True
    return False


def _segments_fit(b: _Builder, node: Node, geo: Any, weight: np.ndarray) -> bool:
    """A CSR conv of one image, group 1, no dilation, whose input and output rows both cut
    into segments with the stride between them (1 or 2 across), and whose taps reach at most one
    position past a segment (the halos)."""
    x_name, y_name = node.inputs[0], node.outputs[0]
    x_shape, y_shape = b.shapes[x_name], b.shapes[y_name]
    if (b.interleave or len(x_shape) != 4 or x_shape[0] != 1 or x_name in b.graph.constants
            or b.writes_graph_output(y_name) or geo.group != 1 or geo.dilation != (1, 1)
            or _conv_kernel_for(node, weight, geo.group)):
        return False
    (_, kw), (_, sw) = geo.kernel, geo.stride
    (_, left), (_, right) = geo.pad_begin, geo.pad_end
    inner = segment_positions(x_shape[3], b.vector_floats)
    outer = segment_positions(y_shape[3], b.vector_floats)
    return (inner > 0 and outer > 0 and inner == sw * outer and max(left, right) <= 1
            and sw * (outer - 1) + kw - 1 - left <= inner)


def _pair_chunk_vectors(vector_floats: int) -> int:
    """Vectors per output channel in one chunk of the interleaved CSR kernel: conv_csr.cpp's
    kPair (half of kChunk: 16 accumulators on AVX-512, 8 below)."""
    return (16 if vector_floats >= 16 else 8) // 2


def _input_channel_blocks(channels: int, rows: int, cols: int, stride_w: int, lanes: int,
                          vector_floats: int, taps_per_output: float) -> int:
    """Input-channel blocks of an interleaved CSR conv (ConvKernelArgs::blocks). The input
    window every output channel of a chunk sweeps (kernel rows x the chunk's positions plus the
    taps' reach, `lanes` floats per position, every input channel) is cut into blocks of about
    IC_BLOCK_BYTES once it exceeds twice that, so each block stays in L1 while all output
    channels pass; but only while a block keeps MIN_BLOCK_TAPS taps per output channel on
    average to pay for its partial-sum round trip."""
    positions = max(1, _pair_chunk_vectors(vector_floats) // max(1, lanes // vector_floats))
    window = channels * rows * ((positions - 1) * stride_w + cols) * lanes * 4
    blocks = min(channels, -(-window // IC_BLOCK_BYTES))
    if window <= 2 * IC_BLOCK_BYTES or taps_per_output < MIN_BLOCK_TAPS * blocks:
        return 1
    return blocks


@dataclass
class PhaseLayout:
    """Stride-phase planes of one input tensor, shared by its convs of one stride."""

    pad_top: int
    pad_left: int
    rows: int
    rs: int
    plane: int
    buf: Buf | None = None


def plan_phase_layouts(graph: Graph, shapes: dict[str, tuple[int, ...]], pads: dict[str, int],
                       interleave: bool = False) -> dict[tuple[str, int, int, int], PhaseLayout]:
    """(input, stride_h, stride_w, output lanes) -> one phase layout covering every such conv's
    taps.

    The row stride also covers each conv's output row stride (so its epilogue stays contiguous).
    """
    groups: dict[tuple[str, int, int, int], list[tuple[Node, Any]]] = {}
    for node in graph.nodes:
        if node.op != "Conv" or node.inputs[0] in graph.constants:
            continue
        geo = conv_geometry(node, shapes[node.inputs[0]], shapes[node.inputs[1]])
        if reads_padded_copy(geo.stride):
            lanes = tensor_lanes(shapes[node.outputs[0]], interleave)
            groups.setdefault((node.inputs[0], *geo.stride, lanes), []).append((node, geo))
    layouts = {}
    for key, convs in groups.items():
        _, sh, sw, _ = key
        top = max(g.pad_begin[0] for _, g in convs)
        left = max(g.pad_begin[1] for _, g in convs)
        rows = rs = 0
        for node, g in convs:
            (kh, kw), (dh, dw), (oh, ow) = g.kernel, g.dilation, g.out_hw
            rows = max(rows, oh + ((kh - 1) * dh + top - g.pad_begin[0]) // sh)
            rs = max(rs, ow + ((kw - 1) * dw + left - g.pad_begin[1]) // sw,
                     ow + 2 * pads.get(node.outputs[0], 0))
        layouts[key] = PhaseLayout(top, left, rows, rs, _round_up(rows * rs, 4))
    return layouts


SEGMENT_LAYOUT = 1  # batch-1 convs may run on column segments (_segment_conv); 0: never
GEMM_PIXELS = 64  # dense 1x1 convs on planes up to this size run as GEMM over output channels


def _is_tiny_dense_1x1(node: Node, weight: np.ndarray, geo: Any, x: Tensor) -> bool:
    """A dense-enough 1x1 conv on a small plane: 16 output channels per vector beat streams
    that fill few lanes (and waste the border columns)."""
    return (geo.kernel == (1, 1) and geo.stride == (1, 1) and geo.group == 1
            and max(*geo.pad_begin, *geo.pad_end) == 0
            and x.shape[2] * x.shape[3] * x.lanes <= GEMM_PIXELS
            and KERNEL_KEY not in node.attrs
            and choose_conv_kernel(weight, 1))


def _emit_tiny_conv(b: _Builder, node: Node, weight: np.ndarray, bias: np.ndarray | None,
                    x: Tensor, res: Tensor | None, y_view: SymView) -> None:
    oc, ic = weight.shape[:2]
    padded = _round_up(oc, 16)
    wt = np.zeros((padded, ic), np.float32)
    wt[:oc] = weight[:, :, 0, 0]
    wt = np.ascontiguousarray(wt.reshape(padded // 16, 16, ic).transpose(0, 2, 1))  # [blk][ic][16]
    bias16 = np.zeros(padded, np.float32)
    if bias is not None:
        bias16[:oc] = bias
    lo, hi = node.attrs.get(ACT_KEY, (-math.inf, math.inf))
    units = UNITS_PER_THREAD * b.threads if b.threads > 1 else 1
    b.kernels[node.name] = "tiny"
    b.emit("add_conv_tiny", {
        "in": x.stream_view(), "out": y_view, "res": res.stream_view() if res else None,
        "wt": wt,
        "bias": bias16, "wt_stride": padded,
        "bounds": balanced_bounds(np.ones(padded // 16), units),
        "act": _ACT_CLIP if ACT_KEY in node.attrs else _ACT_NONE, "lo": lo, "hi": hi})


def _conv_kernel_for(node: Node, weight: np.ndarray, group: int) -> bool:
    forced = node.attrs.get(KERNEL_KEY)
    if forced is None:
        return choose_conv_kernel(weight, group)
    if forced not in ("csr", "bsr"):
        raise UnsupportedOpError(f"{node.describe()}: unknown kernel {forced!r}")
    if forced == "bsr" and group > 1 and (weight.shape[0] // group) % BSR_BLOCK:
        raise UnsupportedOpError(
            f"{node.describe()}: BSR needs channels per group divisible by {BSR_BLOCK}")
    return forced == "bsr"


def _emit_pool(b: _Builder, node: Node) -> None:
    x = b.tensor(node.inputs[0])
    geo = pool_geometry(node, x.shape)
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    b.emit("add_pool", node.op == "MaxPool", x.view(), y.view(), list(geo.kernel),
           list(geo.stride), list(geo.dilation), list(geo.pad_begin), list(geo.pad_end),
           bool(int(node.attrs.get("count_include_pad", 0))))


def _emit_global_pool(b: _Builder, node: Node) -> None:
    x = b.tensor(node.inputs[0])
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    b.emit("add_global_pool", node.op == "GlobalMaxPool", x.view(), y.view())


def _unary_views(b: _Builder, node: Node) -> tuple[SymView, SymView]:
    x = b.tensor(node.inputs[0])
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    return x.view(), y.view()


def _emit_activation(b: _Builder, node: Node) -> None:
    lo, hi = clip_bounds(node, b.graph, b.graph.opset)
    src, dst = _unary_views(b, node)
    empty = np.zeros(0, np.float32)
    b.emit("add_affine", src, dst, empty, empty, _ACT_CLIP, lo, hi)


def _emit_batchnorm(b: _Builder, node: Node) -> None:
    params = []
    for name in node.inputs[1:5]:
        if name not in b.graph.constants:
            raise UnsupportedOpError(f"{node.describe()}: scale/bias/mean/var must be constants")
        params.append(np.asarray(b.graph.constants[name], np.float64).reshape(-1))
    gamma, beta, mean, var = params
    scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
    shift = beta - mean * scale
    x = b.tensor(node.inputs[0])
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    src, dst = x.view(), y.view()
    if not x.spatial:  # channel axis 1 of (N, C, ...) -> dim 1 of the view
        dims = (x.shape[0], x.shape[1], 1, math.prod(x.shape[2:]))
        src, dst = x.compact_view(dims), y.compact_view(dims)
    empty_act = (_ACT_NONE, -math.inf, math.inf)
    b.emit("add_affine", src, dst, scale.astype(np.float32), shift.astype(np.float32), *empty_act)


def _broadcast_view(view: SymView, rank_shape: tuple[int, ...], out4: tuple[int, ...]) -> SymView:
    """View of an operand broadcast (numpy rules) to the 4-D output dims: stride 0 where size 1."""
    strides = tuple(0 if d == 1 and o != 1 else s
                    for d, o, s in zip(view.dims, out4, view.strides, strict=True))
    return SymView(view.buf, view.space, view.origin, tuple(out4), strides)  # type: ignore[arg-type]


def _emit_add(b: _Builder, node: Node) -> None:
    out_shape = b.shapes[node.outputs[0]]
    if len(out_shape) > 4 and any(b.shapes[i] != out_shape for i in node.inputs[:2]):
        raise UnsupportedOpError(f"{node.describe()}: broadcasting beyond rank 4 is not supported")
    views = []
    for name in node.inputs[:2]:
        t = b.tensor(name)
        view = t.view() if (t.spatial or len(t.shape) <= 4) else t.compact_view(_as4(t.shape))
        views.append(view)
    y = b.new_tensor(node.outputs[0], out_shape)
    out4 = _as4(out_shape)
    a, c = (_broadcast_view(v, (), out4) for v in views)
    b.emit("add_add", a, c, y.view(), _ACT_NONE, -math.inf, math.inf)


def _gemm_b_view(b: _Builder, node: Node, name: str, transposed: bool) -> SymView:
    """View (K, N) of the B operand; a constant B is stored transposed (N, K) so k is contiguous."""
    if name in b.graph.constants:
        mat = np.asarray(b.graph.constants[name], np.float32)
        bt = mat if transposed else mat.T  # (N, K)
        n, k = bt.shape
        view = b.const_view(np.ascontiguousarray(bt))
        return SymView(None, _CONST, view.origin, (1, 1, k, n), (0, 0, 1, k))
    t = b.flat(name)
    rows, cols = t.shape
    if transposed:  # stored (N, K)
        return SymView(t.buf, _ARENA, 0, (1, 1, cols, rows), (0, 0, 1, cols))
    return SymView(t.buf, _ARENA, 0, (1, 1, rows, cols), (0, 0, cols, 1))


def _emit_gemm(b: _Builder, node: Node) -> None:
    a = b.flat(node.inputs[0])
    out_shape = b.shapes[node.outputs[0]]
    m, n = math.prod(out_shape[:-1]), out_shape[-1]
    if node.op == "MatMul":
        k = a.shape[-1]
        a_view = SymView(a.buf, _ARENA, 0, (1, 1, m, k), (0, 0, k, 1))
        alpha, beta, trans_b = 1.0, 0.0, False
    else:
        rows, cols = a.shape
        trans_a = bool(node.attrs.get("transA", 0))
        k = rows if trans_a else cols
        strides = (0, 0, 1, cols) if trans_a else (0, 0, cols, 1)
        a_view = SymView(a.buf, _ARENA, 0, (1, 1, m, k), strides)
        alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
        trans_b = bool(node.attrs.get("transB", 0))
    b_view = _gemm_b_view(b, node, node.inputs[1], trans_b)
    c_view = None
    if node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2]:
        c_name = node.inputs[2]
        c_shape = b.shapes[c_name]
        if c_name in b.graph.constants:
            c_view = b.const_view(np.asarray(b.graph.constants[c_name], np.float32))
        else:
            c_view = b.flat(c_name).view()
        try:
            np.broadcast_shapes(c_shape, (m, n))
        except ValueError:
            raise ModelLoadError(f"{node.describe()}: C {c_shape} does not broadcast to "
                                 f"{(m, n)}") from None
        c_view = _broadcast_view(c_view, c_shape, (1, 1, m, n))
    y = b.new_tensor(node.outputs[0], out_shape)
    y_view = SymView(y.buf, _ARENA, 0, (1, 1, m, n), (0, 0, n, 1))
    b.emit("add_gemm", a_view, b_view, c_view, y_view, alpha, beta)


def _emit_softmax(b: _Builder, node: Node) -> None:
    shape = b.shapes[node.inputs[0]]
    rank = len(shape)
    default_axis = -1 if b.graph.opset >= 13 else 1
    axis = int(node.attrs.get("axis", default_axis))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise ModelLoadError(f"{node.describe()}: axis out of range for rank {rank}")
    single_axis = b.graph.opset >= 13 or axis == rank - 1
    if single_axis and rank <= 4:
        src, dst = _unary_views(b, node)
        b.emit("add_softmax", src, dst, axis + 4 - rank)
        return
    x = b.flat(node.inputs[0])
    outer = math.prod(shape[:axis])
    if single_axis:
        dims = (1, outer, shape[axis], math.prod(shape[axis + 1:]))
        view_axis = 2
    else:  # opset < 13: softmax over the flattened trailing dims
        dims, view_axis = (1, 1, outer, math.prod(shape[axis:])), 3
    y = b.new_tensor(node.outputs[0], b.shapes[node.outputs[0]])
    tmp = y if not y.spatial else _flat_tensor(y.shape)
    if tmp is not y:
        b.bufs.append(tmp.buf)
    b.emit("add_softmax", x.compact_view(dims), tmp.compact_view(dims), view_axis)
    if tmp is not y:
        b.emit("add_copy", tmp.compact_view(y.shape), y.view())  # type: ignore[arg-type]


def _emit_reshape(b: _Builder, node: Node) -> None:
    """Flatten / Reshape / Identity: the row-major element order is kept, only layouts change."""
    x = b.tensor(node.inputs[0])
    out_shape = b.shapes[node.outputs[0]]
    y = b.new_tensor(node.outputs[0], out_shape)
    if x.spatial and y.spatial and x.shape == y.shape:
        b.emit("add_copy", x.view(), y.view())
        return
    src = b.flat(node.inputs[0]) if x.spatial else x
    if y.spatial:
        b.emit("add_copy", src.compact_view(y.shape), y.view())  # type: ignore[arg-type]
    else:
        numel = (1, 1, 1, math.prod(out_shape))
        b.emit("add_copy", src.compact_view(numel), y.compact_view(numel))


def _emit_concat(b: _Builder, node: Node) -> None:
    out_shape = b.shapes[node.outputs[0]]
    rank = len(out_shape)
    axis = int(node.attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    y = b.new_tensor(node.outputs[0], out_shape)
    if rank <= 4:
        y_view, axis4 = y.view(), axis + 4 - rank
    else:
        dims = (1, math.prod(out_shape[:axis]), out_shape[axis], math.prod(out_shape[axis + 1:]))
        y_view, axis4 = y.compact_view(dims), 2
    start = 0
    for name in node.inputs:
        shape = b.shapes[name]
        t = b.tensor(name)
        if rank <= 4:
            src = t.view()
        else:
            src = t.compact_view((1, y_view.dims[1], shape[axis], y_view.dims[3]))
        b.emit("add_copy", src, y_view.shifted(axis4, start, shape[axis]))
        start += shape[axis]


_EMITTERS = {
    "Conv": _emit_conv,
    "MaxPool": _emit_pool,
    "AveragePool": _emit_pool,
    "GlobalAveragePool": _emit_global_pool,
    "GlobalMaxPool": _emit_global_pool,
    "Relu": _emit_activation,
    "Clip": _emit_activation,
    "BatchNormalization": _emit_batchnorm,
    "Add": _emit_add,
    "Gemm": _emit_gemm,
    "MatMul": _emit_gemm,
    "Softmax": _emit_softmax,
    "Flatten": _emit_reshape,
    "Reshape": _emit_reshape,
    "Identity": _emit_reshape,
    "Dropout": _emit_reshape,
    "Concat": _emit_concat,
}


def batch_separable(graph: Graph, image_shape: tuple[int, ...]) -> bool:
    """True when images of a batch never interact, so a plan for one image serves any batch.

    Requires a dynamic batch axis, every tensor's leading dim proportional to the batch with the
    other dims fixed (checked by inferring shapes at batch 1 and 2; this excludes Flatten(axis=0),
    Concat on axis 0, Gemm with transA, ...) and no Softmax reducing over axis 0.
    """
    if not graph.input_shape or graph.input_shape[0] is not None:
        return False
    try:
        one = infer_shapes(graph, (1, *image_shape))
        two = infer_shapes(graph, (2, *image_shape))
    except EngineError:
        return False
    for name in (n.outputs[0] for n in graph.nodes):
        a, b = one[name], two[name]
        if not a or b[0] != 2 * a[0] or a[1:] != b[1:]:
            return False
    for node in graph.nodes:
        if node.op == "Softmax":
            rank = len(one[node.inputs[0]])
            axis = int(node.attrs.get("axis", -1 if graph.opset >= 13 else 1))
            if axis % rank == 0:
                return False
    return True


# Batch interleaving (build_plan(interleave=True)): at most MAX_LANES images per group, and a
# group's largest activation may take at most LANES_BUDGET_BYTES (beyond that the planes of one
# layer fall out of L2 and the longer streams stop paying; measured in benchmarks/).
MAX_LANES = 16
LANES_BUDGET_BYTES = 4 << 20


def interleave_lanes(graph: Graph, image_shape: tuple[int, ...], batch: int) -> int:
    """Images per batch-interleaved group for ``batch`` images (1: run images one by one).

    The largest power of two <= min(batch, MAX_LANES) whose group keeps the largest 4-D
    activation within LANES_BUDGET_BYTES.
    """
    shapes = infer_shapes(graph, (1, *image_shape))
    activations = [shapes[o] for node in graph.nodes for o in node.outputs if o in shapes]
    largest = max((math.prod(s) for s in activations if len(s) == 4), default=0)
    lanes = 1
    while (lanes * 2 <= min(batch, MAX_LANES)
           and lanes * 2 * largest * 4 <= LANES_BUDGET_BYTES):
        lanes *= 2
    return lanes


def build_plan(graph: Graph, input_shape: tuple[int, ...], threads: int,
               native_module: Any, *, interleave: bool = False) -> CompiledPlan:
    """Plan ``graph`` (after ``passes.prepare_graph``) for one concrete input shape.

    ``interleave`` stores every 4-D activation batch-interleaved (the images of a position
    adjacent), so each conv runs the whole batch as one long stream: short streams of small
    planes fill the vectors and every weight is loaded once per batch instead of once per image.
    """
    shapes = infer_shapes(graph, input_shape)
    fused = fuse_for_shapes(graph, shapes)
    shapes.update({k: tuple(v.shape) for k, v in fused.constants.items() if k not in shapes})
    builder = _Builder(fused, shapes, assign_pads(fused, shapes, interleave), threads, interleave,
                       native_module.vector_floats())
    builder.emit_input(tuple(input_shape))
    for builder.node_index, node in enumerate(fused.nodes):
        emitter = _EMITTERS.get(node.op)
        if emitter is None:
            raise UnsupportedOpError(f"unsupported operator {node.op} ({node.describe()})")
        emitter(builder, node)
    builder.emit_output()
    native = builder.build_native(native_module, tuple(input_shape))
    return CompiledPlan(native, tuple(input_shape), shapes[graph.output_name], builder.kernels,
                        builder.wavefronts)
