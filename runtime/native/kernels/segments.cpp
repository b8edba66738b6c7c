// Row layout transforms (one ISA variant per compilation): column-segment rows
// (runtime/planner/layout.py segment_tensor) and batch interleaving (CopyStep).
//
// An image row of P * V floats becomes P vectors, lane i of vector p holding column i * P + p,
// plus two halo vectors around them: position -1 holds column i * P - 1 in lane i (0 in lane 0)
// and position P holds column (i + 1) * P (0 in the last lane). P = 1, 2, 4 are vector
// (de-)interleaves; other P go element by element.
#include <cstdint>
#include <utility>

#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

#if defined(FD_HAS_SHUFFLEVECTOR)
// Inverse of simd::deinterleave: (even, odd) -> the 2V floats even[0], odd[0], even[1], ...
static inline void interleave(vf even, vf odd, vf* lo, vf* hi) {
#if FD_VLEN == 16
  *lo = __builtin_shufflevector(even, odd, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  *hi = __builtin_shufflevector(even, odd, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                15, 31);
#elif FD_VLEN == 8
  *lo = __builtin_shufflevector(even, odd, 0, 8, 1, 9, 2, 10, 3, 11);
  *hi = __builtin_shufflevector(even, odd, 4, 12, 5, 13, 6, 14, 7, 15);
#else
  *lo = __builtin_shufflevector(even, odd, 0, 4, 1, 5);
  *hi = __builtin_shufflevector(even, odd, 2, 6, 3, 7);
#endif
}

// Columns of P vectors (rows[0..P)) -> the P segment positions, for P = 1, 2 or 4.
static inline void split_columns(const vf* rows, int64_t P, vf* pos) {
  if (P == 1) {
    pos[0] = rows[0];
    return;
  }
  if (P == 2) {
    simd::deinterleave(rows[0], rows[1], &pos[0], &pos[1]);
    return;
  }
  vf e01, o01, e23, o23;
  simd::deinterleave(rows[0], rows[1], &e01, &o01);
  simd::deinterleave(rows[2], rows[3], &e23, &o23);
  simd::deinterleave(e01, e23, &pos[0], &pos[2]);
  simd::deinterleave(o01, o23, &pos[1], &pos[3]);
}

static inline void join_columns(const vf* pos, int64_t P, vf* rows) {
  if (P == 1) {
    rows[0] = pos[0];
    return;
  }
  if (P == 2) {
    interleave(pos[0], pos[1], &rows[0], &rows[1]);
    return;
  }
  vf e01, o01, e23, o23;
  interleave(pos[0], pos[2], &e01, &e23);
  interleave(pos[1], pos[3], &o01, &o23);
  interleave(e01, o01, &rows[0], &rows[1]);
  interleave(e23, o23, &rows[2], &rows[3]);
}
#endif

void to_segments(const float* src, float* dst, int64_t P) {
#if defined(FD_HAS_SHUFFLEVECTOR)
  if (P == 1 || P == 2 || P == 4) {
    vf rows[4], pos[4];
    for (int64_t p = 0; p < P; ++p) rows[p] = simd::loadu(src + p * V);
    split_columns(rows, P, pos);
    for (int64_t p = 0; p < P; ++p) simd::storeu(dst + p * V, pos[p]);
    simd::storeu(dst - V, simd::lanes_up(pos[P - 1]));
    simd::storeu(dst + P * V, simd::lanes_down(pos[0]));
    return;
  }
#endif
  for (int64_t p = 0; p < P; ++p)
    for (int i = 0; i < V; ++i) dst[p * V + i] = src[i * P + p];
  for (int i = 0; i < V; ++i) {
    dst[i - V] = i > 0 ? src[i * P - 1] : 0.0f;
    dst[P * V + i] = i + 1 < V ? src[(i + 1) * P] : 0.0f;
  }
}

void from_segments(const float* src, float* dst, int64_t P) {
#if defined(FD_HAS_SHUFFLEVECTOR)
  if (P == 1 || P == 2 || P == 4) {
    vf rows[4], pos[4];
    for (int64_t p = 0; p < P; ++p) pos[p] = simd::loadu(src + p * V);
    join_columns(pos, P, rows);
    for (int64_t p = 0; p < P; ++p) simd::storeu(dst + p * V, rows[p]);
    return;
  }
#endif
  for (int64_t p = 0; p < P; ++p)
    for (int i = 0; i < V; ++i) dst[i * P + p] = src[p * V + i];
}

#if defined(FD_HAS_SHUFFLEVECTOR)
// One level of the block-swap transpose of a V x V tile held as V rows: for rows i and
// j = i + B (i & B == 0), the lanes L with L & B set in row i and those with it clear in row j
// trade places. After the levels B = V/2, ..., 1, row i holds column i.
template <int B, size_t... L>
inline void swap_level(vf& lo, vf& hi, std::index_sequence<L...>) {
  const vf a = lo, b = hi;
  lo = __builtin_shufflevector(a, b, ((L & B) ? V + L - B : L)...);
  hi = __builtin_shufflevector(a, b, ((L & B) ? V + L : L + B)...);
}

template <int B>
inline void swap_levels(vf (&t)[V]) {
  if constexpr (B >= 1) {
#pragma GCC unroll 16
    for (int i = 0; i < V; ++i)
      if ((i & B) == 0) swap_level<B>(t[i], t[i + B], std::make_index_sequence<V>{});
    swap_levels<B / 2>(t);
  }
}
#endif

// dst[x * pos_stride + n] = src[n * image_stride + x] for x < W, n < images: planar rows of
// several images into positions whose images are adjacent (batch interleaving). V x V tiles
// (V images, V positions) are transposed in registers: the element by element copy took 2.7
// ms of ShuffleNetV2's 25 ms at 16 images (AMD EPYC Zen4).
void interleave_images(const float* src, int64_t image_stride, int64_t images, float* dst,
                       int64_t pos_stride, int64_t W) {
  int64_t n0 = 0;
#if defined(FD_HAS_SHUFFLEVECTOR)
  for (; n0 + V <= images; n0 += V) {
    for (int64_t x0 = 0; x0 < W; x0 += V) {
      const int64_t w = W - x0 < V ? W - x0 : V;
      vf t[V];
#pragma GCC unroll 16
      for (int n = 0; n < V; ++n) {
        const float* row = src + (n0 + n) * image_stride + x0;
        t[n] = w == V ? simd::loadu(row) : simd::load_partial(row, w, 0.0f);
      }
      swap_levels<V / 2>(t);
      for (int64_t i = 0; i < w; ++i) simd::storeu(dst + (x0 + i) * pos_stride + n0, t[i]);
    }
  }
#endif
  for (; n0 < images; ++n0)
    for (int64_t x = 0; x < W; ++x) dst[x * pos_stride + n0] = src[n0 * image_stride + x];
}

}  // namespace FD_NS
}  // namespace fd
