// NEON int8 code kernel (AArch64, where NEON is part of the baseline ISA). Every product fits
// int16 exactly (255 * -128 = -32640, 255 * 127 = 32385), so both operands are widened to int16,
// multiplied in int16 and pairwise-added into int32 accumulators (vpadalq_s16). The dot-product
// extension (sdot) would need a run-time check and a sign correction for the unsigned codes.
#include <arm_neon.h>

#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

constexpr std::size_t kBlockBytes = 16;

inline int32x4_t accumulate_half(int32x4_t sum, uint8x8_t codes, int8x8_t query) {
  const int16x8_t wide_codes = vreinterpretq_s16_u16(vmovl_u8(codes));
  return vpadalq_s16(sum, vmulq_s16(wide_codes, vmovl_s8(query)));
}

}  // namespace

std::int32_t dot_u8s8_neon(const std::uint8_t* codes, const std::int8_t* query, std::size_t n) {
  // Four accumulators (two blocks in flight, two halves each) hide the accumulate latency.
  int32x4_t acc0 = vdupq_n_s32(0);
  int32x4_t acc1 = vdupq_n_s32(0);
  int32x4_t acc2 = vdupq_n_s32(0);
  int32x4_t acc3 = vdupq_n_s32(0);
  std::size_t i = 0;
  for (; i + 2 * kBlockBytes <= n; i += 2 * kBlockBytes) {
    const uint8x16_t c0 = vld1q_u8(codes + i);
    const int8x16_t q0 = vld1q_s8(query + i);
    const uint8x16_t c1 = vld1q_u8(codes + i + kBlockBytes);
    const int8x16_t q1 = vld1q_s8(query + i + kBlockBytes);
    acc0 = accumulate_half(acc0, vget_low_u8(c0), vget_low_s8(q0));
    acc1 = accumulate_half(acc1, vget_high_u8(c0), vget_high_s8(q0));
    acc2 = accumulate_half(acc2, vget_low_u8(c1), vget_low_s8(q1));
    acc3 = accumulate_half(acc3, vget_high_u8(c1), vget_high_s8(q1));
  }
  if (i + kBlockBytes <= n) {
    const uint8x16_t c = vld1q_u8(codes + i);
    const int8x16_t q = vld1q_s8(query + i);
    acc0 = accumulate_half(acc0, vget_low_u8(c), vget_low_s8(q));
    acc1 = accumulate_half(acc1, vget_high_u8(c), vget_high_s8(q));
    i += kBlockBytes;
  }
  std::int32_t sum = vaddvq_s32(vaddq_s32(vaddq_s32(acc0, acc1), vaddq_s32(acc2, acc3)));
  // Scalar tail: full-width loads would read past the row.
  for (; i < n; ++i) {
    sum += static_cast<std::int32_t>(codes[i]) * static_cast<std::int32_t>(query[i]);
  }
  return sum;
}

}  // namespace matry::kernels
