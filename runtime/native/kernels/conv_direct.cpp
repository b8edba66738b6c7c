// Direct strided convolution for convs with few taps per output channel (one ISA variant per
// compilation): a depthwise conv has at most 9 (fewer when pruned), so splitting its input into
// stride phases would move more memory than the taps compute (PlannerOptions.direct_max_taps).
//
// Loop structure, per image and output channel [c0, c1), per output row, per block of U output
// vectors (U = 4, then the 1 to 4 left, the last one partial):
//   acc[u] = bias; for each tap j: acc[u] += w_j * in[off_j + oh * row_step + ow * sw]
// with the accumulators in registers (stride 2: each tap's inputs are a de-interleaved pair of
// loads), then residual and clamp in registers and a (masked, for the last vector) store; other
// activations run over the stored row. Strides other than 1 and 2 add each tap's row into an
// L1 scratch row in turn.
// Reference: runtime/kernels/reference.py (conv2d).
#include <algorithm>
#include <vector>

#include "activation_simd.h"
#include "conv_kernels.h"
#include "simd.h"

namespace fd {
namespace FD_NS {

using simd::V;
using simd::vf;

namespace {

// The first n floats at p (all V when n >= V), 0 in the other lanes; reads nothing past p + n.
inline vf load_upto(const float* p, int64_t n) {
  if (n >= V) return simd::loadu(p);
  return n > 0 ? simd::load_partial(p, n, 0.0f) : simd::splat(0.0f);
}

// src[i * SW] for i < n (n <= V; lanes past n are 0 when partial), reading nothing past
// src[(n - 1) * SW] when partial; a whole vector of stride 2 reads src[2V - 1] too.
template <int SW, bool PARTIAL>
inline vf tap_inputs(const float* src, int64_t n) {
  static_assert(SW == 1 || SW == 2, "strides 1 and 2 only");
#if defined(FD_HAS_SHUFFLEVECTOR)
  if constexpr (SW == 2) {
    const int64_t reach = PARTIAL ? 2 * n - 1 : 2 * V;
    vf even, odd;
    simd::deinterleave(load_upto(src, reach), load_upto(src + V, reach - V), &even, &odd);
    return even;
  }
#endif
  return PARTIAL ? load_upto(src, n) : simd::loadu(src);
}

// Where one row block's outputs go: out[0 .. U * V) (the last vector's first n only when
// partial), residual res (null: none) added, then clamped to [lo, hi] when clamp.
struct RowOut {
  float* out;
  const float* res;
  int64_t n;
};

// Residual and clamp in registers, then the store; a partial last vector reads and writes only
// its first n lanes (the row may end at its buffer's end). Residual before clamp, as everywhere.
template <int U, bool LAST_PARTIAL, bool RES, bool CLAMP>
__attribute__((always_inline)) inline void store_block(const ConvKernelArgs& a, const vf (&sum)[U],
                                                       const RowOut& to) {
  const vf lo = simd::splat(a.act.lo), hi = simd::splat(a.act.hi);
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    const bool partial = LAST_PARTIAL && u == U - 1;
    vf v = sum[u];
    if constexpr (RES)
      v += partial ? simd::load_partial(to.res + u * V, to.n, 0.0f) : simd::loadu(to.res + u * V);
    if constexpr (CLAMP) v = simd::vmin(hi, simd::vmax(lo, v));
    if (partial) {
      simd::store_partial(to.out + u * V, v, to.n);
    } else {
      simd::storeu(to.out + u * V, v);
    }
  }
}

// Two accumulator sets of U vectors (two FMA chains per vector): the first starts at the bias.
template <int U>
__attribute__((always_inline)) inline void start_row_block(float bias, vf (&first)[U],
                                                           vf (&second)[U]) {
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) {
    first[u] = simd::splat(bias);
    second[u] = simd::splat(0.0f);
  }
}

// The sum of both accumulator sets, stored (store_block).
template <int U, bool LAST_PARTIAL>
__attribute__((always_inline)) inline void store_row_block(const ConvKernelArgs& a,
                                                           const vf (&first)[U],
                                                           const vf (&second)[U],
                                                           const RowOut& to) {
  vf sum[U];
#pragma GCC unroll 4
  for (int u = 0; u < U; ++u) sum[u] = first[u] + second[u];
  const bool clamp = a.act.kind == kActClip;
  if (to.res) {
    if (clamp) store_block<U, LAST_PARTIAL, true, true>(a, sum, to);
    else store_block<U, LAST_PARTIAL, true, false>(a, sum, to);
  } else {
    if (clamp) store_block<U, LAST_PARTIAL, false, true>(a, sum, to);
    else store_block<U, LAST_PARTIAL, false, false>(a, sum, to);
  }
}

// Bias plus every tap of U output vectors of one row, in registers, then stored (store_block).
// With LAST_PARTIAL the last vector loads only the inputs of its first n outputs (1 <= n <= V).
// Taps alternate between two sets of accumulators, so even one vector keeps two FMA chains in
// flight.
template <int SW, int U, bool LAST_PARTIAL>
__attribute__((always_inline)) inline void row_block(const ConvKernelArgs& a, int64_t oc,
                                                     const float* in_row, float bias,
                                                     const RowOut& to) {
  const int64_t n = to.n;
  vf even[U], odd[U];
  start_row_block<U>(bias, even, odd);
  const auto add_tap = [&](vf (&sum)[U], int32_t j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = in_row + a.off[j];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const float* from = src + u * V * SW;
      sum[u] += w * (LAST_PARTIAL && u == U - 1 ? tap_inputs<SW, true>(from, n)
                                                : tap_inputs<SW, false>(from, V));
    }
  };
  const int32_t j1 = a.ptr[oc + 1];
  int32_t j = a.ptr[oc];
  for (; j + 1 < j1; j += 2) {
    add_tap(even, j);
    add_tap(odd, j + 1);
  }
  if (j < j1) add_tap(even, j);
  store_row_block<U, LAST_PARTIAL>(a, even, odd, to);
}

#if defined(FD_HAS_SHUFFLEVECTOR)
// Stride 2, as row_block, with the loads of one input row's taps shared: taps are taken in
// runs whose offsets lie within [o, o + 2] (one row of a 3x3 kernel). Each vector loads the
// run's 2V inputs from o once and de-interleaves them: the even lanes are the inputs of offset
// o, the odd ones of o + 1, and the even lanes moved down one (the next vector's first even
// lane last) those of o + 2. Per vector and row of three taps, 2 loads and 3 shuffles instead
// of 6 loads and 3 shuffles (96 channels at 112 px, AMD EPYC Zen4: 0.234 -> 0.200 ms).
template <int U, bool LAST_PARTIAL>
__attribute__((always_inline)) inline void row_block_s2(const ConvKernelArgs& a, int64_t oc,
                                                        const float* in_row, float bias,
                                                        const RowOut& to) {
  const int64_t n = to.n;
  vf acc0[U], acc1[U];
  start_row_block<U>(bias, acc0, acc1);
  const int32_t e = a.ptr[oc + 1];
  for (int32_t j = a.ptr[oc]; j < e;) {
    const int32_t o = a.off[j];
    float w[3] = {0.0f, 0.0f, 0.0f};
    bool has[3] = {false, false, false};  // a pruned tap must not add 0 * inf
    for (; j < e && a.off[j] - o <= 2; ++j) {
      w[a.off[j] - o] = a.val[j];
      has[a.off[j] - o] = true;
    }
    const float* src = in_row + o;
    vf ev[U], od[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const int64_t reach = LAST_PARTIAL && u == U - 1 ? 2 * n : 2 * V;  // odd lane n - 1: 2n - 1
      simd::deinterleave(load_upto(src + u * 2 * V, reach), load_upto(src + u * 2 * V + V, reach - V),
                         &ev[u], &od[u]);
    }
    if (has[0]) {
      const vf w0 = simd::splat(w[0]);
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc0[u] += w0 * ev[u];
    }
    if (has[1]) {
      const vf w1 = simd::splat(w[1]);
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) acc1[u] += w1 * od[u];
    }
    if (has[2]) {
      const vf w2 = simd::splat(w[2]);
#pragma GCC unroll 4
      for (int u = 0; u + 1 < U; ++u) acc0[u] += w2 * simd::lanes_next(ev[u], ev[u + 1]);
      // The last vector's next even lane is past what it loaded: its own pair of loads.
      acc1[U - 1] += w2 * tap_inputs<2, LAST_PARTIAL>(src + 2 + (U - 1) * 2 * V, n);
    }
  }
  store_row_block<U, LAST_PARTIAL>(a, acc0, acc1, to);
}
#endif

template <int SW, int U, bool LAST_PARTIAL>
__attribute__((always_inline)) inline void any_block(const ConvKernelArgs& a, int64_t oc,
                                                     const float* in_row, float bias,
                                                     const RowOut& to) {
#if defined(FD_HAS_SHUFFLEVECTOR)
  if constexpr (SW == 2 && U >= 3) {  // shorter rows: 1.3-1.5x slower than separate loads
    row_block_s2<U, LAST_PARTIAL>(a, oc, in_row, bias, to);
    return;
  }
#endif
  row_block<SW, U, LAST_PARTIAL>(a, oc, in_row, bias, to);
}

// out[0..OW) = bias + taps of the output row at in_row (+ residual, clamped): blocks of 4
// vectors, then the rest (1 to 4 vectors, the last loading and storing only its outputs).
template <int SW>
void direct_row(const ConvKernelArgs& a, int64_t oc, const float* in_row, float bias, float* out,
                const float* res, int64_t OW) {
  int64_t k = 0;
  // While more outputs follow a block, its whole stride-2 vectors may read one float past.
  for (; OW - k > 4 * V; k += 4 * V)
    any_block<SW, 4, false>(a, oc, in_row + k * SW, bias, {out + k, res ? res + k : nullptr, V});
  const int64_t rest = OW - k, vectors = (rest + V - 1) / V, last = rest - (vectors - 1) * V;
  const float* from = in_row + k * SW;
  const RowOut to{out + k, res ? res + k : nullptr, last};
  switch (vectors) {
    case 1: any_block<SW, 1, true>(a, oc, from, bias, to); break;
    case 2: any_block<SW, 2, true>(a, oc, from, bias, to); break;
    case 3: any_block<SW, 3, true>(a, oc, from, bias, to); break;
    case 4: any_block<SW, 4, true>(a, oc, from, bias, to); break;
    default: break;
  }
}

// acc[0..n) += w * src[k * sw] for k < n.
inline void tap_row(float* acc, const float* src, int64_t n, int64_t sw, float w) {
  for (int64_t k = 0; k < n; ++k) acc[k] += w * src[k * sw];
}

}  // namespace

void conv_direct(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t OH = a.rows, OW = a.positions, sw = a.in_pos_step;
  thread_local std::vector<float> scratch;
  if (scratch.size() < static_cast<size_t>(OW + V)) scratch.resize(OW + V);
  float* acc = scratch.data();
  for (int64_t n = 0; n < a.images; ++n) {
    const float* in = a.in + n * a.in_is;
    for (int64_t oc = c0; oc < c1; ++oc) {
      if (skipped(a, oc)) continue;
      float* out = a.out + n * a.out_is + oc * a.out_cs;
      const float* res = a.res ? a.res + n * a.res_is + oc * a.res_cs : nullptr;
      const float b = a.bias ? a.bias[oc] : 0.0f;
      for (int64_t oh = 0; oh < OH; ++oh) {
        const float* in_row = in + oh * a.in_row_step;
        float* o = out + oh * a.out_rs;
        const float* r = res ? res + oh * a.res_rs : nullptr;
        if (sw == 1) {
          direct_row<1>(a, oc, in_row, b, o, r, OW);
#if defined(FD_HAS_SHUFFLEVECTOR)
        } else if (sw == 2) {
          direct_row<2>(a, oc, in_row, b, o, r, OW);
#endif
        } else {
          for (int64_t k = 0; k < OW; ++k) acc[k] = b;
          for (int32_t j = a.ptr[oc]; j < a.ptr[oc + 1]; ++j)
            tap_row(acc, in_row + a.off[j], OW, sw, a.val[j]);
          if (r) {
            for (int64_t k = 0; k < OW; ++k) acc[k] += r[k];
          }
          activate_row(acc, o, OW, a.act, oc);
          continue;
        }
        if (!a.act.is_clamp()) activate_row(o, o, OW, a.act, oc);
      }
    }
  }
}

}  // namespace FD_NS
}  // namespace fd
