"""Window geometry of 2-D convolution and pooling nodes, with the ONNX rules
(https://onnx.ai/onnx/operators/onnx__Conv.html, onnx__MaxPool.html): auto_pad SAME_UPPER /
SAME_LOWER / VALID, explicit pads, strides, dilations, ceil_mode. Invalid attributes are model
errors naming the node (ONNX Runtime refuses them too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from featherdeploy.runtime.errors import InputError, ModelLoadError, UnsupportedOpError
from featherdeploy.runtime.graph import Node

__all__ = ["ConvGeometry", "PoolGeometry", "conv_geometry", "pool_geometry", "MAX_WINDOW",
           "nd_output_dims"]

MAX_WINDOW = 1 << 20  # kernel, stride, dilation and pad values beyond this are model errors


@dataclass(frozen=True)
class ConvGeometry:
    """Resolved 2-D convolution geometry (pads as begin/end per axis)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    group: int
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class PoolGeometry:
    """Resolved 2-D pooling window (output sizes include ceil_mode)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    out_hw: tuple[int, int]


def _pair(node: Node, name: str, default: int) -> tuple[int, int]:
    value = node.attr_ints(name)
    if value is None:
        return (default, default)
    if len(value) != 2:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D {name} is supported, got {value}")
    if min(value) < 1 or max(value) > MAX_WINDOW:
        raise ModelLoadError(f"{node.describe()}: {name} must be in [1, {MAX_WINDOW}], "
                             f"got {value}")
    return value  # type: ignore[return-value]


def _resolve_pads(node: Node, hw: tuple[int, int], kernel: tuple[int, int],
                  stride: tuple[int, int], dilation: tuple[int, int]
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    explicit = node.attr_ints("pads")
    if auto_pad != "NOTSET" and explicit is not None and any(explicit):
        raise ModelLoadError(f"{node.describe()}: explicit pads with auto_pad={auto_pad}")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(hw, kernel, stride, dilation, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        return (begin[0], begin[1]), (end[0], end[1])
    if auto_pad == "VALID":
        return (0, 0), (0, 0)
    if auto_pad != "NOTSET":
        raise ModelLoadError(f"{node.describe()}: unknown auto_pad {auto_pad!r}")
    pads = explicit or (0, 0, 0, 0)
    if len(pads) != 4:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D pads are supported, got {pads}")
    if min(pads) < 0 or max(pads) > MAX_WINDOW:
        raise ModelLoadError(f"{node.describe()}: pads must be in [0, {MAX_WINDOW}], got {pads}")
    return (pads[0], pads[1]), (pads[2], pads[3])


def conv_geometry(node: Node, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> ConvGeometry:
    """Geometry of a Conv node for input (N, C, H, W) and weight (OC, C/group, KH, KW)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise UnsupportedOpError(
            f"{node.describe()}: only 2-D convolution (4-D tensors) is supported")
    kernel = (int(w_shape[2]), int(w_shape[3]))
    declared = node.attr_ints("kernel_shape")
    if declared is not None and declared != kernel:
        raise ModelLoadError(f"{node.describe()}: kernel_shape disagrees with the weight shape")
    if min(kernel) < 1 or min(w_shape[:2]) < 1:
        raise ModelLoadError(f"{node.describe()}: empty weight {tuple(w_shape)}")
    stride, dilation = _pair(node, "strides", 1), _pair(node, "dilations", 1)
    group = node.attr_int("group", 1)
    hw = (int(x_shape[2]), int(x_shape[3]))
    if group < 1 or x_shape[1] != w_shape[1] * group or w_shape[0] % group:
        raise ModelLoadError(
            f"{node.describe()}: input channels {x_shape[1]} do not match weight {tuple(w_shape)} "
            f"with group={group}")
    pad_begin, pad_end = _resolve_pads(node, hw, kernel, stride, dilation)
    out = tuple((hw[i] + pad_begin[i] + pad_end[i] - dilation[i] * (kernel[i] - 1) - 1)
                // stride[i] + 1 for i in range(2))
    if min(out) < 1:
        raise InputError(f"{node.describe()}: input {hw[0]}x{hw[1]} is smaller than the kernel")
    return ConvGeometry(kernel, stride, dilation, pad_begin, pad_end, group,
                        out)  # type: ignore[arg-type]


def pool_geometry(node: Node, x_shape: tuple[int, ...]) -> PoolGeometry:
    """Geometry of a MaxPool / AveragePool node.

    With ceil_mode a last window that would start inside the end padding is dropped (ONNX Runtime
    and PyTorch agree on this rule). A pad must be smaller than the kernel (ONNX Runtime refuses
    others: their windows would hold only padding).
    """
    if len(x_shape) != 4:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D pooling (4-D tensors) is supported")
    kernel = node.attr_ints("kernel_shape")
    if kernel is None or len(kernel) != 2:
        raise ModelLoadError(f"{node.describe()}: kernel_shape must give 2 sizes")
    if min(kernel) < 1 or max(kernel) > MAX_WINDOW:
        raise ModelLoadError(f"{node.describe()}: kernel_shape must be positive, got {kernel}")
    stride, dilation = _pair(node, "strides", 1), _pair(node, "dilations", 1)
    hw = (int(x_shape[2]), int(x_shape[3]))
    pad_begin, pad_end = _resolve_pads(node, hw, kernel, stride, dilation)  # type: ignore[arg-type]
    if any(p >= k for p, k in zip((*pad_begin, *pad_end), (*kernel, *kernel), strict=True)):
        raise ModelLoadError(f"{node.describe()}: pads must be smaller than the kernel")
    ceil_mode = node.attr_int("ceil_mode", 0)
    out = []
    for i in range(2):
        span = hw[i] + pad_begin[i] + pad_end[i] - dilation[i] * (kernel[i] - 1) - 1
        size = (-(-span // stride[i]) if ceil_mode else span // stride[i]) + 1
        if ceil_mode and (size - 1) * stride[i] >= hw[i] + pad_begin[i]:
            size -= 1
        out.append(size)
    if min(out) < 1:
        raise InputError(f"{node.describe()}: input {hw[0]}x{hw[1]} is smaller than the window")
    return PoolGeometry(kernel, stride, dilation, pad_begin, pad_end,  # type: ignore[arg-type]
                        (out[0], out[1]))


@dataclass(frozen=True)
class ConvTransposeGeometry:
    """Resolved 2-D ConvTranspose geometry (output size per ONNX, pads begin/end)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    group: int
    out_hw: tuple[int, int]


def conv_transpose_geometry(node: Node, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
                            ) -> ConvTransposeGeometry:
    """Geometry of a ConvTranspose node for input (N, C, H, W) and weight (C, M/group, KH, KW):
    OH = s (H - 1) + output_padding + (KH - 1) d + 1 - pad_begin - pad_end, or the pads that
    give ``output_shape`` (split as ONNX says: SAME_UPPER puts the extra one at the end,
    SAME_LOWER and NOTSET at the beginning)."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise UnsupportedOpError(f"{node.describe()}: only 2-D ConvTranspose is supported")
    kernel = (int(w_shape[2]), int(w_shape[3]))
    declared = node.attr_ints("kernel_shape")
    if declared is not None and declared != kernel:
        raise ModelLoadError(f"{node.describe()}: kernel_shape disagrees with the weight shape")
    stride, dilation = _pair(node, "strides", 1), _pair(node, "dilations", 1)
    group = node.attr_int("group", 1)
    if group < 1 or x_shape[1] != w_shape[0] or w_shape[0] % group:
        raise ModelLoadError(f"{node.describe()}: input channels {x_shape[1]} do not match "
                             f"weight {tuple(w_shape)} with group={group}")
    hw = (int(x_shape[2]), int(x_shape[3]))
    extra = node.attr_ints("output_padding", (0, 0)) or (0, 0)
    if len(extra) != 2 or min(extra) < 0 or any(e >= max(s, d) for e, s, d in
                                                 zip(extra, stride, dilation, strict=True)):
        raise ModelLoadError(f"{node.describe()}: output_padding must be below the stride")
    full = [stride[i] * (hw[i] - 1) + extra[i] + (kernel[i] - 1) * dilation[i] + 1
            for i in range(2)]
    target = node.attr_ints("output_shape")
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    if target is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if target is None:
            target = tuple(hw[i] * stride[i] for i in range(2))
        target = tuple(target[-2:])
        total = [full[i] - target[i] for i in range(2)]
        if min(total) < 0:
            raise ModelLoadError(f"{node.describe()}: output_shape {target} is too large")
        upper = auto_pad == "SAME_UPPER"  # NOTSET (output_shape) pads like SAME_LOWER
        begin = tuple(t // 2 if upper else t - t // 2 for t in total)
        end = tuple(t - b for t, b in zip(total, begin, strict=True))
    else:
        pads = node.attr_ints("pads", (0, 0, 0, 0)) or (0, 0, 0, 0)
        if len(pads) != 4 or min(pads) < 0 or max(pads) > MAX_WINDOW:
            raise ModelLoadError(f"{node.describe()}: pads must be 4 values >= 0, got {pads}")
        begin, end = (pads[0], pads[1]), (pads[2], pads[3])
    out = tuple(full[i] - begin[i] - end[i] for i in range(2))
    if min(out) < 1:
        raise InputError(f"{node.describe()}: empty output for input {hw}")
    return ConvTransposeGeometry(kernel, stride, dilation, begin, end, group,  # type: ignore[arg-type]
                                 out)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TransposePhase:
    """Output positions (q * stride + r) of one phase r = (ry, rx) of a ConvTranspose are a
    stride-1 conv of the input with the taps ``ky`` x ``kx`` (kernel rows / columns, in conv
    order) and these pads."""

    r: tuple[int, int]
    taps: tuple[tuple[int, ...], tuple[int, ...]]
    pad_begin: tuple[int, int]
    pad_end: tuple[int, int]
    out_hw: tuple[int, int]


def transpose_phases(geo: ConvTransposeGeometry, in_hw: tuple[int, int]
                     ) -> list[TransposePhase] | None:
    """The stride x stride phase convs of a ConvTranspose, or None when one is not a plain
    stride-1 conv (dilation, a phase without taps or needing a crop)."""
    if geo.dilation != (1, 1):
        return None
    axes = []
    for i in range(2):
        s, p, k = geo.stride[i], geo.pad_begin[i], geo.kernel[i]
        per_phase = []
        for r in range(s):
            # Output q * s + r reads input q + o for each kernel index with o = (r + p - k) / s.
            taps = [(r + p - kk) // s for kk in range(k) if (r + p - kk) % s == 0]
            kernel_index = [kk for kk in range(k) if (r + p - kk) % s == 0]
            count = -(-(geo.out_hw[i] - r) // s) if r < geo.out_hw[i] else 0
            if not taps or count == 0:
                return None
            low = min(taps)
            # Conv order: tap a reads input q + low + a, so kernel indices in decreasing order.
            order = tuple(kk for _, kk in sorted(zip(taps, kernel_index, strict=True)))
            begin = -low
            end = count + len(taps) - 1 - in_hw[i] - begin
            if begin < 0 or end < 0:
                return None
            per_phase.append((r, order, begin, end, count))
        axes.append(per_phase)
    return [TransposePhase((ry, rx), (ky, kx), (by, bx), (ey, ex), (qy, qx))
            for ry, ky, by, ey, qy in axes[0] for rx, kx, bx, ex, qx in axes[1]]


def nd_output_dims(node: Node, x_shape: tuple[int, ...], kernel: tuple[int, ...],
                   transpose: bool = False, ceil_mode: bool = False) -> tuple[int, ...]:
    """Output spatial dims of a Conv, pool or (``transpose``) ConvTranspose of any number of
    spatial dims, by the ONNX rules: the shapes of the 1-D and 3-D ones, which run on ONNX
    Runtime (the 2-D functions above give the full geometry the native kernels need)."""
    spatial = tuple(int(d) for d in x_shape[2:])
    n = len(spatial)

    def ints(name: str, default: int) -> tuple[int, ...]:
        value = node.attr_ints(name)
        value = (default,) * n if value is None else tuple(value)
        if len(value) != n:
            raise ModelLoadError(f"{node.describe()}: {name} {list(value)} for {n} spatial dims")
        return value

    if len(kernel) != n or min(kernel, default=1) < 1:
        raise ModelLoadError(f"{node.describe()}: kernel {list(kernel)} for input {x_shape}")
    stride, dilation = ints("strides", 1), ints("dilations", 1)
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    if transpose:
        target = node.attr_ints("output_shape")
        if target is not None:
            return tuple(target[-n:])
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            return tuple(d * s for d, s in zip(spatial, stride, strict=True))
        extra = ints("output_padding", 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER") and not transpose:
        out = tuple(-(-d // s) for d, s in zip(spatial, stride, strict=True))
    else:
        pads = (0,) * (2 * n) if auto_pad == "VALID" else tuple(
            node.attr_ints("pads") or (0,) * (2 * n))
        if len(pads) != 2 * n:
            raise ModelLoadError(f"{node.describe()}: pads {list(pads)} for {n} spatial dims")
        dims = []
        for i, d in enumerate(spatial):
            reach = dilation[i] * (kernel[i] - 1) + 1
            if transpose:
                dims.append(stride[i] * (d - 1) + extra[i] + reach - pads[i] - pads[i + n])
                continue
            span = d + pads[i] + pads[i + n] - reach
            size = (-(-span // stride[i]) if ceil_mode else span // stride[i]) + 1
            if ceil_mode and (size - 1) * stride[i] >= d + pads[i]:
                size -= 1
            dims.append(size)
        out = tuple(dims)
    if min(out, default=1) < 1:
        raise InputError(f"{node.describe()}: empty output for input {x_shape}")
    return out
