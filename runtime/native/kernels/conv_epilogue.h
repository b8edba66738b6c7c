// Fused conv epilogue shared by the CSR and BSR kernels (included inside an ISA namespace).
#pragma once

#include <limits>
#include <type_traits>

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

// Kernels start each output vector's accumulator at the channel's bias, so the epilogue adds none.
__attribute__((always_inline)) inline vf bias_splat(const ConvKernelArgs& a, int64_t oc) {
  return simd::splat(a.bias ? a.bias[oc] : 0.0f);
}

// The fused epilogue of U output vectors of channel `oc` whose accumulators hold bias + taps:
// + residual (when has_res), activation, store. out(u) / res(u) give vector u's destination /
// residual address and mask(u) its lane mask (null: every lane is a real output; planar layouts
// zero their border lanes); vectors come in runs of Run that are contiguous in memory (and in
// the mask), which the out-of-line activation takes one run per call. One branch per call picks a straight-line variant: no per-vector
// tests, and ReLU (no upper bound) clamps with one max. Activations other than a clamp are
// applied after the store by the out-of-line kernels/activation.cpp (see there why).
// The address functors must not read `a` (a store could alias it and force reloads).
template <int U, int Run, typename Out, typename Res, typename Mask>
__attribute__((always_inline)) inline void finish_vectors(const ConvKernelArgs& a, int64_t oc,
                                                          bool has_res, const vf (&acc)[U],
                                                          Out out, Res res, Mask mask) {
  const vf lo = simd::splat(a.act.lo), hi = simd::splat(a.act.hi);
  const auto store = [&](auto with_res, auto low, auto high) __attribute__((always_inline)) {
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) {
      vf v = acc[u];
      if constexpr (decltype(with_res)::value) v += simd::loadu(res(u));
      if constexpr (decltype(low)::value) v = simd::vmax(lo, v);
      if constexpr (decltype(high)::value) v = simd::vmin(hi, v);
      const uint32_t* m = mask(u);
      simd::storeu(out(u), m ? simd::keep(v, m) : v);
    }
  };
  using Y = std::true_type;
  using N = std::false_type;
  const bool clamp = a.act.kind == kActClip;
  const bool upper = clamp && a.act.hi != std::numeric_limits<float>::infinity();
  if (has_res) {
    if (!clamp) store(Y{}, N{}, N{});
    else if (!upper) store(Y{}, Y{}, N{});
    else store(Y{}, Y{}, Y{});
  } else {
    if (!clamp) store(N{}, N{}, N{});
    else if (!upper) store(N{}, Y{}, N{});
    else store(N{}, Y{}, Y{});
  }
  if (!a.act.is_clamp()) {
    static_assert(U % Run == 0, "runs must tile the vectors");
#pragma GCC unroll 1
    for (int u = 0; u < U; u += Run) activate_vectors(out(u), Run, V, mask(u), a.act, oc, 0);
  }
}

// mask(u) for layouts where every stored lane is a real output.
struct NoMask {
  __attribute__((always_inline)) const uint32_t* operator()(int) const { return nullptr; }
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

// General layout: map each valid stream position back to (oh, ow) and store each output row's
// valid columns as whole vectors, the row's last vector overlapping the one before it (with
// equal values); rows narrower than a vector go element by element. Inlined like
// everything in a kernel (a call there made the compiler spill every live vector register).
__attribute__((always_inline)) inline void conv_epilogue_general(const ConvKernelArgs& a,
                                                                 int64_t oc, int64_t p0,
                                                                 const float* tmp, int count,
                                                                 int64_t image) {
  const int64_t end = p0 + count < a.len ? p0 + count : a.len;
  float* out = a.out + image * a.out_is + oc * a.out_cs;
  const float* res = a.res ? a.res + image * a.res_is + oc * a.res_cs : nullptr;
  const bool clamp = a.act.kind == kActClip;
  const vf lo = simd::splat(a.act.lo), hi = simd::splat(a.act.hi);
  const auto value_at = [&](const float* t, const float* r, int64_t ow) {
    vf v = simd::loadu(t + ow);
    if (r) v += simd::loadu(r + ow);
    return clamp ? simd::vmin(hi, simd::vmax(lo, v)) : v;
  };
  for (int64_t oh = p0 / a.rs; oh * a.rs < end; ++oh) {
    const int64_t first = oh * a.rs < p0 ? p0 - oh * a.rs : 0;
    const int64_t last = end - oh * a.rs < a.width ? end - oh * a.rs : a.width;
    const float* t = tmp + (oh * a.rs - p0);
    float* o = out + oh * a.out_rs;
    const float* r = res ? res + oh * a.res_rs : nullptr;
    if (last <= first) continue;  // the chunk starts in this row's padding columns
    if (last - first < V) {  // masked: narrow planes (7x7, 14x14) store every row this way
      const int64_t n = last - first;
      vf v = simd::load_partial(t + first, n, 0.0f);
      if (r) v += simd::load_partial(r + first, n, 0.0f);
      simd::store_partial(o + first, clamp ? simd::vmin(hi, simd::vmax(lo, v)) : v, n);
      if (!a.act.is_clamp()) activate_row(o + first, o + first, n, a.act, oc);
      continue;
    }
    // The overlapping last vector is computed first: the output may overwrite the residual in
    // place (planner: output over residual), and it must read the residual unchanged.
    const vf tail = value_at(t, r, last - V);
    for (int64_t ow = first; ow + V < last; ow += V) simd::storeu(o + ow, value_at(t, r, ow));
    simd::storeu(o + last - V, tail);
    if (!a.act.is_clamp()) activate_row(o + first, o + first, last - first, a.act, oc);
  }
}

// Finish U vectors of channel oc starting at stream position p0 (bias already in the
// accumulators): residual, clamp, store.
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
  // Contiguous: output (and residual) planes use the stream's row stride. The last vector may
  // run up to V - 1 floats past the plane's stream into the plane's slack (the planner sizes
  // planes for it); those lanes are masked to 0.
  float* o = a.out + image * a.out_is + oc * a.out_cs + p0;
  const float* r = a.res ? a.res + image * a.res_is + oc * a.res_cs + p0 : nullptr;
  const uint32_t* m = a.mask + p0;
  finish_vectors<U, U>(
      a, oc, r != nullptr, acc, [o](int u) { return o + u * V; },
      [r](int u) { return r + u * V; }, [m](int u) { return m + u * V; });
}

}  // namespace FD_NS
}  // namespace fd
