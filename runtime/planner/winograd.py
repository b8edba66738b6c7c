"""Dense strided convs as Winograd F(3x3, 4x4) over stride-phase planes.

After the stride-phase split (planner/pads.py) a stride-s conv is a stride-1 conv over
C * s * s phase planes; a 7x7 stride-2 stem becomes a 4x4 conv over 12 planes. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", arXiv
1509.09308) computes a 3x3 output tile of a 4x4 conv with 36 products per plane instead of
144. The transforms are the native kernel's (kernels/winograd.h, read through the binding):
here the weights are transformed once, U = G g G^T, in float64.
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
OUT = 3     # output tile side
TILE = KERNEL + OUT - 1  # input tile side


@dataclass(frozen=True)
class WinogradWeights:
    """Transformed weights, [blocks][36][planes][block] (ConvSpec.winograd_u), and the phase
    row and column of the window origin of output position (0, 0)."""

    u: np.ndarray
    y0: int
    x0: int


@cache
def winograd_matrices() -> dict[str, np.ndarray | int]:
    """A^T (3x6), G (6x4), B^T (6x6) of the native kernel, and its channel block."""
    return dict(native().winograd_matrices())


def winograd_pays(weight: np.ndarray, planes: int, opts: PlannerOptions) -> bool:
    """True when the stored taps per output channel exceed ``winograd_min_gain`` times the
    products a Winograd output position costs per channel (36 / 9 per plane)."""
    taps = np.count_nonzero(weight) / max(1, weight.shape[0])
    return taps >= opts.winograd_min_gain * planes * TILE**2 / OUT**2


def winograd_weights(weight: np.ndarray, plane: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                     planes: int) -> WinogradWeights | None:
    """The Winograd form of a conv whose tap (flat index of ``weight``'s (C, KH, KW)) reads
    phase plane ``plane`` at ``dy`` rows and ``dx`` columns from the output position, or None
    when its taps span more than 4x4 positions of a plane."""
    y0, x0 = int(dy.min()), int(dx.min())
    if dy.max() - y0 >= KERNEL or dx.max() - x0 >= KERNEL:
        return None
    oc = weight.shape[0]
    g = np.zeros((oc, planes, KERNEL, KERNEL))
    g[:, plane, dy - y0, dx - x0] = weight.reshape(oc, -1)
    mats = winograd_matrices()
    G, block = np.asarray(mats["G"], np.float64), int(mats["block"])
    u = np.einsum("ak,ockl,bl->abco", G, g, G).reshape(-1, planes, oc)  # [36][planes][oc]
    blocks = -(-oc // block)
    padded = np.zeros((u.shape[0], planes, blocks * block))
    padded[..., :oc] = u
    u_blocked = padded.reshape(u.shape[0], planes, blocks, block).transpose(2, 0, 1, 3)
    return WinogradWeights(np.ascontiguousarray(u_blocked, np.float32).reshape(-1), y0, x0)


def interleaved_columns(w: WinogradWeights, planes: int, plane_floats: int, row_floats: int,
                        lanes: int) -> np.ndarray:
    """ConvSpec.winograd_col_off on phase planes of one vector (``lanes`` floats) per
    position: plane p's window column j at p * plane + y0 rows + (x0 + j) positions."""
    p, j = np.meshgrid(np.arange(planes), np.arange(TILE), indexing="ij")
    return (p * plane_floats + w.y0 * row_floats + (w.x0 + j) * lanes).reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class PlanarSplit:
    """The planes a planar Winograd conv splits its input into: rows by the stride, columns by
    3 x the column stride, so window column j of neighbouring tiles is adjacent floats."""

    split_w: int
    rows: int
    rs: int
    plane: int
    col_off: np.ndarray  # int64 [planes * 6]


def planar_split(w: WinogradWeights, channels: int, stride: tuple[int, int],
                 out_hw: tuple[int, int], max_dy: int, vector_floats: int) -> PlanarSplit:
    """The column split and window columns of a planar Winograd conv whose tap rows / columns
    in its own padded frame are e = dy * sh + a, e = dx * sw + b; planes are (channel, a, b)."""
    (sh, sw), (oh, ow) = stride, out_hw
    split_w = OUT * sw
    tiles = -(-ow // OUT)
    vectors = -(-tiles // vector_floats)
    channel, a, b, j = np.meshgrid(np.arange(channels), np.arange(sh), np.arange(sw),
                                   np.arange(TILE), indexing="ij")
    e = (w.x0 + j) * sw + b  # padded-frame column of window column j of tile 0
    split_plane = (channel * sh + a) * split_w + e % split_w
    column = e // split_w
    rows = oh + max_dy
    rs = vectors * vector_floats + int(column.max())
    plane = rows * rs
    col_off = split_plane * plane + w.y0 * rs + column
    return PlanarSplit(split_w, rows, rs, plane, col_off.reshape(-1).astype(np.int64))
