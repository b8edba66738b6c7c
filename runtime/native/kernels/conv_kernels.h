// Direct convolution kernels on a "stream" of output positions, compiled once per ISA.
//
// Geometry (docs/performance.md, "what made it fast"): the input of one image is a set of zero-padded
// planes with row stride `rs` (for stride > 1 the planes are the stride phases of the padded input).
// The output plane of channel oc is computed as one contiguous stream of positions
//     p = oh * rs + ow,   p in [0, len),   len = (OH - 1) * rs + OW,
// and the tap (ic, kh, kw) of a weight reads the input stream shifted by a precomputed offset:
//     out[oc][p] += w * in[off(ic, kh, kw) + p].
// Positions with ow >= OW are "garbage" lanes: computed, then dropped by the epilogue. No im2col.
//
// Epilogue (fused): + bias[oc], + residual, activation (activation.h), store. When the output (and
// residual) planes share the stream's row stride ("fast" layout), the store is contiguous and the
// garbage lanes are zeroed with a mask, which keeps the destination's zero border intact.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "activation.h"
#include "tunables.h"

namespace fd {

struct ConvKernelArgs {
  const float* in = nullptr;   // stream origin of the image's input planes (offsets are relative)
  float* out = nullptr;        // output origin of (image, channel 0)
  const float* res = nullptr;  // residual origin of (image, channel 0), or null
  int64_t out_cs = 0, out_rs = 0, res_cs = 0, res_rs = 0;
  int64_t len = 0;             // stream length (OH - 1) * rs + OW
  int64_t rs = 0;              // stream row stride
  int64_t width = 0;           // valid output width OW
  bool fast = false;           // out_rs == rs and (no residual or res_rs == rs)
  const uint32_t* mask = nullptr;  // per stream position: all ones if valid, else 0
  const float* bias = nullptr;     // per output channel
  Activation act;
  const int32_t* ptr = nullptr;    // CSR: per output channel; BSR: per block of `block` channels
  const int32_t* off = nullptr;    // input offset of each stored tap
  const float* val = nullptr;      // CSR: one weight per tap; BSR: `block` weights per tap
  int block = 1;
  // BSR: 3 when every block's taps come in runs of 3 whose input offsets are V floats apart
  // (conv_bsr.cpp bsr_chunk_rows), else 1.
  int row_taps = 1;
  int64_t images = 1;              // images in this call, at these strides (floats):
  int64_t in_is = 0, out_is = 0, res_is = 0;
  int64_t window_planes = 0;       // input planes the taps read (C, or C * phases)
  int64_t window_reach = 0;        // largest tap offset within a plane (stream floats)
  int64_t channels = 0;            // number of real output channels
  // conv_csr_strided only (batch-interleaved planes, lanes % V == 0, any stride): output rows
  // and positions per row, and the input floats between output rows / output positions.
  int64_t rows = 0, positions = 0, in_row_step = 0, in_pos_step = 0, lanes = 1;
  // Floats between consecutive output / residual positions (`lanes` when channel-major).
  int64_t out_pos_step = 0, res_pos_step = 0;
  // conv_csr_strided: > 1 input-channel blocks. Each chunk then runs block by block (every
  // channel pair sweeps one block's input window, small enough for L1, before the next block),
  // keeping partial sums in a per-thread scratch; block_ptr[oc * (blocks + 1) + b] is where
  // channel oc's taps of block b start (taps are sorted by input channel).
  int64_t blocks = 1;
  const int32_t* block_ptr = nullptr;
  // conv_csr_strided with a column-segment output (one image; lane i of a position holds
  // column i * positions + p of the row, runtime/planner/layout.py segment_tensor): after each output row the
  // epilogue also writes the row's halo positions -1 and `positions`, lane-shifted copies of
  // its last and first positions (the neighbouring segments' edge columns; 0 at the image's
  // edges), which stride-1 taps of the next conv read. Chunks then cover whole rows.
  bool halo = false;
  // Output channels without taps are constants nobody reads (passes.fold_constant_channels):
  // CSR kernels skip them, leaving their planes unwritten.
  bool skip_empty = false;
};

// True when the CSR kernels skip output channel oc (see ConvKernelArgs::skip_empty).
inline bool skipped(const ConvKernelArgs& a, int64_t oc) {
  return a.skip_empty && a.ptr[oc] == a.ptr[oc + 1];
}

// Geometry of a stride-phase split (phase_split.cpp): one input plane -> sh * sw phase planes.
struct PhaseSplitArgs {
  int64_t H = 0, W = 0, src_rs = 0;      // input plane (H, W positions; src_rs in floats)
  int64_t sh = 1, sw = 1, pad_top = 0, pad_left = 0;
  int64_t rows = 0, rs = 0, plane = 0;   // each phase plane (rs in positions, plane in floats)
  int64_t lanes = 1;                      // floats per position (batch-interleaved layout)
  int64_t gather_stride = 0;  // > 0: the source is `lanes` planar images this far apart
};
using PhaseSplitFn = void (*)(const PhaseSplitArgs&, const float* src, float* dst);

// One image row between planar and the column-segment layout (segments.cpp, runtime/planner/layout.py
// _segment_tensor: P positions of V lanes, lane i of position p holding column i * P + p). The
// segment-side pointer is position 0; to_segments also writes the halo positions -1 and P.
using SegmentRowFn = void (*)(const float* src, float* dst, int64_t P);
// dst[x * pos_stride + n] = src[n * image_stride + x] for x < W, n < images (kernels/segments.cpp).
using InterleaveImagesFn = void (*)(const float* src, int64_t image_stride, int64_t images,
                                    float* dst, int64_t pos_stride, int64_t W);

// A dense conv as Winograd F(3x3, 4x4) over stride-phase planes (conv_winograd.cpp,
// winograd.h), output tile rows [t0, t1). A vector holds one tile position of either V images
// (batch-interleaved: a position is one vector) or V tiles side by side (planar: the planes are
// split by 3 x the conv's column stride, so the V tiles' columns are adjacent floats).
struct WinogradArgs {
  const float* in = nullptr;        // phase planes of one image (group)
  int64_t tile = 3;                 // output tile side (winograd.h F3 or F5; planar: 3)
  const int64_t* col_off = nullptr;  // [planes][tile + 3]: floats from `in` to window column j
  int64_t planes = 0;               // input planes (channels x stride phases)
  int64_t in_rs = 0;                // floats between input rows
  int64_t in_rows = 0;              // rows readable from a window origin (0 beyond)
  int64_t in_cols = 0;              // interleaved: positions readable (0 beyond)
  int64_t tile_step = 0;            // floats between tile vectors of a row
  bool planar = false;              // V tiles per vector (else V images)
  const float* u = nullptr;         // transformed weights [blocks][points][planes][kBlock]
  int64_t channels = 0;             // output channels
  const float* bias = nullptr;      // per output channel, or null
  float* out = nullptr;             // output (channel 0, position 0)
  int64_t out_cs = 0, out_rs = 0;
  int64_t rows = 0, cols = 0;       // output positions
  // Non-temporal stores (out, out_cs and out_rs aligned to vectors): an output far larger than
  // the caches, which the next step reads back from memory anyway (ConvSpec::winograd_stream).
  bool stream = false;
  Activation act;
  // Output channel blocks (winograd.h kBlock) [block0, block1); block1 < 0: all.
  int64_t block0 = 0, block1 = -1;
  // Max pool fused: `out` (out_cs, out_rs) is the pool's output of pool_rows x pool_cols
  // positions; rows x cols are the conv's. Its windows: kernel, stride and top / left pads.
  bool pooled = false;
  int64_t pool_kh = 1, pool_kw = 1, pool_sh = 1, pool_sw = 1, pool_pt = 0, pool_pl = 0;
  int64_t pool_rows = 0, pool_cols = 0;
};
using WinogradFn = void (*)(const WinogradArgs&, int64_t t0, int64_t t1);
// The largest fused pool window side (WinogradArgs::pooled; kernel-side arrays are sized by it).
constexpr int64_t kMaxPoolKernel = 5;

// Dense 1x1 conv on a small plane (conv_tiny.cpp), vectorised over output channels.
struct TinyGemmArgs {
  const float* x = nullptr;     // input (channel 0, position 0)
  int64_t x_cs = 0, x_rs = 0, in_channels = 0, positions = 0, width = 0;
  const float* wt = nullptr;    // [wt_stride / 16][in_channels][16] weights, block-major
  int64_t wt_stride = 0, out_channels = 0;
  const float* bias = nullptr;  // 16-padded
  float* out = nullptr;
  int64_t out_cs = 0, out_rs = 0;
  const float* res = nullptr;
  int64_t res_cs = 0, res_rs = 0;
  Activation act;
};
using TinyGemmFn = void (*)(const TinyGemmArgs&, int64_t b0, int64_t b1);

// Y = alpha * A @ B (+ beta * C) with contiguous rows of A and columns of B (gemm_dot.cpp).
struct GemmDotArgs {
  const float* A = nullptr;
  int64_t am = 0;               // row stride of A (floats; columns are adjacent)
  const float* B = nullptr;
  int64_t bn = 0;               // column stride of B (floats; rows are adjacent)
  const float* C = nullptr;     // optional, strides may be 0 (broadcast)
  int64_t cm = 0, cn = 0;
  float* Y = nullptr;
  int64_t ym = 0, yn = 0;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.0f, beta = 0.0f;
};
using GemmDotFn = void (*)(const GemmDotArgs&, int64_t n0, int64_t n1);  // columns

// One output row of a MaxPool / AveragePool (pool2d.cpp): positions of E contiguous floats.
struct PoolRowArgs {
  int64_t H = 0, W = 0, src_rs = 0;      // input plane; row stride in floats
  int64_t OW = 0, dst_ws = 0;            // output columns; output position stride in floats
  int64_t E = 1;                         // floats per position (batch-interleaved: images)
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1, pt = 0, pl = 0;
  bool is_max = true, include_pad = false;
  const int64_t* row_count = nullptr;    // count_include_pad: padded-extent taps per output row
  const float* col_count = nullptr;      // taps per output column (inside, or padded extent)
};
// Planar rows (E = 1) combine a padded input row first: its floats, a multiple of any vector
// width with a vector of slack for the kw taps read past the last picked column.
inline int64_t pool_row_width(const PoolRowArgs& a) {
  constexpr int64_t v = kMaxVectorFloats;
  const int64_t picked = (a.OW - 1) * a.sw + 1;
  const int64_t reach = picked + v + (a.kw - 1) * a.dw;
  const int64_t width = std::max(reach, a.pl + a.W);
  return (width + v - 1) / v * v + v;
}
// acc: scratch of pool_row_scratch(a) floats.
inline int64_t pool_row_scratch(const PoolRowArgs& a) {
  return a.E == 1 ? 2 * pool_row_width(a) : a.OW * a.E;
}
using PoolRowFn = void (*)(const PoolRowArgs& a, const float* plane, float* out, int64_t oh,
                           float* acc);

// Sum (or max, NaN winning) of an H x W plane with contiguous rows of stride rs (pool2d.cpp).
using ReducePlaneFn = float (*)(const float* x, int64_t H, int64_t W, int64_t rs, bool is_max);

// Activations after a store (activation.cpp): `count` vectors `stride` floats apart, vector i of
// channel channel0 + i * channel_step; `mask` (may be null) is per-float lane masks of a
// contiguous span (stride V): masked-out lanes stay 0.
using ActivateVectorsFn = void (*)(float* p, int64_t count, int64_t stride, const uint32_t* mask,
                                   const Activation& act, int64_t channel0,
                                   int64_t channel_step);
// dst[i] = act(src[i]) for i < n (src may equal dst), all of channel `channel`.
using ActivateRowFn = void (*)(const float* src, float* dst, int64_t n, const Activation& act,
                               int64_t channel);

// Signatures every ISA variant provides: compute output channels [c0, c1) (CSR) or blocks [c0, c1)
// (BSR) of `images` images.
using ConvKernelFn = void (*)(const ConvKernelArgs&, int64_t c0, int64_t c1);

#define FD_DECLARE_ISA(ns)                                               \
  namespace ns {                                                         \
  void conv_csr(const ConvKernelArgs& a, int64_t c0, int64_t c1);        \
  void conv_bsr(const ConvKernelArgs& a, int64_t c0, int64_t c1);        \
  void conv_csr_strided(const ConvKernelArgs& a, int64_t c0, int64_t c1); \
  void conv_direct(const ConvKernelArgs& a, int64_t c0, int64_t c1);     \
  void conv_winograd(const WinogradArgs& a, int64_t t0, int64_t t1);      \
  void split_plane(const PhaseSplitArgs& s, const float* src, float* dst); \
  void to_segments(const float* row, float* seg, int64_t P);              \
  void from_segments(const float* seg, float* row, int64_t P);            \
  void interleave_images(const float* src, int64_t image_stride, int64_t images, float* dst, \
                         int64_t pos_stride, int64_t W);                 \
  void conv_tiny(const TinyGemmArgs& g, int64_t b0, int64_t b1);          \
  void gemm_dot(const GemmDotArgs& g, int64_t n0, int64_t n1);            \
  void activate_vectors(float* p, int64_t count, int64_t stride, const uint32_t* mask, \
                        const Activation& act, int64_t channel0, int64_t channel_step); \
  void activate_row(const float* src, float* dst, int64_t n, const Activation& act, \
                    int64_t channel);                                    \
  void pool_row(const PoolRowArgs& a, const float* plane, float* out, int64_t oh, \
                float* acc);                                             \
  float reduce_plane(const float* x, int64_t H, int64_t W, int64_t rs, bool is_max); \
  int vector_floats();                                                   \
  }

FD_DECLARE_ISA(isa_generic)
#if defined(__x86_64__) || defined(_M_X64)
FD_DECLARE_ISA(isa_avx2)
FD_DECLARE_ISA(isa_avx512)
#endif

struct KernelTable {
  ConvKernelFn conv_csr;
  ConvKernelFn conv_bsr;
  ConvKernelFn conv_csr_strided;
  ConvKernelFn conv_direct;  // planar, few taps: rows, positions, in_row_step, in_pos_step
  WinogradFn conv_winograd;
  PhaseSplitFn split_plane;
  SegmentRowFn to_segments, from_segments;
  InterleaveImagesFn interleave_images;
  TinyGemmFn conv_tiny;
  GemmDotFn gemm_dot;
  ActivateVectorsFn activate_vectors;
  ActivateRowFn activate_row;
  PoolRowFn pool_row;
  ReducePlaneFn reduce_plane;
  const char* isa;
  int vector_floats;
};

// The variant named `isa` ("auto": the widest this CPU runs; "generic", "avx2", "avx512");
// std::invalid_argument for an unknown name or one this CPU lacks (exec/isa.cpp).
KernelTable kernels_for(const std::string& isa);

}  // namespace fd
