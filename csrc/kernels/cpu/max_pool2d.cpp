// max_pool2d, one H*W plane per task. The window walk follows ATen's CPU kernel exactly, so that
// ties, -inf-only windows and NaNs pick the same index as torch:
//   start at the first in-bounds row/column of the window, keep the first strict maximum, and let
//   every NaN replace the running maximum.
#include "max_pool2d.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fastlayers::cpu {

template <typename T>
void max_pool2d_forward(const Context& ctx, const Pool2dParams& p, const T* x, T* y,
                        int64_t* indices) {
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t work_per_plane = std::max<int64_t>(1, OHW * p.kernel_h * p.kernel_w);
  // Parallel over planes (N * C).
  parallel_for(ctx, p.planes, ceil_div(65536, work_per_plane), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* in = x + plane * HW;
      T* out = y + plane * OHW;
      int64_t* ind = indices + plane * OHW;
      for (int64_t oh = 0; oh < p.OH; ++oh) {
        int64_t h0 = oh * p.stride_h - p.pad_h;
        const int64_t h1 = std::min(h0 + (p.kernel_h - 1) * p.dilation_h + 1, p.H);
        while (h0 < 0) h0 += p.dilation_h;
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          int64_t w0 = ow * p.stride_w - p.pad_w;
          const int64_t w1 = std::min(w0 + (p.kernel_w - 1) * p.dilation_w + 1, p.W);
          while (w0 < 0) w0 += p.dilation_w;
          int64_t best_index = h0 * p.W + w0;
          T best = -std::numeric_limits<T>::infinity();
          for (int64_t h = h0; h < h1; h += p.dilation_h) {
            for (int64_t w = w0; w < w1; w += p.dilation_w) {
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
  });
}

template <typename T>
bool max_pool2d_backward(const Context& ctx, const Pool2dParams& p, const T* gy,
                         const int64_t* indices, T* gx) {
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  int64_t bad = 0;
  // Parallel over planes: each plane's scatter stays in one thread, so no atomics are needed.
  parallel_for(ctx, p.planes, ceil_div(65536, std::max<int64_t>(1, HW + OHW)),
               [&](int64_t begin, int64_t end) {
                 int64_t local_bad = 0;
                 for (int64_t plane = begin; plane < end; ++plane) {
                   T* out = gx + plane * HW;
                   const T* g = gy + plane * OHW;
                   const int64_t* ind = indices + plane * OHW;
                   std::fill(out, out + HW, T(0));
                   for (int64_t o = 0; o < OHW; ++o) {
                     const int64_t i = ind[o];
                     if (i < 0 || i >= HW) {
                       ++local_bad;
                       continue;
                     }
                     out[i] += g[o];
                   }
                 }
                 if (local_bad) {
#ifdef _OPENMP
#pragma omp atomic
#endif
                   bad += local_bad;
                 }
               });
  return bad == 0;
}

template void max_pool2d_forward<float>(const Context&, const Pool2dParams&, const float*, float*,
                                        int64_t*);
template void max_pool2d_forward<double>(const Context&, const Pool2dParams&, const double*,
                                         double*, int64_t*);
template bool max_pool2d_backward<float>(const Context&, const Pool2dParams&, const float*,
                                         const int64_t*, float*);
template bool max_pool2d_backward<double>(const Context&, const Pool2dParams&, const double*,
                                          const int64_t*, double*);

}  // namespace fastlayers::cpu
