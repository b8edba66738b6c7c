// Portable SIMD vocabulary for the hot kernels (GCC/Clang vector extensions).
//
// The kernel sources are compiled once per instruction set (see setup.py): FD_VLEN is the number of
// floats per vector for that build (4 = SSE2/NEON baseline, 8 = AVX2, 16 = AVX-512). The same
// source then becomes xmm, ymm or zmm code; nothing here assumes a particular ISA. Everything
// lives in the build's own namespace (FD_NS): the vector types differ between builds, so shared
// inline names would break the one-definition rule.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__SSE__)
#include <immintrin.h>
#endif

#if !defined(FD_VLEN) || !defined(FD_NS)
#error "kernel sources are compiled per ISA: setup.py defines FD_VLEN and FD_NS"
#endif

namespace fd {
namespace FD_NS {
namespace simd {

constexpr int V = FD_VLEN;
typedef float vf __attribute__((vector_size(FD_VLEN * 4)));
typedef int32_t vi __attribute__((vector_size(FD_VLEN * 4)));

// Unaligned load/store: memcpy compiles to one vector move and is well defined for any address.
inline vf loadu(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void storeu(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
// x - 0 folds to a plain broadcast (0 + x would not: -0.0), so weights become embedded broadcasts.
inline vf splat(float x) { return x - vf{}; }

// Lane-wise max/min with the x86 semantics (a NaN in either operand yields b): one instruction
// where the ISA has it, compare masks elsewhere (ternaries on vectors differ between compilers).
// Clamps pass the value second (vmax(lo, v)), so a NaN value stays NaN.
#if defined(__AVX512F__) && FD_VLEN == 16
// (The all-lanes masked form: GCC 12's unmasked one warns about its undefined pass-through.)
inline vf vmax(vf a, vf b) { return (vf)_mm512_mask_max_ps((__m512)a, 0xFFFF, (__m512)a, (__m512)b); }
inline vf vmin(vf a, vf b) { return (vf)_mm512_mask_min_ps((__m512)a, 0xFFFF, (__m512)a, (__m512)b); }
#elif defined(__AVX__) && FD_VLEN == 8
inline vf vmax(vf a, vf b) { return (vf)_mm256_max_ps((__m256)a, (__m256)b); }
inline vf vmin(vf a, vf b) { return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
#elif defined(__SSE__) && FD_VLEN == 4
inline vf vmax(vf a, vf b) { return (vf)_mm_max_ps((__m128)a, (__m128)b); }
inline vf vmin(vf a, vf b) { return (vf)_mm_min_ps((__m128)a, (__m128)b); }
#else
inline vf vmax(vf a, vf b) {
  vi m = a > b;
  return (vf)((m & (vi)a) | (~m & (vi)b));
}
inline vf vmin(vf a, vf b) {
  vi m = a < b;
  return (vf)((m & (vi)a) | (~m & (vi)b));
}
#endif
// Splits 2V consecutive floats (lo, hi) into their even and odd elements: a stride-2 phase split.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FD_HAS_SHUFFLEVECTOR 1
inline void deinterleave(vf lo, vf hi, vf* even, vf* odd) {
#if FD_VLEN == 16
  *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#elif FD_VLEN == 8
  *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
  *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
#else
  *even = __builtin_shufflevector(lo, hi, 0, 2, 4, 6);
  *odd = __builtin_shufflevector(lo, hi, 1, 3, 5, 7);
#endif
}
#endif

// Lanes moved one place up (lane i gets lane i - 1, lane 0 gets 0) or down (lane i gets lane
// i + 1, the last lane gets 0): the halo positions of the column-segment layout (ConvKernelArgs::
// halo), where lane i holds the i-th segment of a row.
#if defined(FD_HAS_SHUFFLEVECTOR)
inline vf lanes_up(vf v) {
  const vf z{};
#if FD_VLEN == 16
  return __builtin_shufflevector(z, v, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
#elif FD_VLEN == 8
  return __builtin_shufflevector(z, v, 7, 8, 9, 10, 11, 12, 13, 14);
#else
  return __builtin_shufflevector(z, v, 3, 4, 5, 6);
#endif
}
inline vf lanes_down(vf v) {
  const vf z{};
#if FD_VLEN == 16
  return __builtin_shufflevector(v, z, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
#elif FD_VLEN == 8
  return __builtin_shufflevector(v, z, 1, 2, 3, 4, 5, 6, 7, 8);
#else
  return __builtin_shufflevector(v, z, 1, 2, 3, 4);
#endif
}
// Lane i gets lane i + 1 of a, the last lane gets lane 0 of b: a row's vector one float on,
// from the vector a and the one after it, b.
inline vf lanes_next(vf a, vf b) {
#if FD_VLEN == 16
  return __builtin_shufflevector(a, b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
#elif FD_VLEN == 8
  return __builtin_shufflevector(a, b, 1, 2, 3, 4, 5, 6, 7, 8);
#else
  return __builtin_shufflevector(a, b, 1, 2, 3, 4);
#endif
}
#else
// Lane i gets lane i - step (0 where that is outside the vector).
inline vf lanes_shifted(vf v, int step) {
  float in[V], out[V];
  std::memcpy(in, &v, sizeof v);
  for (int i = 0; i < V; ++i) out[i] = i - step >= 0 && i - step < V ? in[i - step] : 0.0f;
  std::memcpy(&v, out, sizeof v);
  return v;
}
inline vf lanes_up(vf v) { return lanes_shifted(v, 1); }
inline vf lanes_down(vf v) { return lanes_shifted(v, -1); }
#endif

// The first n (<= V) floats at p, the other lanes `fill`; reads nothing past p + n.
inline vf load_partial(const float* p, int64_t n, float fill) {
#if defined(__AVX512F__) && FD_VLEN == 16
  return (vf)_mm512_mask_loadu_ps(_mm512_set1_ps(fill), (__mmask16)((1u << n) - 1u), p);
#else
  float lanes[V];
  for (int i = 0; i < V; ++i) lanes[i] = i < n ? p[i] : fill;
  return loadu(lanes);
#endif
}

// Stores the first n (<= V) lanes of v at p; writes nothing past p + n.
inline void store_partial(float* p, vf v, int64_t n) {
#if defined(__AVX512F__) && FD_VLEN == 16
  _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
#else
  float lanes[V];
  std::memcpy(lanes, &v, sizeof v);
  std::memcpy(p, lanes, static_cast<size_t>(n) * sizeof(float));
#endif
}

// q = the 3V floats a0 b0 c0 a1 b1 c1 ... (lane t of a, b and c at 3t, 3t + 1, 3t + 2).
#if defined(__GNUC__) && !defined(__clang__)
template <int Q>
inline vi interleave3_first() {  // lanes taken from a (index t) or b (index V + t)
  vi m{};
  for (int l = 0; l < V; ++l) {
    const int g = Q * V + l, t = g / 3, c = g % 3;
    m[l] = c == 0 ? t : (c == 1 ? V + t : 0);
  }
  return m;
}
template <int Q>
inline vi interleave3_second() {  // then the lanes from c (index V + t), the rest kept
  vi m{};
  for (int l = 0; l < V; ++l) {
    const int g = Q * V + l;
    m[l] = g % 3 == 2 ? V + g / 3 : l;
  }
  return m;
}
template <int Q>
inline vf interleave3_part(vf a, vf b, vf c) {
  return __builtin_shuffle(__builtin_shuffle(a, b, interleave3_first<Q>()), c,
                           interleave3_second<Q>());
}
inline void interleave3(vf a, vf b, vf c, vf* q) {
  q[0] = interleave3_part<0>(a, b, c);
  q[1] = interleave3_part<1>(a, b, c);
  q[2] = interleave3_part<2>(a, b, c);
}
#else
inline void interleave3(vf a, vf b, vf c, vf* q) {
  float in[3][V], out[3 * V];
  std::memcpy(in[0], &a, sizeof a);
  std::memcpy(in[1], &b, sizeof b);
  std::memcpy(in[2], &c, sizeof c);
  for (int g = 0; g < 3 * V; ++g) out[g] = in[g % 3][g / 3];
  for (int k = 0; k < 3; ++k) std::memcpy(&q[k], out + k * V, sizeof q[k]);
}
#endif

// A store that bypasses the caches (p aligned to the vector), for outputs far larger than the
// caches that the next step reads back from memory anyway: no read-for-ownership of the line.
// stream_fence() orders such stores before the step ends.
inline void stream(float* p, vf v) {
#if defined(__AVX512F__) && FD_VLEN == 16
  _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__) && FD_VLEN == 8
  _mm256_stream_ps(p, (__m256)v);
#elif defined(__SSE__) && FD_VLEN == 4
  _mm_stream_ps(p, (__m128)v);
#else
  storeu(p, v);
#endif
}
inline void stream_fence() {
#if defined(__SSE__)
  _mm_sfence();
#endif
}

// Keep lanes whose mask word is all ones, zero the others (a bitwise AND, so NaN garbage is dropped).
inline vf keep(vf v, const uint32_t* mask) {
  vi m;
  std::memcpy(&m, mask, sizeof m);
  return (vf)((vi)v & m);
}

// Lanes where mask is all ones take a, the others b (mask from a vector comparison).
inline vf select(vi mask, vf a, vf b) { return (vf)((mask & (vi)a) | (~mask & (vi)b)); }

}  // namespace simd
}  // namespace FD_NS
}  // namespace fd
