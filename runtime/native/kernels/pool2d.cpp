// MaxPool / AveragePool rows (one ISA variant per compilation).
//
// A position is E contiguous floats (E = 1 planar; E = the images of a batch-interleaved
// group). For one output row, every window tap (kernel row i, kernel column j) whose input row
// exists updates the output columns whose input column exists, a contiguous range computed once:
//   for i, j:  for ow in [lo_j, hi_j):  acc[ow] = max(acc[ow], in[row_i][(ow*sw + j*dw - pl)*E])
// so the innermost loop has no bounds test and the compiler vectorises it (stride 1 or E > 1:
// contiguous). Average pooling divides by the taps inside the input (or inside the padded
// extent with count_include_pad), which factor into a row count times a column count.
// Reference: runtime/kernels/reference.py (pool2d).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

// Sum (or max, NaN winning) of an H x W plane with contiguous rows of stride rs. Four vector
// accumulators hide the add latency (a scalar chain runs at one add per 4 cycles); they rotate
// over a row's vectors, so rows of a few vectors (56, 28, 14 floats) keep all four busy, and a
// row's last partial vector is padded with the identity rather than summed in a scalar chain.
float reduce_plane(const float* x, int64_t H, int64_t W, int64_t rs, bool is_max) {
  const float init = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
  const vf identity = simd::splat(init);
  vf acc[4] = {identity, identity, identity, identity};
  auto combine = [is_max](vf a, vf v) {
    return is_max ? simd::select(v != v, v, simd::vmax(a, v)) : a + v;
  };
  int k = 0;
  float part[V];
  for (int64_t h = 0; h < H; ++h) {
    const float* row = x + h * rs;
    int64_t w = 0;
    for (; w + V <= W; w += V, k = (k + 1) & 3) acc[k] = combine(acc[k], simd::loadu(row + w));
    if (w < W) {
      for (int i = 0; i < V; ++i) part[i] = w + i < W ? row[w + i] : init;
      acc[k] = combine(acc[k], simd::loadu(part));
      k = (k + 1) & 3;
    }
  }
  float lanes[4 * V];
  for (int j = 0; j < 4; ++j) simd::storeu(lanes + j * V, acc[j]);
  float result = init;
  for (int i = 0; i < 4 * V; ++i)
    result = is_max ? (lanes[i] != lanes[i] || lanes[i] > result ? lanes[i] : result)
                    : result + lanes[i];
  return result;
}

namespace {

// Output columns [lo, hi) whose input column ow*sw + j*dw - pl lies in [0, W).
inline void valid_columns(const PoolRowArgs& a, int64_t j, int64_t* lo, int64_t* hi) {
  const int64_t shift = j * a.dw - a.pl;
  int64_t first = shift >= 0 ? 0 : (-shift + a.sw - 1) / a.sw;
  int64_t last = (a.W - 1 - shift) >= 0 ? (a.W - 1 - shift) / a.sw + 1 : 0;
  *lo = std::min(first, a.OW);
  *hi = std::max(*lo, std::min(last, a.OW));
}

}  // namespace

void pool_row(const PoolRowArgs& a, const float* plane, float* out, int64_t oh, float* acc) {
  const int64_t E = a.E, n = a.OW * E;
  const float init = a.is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
  for (int64_t k = 0; k < n; ++k) acc[k] = init;
  int64_t rows = 0;
  for (int64_t i = 0; i < a.kh; ++i) {
    const int64_t h = oh * a.sh + i * a.dh - a.pt;
    if (h < 0 || h >= a.H) continue;
    ++rows;
    const float* in = plane + h * a.src_rs;
    for (int64_t j = 0; j < a.kw; ++j) {
      int64_t lo, hi;
      valid_columns(a, j, &lo, &hi);
      const int64_t shift = j * a.dw - a.pl;
      for (int64_t ow = lo; ow < hi; ++ow) {
        const float* x = in + (ow * a.sw + shift) * E;
        float* y = acc + ow * E;
        if (a.is_max) {
          for (int64_t e = 0; e < E; ++e) y[e] = (x[e] > y[e] || x[e] != x[e]) ? x[e] : y[e];
        } else {
          for (int64_t e = 0; e < E; ++e) y[e] += x[e];
        }
      }
    }
  }
  if (a.is_max) {
    for (int64_t ow = 0; ow < a.OW; ++ow)
      for (int64_t e = 0; e < E; ++e) out[ow * a.dst_ws + e] = acc[ow * E + e];
    return;
  }
  const float row_count = a.include_pad ? static_cast<float>(a.row_count[oh])
                                        : static_cast<float>(rows);
  for (int64_t ow = 0; ow < a.OW; ++ow) {
    const float count = row_count * a.col_count[ow];
    for (int64_t e = 0; e < E; ++e)
      out[ow * a.dst_ws + e] = count > 0.0f ? acc[ow * E + e] / count : 0.0f;
  }
}

}  // namespace FD_NS
}  // namespace fd
