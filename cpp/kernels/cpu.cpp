#include "kernels/cpu.hpp"

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <cpuid.h>

#include <cstdint>
#endif

namespace matry::kernels {
namespace {

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
// xgetbv is read with inline asm so this file needs no -mxsave flag.
std::uint64_t read_xcr0() {
  std::uint32_t eax = 0;
  std::uint32_t edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures features;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return features;
  const bool osxsave = (ecx >> 27) & 1u;
  const bool fma = (ecx >> 12) & 1u;
  const bool avx = (ecx >> 28) & 1u;
  if (!osxsave || !avx) return features;
  // The CPU having AVX is not enough: the OS must save YMM (bits 1, 2) and, for AVX-512,
  // opmask and ZMM state (bits 5, 6, 7) on context switches.
  const std::uint64_t xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;
  const bool os_zmm = (xcr0 & 0xE6u) == 0xE6u;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return features;
  const unsigned last_leaf7_subleaf = eax;
  const bool avx2 = (ebx >> 5) & 1u;
  const bool avx512f = (ebx >> 16) & 1u;
  const bool avx512bw = (ebx >> 30) & 1u;
  const bool avx512vnni = (ecx >> 11) & 1u;
  bool avxvnni = false;
  if (last_leaf7_subleaf >= 1 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0) {
    avxvnni = (eax >> 4) & 1u;
  }
  features.avx2_fma = os_ymm && avx2 && fma;
  features.avx512f = os_zmm && avx512f && fma;
  features.avx512bw = os_zmm && avx512f && avx512bw;
  features.avx512vnni = os_zmm && avx512f && avx512vnni;
  features.avxvnni = os_ymm && avx2 && avxvnni;
  return features;
}
#elif defined(__aarch64__)
CpuFeatures detect() {
  CpuFeatures features;
  features.neon = true;  // mandatory on AArch64
  return features;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace matry::kernels
