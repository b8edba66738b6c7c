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
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;
constexpr int64_t kMaxSplitRow = 2048;  // phase row floats the vector split handles (stack frame)

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

#ifdef FD_HAS_SHUFFLEVECTOR
// Planar, sw == 2: each input row is copied once into a zero-margined row (its padded frame),
// then split into both column phases with vector de-interleaves (the generic loop below reads
// the row once per phase and spent ~10 ns per phase row on ResNet-20x2's 17-wide phases).
static void split_plane_sw2(const PhaseSplitArgs& s, const float* src, float* dst) {
  alignas(64) float frame[2 * kMaxSplitRow + 2 * V];
  const int64_t frame_len = 2 * s.rs;
  for (int64_t a = 0; a < s.sh; ++a) {
    float* even = dst + (a * 2) * s.plane;
    float* odd = even + s.plane;
    for (int64_t i = 0; i < s.rows; ++i, even += s.rs, odd += s.rs) {
      const int64_t y = i * s.sh + a - s.pad_top;
      if (y < 0 || y >= s.H) {
        std::memset(even, 0, sizeof(float) * s.rs);
        std::memset(odd, 0, sizeof(float) * s.rs);
        continue;
      }
      // frame[k] = x[y][k - pad_left] inside the row, 0 outside.
      const int64_t lo = s.pad_left < frame_len ? s.pad_left : frame_len;
      const int64_t hi = s.pad_left + s.W < frame_len ? s.pad_left + s.W : frame_len;
      const float* row = src + y * s.src_rs + (lo - s.pad_left);
      for (int64_t k = 0; k < lo; ++k) frame[k] = 0.0f;
      int64_t k = lo;
      for (; k + V <= hi; k += V) simd::storeu(frame + k, simd::loadu(row + (k - lo)));
      for (; k < hi; ++k) frame[k] = row[k - lo];
      for (; k < frame_len; ++k) frame[k] = 0.0f;
      int64_t j = 0;
      for (; j + V <= s.rs; j += V) {
        vf e, o;
        simd::deinterleave(simd::loadu(frame + 2 * j), simd::loadu(frame + 2 * j + V), &e, &o);
        simd::storeu(even + j, e);
        simd::storeu(odd + j, o);
      }
      for (; j < s.rs; ++j) {
        even[j] = frame[2 * j];
        odd[j] = frame[2 * j + 1];
      }
    }
  }
}
#endif

void split_plane(const PhaseSplitArgs& s, const float* src, float* dst) {
  if (s.lanes > 1) {
    split_plane_lanes(s, src, dst);
    return;
  }
#ifdef FD_HAS_SHUFFLEVECTOR
  if (s.sw == 2 && s.rs <= kMaxSplitRow) {
    split_plane_sw2(s, src, dst);
    return;
  }
#endif
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
