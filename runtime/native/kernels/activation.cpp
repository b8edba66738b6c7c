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

void activate_vectors(float* p, int64_t count, int64_t stride, const uint32_t* mask,
                      const Activation& act, int64_t channel0, int64_t channel_step) {
  for (int64_t i = 0; i < count; ++i) {
    float* q = p + i * stride;
    vf v = simd::activate(simd::loadu(q), act, channel0 + i * channel_step);
    if (mask) v = simd::keep(v, mask + i * V);
    simd::storeu(q, v);
  }
}

void activate_row(const float* src, float* dst, int64_t n, const Activation& act,
                  int64_t channel) {
  int64_t i = 0;
  for (; i + V <= n; i += V) simd::storeu(dst + i, simd::activate(simd::loadu(src + i), act, channel));
  if (i == n) return;
  alignas(64) float tail[V] = {};
  for (int64_t k = 0; i + k < n; ++k) tail[k] = src[i + k];
  const vf v = simd::activate(simd::loadu(tail), act, channel);
  simd::storeu(tail, v);
  for (int64_t k = 0; i + k < n; ++k) dst[i + k] = tail[k];
}

}  // namespace FD_NS
}  // namespace fd
