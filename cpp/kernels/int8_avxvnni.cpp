// AVX-VNNI int8 code kernel: the VEX-encoded vpdpbusd on ymm (Alder Lake, Zen 5 and later).
// Compiled with -mavx2 -mavxvnni for this file only; called only after cpu.cpp has confirmed the
// CPU and the OS support both. vpdpbusd (not the saturating vpdpbusds) adds four u8 x s8 products
// into each i32 lane, exact under kMaxCodeLength.
#include <immintrin.h>

#include <cstring>

#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

constexpr std::size_t kBlockBytes = 32;

inline __m256i load(const void* bytes) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(bytes));
}

inline std::int32_t horizontal_sum(__m256i v) {
  __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(1, 0, 3, 2)));
  sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(sum);
}

// The last `count` (< 32) bytes of a row. Without AVX-512BW there is no byte-masked load, so they
// are copied into zeroed blocks: nothing past the row is read and the zero codes add nothing.
// Out of line, so the main loop needs no stack.
__attribute__((noinline)) std::int32_t tail_dot(const std::uint8_t* codes, const std::int8_t* query,
                                                std::size_t count) {
  std::uint8_t code_tail[kBlockBytes] = {};
  std::int8_t query_tail[kBlockBytes] = {};
  std::memcpy(code_tail, codes, count);
  std::memcpy(query_tail, query, count);
  return horizontal_sum(
      _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), load(code_tail), load(query_tail)));
}

}  // namespace

std::int32_t dot_u8s8_avxvnni(const std::uint8_t* codes, const std::int8_t* query, std::size_t n) {
  // Four accumulators hide the vpdpbusd latency.
  __m256i acc0 = _mm256_setzero_si256();
  __m256i acc1 = _mm256_setzero_si256();
  __m256i acc2 = _mm256_setzero_si256();
  __m256i acc3 = _mm256_setzero_si256();
  std::size_t i = 0;
  for (; i + 4 * kBlockBytes <= n; i += 4 * kBlockBytes) {
    acc0 = _mm256_dpbusd_avx_epi32(acc0, load(codes + i), load(query + i));
    acc1 =
        _mm256_dpbusd_avx_epi32(acc1, load(codes + i + kBlockBytes), load(query + i + kBlockBytes));
    acc2 = _mm256_dpbusd_avx_epi32(acc2, load(codes + i + 2 * kBlockBytes),
                                   load(query + i + 2 * kBlockBytes));
    acc3 = _mm256_dpbusd_avx_epi32(acc3, load(codes + i + 3 * kBlockBytes),
                                   load(query + i + 3 * kBlockBytes));
  }
  for (; i + kBlockBytes <= n; i += kBlockBytes) {
    acc0 = _mm256_dpbusd_avx_epi32(acc0, load(codes + i), load(query + i));
  }
  const std::int32_t sum =
      horizontal_sum(_mm256_add_epi32(_mm256_add_epi32(acc0, acc1), _mm256_add_epi32(acc2, acc3)));
  return i < n ? sum + tail_dot(codes + i, query + i, n - i) : sum;
}

}  // namespace matry::kernels
