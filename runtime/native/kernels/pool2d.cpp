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
// accumulators hide the add latency (a scalar chain runs at one add per 4 cycles) and rotate
// over a row's vectors, so rows of a few vectors keep all four busy; a row's last partial
// vector is a masked load filled with the identity. A plane without row padding (rs == W) is
// one run of H * W floats: a 7 x 7 plane is 4 vectors, not 7 rows with a tail each.
float reduce_plane(const float* x, int64_t H, int64_t W, int64_t rs, bool is_max) {
  const float init = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
  if (H * W < V) {  // less than a vector: the lane tree would cost more than the floats
    float acc = init;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const float v = x[h * rs + w];
        acc = is_max ? (v != v || v > acc ? v : acc) : acc + v;  // NaN wins
      }
    return acc;
  }
  if (rs == W) {
    W *= H;
    H = 1;
  }
  const vf identity = simd::splat(init);
  vf acc[4] = {identity, identity, identity, identity};
  // NaN sticks: vmax(v, a) returns a when either is NaN, and a NaN v is taken as is.
  auto combine = [is_max](vf a, vf v) {
    return is_max ? simd::select(v != v, v, simd::vmax(v, a)) : a + v;
  };
  int k = 0;
  for (int64_t h = 0; h < H; ++h) {
    const float* row = x + h * rs;
    int64_t w = 0;
    for (; w + V <= W; w += V, k = (k + 1) & 3) acc[k] = combine(acc[k], simd::loadu(row + w));
    if (w < W) {
      acc[k] = combine(acc[k], simd::load_partial(row + w, W - w, init));
      k = (k + 1) & 3;
    }
  }
  // Halving tree over the lanes (a chain through 64 lanes would cost more than a small plane).
  float lanes[V];
  simd::storeu(lanes, combine(combine(acc[0], acc[1]), combine(acc[2], acc[3])));
  for (int half = V / 2; half >= 1; half /= 2)
    for (int i = 0; i < half; ++i) {
      const float a = lanes[i], b = lanes[i + half];
      lanes[i] = is_max ? (a != a || b != b ? a + b : (a > b ? a : b)) : a + b;
    }
  return lanes[0];
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

namespace {

// Max (NaN sticky, as reduce_plane) or sum of two vectors.
inline vf combine(bool is_max, vf a, vf v) {
  return is_max ? simd::select(v != v, v, simd::vmax(v, a)) : a + v;
}

// The output row from the combined windows: window ow's E floats at src + ow * step; average
// pooling divides by the taps counted (rows inside the input, or the padded extent).
void store_row(const PoolRowArgs& a, const float* src, int64_t step, int64_t E, float* out,
               int64_t oh, int64_t rows) {
  if (a.is_max) {
    for (int64_t ow = 0; ow < a.OW; ++ow)
      for (int64_t e = 0; e < E; ++e) out[ow * a.dst_ws + e] = src[ow * step + e];
    return;
  }
  const float row_count = a.include_pad ? static_cast<float>(a.row_count[oh])
                                        : static_cast<float>(rows);
  for (int64_t ow = 0; ow < a.OW; ++ow) {
    const float count = row_count * a.col_count[ow];
    for (int64_t e = 0; e < E; ++e)
      out[ow * a.dst_ws + e] = count > 0.0f ? src[ow * step + e] / count : 0.0f;
  }
}

// Planar rows (E = 1): a strided window reads every sw-th float, which no compiler vectorises
// well (MaxPool 3x3/2 on 64x112x112 ran at 4.5 ns per tap). Separable instead: the window's
// input rows are combined column by column into a padded row t (contiguous vectors; padding
// holds the identity), then t's kw taps into h at every padded column (contiguous, unaligned
// loads), and the output picks every sw-th float of h. Max is exact in any order; a sum adds
// rows first, then columns.
void pool_row_planar(const PoolRowArgs& a, const float* plane, float* out, int64_t oh,
                     float* scratch) {
  const float init = a.is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
  const int64_t tw = pool_row_width(a);
  const int64_t picked = ((a.OW - 1) * a.sw + 1 + V - 1) / V * V;
  float* t = scratch;
  float* h = scratch + tw;
  const vf identity = simd::splat(init);
  for (int64_t w = 0; w < tw; w += V) simd::storeu(t + w, identity);
  float* row = t + a.pl;
  int64_t rows = 0;
  for (int64_t i = 0; i < a.kh; ++i) {
    const int64_t r = oh * a.sh + i * a.dh - a.pt;
    if (r < 0 || r >= a.H) continue;
    ++rows;
    const float* in = plane + r * a.src_rs;
    int64_t w = 0;
    for (; w + V <= a.W; w += V)
      simd::storeu(row + w, combine(a.is_max, simd::loadu(row + w), simd::loadu(in + w)));
    for (; w < a.W; ++w) {
      const float v = in[w];
      row[w] = a.is_max ? (v != v || v > row[w] ? v : row[w]) : row[w] + v;
    }
  }
  for (int64_t k = 0; k < picked; k += V) {
    vf acc = simd::loadu(t + k);
    for (int64_t j = 1; j < a.kw; ++j) acc = combine(a.is_max, acc, simd::loadu(t + k + j * a.dw));
    simd::storeu(h + k, acc);
  }
  store_row(a, h, a.sw, 1, out, oh, rows);
}

}  // namespace

void pool_row(const PoolRowArgs& a, const float* plane, float* out, int64_t oh, float* acc) {
  if (a.E == 1) {
    pool_row_planar(a, plane, out, oh, acc);
    return;
  }
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
  store_row(a, acc, E, E, out, oh, rows);
}

}  // namespace FD_NS
}  // namespace fd
