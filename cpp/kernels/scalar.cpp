// Reference kernels: plain loops, no intrinsics. Tests compare every ISA against float64 numpy,
// and this file is the fallback on CPUs without a faster path.
#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

float dot_scalar(const float* a, const float* b, std::size_t n) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

float l2sq_scalar(const float* a, const float* b, std::size_t n) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    const float diff = a[i] - b[i];
    sum += diff * diff;
  }
  return sum;
}

}  // namespace

const KernelTable& scalar_table() {
  static const KernelTable table{"scalar", dot_scalar, l2sq_scalar};
  return table;
}

}  // namespace matry::kernels
