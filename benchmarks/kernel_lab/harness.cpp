// Standalone timing harness for benchmarks/kernel_lab/tile_codegen.py (not part of the engine).
//
// One stride-1 3x3 conv with padding 1 on the batch-interleaved layout of 16 images (one AVX-512
// vector per position, padded planes), C input and output channels, HW x HW plane, ReLU. It times
//   tiles: the generated straight-line kernel (kernel.cpp, conv_tiles), and
//   pairs: the engine's loop structure (runtime/native/conv_csr.cpp run_pair, without its
//          input-channel blocks): two output channels x 8 vectors, one CSR tap (offset, weight)
//          at a time,
// on the same input and weights, and prints GMAC/s of each and the largest output difference.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "dims.h"  // C_, HW_ (written by tile_codegen.py)

void conv_tiles(const float* in, float* out, long cs, long rs, long ocs, long ors, long H, long W);

namespace {

struct Csr {
  std::vector<int32_t> ptr, off;
  std::vector<float> val;
};

template <int L>
inline void tap(const float* base, int32_t off, float val, __m512 (&acc)[L]) {
  const __m512 w = _mm512_set1_ps(val);
  const float* src = base + off;
#pragma GCC unroll 16
  for (int k = 0; k < L; ++k) acc[k] = _mm512_fmadd_ps(w, _mm512_loadu_ps(src + k * 16), acc[k]);
}

struct AlignedFloats {
  explicit AlignedFloats(long n)
      : p(static_cast<float*>(std::aligned_alloc(64, ((n * 4 + 63) / 64) * 64))) {
    std::fill(p, p + n, 0.0f);
  }
  ~AlignedFloats() { std::free(p); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float& operator[](long i) { return p[i]; }
  float* data() { return p; }
  float* p;
};

__attribute__((noinline)) void conv_pairs(const Csr& c, const float* in, float* out, long rs,
                                          long ocs, long ors, long H, long W, long O) {
  for (long r = 0; r < H; ++r)
    for (long p0 = 0; p0 < W; p0 += 8) {
      const float* base = in + r * rs + p0 * 16;
      for (long oc = 0; oc < O; oc += 2) {
        __m512 a0[8], a1[8];
        for (int k = 0; k < 8; ++k) a0[k] = a1[k] = _mm512_setzero_ps();
        const int32_t j0 = c.ptr[oc], e0 = c.ptr[oc + 1], j1 = c.ptr[oc + 1], e1 = c.ptr[oc + 2];
        const int32_t n = std::min(e0 - j0, e1 - j1);
        int32_t i = 0;
        for (; i + 4 <= n; i += 4) {
#pragma GCC unroll 4
          for (int q = 0; q < 4; ++q) {
            tap<8>(base, c.off[j0 + i + q], c.val[j0 + i + q], a0);
            tap<8>(base, c.off[j1 + i + q], c.val[j1 + i + q], a1);
          }
        }
        for (; i < n; ++i) {
          tap<8>(base, c.off[j0 + i], c.val[j0 + i], a0);
          tap<8>(base, c.off[j1 + i], c.val[j1 + i], a1);
        }
        for (int32_t t = j0 + n; t < e0; ++t) tap<8>(base, c.off[t], c.val[t], a0);
        for (int32_t t = j1 + n; t < e1; ++t) tap<8>(base, c.off[t], c.val[t], a1);
        float* o0 = out + oc * ocs + r * ors + p0 * 16;
        for (int k = 0; k < 8; ++k) {
          _mm512_storeu_ps(o0 + k * 16, _mm512_max_ps(a0[k], _mm512_setzero_ps()));
          _mm512_storeu_ps(o0 + ocs + k * 16, _mm512_max_ps(a1[k], _mm512_setzero_ps()));
        }
      }
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: harness WEIGHTS.f32\n");
    return 2;
  }
  const long C = C_, O = C_, H = HW_, W = HW_;
  const long rs = (W + 2) * 16, cs = (H + 2) * rs + 16, ors = W * 16, ocs = H * ors + 16;
  std::vector<float> weights(O * C * 9);
  FILE* f = std::fopen(argv[1], "rb");
  if (!f || std::fread(weights.data(), 4, weights.size(), f) != weights.size()) {
    std::fprintf(stderr, "cannot read %zu weights from %s\n", weights.size(), argv[1]);
    return 2;
  }
  std::fclose(f);
  // Padded input (borders zero), outputs of both kernels; 64-byte aligned, as in the engine's
  // arena (a std::vector's 16-byte alignment makes every load straddle two lines: 1.6x slower).
  AlignedFloats in(C * cs + 64), out_tiles(O * ocs + 64), out_pairs(O * ocs + 64);
  for (long c = 0; c < C; ++c)
    for (long r = 1; r <= H; ++r)
      for (long i = 16; i < (W + 1) * 16; ++i)
        in[c * cs + r * rs + i] = static_cast<float>((c * 7919 + r * 104729 + i * 31) % 1000) / 1000.0f - 0.3f;
  Csr csr;
  csr.ptr.push_back(0);
  for (long oc = 0; oc < O; ++oc) {
    for (long ic = 0; ic < C; ++ic)
      for (long kh = 0; kh < 3; ++kh)
        for (long kw = 0; kw < 3; ++kw) {
          const float v = weights[((oc * C + ic) * 3 + kh) * 3 + kw];
          if (v == 0.0f) continue;
          csr.off.push_back(static_cast<int32_t>(ic * cs + kh * rs + kw * 16));
          csr.val.push_back(v);
        }
    csr.ptr.push_back(static_cast<int32_t>(csr.off.size()));
  }
  const double macs = static_cast<double>(csr.off.size()) * H * W * 16;
  double tiles_s = 1e9, pairs_s = 1e9;
  for (int it = 0; it < 60; ++it) {  // alternating; best of each
    const auto t0 = std::chrono::steady_clock::now();
    conv_tiles(in.data(), out_tiles.data(), cs, rs, ocs, ors, H, W);
    const auto t1 = std::chrono::steady_clock::now();
    conv_pairs(csr, in.data(), out_pairs.data(), rs, ocs, ors, H, W, O);
    const auto t2 = std::chrono::steady_clock::now();
    tiles_s = std::min(tiles_s, std::chrono::duration<double>(t1 - t0).count());
    pairs_s = std::min(pairs_s, std::chrono::duration<double>(t2 - t1).count());
  }
  double diff = 0.0;
  for (long oc = 0; oc < O; ++oc)
    for (long i = 0; i < H * ors; ++i)
      diff = std::max(diff, static_cast<double>(std::fabs(out_tiles[oc * ocs + i] - out_pairs[oc * ocs + i])));
  std::printf("tiles %.1f GMAC/s  pairs %.1f GMAC/s  tiles/pairs %.2f  max |difference| %.1e\n",
              macs / tiles_s / 1e9, macs / pairs_s / 1e9, pairs_s / tiles_s, diff);
  return diff == 0.0 ? 0 : 1;
}
