// Constants the native kernels and the Python planner must agree on, in one place.
//
// Python reads them from the extension (`runtime._native.constants()`, runtime/planner/layout.py);
// nothing here is copied by hand into Python. Measured reasons for each value are in
// docs/performance.md.
#pragma once

#include <cstdint>

namespace fd {

// Floats in the widest vector of any kernel variant (AVX-512): buffer alignment and the read
// slack every plane carries after its last float.
constexpr int64_t kMaxVectorFloats = 16;

// Output channels per BSR block (conv_bsr.cpp): one input load feeds this many FMAs.
constexpr int kBsrBlock = 4;

// Output vectors per chunk of the CSR kernels: 16 accumulators on AVX-512 (32 registers),
// 8 below. The interleaved kernel computes two channels at once with half as many each.
constexpr int chunk_vectors(int vector_floats) { return vector_floats >= 16 ? 16 : 8; }
constexpr int pair_chunk_vectors(int vector_floats) { return chunk_vectors(vector_floats) / 2; }

}  // namespace fd
