// Block-sparse (and dense) direct convolution: blocks of kBsrBlock output channels x one tap.
//
// Loop structure, for one image and channel blocks [c0, c1):
//   for each window of the stream (its input over all planes sized to stay in L2):
//   for blk in [c0, c1):                       (kBsrBlock = 4 consecutive output channels)
//     for each chunk of U vectors of the window:
//       acc[r][u] = bias[r]                    (4 x U accumulators in registers)
//       for j in taps(blk):                    (union of the block's nonzero taps)
//         x[u] = in[off[j] + chunk + u*V]      (one load feeds 4 FMAs: the point of blocking)
//         acc[r][u] += val[j*4 + r] * x[u]
//       epilogue(acc[r]) for each real channel r
// A dense layer is the special case where every tap of every block is stored.
// Reference: runtime/kernels/reference.py (conv2d).
#include "conv_epilogue.h"

namespace fd {
namespace FD_NS {

constexpr int R = kBsrBlock;

// Block blk's accumulators start at its channels' biases. Padding channels of the last block
// (oc >= channels) have no bias and are not stored.
template <int U>
__attribute__((always_inline)) static inline void block_bias(const ConvKernelArgs& a, int64_t blk,
                                                             vf (&acc)[R][U]) {
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const vf b = blk * R + r < a.channels ? bias_splat(a, blk * R + r) : simd::splat(0.0f);
    #pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[r][u] = b;
  }
}

// The fused epilogue of block blk's real channels.
template <int U, bool FAST>
__attribute__((always_inline)) static inline void block_epilogue(const ConvKernelArgs& a,
                                                                 int64_t blk, int64_t p0,
                                                                 const vf (&acc)[R][U]) {
  #pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    const int64_t oc = blk * R + r;
    if (oc < a.channels) conv_epilogue<U, FAST>(a, oc, p0, acc[r]);
  }
}

template <int U, bool FAST>
static inline void bsr_chunk(const ConvKernelArgs& a, int64_t blk, int64_t p0) {
  vf acc[R][U];
  block_bias<U>(a, blk, acc);
  const float* base = a.in + p0;
  for (int32_t j = a.ptr[blk], e = a.ptr[blk + 1]; j < e; ++j) {
    const float* src = base + a.off[j];
    vf x[U];
    #pragma GCC unroll 16
    for (int u = 0; u < U; ++u) x[u] = simd::loadu(src + u * V);
    const float* w = a.val + static_cast<int64_t>(j) * R;
    #pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vf wr = simd::splat(w[r]);
      #pragma GCC unroll 16
      for (int u = 0; u < U; ++u) acc[r][u] += wr * x[u];
    }
  }
  block_epilogue<U, FAST>(a, blk, p0, acc);
}

// Kernel-row runs (ConvKernelArgs::row_taps == 3): every block's taps come in runs of 3 whose
// inputs are one vector apart (the kernel columns of an interleaved stride-1 conv), so the U + 2
// input vectors of a run feed all 3 taps: 3 x R x U FMAs per U + 2 input loads, where the plain
// chunk loads U inputs per R x U FMAs (ResNet-20x2's dense stem, 16 images: 67 -> 77 GMAC/s).
template <int U, bool FAST>
static inline void bsr_chunk_rows(const ConvKernelArgs& a, int64_t blk, int64_t p0) {
  vf acc[R][U];
  block_bias<U>(a, blk, acc);
  const float* base = a.in + p0;
  for (int32_t j = a.ptr[blk], e = a.ptr[blk + 1]; j < e; j += 3) {
    const float* src = base + a.off[j];
    vf x[U + 2];
    #pragma GCC unroll 16
    for (int u = 0; u < U + 2; ++u) x[u] = simd::loadu(src + u * V);
    const float* w = a.val + static_cast<int64_t>(j) * R;
    #pragma GCC unroll 3
    for (int k = 0; k < 3; ++k) {
      #pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const vf wr = simd::splat(w[k * R + r]);
        #pragma GCC unroll 16
        for (int u = 0; u < U; ++u) acc[r][u] += wr * x[u + k];
      }
    }
  }
  block_epilogue<U, FAST>(a, blk, p0, acc);
}

constexpr int kChunk = 4;

template <bool FAST>
static inline void bsr_tail(const ConvKernelArgs& a, int64_t blk, int64_t p0, int64_t nvec) {
  switch (nvec) {
    case 1: bsr_chunk<1, FAST>(a, blk, p0); break;
    case 2: bsr_chunk<2, FAST>(a, blk, p0); break;
    case 3: bsr_chunk<3, FAST>(a, blk, p0); break;
    default: break;
  }
}

// Vectors per window: the input one window reads from every input plane should stay in L2
// while all blocks of the range sweep over it.
static int64_t window_vectors(const ConvKernelArgs& a, int64_t nvec) {
  constexpr int64_t kL2Floats = 128 * 1024;  // 512 KB: a fraction of a 1-2 MB L2
  const int64_t planes = a.window_planes > 0 ? a.window_planes : 1;
  int64_t n = nvec;
  while (n > 4 * kChunk && planes * (n * V + a.window_reach) > kL2Floats) n = (n + 1) / 2;
  return (n + kChunk - 1) / kChunk * kChunk;
}

template <bool FAST>
static void bsr_blocks(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t nvec = (a.len + V - 1) / V;
  const int64_t window = window_vectors(a, nvec);
  for (int64_t w0 = 0; w0 < nvec; w0 += window) {
    const int64_t w1 = w0 + window < nvec ? w0 + window : nvec;
    for (int64_t blk = c0; blk < c1; ++blk) {
      int64_t v = w0;
      if (a.row_taps == 3) {
        for (; v + kChunk <= w1; v += kChunk) bsr_chunk_rows<kChunk, FAST>(a, blk, v * V);
      }
      for (; v + kChunk <= w1; v += kChunk) bsr_chunk<kChunk, FAST>(a, blk, v * V);
      if (v < w1) bsr_tail<FAST>(a, blk, v * V, w1 - v);
    }
  }
}

void conv_bsr(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  for (int64_t g = 0; g < a.images; ++g) {
    ConvKernelArgs one = a;
    one.in = a.in + g * a.in_is;
    one.out = a.out + g * a.out_is;
    one.res = a.res ? a.res + g * a.res_is : nullptr;
    one.images = 1;
    if (a.fast) {
      bsr_blocks<true>(one, c0, c1);
    } else {
      bsr_blocks<false>(one, c0, c1);
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
