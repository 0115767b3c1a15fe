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

#include "transpose8x8.inc"

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int64_t W = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static R set1(T x) { return _mm256_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  // v, or 0 where mask <= 0 (a NaN mask passes, as torch's threshold_backward).
  static R keep(R v, R mask) { return _mm256_and_ps(v, _mm256_cmp_ps(mask, zero(), _CMP_NLE_UQ)); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R relu(R v) { return _mm256_max_ps(zero(), v); }  // max returns v where v is NaN
  // The first n <= W lanes only.
  static R load_first(const T* p, int64_t n) { return _mm256_maskload_ps(p, first(n)); }
  static void store_first(T* p, R v, int64_t n) { _mm256_maskstore_ps(p, first(n), v); }
  static __m256i first(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // The even lanes of the pair (a, b) into even, the odd ones into odd (winograd_kernel.inc):
  // within each 128-bit half, then the halves' 64-bit pieces in order.
  static constexpr bool kDeinterleave = true;
  static void deinterleave(R a, R b, R& even, R& odd) {
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
  }
  static T sum(R v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static constexpr bool kPackRows8 = false;  // MR is 6 here
  static void pack_rows8(const T*, const T*, int64_t, int64_t, T*) {}
  // In-register 8 x 8 transpose: r[i] lane j becomes r[j] lane i.
  static constexpr bool kTranspose = true;
  static void transpose(R r[W]) { transpose8x8_ps(r); }
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
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static R sub(R a, R b) { return _mm256_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm256_mul_pd(a, b); }
  static R keep(R v, R mask) { return _mm256_and_pd(v, _mm256_cmp_pd(mask, zero(), _CMP_NLE_UQ)); }
  // The first n <= W lanes only, the others 0.
  static R load_first(const T* p, int64_t n) {
    const __m256i first = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_maskload_pd(p, first);
  }
  static constexpr bool kDeinterleave = false;
  static T sum(R v) {
    const __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static constexpr bool kPackRows8 = false;
  static void pack_rows8(const T*, const T*, int64_t, int64_t, T*) {}
  static constexpr bool kTranspose = false;
  static void transpose(R*) {}
};

#include "simd_kernel.inc"

template <typename T>
struct Kernel;
// The window form holds up to 6 pixels x 2 vectors, as the GEMM's tile.
template <>
struct Kernel<float> : SimdKernel<F32x8, 6, 2> {
  static constexpr int64_t MC = 120, KC = 256, NC = 512;
  static constexpr int64_t kWindowRows = 6;
};
template <>
struct Kernel<double> : SimdKernel<F64x4, 6, 2> {
  static constexpr int64_t MC = 96, KC = 192, NC = 256;
  static constexpr int64_t kWindowRows = 6;
};

// 3 x 3 dot products: 9 accumulators, 3 A and 1 B vector live (16 registers).
template <typename T>
struct DotKernel;
template <>
struct DotKernel<float> : SimdDotKernel<F32x8, 3, 3> {};
template <>
struct DotKernel<double> : SimdDotKernel<F64x4, 3, 3> {};

// 1 x 8 dot products, for a C of one row: 1 A and 8 B vectors per 8 fused multiply-adds.
template <typename T>
struct DotRowKernel;
template <>
struct DotRowKernel<float> : SimdDotKernel<F32x8, 1, 8> {};
template <>
struct DotRowKernel<double> : SimdDotKernel<F64x4, 1, 8> {};

template <typename T>
struct GatherKernel;
template <>
struct GatherKernel<float> : SimdGatherKernel<F32x8> {};
template <>
struct GatherKernel<double> : SimdGatherKernel<F64x4> {};

#include "gemm_driver.inc"
#include "winograd_kernel.inc"

}  // namespace

template <typename T>
void gemm_avx2(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B,
               T* C, int64_t ldc, const Epilogue<T>& epilogue) {
  gemm_blocked<T, Kernel<T>>(ctx, M, N, K, A, B, C, ldc, epilogue);
}
template <typename T>
void gemm_dot_avx2(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
                     const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,
                     const DotBatch& batch) {
  gemm_dot_blocked<T, DotKernel<T>, DotRowKernel<T>>(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep,
                                                      batch);
}
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx2, float)
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx2, double)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_avx2, float)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_avx2, double)
FASTLAYERS_DEFINE_WINDOWS(avx2)
FASTLAYERS_DEFINE_GEMM_GATHER(avx2)
FASTLAYERS_DEFINE_WINOGRAD(avx2, F32x8, F64x4)

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
