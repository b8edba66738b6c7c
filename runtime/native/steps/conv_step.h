// Conv step specs (bound to Python as runtime._native.ConvSpec / TinyConvSpec /
// SegmentCopySpec; the planner in runtime/planner/ and runtime/ops/conv.py fills them in).
#pragma once

#include <vector>

#include "common.h"

namespace fd {

struct ConvSpec {
  View input, output, residual;
  bool has_residual = false;
  // Floats per input/output position: 1 for planar NCHW; the batch size when the batch is
  // interleaved (then input/output/residual are one "image" whose rows hold W * lanes floats).
  int64_t lanes = 1;
  // Stride > 1 with lanes > 1 and a planar input (input = N planar images): the phase split
  // gathers the images into interleaved phase planes (the planar -> interleaved switch of a plan).
  bool gather = false;
  // Interleaved planes of whole vectors: only valid positions, taps read in place at any
  // stride, no phase split (conv_csr_strided); stride_h/stride_w give the steps.
  bool strided = false;
  // Strided convs: floats from one position to the next of the input, output and residual
  // (0: `lanes`, the channel-major layout, a plane of positions per channel). A position-major
  // tensor keeps a position's channels together: C * lanes (runtime/planner/layout.py); its view
  // here is still the channel-major stream shape (1, C, H, W * lanes) with these strides applied.
  int64_t in_ws = 0, out_ws = 0, res_ws = 0;
  // Stride > 1, planar, very few taps per output (PlannerOptions.direct_max_taps): computed
  // straight from the padded input, no phase split (the split would cost more than the taps).
  bool direct = false;
  bool bsr = false;         // kernel family: false = CSR, true = BSR (dense = all blocks)
  bool skip_empty = false;  // CSR: skip output channels without taps (ConvKernelArgs)
  // Stream geometry (see kernels/conv_kernels.h).
  int64_t stream_rs = 0, stream_len = 0, width = 0;
  bool fast = false;
  // Stride-1 input: the stream origin is the input origin shifted up-left by the padding.
  int64_t pad_top = 0, pad_left = 0;
  // Stride > 1: the input is first split into stride phases in an arena scratch area.
  bool phase_split = false;  // the input is read from stride-phase planes in the arena
  bool split_here = false;   // and this step writes them (the first conv sharing them)
  int64_t stride_h = 1, stride_w = 1;
  int64_t phase_rows = 0, phase_rs = 0, phase_plane = 0, scratch_origin = 0;
  std::vector<int32_t> ptr, off;
  // > 1 (strided interleaved CSR only): input-channel blocks, see ConvKernelArgs::blocks.
  int64_t blocks = 1;
  std::vector<int32_t> block_ptr;
  std::vector<float> val, bias;
  // >= 0: the weights the kernels read are `val` scaled per input channel by a run-time gate,
  // written to the arena at this offset by a ScaleWeights step before this one (a squeeze-and-
  // excitation gate folded into the conv reading the gated tensor; runtime/passes/channel_gate.py).
  int64_t val_origin = -1;
  std::vector<uint32_t> mask;
  // Non-empty: the conv runs as Winograd F(m x m, 4x4) over its phase planes (kernels/
  // conv_winograd.cpp, WinogradArgs): batch-interleaved planes of one vector per position
  // (shared with the other convs of this stride), or planar ones this step splits by
  // winograd_split_w columns (3 x stride_w) for itself; threads split tile rows, no residual.
  // The CSR / BSR fields stay valid and unused.
  std::vector<float> winograd_u;
  std::vector<int64_t> winograd_col_off;  // [planes][winograd_tile + 3]
  int64_t winograd_tile = 3;  // output tile side: 3 (any layout) or 5 (interleaved; winograd.h)
  int64_t winograd_in_rows = 0, winograd_in_cols = 0, winograd_tile_step = 0;
  int64_t winograd_split_w = 0;  // > 0: the phase planes' column stride, else stride_w
  bool winograd_stream = false;  // WinogradArgs::stream, where the output is vector-aligned
  // Empty, or a max pool over the conv's activated outputs done in the same step (batch-
  // interleaved Winograd; runtime/ops/pool.py): {kernel h, w, stride h, w, pad top, left, the
  // conv's output rows, columns}. `output` is then the pool's output; the conv's is never
  // stored.
  std::vector<int64_t> winograd_pool;
  // Work split: units (channels for CSR, blocks for BSR) [bounds[t], bounds[t+1]) for thread t,
  // balanced by nonzeros in Python.
  std::vector<int64_t> bounds;
  int64_t units = 0;
  // > 0: threads split the output rows into this many bands instead (every channel of a band;
  // convs that can compute row ranges, ConvStep::by_rows): a thread then reads mostly rows its
  // own core wrote one layer earlier.
  int64_t row_units = 0;
  int64_t window_planes = 0, window_reach = 0;
  bool halo = false;  // strided only: see ConvKernelArgs::halo
  ActivationSpec act;
  WaveInfo wave;      // strided, or planar stride 1 by vectors: row wavefront membership
};

// Dense 1x1 conv on tiny compact planes (kernels/conv_tiny.cpp): one unit per range of
// 16-channel blocks.
struct TinyConvSpec {
  View input, output, residual;
  bool has_residual = false;
  std::vector<float> wt, bias;  // [wt_stride / 16][in_channels][16], [wt_stride]
  int64_t wt_stride = 0;
  int64_t wt_origin = -1;       // >= 0: gated weights in the arena (ConvSpec::val_origin)
  std::vector<int64_t> bounds;  // block ranges
  ActivationSpec act;
};

// One image, planar NCHW view <-> column-segment stream view (runtime/planner/layout.py
// segment_tensor; the halos are written on the way in).
struct SegmentCopySpec {
  View planar, segments;
  bool to_segments = true;
};

}  // namespace fd
