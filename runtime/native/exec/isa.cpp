// Choice of the kernel variant for the CPU we run on.
//
// setup.py compiles the kernels/ sources once per ISA into namespaces isa_generic, isa_avx2 and
// isa_avx512 (x86-64 only; on aarch64 NEON is the baseline, so the generic build is already
// vectorised). The plan asks for one by name (EngineOptions.isa): "auto" is the widest this CPU
// supports. CPU features are read once per process.
#include <stdexcept>
#include <string>

#include "kernels/conv_kernels.h"

namespace fd {

namespace {

#define FD_TABLE(ns, name)                                                                 \
  KernelTable {                                                                            \
    ns::conv_csr, ns::conv_bsr, ns::conv_csr_strided, ns::conv_direct, ns::conv_winograd,    \
        ns::split_plane,                                                                   \
        ns::to_segments, ns::from_segments, ns::interleave_images, ns::conv_tiny, ns::gemm_dot, \
        ns::activate_vectors, ns::activate_row, ns::pool_row, ns::reduce_plane, name,      \
        ns::vector_floats()                                                                \
  }

#if defined(__x86_64__) || defined(_M_X64)
struct CpuFeatures {
  bool avx2 = false, avx512 = false;
};

const CpuFeatures& cpu() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    return f;
  }();
  return features;
}
#endif

}  // namespace

KernelTable kernels_for(const std::string& isa) {
  if (isa == "generic") return FD_TABLE(isa_generic, "generic");
#if defined(__x86_64__) || defined(_M_X64)
  const CpuFeatures& f = cpu();
  if (isa == "avx512" || (isa == "auto" && f.avx512)) {
    if (!f.avx512) throw std::invalid_argument("isa 'avx512' requested but this CPU lacks AVX-512");
    return FD_TABLE(isa_avx512, "avx512");
  }
  if (isa == "avx2" || (isa == "auto" && f.avx2)) {
    if (!f.avx2) throw std::invalid_argument("isa 'avx2' requested but this CPU lacks AVX2/FMA");
    return FD_TABLE(isa_avx2, "avx2");
  }
  if (isa == "auto") return FD_TABLE(isa_generic, "generic");
  throw std::invalid_argument("isa must be auto, generic, avx2 or avx512, got '" + isa + "'");
#else
  if (isa == "auto") return FD_TABLE(isa_generic, "generic");
  throw std::invalid_argument("isa must be auto or generic on this architecture, got '" + isa +
                              "'");
#endif
}

}  // namespace fd
