// max_pool2d forward and backward (see max_pool2d.h). The window walk is the CPU kernel's
// (csrc/kernels/cpu/max_pool2d.cpp) and ATen's, so ties, -inf-only windows and NaNs pick the
// same index as torch:
//   h0 = oh * stride_h - pad_h, h1 = min(h0 + (kernel_h - 1) * dilation_h + 1, H), then h0 is
//   moved past the padding in whole dilation steps (likewise w0, w1); the running maximum starts at
//   -inf with index h0 * W + w0, and a value takes over when it is strictly greater or NaN.
// Values are compared in the accumulation type (float for half types), as ATen's CUDA kernel.
#include <algorithm>
#include <cuda/std/limits>

#include "common.cuh"
#include "max_pool2d.h"

namespace fastlayers::cuda {
namespace {

// The divisors of the forward's index arithmetic (see divmod in common.cuh): an output's plane
// and row.
struct OutputDivisors {
  Divisor OHW, OW;
  // Both fit FastDivmod and every output's offset is below 2^31.
  bool narrow;

  explicit OutputDivisors(const Pool2dParams& p) : OHW(p.OH * p.OW), OW(p.OW) {
    narrow = OHW.fits && OW.fits && p.planes * p.OH * p.OW < kNarrowLimit;
  }
};

// One thread per output element, over every plane.
template <typename T, bool kNarrow>
__global__ void __launch_bounds__(kElementwiseBlock)
    max_pool2d_forward_kernel(Pool2dParams p, OutputDivisors d, const T* x, T* y,
                              int64_t* indices) {
  using A = acc_t<T>;
  const int64_t total = p.planes * p.OH * p.OW;
  const Divisor plane_size = d.OHW, width = d.OW;  // in registers, as in the backward
  for (int64_t o = global_thread_index(); o < total; o += grid_thread_count()) {
    int64_t plane, r, oh, ow;
    divmod<kNarrow>(o, plane_size, plane, r);
    divmod<kNarrow>(r, width, oh, ow);
    const PoolWindow win(p, oh, ow);
    const T* in = x + plane * p.H * p.W;
    int64_t best_index = win.h0 * p.W + win.w0;
    A best = -::cuda::std::numeric_limits<A>::infinity();
    for (int64_t h = win.h0; h < win.h1; h += p.dilation_h) {
      for (int64_t w = win.w0; w < win.w1; w += p.dilation_w) {
        const A v = to_acc(in[h * p.W + w]);
        if (v > best || v != v) {
          best = v;
          best_index = h * p.W + w;
        }
      }
    }
    y[o] = from_acc<T>(best);  // exact: best is -inf or a value read from x
    indices[o] = best_index;
  }
}

// The divisors of the backward's index arithmetic (see divmod in common.cuh).
struct PoolDivisors {
  Divisor W, H, stride_h, stride_w, dilation_h, dilation_w;
  // Every divisor fits FastDivmod and every numerator (an element's offset in the tensor, its
  // row, and a position plus its padding) is below 2^31.
  bool narrow;

  explicit PoolDivisors(const Pool2dParams& p)
      : W(p.W), H(p.H), stride_h(p.stride_h), stride_w(p.stride_w), dilation_h(p.dilation_h),
        dilation_w(p.dilation_w) {
    const int64_t largest = std::max({p.planes * p.H * p.W, p.H + p.pad_h, p.W + p.pad_w});
    narrow = W.fits && H.fits && stride_h.fits && stride_w.fits && dilation_h.fits &&
             dilation_w.fits && largest < kNarrowLimit;
  }
};

// The outputs along one axis whose window may hold position x: [first, last], the windows that
// start at or before x and whose last tap (span past the start) is at or past it. A window of
// the range holds x where x's distance from its start is a multiple of the dilation.
template <bool kNarrow>
__device__ __forceinline__ void windows_over(int64_t x, int64_t pad, int64_t span,
                                             int64_t outputs, const Divisor& stride,
                                             int64_t& first, int64_t& last) {
  const int64_t from_first = x + pad;  // x's distance from the first window's start
  int64_t q, r;
  divmod<kNarrow>(from_first, stride, q, r);
  last = min(q, outputs - 1);
  first = 0;
  if (from_first > span) {  // the windows before ceil((from_first - span) / stride) end before x
    divmod<kNarrow>(from_first - span, stride, q, r);
    first = q + (r != 0);
  }
}

// One thread per input element (plane, h, w): the windows holding it, in output order. At least
// 4 blocks per SM (at most 64 registers): left to itself, ptxas squeezes some instances into 32
// registers with a spill.
template <typename T, bool kNarrow>
__global__ void __launch_bounds__(kElementwiseBlock, 4)
    max_pool2d_backward_kernel(Pool2dParams p, PoolDivisors d, const T* __restrict__ gy,
                               const int64_t* __restrict__ indices, const T* __restrict__ mask,
                               T* __restrict__ gx) {
  using A = acc_t<T>;
  const int64_t total = p.planes * p.H * p.W;
  const int64_t span_h = (p.kernel_h - 1) * p.dilation_h, span_w = (p.kernel_w - 1) * p.dilation_w;
  // In registers: the functions below take references, which would otherwise keep the
  // parameter struct addressed in local memory.
  const Divisor width = d.W, height = d.H, stride_h = d.stride_h, stride_w = d.stride_w;
  const Divisor dilation_h = d.dilation_h, dilation_w = d.dilation_w;
  for (int64_t e = global_thread_index(); e < total; e += grid_thread_count()) {
    int64_t row, w, plane, h;
    divmod<kNarrow>(e, width, row, w);
    divmod<kNarrow>(row, height, plane, h);
    int64_t oh0, oh1, ow0, ow1;
    windows_over<kNarrow>(h, p.pad_h, span_h, p.OH, stride_h, oh0, oh1);
    windows_over<kNarrow>(w, p.pad_w, span_w, p.OW, stride_w, ow0, ow1);
    const int64_t q = h * p.W + w;
    A sum = A(0);
    // A few windows at most per axis (one for windows that do not overlap): no unrolling.
#pragma unroll 1
    for (int64_t oh = oh0; oh <= oh1; ++oh) {
      if (!is_multiple<kNarrow>(h + p.pad_h - oh * p.stride_h, dilation_h)) continue;
      const int64_t row_start = (plane * p.OH + oh) * p.OW;
#pragma unroll 1
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        if (!is_multiple<kNarrow>(w + p.pad_w - ow * p.stride_w, dilation_w)) continue;
        const int64_t o = row_start + ow;
        if (indices[o] != q) continue;
        sum += masked(gy, mask, o);
      }
    }
    gx[e] = from_acc<T>(sum);
  }
}

}  // namespace

template <typename T>
cudaError_t max_pool2d_forward(cudaStream_t stream, const Pool2dParams& p, const T* x, T* y,
                               int64_t* indices) {
  const int64_t total = p.planes * p.OH * p.OW;
  if (total == 0) return cudaSuccess;
  const OutputDivisors d(p);
  const unsigned grid = grid_size(total, kElementwiseBlock);
  if (d.narrow) {
    return launch(max_pool2d_forward_kernel<T, true>, grid, kElementwiseBlock, stream, p, d, x, y,
                  indices);
  }
  return launch(max_pool2d_forward_kernel<T, false>, grid, kElementwiseBlock, stream, p, d, x, y,
                indices);
}

template <typename T>
cudaError_t max_pool2d_backward(cudaStream_t stream, const Pool2dParams& p, const T* gy,
                                const int64_t* indices, const T* mask, T* gx) {
  const int64_t total = p.planes * p.H * p.W;
  if (total == 0) return cudaSuccess;
  const PoolDivisors d(p);
  const unsigned grid = grid_size(total, kElementwiseBlock);
  if (d.narrow) {
    return launch(max_pool2d_backward_kernel<T, true>, grid, kElementwiseBlock, stream, p, d, gy,
                  indices, mask, gx);
  }
  return launch(max_pool2d_backward_kernel<T, false>, grid, kElementwiseBlock, stream, p, d, gy,
                indices, mask, gx);
}

#define FASTLAYERS_INSTANTIATE(T)                                                               \
  template cudaError_t max_pool2d_forward<T>(cudaStream_t, const Pool2dParams&, const T*, T*,    \
                                             int64_t*);                                           \
  template cudaError_t max_pool2d_backward<T>(cudaStream_t, const Pool2dParams&, const T*,       \
                                              const int64_t*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
