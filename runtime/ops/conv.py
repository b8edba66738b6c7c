"""Conv: shape inference, NumPy reference, MACs and the native emitter.

Natively, a conv computes each output plane as one stream in the input's padded row
coordinates; a weight tap is a constant offset into that stream, so there is no im2col
(kernels/conv_kernels.h). The emitter picks the layout (planar, batch-interleaved, column
segments), the kernel (CSR, BSR, the dense tiny-plane GEMM, the direct strided loop, generated
code in the native step) and the work split; docs/runtime.md explains each choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from featherdeploy.runtime.errors import ModelLoadError
from featherdeploy.runtime.graph import Node
from featherdeploy.runtime.kernels import reference
from featherdeploy.runtime.macs import conv_macs, sparse_macs
from featherdeploy.runtime.ops.fusion import (
    ACT_KEY,
    CLAMP_NONE,
    GATE_KEY,
    KERNEL_KEY,
    RESIDUAL_KEY,
    SKIP_EMPTY_KEY,
    FusedActivation,
)
from featherdeploy.runtime.ops.geometry import ConvGeometry, conv_geometry, nd_output_dims
from featherdeploy.runtime.ops.registry import OpContext, OpDef, Output, get_op, register
from featherdeploy.runtime.planner.conv_select import (
    channel_block_ptr,
    choose_conv_kernel,
    conv_kernel_for,
    input_channel_blocks,
    pack_conv_weights,
)
from featherdeploy.runtime.planner.layout import (
    ARENA,
    VMAX,
    SymOffset,
    SymView,
    Tensor,
    native,
    round_up,
    segment_positions,
    stream_mask,
    tensor_lanes,
)
from featherdeploy.runtime.planner.pads import direct_strided, reads_padded_copy
from featherdeploy.runtime.planner.threads import RowSplitCandidate, balanced_bounds
from featherdeploy.runtime.planner.winograd import (
    PLANAR_TILE,
    WinogradWeights,
    interleaved_columns,
    planar_split,
    winograd_pays,
    winograd_weights,
)

if TYPE_CHECKING:
    from featherdeploy.runtime.planner.builder import Builder

__all__ = ["fused_activation", "conv_weight"]


def fused_activation(node: Node) -> FusedActivation:
    return node.attrs.get(ACT_KEY, CLAMP_NONE)


def conv_weight(node: Node, ctx: OpContext) -> np.ndarray | None:
    w = ctx.const(node, 1)
    return None if w is None else np.asarray(w, np.float32)


def _infer(node: Node, ctx: OpContext) -> list[Output]:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    bias = node.input(2)
    if bias and ctx.shapes.get(bias) != (w[0],):
        raise ModelLoadError(f"{node.describe()}: bias of shape {ctx.shapes.get(bias)} for "
                             f"{w[0]} output channels")
    if len(x) != 4:  # 1-D and 3-D convs run on ONNX Runtime
        if len(x) < 3 or len(w) != len(x):
            raise ModelLoadError(f"{node.describe()}: input {x} with weight {w}")
        return [((x[0], w[0], *nd_output_dims(node, x, tuple(w[2:]))), ctx.dtype(node, 0))]
    geo = conv_geometry(node, x, w)
    return [((x[0], w[0], *geo.out_hw), ctx.dtype(node, 0))]


def _evaluate(node: Node, values: list[np.ndarray], ctx: OpContext) -> list[np.ndarray]:
    x, w = values[0], values[1]
    if x.ndim != 4:
        return []  # not folded: ONNX Runtime computes it
    geo = conv_geometry(node, x.shape, w.shape)
    bias = values[2] if len(values) > 2 and values[2] is not None else None
    y = reference.conv2d(x, w, bias, stride=geo.stride, pads=(*geo.pad_begin, *geo.pad_end),
                         dilation=geo.dilation, group=geo.group)
    return [y.astype(x.dtype)]


def _native(node: Node, ctx: OpContext) -> str | None:
    if len(ctx.shape(node, 0)) != 4:
        return "only 2-D convolution runs natively"
    if ctx.const(node, 1) is None:
        return "the weight is computed at run time"
    if node.input(2) and ctx.const(node, 2) is None:
        return "the bias is computed at run time"
    return None


def _macs(node: Node, ctx: OpContext) -> tuple[int, int]:
    x, w = ctx.shape(node, 0), ctx.shape(node, 1)
    geo = conv_geometry(node, x, w)
    dense = x[0] * conv_macs(w[0], w[1] * geo.group, geo.group, w[2], w[3], *geo.out_hw)
    weight = ctx.const(node, 1)
    if weight is None or weight.size == 0:
        return dense, dense
    return dense, sparse_macs(dense, int(np.count_nonzero(weight)), weight.size)


# ----------------------------------------------------------------------------- emitter


def _emit(b: Builder, node: Node) -> None:
    weight = np.asarray(b.graph.constants[node.inputs[1]], dtype=np.float32)
    geo = conv_geometry(node, b.shapes[node.inputs[0]], weight.shape)
    segments = _segment_conv(b, node, geo, weight)
    pad = max(*geo.pad_begin, *geo.pad_end)
    any_order = _position_major_conv(b, node)  # reads and writes either interleaved order
    x = (b.segment_tensor(node.inputs[0], pad) if segments
         else b.tensor(node.inputs[0], position_major_ok=any_order))
    bias = b.graph.constants.get(node.input(2)) if node.input(2) else None
    res_name = node.attrs.get(RESIDUAL_KEY)
    res = None
    if res_name:
        res = (b.segment_tensor(res_name, 1) if segments
               else b.tensor(res_name, position_major_ok=any_order))
    out_shape = b.shapes[node.outputs[0]]
    direct_output = None if segments else b.output_view(node.outputs[0])
    if segments:
        y = (b.output_over_residual(node.outputs[0], out_shape, res_name, node.inputs[0], True)
             if res_name else None) or b.new_tensor(node.outputs[0], out_shape, segments=True)
        y_view, y_rs = y.stream_view(), y.rs
    elif direct_output is not None:
        # The last layer writes the caller's array directly (compact), saving a copy.
        y_view, y_rs = direct_output, out_shape[3]
    else:
        # (Not for direct strided convs: they accumulate in the output before adding the
        # residual.)
        direct_only = direct_strided(geo.stride, weight,
                                     tensor_lanes(out_shape, b.interleave, b.opts), b.opts)
        position_major = any_order and _position_major_output(b, node.outputs[0])
        y = (b.output_over_residual(node.outputs[0], out_shape, res_name, node.inputs[0],
                                    position_major=position_major)
             if res_name and not direct_only else None)
        if y is None:
            y = b.new_tensor(node.outputs[0], out_shape, position_major=position_major)
        y_view, y_rs = y.stream_view(), y.rs
    # Interleaved layout: a position is `lanes` floats (one per image), so column offsets scale
    # by `lanes` and the whole batch is one stream (ConvSpec.lanes, conv_kernels.h). A planar
    # input of an interleaved output is gathered by the stride-phase split, or else relaid.
    lanes = b.vector_floats if segments else tensor_lanes(out_shape, b.interleave, b.opts)
    gather = x.lanes == 1 and lanes > 1 and reads_padded_copy(geo.stride)
    if x.lanes != lanes and not gather:
        x = b.relayout(node.inputs[0], lanes, pad)
    if not segments and _is_tiny_dense_1x1(b, node, weight, geo, x):
        _emit_tiny(b, node, weight, bias, x, res, y_view)
        return
    _emit_stream_conv(b, node, weight, bias, geo, x, res, y_view, y_rs, lanes, gather, segments)


def _position_major_conv(b: Builder, node: Node) -> bool:
    """Whether conv ``node`` runs on the strided interleaved CSR kernel (or its generated
    tiles) with its input, output and residual in place, so it can address any of them
    position-major (layout.Tensor.position_major): group 1 (a depthwise conv would read
    strided planes), CSR weights, the input interleaved like the output and padded enough, and
    not the dense tiny-plane GEMM."""
    if not (b.opts.position_major and b.interleave):
        return False
    x_name, y_name = node.inputs[0], node.outputs[0]
    x_shape, y_shape = b.shapes[x_name], b.shapes[y_name]
    weight = b.graph.constants.get(node.inputs[1])
    if weight is None or len(x_shape) != 4 or len(y_shape) != 4 or x_name in b.graph.constants:
        return False
    weight = np.asarray(weight, dtype=np.float32)
    geo = conv_geometry(node, x_shape, weight.shape)
    lanes = tensor_lanes(y_shape, b.interleave, b.opts)
    return (geo.group == 1 and lanes > 1 and lanes % VMAX == 0
            and tensor_lanes(x_shape, b.interleave, b.opts) == lanes
            and max(*geo.pad_begin, *geo.pad_end) <= b.pads.get(x_name, 0)
            and not conv_kernel_for(node, weight, geo.group, b.opts)
            and not direct_strided(geo.stride, weight, lanes, b.opts)
            and not (geo.kernel == (1, 1) and geo.stride == (1, 1)
                     and x_shape[2] * x_shape[3] * lanes <= b.opts.gemm_pixels))


def _position_major_output(b: Builder, name: str) -> bool:
    """Store activation ``name`` position-major (its producer can write it so): it is no graph
    output and every reader reads it in place in that order (OpDef.reads_position_major: convs
    that _position_major_conv admits, as input or fused residual; global pooling). Each conv
    then reads one run of C vectors per tap position instead of C streams (docs/runtime.md,
    "Position-major interleaved groups")."""
    readers = b.reader_nodes.get(name, [])

    def reads(node: Node) -> bool:
        op = get_op(node)
        return op is not None and op.reads_position_major is not None and bool(
            op.reads_position_major(b, node, name))

    return bool(readers) and name not in b.graph.output_names and all(map(reads, readers))


def _reads_position_major(b: Builder, node: Node, name: str) -> bool:
    """OpDef.reads_position_major: the input or fused residual of a conv on the strided
    interleaved CSR kernel."""
    return _position_major_conv(b, node)


def _emit_stream_conv(b: Builder, node: Node, weight: np.ndarray, bias: np.ndarray | None,
                      geo: ConvGeometry, x: Tensor, res: Tensor | None, y_view: SymView,
                      y_rs: int, lanes: int, gather: bool, segments: bool) -> None:
    """A conv on the CSR / BSR stream kernels (ConvSpec)."""
    n, c, _, _ = x.shape
    out_shape = b.shapes[node.outputs[0]]
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    (pt, pl), (pb, pr) = geo.pad_begin, geo.pad_end
    oh, ow = geo.out_hw
    cg = c // geo.group
    ic, ih, iw = np.meshgrid(np.arange(cg), np.arange(kh), np.arange(kw), indexing="ij")
    bsr = conv_kernel_for(node, weight, geo.group, b.opts)
    # Interleaved planes whose positions are whole vectors: the kernel computes only the valid
    # output positions (no border lanes) and reads taps in place at any stride (no phase split).
    strided = (not gather and not bsr and lanes > 1 and lanes % b.vector_floats == 0
               and max(pt, pl, pb, pr) <= x.pad)
    direct = not gather and not bsr and direct_strided(geo.stride, weight, lanes, b.opts)
    spec = native().ConvSpec()
    spec.lanes, spec.gather, spec.strided, spec.direct = lanes, gather, strided, direct
    spec.pad_top, spec.pad_left, spec.stride_h, spec.stride_w = pt, pl, sh, sw
    views: dict[str, Any] = {"input": x.view() if gather else x.stream_view(), "output": y_view}
    if res is not None:
        views["residual"] = res.stream_view()
        spec.has_residual = True
    # Position strides of position-major tensors (0: channel-major or planar).
    spec.in_ws = x.ws if x.position_major else 0
    spec.out_ws = y_view.position_stride
    spec.res_ws = res.ws if res is not None and res.position_major else 0
    if (spec.in_ws or spec.out_ws or spec.res_ws) and not strided:
        raise ModelLoadError(f"{node.describe()}: internal layout error (position-major)")
    if strided or direct or not reads_padded_copy(geo.stride):
        if max(pt, pl, pb, pr) > x.pad:
            raise ModelLoadError(f"{node.describe()}: internal layout error (pad)")
        taps = ic * x.cs + ih * dh * x.rs + iw * dw * x.ws
        group_stride, stream_rs = cg * x.cs, x.rs
        window_planes, reach = cg, (kh - 1) * dh * x.rs + (kw - 1) * dw * x.ws
    else:
        # Stride phases of the input, shared by every conv with this stride reading it: with the
        # layout's pads (Pt, Pl) >= this conv's, tap (kh, kw) sits at e = k*d + P - p in
        # the shared padded frame, i.e. in phase e % s at offset e // s.
        lay = b.phase_layouts[(node.inputs[0], sh, sw, lanes)]
        # Phase planes in floats: `lanes` floats per position (one super-image when interleaved).
        images, plane, row = (1, lay.plane * lanes, lay.rs * lanes) if lanes > 1 else (
            n, lay.plane, lay.rs)
        eh, ew = ih * dh + lay.pad_top - pt, iw * dw + lay.pad_left - pl
        taps = ((ic * sh * sw + (eh % sh) * sw + (ew % sw)) * plane
                + (eh // sh) * row + (ew // sw) * lanes)
        group_stride, stream_rs = cg * sh * sw * plane, row
        window_planes = cg * sh * sw
        reach = int(((eh // sh) * row + (ew // sw) * lanes).max())
        spec.phase_split = True
        # A planar Winograd conv splits its input itself, in its own padded frame.
        frame = (ih * dh, iw * dw) if lanes == 1 else (eh, ew)
        wino = _winograd_form(b, node, weight, geo, res, lanes, *_phase_taps(ic, *frame, sh, sw))
        if wino is not None and lanes == 1:
            _planar_winograd(b, node, spec, views, wino, geo, int((ih * dh).max()) // sh, n, c)
        else:
            spec.split_here = lay.buf is None
            if spec.split_here:
                lay.buf = b.new_buf(("phases", n, c, sh * sw, plane),
                                    images * c * sh * sw * plane + VMAX)
            spec.phase_rows, spec.phase_rs = lay.rows, lay.rs
            spec.phase_plane, spec.pad_top, spec.pad_left = plane, lay.pad_top, lay.pad_left
            views["scratch_origin"] = SymOffset(lay.buf)
            if wino is not None:
                spec.winograd_u, spec.winograd_tile = wino.u, wino.tile
                spec.winograd_col_off = interleaved_columns(wino, cg * sh * sw, plane, row, lanes)
                spec.winograd_in_rows, spec.winograd_in_cols = lay.rows - wino.y0, lay.rs - wino.x0
                spec.winograd_tile_step = wino.tile * lanes
                spec.winograd_stream = (4 * int(np.prod(out_shape))
                                        >= b.opts.stream_store_min_bytes)
    packed = pack_conv_weights(weight, geo.group, taps.reshape(-1).astype(np.int64), group_stride,
                               bsr, b.opts, by_offset=x.position_major)
    width = (ow // lanes if segments else ow) * lanes  # floats of an output row
    length = (oh - 1) * stream_rs + width
    # Fast (contiguous masked) stores need the output's row stride and plane slack; the
    # caller's compact output array has no slack.
    spec.fast = bool(y_view.space == ARENA and y_rs == stream_rs
                     and oh * width > b.opts.small_plane and (res is None or res.rs == stream_rs))
    spec.bsr, spec.skip_empty = bsr, bool(node.attrs.get(SKIP_EMPTY_KEY))
    spec.stream_rs, spec.stream_len, spec.width = stream_rs, length, width
    spec.ptr, spec.off, spec.val, spec.units = packed.ptr, packed.off, packed.val, packed.units
    spec.bias = (np.zeros(0, np.float32) if bias is None
                 else np.ascontiguousarray(bias, dtype=np.float32))
    # (Strided convs read none: a position-major stream is C times longer than its plane.)
    spec.mask = (np.zeros(0, np.uint32) if strided else stream_mask(length, stream_rs, width))
    spec.bounds = balanced_bounds(packed.unit_cost, b.opts.units_per_thread * b.threads
                                  if b.threads > 1 else 1)
    spec.window_planes, spec.window_reach, spec.halo = window_planes, reach, segments
    spec.act = fused_activation(node).to_native(out_shape[1])
    if GATE_KEY in node.attrs:
        views["val_origin"] = _gated_weights(b, node, packed.val, packed.val_channel)
    if strided and geo.group == 1 and not (x.position_major or spec.out_ws or spec.res_ws):
        blocks = input_channel_blocks(cg, (kh - 1) * dh + 1, (kw - 1) * dw + 1, sw, lanes,
                                      b.vector_floats, len(packed.val) / max(1, packed.units),
                                      b.opts)
        if blocks > 1:
            spec.blocks = blocks
            spec.block_ptr = channel_block_ptr(packed.ptr, packed.off, x.cs, -(-cg // blocks),
                                               blocks)
    _row_split_candidate(b, node, spec, geo, y_rs, lanes, n)
    b.emit(spec, wave_reach_rows=(kh - 1) * dh, **views)


def _phase_taps(ic: np.ndarray, eh: np.ndarray, ew: np.ndarray, sh: int, sw: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tap (flat): its phase plane (channel, row phase, column phase), and its row and
    column in that plane from the output position, for tap rows / columns ``eh`` / ``ew`` of
    a padded frame."""
    plane = ic * sh * sw + (eh % sh) * sw + ew % sw
    return plane.reshape(-1), (eh // sh).reshape(-1), (ew // sw).reshape(-1)


def _winograd_form(b: Builder, node: Node, weight: np.ndarray, geo: ConvGeometry,
                   res: Tensor | None, lanes: int, plane: np.ndarray, dy: np.ndarray,
                   dx: np.ndarray) -> WinogradWeights | None:
    """The Winograd form of a phase-split conv (tap t reads phase plane plane[t], dy[t] rows and
    dx[t] positions on), when it applies (planar, or one vector per position; group 1; no
    residual or gate) and pays (PlannerOptions.winograd_min_gain) or KERNEL_KEY forces it."""
    forced = node.attrs.get(KERNEL_KEY)
    planes = weight.shape[1] * geo.stride[0] * geo.stride[1]
    tile = PLANAR_TILE if lanes == 1 else b.opts.winograd_interleaved_tile
    if (forced in ("csr", "bsr") or lanes not in (1, b.vector_floats) or geo.group != 1
            or res is not None or GATE_KEY in node.attrs
            or (forced != "winograd" and not winograd_pays(weight, planes, b.opts, tile))):
        return None
    return winograd_weights(weight, plane, dy, dx, planes, tile)


def _planar_winograd(b: Builder, node: Node, spec: Any, views: dict[str, Any],
                     wino: WinogradWeights, geo: ConvGeometry, max_dy: int, images: int,
                     channels: int) -> None:
    """A planar Winograd conv: it splits its input into planes of its own (planar_split), in
    its own padded frame."""
    split = planar_split(wino, channels, geo.stride, geo.out_hw, max_dy, b.vector_floats)
    floats = images * channels * geo.stride[0] * split.split_w * split.plane
    buf = b.new_buf(("winograd_phases", node.name), floats + VMAX)
    spec.split_here = True
    spec.phase_rows, spec.phase_rs, spec.phase_plane = split.rows, split.rs, split.plane
    spec.pad_top, spec.pad_left = geo.pad_begin
    views["scratch_origin"] = SymOffset(buf)
    spec.winograd_u, spec.winograd_col_off = wino.u, split.col_off
    spec.winograd_split_w, spec.winograd_tile_step = split.split_w, b.vector_floats
    spec.winograd_in_rows, spec.winograd_in_cols = split.rows - wino.y0, split.rs


def _gated_weights(b: Builder, node: Node, val: np.ndarray, channel: np.ndarray) -> SymOffset:
    """Emits the ScaleWeights step that writes ``val`` times the node's input gate (per input
    channel, ``channel`` aligned with ``val``) into an arena buffer; its offset, for the conv's
    spec (runtime/passes/channel_gate.py)."""
    gate = b.view(node.attrs[GATE_KEY])
    buf = b.new_buf(("gated_weights", node.name), round_up(max(len(val), 1), VMAX))
    spec = native().ScaleWeightsSpec()
    spec.src = np.ascontiguousarray(val, np.float32)
    spec.channel = np.ascontiguousarray(channel, np.int32)
    dst = SymView(buf, ARENA, 0, (1, 1, 1, len(val)), (0, 0, 0, 1))
    b.emit(spec, gate=gate, dst=dst)
    return SymOffset(buf)


def _row_split_candidate(b: Builder, node: Node, spec: Any, geo: ConvGeometry, y_rs: int,
                         lanes: int, images: int) -> None:
    """Threads may split the output rows of big convs that can compute row ranges (ConvStep
    by_rows: interleaved strided convs; stride-1 planar CSR convs of one image reading in
    place; direct convs of one image); Builder.build_native decides."""
    in_place = not (spec.bsr or spec.gather or spec.phase_split)
    by_rows = spec.strided or (lanes == 1 and images == 1
                               and (geo.stride == (1, 1) or spec.direct))
    out_shape = b.shapes[node.outputs[0]]
    oh = geo.out_hw[0]
    units = min(oh, b.opts.units_per_thread * b.threads)
    if -(-oh // units) * units > b.opts.row_split_max_imbalance * oh:
        return  # uneven bands: one thread would wait on the other (channels split evenly)
    out_bytes = 4 * (1 if spec.out_ws else out_shape[1]) * y_rs * oh  # a position-major row
    # holds every channel
    if (b.threads > 1 and in_place and by_rows
            and out_bytes >= min(b.opts.row_split_chain_bytes, b.opts.row_split_min_bytes)):
        b.row_split_candidates[node.outputs[0]] = RowSplitCandidate(
            spec, node.inputs[0], units, out_bytes >= b.opts.row_split_min_bytes,
            geo.group == 1)


def _is_tiny_dense_1x1(b: Builder, node: Node, weight: np.ndarray, geo: ConvGeometry,
                       x: Tensor) -> bool:
    """A dense-enough 1x1 conv on a small plane: 16 output channels per vector beat streams
    that fill few lanes (and waste the border columns)."""
    return (geo.kernel == (1, 1) and geo.stride == (1, 1) and geo.group == 1
            and max(*geo.pad_begin, *geo.pad_end) == 0
            and x.shape[2] * x.shape[3] * x.lanes <= b.opts.gemm_pixels
            and KERNEL_KEY not in node.attrs
            and choose_conv_kernel(weight, 1, b.opts))


def _emit_tiny(b: Builder, node: Node, weight: np.ndarray, bias: np.ndarray | None, x: Tensor,
               res: Tensor | None, y_view: SymView) -> None:
    oc, ic = weight.shape[:2]
    padded = round_up(oc, 16)
    wt = np.zeros((padded, ic), np.float32)
    wt[:oc] = weight[:, :, 0, 0]
    wt = np.ascontiguousarray(wt.reshape(padded // 16, 16, ic).transpose(0, 2, 1))  # [blk][ic][16]
    bias16 = np.zeros(padded, np.float32)
    if bias is not None:
        bias16[:oc] = bias
    units = b.opts.units_per_thread * b.threads if b.threads > 1 else 1
    spec = native().TinyConvSpec()
    spec.wt, spec.bias, spec.wt_stride = wt, bias16, padded
    spec.bounds = balanced_bounds(np.ones(padded // 16), units)
    spec.act = fused_activation(node).to_native(oc)
    views: dict[str, Any] = {"input": x.stream_view(), "output": y_view}
    if GATE_KEY in node.attrs:  # wt[block][c][16]: input channel c of every stored weight
        channel = np.broadcast_to(np.arange(ic)[None, :, None], (padded // 16, ic, 16))
        views["wt_origin"] = _gated_weights(b, node, wt.reshape(-1), channel.reshape(-1))
    if res is not None:
        views["residual"] = res.stream_view()
        spec.has_residual = True
    b.emit(spec, **views)


def _segment_conv(b: Builder, node: Node, geo: ConvGeometry, weight: np.ndarray) -> bool:
    """True when this conv of a one-thread batch-1 plan runs on column segments
    (layout.segment_tensor): it can (_segments_fit), and its input is on segments already or
    its output feeds a conv that can too (a lone segment conv would pay a layout copy in and out).

    One thread only: the halo vectors make a segment tensor 2-3x the bytes of the planar one, and
    with 2 threads half of every input crosses between the cores (ResNet-20x2 90%, batch 1: 1
    thread 0.556 -> 0.533 ms, 2 threads 0.423 -> 0.514 ms; 0.487 with threads splitting rows)."""
    if not b.opts.segment_layout or b.threads != 1 or not _segments_fit(b, node, geo, weight):
        return False
    x = b.tensors.get(node.inputs[0])
    if x is not None and x.segments:
        return True
    for reader in b.graph.nodes:
        if reader.op == "Conv" and reader.inputs[0] == node.outputs[0]:
            w = np.asarray(b.graph.constants.get(reader.inputs[1], np.zeros(0)), np.float32)
            if w.ndim == 4 and _segments_fit(
                    b, reader, conv_geometry(reader, b.shapes[reader.inputs[0]], w.shape), w):
                return True
    return False


def _segments_fit(b: Builder, node: Node, geo: ConvGeometry, weight: np.ndarray) -> bool:
    """A CSR conv of one image, group 1, no dilation, whose input and output rows both cut
    into segments with the stride between them (1 or 2 across), and whose taps reach at most one
    position past a segment (the halos)."""
    x_name, y_name = node.inputs[0], node.outputs[0]
    x_shape, y_shape = b.shapes[x_name], b.shapes[y_name]
    if (b.interleave or len(x_shape) != 4 or x_shape[0] != 1 or x_name in b.graph.constants
            or b.output_slot(y_name) is not None or geo.group != 1 or geo.dilation != (1, 1)
            or conv_kernel_for(node, weight, geo.group, b.opts)):
        return False
    (_, kw), (_, sw) = geo.kernel, geo.stride
    (_, left), (_, right) = geo.pad_begin, geo.pad_end
    inner = segment_positions(x_shape[3], b.vector_floats)
    outer = segment_positions(y_shape[3], b.vector_floats)
    return (inner > 0 and outer > 0 and inner == sw * outer and max(left, right) <= 1
            and sw * (outer - 1) + kw - 1 - left <= inner)


register(OpDef("Conv", _infer, _evaluate, _emit, _native, _macs, inputs=(2, 3),
               reads_position_major=_reads_position_major))
