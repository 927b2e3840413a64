// AVX2 int8 code kernel. Compiled with -mavx2 for this file only; called only after cpu.cpp has
// confirmed the CPU and the OS support AVX2.
//
// vpmaddubsw (u8 x s8, adjacent products summed into a saturating i16) is not exact on its own: a
// pair can reach 2 * 255 * 127 = 64770. Splitting every code as c = (c & 0x7F) + (c & 0x80)
// makes both halves exact: low pairs lie in 2 * 127 * [-128, 127] = [-32512, 32258] and high
// pairs (c & 0x80 is 0 or 128) in 128 * [-256, 254] = [-32768, 32512], both inside i16.
// vpmaddwd against ones then widens each half to i32 before the halves meet. That is 8 ALU ops
// per 32 bytes and no shuffles (widening both operands with vpmovzxbw/vpmovsxbw needs 4).
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

constexpr std::size_t kBlockBytes = 32;

inline void accumulate_block(__m256i codes, __m256i query, __m256i& low_sum, __m256i& high_sum) {
  const __m256i low_bits = _mm256_set1_epi8(0x7F);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i low = _mm256_and_si256(codes, low_bits);
  const __m256i high = _mm256_andnot_si256(low_bits, codes);
  low_sum = _mm256_add_epi32(low_sum, _mm256_madd_epi16(_mm256_maddubs_epi16(low, query), ones));
  high_sum = _mm256_add_epi32(high_sum, _mm256_madd_epi16(_mm256_maddubs_epi16(high, query), ones));
}

inline __m256i load(const void* bytes) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(bytes));
}

inline std::int32_t horizontal_sum(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
}

// The last `count` (< 32) bytes of a row. AVX2 has no byte-masked load, so they are copied into
// zeroed blocks: nothing past the row is read (rows are packed; one may end at the end of a
// mapped page) and the zero codes add nothing. Out of line, so the main loop needs no stack.
__attribute__((noinline)) std::int32_t tail_dot(const std::uint8_t* codes, const std::int8_t* query,
                                                std::size_t count) {
  std::uint8_t code_tail[kBlockBytes] = {};
  std::int8_t query_tail[kBlockBytes] = {};
  std::memcpy(code_tail, codes, count);
  std::memcpy(query_tail, query, count);
  __m256i low = _mm256_setzero_si256();
  __m256i high = _mm256_setzero_si256();
  accumulate_block(load(code_tail), load(query_tail), low, high);
  return horizontal_sum(_mm256_add_epi32(low, high));
}

}  // namespace

std::int32_t dot_u8s8_avx2(const std::uint8_t* codes, const std::int8_t* query, std::size_t n) {
  // Four accumulators (two blocks in flight, low and high half each) hide the multiply latency.
  __m256i low0 = _mm256_setzero_si256();
  __m256i high0 = _mm256_setzero_si256();
  __m256i low1 = _mm256_setzero_si256();
  __m256i high1 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 2 * kBlockBytes <= n; i += 2 * kBlockBytes) {
    accumulate_block(load(codes + i), load(query + i), low0, high0);
    accumulate_block(load(codes + i + kBlockBytes), load(query + i + kBlockBytes), low1, high1);
  }
  if (i + kBlockBytes <= n) {
    accumulate_block(load(codes + i), load(query + i), low0, high0);
    i += kBlockBytes;
  }
  const std::int32_t sum = horizontal_sum(
      _mm256_add_epi32(_mm256_add_epi32(low0, high0), _mm256_add_epi32(low1, high1)));
  return i < n ? sum + tail_dot(codes + i, query + i, n - i) : sum;
}

}  // namespace matry::kernels
