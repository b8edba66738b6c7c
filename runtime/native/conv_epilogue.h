// Fused conv epilogue shared by the CSR and BSR kernels (included inside an ISA namespace).
#pragma once

#include <type_traits>

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

// The fused epilogue's arithmetic for one output vector of channel oc: + bias, + residual
// (when res is not null), clamp. Shared by every kernel that stores whole vectors.
struct VectorEpilogue {
  vf bias, lo, hi;
  bool clamp;
  __attribute__((always_inline)) VectorEpilogue(const ConvKernelArgs& a, int64_t oc)
      : bias(simd::splat(a.bias ? a.bias[oc] : 0.0f)),
        lo(simd::splat(a.act.lo)),
        hi(simd::splat(a.act.hi)),
        clamp(a.act.kind != kActNone) {}
  __attribute__((always_inline)) vf operator()(vf acc, const float* res) const {
    vf v = acc + bias;
    if (res) v += simd::loadu(res);
    return clamp ? simd::vmin(simd::vmax(v, lo), hi) : v;
  }
};

// Calls f(std::integral_constant<int, n>{}) for 1 <= n <= 16 (8 below AVX-512, where 16
// accumulators would not fit the registers): kernels get their vector count as a constant.
template <typename F>
__attribute__((always_inline)) inline void with_vector_count(int64_t n, F&& f) {
  switch (n) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
#if FD_VLEN >= 16
    case 9: f(std::integral_constant<int, 9>{}); break;
    case 10: f(std::integral_constant<int, 10>{}); break;
    case 11: f(std::integral_constant<int, 11>{}); break;
    case 12: f(std::integral_constant<int, 12>{}); break;
    case 13: f(std::integral_constant<int, 13>{}); break;
    case 14: f(std::integral_constant<int, 14>{}); break;
    case 15: f(std::integral_constant<int, 15>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
#endif
    default: break;
  }
}

// General layout: map each valid stream position back to (oh, ow) and store it alone. Inlined
// like everything in a kernel: a call there makes the compiler spill every live vector register
// (measured 2.5x slower on tiny planes).
__attribute__((always_inline)) inline void conv_epilogue_general(const ConvKernelArgs& a,
                                                                 int64_t oc, int64_t p0,
                                                                 const float* tmp, int count,
                                                                 int64_t image) {
  const float b = a.bias ? a.bias[oc] : 0.0f;
  const int64_t end = p0 + count < a.len ? p0 + count : a.len;
  float* out = a.out + image * a.out_is + oc * a.out_cs;
  const float* res = a.res ? a.res + image * a.res_is + oc * a.res_cs : nullptr;
  // Row by row: the valid columns of each output row the chunk covers.
  for (int64_t oh = p0 / a.rs; oh * a.rs < end; ++oh) {
    const int64_t first = oh * a.rs < p0 ? p0 - oh * a.rs : 0;
    const int64_t last = end - oh * a.rs < a.width ? end - oh * a.rs : a.width;
    const float* t = tmp + (oh * a.rs - p0);
    float* o = out + oh * a.out_rs;
    const float* r = res ? res + oh * a.res_rs : nullptr;
    for (int64_t ow = first; ow < last; ++ow) o[ow] = a.act.apply(t[ow] + b + (r ? r[ow] : 0.0f));
  }
}

// Finish U vectors of channel oc starting at stream position p0: bias, residual, clamp, store.
// Always inlined and fully unrolled so the accumulators stay in registers.
template <int U, bool FAST>
__attribute__((always_inline)) inline void conv_epilogue(const ConvKernelArgs& a, int64_t oc,
                                                         int64_t p0, const vf (&acc)[U],
                                                         int64_t image = 0) {
  if (!FAST) {
    alignas(64) float tmp[U * V];
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) simd::storeu(tmp + u * V, acc[u]);
    conv_epilogue_general(a, oc, p0, tmp, U * V, image);
    return;
  }
  // Contiguous: output (and residual) planes use the stream's row stride.
  float* o = a.out + image * a.out_is + oc * a.out_cs + p0;
  const float* r = a.res ? a.res + image * a.res_is + oc * a.res_cs + p0 : nullptr;
  const VectorEpilogue finish(a, oc);
  // The last vector may run up to V - 1 floats past the plane's stream into the plane's slack
  // (the planner sizes planes for it); those lanes are masked to 0.
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
    const vf v = finish(acc[u], r ? r + u * V : nullptr);
    simd::storeu(o + u * V, simd::keep(v, a.mask + p0 + u * V));
  }
}

}  // namespace FD_NS
}  // namespace fd
