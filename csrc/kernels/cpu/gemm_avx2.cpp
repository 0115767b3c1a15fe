// The AVX2 + FMA GEMM: 256-bit vectors, 16 registers. float: 6 x 16 tile (12 accumulators, 2 B
// loads, 1 broadcast: 15 registers); double: 6 x 8. Compiled for AVX2 here only; gemm.cpp calls
// it only where the CPU reports AVX2 and FMA.
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "gemm_isa.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#endif

namespace fastlayers::cpu {
namespace {

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int64_t W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
};

struct F64x4 {
  using T = double;
  using R = __m256d;
  static constexpr int64_t W = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  static R set1(T x) { return _mm256_set1_pd(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
};

#include "simd_kernel.inc"

template <typename T>
struct Kernel;
template <>
struct Kernel<float> : SimdKernel<F32x8, 6, 2> {
  static constexpr int64_t MC = 120, KC = 256, NC = 512;
};
template <>
struct Kernel<double> : SimdKernel<F64x4, 6, 2> {
  static constexpr int64_t MC = 96, KC = 192, NC = 256;
};

#include "gemm_driver.inc"

}  // namespace

template <typename T>
void gemm_avx2(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B,
               T* C, int64_t ldc, const Epilogue<T>& epilogue) {
  gemm_blocked<T, Kernel<T>>(ctx, M, N, K, A, B, C, ldc, epilogue);
}
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx2, float)
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx2, double)

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
