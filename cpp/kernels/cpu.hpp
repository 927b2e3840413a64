// What the running CPU and OS can execute; detected once.
#pragma once

namespace matry::kernels {

struct CpuFeatures {
  bool avx2_fma = false;    // AVX2 and FMA, with YMM state enabled by the OS
  bool avx512f = false;     // AVX-512F, with ZMM and opmask state enabled by the OS
  bool avx512bw = false;    // AVX-512BW (byte and word ops, byte-masked loads), same OS state
  bool avx512vnni = false;  // AVX-512 VNNI (vpdpbusd on zmm), same OS state
  bool avxvnni = false;     // AVX-VNNI (VEX vpdpbusd on ymm), with YMM state enabled by the OS
  bool neon = false;
};

const CpuFeatures& cpu_features();

}  // namespace matry::kernels
