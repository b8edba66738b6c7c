// Unstructured sparse direct convolution on CSR weights (one ISA variant per compilation).
//
// Loop structure, for one image and output channels [c0, c1):
//   for each chunk of U vectors of the stream (U <= 16 accumulators held in registers; U is
//   chosen so the chunk's input window over all input planes stays in L1):
//     for oc in [c0, c1):                      (threads own disjoint channel ranges)
//       acc[0..U) = bias[oc]
//       for j in nonzeros(oc):                 (CSR row: tap offset + weight)
//         w = broadcast(val[j]); src = in + off[j] + chunk
//         acc[u] += w * src[u*V .. u*V+V)      (unaligned loads, one FMA per vector)
//       epilogue(acc)                          (residual, clamp, masked store)
// Planes shorter than 4 vectors use 4 partial sums per vector instead (FMA latency).
// The input window is loaded from L2 once per chunk and then reused by every output channel.
// Reference: runtime/ops/conv.py (NumPy).
#include "conv_epilogue.h"

#include <vector>

namespace fd {
namespace FD_NS {

template <int U, bool FAST>
static inline void csr_chunk(const ConvKernelArgs& a, int64_t oc, int64_t p0) {
  vf acc[U];
  const vf b = bias_splat(a, oc);
  #pragma GCC unroll 16
  for (int u = 0; u < U; ++u) acc[u] = b;
  const float* base = a.in + p0;
#pragma GCC unroll 2
  for (int32_t j = a.ptr[oc], e = a.ptr[oc + 1]; j < e; ++j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = base + a.off[j];
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[u] += w * simd::loadu(src + u * V);
  }
  conv_epilogue<U, FAST>(a, oc, p0, acc);
}

// Small planes (fewer than 4 vectors per channel): one accumulator chain per vector would wait
// on FMA latency, so taps alternate between 4 partial sums that are added before the epilogue.
template <int U, bool FAST>
static inline void csr_chunk_split(const ConvKernelArgs& a, int64_t oc, int64_t p0) {
  vf acc[4][U];
  #pragma GCC unroll 16
  for (int q = 0; q < 4; ++q)
    #pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[q][u] = simd::splat(0.0f);
  const vf b = bias_splat(a, oc);
  #pragma GCC unroll 16
  for (int u = 0; u < U; ++u) acc[0][u] = b;
  const float* base = a.in + p0;
  int32_t j = a.ptr[oc];
  const int32_t e = a.ptr[oc + 1];
  for (; j + 4 <= e; j += 4) {
    #pragma GCC unroll 16
    for (int q = 0; q < 4; ++q) {
      const vf w = simd::splat(a.val[j + q]);
      const float* src = base + a.off[j + q];
      #pragma GCC unroll 16
      for (int u = 0; u < U; ++u) acc[q][u] += w * simd::loadu(src + u * V);
    }
  }
  for (; j < e; ++j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = base + a.off[j];
    #pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[0][u] += w * simd::loadu(src + u * V);
  }
  #pragma GCC unroll 16
  for (int u = 0; u < U; ++u) acc[0][u] += (acc[1][u] + acc[2][u]) + acc[3][u];
  conv_epilogue<U, FAST>(a, oc, p0, acc[0]);
}

constexpr int kChunk = V >= 16 ? 16 : 8;
// Vectors per channel in one chunk of the interleaved kernel: two channels' accumulators fill
// the registers (run_pair). (The planar kernel measured no better with pairs: ResNet-50 conv2_x
// batch 1 3.0 -> 3.15 ms.)
constexpr int kPair = kChunk / 2;

// Exact-size instance for n <= kChunk vectors, so the accumulators stay in registers.
template <bool FAST>
static inline void csr_n(const ConvKernelArgs& a, int64_t oc, int64_t p0, int64_t n) {
  with_vector_count(n, [&](auto u) { csr_chunk<decltype(u)::value, FAST>(a, oc, p0); });
}

// Vectors per chunk: the input window one chunk reads from every input plane (chunk + the
// taps' reach) should stay in L1 while all output channels of the range sweep over it.
static int64_t chunk_vectors(const ConvKernelArgs& a) {
  constexpr int64_t kL1Floats = 16 * 1024;  // 64 KB: L1 plus streamed L2 hits; bigger chunks won
  const int64_t planes = a.window_planes > 0 ? a.window_planes : 1;
  int64_t n = kChunk;
  while (n > 4 && planes * (n * V + a.window_reach) > kL1Floats) n /= 2;
  return n;
}

template <bool FAST>
static void csr_channels(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t nvec = (a.len + V - 1) / V;
  if (nvec < 4) {
    for (int64_t oc = c0; oc < c1; ++oc) {
      if (skipped(a, oc)) continue;
      switch (nvec) {
        case 1: csr_chunk_split<1, FAST>(a, oc, 0); break;
        case 2: csr_chunk_split<2, FAST>(a, oc, 0); break;
        default: csr_chunk_split<3, FAST>(a, oc, 0); break;
      }
    }
    return;
  }
  // Chunks outer, channels inner: every channel of the range reuses the chunk's input window.
  // A plane that fits one chunk is one chunk; otherwise chunks are balanced (no tiny tail).
  int64_t chunk = nvec <= kChunk ? nvec : chunk_vectors(a);
  const int64_t count = (nvec + chunk - 1) / chunk;
  chunk = (nvec + count - 1) / count;
  for (int64_t v = 0; v < nvec; v += chunk) {
    const int64_t n = nvec - v < chunk ? nvec - v : chunk;
    for (int64_t oc = c0; oc < c1; ++oc) {
      if (!skipped(a, oc)) csr_n<FAST>(a, oc, v * V, n);
    }
  }
}

// Several images with tiny planes (<= 4 vectors): each weight is loaded once for G images, and
// the G x U accumulators are independent chains (no FMA-latency stall).
template <int G, int U, bool FAST>
static inline void csr_images(const ConvKernelArgs& a, int64_t oc, int64_t g0) {
  vf acc[G][U];
  const vf b = bias_splat(a, oc);
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g)
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[g][u] = b;
  const float* base = a.in + g0 * a.in_is;
  for (int32_t j = a.ptr[oc], e = a.ptr[oc + 1]; j < e; ++j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = base + a.off[j];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 16
      for (int u = 0; u < U; ++u) acc[g][u] += w * simd::loadu(src + g * a.in_is + u * V);
  }
#pragma GCC unroll 16
  for (int g = 0; g < G; ++g) conv_epilogue<U, FAST>(a, oc, 0, acc[g], g0 + g);
}

template <int G, bool FAST>
static void csr_image_group(const ConvKernelArgs& a, int64_t c0, int64_t c1, int64_t g0,
                            int64_t nvec) {
  for (int64_t oc = c0; oc < c1; ++oc) {
    if (skipped(a, oc)) continue;
    switch (nvec) {
      case 1: csr_images<G, 1, FAST>(a, oc, g0); break;
      case 2: csr_images<G, 2, FAST>(a, oc, g0); break;
      case 3: csr_images<G, 3, FAST>(a, oc, g0); break;
      default: csr_images<G, 4, FAST>(a, oc, g0); break;
    }
  }
}

template <bool FAST>
static void csr_batch(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t nvec = (a.len + V - 1) / V;
  int64_t g0 = 0;
  if (nvec <= 4 && V >= 16) {  // 16 accumulators need the 32 AVX-512 registers
    for (; g0 + 4 <= a.images; g0 += 4) csr_image_group<4, FAST>(a, c0, c1, g0, nvec);
  }
  // Remaining images (and large planes): one image at a time.
  for (; g0 < a.images; ++g0) {
    ConvKernelArgs one = a;
    one.in = a.in + g0 * a.in_is;
    one.out = a.out + g0 * a.out_is;
    one.res = a.res ? a.res + g0 * a.res_is : nullptr;
    one.images = 1;
    csr_channels<FAST>(one, c0, c1);
  }
}

void conv_csr(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  if (a.fast) {
    csr_batch<true>(a, c0, c1);
  } else {
    csr_batch<false>(a, c0, c1);
  }
}

// Conv on batch-interleaved planes whose positions are whole vectors (lanes % V == 0), any
// stride, without a stride-phase split and without computing border lanes: output vector t
// (row t / (P vp), position (t / vp) % P, part t % vp, with P positions per row and
// vp = lanes / V) reads each tap's input at
//     row * in_row_step + position * in_pos_step + part * V
// from the tap's offset. Chunks of up to 16 output vectors (across rows: tiny planes fill them)
// with per-vector offsets computed once per chunk; every stored vector is a valid output.
template <int U>
static inline void strided_chunk(const ConvKernelArgs& a, int64_t oc, const int64_t* in_off,
                                 const int64_t* out_off) {
  vf acc[U];
  const vf b = bias_splat(a, oc);
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) acc[u] = b;
  for (int32_t j = a.ptr[oc], e = a.ptr[oc + 1]; j < e; ++j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = a.in + a.off[j];
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[u] += w * simd::loadu(src + in_off[u]);
  }
  float* o = a.out + oc * a.out_cs;
  const float* r = a.res ? a.res + oc * a.res_cs : nullptr;
  finish_vectors<U, 1>(
      a, oc, r != nullptr, acc, [o, out_off](int u) { return o + out_off[2 * u]; },
      [r, out_off](int u) { return r + out_off[2 * u + 1]; }, NoMask{});
}

static inline void strided_n(const ConvKernelArgs& a, int64_t oc, const int64_t* in_off,
                             const int64_t* out_off, int64_t n) {
  with_vector_count(n, [&](auto u) { strided_chunk<decltype(u)::value>(a, oc, in_off, out_off); });
}

// Chunks of regular shape: R runs of L output vectors, run r is output row row0 + r, the vectors
// of a run are consecutive in the output and S * V floats apart in the input (S = stride for one
// vector per position, 1 otherwise). Every load and store offset is then a compile-time
// displacement from one pointer plus a row multiple: one instruction per FMA (the general chunk
// above spends two more on its offset table: 7-10% slower on ResNet-20x2 at batch 16).
template <int R, int L, int S>
__attribute__((always_inline)) static inline void run_tap(const ConvKernelArgs& a,
                                                          const float* base, int32_t j,
                                                          vf (&acc)[R * L]) {
  const int64_t row = a.in_row_step;
  const vf w = simd::splat(a.val[j]);
  const float* src = base + a.off[j];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int k = 0; k < L; ++k) acc[r * L + k] += w * simd::loadu(src + r * row + k * S * V);
}

// Taps of two output channels alternate while both have taps left (j0 and j1 advance to where
// the shorter list ends), four of each per iteration: one loop branch and one counter per 8 taps.
// ResNet-20x2 at 90%, batch 32: 4% faster than one tap of each per iteration (2 of each: 3.4%).
// Each channel still adds its taps in list order, so results do not change.
template <int R, int L, int S>
__attribute__((always_inline)) static inline void run_taps_paired(
    const ConvKernelArgs& a, const float* base, int32_t& j0, int32_t e0, vf (&acc0)[R * L],
    int32_t& j1, int32_t e1, vf (&acc1)[R * L]) {
  const int32_t n = e0 - j0 < e1 - j1 ? e0 - j0 : e1 - j1;
  const int32_t s0 = j0, s1 = j1;
  int32_t i = 0;
  for (; i + 4 <= n; i += 4) {
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {
      run_tap<R, L, S>(a, base, s0 + i + k, acc0);
      run_tap<R, L, S>(a, base, s1 + i + k, acc1);
    }
  }
  for (; i < n; ++i) {
    run_tap<R, L, S>(a, base, s0 + i, acc0);
    run_tap<R, L, S>(a, base, s1 + i, acc1);
  }
  j0 = s0 + n;
  j1 = s1 + n;
}

template <int R, int L>
__attribute__((always_inline)) static inline void run_store(const ConvKernelArgs& a, int64_t oc,
                                                            const vf (&acc)[R * L], int64_t out0,
                                                            int64_t res0) {
  float* o = a.out + oc * a.out_cs + out0;
  const float* res = a.res ? a.res + oc * a.res_cs + res0 : nullptr;
  const int64_t out_rs = a.out_rs, res_rs = a.res_rs;
  finish_vectors<R * L, L>(
      a, oc, res != nullptr, acc, [=](int u) { return o + (u / L) * out_rs + (u % L) * V; },
      [=](int u) { return res + (u / L) * res_rs + (u % L) * V; }, NoMask{});
  if (a.halo) {  // whole rows (conv_csr_rows): the halo positions from the stored values
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* row = o + r * out_rs;
      const vf first = simd::loadu(row), last = simd::loadu(row + (L - 1) * V);
      simd::storeu(row - V, simd::lanes_up(last));
      simd::storeu(row + L * V, simd::lanes_down(first));
    }
  }
}

// Starts fetching channel oc's residual vectors of a chunk (for writing: the output goes over
// them), so they have arrived by the epilogue: the residual was written layers ago and is no
// longer cached, and one channel's few lines per chunk give the hardware prefetchers no stream
// (ResNet-20x2 batch 16: the residual convs 40 -> 44 GMAC/s, as fast as the others).
template <int R, int L>
__attribute__((always_inline)) static inline void prefetch_residual(const ConvKernelArgs& a,
                                                                    int64_t oc, int64_t res0) {
  if (!a.res) return;
  const float* r = a.res + oc * a.res_cs + res0;
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 16
    for (int k = 0; k < L; ++k) __builtin_prefetch(r + i * a.res_rs + k * V, 1);
}

template <int R, int L, int S>
static inline void run_chunk(const ConvKernelArgs& a, int64_t oc, int64_t in0, int64_t out0,
                             int64_t res0) {
  vf acc[R * L];
  const vf b = bias_splat(a, oc);
#pragma GCC unroll 16
  for (int u = 0; u < R * L; ++u) acc[u] = b;
  const float* base = a.in + in0;
  for (int32_t j = a.ptr[oc], e = a.ptr[oc + 1]; j < e; ++j) run_tap<R, L, S>(a, base, j, acc);
  run_store<R, L>(a, oc, acc, out0, res0);
}

// Two output channels at once: their taps alternate, so 2 x R x L accumulator chains hide the
// FMA latency with half the vectors per channel (a smaller input window, kept in L1).
template <int R, int L, int S>
static inline void run_pair(const ConvKernelArgs& a, int64_t oc0, int64_t oc1, int64_t in0,
                            int64_t out0, int64_t res0) {
  vf acc0[R * L], acc1[R * L];
  const vf b0 = bias_splat(a, oc0), b1 = bias_splat(a, oc1);
#pragma GCC unroll 16
  for (int u = 0; u < R * L; ++u) {
    acc0[u] = b0;
    acc1[u] = b1;
  }
  prefetch_residual<R, L>(a, oc0, res0);
  prefetch_residual<R, L>(a, oc1, res0);
  const float* base = a.in + in0;
  int32_t j0 = a.ptr[oc0], j1 = a.ptr[oc1];
  const int32_t e0 = a.ptr[oc0 + 1], e1 = a.ptr[oc1 + 1];
  run_taps_paired<R, L, S>(a, base, j0, e0, acc0, j1, e1, acc1);
  for (; j0 < e0; ++j0) run_tap<R, L, S>(a, base, j0, acc0);
  for (; j1 < e1; ++j1) run_tap<R, L, S>(a, base, j1, acc1);
  run_store<R, L>(a, oc0, acc0, out0, res0);
  run_store<R, L>(a, oc1, acc1, out0, res0);
}

// K (1 or 2) output channels over input-channel block b of a chunk (ConvKernelArgs::blocks):
// the accumulators start at the bias (first block) or the partial sums in part[k], taps of
// block b alternate between the channels, and the last block runs the epilogue (else the
// partial sums go back to part[k]).
template <int K, int R, int L, int S>
static inline void run_block(const ConvKernelArgs& a, const int64_t* oc, int64_t b,
                             float* const* part, int64_t in0, int64_t out0, int64_t res0) {
  constexpr int N = R * L;
  vf acc[K][N];
  int32_t j[K], e[K];
#pragma GCC unroll 2
  for (int k = 0; k < K; ++k) {
    const int32_t* bp = a.block_ptr + oc[k] * (a.blocks + 1) + b;
    j[k] = bp[0];
    e[k] = bp[1];
    const vf bias = bias_splat(a, oc[k]);
#pragma GCC unroll 16
    for (int u = 0; u < N; ++u) acc[k][u] = b == 0 ? bias : simd::loadu(part[k] + u * V);
  }
  if (b == a.blocks - 1) {
#pragma GCC unroll 2
    for (int k = 0; k < K; ++k) prefetch_residual<R, L>(a, oc[k], res0);
  }
  const float* base = a.in + in0;
  if constexpr (K == 2) run_taps_paired<R, L, S>(a, base, j[0], e[0], acc[0], j[1], e[1], acc[1]);
#pragma GCC unroll 2
  for (int k = 0; k < K; ++k)
    for (; j[k] < e[k]; ++j[k]) run_tap<R, L, S>(a, base, j[k], acc[k]);
#pragma GCC unroll 2
  for (int k = 0; k < K; ++k) {
    if (b == a.blocks - 1) {
      run_store<R, L>(a, oc[k], acc[k], out0, res0);
    } else {
#pragma GCC unroll 16
      for (int u = 0; u < N; ++u) simd::storeu(part[k] + u * V, acc[k][u]);
    }
  }
}

// Partial sums of channel-blocked chunks: kPair vectors per output channel of the thread's
// range, reused across calls.
static float* block_scratch(int64_t channels) {
  thread_local std::vector<float> scratch;
  const size_t need = static_cast<size_t>(channels) * (kChunk / 2) * V;
  if (scratch.size() < need) scratch.resize(need);
  return scratch.data();
}

// Calls pair(oc0, oc1) for consecutive pairs of the channels in [c0, c1) that are not skipped,
// then single(oc) for a channel left over.
template <typename Pair, typename Single>
__attribute__((always_inline)) static inline void for_pairs(const ConvKernelArgs& a, int64_t c0,
                                                            int64_t c1, Pair pair,
                                                            Single single) {
  int64_t pending = -1;
  for (int64_t oc = c0; oc < c1; ++oc) {
    if (skipped(a, oc)) continue;
    if (pending < 0) {
      pending = oc;
      continue;
    }
    pair(pending, oc);
    pending = -1;
  }
  if (pending >= 0) single(pending);
}

// One chunk (rows [row0, row0 + R), vectors [v0, v0 + L) of each row) for channels [c0, c1).
template <int R, int S>
static void run_rows(const ConvKernelArgs& a, int64_t c0, int64_t c1, int64_t row0, int64_t v0,
                     int64_t L) {
  const int64_t in0 = row0 * a.in_row_step + v0 * S * V;
  const int64_t out0 = row0 * a.out_rs + v0 * V, res0 = row0 * a.res_rs + v0 * V;
  with_vector_count(L, [&](auto l) {
    constexpr int kL = decltype(l)::value;
    if constexpr (2 * R * kL <= kChunk) {  // conv_csr_rows: chunks of <= kPair vectors
      if (a.blocks == 1) {
        for_pairs(
            a, c0, c1,
            [&](int64_t oc0, int64_t oc1) { run_pair<R, kL, S>(a, oc0, oc1, in0, out0, res0); },
            [&](int64_t oc) { run_chunk<R, kL, S>(a, oc, in0, out0, res0); });
        return;
      }
      float* scratch = block_scratch(c1 - c0);
      const auto part = [&](int64_t oc) { return scratch + (oc - c0) * R * kL * V; };
      for (int64_t b = 0; b < a.blocks; ++b) {
        for_pairs(
            a, c0, c1,
            [&](int64_t oc0, int64_t oc1) {
              const int64_t pair[2] = {oc0, oc1};
              float* const parts[2] = {part(oc0), part(oc1)};
              run_block<2, R, kL, S>(a, pair, b, parts, in0, out0, res0);
            },
            [&](int64_t oc) {
              float* const parts[1] = {part(oc)};
              run_block<1, R, kL, S>(a, &oc, b, parts, in0, out0, res0);
            });
      }
    }
  });
}

template <int S>
static void run_rows_any(const ConvKernelArgs& a, int64_t c0, int64_t c1, int64_t row0,
                         int64_t rows, int64_t v0, int64_t L) {
  switch (rows) {
    case 1: run_rows<1, S>(a, c0, c1, row0, v0, L); break;
    case 2: run_rows<2, S>(a, c0, c1, row0, v0, L); break;
    case 4: run_rows<4, S>(a, c0, c1, row0, v0, L); break;
    default: run_rows<8, S>(a, c0, c1, row0, v0, L); break;
  }
}

// The input step between consecutive output vectors of a row, in vectors, when it is uniform
// (1 for stride 1; the stride itself with one vector per position) and the output's (and
// residual's) positions are adjacent vectors, else 0.
static int64_t uniform_vector_step(const ConvKernelArgs& a) {
  const int64_t vp = a.lanes / V;
  if (a.out_pos_step != a.lanes || (a.res && a.res_pos_step != a.lanes)) return 0;
  if (a.in_pos_step == a.lanes) return 1;
  if (vp == 1 && a.in_pos_step == 2 * V) return 2;
  return 0;
}

// Whole rows per chunk when a row is short (R a power of two, R * L <= kPair), else each row in
// balanced pieces of <= kPair vectors. Short chunks also keep the input window they sweep small
// enough for L1 (ResNet-20x2 batch 16: 16-vector single-channel chunks ran at 33 GMAC/s, 8-vector
// pairs at 39-44).
template <int S>
static void conv_csr_rows_of(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t per_row = a.positions * (a.lanes / V);
  if (per_row <= kPair / 2) {
    int64_t R = 1;
    while (R < 8 && 2 * R * per_row <= kPair) R *= 2;
    for (int64_t row = 0; row < a.rows;) {
      while (row + R > a.rows) R /= 2;  // tail: smaller powers of two
      run_rows_any<S>(a, c0, c1, row, R, 0, per_row);
      row += R;
    }
    return;
  }
  const int64_t pieces = (per_row + kPair - 1) / kPair, piece = (per_row + pieces - 1) / pieces;
  for (int64_t row = 0; row < a.rows; ++row)
    for (int64_t v = 0; v < per_row; v += piece)
      run_rows<1, S>(a, c0, c1, row, v, per_row - v < piece ? per_row - v : piece);
}

// Channels whose taps read one input plane each (depthwise) run two at a time over all their
// rows: their planes then stay in L1. Chunks over every channel would sweep all planes' rows
// once per chunk, from L2 or beyond (MobileNetV2 at 16 images: 576 planes of 14x14 x 16 lanes,
// 1.5 MB a row of chunks).
template <int S>
static void conv_csr_rows(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  if (a.window_planes != 1 || a.blocks != 1) {
    conv_csr_rows_of<S>(a, c0, c1);
    return;
  }
  for (int64_t oc = c0; oc < c1; oc += 2) conv_csr_rows_of<S>(a, oc, oc + 2 < c1 ? oc + 2 : c1);
}

void conv_csr_strided(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  switch (uniform_vector_step(a)) {
    case 1: conv_csr_rows<1>(a, c0, c1); return;
    case 2: conv_csr_rows<2>(a, c0, c1); return;
    default: break;
  }
  const int64_t vp = a.lanes / V, per_row = a.positions * vp, total = a.rows * per_row;
  const int64_t count = (total + kChunk - 1) / kChunk;
  const int64_t chunk = (total + count - 1) / count;  // balanced, <= kChunk
  int64_t in_off[kChunk], out_off[2 * kChunk];       // out_off: (output, residual) pairs
  for (int64_t t0 = 0; t0 < total; t0 += chunk) {
    const int64_t n = total - t0 < chunk ? total - t0 : chunk;
    for (int64_t u = 0; u < n; ++u) {
      const int64_t t = t0 + u, row = t / per_row, pos = (t % per_row) / vp, part = t % vp;
      in_off[u] = row * a.in_row_step + pos * a.in_pos_step + part * V;
      out_off[2 * u] = row * a.out_rs + pos * a.out_pos_step + part * V;
      out_off[2 * u + 1] = row * a.res_rs + pos * a.res_pos_step + part * V;
    }
    for (int64_t oc = c0; oc < c1; ++oc) {
      if (!skipped(a, oc)) strided_n(a, oc, in_off, out_off, n);
    }
  }
}

int vector_floats() { return V; }

}  // namespace FD_NS
}  // namespace fd
