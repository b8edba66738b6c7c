"""Dense strided convs as Winograd F(m x m, 4x4) over stride-phase planes.

After the stride-phase split (planner/pads.py) a stride-s conv is a stride-1 conv over
C * s * s phase planes; a 7x7 stride-2 stem becomes a 4x4 conv over 12 planes. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", arXiv
1509.09308) computes an m x m output tile of a 4x4 conv with (m + 3)^2 products per plane
instead of 16 m^2: m = 3 (36 products for 9 outputs) on planar planes, m = 5 (64 for 25,
``PlannerOptions.winograd_interleaved_tile``) on batch-interleaved ones. The transforms are the
native kernel's (kernels/winograd.h, read through the binding): here the weights are
transformed once, U = G g G^T, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from featherdeploy.runtime.options import PlannerOptions
from featherdeploy.runtime.planner.layout import native

__all__ = ["WinogradWeights", "PlanarSplit", "winograd_matrices", "winograd_weights",
           "winograd_pays", "interleaved_columns", "planar_split"]

KERNEL = 4  # the phase kernel side the transforms take (kernels/winograd.h kKernel)
PLANAR_TILE = 3  # output tile side on planar planes (the only one the planar kernel has)


def window(tile: int) -> int:
    """Input tile side of output tiles of ``tile``."""
    return tile + KERNEL - 1


@dataclass(frozen=True)
class WinogradWeights:
    """Transformed weights, [blocks][points][planes][block] (ConvSpec.winograd_u), the output
    tile side, and the phase row and column of the window origin of output position (0, 0)."""

    u: np.ndarray
    tile: int
    y0: int
    x0: int


@cache
def winograd_matrices(tile: int = PLANAR_TILE) -> dict[str, np.ndarray | int]:
    """A^T (m x T), G (T x 4), B^T (T x T) of the native kernel's tile ``m`` (T = m + 3), and
    its channel block."""
    return dict(native().winograd_matrices(tile))


def winograd_pays(weight: np.ndarray, planes: int, opts: PlannerOptions,
                  tile: int = PLANAR_TILE) -> bool:
    """True when the stored taps per output channel exceed ``winograd_min_gain`` times the
    products a Winograd output position costs per channel ((m + 3)^2 / m^2 per plane)."""
    taps = np.count_nonzero(weight) / max(1, weight.shape[0])
    return taps >= opts.winograd_min_gain * planes * window(tile)**2 / tile**2


def winograd_weights(weight: np.ndarray, plane: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                     planes: int, tile: int = PLANAR_TILE) -> WinogradWeights | None:
    """The Winograd form, in output tiles of ``tile``, of a conv whose tap (flat index of
    ``weight``'s (C, KH, KW)) reads phase plane ``plane`` at ``dy`` rows and ``dx`` columns from
    the output position, or None when its taps span more than 4x4 positions of a plane."""
    y0, x0 = int(dy.min()), int(dx.min())
    if dy.max() - y0 >= KERNEL or dx.max() - x0 >= KERNEL:
        return None
    oc = weight.shape[0]
    g = np.zeros((oc, planes, KERNEL, KERNEL))
    g[:, plane, dy - y0, dx - x0] = weight.reshape(oc, -1)
    mats = winograd_matrices(tile)
    G, block = np.asarray(mats["G"], np.float64), int(mats["block"])
    u = np.einsum("ak,ockl,bl->abco", G, g, G).reshape(-1, planes, oc)  # [points][planes][oc]
    blocks = -(-oc // block)
    padded = np.zeros((u.shape[0], planes, blocks * block))
    padded[..., :oc] = u
    u_blocked = padded.reshape(u.shape[0], planes, blocks, block).transpose(2, 0, 1, 3)
    return WinogradWeights(np.ascontiguousarray(u_blocked, np.float32).reshape(-1), tile, y0, x0)


def interleaved_columns(w: WinogradWeights, planes: int, plane_floats: int, row_floats: int,
                        lanes: int) -> np.ndarray:
    """ConvSpec.winograd_col_off on phase planes of one vector (``lanes`` floats) per
    position: plane p's window column j at p * plane + y0 rows + (x0 + j) positions."""
    p, j = np.meshgrid(np.arange(planes), np.arange(window(w.tile)), indexing="ij")
    return (p * plane_floats + w.y0 * row_floats + (w.x0 + j) * lanes).reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class PlanarSplit:
    """The planes a planar Winograd conv splits its input into: rows by the stride, columns by
    3 x the column stride, so window column j of neighbouring tiles is adjacent floats."""

    split_w: int
    rows: int
    rs: int
    plane: int
    col_off: np.ndarray  # int64 [planes * 6] (planar tiles are 3 outputs, 6 inputs a side)


def planar_split(w: WinogradWeights, channels: int, stride: tuple[int, int],
                 out_hw: tuple[int, int], max_dy: int, vector_floats: int) -> PlanarSplit:
    """The column split and window columns of a planar Winograd conv (output tiles of
    ``PLANAR_TILE``) whose tap rows / columns in its own padded frame are e = dy * sh + a,
    e = dx * sw + b; planes are (channel, a, b)."""
    (sh, sw), (oh, ow) = stride, out_hw
    if w.tile != PLANAR_TILE:
        raise ValueError(f"planar Winograd convs have output tiles of {PLANAR_TILE}")
    split_w = PLANAR_TILE * sw
    tiles = -(-ow // PLANAR_TILE)
    vectors = -(-tiles // vector_floats)
    channel, a, b, j = np.meshgrid(np.arange(channels), np.arange(sh), np.arange(sw),
                                   np.arange(window(PLANAR_TILE)), indexing="ij")
    e = (w.x0 + j) * sw + b  # padded-frame column of window column j of tile 0
    split_plane = (channel * sh + a) * split_w + e % split_w
    column = e // split_w
    rows = oh + max_dy
    rs = vectors * vector_floats + int(column.max())
    plane = rows * rs
    col_off = split_plane * plane + w.y0 * rs + column
    return PlanarSplit(split_w, rows, rs, plane, col_off.reshape(-1).astype(np.int64))
