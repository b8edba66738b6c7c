// Fused conv epilogue shared by the CSR and BSR kernels (included inside an ISA namespace).
#pragma once

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

// Finish U vectors of channel oc starting at stream position p0: bias, residual, clamp, store.
template <int U>
inline void conv_epilogue(const ConvKernelArgs& a, int64_t oc, int64_t p0, const vf* acc) {
  const float b = a.bias ? a.bias[oc] : 0.0f;
  if (a.fast) {
    // Contiguous: output (and residual) planes use the stream's row stride.
    float* o = a.out + oc * a.out_cs + p0;
    const float* r = a.res ? a.res + oc * a.res_cs + p0 : nullptr;
    const vf vb = simd::splat(b), lo = simd::splat(a.act.lo), hi = simd::splat(a.act.hi);
    for (int u = 0; u < U; ++u) {
      vf v = acc[u] + vb;
      if (r) v += simd::loadu(r + u * V);
      if (a.act.kind != kActNone) v = simd::vmin(simd::vmax(v, lo), hi);
      simd::storeu(o + u * V, simd::keep(v, a.mask + p0 + u * V));
    }
    return;
  }
  // General layout: map each valid stream position back to (oh, ow) and store it alone.
  alignas(64) float tmp[U * V];
  for (int u = 0; u < U; ++u) simd::storeu(tmp + u * V, acc[u]);
  for (int i = 0; i < U * V; ++i) {
    const int64_t p = p0 + i;
    if (p >= a.len) break;
    const int64_t oh = p / a.rs, ow = p - oh * a.rs;
    if (ow >= a.width) continue;
    float v = tmp[i] + b;
    if (a.res) v += a.res[oc * a.res_cs + oh * a.res_rs + ow];
    a.out[oc * a.out_cs + oh * a.out_rs + ow] = a.act.apply(v);
  }
}

}  // namespace FD_NS
}  // namespace fd
