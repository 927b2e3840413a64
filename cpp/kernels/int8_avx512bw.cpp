// AVX-512BW int8 code kernel, for AVX-512 CPUs without VNNI (Skylake-SP/X; the later ones have
// VNNI too). Compiled with -mavx512f -mavx512bw for this file only.
//
// The same exact split as int8_avx2.cpp, on zmm: c = (c & 0x7F) + (c & 0x80) keeps every
// vpmaddubsw pair inside i16 (low pairs in [-32512, 32258], high pairs in [-32768, 32512]), and
// vpmaddwd against ones widens each half to i32 before the halves meet. Tails use byte-masked
// loads, which never touch the masked-out bytes.
#include <immintrin.h>

#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

constexpr std::size_t kBlockBytes = 64;

inline void accumulate_block(__m512i codes, __m512i query, __m512i& low_sum, __m512i& high_sum) {
  const __m512i low_bits = _mm512_set1_epi8(0x7F);
  const __m512i ones = _mm512_set1_epi16(1);
  const __m512i low = _mm512_and_si512(codes, low_bits);
  const __m512i high = _mm512_andnot_si512(low_bits, codes);
  low_sum = _mm512_add_epi32(low_sum, _mm512_madd_epi16(_mm512_maddubs_epi16(low, query), ones));
  high_sum = _mm512_add_epi32(high_sum, _mm512_madd_epi16(_mm512_maddubs_epi16(high, query), ones));
}

inline __m512i load(const void* bytes) { return _mm512_loadu_si512(bytes); }

// Mask of the first `count` (< 64) bytes.
inline __mmask64 tail_mask(std::size_t count) {
  return static_cast<__mmask64>((std::uint64_t{1} << count) - 1u);
}

}  // namespace

std::int32_t dot_u8s8_avx512bw(const std::uint8_t* codes, const std::int8_t* query, std::size_t n) {
  __m512i low0 = _mm512_setzero_si512();
  __m512i high0 = _mm512_setzero_si512();
  __m512i low1 = _mm512_setzero_si512();
  __m512i high1 = _mm512_setzero_si512();
  std::size_t i = 0;
  for (; i + 2 * kBlockBytes <= n; i += 2 * kBlockBytes) {
    accumulate_block(load(codes + i), load(query + i), low0, high0);
    accumulate_block(load(codes + i + kBlockBytes), load(query + i + kBlockBytes), low1, high1);
  }
  if (i + kBlockBytes <= n) {
    accumulate_block(load(codes + i), load(query + i), low0, high0);
    i += kBlockBytes;
  }
  if (i < n) {
    const __mmask64 mask = tail_mask(n - i);
    accumulate_block(_mm512_maskz_loadu_epi8(mask, codes + i),
                     _mm512_maskz_loadu_epi8(mask, query + i), low1, high1);
  }
  return _mm512_reduce_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(low0, high0), _mm512_add_epi32(low1, high1)));
}

}  // namespace matry::kernels
