"""NumPy references of the native kernels (same signatures as ``runtime.kernels.native``).

Written for clarity, not speed: each follows the ONNX operator definition
(https://onnx.ai/onnx/operators/) directly. They compute in float64 and return float32 for
float32 inputs (float64 for float64 inputs: a float64 run of a model is its exact reference).
``conv2d`` is itself a direct sparse convolution: it visits only the nonzero weights and adds
each one times a shifted (strided, dilated) input window.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["conv2d", "pool2d", "global_pool", "affine", "add", "softmax", "gemm", "concat"]

Pads = tuple[int, int, int, int]  # (top, left, bottom, right), ONNX order
Clamp = tuple[float, float] | None


def _clamp(y: np.ndarray, clamp: Clamp) -> np.ndarray:
    return y if clamp is None else np.clip(y, clamp[0], clamp[1])


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *,
           stride: tuple[int, int] = (1, 1), pads: Pads = (0, 0, 0, 0),
           dilation: tuple[int, int] = (1, 1), group: int = 1,
           residual: np.ndarray | None = None, clamp: Clamp = None,
           kernel: str = "auto") -> np.ndarray:
    """y = clamp(conv(x, weight) + bias + residual); ``kernel`` only matters natively."""
    del kernel  # the reference has one algorithm
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pads
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n, oc, oh, ow))
    ocg = oc // group
    for o, i, a, b in zip(*np.nonzero(weight), strict=True):
        ic = (o // ocg) * cg + i
        rows = slice(a * dh, a * dh + sh * (oh - 1) + 1, sh)
        cols = slice(b * dw, b * dw + sw * (ow - 1) + 1, sw)
        y[:, o] += float(weight[o, i, a, b]) * xp[:, ic, rows, cols]
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    if residual is not None:
        y += residual
    return _clamp(y, clamp).astype(_out_dtype(x, weight))


def _out_dtype(*arrays: np.ndarray) -> np.dtype:
    """float64 when any input is float64, else float32."""
    return np.dtype(np.float64 if any(np.asarray(a).dtype == np.float64 for a in arrays)
                    else np.float32)


def pool2d(x: np.ndarray, *, kind: str, kernel: tuple[int, int], stride: tuple[int, int] = (1, 1),
           pads: Pads = (0, 0, 0, 0), dilation: tuple[int, int] = (1, 1), ceil_mode: bool = False,
           count_include_pad: bool = False) -> np.ndarray:
    """Max or average pooling; ceil_mode drops a last window that starts in the end padding."""
    n, c, h, w = x.shape
    begin, end = pads[:2], pads[2:]
    sizes = []
    for size, k, s, d, pb, pe in zip((h, w), kernel, stride, dilation, begin, end, strict=True):
        span = size + pb + pe - d * (k - 1) - 1
        out = (math.ceil(span / s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + pb:
            out -= 1
        sizes.append(out)
    y = np.zeros((n, c, *sizes), np.float64)
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            hs = [i * stride[0] - begin[0] + a * dilation[0] for a in range(kernel[0])]
            ws = [j * stride[1] - begin[1] + b * dilation[1] for b in range(kernel[1])]
            inside = [(r, q) for r in hs for q in ws if 0 <= r < h and 0 <= q < w]
            values = np.stack([x[:, :, r, q] for r, q in inside], axis=-1).astype(np.float64)
            if kind == "max":
                y[:, :, i, j] = values.max(axis=-1)
                continue
            padded = sum(1 for r in hs for q in ws
                         if -begin[0] <= r < h + end[0] and -begin[1] <= q < w + end[1])
            y[:, :, i, j] = values.sum(axis=-1) / (padded if count_include_pad else len(inside))
    return y.astype(_out_dtype(x))


def global_pool(x: np.ndarray, *, kind: str) -> np.ndarray:
    """GlobalAveragePool / GlobalMaxPool over H, W (keeps them as size 1)."""
    reduce = np.max if kind == "max" else np.mean
    return reduce(x.astype(np.float64), axis=(2, 3), keepdims=True).astype(np.float32)


def affine(x: np.ndarray, scale: np.ndarray | None, shift: np.ndarray | None,
           clamp: Clamp = None) -> np.ndarray:
    """clamp(x * scale[c] + shift[c]) with c the axis-1 channel (BatchNorm, Relu, Clip)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = x.astype(np.float64)
    if scale is not None:
        y = y * np.asarray(scale, np.float64).reshape(shape)
    if shift is not None:
        y = y + np.asarray(shift, np.float64).reshape(shape)
    return _clamp(y, clamp).astype(np.float32)


def add(a: np.ndarray, b: np.ndarray, clamp: Clamp = None) -> np.ndarray:
    """Broadcasting add (NumPy rules), then clamp."""
    return _clamp(a.astype(np.float64) + b, clamp).astype(np.float32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Softmax along one axis (opset 13 semantics)."""
    z = x.astype(np.float64)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float = 1.0,
         beta: float = 1.0, trans_a: bool = False, trans_b: bool = False) -> np.ndarray:
    """alpha * A' @ B' + beta * C (A' = A.T if trans_a, same for B)."""
    a64 = a.astype(np.float64).T if trans_a else a.astype(np.float64)
    b64 = b.astype(np.float64).T if trans_b else b.astype(np.float64)
    y = alpha * (a64 @ b64)
    if c is not None:
        y = y + beta * c.astype(np.float64)
    return y.astype(np.float32)


def concat(xs: list[np.ndarray], axis: int) -> np.ndarray:
    """Concatenation along ``axis``."""
    return np.concatenate(xs, axis=axis)


def to_segments(rows: np.ndarray, lanes: int) -> np.ndarray:
    """(n, P * lanes) image rows -> (n, P + 2, lanes) column-segment rows (runtime/planner/layout.py
    segment_tensor): lane i of position p (1..P) holds column i * P + p - 1; position 0 holds
    column i * P - 1 and position P + 1 column (i + 1) * P (the halos; 0 past the row's ends)."""
    n, width = rows.shape
    positions = width // lanes
    padded = np.zeros((n, width + 2), np.float32)
    padded[:, 1:-1] = rows
    columns = np.arange(lanes)[None, :] * positions + np.arange(-1, positions + 1)[:, None]
    return padded[:, columns + 1]


def interleave_images(rows: np.ndarray) -> np.ndarray:
    """(images, W) planar rows -> (W, images): each position's images adjacent (the batch-
    interleaved layout's rows, CopyStep)."""
    return np.ascontiguousarray(rows.T)


def from_segments(segments: np.ndarray) -> np.ndarray:
    """(n, P + 2, lanes) column-segment rows -> (n, P * lanes) image rows (halos dropped)."""
    n, _, lanes = segments.shape
    return np.ascontiguousarray(segments[:, 1:-1, :].transpose(0, 2, 1)).reshape(n, -1)
