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

__all__ = ["WinogradWeights", "winograd_matrices", "winograd_weights", "winograd_pays"]

KERNEL = 4  # the phase kernel side the transforms take (kernels/winograd.h kKernel)
OUT = 3     # output tile side


@dataclass(frozen=True)
class WinogradWeights:
    """ConvSpec.winograd_*: transformed weights [blocks][36][planes][block], each plane's window
    origin (floats from the phase planes' origin) and the positions readable from it."""

    u: np.ndarray
    plane_off: np.ndarray
    in_rows: int
    in_cols: int


@cache
def winograd_matrices() -> dict[str, np.ndarray | int]:
    """A^T (3x6), G (6x4), B^T (6x6) of the native kernel, and its channel block."""
    return dict(native().winograd_matrices())


def winograd_pays(weight: np.ndarray, planes: int, opts: PlannerOptions) -> bool:
    """True when the stored taps per output channel exceed ``winograd_min_gain`` times the
    products a Winograd output position costs per channel (36 / 9 per plane)."""
    taps = np.count_nonzero(weight) / max(1, weight.shape[0])
    return taps >= opts.winograd_min_gain * planes * (KERNEL + OUT - 1) ** 2 / OUT**2


def winograd_weights(weight: np.ndarray, plane: np.ndarray, dy: np.ndarray, dx: np.ndarray,
                     planes: int, plane_floats: int, row_floats: int, lanes: int,
                     phase_rows: int, phase_cols: int) -> WinogradWeights | None:
    """The Winograd form of a conv whose tap (flat index of ``weight``'s (C, KH, KW)) reads
    phase plane ``plane`` at row ``dy`` and column ``dx`` from the output position, or None when
    its taps span more than 4x4 positions of a plane."""
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
    off = np.arange(planes, dtype=np.int64) * plane_floats + y0 * row_floats + x0 * lanes
    return WinogradWeights(np.ascontiguousarray(u_blocked, np.float32).reshape(-1), off,
                           phase_rows - y0, phase_cols - x0)
