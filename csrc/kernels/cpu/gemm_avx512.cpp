// The AVX-512 GEMM: 512-bit vectors, 32 registers. float: 8 x 32 tile (16 accumulators, 2 B
// loads and 8 broadcasts per 16 FMAs); double: 8 x 16. Compiled for AVX-512 here only; gemm.cpp
// calls it only where the CPU reports AVX-512.
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "gemm_isa.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#endif

namespace fastlayers::cpu {
namespace {

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int64_t W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
};

struct F64x8 {
  using T = double;
  using R = __m512d;
  static constexpr int64_t W = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  static R set1(T x) { return _mm512_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
};

#include "simd_kernel.inc"

template <typename T>
struct Kernel;
// KC x NR of B (32 KiB) is the L1-resident panel; MC x KC of A (128 KiB) and KC x NC of B
// (512 KiB) stay in L2.
template <>
struct Kernel<float> : SimdKernel<F32x16, 8, 2> {
  static constexpr int64_t MC = 128, KC = 256, NC = 512;
};
template <>
struct Kernel<double> : SimdKernel<F64x8, 8, 2> {
  static constexpr int64_t MC = 96, KC = 192, NC = 320;
};

#include "gemm_driver.inc"

}  // namespace

template <typename T>
void gemm_avx512(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B,
                 T* C, int64_t ldc, const Epilogue<T>& epilogue) {
  gemm_blocked<T, Kernel<T>>(ctx, M, N, K, A, B, C, ldc, epilogue);
}
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx512, float)
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx512, double)

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
