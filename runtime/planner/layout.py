"""Where activations live: arena buffers, symbolic views, tensor layouts and zero borders.

- Every 4-D activation is stored as NCHW planes with a zero border (``pad``) wide enough for the
  stride-1 convs reading it; pads are unified across a conv's input, output and residual
  (:func:`assign_pads`) so the conv epilogue writes the next layer's padded layout directly.
  Planes of at most ``PlannerOptions.small_plane`` pixels are exempt.
- In the batch-interleaved layout (``lanes`` > 1) the images of a position are adjacent floats.
  Channel-major (the default): a plane of positions per channel. Position-major: a position's
  channels adjacent (``Tensor.position_major``), for tensors only strided convs and global
  pooling touch (``OpDef.reads_position_major``).
- Column segments (batch-1, one thread): lane i of a row's position p holds column i * P + p.
- Views are symbolic until buffers are placed (``runtime.planner.memory``); then they resolve to
  native ``View`` objects.
docs/runtime.md explains each layout and the measurements behind it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.options import PlannerOptions

__all__ = ["VMAX", "BSR_BLOCK", "ARENA", "CONST", "INPUT", "OUTPUT", "Buf", "Border", "SymView",
           "SymOffset", "Tensor", "compact_strides", "as4", "round_up", "tensor_lanes",
           "spatial_tensor", "segment_tensor", "flat_tensor", "segment_positions",
           "pair_chunk_vectors", "stream_mask", "native"]


def native() -> Any:
    """The compiled extension (imported on first use)."""
    from featherdeploy.runtime import _native

    return _native


def _constant(name: str) -> int:
    return int(native().CONSTANTS[name])


VMAX = _constant("max_vector_floats")  # widest vector of any kernel: alignment and read slack
BSR_BLOCK = _constant("bsr_block")  # output channels per BSR block
ARENA, CONST, INPUT, OUTPUT = (native().SPACES[k] for k in ("arena", "const", "input", "output"))


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pair_chunk_vectors(vector_floats: int) -> int:
    """Vectors per output channel in one chunk of the interleaved CSR kernel (tunables.h)."""
    return int(native().pair_chunk_vectors(vector_floats))


@dataclass(eq=False)
class Buf:
    """An arena region used from step ``first`` to step ``last``. ``key`` names its layout
    (buffers of one key at one offset have the same border). ``border``: the zero border of a
    padded tensor, which no step writes; when ``border_read`` (a conv reads it as its zero
    padding) runtime.planner.memory keeps it zero where the buffer shares memory with another
    layout."""

    key: tuple
    size: int
    first: int = -1
    last: int = -1
    offset: int = -1
    border: Border | None = None
    border_read: bool = False


@dataclass
class Border:
    """Per plane of a padded tensor, the pad rows and columns around the rows its producers
    write (views of its buffer, origins relative to it): ``ends``, the top rows with the first
    row's left pad and the last row's right pad with the bottom rows; ``gaps``, the pad columns
    between consecutive rows, which a conv storing the whole ``stream`` (ConvSpec.fast) writes
    as masked zeros."""

    ends: list[SymView]
    gaps: SymView | None
    stream: SymView


@dataclass
class SymView:
    """A native view whose origin is known once buffers are placed (``slot``: which input or
    output array for the INPUT / OUTPUT spaces)."""

    buf: Buf | None
    space: int
    origin: int
    dims: tuple[int, int, int, int]
    strides: tuple[int, int, int, int]
    slot: int = 0
    # > 0: a position-major stream view (Tensor.stream_view): dims (1, C, H, W * lanes), but
    # consecutive positions of a row are this many floats apart.
    position_stride: int = 0

    def offset(self) -> int:
        """Origin within its space once placed."""
        return (self.buf.offset if self.buf is not None else 0) + self.origin

    def resolve(self) -> Any:
        return native().View(self.space, self.slot, self.offset(), self.dims, self.strides)

    def shifted(self, axis: int, index: int, size: int) -> SymView:
        """Sub-view starting at ``index`` along ``axis`` with extent ``size``."""
        dims = list(self.dims)
        dims[axis] = size
        return SymView(self.buf, self.space, self.origin + index * self.strides[axis],
                       tuple(dims), self.strides, self.slot,  # type: ignore[arg-type]
                       self.position_stride)

    def boxes(self) -> SymView:
        """The same floats as a plain 4-D view: a position-major stream view becomes
        (C, H, W, lanes) with its position stride."""
        if not self.position_stride:
            return self
        _, c, h, width = self.dims
        lanes = self.strides[1]
        return SymView(self.buf, self.space, self.origin, (c, h, width // lanes, lanes),
                       (lanes, self.strides[2], self.position_stride, 1), self.slot)

    def reach(self) -> int:
        """Floats from the first to one past the last element (non-negative strides)."""
        box = self.boxes()
        return sum((d - 1) * s for d, s in zip(box.dims, box.strides, strict=True)) + 1


@dataclass
class SymOffset:
    """An arena offset known once buffers are placed."""

    buf: Buf
    local: int = 0

    def resolve(self) -> int:
        return self.buf.offset + self.local


def compact_strides(dims: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(dims):
        strides.append(acc)
        acc *= d
    return tuple(reversed(strides))


def as4(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A shape of rank <= 4 with leading unit dims (rank > 4: one row)."""
    if len(shape) > 4:
        return (1, 1, 1, math.prod(shape))
    return tuple([1] * (4 - len(shape)) + list(shape))  # type: ignore[return-value]


@dataclass
class Tensor:
    """Storage of one activation: padded planes (4-D) or compact.

    Spatial tensors have image stride ``ss``, channel stride ``cs``, row stride ``rs`` and
    position stride ``ws``. In the planar layout ``ws`` is 1; in the batch-interleaved layout
    (``lanes`` > 1) the ``lanes`` images of a position are adjacent (``ss`` = 1): channel-major,
    ``ws`` = lanes and a plane per channel; or ``position_major``, ``cs`` = lanes and ``ws`` =
    C * lanes (a position's channels adjacent: a conv reads one run of C vectors per tap
    position instead of C streams). docs/runtime.md compares the two.
    """

    shape: tuple[int, ...]
    buf: Buf
    pad: int = 0
    rs: int = 0
    cs: int = 0
    ss: int = 0
    ws: int = 1
    lead: int = 0  # floats before the first plane, so that every plane's interior is aligned
    segments: bool = False  # column-segment layout: only convs address it
    position_major: bool = False  # only readers with OpDef.reads_position_major address it

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 4

    @property
    def lanes(self) -> int:
        return self.cs if self.position_major else self.ws

    @property
    def origin(self) -> int:
        """Offset of the first plane's interior (row ``pad``, column ``pad``) in the buffer."""
        return self.lead + self.pad * (self.rs + self.ws)

    def view(self) -> SymView:
        """4-D view (lower ranks get leading unit dims; rank > 4 is seen as one row)."""
        if self.segments:  # no (n, c, h, w) strides reach it: Builder.tensor gives a copy
            raise ModelLoadError("internal layout error (column segments have no NCHW view)")
        if self.spatial:
            return SymView(self.buf, ARENA, self.origin, self.shape,  # type: ignore[arg-type]
                           (self.ss, self.cs, self.rs, self.ws))
        dims = as4(self.shape)
        return SymView(self.buf, ARENA, 0, dims, compact_strides(dims))  # type: ignore[arg-type]

    def stream_view(self) -> SymView:
        """The view conv kernels address: in the interleaved layout the whole batch is one
        "image" whose rows hold W positions of lanes floats (image-minor). Position-major
        positions are ``ws`` floats apart (``SymView.position_stride``)."""
        if self.ws == 1:
            return self.view()
        n, c, h, w = self.shape
        return SymView(self.buf, ARENA, self.origin, (1, c, h, w * n), (0, self.cs, self.rs, 1),
                       position_stride=self.ws if self.position_major else 0)

    def compact_view(self, dims: tuple[int, int, int, int]) -> SymView:
        """This compact tensor seen with other (same-size) dims."""
        return SymView(self.buf, ARENA, 0, dims, compact_strides(dims))  # type: ignore[arg-type]

    @property
    def compact(self) -> bool:
        """Stored in plain row-major order (no border, no interleaving)."""
        if not self.spatial:
            return True
        n, c, h, w = self.shape
        return (self.pad == 0 and self.ws == 1 and self.rs == w and self.cs == h * w
                and self.ss == c * h * w and self.lead == 0)


def tensor_lanes(shape: tuple[int, ...], interleave: bool, opts: PlannerOptions) -> int:
    """Floats per position of a 4-D activation: its batch size if interleaved, else 1.
    (1x1 planes, e.g. global pooling outputs, stay planar: compact, they feed the classifier.)"""
    pixels = shape[2] * shape[3] if len(shape) == 4 else 0
    if not interleave or not 1 < pixels <= opts.interleave_max_pixels:
        return 1
    return shape[0]


def spatial_tensor(shape: tuple[int, ...], pad: int, opts: PlannerOptions,
                   lanes: int = 1, position_major: bool = False) -> Tensor:
    n, c, h, w = shape
    if position_major:
        return _position_major_tensor(shape, pad, lanes)
    rs = (w + 2 * pad) * lanes
    # VMAX floats of slack per plane: a conv's last output vector may run past the plane's
    # stream (masked zeros); reads that run past a plane only feed masked lanes. Tiny planes go
    # without (it would double them) and are only written element-wise.
    big = h * w * lanes > opts.small_plane
    cs = round_up((h + 2 * pad) * rs + (VMAX if big else 0), 4)
    if lanes > 1:
        return _with_border(Tensor(shape, Buf(("spatial", shape, pad, lanes), c * cs + VMAX), pad,
                                   rs, cs, 1, lanes))
    if h * w == 1 and pad == 0:  # compact (N, C, 1, 1): a classifier reads it without a copy
        cs = 1
    lead = 0
    if big and w >= VMAX:
        # Aligned interiors: every plane's first interior vector starts a cache line, so a 1x1
        # conv's loads and every conv's stores never straddle two lines. (Not for planes
        # narrower than a vector: there the rounded plane stride made ResNet-20x2's 8x8 3x3
        # convs 10% slower, 0.035 -> 0.039 ms.)
        cs = round_up(cs, VMAX)
        lead = -pad * (rs + 1) % VMAX
    ss = c * cs
    return _with_border(Tensor(shape, Buf(("spatial", shape, pad), n * ss + lead + VMAX), pad,
                               rs, cs, ss, lead=lead))


def _position_major_tensor(shape: tuple[int, ...], pad: int, lanes: int) -> Tensor:
    """Batch-interleaved, a position's C vectors adjacent: one plane of (H + 2 pad) x (W + 2
    pad) positions of C * lanes floats (lanes a multiple of VMAX keeps every vector aligned)."""
    n, c, h, w = shape
    if lanes != n or lanes % VMAX:
        raise ModelLoadError("internal layout error (position-major needs whole vectors)")
    ws = c * lanes
    rs = (w + 2 * pad) * ws
    size = (h + 2 * pad) * rs + VMAX
    return _with_border(Tensor(shape, Buf(("position-major", shape, pad), size), pad, rs, lanes,
                               1, ws, position_major=True))


def segment_positions(width: int, vector_floats: int) -> int:
    """Positions per lane when a row of ``width`` columns is cut into one segment per vector
    lane (segment_tensor), or 0 when it does not cut evenly into segments of 1 to half a pair
    chunk (the interleaved kernel's chunks must cover whole rows to write the halos)."""
    if width % vector_floats:
        return 0
    positions = width // vector_floats
    return positions if positions <= pair_chunk_vectors(vector_floats) // 2 else 0


def segment_tensor(shape: tuple[int, ...], pad: int, vector_floats: int) -> Tensor:
    """Column-segment layout of one image (batch-1 plans): lane i of position p holds column
    i * P + p of its row (P = segment_positions), so a row is P vectors and the conv kernel of
    the batch-interleaved layout runs it with every load aligned (planar rows put most loads
    across two cache lines). Each row's pad positions -1 and P hold the neighbouring segments'
    edge columns (halos, written by the producer); pad rows and edge lanes stay zero."""
    _, c, h, w = shape
    rs = (w // vector_floats + 2 * pad) * vector_floats
    cs = round_up((h + 2 * pad) * rs + VMAX, VMAX)
    lead = -pad * (rs + vector_floats) % VMAX
    return _with_border(Tensor(shape, Buf(("segments", shape, pad, vector_floats),
                                          c * cs + lead + VMAX),
                               pad, rs, cs, c * cs, vector_floats, lead=lead, segments=True))


def _with_border(t: Tensor) -> Tensor:
    """``t`` with its buffer's ``border`` set: per plane, the pad rows and pad columns around
    the rows its producers write, which convs read as the zero padding. (Column-segment rows
    include their halo positions: producers write those. Plane slack, the lead and the
    buffer's tail are only read for stream lanes the conv epilogue masks, so they may hold
    anything.)"""
    n, c, h, w = t.shape
    if t.pad == 0:
        return t
    if t.segments:  # rows written with their halo positions -1 and P
        planes, row, left = c, w + 2 * t.ws, (t.pad - 1) * t.ws
    elif t.position_major:  # one plane, rows of w positions * C * lanes
        planes, row, left = 1, w * t.ws, t.pad * t.ws
    elif t.ws > 1:  # batch-interleaved: one plane per channel, rows of w positions * lanes
        planes, row, left = c, w * t.ws, t.pad * t.ws
    else:  # planar: the planes of all images are cs apart (ss == c * cs)
        planes, row, left = n * c, w, t.pad
    right, top = t.rs - left - row, t.pad * t.rs
    first_row = t.lead + top + left  # where the first written row starts

    def part(origin: int, rows: int, floats: int) -> SymView:
        return SymView(t.buf, ARENA, origin, (1, planes, rows, floats), (0, t.cs, t.rs, 1))

    ends = [part(t.lead, 1, top + left),
            part(first_row + (h - 1) * t.rs + row, 1, right + top)]
    gaps = part(first_row + row, h - 1, right + left) if h > 1 and right + left > 0 else None
    t.buf.border = Border(ends, gaps, part(first_row, h, row))
    return t


def flat_tensor(shape: tuple[int, ...]) -> Tensor:
    numel = math.prod(shape)
    return Tensor(shape, Buf(("flat", numel), round_up(numel, VMAX) + VMAX))


def stream_mask(length: int, row_stride: int, width: int) -> np.ndarray:
    """uint32 lanes: all ones where stream position p < length and p % row_stride < width."""
    p = np.arange(round_up(length, VMAX) + VMAX)
    valid = (p < length) & (p % row_stride < width)
    return np.where(valid, np.uint32(0xFFFFFFFF), np.uint32(0))
