"""Constant tables of native plans, and the large constants plans share.

A plan reads its constants from tables it does not copy (native ``ConstSlot``): table 0 packs
the plan's small constants; every large one (a classifier's weights, mostly) is a table of its
own. A large float32 initializer is stored in such a table when the model is loaded
(``graph.py``), so the plans that read it as it is use the model's own copy; a large constant a
plan computes (a transposed weight matrix) comes from a process-wide store keyed by content.
The programs of one model (per input shapes, thread count and batch layout, the halves of a
split batch, the options the engine times against each other) then hold no copy of those
constants of their own: MobileNetV3-Large's 10 MB classifier was held up to five times at 16
images (issue 21's peak RSS).

This module loads nothing native: graph loading uses it.
"""

from __future__ import annotations

import hashlib
import threading
import weakref

import numpy as np

__all__ = ["SHARED_CONST_MIN_FLOATS", "TABLE_SLACK_FLOATS", "constant_table", "shared_constant",
           "as_table_view"]

# Constants of at least this many floats get a table of their own (hashing one costs ~1.5 ms
# per MB; smaller ones are packed into the plan's own table 0).
SHARED_CONST_MIN_FLOATS = 1 << 14
# Zeros after every table: kernels may read up to one vector past a constant's end, and no
# kernel's vector is wider than this (the builder checks its VMAX against it).
TABLE_SLACK_FLOATS = 64
_ALIGN_BYTES = 64

_lock = threading.Lock()
_by_content: weakref.WeakValueDictionary[tuple[int, bytes], np.ndarray] = (
    weakref.WeakValueDictionary())
# Address of an initializer's table -> the array owning its memory (views of a table keep that
# owner alive, not the table view itself).
_by_address: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
_ALIGN_FLOATS = _ALIGN_BYTES // 4


def constant_table(data: np.ndarray) -> np.ndarray:
    """A read-only, 64-byte aligned 1-D float32 copy of ``data``, then zeros: at least
    TABLE_SLACK_FLOATS of them, up to a whole multiple of TABLE_SLACK_FLOATS floats."""
    flat = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
    size = -(-max(flat.size, 1) // TABLE_SLACK_FLOATS) * TABLE_SLACK_FLOATS
    raw = np.zeros(size + TABLE_SLACK_FLOATS + _ALIGN_FLOATS, np.float32)
    table = _table_in(raw)
    table[:flat.size] = flat
    raw.flags.writeable = False
    table.flags.writeable = False
    return table


def _table_in(raw: np.ndarray) -> np.ndarray:
    start = (-raw.ctypes.data % _ALIGN_BYTES) // 4
    return raw[start:start + raw.size - _ALIGN_FLOATS]


def as_table_view(value: np.ndarray) -> np.ndarray:
    """``value`` (float32) stored in a table of its own: the view of its floats, same shape,
    read-only; the plans reading it whole then share the table instead of copying it."""
    table = constant_table(value)
    with _lock:
        _by_address[table.ctypes.data] = table.base
    return table[:value.size].reshape(value.shape)


def _table_at(flat: np.ndarray) -> np.ndarray | None:
    """The initializer's table that ``flat`` starts and whose floats after ``flat`` are its
    zeros, if any."""
    with _lock:
        raw = _by_address.get(flat.ctypes.data)
    if raw is None:
        return None
    table = _table_in(raw)
    if table.size < flat.size + TABLE_SLACK_FLOATS or table[flat.size:].any():
        return None
    return table


def shared_constant(data: np.ndarray) -> np.ndarray:
    """A table holding ``data`` (as :func:`constant_table`): the table ``data`` already lies in
    (a large initializer), else one shared with every live plan holding the same floats."""
    flat = np.ascontiguousarray(data, dtype=np.float32).reshape(-1)
    held = _table_at(flat)
    if held is not None:
        return held
    key = (flat.size, hashlib.blake2b(flat, digest_size=16).digest())
    with _lock:
        table = _by_content.get(key)
    if table is not None and np.array_equal(table[:flat.size], flat):
        return table
    table = constant_table(flat)
    with _lock:
        _by_content[key] = table
    return table
