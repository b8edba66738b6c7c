// Dot-product GEMM kernel (one ISA variant per compilation): Y[m][n] = alpha * A[m,:] . B[:,n]
// (+ beta * C[m][n]) for the output columns [n0, n1) and every row, when rows of A and columns of
// B are contiguous (the planner passes a constant B pre-transposed). Blocks of four columns of B
// stay in L1 while every row of A passes (a classifier's B is often larger than L1), four rows
// at a time: 16 dots share their loads (one vector of A feeds 4 FMAs, one of B feeds 4).
// Reference: runtime/kernels/reference.py (gemm).
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

// Dots of MR rows of A (am floats apart) with NR columns of B (bn floats apart): MR x NR
// accumulators, so each loaded vector of A feeds NR FMAs and each of B feeds MR.
template <int MR, int NR>
static inline void dots(const float* a, int64_t am, const float* b, int64_t bn, int64_t K,
                        float (&out)[4][4]) {
  vf acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int q = 0; q < NR; ++q) acc[i][q] = simd::splat(0.0f);
  int64_t k = 0;
  for (; k + V <= K; k += V) {
    vf x[MR];
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) x[i] = simd::loadu(a + i * am + k);
#pragma GCC unroll 4
    for (int q = 0; q < NR; ++q) {
      const vf y = simd::loadu(b + q * bn + k);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) acc[i][q] += x[i] * y;
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int q = 0; q < NR; ++q) {
      float sum = lane_sum(acc[i][q]);
      for (int64_t t = k; t < K; ++t) sum += a[i * am + t] * b[q * bn + t];
      out[i][q] = sum;
    }
  }
}

template <int NR>
static inline void dots_rows(const float* a, int64_t am, const float* b, int64_t bn, int64_t K,
                             int64_t rows, float (&out)[4][4]) {
  switch (rows) {
    case 1: dots<1, NR>(a, am, b, bn, K, out); break;
    case 2: dots<2, NR>(a, am, b, bn, K, out); break;
    case 3: dots<3, NR>(a, am, b, bn, K, out); break;
    default: dots<4, NR>(a, am, b, bn, K, out); break;
  }
}

// Blocks of 4 columns of B (kept in L1) against blocks of 4 rows of A.
void gemm_dot(const GemmDotArgs& g, int64_t n0, int64_t n1) {
  float d[4][4];
  for (int64_t n = n0; n < n1;) {
    const int64_t cols = n1 - n >= 4 ? 4 : 1;
    const float* b = g.B + n * g.bn;
    for (int64_t m = 0; m < g.M; m += 4) {
      const int64_t rows = g.M - m < 4 ? g.M - m : 4;
      if (cols == 4) {
        dots_rows<4>(g.A + m * g.am, g.am, b, g.bn, g.K, rows, d);
      } else {
        dots_rows<1>(g.A + m * g.am, g.am, b, g.bn, g.K, rows, d);
      }
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t q = 0; q < cols; ++q) {
          float v = g.alpha * d[i][q];
          if (g.C) v += g.beta * g.C[(m + i) * g.cm + (n + q) * g.cn];
          g.Y[(m + i) * g.ym + (n + q) * g.yn] = v;
        }
      }
    }
    n += cols;
  }
}

}  // namespace FD_NS
}  // namespace fd
