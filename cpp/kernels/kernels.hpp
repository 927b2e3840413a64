// Distance kernels over f32 rows. Every kernel takes (a, b, n) so a Matryoshka prefix search can
// call it with n smaller than the row stride.
#pragma once

#include <cstddef>

namespace matry::kernels {

using PairKernel = float (*)(const float* a, const float* b, std::size_t n);

// One row of kernels per instruction set; `name` is what matry.simd_level() reports.
struct KernelTable {
  const char* name;
  PairKernel dot;   // sum a[i] * b[i]
  PairKernel l2sq;  // sum (a[i] - b[i])^2
};

const KernelTable& scalar_table();
#if defined(MATRY_HAVE_X86_KERNELS)
const KernelTable& avx2_table();
const KernelTable& avx512_table();
#endif
#if defined(MATRY_HAVE_NEON_KERNELS)
const KernelTable& neon_table();
#endif

}  // namespace matry::kernels
