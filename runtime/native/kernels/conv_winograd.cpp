// Winograd F(m x m, 4x4) conv over stride-phase planes (one ISA variant per compilation;
// winograd.h has the transforms, m = 3 or 5, and where they come from).
//
// The conv is a stride-1 4x4 correlation summed over input planes (stride phases of the
// channels). A vector holds one position of V tiles: of V images (batch-interleaved), or of V
// tiles side by side in a row (planar; the planes are split by 3x the conv's column stride, so
// window column j of V neighbouring tiles is V adjacent floats at col_off[p][j]). A call covers
// tile rows [t0, t1); per tile (vector) of m x m outputs (T = m + 3):
//   1. each plane's T x T window d -> B^T d B, T^2 vectors per plane (scratch `v`:
//      [T^2][planes]);
//   2. per block of kBlock output channels and per point, the channels' weighted sums over the
//      planes: each plane's vector is loaded once for the block, its weights are broadcasts
//      (scratch `m`: [kBlock][T^2]);
//   3. per channel, A^T m A + bias, the activation, stores of the valid positions (WinogradArgs::
//      stream: past the caches).
// Windows reaching past the readable rows (or interleaved columns) read zeros there (the last
// tile row and column when the output side is not a multiple of 3); planar rows are zero-padded
// to every tile vector's reach by the split.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "activation_simd.h"
#include "conv_kernels.h"
#include "simd.h"
#include "winograd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;
namespace wg = ::fd::winograd;

namespace {

// out = B^T in (winograd.h; T vectors `step` apart), the terms its rows share computed once.
// F(3x3, 4x4): 13 operations instead of one per nonzero coefficient (26).
inline void input_1d(wg::F3, const vf* in, int step, vf* out, int ostep) {
  const vf d0 = in[0], d1 = in[step], d2 = in[2 * step], d3 = in[3 * step], d4 = in[4 * step],
           d5 = in[5 * step];
  const vf four = simd::splat(4.0f), five = simd::splat(5.0f);
  const vf t1 = d4 - four * d2, t2 = d3 - four * d1;
  const vf t3 = d4 - d2, t4 = (d3 - d1) * simd::splat(2.0f);
  out[0] = four * d0 - five * d2 + d4;
  out[ostep] = t1 + t2;
  out[2 * ostep] = t1 - t2;
  out[3 * ostep] = t3 + t4;
  out[4 * ostep] = t3 - t4;
  out[5 * ostep] = four * d1 - five * d3 + d5;
}

// F(5x5, 4x4): rows 1-6 come in pairs (points p, -p), the sum and difference of the row's
// even-column and odd-column terms: 26 operations instead of 44.
inline void input_1d(wg::F5, const vf* in, int step, vf* out, int ostep) {
  const vf d0 = in[0], d1 = in[step], d2 = in[2 * step], d3 = in[3 * step], d4 = in[4 * step],
           d5 = in[5 * step], d6 = in[6 * step], d7 = in[7 * step];
  const vf k525 = simd::splat(5.25f), k425 = simd::splat(4.25f);
  const vf e1 = d2 + d6 - k425 * d4, o1 = d1 + d5 - k425 * d3;
  const vf e2 = simd::splat(0.25f) * d2 + d6 - simd::splat(1.25f) * d4;
  const vf o2 = simd::splat(0.5f) * d1 - simd::splat(2.5f) * d3 + simd::splat(2.0f) * d5;
  const vf e3 = simd::splat(4.0f) * d2 + d6 - simd::splat(5.0f) * d4;
  const vf o3 = simd::splat(2.0f) * d1 - simd::splat(2.5f) * d3 + simd::splat(0.5f) * d5;
  out[0] = (d0 - d6) + k525 * (d4 - d2);
  out[ostep] = e1 + o1;
  out[2 * ostep] = e1 - o1;
  out[3 * ostep] = e2 + o2;
  out[4 * ostep] = e2 - o2;
  out[5 * ostep] = e3 + o3;
  out[6 * ostep] = e3 - o3;
  out[7 * ostep] = (d7 - d1) + k525 * (d3 - d5);
}

// out = A^T in (winograd.h), likewise. F(3x3, 4x4): 9 operations instead of 14.
inline void output_1d(wg::F3, const vf* in, int step, vf* out, int ostep) {
  const vf s1 = in[step] + in[2 * step], d1 = in[step] - in[2 * step];
  const vf s2 = in[3 * step] + in[4 * step], d2 = in[3 * step] - in[4 * step];
  out[0] = in[0] + s1 + s2;
  out[ostep] = d1 + simd::splat(2.0f) * d2;
  out[2 * ostep] = s1 + simd::splat(4.0f) * s2 + in[5 * step];
}

// F(5x5, 4x4): 18 operations instead of 34 (each pair of points p, -p as a sum and a
// difference).
inline void output_1d(wg::F5, const vf* in, int step, vf* out, int ostep) {
  const vf s1 = in[step] + in[2 * step], d1 = in[step] - in[2 * step];
  const vf s2 = in[3 * step] + in[4 * step], d2 = in[3 * step] - in[4 * step];
  const vf s3 = in[5 * step] + in[6 * step], d3 = in[5 * step] - in[6 * step];
  out[0] = in[0] + s1 + s2 + s3;
  out[ostep] = d1 + simd::splat(2.0f) * d2 + simd::splat(0.5f) * d3;
  out[2 * ostep] = s1 + simd::splat(4.0f) * s2 + simd::splat(0.25f) * s3;
  out[3 * ostep] = d1 + simd::splat(8.0f) * d2 + simd::splat(0.125f) * d3;
  out[4 * ostep] = s1 + simd::splat(16.0f) * s2 + simd::splat(0.0625f) * s3 + in[7 * step];
}

// B^T d B of every plane's window at tile row origin y0, tile vector tx -> v[point * planes + p].
template <class W>
void input_tile(const WinogradArgs& a, int64_t y0, int64_t tx, float* v) {
  constexpr int T = W::kTile, O = W::kOut;
  const int64_t x0 = a.planar ? 0 : tx * O;  // interleaved: the window's first position
  const bool inside = y0 + T <= a.in_rows && x0 + T <= a.in_cols;
  vf d[T][T], t[T][T], row[T];
  for (int64_t p = 0; p < a.planes; ++p) {
    const int64_t* col = a.col_off + p * T;
    const float* base = a.in + y0 * a.in_rs + tx * a.tile_step;
#pragma GCC unroll 8
    for (int i = 0; i < T; ++i)
#pragma GCC unroll 8
      for (int j = 0; j < T; ++j)
        d[i][j] = inside || (y0 + i < a.in_rows && x0 + j < a.in_cols)
                      ? simd::loadu(base + col[j] + i * a.in_rs)
                      : simd::splat(0.0f);
#pragma GCC unroll 8
    for (int j = 0; j < T; ++j) input_1d(W{}, &d[0][j], T, &t[0][j], T);
#pragma GCC unroll 8
    for (int u = 0; u < T; ++u) {
      input_1d(W{}, &t[u][0], 1, row, 1);
#pragma GCC unroll 8
      for (int w = 0; w < T; ++w) simd::storeu(v + ((u * T + w) * a.planes + p) * V, row[w]);
    }
  }
}

// m[k * points + point] = sum_p u[(point * planes + p) * kBlock + k] * v[point * planes + p].
template <class W>
void block_products(const float* v, int64_t planes, const float* u, vf* m) {
  constexpr int B = wg::kBlock;
  for (int xi = 0; xi < W::kPoints; ++xi) {
    const float* x = v + xi * planes * V;
    const float* w = u + xi * planes * B;
    vf acc[B];
#pragma GCC unroll 8
    for (int k = 0; k < B; ++k) acc[k] = simd::splat(0.0f);
    for (int64_t p = 0; p < planes; ++p) {
      const vf xv = simd::loadu(x + p * V);
#pragma GCC unroll 8
      for (int k = 0; k < B; ++k) acc[k] += simd::splat(w[p * B + k]) * xv;
    }
#pragma GCC unroll 8
    for (int k = 0; k < B; ++k) m[k * W::kPoints + xi] = acc[k];
  }
}

// The clamp inline: simd::activate's switch for every vector made the whole 16-image ResNet
// stem 1.09x slower (AMD EPYC Zen4).
inline vf activated(const WinogradArgs& a, vf o, int64_t co) {
  if (a.act.kind == kActClip) return simd::vmin(simd::splat(a.act.hi), simd::vmax(simd::splat(a.act.lo), o));
  return a.act.kind == kActNone ? o : simd::activate(o, a.act, co);
}

inline void store(const WinogradArgs& a, float* p, vf o) {
  if (a.stream) {
    simd::stream(p, o);
  } else {
    simd::storeu(p, o);
  }
}

// y = A^T m A (one channel's m x m outputs before bias and activation).
template <class W>
inline void inverse_tile(const vf* m, vf (&y)[W::kOut][W::kOut]) {
  constexpr int T = W::kTile, O = W::kOut;
  vf s[T][O];
#pragma GCC unroll 8
  for (int u = 0; u < T; ++u) output_1d(W{}, m + u * T, 1, &s[u][0], 1);
#pragma GCC unroll 8
  for (int x = 0; x < O; ++x) output_1d(W{}, &s[0][x], O, &y[0][x], O);
}

// A^T m A of channel co + bias, the activation, stored at the valid positions of the tile(s).
template <class W>
void output_tile(const WinogradArgs& a, const vf* m, int64_t co, int64_t y0, int64_t tx) {
  constexpr int O = W::kOut;
  vf y[O][O];
  inverse_tile<W>(m, y);
  const vf bias = simd::splat(a.bias ? a.bias[co] : 0.0f);
  const int64_t rows = a.rows - y0 < O ? a.rows - y0 : O;
  if constexpr (O == 3) {
    if (a.planar) {  // V tiles: output column 3 t + c of the row is lane t of y[r][c]
      float* out = a.out + co * a.out_cs + y0 * a.out_rs + tx * O * V;
      const int64_t floats = a.cols - tx * O * V;
      for (int64_t r = 0; r < rows; ++r) {
        vf q[O];
        simd::interleave3(activated(a, y[r][0] + bias, co), activated(a, y[r][1] + bias, co),
                          activated(a, y[r][2] + bias, co), q);
        float* row = out + r * a.out_rs;
#pragma GCC unroll 4
        for (int k = 0; k < O; ++k) {
          const int64_t n = floats - k * V;
          if (n >= V) {
            simd::storeu(row + k * V, q[k]);
          } else if (n > 0) {
            simd::store_partial(row + k * V, q[k], n);
          }
        }
      }
      return;
    }
  }
  const int64_t x0 = tx * O;
  float* out = a.out + co * a.out_cs + y0 * a.out_rs + x0 * V;
  const int64_t cols = a.cols - x0 < O ? a.cols - x0 : O;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      store(a, out + r * a.out_rs + c * V, activated(a, y[r][c] + bias, co));
}

// Pool rows (or columns) whose window holds conv row y: [first, last] (empty when first > last).
inline void pool_span(int64_t y, int64_t k, int64_t s, int64_t pad, int64_t n, int64_t* first,
                      int64_t* last) {
  const int64_t lo = y + pad - k + 1;  // window start i * s - pad >= y - k + 1
  *first = lo <= 0 ? 0 : (lo + s - 1) / s;
  *last = std::min(n - 1, (y + pad) / s);
}

// Max (NaN sticky both ways: x86 max returns its second operand when either is NaN).
inline vf max_nan(vf a, vf v) { return simd::select(v != v, v, simd::vmax(v, a)); }

// Like output_tile, then the tile's activated outputs join the maxima of the pool windows
// they lie in: per tile row the maxima over each window's columns inside the tile, then per
// window the maximum of those over its rows inside the tile, and one read-modify-write of the
// pool output (max is exact in any order, so results equal pooling the stored conv output).
template <class W>
void pool_tile(const WinogradArgs& a, const vf* m, int64_t co, int64_t y0, int64_t tx) {
  constexpr int O = W::kOut, S = O + kMaxPoolKernel - 1;
  vf y[O][O];
  inverse_tile<W>(m, y);
  const vf bias = simd::splat(a.bias ? a.bias[co] : 0.0f);
  const int64_t x0 = tx * O;
  const int rows = static_cast<int>(std::min<int64_t>(O, a.rows - y0));
  const int cols = static_cast<int>(std::min<int64_t>(O, a.cols - x0));
  int64_t i0, i1, j0, j1, unused;
  pool_span(y0, a.pool_kh, a.pool_sh, a.pool_pt, a.pool_rows, &i0, &unused);
  pool_span(y0 + rows - 1, a.pool_kh, a.pool_sh, a.pool_pt, a.pool_rows, &unused, &i1);
  pool_span(x0, a.pool_kw, a.pool_sw, a.pool_pl, a.pool_cols, &j0, &unused);
  pool_span(x0 + cols - 1, a.pool_kw, a.pool_sw, a.pool_pl, a.pool_cols, &unused, &j1);
  vf across[O][S];  // [tile row][pool column - j0]
  for (int r = 0; r < rows; ++r) {
    vf v[O];
    for (int c = 0; c < cols; ++c) v[c] = activated(a, y[r][c] + bias, co);
    for (int64_t j = j0; j <= j1; ++j) {
      const int64_t lo = std::max(x0, j * a.pool_sw - a.pool_pl);
      const int64_t hi = std::min(x0 + cols - 1, j * a.pool_sw - a.pool_pl + a.pool_kw - 1);
      if (lo > hi) continue;
      vf h = v[lo - x0];
      for (int64_t c = lo + 1; c <= hi; ++c) h = max_nan(h, v[c - x0]);
      across[r][j - j0] = h;
    }
  }
  float* out = a.out + co * a.out_cs;
  for (int64_t i = i0; i <= i1; ++i) {
    const int64_t lo = std::max(y0, i * a.pool_sh - a.pool_pt);
    const int64_t hi = std::min(y0 + rows - 1, i * a.pool_sh - a.pool_pt + a.pool_kh - 1);
    if (lo > hi) continue;
    for (int64_t j = j0; j <= j1; ++j) {
      const int64_t clo = std::max(x0, j * a.pool_sw - a.pool_pl);
      const int64_t chi = std::min(x0 + cols - 1, j * a.pool_sw - a.pool_pl + a.pool_kw - 1);
      if (clo > chi) continue;
      vf v = across[lo - y0][j - j0];
      for (int64_t r = lo + 1; r <= hi; ++r) v = max_nan(v, across[r - y0][j - j0]);
      float* p = out + i * a.out_rs + j * V;
      simd::storeu(p, max_nan(simd::loadu(p), v));
    }
  }
}

// Pool rows (first, last] of channels [c0, c1) to -infinity: the rows tile rows up to now
// reach first (tiles then only take maxima).
void pool_rows_init(const WinogradArgs& a, int64_t c0, int64_t c1, int64_t first, int64_t last) {
  const vf lowest = simd::splat(-std::numeric_limits<float>::infinity());
  for (int64_t co = c0; co < c1; ++co)
    for (int64_t i = first + 1; i <= last; ++i)
      for (int64_t j = 0; j < a.pool_cols; ++j)
        simd::storeu(a.out + co * a.out_cs + i * a.out_rs + j * V, lowest);
}

template <class W>
void winograd_tiles(const WinogradArgs& a, int64_t t0, int64_t t1) {
  constexpr int B = wg::kBlock, O = W::kOut;
  thread_local std::vector<float> scratch;
  const size_t need = static_cast<size_t>(W::kPoints * a.planes * V);
  if (scratch.size() < need) scratch.resize(need);
  float* v = scratch.data();
  alignas(64) vf m[B * W::kPoints];
  const int64_t tiles = (a.cols + O - 1) / O, blocks = (a.channels + B - 1) / B;
  const int64_t tiles_x = a.planar ? (tiles + V - 1) / V : tiles;  // tile vectors per row
  const int64_t b0 = a.block0, b1 = a.block1 < 0 ? blocks : std::min(blocks, a.block1);
  int64_t pool_ready = -1;  // pooled: rows up to here initialised (t0 is 0)
  for (int64_t ty = t0; ty < t1; ++ty) {
    const int64_t y0 = ty * O;
    if (a.pooled) {
      int64_t first, last;
      pool_span(std::min(a.rows, y0 + O) - 1, a.pool_kh, a.pool_sh, a.pool_pt, a.pool_rows,
                &first, &last);
      pool_rows_init(a, b0 * B, std::min(a.channels, b1 * B), pool_ready, last);
      pool_ready = std::max(pool_ready, last);
    }
    for (int64_t tx = 0; tx < tiles_x; ++tx) {
      input_tile<W>(a, y0, tx, v);
      for (int64_t b = b0; b < b1; ++b) {
        block_products<W>(v, a.planes, a.u + b * W::kPoints * a.planes * B, m);
        const int64_t count = a.channels - b * B < B ? a.channels - b * B : B;
        for (int64_t k = 0; k < count; ++k) {
          if (a.pooled) {
            pool_tile<W>(a, m + k * W::kPoints, b * B + k, y0, tx);
          } else {
            output_tile<W>(a, m + k * W::kPoints, b * B + k, y0, tx);
          }
        }
      }
    }
  }
  if (a.stream) simd::stream_fence();
}

}  // namespace

void conv_winograd(const WinogradArgs& a, int64_t t0, int64_t t1) {
  if (a.tile == wg::F5::kOut) {
    winograd_tiles<wg::F5>(a, t0, t1);
  } else {
    winograd_tiles<wg::F3>(a, t0, t1);
  }
}

}  // namespace FD_NS
}  // namespace fd
