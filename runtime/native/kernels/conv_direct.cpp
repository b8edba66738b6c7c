// Direct strided convolution for convs with few taps per output channel (one ISA variant per
// compilation): a depthwise conv has at most 9 (fewer when pruned), so splitting its input into
// stride phases would move more memory than the taps compute (PlannerOptions.direct_max_taps).
//
// Loop structure, per image and output channel [c0, c1), per output row, per block of U output
// vectors (U = 4, then the 1 to 4 left, the last one partial):
//   acc[u] = bias; for each tap j: acc[u] += w_j * in[off_j + oh * row_step + ow * sw]
// with the accumulators in registers (stride 2: each tap's inputs are a de-interleaved pair of
// loads), stored into a row of L1 scratch; then residual, activation (the shared vector
// formulas), store. Strides other than 1 and 2 add each tap's row into the scratch in turn.
// Reference: runtime/kernels/reference.py (conv2d).
#include <algorithm>
#include <vector>

#include "activation_simd.h"
#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

namespace {

// The first n floats at p (all V when n >= V), 0 in the other lanes; reads nothing past p + n.
inline vf load_upto(const float* p, int64_t n) {
  if (n >= V) return simd::loadu(p);
  return n > 0 ? simd::load_partial(p, n, 0.0f) : simd::splat(0.0f);
}

// src[i * SW] for i < n (n <= V; lanes past n are 0 when partial), reading nothing past
// src[(n - 1) * SW] when partial; a whole vector of stride 2 reads src[2V - 1] too.
template <int SW, bool PARTIAL>
inline vf tap_inputs(const float* src, int64_t n) {
  static_assert(SW == 1 || SW == 2, "strides 1 and 2 only");
#if defined(FD_HAS_SHUFFLEVECTOR)
  if constexpr (SW == 2) {
    const int64_t reach = PARTIAL ? 2 * n - 1 : 2 * V;
    vf even, odd;
    simd::deinterleave(load_upto(src, reach), load_upto(src + V, reach - V), &even, &odd);
    return even;
  }
#endif
  return PARTIAL ? load_upto(src, n) : simd::loadu(src);
}

// acc[0 .. U * V) of one output row: bias plus every tap, in registers. With LAST_PARTIAL the
// last vector loads only the inputs of its first n outputs (1 <= n <= V). Taps alternate
// between two sets of accumulators, so even one vector keeps two FMA chains in flight.
template <int SW, int U, bool LAST_PARTIAL>
__attribute__((always_inline)) inline void row_block(const ConvKernelArgs& a, int64_t oc,
                                                     const float* in_row, float bias, float* acc,
                                                     int64_t n) {
  vf even[U], odd[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    even[u] = simd::splat(bias);
    odd[u] = simd::splat(0.0f);
  }
  const auto add_tap = [&](vf (&sum)[U], int32_t j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = in_row + a.off[j];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const float* from = src + u * V * SW;
      sum[u] += w * (LAST_PARTIAL && u == U - 1 ? tap_inputs<SW, true>(from, n)
                                                : tap_inputs<SW, false>(from, V));
    }
  };
  const int32_t j1 = a.ptr[oc + 1];
  int32_t j = a.ptr[oc];
  for (; j + 1 < j1; j += 2) {
    add_tap(even, j);
    add_tap(odd, j + 1);
  }
  if (j < j1) add_tap(even, j);
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) simd::storeu(acc + u * V, even[u] + odd[u]);
}

// acc[0..OW) = bias + taps of the output row at in_row: blocks of 4 vectors, then the rest
// (1 to 4 vectors, the last loading only what its outputs read).
template <int SW>
void direct_row(const ConvKernelArgs& a, int64_t oc, const float* in_row, float bias, float* acc,
                int64_t OW) {
  int64_t k = 0;
  // While more outputs follow a block, its whole stride-2 vectors may read one float past.
  for (; OW - k > 4 * V; k += 4 * V) row_block<SW, 4, false>(a, oc, in_row + k * SW, bias, acc + k, V);
  const int64_t rest = OW - k, vectors = (rest + V - 1) / V, last = rest - (vectors - 1) * V;
  const float* from = in_row + k * SW;
  switch (vectors) {
    case 1: row_block<SW, 1, true>(a, oc, from, bias, acc + k, last); break;
    case 2: row_block<SW, 2, true>(a, oc, from, bias, acc + k, last); break;
    case 3: row_block<SW, 3, true>(a, oc, from, bias, acc + k, last); break;
    case 4: row_block<SW, 4, true>(a, oc, from, bias, acc + k, last); break;
    default: break;
  }
}

// acc[0..n) += w * src[k * sw] for k < n.
inline void tap_row(float* acc, const float* src, int64_t n, int64_t sw, float w) {
  for (int64_t k = 0; k < n; ++k) acc[k] += w * src[k * sw];
}

}  // namespace

void conv_direct(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t OH = a.rows, OW = a.positions, sw = a.in_pos_step;
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(OW + V)) scratch.resize(OW + V);
  float* acc = scratch.data();
  for (int64_t n = 0; n < a.images; ++n) {
    const float* in = a.in + n * a.in_is;
    for (int64_t oc = c0; oc < c1; ++oc) {
      if (skipped(a, oc)) continue;
      float* out = a.out + n * a.out_is + oc * a.out_cs;
      const float* res = a.res ? a.res + n * a.res_is + oc * a.res_cs : nullptr;
      const float b = a.bias ? a.bias[oc] : 0.0f;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float* in_row = in + oh * a.in_row_step;
        if (sw == 1) {
          direct_row<1>(a, oc, in_row, b, acc, OW);
#if defined(FD_HAS_SHUFFLEVECTOR)
        } else if (sw == 2) {
          direct_row<2>(a, oc, in_row, b, acc, OW);
#endif
        } else {
          for (int64_t k = 0; k < OW; ++k) acc[k] = b;
          for (int32_t j = a.ptr[oc]; j < a.ptr[oc + 1]; ++j)
            tap_row(acc, in_row + a.off[j], OW, sw, a.val[j]);
        }
        float* o = out + oh * a.out_rs;
        if (res) {
          const float* r = res + oh * a.res_rs;
          for (int64_t k = 0; k < OW; ++k) acc[k] += r[k];
        }
        activate_row(acc, o, OW, a.act, oc);
      }
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
