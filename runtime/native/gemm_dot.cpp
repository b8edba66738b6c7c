// Dot-product GEMM kernel (one ISA variant per compilation): Y[m][n] = alpha * A[m,:] . B[:,n]
// (+ beta * C[m][n]) for the output columns [n0, n1) and every row, when rows of A and columns of
// B are contiguous (the planner passes a constant B pre-transposed). Blocks of four columns of B
// stay in L1 while every row of A passes (a classifier's B is often larger than L1), and the four
// dots of a row share each load of A. Reference: runtime/kernels/reference.py::gemm.
#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

static inline float lane_sum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < V; ++i) s += v[i];
  return s;
}

// Dots of one row of A with Q contiguous columns of B (bn floats apart).
template <int Q>
static inline void dots(const float* a, const float* b, int64_t bn, int64_t K, float* out) {
  vf acc[Q];
  for (int q = 0; q < Q; ++q) acc[q] = simd::splat(0.0f);
  int64_t k = 0;
  for (; k + V <= K; k += V) {
    const vf x = simd::loadu(a + k);
#pragma GCC unroll 4
    for (int q = 0; q < Q; ++q) acc[q] += x * simd::loadu(b + q * bn + k);
  }
  for (int q = 0; q < Q; ++q) {
    float s = lane_sum(acc[q]);
    for (int64_t t = k; t < K; ++t) s += a[t] * b[q * bn + t];
    out[q] = s;
  }
}

void gemm_dot(const GemmDotArgs& g, int64_t n0, int64_t n1) {
  float d[4];
  for (int64_t n = n0; n < n1;) {
    const int64_t count = n1 - n >= 4 ? 4 : 1;
    const float* b = g.B + n * g.bn;
    for (int64_t m = 0; m < g.M; ++m) {
      const float* a = g.A + m * g.am;
      if (count == 4) {
        dots<4>(a, b, g.bn, g.K, d);
      } else {
        dots<1>(a, b, g.bn, g.K, d);
      }
      for (int64_t i = 0; i < count; ++i) {
        float v = g.alpha * d[i];
        if (g.C) v += g.beta * g.C[m * g.cm + (n + i) * g.cn];
        g.Y[m * g.ym + (n + i) * g.yn] = v;
      }
    }
    n += count;
  }
}

}  // namespace FD_NS
}  // namespace fd
