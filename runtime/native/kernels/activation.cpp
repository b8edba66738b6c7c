// Activations applied after a store (one ISA variant per build): the epilogue of every conv
// kernel and of the generated conv code for the kinds that are not a clamp, and the standalone
// activation steps. Out of line on purpose: inlined into a kernel, the formulas' constants would
// compete with the accumulators for registers in every kind's tap loop.
#include "activation_simd.h"
#include "conv_kernels.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

namespace {

// The loops below take the formula as a functor: one loop per kind, so the switch on the kind
// runs once per call and the formula's constants stay in registers across the loop.
template <typename F>
void vectors_with(F f, float* p, int64_t count, int64_t stride, const uint32_t* mask,
                  int64_t channel0, int64_t channel_step) {
  for (int64_t i = 0; i < count; ++i) {
    float* q = p + i * stride;
    vf v = f(simd::loadu(q), channel0 + i * channel_step);
    if (mask) v = simd::keep(v, mask + i * V);
    simd::storeu(q, v);
  }
}

template <typename F>
void row_with(F f, const float* src, float* dst, int64_t n, int64_t channel) {
  int64_t i = 0;
  for (; i + V <= n; i += V) simd::storeu(dst + i, f(simd::loadu(src + i), channel));
  if (i == n) return;
  alignas(64) float tail[V] = {};
  for (int64_t k = 0; i + k < n; ++k) tail[k] = src[i + k];
  simd::storeu(tail, f(simd::loadu(tail), channel));
  for (int64_t k = 0; i + k < n; ++k) dst[i + k] = tail[k];
}

// Calls run(formula) with the formula of act's kind; the hot kinds get their own instantiation.
template <typename Run>
void dispatch(const Activation& act, Run run) {
  switch (act.kind) {
    case kActSigmoid: return run([](vf v, int64_t) { return simd::sigmoid(v); });
    case kActSilu: return run([](vf v, int64_t) { return v * simd::sigmoid(v); });
    case kActHardSwish: {
      const vf alpha = simd::splat(act.alpha), beta = simd::splat(act.beta);
      return run([alpha, beta](vf v, int64_t) { return v * simd::unit_clamp(v * alpha + beta); });
    }
    default: return run([&act](vf v, int64_t c) { return simd::activate(v, act, c); });
  }
}

}  // namespace

void activate_vectors(float* p, int64_t count, int64_t stride, const uint32_t* mask,
                      const Activation& act, int64_t channel0, int64_t channel_step) {
  dispatch(act, [&](auto f) { vectors_with(f, p, count, stride, mask, channel0, channel_step); });
}

void activate_row(const float* src, float* dst, int64_t n, const Activation& act,
                  int64_t channel) {
  dispatch(act, [&](auto f) { row_with(f, src, dst, n, channel); });
}

}  // namespace FD_NS
}  // namespace fd
