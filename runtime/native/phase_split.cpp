// Stride-phase split of one padded input plane (one ISA variant per compilation).
//
//   phase(a, b)[i][j] = x[i*sh + a - pad_top][j*sw + b - pad_left]   (0 outside the input)
// for every phase (a, b) of the stride (sh, sw). A strided conv then reads each phase as a
// stride-1 stream (conv_kernels.h). Loop structure: phases, rows, then a branch-free copy of the
// in-bounds columns between zeroed margins; for sw == 2 the copy is a de-interleave, which the
// compiler vectorises with permutes on AVX2 / AVX-512.
#include <cstdint>
#include <cstring>

#include "conv_kernels.h"

namespace fd {
namespace FD_NS {

// Columns [j_lo, j_hi) of phase column b come from the input (0 <= j*sw + b - pad_left < W);
// the rest of the phase row is zero padding.
static inline void input_columns(const PhaseSplitArgs& s, int64_t b, int64_t* j_lo,
                                 int64_t* j_hi) {
  int64_t lo = (s.pad_left - b + s.sw - 1) / s.sw;
  lo = lo < 0 ? 0 : (lo > s.rs ? s.rs : lo);
  int64_t hi = (s.W + s.pad_left - b + s.sw - 1) / s.sw;
  hi = hi > s.rs ? s.rs : (hi < lo ? lo : hi);
  *j_lo = lo;
  *j_hi = hi;
}

// Batch-interleaved phases: a position is `lanes` adjacent floats, copied as a unit from an
// interleaved source or gathered from `lanes` planar images (gather_stride apart).
static void split_plane_lanes(const PhaseSplitArgs& s, const float* src, float* dst) {
  const int64_t L = s.lanes, row_floats = s.rs * L;
  for (int64_t a = 0; a < s.sh; ++a) {
    for (int64_t b = 0; b < s.sw; ++b) {
      float* phase = dst + (a * s.sw + b) * s.plane;
      int64_t j_lo, j_hi;
      input_columns(s, b, &j_lo, &j_hi);
      for (int64_t i = 0; i < s.rows; ++i) {
        float* __restrict row = phase + i * row_floats;
        const int64_t y = i * s.sh + a - s.pad_top;
        if (y < 0 || y >= s.H) {
          std::memset(row, 0, sizeof(float) * row_floats);
          continue;
        }
        std::memset(row, 0, sizeof(float) * j_lo * L);
        if (s.gather_stride > 0) {  // planar images: gather one float of each per position
          const float* from = src + y * s.src_rs + (b - s.pad_left);
          for (int64_t j = j_lo; j < j_hi; ++j)
            for (int64_t n = 0; n < L; ++n) row[j * L + n] = from[j * s.sw + n * s.gather_stride];
        } else {
          const float* __restrict from = src + y * s.src_rs + (b - s.pad_left) * L;
          for (int64_t j = j_lo; j < j_hi; ++j)
            std::memcpy(row + j * L, from + j * s.sw * L, sizeof(float) * L);
        }
        std::memset(row + j_hi * L, 0, sizeof(float) * (s.rs - j_hi) * L);
      }
    }
  }
}

void split_plane(const PhaseSplitArgs& s, const float* src, float* dst) {
  if (s.lanes > 1) {
    split_plane_lanes(s, src, dst);
    return;
  }
  for (int64_t a = 0; a < s.sh; ++a) {
    for (int64_t b = 0; b < s.sw; ++b) {
      float* phase = dst + (a * s.sw + b) * s.plane;
      int64_t j_lo, j_hi;
      input_columns(s, b, &j_lo, &j_hi);
      for (int64_t i = 0; i < s.rows; ++i) {
        float* __restrict row = phase + i * s.rs;
        const int64_t y = i * s.sh + a - s.pad_top;
        if (y < 0 || y >= s.H) {
          for (int64_t j = 0; j < s.rs; ++j) row[j] = 0.0f;
          continue;
        }
        const float* __restrict from = src + y * s.src_rs + (b - s.pad_left);  // + j * sw
        for (int64_t j = 0; j < j_lo; ++j) row[j] = 0.0f;
        if (s.sw == 2) {
          for (int64_t j = j_lo; j < j_hi; ++j) row[j] = from[2 * j];
        } else {
          for (int64_t j = j_lo; j < j_hi; ++j) row[j] = from[j * s.sw];
        }
        for (int64_t j = j_hi; j < s.rs; ++j) row[j] = 0.0f;
      }
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
