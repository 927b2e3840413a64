#include "kernels/dispatch.hpp"

#include <cstdio>
#include <cstdlib>

#include "errors.hpp"
#include "kernels/cpu.hpp"

namespace matry::kernels {
namespace {

// The tables pair each ISA's f32 kernels with the int8 kernel of the same generation. They are
// constant-initialized, so they exist before any static constructor that might dispatch.
constexpr KernelTable kScalarKernels{"scalar", dot_scalar, l2sq_scalar, dot_u8s8_scalar};
#if defined(MATRY_HAVE_X86_KERNELS)
constexpr KernelTable kAvx512VnniKernels{"avx512vnni", dot_avx512, l2sq_avx512,
                                         dot_u8s8_avx512vnni};
constexpr KernelTable kAvx512Kernels{"avx512", dot_avx512, l2sq_avx512, dot_u8s8_avx512bw};
constexpr KernelTable kAvx2Kernels{"avx2", dot_avx2, l2sq_avx2, dot_u8s8_avx2};
#endif
#if defined(MATRY_HAVE_AVXVNNI_KERNELS)
constexpr KernelTable kAvxVnniKernels{"avxvnni", dot_avx2, l2sq_avx2, dot_u8s8_avxvnni};
#endif
#if defined(MATRY_HAVE_NEON_KERNELS)
constexpr KernelTable kNeonKernels{"neon", dot_neon, l2sq_neon, dot_u8s8_neon};
#endif

struct Level {
  const KernelTable* table;
  bool supported;
};

// Best first. The avx512 level needs AVX-512BW as well as F, for its int8 kernel; the only CPUs
// with F but not BW (Xeon Phi) run the avx2 level.
std::vector<Level> all_levels() {
  std::vector<Level> levels;
  const CpuFeatures& cpu = cpu_features();
#if defined(MATRY_HAVE_X86_KERNELS)
  const bool avx512 = cpu.avx512f && cpu.avx512bw;
  levels.push_back({&kAvx512VnniKernels, avx512 && cpu.avx512vnni});
  levels.push_back({&kAvx512Kernels, avx512});
#endif
#if defined(MATRY_HAVE_AVXVNNI_KERNELS)
  levels.push_back({&kAvxVnniKernels, cpu.avx2_fma && cpu.avxvnni});
#endif
#if defined(MATRY_HAVE_X86_KERNELS)
  levels.push_back({&kAvx2Kernels, cpu.avx2_fma});
#endif
#if defined(MATRY_HAVE_NEON_KERNELS)
  levels.push_back({&kNeonKernels, cpu.neon});
#endif
  (void)cpu;
  levels.push_back({&kScalarKernels, true});
  return levels;
}

const KernelTable& resolve() {
  const std::vector<Level> levels = all_levels();
  const char* forced = std::getenv("MATRY_SIMD");
  if (forced != nullptr && forced[0] != '\0') {
    const std::string wanted(forced);
    bool known = false;
    for (const Level& level : levels) {
      if (wanted != level.table->name) continue;
      known = true;
      if (level.supported) return *level.table;
    }
    // Falling back is safer than refusing to import; the choice is reported by simd_level().
    std::fprintf(stderr, "matry: MATRY_SIMD=%s is %s; using the best supported level\n", forced,
                 known ? "not supported by this CPU" : "not a level compiled into this build");
  }
  for (const Level& level : levels) {
    if (level.supported) return *level.table;
  }
  return kScalarKernels;
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable& table = resolve();
  return table;
}

std::vector<std::string> compiled_levels() {
  std::vector<std::string> names;
  for (const Level& level : all_levels()) names.emplace_back(level.table->name);
  return names;
}

std::vector<std::string> supported_levels() {
  std::vector<std::string> names;
  for (const Level& level : all_levels()) {
    if (level.supported) names.emplace_back(level.table->name);
  }
  return names;
}

const KernelTable& kernels_for_level(const std::string& name) {
  for (const Level& level : all_levels()) {
    if (name != level.table->name) continue;
    if (!level.supported) {
      throw InvalidArgument("level: '" + name + "' is compiled but this CPU/OS cannot run it");
    }
    return *level.table;
  }
  throw InvalidArgument("level: '" + name + "' is not compiled into this build");
}

}  // namespace matry::kernels
