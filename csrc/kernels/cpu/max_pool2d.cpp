// max_pool2d, one H*W plane per task. The window walk follows ATen's CPU kernel exactly, so that
// ties, -inf-only windows and NaNs pick the same index as torch:
//   start at the first in-bounds row/column of the window, keep the first strict maximum, and let
//   every NaN replace the running maximum.
#include "max_pool2d.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>

namespace fastlayers::cpu {

#if defined(__x86_64__)
// max_pool2d_avx512.cpp: the 2 x 2, stride-2 window inside the plane, float, AVX-512.
void max_pool2d_plane_2x2_avx512(const Pool2dParams& p, const float* in, float* out,
                                 int64_t* ind);
void max_pool2d_plane_backward_2x2_avx512(const Pool2dParams& p, const float* gy,
                                          const int64_t* ind, float* gx);
#endif

namespace {

// The general walk, for any padding, dilation and partial (ceil_mode) window.
template <typename T>
void pool_plane(const Pool2dParams& p, const T* in, T* out, int64_t* ind) {
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const PoolWindow win(p, oh, ow);
      int64_t best_index = win.h0 * p.W + win.w0;
      T best = -std::numeric_limits<T>::infinity();
      for (int64_t h = win.h0; h < win.h1; h += p.dilation_h) {
        for (int64_t w = win.w0; w < win.w1; w += p.dilation_w) {
          const T v = in[h * p.W + w];
          if (v > best || std::isnan(v)) {
            best = v;
            best_index = h * p.W + w;
          }
        }
      }
      out[oh * p.OW + ow] = best;
      ind[oh * p.OW + ow] = best_index;
    }
  }
}

// Every window inside the plane, unpadded, undilated: the common case, vectorised across a row
// of outputs (2x2 and 3x3 windows at their usual strides get fixed trip counts and strides).
// Same choice as the walk above: from the window's first element, a strictly greater value or
// any NaN takes over, in row-major window order. Selects, not branches: on random data a branch mispredicts every other
// window. Offsets are int32 inside a row block so the select vectorises with the float values.
template <typename T, int KH, int KW, int SW>
void pool_plane_inside(const Pool2dParams& p, const T* in, T* out, int64_t* ind) {
  const int64_t kh = KH > 0 ? KH : p.kernel_h, kw = KW > 0 ? KW : p.kernel_w;
  const int64_t sw = SW > 0 ? SW : p.stride_w;
  constexpr int64_t kBlock = 64;
  T best[kBlock];
  int32_t at[kBlock];
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    const int64_t h0 = oh * p.stride_h;
    for (int64_t ow0 = 0; ow0 < p.OW; ow0 += kBlock) {
      const int64_t n = std::min(kBlock, p.OW - ow0);
      const int32_t row0 = static_cast<int32_t>(h0 * p.W + ow0 * sw);
      for (int64_t c = 0; c < n; ++c) {
        best[c] = in[row0 + c * sw];
        at[c] = row0 + static_cast<int32_t>(c * sw);
      }
      // Window rows in order; inside a row, the columns in order (re-reading the first element
      // changes nothing: it is already the maximum, and a NaN keeps its own index).
      for (int64_t i = 0; i < kh; ++i) {
        const int32_t offset = row0 + static_cast<int32_t>(i * p.W);
        const T* src = in + offset;
        for (int64_t c = 0; c < n; ++c) {
          T b = best[c];
          int32_t a = at[c];
          for (int64_t j = 0; j < kw; ++j) {
            const T v = src[c * sw + j];
            const bool take = v > b || v != v;
            b = take ? v : b;
            a = take ? offset + static_cast<int32_t>(c * sw + j) : a;
          }
          best[c] = b;
          at[c] = a;
        }
      }
      T* o = out + oh * p.OW + ow0;
      int64_t* x = ind + oh * p.OW + ow0;
      for (int64_t c = 0; c < n; ++c) o[c] = best[c];
      for (int64_t c = 0; c < n; ++c) x[c] = at[c];
    }
  }
}

template <typename T>
using PlaneFn = void (*)(const Pool2dParams&, const T*, T*, int64_t*);

template <typename T>
PlaneFn<T> plane_kernel(const Context& ctx, const Pool2dParams& p) {
  const bool inside = p.pad_h == 0 && p.pad_w == 0 && p.dilation_h == 1 && p.dilation_w == 1 &&
                      (p.OH - 1) * p.stride_h + p.kernel_h <= p.H &&
                      (p.OW - 1) * p.stride_w + p.kernel_w <= p.W;
  if (!inside || p.H * p.W > std::numeric_limits<int32_t>::max()) return &pool_plane<T>;
  const bool two_by_two = p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2;
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    if (two_by_two && runnable_isa(ctx.isa) == Isa::avx512) return &max_pool2d_plane_2x2_avx512;
  }
#endif
  if (p.kernel_h == 2 && p.kernel_w == 2 && p.stride_w == 2) return &pool_plane_inside<T, 2, 2, 2>;
  if (p.kernel_h == 3 && p.kernel_w == 3 && p.stride_w == 2) return &pool_plane_inside<T, 3, 3, 2>;
  if (p.kernel_h == 3 && p.kernel_w == 3 && p.stride_w == 1) return &pool_plane_inside<T, 3, 3, 1>;
  return &pool_plane_inside<T, 0, 0, 0>;
}

}  // namespace

WindowSpans::WindowSpans(const Pool2dParams& p) : outputs(p.OH * p.OW) {
  // A window's rows in the plane are at most kernel_h, and at most ceil(H / dilation_h).
  const int64_t steps = p.H > 0 ? std::min(p.kernel_h - 1, (p.H - 1) / p.dilation_h) : 0;
  row_steps = static_cast<int32_t>(steps);
  row_step = static_cast<int32_t>(steps > 0 ? p.dilation_h * p.W : 0);
  first.resize(static_cast<size_t>(outputs));
  extent.resize(static_cast<size_t>(outputs));
  width.resize(static_cast<size_t>(outputs));
  for (int64_t oh = 0, o = 0; oh < p.OH; ++oh) {
    for (int64_t ow = 0; ow < p.OW; ++ow, ++o) {
      const PoolWindow win(p, oh, ow);
      const bool empty = win.h0 >= win.h1 || win.w0 >= win.w1;
      const int64_t rows = empty ? 0 : (win.h1 - win.h0 - 1) / p.dilation_h + 1;
      first[static_cast<size_t>(o)] = static_cast<int32_t>(empty ? 0 : win.h0 * p.W + win.w0);
      extent[static_cast<size_t>(o)] =
          static_cast<int32_t>(empty ? 0 : (rows - 1) * p.dilation_h * p.W + p.W);
      width[static_cast<size_t>(o)] = static_cast<int32_t>(empty ? 0 : win.w1 - win.w0);
    }
  }
}

template <typename T>
void max_pool2d_forward(const Context& ctx, const Pool2dParams& p, const T* x, T* y,
                        int64_t* indices) {
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  // A window reads at most the whole plane, however large the kernel.
  const int64_t window = std::min(p.kernel_h, p.H) * std::min(p.kernel_w, p.W);
  const int64_t work_per_plane = std::max<int64_t>(1, OHW * window);
  const PlaneFn<T> kernel = plane_kernel<T>(ctx, p);
  // Parallel over planes (N * C).
  parallel_for(ctx, p.planes, ceil_div(65536, work_per_plane), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      kernel(p, x + plane * HW, y + plane * OHW, indices + plane * OHW);
    }
  });
}

template <typename T>
void max_pool2d_backward(const Context& ctx, const Pool2dParams& p, const T* gy,
                         const int64_t* indices, T* gx) {
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  // 2 x 2 windows at stride 2, inside the plane: the windows are disjoint cells, so each plane is
  // written densely, each element taking its cell's gradient or 0 (max_pool2d_avx512.cpp); the
  // others take the scatter below. Rows of fewer than 8 outputs scatter faster than they are
  // written densely (measured: 14 x 14 planes 1.4x, 24 x 24 and 28 x 28 ones 0.7x the scatter's
  // time).
  [[maybe_unused]] bool dense = false;
#if defined(__x86_64__)
  if constexpr (std::is_same_v<T, float>) {
    dense = p.kernel_h == 2 && p.kernel_w == 2 && p.stride_h == 2 && p.stride_w == 2 &&
            p.pad_h == 0 && p.pad_w == 0 && p.dilation_h == 1 && p.dilation_w == 1 &&
            2 * p.OH <= p.H && 2 * p.OW <= p.W && p.OW >= 8 && runnable_isa(ctx.isa) == Isa::avx512;
  }
#endif
  PoolTaps::Tables tables;  // the scatter's (the dense planes test their own indices)
  std::optional<PoolTaps> taps;
  if (!dense) taps = PoolTaps::make(ctx, p, tables);
  // Parallel over planes: each plane's scatter stays in one thread, so no atomics are needed.
  parallel_for(ctx, p.planes, ceil_div(65536, std::max<int64_t>(1, HW + OHW)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t plane = begin; plane < end; ++plane) {
                   T* out = gx + plane * HW;
                   const T* g = gy + plane * OHW;
                   const int64_t* ind = indices + plane * OHW;
#if defined(__x86_64__)
                   if constexpr (std::is_same_v<T, float>) {
                     if (dense) {
                       max_pool2d_plane_backward_2x2_avx512(p, g, ind, out);
                       continue;
                     }
                   }
#endif
                   std::fill(out, out + HW, T(0));
                   if (taps->all(ind)) {
                     for (int64_t o = 0; o < OHW; ++o) out[ind[o]] += g[o];
                     continue;
                   }
                   const PoolTaps is_tap = *taps;  // a local copy: out's stores cannot alias it
                   for (int64_t oh = 0, o = 0; oh < p.OH; ++oh) {
                     for (int64_t ow = 0; ow < p.OW; ++ow, ++o) {
                       if (is_tap(oh, ow, ind[o])) out[ind[o]] += g[o];
                     }
                   }
                 }
               });
}

template void max_pool2d_forward<float>(const Context&, const Pool2dParams&, const float*, float*,
                                        int64_t*);
template void max_pool2d_forward<double>(const Context&, const Pool2dParams&, const double*,
                                         double*, int64_t*);
template void max_pool2d_backward<float>(const Context&, const Pool2dParams&, const float*,
                                         const int64_t*, float*);
template void max_pool2d_backward<double>(const Context&, const Pool2dParams&, const double*,
                                          const int64_t*, double*);

}  // namespace fastlayers::cpu
