// What the running CPU and OS can execute; detected once.
#pragma once

namespace matry::kernels {

struct CpuFeatures {
  bool avx2_fma = false;  // AVX2 and FMA, with YMM state enabled by the OS
  bool avx512f = false;   // AVX-512F, with ZMM and opmask state enabled by the OS
  bool neon = false;
};

const CpuFeatures& cpu_features();

}  // namespace matry::kernels
