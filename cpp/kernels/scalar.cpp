// Reference kernels: plain loops, no intrinsics. Tests compare every f32 kernel against float64
// numpy and every int8 kernel bit for bit against this file's; it is also the fallback on CPUs
// without a faster path.
#include "kernels/kernels.hpp"

namespace matry::kernels {

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

std::int32_t dot_u8s8_scalar(const std::uint8_t* codes, const std::int8_t* query, std::size_t n) {
  // int32 is exact here because n <= kMaxCodeLength.
  std::int32_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    sum += static_cast<std::int32_t>(codes[i]) * static_cast<std::int32_t>(query[i]);
  }
  return sum;
}

}  // namespace matry::kernels
