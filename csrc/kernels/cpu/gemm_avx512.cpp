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

#include "transpose8x8.inc"

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int64_t W = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static R set1(T x) { return _mm512_set1_ps(x); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  // v, or 0 where mask <= 0 (a NaN mask passes, as torch's threshold_backward).
  static R keep(R v, R mask) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mask, zero(), _CMP_NLE_UQ), v); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  // max returns v where v is NaN; the zero-masked form for the gcc 12 warning noted at sum().
  static R relu(R v) { return _mm512_maskz_max_ps(0xFFFF, zero(), v); }
  // The first n <= W lanes only.
  static R load_first(const T* p, int64_t n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store_first(T* p, R v, int64_t n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static __mmask16 first(int64_t n) { return static_cast<__mmask16>((1u << n) - 1); }
  // The even lanes of the pair (a, b) into even, the odd ones into odd (winograd_kernel.inc).
  static constexpr bool kDeinterleave = true;
  static void deinterleave(R a, R b, R& even, R& odd) {
    const __m512i e = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    even = _mm512_permutex2var_ps(a, e, b);
    odd = _mm512_permutex2var_ps(a, _mm512_add_epi32(e, _mm512_set1_epi32(1)), b);
  }
  // Lane sum by swaps in zmm registers. The zero-masked shuffles are the plain ones with an
  // all-ones mask: gcc 12's unmasked forms (and _mm512_reduce_add_*) pass an undefined vector
  // through and draw a false "may be used uninitialized" warning.
  static T sum(R v) {
    constexpr __mmask16 all = 0xFFFF;
    v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(all, v, v, 0x4E));  // swap 256-bit halves
    v = _mm512_add_ps(v, _mm512_maskz_shuffle_f32x4(all, v, v, 0xB1));  // swap 128-bit quarters
    v = _mm512_add_ps(v, _mm512_maskz_permute_ps(all, v, 0x4E));        // swap pairs
    v = _mm512_add_ps(v, _mm512_maskz_permute_ps(all, v, 0xB1));        // swap neighbours
    return _mm512_cvtss_f32(v);
  }
  // In-register 16 x 16 transpose: r[i] lane j becomes r[j] lane i (unpack, shuffle, two 128-bit
  // lane shuffles; zero-masked forms for the reason above).
  // An MR = 8 row panel of A from row-major A: panel[p * 8 + r] = src[r * ld + p], or 0 where
  // mask (if given, same layout) is <= 0 (a NaN mask passes, as in masked()), through 8 x 8
  // transposes of 256-bit rows (AVX2 shuffles, which AVX-512 machines have).
  static constexpr bool kPackRows8 = true;
  static void pack_rows8(const T* __restrict src, const T* __restrict mask, int64_t ld, int64_t kc,
                         T* __restrict panel) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld + p);
      if (mask) {
        for (int i = 0; i < 8; ++i) {
          const __m256 keep = _mm256_cmp_ps(_mm256_loadu_ps(mask + i * ld + p), _mm256_setzero_ps(), _CMP_NLE_UQ);
          r[i] = _mm256_and_ps(r[i], keep);
        }
      }
      transpose8x8_ps(r);
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(panel + (p + i) * 8, r[i]);
    }
    for (; p < kc; ++p) {
      for (int i = 0; i < 8; ++i) {
        const T v = src[i * ld + p];
        panel[p * 8 + i] = (mask && mask[i * ld + p] <= T(0)) ? T(0) : v;
      }
    }
  }
  static constexpr bool kTranspose = true;
  static void transpose(R r[W]) {
    constexpr __mmask16 all = 0xFFFF;
    R t[W];
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_maskz_unpacklo_ps(all, r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_maskz_unpackhi_ps(all, r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
      r[4 * i + 0] = _mm512_maskz_shuffle_ps(all, t[4 * i], t[4 * i + 2], 0x44);
      r[4 * i + 1] = _mm512_maskz_shuffle_ps(all, t[4 * i], t[4 * i + 2], 0xEE);
      r[4 * i + 2] = _mm512_maskz_shuffle_ps(all, t[4 * i + 1], t[4 * i + 3], 0x44);
      r[4 * i + 3] = _mm512_maskz_shuffle_ps(all, t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int h = 0; h < 2; ++h) {
      for (int i = 0; i < 4; ++i) {
        t[8 * h + i] = _mm512_maskz_shuffle_f32x4(all, r[8 * h + i], r[8 * h + 4 + i], 0x88);
        t[8 * h + 4 + i] = _mm512_maskz_shuffle_f32x4(all, r[8 * h + i], r[8 * h + 4 + i], 0xDD);
      }
    }
    for (int i = 0; i < 8; ++i) {
      r[i] = _mm512_maskz_shuffle_f32x4(all, t[i], t[8 + i], 0x88);
      r[8 + i] = _mm512_maskz_shuffle_f32x4(all, t[i], t[8 + i], 0xDD);
    }
  }
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
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R sub(R a, R b) { return _mm512_sub_pd(a, b); }
  static R mul(R a, R b) { return _mm512_mul_pd(a, b); }
  static R keep(R v, R mask) { return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(mask, zero(), _CMP_NLE_UQ), v); }
  // The first n <= W lanes only, the others 0.
  static R load_first(const T* p, int64_t n) {
    return _mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1), p);
  }
  static constexpr bool kDeinterleave = false;
  static T sum(R v) {  // as F32x16::sum
    constexpr __mmask8 all = 0xFF;
    v = _mm512_add_pd(v, _mm512_maskz_shuffle_f64x2(all, v, v, 0x4E));
    v = _mm512_add_pd(v, _mm512_maskz_shuffle_f64x2(all, v, v, 0xB1));
    v = _mm512_add_pd(v, _mm512_maskz_permute_pd(all, v, 0x55));
    return _mm512_cvtsd_f64(v);
  }
  static constexpr bool kPackRows8 = false;
  static void pack_rows8(const T*, const T*, int64_t, int64_t, T*) {}
  static constexpr bool kTranspose = false;
  static void transpose(R*) {}
};

#include "simd_kernel.inc"

template <typename T>
struct Kernel;
// KC x NR of B (32 KiB) is the L1-resident panel; MC x KC of A (128 KiB) and KC x NC of B
// (512 KiB) stay in L2.
// The window form holds up to 14 pixels x 2 vectors: 28 accumulators, 2 weight vectors and a
// broadcast in the 32 registers.
template <>
struct Kernel<float> : SimdKernel<F32x16, 8, 2> {
  static constexpr int64_t MC = 128, KC = 256, NC = 512;
  static constexpr int64_t kWindowRows = 14;
};
template <>
struct Kernel<double> : SimdKernel<F64x8, 8, 2> {
  static constexpr int64_t MC = 96, KC = 192, NC = 320;
  static constexpr int64_t kWindowRows = 14;
};

// 4 x 6 dot products: 24 accumulators, 4 A and 1 B vector live.
template <typename T>
struct DotKernel;
template <>
struct DotKernel<float> : SimdDotKernel<F32x16, 4, 6> {};
template <>
struct DotKernel<double> : SimdDotKernel<F64x8, 4, 6> {};

// 1 x 8 dot products, for a C of one row: 1 A and 8 B vectors per 8 fused multiply-adds.
template <typename T>
struct DotRowKernel;
template <>
struct DotRowKernel<float> : SimdDotKernel<F32x16, 1, 8> {};
template <>
struct DotRowKernel<double> : SimdDotKernel<F64x8, 1, 8> {};

template <typename T>
struct GatherKernel;
template <>
struct GatherKernel<float> : SimdGatherKernel<F32x16> {};
template <>
struct GatherKernel<double> : SimdGatherKernel<F64x8> {};

#include "gemm_driver.inc"
#include "winograd_kernel.inc"

}  // namespace

template <typename T>
void gemm_avx512(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B,
                 T* C, int64_t ldc, const Epilogue<T>& epilogue) {
  gemm_blocked<T, Kernel<T>>(ctx, M, N, K, A, B, C, ldc, epilogue);
}
template <typename T>
void gemm_dot_avx512(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
                     const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,
                     const DotBatch& batch) {
  gemm_dot_blocked<T, DotKernel<T>, DotRowKernel<T>>(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep,
                                                      batch);
}
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx512, float)
FASTLAYERS_INSTANTIATE_GEMM(gemm_avx512, double)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_avx512, float)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_avx512, double)
FASTLAYERS_DEFINE_WINDOWS(avx512)
FASTLAYERS_DEFINE_GEMM_GATHER(avx512)
FASTLAYERS_DEFINE_WINOGRAD(avx512, F32x16, F64x8)

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
