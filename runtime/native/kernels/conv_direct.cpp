// Direct strided convolution for convs with very few taps per output channel (one ISA variant
// per compilation): a depthwise conv above ~80% sparsity has one or two taps, so splitting its
// input into stride phases would cost more than the taps (PlannerOptions.direct_max_taps).
//
// Loop structure, per image and output channel [c0, c1), per output row:
//   acc[0..OW) = bias                                  (a row of L1 scratch)
//   for each tap j: acc[ow] += w_j * in[off_j + oh * row_step + ow * sw]   (vectorised; stride 2
//                                                       loads are de-interleaved pairs)
//   + residual, activation (the shared vector formulas), store
// Reference: runtime/kernels/reference.py (conv2d).
#include <vector>

#include "activation_simd.h"
#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

namespace {

// acc[0..n) += w * src[k * sw] for k < n.
inline void tap_row(float* acc, const float* src, int64_t n, int64_t sw, float w) {
  const vf wv = simd::splat(w);
  int64_t k = 0;
  if (sw == 1) {
    for (; k + V <= n; k += V) simd::storeu(acc + k, simd::loadu(acc + k) + wv * simd::loadu(src + k));
  }
#if defined(FD_HAS_SHUFFLEVECTOR)
  if (sw == 2) {
    // k + V < n: the pair load's last float (2k + 2V - 1) stays inside the row's reads.
    for (; k + V < n; k += V) {
      vf even, odd;
      simd::deinterleave(simd::loadu(src + 2 * k), simd::loadu(src + 2 * k + V), &even, &odd);
      simd::storeu(acc + k, simd::loadu(acc + k) + wv * even);
    }
  }
#endif
  for (; k < n; ++k) acc[k] += w * src[k * sw];
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
        for (int64_t k = 0; k < OW; ++k) acc[k] = b;
        for (int32_t j = a.ptr[oc]; j < a.ptr[oc + 1]; ++j)
          tap_row(acc, in + a.off[j] + oh * a.in_row_step, OW, sw, a.val[j]);
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
