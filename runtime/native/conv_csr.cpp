// Unstructured sparse direct convolution on CSR weights (one ISA variant per compilation).
//
// Loop structure, for one image and output channels [c0, c1):
//   for oc in [c0, c1):                        (threads own disjoint channel ranges)
//     for each chunk of U vectors of the stream (U <= 8 accumulators held in registers):
//       acc[0..U) = 0
//       for j in nonzeros(oc):                 (CSR row: tap offset + weight)
//         w = broadcast(val[j]); src = in + off[j] + chunk
//         acc[u] += w * src[u*V .. u*V+V)      (unaligned loads, one FMA per vector)
//       epilogue(acc)                          (bias, residual, clamp, masked store)
// The weight row stays in L1 across chunks; the input rows it touches are reused by neighbouring
// channels. Reference: runtime/kernels/reference.py::conv2d.
#include "conv_epilogue.h"

namespace fd {
namespace FD_NS {

template <int U>
static inline void csr_chunk(const ConvKernelArgs& a, int64_t oc, int64_t p0) {
  vf acc[U];
  for (int u = 0; u < U; ++u) acc[u] = simd::splat(0.0f);
  const float* base = a.in + p0;
  for (int32_t j = a.ptr[oc], e = a.ptr[oc + 1]; j < e; ++j) {
    const vf w = simd::splat(a.val[j]);
    const float* src = base + a.off[j];
    for (int u = 0; u < U; ++u) acc[u] += w * simd::loadu(src + u * V);
  }
  conv_epilogue<U>(a, oc, p0, acc);
}

constexpr int kChunk = 8;

// The tail of a stream has fewer than kChunk vectors: dispatch to an exact-size instance so the
// accumulators stay in registers.
static inline void csr_tail(const ConvKernelArgs& a, int64_t oc, int64_t p0, int64_t nvec) {
  switch (nvec) {
    case 1: csr_chunk<1>(a, oc, p0); break;
    case 2: csr_chunk<2>(a, oc, p0); break;
    case 3: csr_chunk<3>(a, oc, p0); break;
    case 4: csr_chunk<4>(a, oc, p0); break;
    case 5: csr_chunk<5>(a, oc, p0); break;
    case 6: csr_chunk<6>(a, oc, p0); break;
    case 7: csr_chunk<7>(a, oc, p0); break;
    default: break;
  }
}

void conv_csr(const ConvKernelArgs& a, int64_t c0, int64_t c1) {
  const int64_t nvec = (a.len + V - 1) / V;
  for (int64_t oc = c0; oc < c1; ++oc) {
    int64_t v = 0;
    for (; v + kChunk <= nvec; v += kChunk) csr_chunk<kChunk>(a, oc, v * V);
    if (v < nvec) csr_tail(a, oc, v * V, nvec - v);
  }
}

int vector_floats() { return V; }

}  // namespace FD_NS
}  // namespace fd
