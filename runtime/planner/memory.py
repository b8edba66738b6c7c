"""Arena placement: an offset for every buffer, such that buffers used at a common step never
share a float, and the border zeroing that sharing memory between layouts requires.

A buffer (``Buf``) is live from its first to its last step (both included). Policies
(``PlannerOptions.memory``):

- ``shared`` (default): greedy by size (Pisarchyk & Lee 2020, "Efficient Memory Management for
  Deep Neural Net Inference", arXiv:2001.03288; TFLite's arena planner): blocks in order of
  decreasing size, each at the smallest gap that fits it among the already placed blocks whose
  live ranges overlap its own (best fit), or past the highest of them. The big tensors are
  placed first and the small ones fill the holes between them; a scan in step order would give
  each freed hole to whatever comes next and leave holes too small for the big tensors that
  follow. On the 224-px benchmark models at batch 1 (benchmarks/memory.py) the arena is the
  peak of live buffers on ResNet-18/50 and within 1.2x (DenseNet-121) and 1.5x (MobileNetV2)
  of it, against 2.2-17x for ``by_layout``. Three rules bend plain greedy by size:
  - a block is one buffer, or a chain of buffers of one key whose border convs read (taken in
    step order, like ``by_layout``), which keep one offset from the chain's first step to its
    last: only the chain's first buffer may need its border zeroed (below). DenseNet-121's
    bottleneck tensors then cost 1.7 MiB more arena and 0.1 MiB of zeroing per call instead of
    2.3 MiB (58 zero steps).
  - the buffers of a run of convs that may form a row wavefront (runtime/planner/wavefront.py)
    either coincide (one key, one offset) or share no float, whatever their live ranges: the
    run's members execute interleaved, row by row. (Without it MobileNetV2 lost 4 of its 17
    wavefronts.)
  - a block first tries the offset of a placed block of its key that is free throughout its
    life, so same-shape tensors keep coinciding as with ``by_layout`` (wavefront guards then
    order the reuse within a run).
  When ``by_layout`` gives an arena no larger, its placement is kept (it needs no zeroing),
  and also when its arena is small (``PlannerOptions.pack_arena_above_bytes``).
- ``by_layout``: a scan in step order in which a freed buffer is reused only by a later buffer
  of the same key.

Zero borders. Convs read the border of a padded tensor (``Buf.border``: pad rows and columns) as
its zero padding, and no step writes a non-zero value into a border. The workspace starts zeroed
(or NaN, ``PlannerOptions.poison_arena``) and is reused from call to call, so a border holds
data wherever another layout used its memory, earlier in the call or later in the previous
one. ``border_zeroing`` finds the buffers whose border is read and may hold data; each gets its
border zeroed by a native "zero" step (steps/zero.cpp) after the last step using memory it
overlaps and before its own first step (except the pad columns between rows when that first
step is a conv storing its whole output stream, Builder.unwritten_border). Zero steps sharing a
position are one step, and none goes inside a run of convs that may form a wavefront when
another position will do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from featherdeploy.runtime.options import MEMORY_POLICIES
from featherdeploy.runtime.planner.layout import VMAX, Buf, SymView, round_up

__all__ = ["ZeroNeed", "place_buffers", "peak_live", "border_zeroing", "free_from",
           "zero_positions"]


def _span(buf: Buf) -> int:
    """Floats a buffer occupies (offsets stay VMAX-aligned)."""
    return round_up(buf.size, VMAX)


def place_buffers(bufs: Sequence[Buf], steps: int, policy: str = "shared",
                  together: Sequence[Sequence[Buf]] = (), pack_above_floats: int = 0) -> int:
    """Sets ``offset`` of every used buffer (``first`` >= 0); returns the arena size in floats.
    Each group of ``together`` is used by steps that may run interleaved (a row wavefront):
    any two of its buffers then either coincide (one key at one offset) or share no float,
    whatever their live ranges. ``shared`` keeps the ``by_layout`` placement when that arena
    is at most ``pack_above_floats``."""
    used = [buf for buf in bufs if buf.first >= 0]
    if policy == "by_layout":
        return _place_by_layout(used, steps)
    if policy != "shared":
        raise ValueError(f"unknown memory policy {policy!r}; expected one of {MEMORY_POLICIES}")
    by_layout = _place_by_layout(used, steps)
    by_layout_offsets = [buf.offset for buf in used]
    # by_layout needs no border zeroing: it wins whenever it is no larger (small graphs with
    # few layouts, where greedy by size can leave a hole the step-order scan fills)
    if by_layout > pack_above_floats:
        shared = _place_greedy_by_size(used, together)
        if shared < by_layout:
            return shared
    for buf, offset in zip(used, by_layout_offsets, strict=True):
        buf.offset = offset
    return by_layout


def _place_by_layout(bufs: list[Buf], steps: int) -> int:
    """Linear scan in step order; a freed buffer serves only later buffers of its key."""
    starts: dict[int, list[Buf]] = {}
    ends: dict[int, list[Buf]] = {}
    for buf in bufs:
        starts.setdefault(buf.first, []).append(buf)
        ends.setdefault(buf.last, []).append(buf)
    free: dict[tuple, list[int]] = {}
    top = 0
    for index in range(steps):
        for buf in starts.get(index, []):
            pool = free.get(buf.key)
            if pool:
                buf.offset = pool.pop()
            else:
                buf.offset, top = top, top + _span(buf)
        for buf in ends.get(index, []):
            free.setdefault(buf.key, []).append(buf.offset)
    return top


@dataclass
class _Block:
    """Buffers placed as one: a single buffer, or a chain of same-key buffers with a read
    border that share one offset one after another (live from the first's first step to the
    last's last step), so that only the first's border may need zeroing."""

    bufs: list[Buf]

    @property
    def key(self) -> tuple:
        return self.bufs[0].key

    @property
    def first(self) -> int:
        return self.bufs[0].first

    @property
    def last(self) -> int:
        return self.bufs[-1].last

    @property
    def span(self) -> int:
        return _span(self.bufs[0])


def _blocks(bufs: list[Buf]) -> list[_Block]:
    """Border-read buffers chained per key as the by_layout scan reuses them (a buffer joins
    the chain of its key that ended last before it starts); every other buffer alone."""
    blocks: list[_Block] = []
    ended: dict[tuple, list[_Block]] = {}  # per key, chains by their last step
    for buf in sorted(bufs, key=lambda b: (b.first, b.last)):
        if buf.border is None or not buf.border_read:
            blocks.append(_Block([buf]))
            continue
        chains = [c for c in ended.get(buf.key, []) if c.last < buf.first]
        if chains:
            chain = max(chains, key=lambda c: c.last)
            chain.bufs.append(buf)
        else:
            chain = _Block([buf])
            blocks.append(chain)
            ended.setdefault(buf.key, []).append(chain)
    return blocks


def _place_greedy_by_size(bufs: list[Buf], together: Sequence[Sequence[Buf]]) -> int:
    """Greedy by size over blocks, same-key offsets first, wavefront runs kept coinciding or
    apart (module docstring)."""
    order = sorted(_blocks(bufs), key=lambda b: (-b.span, b.first, b.last))
    first = np.array([b.first for b in order], np.int64)
    last = np.array([b.last for b in order], np.int64)
    span = np.array([b.span for b in order], np.int64)
    offset = np.zeros(len(order), np.int64)
    index = {id(buf): i for i, block in enumerate(order) for buf in block.bufs}
    keys: dict[tuple, int] = {}
    key = np.array([keys.setdefault(b.key, len(keys)) for b in order], np.int64)
    group = np.zeros((len(order), len(together)), bool)  # block i is used by group g
    for g, bufs_of_group in enumerate(together):
        group[[index[id(b)] for b in bufs_of_group if id(b) in index], g] = True
    top = 0
    for i, block in enumerate(order):
        live = (first[:i] <= block.last) & (last[:i] >= block.first)
        near = ~live & (group[:i] & group[i]).any(axis=1)  # coincide or keep apart
        same = np.flatnonzero((key[:i] == key[i]) & ~live)
        slot = _same_key_slot(sorted({int(offset[j]) for j in same}), offset[:i], span[:i],
                              live, near, key[:i] == key[i], int(span[i]))
        blocked = np.flatnonzero(live | near)
        offset[i] = slot if slot is not None else _best_fit(
            offset[blocked], offset[blocked] + span[blocked], int(span[i]))
        for buf in block.bufs:
            buf.offset = int(offset[i])
        top = max(top, int(offset[i] + span[i]))
    return top


def _same_key_slot(candidates: list[int], offsets: np.ndarray, spans: np.ndarray,
                   live: np.ndarray, near: np.ndarray, same_key: np.ndarray,
                   size: int) -> int | None:
    """The lowest offset of a placed buffer of the same key where ``size`` floats overlap no
    live block, and every ``near`` block they overlap is of the same key at that offset."""
    for offset in candidates:
        hit = (offsets < offset + size) & (offsets + spans > offset)
        if not np.any(hit & live) and np.all(~(hit & near) | (same_key & (offsets == offset))):
            return offset
    return None


def _best_fit(starts: np.ndarray, ends: np.ndarray, size: int) -> int:
    """The start of the smallest gap of at least ``size`` floats between the live buffers
    (lowest offset on ties), else the end of the highest one."""
    if starts.size == 0:
        return 0
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)  # end of everything up to and including buffer k
    gap_start = np.concatenate(([0], reach[:-1]))
    gap = starts - gap_start
    fits = np.flatnonzero(gap >= size)
    if fits.size == 0:
        return int(reach[-1])
    best = fits[np.argmin(gap[fits])]  # argmin takes the first (lowest offset) of equal gaps
    return int(gap_start[best])


def peak_live(bufs: Sequence[Buf]) -> int:
    """The most floats (VMAX-rounded) of buffers live at one step: a lower bound of any arena."""
    used = [b for b in bufs if b.first >= 0]
    if not used:
        return 0
    steps = max(b.last for b in used) + 2
    delta = np.zeros(steps, np.int64)
    for buf in used:
        delta[buf.first] += _span(buf)
        delta[buf.last + 1] -= _span(buf)
    return int(np.cumsum(delta).max())


@dataclass
class ZeroNeed:
    """Parts of a buffer (``views``: for a border, the parts its first step does not write,
    which the builder knows) to be zeroed by a step inserted before step ``q`` of the plan, for
    some ``earliest`` <= q <= ``latest``."""

    buf: Buf
    earliest: int
    latest: int
    views: list[SymView] = field(default_factory=list)


def _placed(bufs: Sequence[Buf]) -> tuple[list[Buf], np.ndarray, np.ndarray, np.ndarray]:
    """The used buffers in step order with their start and end offsets and last steps."""
    used = sorted((b for b in bufs if b.first >= 0), key=lambda b: b.first)
    lo = np.array([b.offset for b in used], np.int64)
    hi = lo + np.array([b.size for b in used], np.int64)
    return used, lo, hi, np.array([b.last for b in used], np.int64)


def free_from(buf: Buf, bufs: Sequence[Buf]) -> int:
    """The first step after every step before ``buf``'s first that uses memory it overlaps."""
    used, lo, hi, last = _placed(bufs)
    before = (lo < buf.offset + buf.size) & (hi > buf.offset) & (last < buf.first)
    return int(last[before].max()) + 1 if before.any() else 0


def border_zeroing(bufs: Sequence[Buf], arena_zeroed: bool = True) -> list[ZeroNeed]:
    """The placed buffers whose border must be zeroed, with where (module docstring).

    Buffers with a border form chains in step order: a buffer joins the chain of the last
    buffer to use its memory before it when that one has its key and offset (the same border,
    which no step writes). A chain's border stays as it was at its head, which finds it zero
    only as the first user of its memory in a call whose every overlap is of the chain's key
    and offset, in a workspace that started zeroed. Any other chain with a read border
    (``Buf.border_read``) gets it zeroed at its head."""
    used, lo, hi, last = _placed(bufs)
    keys: dict[tuple, int] = {}
    key = np.array([keys.setdefault(b.key, len(keys)) for b in used], np.int64)
    head: dict[int, int] = {}  # buffer -> the head of its chain
    heads: dict[int, ZeroNeed | None] = {}  # chain head -> its zeroing if its border may be dirty
    for i, buf in enumerate(used):
        if buf.border is None:
            continue
        overlap = (lo < hi[i]) & (hi > lo[i])
        overlap[i] = False
        same = overlap & (key == key[i]) & (lo == lo[i])
        before = np.flatnonzero(overlap & (last < buf.first))
        previous = int(before[np.argmax(last[before])]) if before.size else -1
        if previous >= 0 and same[previous] and previous in head:
            head[i] = head[previous]
        else:
            head[i] = i
            clean = previous < 0 and arena_zeroed and np.array_equal(overlap, same)
            heads[i] = None if clean else ZeroNeed(buf, int(last[previous]) + 1
                                                   if previous >= 0 else 0, buf.first)
    read = {head[i] for i, buf in enumerate(used) if i in head and buf.border_read}
    return [need for i, need in heads.items() if need is not None and i in read]


def zero_positions(needs: Sequence[ZeroNeed], keep_together: Sequence[Sequence[int]] = ()
                   ) -> dict[int, list[ZeroNeed]]:
    """Step index -> the needs met by one step inserted before it: few positions (greedy
    interval stabbing, the latest position each time), none inside a run of ``keep_together``
    (consecutive step indices) unless a need's window lies wholly inside one."""
    inside = {q for run in keep_together for q in range(run[0] + 1, run[-1] + 1)}
    positions: dict[int, list[ZeroNeed]] = {}
    for need in sorted(needs, key=lambda n: (n.latest, n.earliest)):
        window = range(need.latest, need.earliest - 1, -1)
        allowed = next((q for q in window if q not in inside), None)
        taken = [q for q in positions if need.earliest <= q <= need.latest
                 and (q not in inside or allowed is None)]
        q = max(taken) if taken else need.latest if allowed is None else allowed
        positions.setdefault(q, []).append(need)
    return positions
