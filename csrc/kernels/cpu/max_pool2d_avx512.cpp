// max_pool2d's commonest window, 2 x 2 at stride 2 inside the plane, in AVX-512 for float: one
// output row at a time, 16 outputs per vector (the models' rows are 5 to 14 outputs long, so a
// masked vector covers a whole row). Each input row pair is loaded as 32 floats and split into
// its even and odd columns; the window's four taps are then taken in torch's order, from its
// first element: a strictly greater value or any NaN takes over (see max_pool2d.cpp). Compiled
// for AVX-512 here only; max_pool2d.cpp calls it only where the CPU reports AVX-512.
#include "max_pool2d.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#ifdef __clang__
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#endif

namespace fastlayers::cpu {
namespace {

// The running maximum (b, at) against tap v at index i: taken where v > b or v is a NaN.
inline void take(__m512 v, __m512i i, __m512& b, __m512i& at) {
  const __mmask16 t = _mm512_cmp_ps_mask(v, b, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  b = _mm512_mask_blend_ps(t, b, v);
  at = _mm512_mask_blend_epi32(t, at, i);
}

}  // namespace

void max_pool2d_plane_2x2_avx512(const Pool2dParams& p, const float* in, float* out,
                                 int64_t* ind) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i row = _mm512_set1_epi32(static_cast<int32_t>(p.W));
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    const float* r0 = in + 2 * oh * p.W;
    const float* r1 = r0 + p.W;
    for (int64_t ow0 = 0; ow0 < p.OW; ow0 += 16) {
      const int64_t n = std::min<int64_t>(16, p.OW - ow0);
      const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
      const __mmask16 lo = static_cast<__mmask16>((1u << std::min<int64_t>(16, 2 * n)) - 1);
      const __mmask16 hi = static_cast<__mmask16>((1u << std::max<int64_t>(0, 2 * n - 16)) - 1);
      const int64_t c = 2 * ow0;
      const __m512 a0 = _mm512_maskz_loadu_ps(lo, r0 + c), a1 = _mm512_maskz_loadu_ps(hi, r0 + c + 16);
      const __m512 b0 = _mm512_maskz_loadu_ps(lo, r1 + c), b1 = _mm512_maskz_loadu_ps(hi, r1 + c + 16);
      // Plane index of each window's first tap: 2 * oh * W + 2 * (ow0 + lane); H * W < 2^31.
      const __m512i first = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(2 * oh * p.W + c)), even);
      __m512 best = _mm512_permutex2var_ps(a0, even, a1);
      __m512i at = first;
      take(_mm512_permutex2var_ps(a0, odd, a1), _mm512_add_epi32(first, _mm512_set1_epi32(1)), best, at);
      const __m512i below = _mm512_add_epi32(first, row);
      take(_mm512_permutex2var_ps(b0, even, b1), below, best, at);
      take(_mm512_permutex2var_ps(b0, odd, b1), _mm512_add_epi32(below, _mm512_set1_epi32(1)), best, at);
      _mm512_mask_storeu_ps(out + oh * p.OW + ow0, m, best);
      int64_t* x = ind + oh * p.OW + ow0;
      // Widened to int64 a half at a time. The zero-masked forms with an all-ones mask are the
      // plain ones: gcc 12's unmasked forms draw a false "may be used uninitialized" warning.
      constexpr __mmask8 all = 0xFF;
      const __m512i at_lo = _mm512_maskz_cvtepi32_epi64(all, _mm512_maskz_extracti64x4_epi64(all, at, 0));
      const __m512i at_hi = _mm512_maskz_cvtepi32_epi64(all, _mm512_maskz_extracti64x4_epi64(all, at, 1));
      _mm512_mask_storeu_epi64(x, static_cast<__mmask8>(m), at_lo);
      _mm512_mask_storeu_epi64(x + 8, static_cast<__mmask8>(m >> 8), at_hi);
    }
  }
}

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
