// AVX-512 VNNI int8 code kernel (Cascade Lake, Ice Lake, Zen 4 and later). Compiled with
// -mavx512f -mavx512bw -mavx512vnni for this file only. vpdpbusd (not the saturating vpdpbusds)
// adds four u8 x s8 products into each i32 lane, exact under kMaxCodeLength; tails use
// byte-masked loads, which never touch the masked-out bytes.
#include <immintrin.h>

#include "kernels/kernels.hpp"

namespace matry::kernels {
namespace {

constexpr std::size_t kBlockBytes = 64;

inline __m512i load(const void* bytes) { return _mm512_loadu_si512(bytes); }

// Mask of the first `count` (< 64) bytes.
inline __mmask64 tail_mask(std::size_t count) {
  return static_cast<__mmask64>((std::uint64_t{1} << count) - 1u);
}

}  // namespace

std::int32_t dot_u8s8_avx512vnni(const std::uint8_t* codes, const std::int8_t* query,
                                 std::size_t n) {
  // Four accumulators hide the vpdpbusd latency.
  __m512i acc0 = _mm512_setzero_si512();
  __m512i acc1 = _mm512_setzero_si512();
  __m512i acc2 = _mm512_setzero_si512();
  __m512i acc3 = _mm512_setzero_si512();
  std::size_t i = 0;
  for (; i + 4 * kBlockBytes <= n; i += 4 * kBlockBytes) {
    acc0 = _mm512_dpbusd_epi32(acc0, load(codes + i), load(query + i));
    acc1 = _mm512_dpbusd_epi32(acc1, load(codes + i + kBlockBytes), load(query + i + kBlockBytes));
    acc2 = _mm512_dpbusd_epi32(acc2, load(codes + i + 2 * kBlockBytes),
                               load(query + i + 2 * kBlockBytes));
    acc3 = _mm512_dpbusd_epi32(acc3, load(codes + i + 3 * kBlockBytes),
                               load(query + i + 3 * kBlockBytes));
  }
  for (; i + kBlockBytes <= n; i += kBlockBytes) {
    acc0 = _mm512_dpbusd_epi32(acc0, load(codes + i), load(query + i));
  }
  if (i < n) {
    const __mmask64 mask = tail_mask(n - i);
    acc1 = _mm512_dpbusd_epi32(acc1, _mm512_maskz_loadu_epi8(mask, codes + i),
                               _mm512_maskz_loadu_epi8(mask, query + i));
  }
  return _mm512_reduce_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3)));
}

}  // namespace matry::kernels
