#include "kernels/dispatch.hpp"

#include <cstdio>
#include <cstdlib>

#include "errors.hpp"
#include "kernels/cpu.hpp"

namespace matry::kernels {
namespace {

struct Level {
  const char* name;
  const KernelTable* table;
  bool supported;
};

// Best first.
std::vector<Level> all_levels() {
  std::vector<Level> levels;
  const CpuFeatures& cpu = cpu_features();
#if defined(MATRY_HAVE_X86_KERNELS)
  levels.push_back({"avx512", &avx512_table(), cpu.avx512f});
  levels.push_back({"avx2", &avx2_table(), cpu.avx2_fma});
#endif
#if defined(MATRY_HAVE_NEON_KERNELS)
  levels.push_back({"neon", &neon_table(), cpu.neon});
#endif
  (void)cpu;
  levels.push_back({"scalar", &scalar_table(), true});
  return levels;
}

const KernelTable& resolve() {
  const std::vector<Level> levels = all_levels();
  const char* forced = std::getenv("MATRY_SIMD");
  if (forced != nullptr && forced[0] != '\0') {
    const std::string wanted(forced);
    bool known = false;
    for (const Level& level : levels) {
      if (wanted != level.name) continue;
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
  return scalar_table();
}

}  // namespace

const KernelTable& active_kernels() {
  static const KernelTable& table = resolve();
  return table;
}

std::vector<std::string> compiled_levels() {
  std::vector<std::string> names;
  for (const Level& level : all_levels()) names.emplace_back(level.name);
  return names;
}

std::vector<std::string> supported_levels() {
  std::vector<std::string> names;
  for (const Level& level : all_levels()) {
    if (level.supported) names.emplace_back(level.name);
  }
  return names;
}

const KernelTable& kernels_for_level(const std::string& name) {
  for (const Level& level : all_levels()) {
    if (name != level.name) continue;
    if (!level.supported) {
      throw InvalidArgument("level: '" + name + "' is compiled but this CPU/OS cannot run it");
    }
    return *level.table;
  }
  throw InvalidArgument("level: '" + name + "' is not compiled into this build");
}

}  // namespace matry::kernels
