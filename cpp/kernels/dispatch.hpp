// Run-time kernel selection: the best level the CPU supports, or the one MATRY_SIMD forces.
#pragma once

#include <string>
#include <vector>

#include "kernels/kernels.hpp"

namespace matry::kernels {

// Resolved once, on first use: MATRY_SIMD if set and supported, else the best supported level.
const KernelTable& active_kernels();

// Levels compiled into this build, and the subset this CPU/OS can run.
std::vector<std::string> compiled_levels();
std::vector<std::string> supported_levels();

// The table of one level; throws InvalidArgument if not compiled or not supported here.
const KernelTable& kernels_for_level(const std::string& level);

}  // namespace matry::kernels
