// Fused conv epilogue shared by the CSR and BSR kernels (included inside an ISA namespace).
#pragma once

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

// General layout: map each valid stream position back to (oh, ow) and store it alone. Out of
// line: it is rare, and keeping it apart lets the fast path hold the accumulators in registers.
__attribute__((noinline)) inline void conv_epilogue_general(const ConvKernelArgs& a, int64_t oc,
                                                            int64_t p0, const float* tmp,
                                                            int count) {
  const float b = a.bias ? a.bias[oc] : 0.0f;
  for (int i = 0; i < count; ++i) {
    const int64_t p = p0 + i;
    if (p >= a.len) break;
    const int64_t oh = p / a.rs, ow = p - oh * a.rs;
    if (ow >= a.width) continue;
    float v = tmp[i] + b;
    if (a.res) v += a.res[oc * a.res_cs + oh * a.res_rs + ow];
    a.out[oc * a.out_cs + oh * a.out_rs + ow] = a.act.apply(v);
  }
}

// Last vector of a plane: never write past the plane (planes are packed; the neighbour may
// belong to another thread).
__attribute__((noinline)) inline void store_partial(float* o, vf v, int64_t count) {
  alignas(64) float lane[V];
  simd::storeu(lane, v);
  for (int64_t i = 0; i < count; ++i) o[i] = lane[i];
}

// Finish U vectors of channel oc starting at stream position p0: bias, residual, clamp, store.
// Always inlined and fully unrolled so the accumulators stay in registers.
template <int U, bool FAST>
__attribute__((always_inline)) inline void conv_epilogue(const ConvKernelArgs& a, int64_t oc,
                                                         int64_t p0, const vf (&acc)[U]) {
  if (!FAST) {
    alignas(64) float tmp[U * V];
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) simd::storeu(tmp + u * V, acc[u]);
    conv_epilogue_general(a, oc, p0, tmp, U * V);
    return;
  }
  // Contiguous: output (and residual) planes use the stream's row stride.
  float* o = a.out + oc * a.out_cs + p0;
  const float* r = a.res ? a.res + oc * a.res_cs + p0 : nullptr;
  const vf vb = simd::splat(a.bias ? a.bias[oc] : 0.0f);
  const vf lo = simd::splat(a.act.lo), hi = simd::splat(a.act.hi);
  const bool clamp = a.act.kind != kActNone;
  const bool whole = p0 + U * V <= a.len;  // false only in a plane's last chunk
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
    vf v = acc[u] + vb;
    if (r) v += simd::loadu(r + u * V);
    if (clamp) v = simd::vmin(simd::vmax(v, lo), hi);
    v = simd::keep(v, a.mask + p0 + u * V);
    const int64_t left = a.len - (p0 + u * V);
    if (whole || left >= V) {
      simd::storeu(o + u * V, v);
    } else {
      store_partial(o + u * V, v, left);
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
