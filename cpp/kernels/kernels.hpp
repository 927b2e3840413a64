// Distance kernels. The f32 kernels take (a, b, n) so a Matryoshka prefix search can call them
// with n smaller than the row stride; the int8 code kernel takes (codes, query, n) the same way.
#pragma once

#include <cstddef>
#include <cstdint>

namespace matry::kernels {

using PairKernel = float (*)(const float* a, const float* b, std::size_t n);

// sum codes[i] * query[i] in exact integer arithmetic, so every level returns the same value.
// Codes are unsigned 8-bit (0..255); the query is signed 8-bit. The quantizer only produces
// -127..127, but every kernel is exact over the whole int8 range, -128 included.
using CodeKernel = std::int32_t (*)(const std::uint8_t* codes, const std::int8_t* query,
                                    std::size_t n);

// The longest code row a CodeKernel accepts: 65536 * 255 * 128 < 2^31, so neither the sum nor
// any partial sum of a SIMD lane can overflow int32.
inline constexpr std::size_t kMaxCodeLength = 65536;

// One row of kernels per dispatch level; `name` is what matry.simd_level() reports.
struct KernelTable {
  const char* name;
  PairKernel dot;       // sum a[i] * b[i]
  PairKernel l2sq;      // sum (a[i] - b[i])^2
  CodeKernel dot_u8s8;  // sum codes[i] * query[i], n <= kMaxCodeLength
};

// The kernels of each instruction set, one source file per ISA, each compiled with only its own
// -m flags. Call one only after cpu.cpp has confirmed the CPU and the OS support its ISA; the
// level tables in dispatch.cpp pair them up.
float dot_scalar(const float* a, const float* b, std::size_t n);
float l2sq_scalar(const float* a, const float* b, std::size_t n);
std::int32_t dot_u8s8_scalar(const std::uint8_t* codes, const std::int8_t* query, std::size_t n);
#if defined(MATRY_HAVE_X86_KERNELS)
float dot_avx2(const float* a, const float* b, std::size_t n);
float l2sq_avx2(const float* a, const float* b, std::size_t n);
float dot_avx512(const float* a, const float* b, std::size_t n);
float l2sq_avx512(const float* a, const float* b, std::size_t n);
std::int32_t dot_u8s8_avx2(const std::uint8_t* codes, const std::int8_t* query, std::size_t n);
std::int32_t dot_u8s8_avx512bw(const std::uint8_t* codes, const std::int8_t* query, std::size_t n);
std::int32_t dot_u8s8_avx512vnni(const std::uint8_t* codes, const std::int8_t* query,
                                 std::size_t n);
#endif
#if defined(MATRY_HAVE_AVXVNNI_KERNELS)
std::int32_t dot_u8s8_avxvnni(const std::uint8_t* codes, const std::int8_t* query, std::size_t n);
#endif
#if defined(MATRY_HAVE_NEON_KERNELS)
float dot_neon(const float* a, const float* b, std::size_t n);
float l2sq_neon(const float* a, const float* b, std::size_t n);
std::int32_t dot_u8s8_neon(const std::uint8_t* codes, const std::int8_t* query, std::size_t n);
#endif

}  // namespace matry::kernels
