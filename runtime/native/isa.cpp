// Runtime choice of the kernel variant for the CPU we run on.
//
// setup.py compiles conv_csr.cpp / conv_bsr.cpp once per ISA into namespaces isa_generic,
// isa_avx2 and isa_avx512 (x86-64 only; on aarch64 NEON is the baseline, so the generic build is
// already vectorised). We pick the widest one the CPU supports; FEATHERDEPLOY_ISA forces one
// (read whenever a plan is built; tests use it to check that the portable path equals the fast path).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "conv_kernels.h"

namespace fd {

namespace {

KernelTable generic_table() {
  return {isa_generic::conv_csr, isa_generic::conv_bsr, isa_generic::conv_csr_strided, isa_generic::split_plane,
          isa_generic::to_segments, isa_generic::from_segments,
          isa_generic::conv_tiny, isa_generic::gemm_dot, "generic",
          isa_generic::vector_floats()};
}

#if defined(__x86_64__) || defined(_M_X64)
bool cpu_has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
KernelTable avx2_table() {
  return {isa_avx2::conv_csr, isa_avx2::conv_bsr, isa_avx2::conv_csr_strided, isa_avx2::split_plane,
          isa_avx2::to_segments, isa_avx2::from_segments,
          isa_avx2::conv_tiny, isa_avx2::gemm_dot, "avx2",
          isa_avx2::vector_floats()};
}
KernelTable avx512_table() {
  return {isa_avx512::conv_csr, isa_avx512::conv_bsr, isa_avx512::conv_csr_strided, isa_avx512::split_plane,
          isa_avx512::to_segments, isa_avx512::from_segments,
          isa_avx512::conv_tiny, isa_avx512::gemm_dot, "avx512",
          isa_avx512::vector_floats()};
}
#endif

KernelTable choose_table() {
  const char* forced = std::getenv("FEATHERDEPLOY_ISA");
  const std::string want = forced ? forced : "";
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (want == "generic") return generic_table();
  if (want == "avx2") {
    if (!cpu_has_avx2()) throw std::runtime_error("FEATHERDEPLOY_ISA=avx2 but this CPU lacks AVX2/FMA");
    return avx2_table();
  }
  if (want == "avx512") {
    if (!cpu_has_avx512()) throw std::runtime_error("FEATHERDEPLOY_ISA=avx512 but this CPU lacks AVX-512");
    return avx512_table();
  }
  if (!want.empty()) throw std::runtime_error("FEATHERDEPLOY_ISA must be generic, avx2 or avx512");
  if (cpu_has_avx512()) return avx512_table();
  if (cpu_has_avx2()) return avx2_table();
  return generic_table();
#else
  if (!want.empty() && want != "generic")
    throw std::runtime_error("FEATHERDEPLOY_ISA: only 'generic' exists on this architecture");
  return generic_table();
#endif
}

}  // namespace

KernelTable kernels() { return choose_table(); }

}  // namespace fd
