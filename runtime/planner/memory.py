"""Arena placement: every buffer gets an offset by liveness (first and last step using it).

A freed buffer is reused only by a later buffer with the same key (the same tensor layout), so
zero borders written once stay zero.
"""

from __future__ import annotations

from runtime.planner.layout import VMAX, Buf, round_up

__all__ = ["place_buffers"]


def place_buffers(bufs: list[Buf], steps: int) -> int:
    """Sets ``offset`` of every used buffer; returns the arena size in floats."""
    starts: dict[int, list[Buf]] = {}
    ends: dict[int, list[Buf]] = {}
    for buf in bufs:
        if buf.first < 0:
            continue
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
                buf.offset, top = top, top + round_up(buf.size, VMAX)
        for buf in ends.get(index, []):
            free.setdefault(buf.key, []).append(buf.offset)
    return top
