"""Conv kernel choice and weight packing: CSR or BSR by a cost model on nonzeros, taps laid out
with precomputed input offsets, input-channel blocks of the interleaved kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featherdeploy.runtime.errors import InputError, UnsupportedOpError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.ops.fusion import KERNEL_KEY
from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.planner.layout import BSR_BLOCK, pair_chunk_vectors, round_up

__all__ = ["ConvWeights", "choose_conv_kernel", "conv_kernel_for", "pack_conv_weights",
           "channel_block_ptr", "input_channel_blocks"]


@dataclass
class ConvWeights:
    """Weights laid out for one conv kernel: per unit (channel or block) a run of taps."""

    bsr: bool
    ptr: np.ndarray  # int32 [units + 1]
    off: np.ndarray  # int32 [taps]
    val: np.ndarray  # float32 [taps] (CSR) or [taps * BSR_BLOCK] (BSR)
    units: int
    val_channel: np.ndarray  # int32, aligned with val: input channel (in its group) of each
    unit_cost: np.ndarray  # float64 [units], for balancing threads


def choose_conv_kernel(weight: np.ndarray, group: int, opts: PlannerOptions) -> bool:
    """True = BSR (blocks of BSR_BLOCK output channels), False = CSR, by estimated cost: a CSR
    tap is one unaligned load + one FMA per vector; a BSR tap feeds BSR_BLOCK FMAs from one load
    (ratio measured on AVX-512, docs/performance.md)."""
    oc = weight.shape[0]
    ocg = oc // group
    if group > 1 and ocg % BSR_BLOCK:
        return False  # a block would straddle groups with different inputs
    nz = (weight.reshape(oc, -1) != 0)
    nnz = int(nz.sum())
    padded = np.zeros((round_up(oc, BSR_BLOCK), nz.shape[1]), dtype=bool)
    padded[:oc] = nz
    block_taps = int(padded.reshape(-1, BSR_BLOCK, nz.shape[1]).any(axis=1).sum())
    return (block_taps * BSR_BLOCK * opts.bsr_cost_per_weight
            < nnz * opts.csr_cost_per_nnz)


def conv_kernel_for(node: Node, weight: np.ndarray, group: int, opts: PlannerOptions) -> bool:
    """The kernel of a conv, True = BSR: forced by KERNEL_KEY (tests, benchmarks; "winograd"
    where it applies, on BSR's phase planes) or by cost."""
    forced = node.attrs.get(KERNEL_KEY)
    if forced is None:
        return choose_conv_kernel(weight, group, opts)
    if forced not in ("csr", "bsr", "winograd"):
        raise UnsupportedOpError(f"{node.describe()}: unknown kernel {forced!r}")
    if forced == "winograd":  # BSR reads the phase planes Winograd needs (ops/conv.py)
        return group == 1 or (weight.shape[0] // group) % BSR_BLOCK == 0
    if forced == "bsr" and group > 1 and (weight.shape[0] // group) % BSR_BLOCK:
        raise UnsupportedOpError(
            f"{node.describe()}: BSR needs channels per group divisible by {BSR_BLOCK}")
    return forced == "bsr"


def pack_conv_weights(weight: np.ndarray, group: int, tap_offsets: np.ndarray, group_stride: int,
                      bsr: bool, opts: PlannerOptions, by_offset: bool = False) -> ConvWeights:
    """Lay out ``weight`` (OC, Cg, KH, KW) for the CSR or BSR kernel.

    ``tap_offsets`` (Cg*KH*KW,) is the input offset of each tap of group 0; group g adds
    ``g * group_stride``. Offsets must fit in int32. A CSR channel's taps are in weight order
    (input channel, then kernel row and column), or with ``by_offset`` in ascending offset
    order (a position-major input, where the channel varies fastest; the generated tiles need
    ascending offsets).
    """
    oc = weight.shape[0]
    ocg = oc // group
    flat = weight.reshape(oc, -1).astype(np.float32)
    taps_per_channel = int(np.prod(weight.shape[2:]))
    if bsr:
        nb = round_up(oc, BSR_BLOCK) // BSR_BLOCK
        padded = np.zeros((nb * BSR_BLOCK, flat.shape[1]), dtype=np.float32)
        padded[:oc] = flat
        blocks = padded.reshape(nb, BSR_BLOCK, -1)
        rows, cols = np.nonzero((blocks != 0).any(axis=1))
        offsets = tap_offsets[cols] + (rows * BSR_BLOCK // ocg) * group_stride
        values = blocks[rows, :, cols].reshape(-1)
        channel = np.repeat(cols // taps_per_channel, BSR_BLOCK)
        units = nb
        per_unit = np.bincount(rows, minlength=nb) * (BSR_BLOCK * opts.bsr_cost_per_weight)
    else:
        rows, cols = np.nonzero(flat)
        offsets = tap_offsets[cols] + (rows // ocg) * group_stride
        if by_offset:
            order = np.lexsort((offsets, rows))
            rows, cols, offsets = rows[order], cols[order], offsets[order]
        values = flat[rows, cols]
        channel = cols // taps_per_channel
        units, per_unit = oc, np.bincount(rows, minlength=oc) * opts.csr_cost_per_nnz
    counts = np.bincount(rows, minlength=units)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    if offsets.size and (offsets.max() >= 2**31 or ptr[-1] >= 2**31):
        raise InputError("tensor too large for the engine's 32-bit offsets")
    return ConvWeights(bsr, ptr.astype(np.int32), offsets.astype(np.int32),
                       np.ascontiguousarray(values, dtype=np.float32), units,
                       np.ascontiguousarray(channel, dtype=np.int32),
                       per_unit.astype(np.float64) + opts.unit_overhead)


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


def input_channel_blocks(channels: int, rows: int, cols: int, stride_w: int, lanes: int,
                         vector_floats: int, taps_per_output: float,
                         opts: PlannerOptions) -> int:
    """Input-channel blocks of an interleaved CSR conv (ConvKernelArgs::blocks). The input
    window every output channel of a chunk sweeps (kernel rows x the chunk's positions plus the
    taps' reach, ``lanes`` floats per position, every input channel) is cut into blocks of about
    ``ic_block_bytes`` once it exceeds twice that, so each block stays in L1 while all output
    channels pass; but only while a block keeps ``min_block_taps`` taps per output channel on
    average to pay for its partial-sum round trip."""
    positions = max(1, pair_chunk_vectors(vector_floats) // max(1, lanes // vector_floats))
    window = channels * rows * ((positions - 1) * stride_w + cols) * lanes * 4
    blocks = min(channels, -(-window // opts.ic_block_bytes))
    if window <= 2 * opts.ic_block_bytes or taps_per_output < opts.min_block_taps * blocks:
        return 1
    return blocks
