// Dense 1x1 convolution on small planes (<= 64 pixels) as a GEMM vectorised over output
// channels (one ISA variant per compilation).
//
// A 2x2 plane fills only 4 lanes of a 16-float vector in the stream kernels; here a vector holds
// 16 output channels instead:  Y[oc][p] = bias[oc] + sum_ic WT[ic][oc] * X[ic][p].
// Loop structure, for blocks of 16 output channels [b0, b1):
//   for each group of positions (16 / (16 / V) accumulators of 16 / V vectors each):
//     acc[p][k] = 0
//     for ic:  w[k] = WT[blk][ic][k*V ...];  acc[p][k] += w[k] * broadcast(X[ic][p])
//     epilogue: + bias, (+ residual), clamp, scatter the 16 channels of each position
// Reference: runtime/ops/conv.py (NumPy; 1x1, stride 1, no padding).
#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

constexpr int kVecs = 16 / V;       // vectors per block of 16 channels
constexpr int kGroup = 16 / kVecs;  // positions per pass: 16 accumulators in total

template <int PG>
static inline void tiny_block(const TinyGemmArgs& g, int64_t blk, int64_t p0) {
  vf acc[PG][kVecs];
#pragma GCC unroll 16
  for (int p = 0; p < PG; ++p)
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) acc[p][k] = simd::splat(0.0f);
  const int64_t oc0 = blk * 16;
  const float* w = g.wt + blk * g.in_channels * 16;  // block-major: [blk][ic][16]
  // Input offset of each position (planes may have a border: row stride x_rs).
  int64_t xo[PG];
#pragma GCC unroll 16
  for (int p = 0; p < PG; ++p) {
    const int64_t pos = p0 + p, oh = pos / g.width;
    xo[p] = oh * g.x_rs + (pos - oh * g.width);
  }
  const float* x = g.x;
  for (int64_t ic = 0; ic < g.in_channels; ++ic) {
    vf wk[kVecs];
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) wk[k] = simd::loadu(w + ic * 16 + k * V);
#pragma GCC unroll 16
    for (int p = 0; p < PG; ++p) {
      const vf xs = simd::splat(x[ic * g.x_cs + xo[p]]);
#pragma GCC unroll 16
      for (int k = 0; k < kVecs; ++k) acc[p][k] += wk[k] * xs;
    }
  }
  alignas(64) float lanes[16];
#pragma GCC unroll 16
  for (int p = 0; p < PG; ++p) {
#pragma GCC unroll 16
    for (int k = 0; k < kVecs; ++k) simd::storeu(lanes + k * V, acc[p][k] + simd::loadu(g.bias + oc0 + k * V));
    const int64_t pos = p0 + p, oh = pos / g.width, ow = pos - oh * g.width;
    const int64_t n = g.out_channels - oc0 < 16 ? g.out_channels - oc0 : 16;
    for (int64_t l = 0; l < n; ++l) {
      float v = lanes[l];
      if (g.res) v += g.res[(oc0 + l) * g.res_cs + oh * g.res_rs + ow];
      g.out[(oc0 + l) * g.out_cs + oh * g.out_rs + ow] = g.act.apply(v, oc0 + l);
    }
  }
}

// All positions of a group in one pass, so each weight column is streamed once per group.
static inline void tiny_group(const TinyGemmArgs& g, int64_t blk, int64_t p0, int64_t count) {
  switch (count) {
    case 1: tiny_block<1>(g, blk, p0); break;
    case 2: tiny_block<2>(g, blk, p0); break;
    case 3: tiny_block<3>(g, blk, p0); break;
    case 4: tiny_block<4>(g, blk, p0); break;
#if FD_VLEN >= 8
    case 5: tiny_block<5>(g, blk, p0); break;
    case 6: tiny_block<6>(g, blk, p0); break;
    case 7: tiny_block<7>(g, blk, p0); break;
    case 8: tiny_block<8>(g, blk, p0); break;
#endif
#if FD_VLEN >= 16
    case 9: tiny_block<9>(g, blk, p0); break;
    case 10: tiny_block<10>(g, blk, p0); break;
    case 11: tiny_block<11>(g, blk, p0); break;
    case 12: tiny_block<12>(g, blk, p0); break;
    case 13: tiny_block<13>(g, blk, p0); break;
    case 14: tiny_block<14>(g, blk, p0); break;
    case 15: tiny_block<15>(g, blk, p0); break;
    case 16: tiny_block<16>(g, blk, p0); break;
#endif
    default: break;
  }
}

void conv_tiny(const TinyGemmArgs& g, int64_t b0, int64_t b1) {
  for (int64_t blk = b0; blk < b1; ++blk) {
    for (int64_t p = 0; p < g.positions; p += kGroup) {
      tiny_group(g, blk, p, g.positions - p < kGroup ? g.positions - p : kGroup);
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
