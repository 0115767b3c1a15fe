// max_pool2d's commonest window, 2 x 2 at stride 2 inside the plane, in AVX-512 for float: one
// output row at a time, 16 outputs per vector (the models' rows are 5 to 14 outputs long, so a
// masked vector covers a whole row). Each input row pair is loaded as 32 floats and split into
// its even and odd columns; the window's four taps are then taken in torch's order, from its
// first element: a strictly greater value or any NaN takes over (see max_pool2d.cpp). Compiled
// for AVX-512 here only; max_pool2d.cpp calls it only where the CPU reports AVX-512. The
// backward of the same windows is below.
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

// The lanes of n <= 16 outputs (m) and of their 2n input columns, split over two vectors of 16
// (lo, hi).
struct RowMasks {
  __mmask16 m, lo, hi;
};
inline RowMasks row_masks(int64_t n) {
  return {static_cast<__mmask16>((1u << n) - 1),
          static_cast<__mmask16>((1u << std::min<int64_t>(16, 2 * n)) - 1),
          static_cast<__mmask16>((1u << std::max<int64_t>(0, 2 * n - 16)) - 1)};
}

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
      const auto [m, lo, hi] = row_masks(n);
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

// max_pool2d_backward of one plane of 2 x 2 windows at stride 2, unpadded and undilated: the
// windows are disjoint cells (rows 2 * oh and 2 * oh + 1, columns 2 * ow and 2 * ow + 1), so each
// input element takes its cell's gradient, where the cell's index is that element, or 0: written
// once, with no zero fill and no scatter. An index outside its cell passes nothing, as in the
// scatter (PoolTaps). Needs 2 * OH <= H, 2 * OW <= W.
void max_pool2d_plane_backward_2x2_avx512(const Pool2dParams& p, const float* gy,
                                          const int64_t* ind, float* gx) {
  const __m512i steps = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i one = _mm512_set1_epi64(1), row = _mm512_set1_epi64(p.W);
  // Interleaves the even-column and odd-column values back into 32 consecutive columns.
  const __m512i mix_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i mix_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    float* r0 = gx + 2 * oh * p.W;
    float* r1 = r0 + p.W;
    for (int64_t ow0 = 0; ow0 < p.OW; ow0 += 16) {
      const int64_t n = std::min<int64_t>(16, p.OW - ow0);
      const auto [m, lo, hi] = row_masks(n);
      const __m512 g = _mm512_maskz_loadu_ps(m, gy + oh * p.OW + ow0);
      const int64_t* i = ind + oh * p.OW + ow0;
      const __m512i i_lo = _mm512_maskz_loadu_epi64(static_cast<__mmask8>(m), i);
      const __m512i i_hi = _mm512_maskz_loadu_epi64(static_cast<__mmask8>(m >> 8), i + 8);
      // Each cell's first element, for the two halves of the 16 outputs.
      const __m512i f_lo = _mm512_add_epi64(_mm512_set1_epi64(2 * oh * p.W + 2 * ow0), steps);
      const __m512i f_hi = _mm512_add_epi64(f_lo, _mm512_set1_epi64(16));
      auto at = [&](__m512i offset) {  // which outputs' index is their cell's first + offset
        return static_cast<__mmask16>(
            _mm512_cmpeq_epi64_mask(i_lo, _mm512_add_epi64(f_lo, offset)) |
            (static_cast<unsigned>(_mm512_cmpeq_epi64_mask(i_hi, _mm512_add_epi64(f_hi, offset))) << 8));
      };
      const __mmask16 m00 = at(_mm512_setzero_si512()), m01 = at(one);
      const __mmask16 m10 = at(row), m11 = at(_mm512_add_epi64(row, one));
      const __m512 e0 = _mm512_maskz_mov_ps(m00, g), o0 = _mm512_maskz_mov_ps(m01, g);
      const __m512 e1 = _mm512_maskz_mov_ps(m10, g), o1 = _mm512_maskz_mov_ps(m11, g);
      _mm512_mask_storeu_ps(r0 + 2 * ow0, lo, _mm512_permutex2var_ps(e0, mix_lo, o0));
      _mm512_mask_storeu_ps(r0 + 2 * ow0 + 16, hi, _mm512_permutex2var_ps(e0, mix_hi, o0));
      _mm512_mask_storeu_ps(r1 + 2 * ow0, lo, _mm512_permutex2var_ps(e1, mix_lo, o1));
      _mm512_mask_storeu_ps(r1 + 2 * ow0 + 16, hi, _mm512_permutex2var_ps(e1, mix_hi, o1));
    }
    for (int64_t w = 2 * p.OW; w < p.W; ++w) r0[w] = r1[w] = 0.0f;  // an odd last column
  }
  std::fill(gx + 2 * p.OH * p.W, gx + p.H * p.W, 0.0f);  // an odd last row
}

// The vector form of PoolTaps' test (see WindowSpans), 16 outputs a step: each index narrowed to
// int32 with saturation (the plane has at most 2^30 elements, so an index outside it stays
// outside, and d = q - first cannot wrap into range), then d's row found by row_steps compares.
bool max_pool2d_all_taps_avx512(const WindowSpans& spans, int64_t planes, const int64_t* indices) {
  const int64_t n = spans.outputs;
  const __m512i step = _mm512_set1_epi32(spans.row_step);
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t* ind = indices + plane * n;
    __mmask16 bad = 0;
    for (int64_t o = 0; o < n; o += 16) {
      const __mmask16 lanes = static_cast<__mmask16>((1u << std::min<int64_t>(16, n - o)) - 1);
      // The zero-masked forms: gcc 12's plain ones draw a false "may be used uninitialized"
      // warning (as in the forward above).
      constexpr __mmask8 all = 0xFF;
      const __m256i q_lo = _mm512_maskz_cvtsepi64_epi32(all, _mm512_maskz_loadu_epi64(static_cast<__mmask8>(lanes), ind + o));
      const __m256i q_hi = _mm512_maskz_cvtsepi64_epi32(all, _mm512_maskz_loadu_epi64(static_cast<__mmask8>(lanes >> 8), ind + o + 8));
      const __m512i q = _mm512_maskz_inserti64x4(
          all, _mm512_maskz_inserti64x4(all, _mm512_setzero_si512(), q_lo, 0), q_hi, 1);
      const __m512i d = _mm512_sub_epi32(q, _mm512_maskz_loadu_epi32(lanes, spans.first.data() + o));
      __m512i j = d, reach = step;
      for (int32_t i = 0; i < spans.row_steps; ++i) {
        j = _mm512_mask_sub_epi32(j, _mm512_cmpge_epi32_mask(d, reach), j, step);
        reach = _mm512_add_epi32(reach, step);
      }
      __mmask16 tap = _mm512_mask_cmplt_epu32_mask(lanes, d, _mm512_maskz_loadu_epi32(lanes, spans.extent.data() + o));
      tap = _mm512_mask_cmplt_epu32_mask(tap, j, _mm512_maskz_loadu_epi32(lanes, spans.width.data() + o));
      bad |= tap ^ lanes;
    }
    if (bad) return false;
  }
  return true;
}

}  // namespace fastlayers::cpu

#ifdef __clang__
#pragma clang attribute pop
#endif
#pragma GCC pop_options
#endif  // __x86_64__
