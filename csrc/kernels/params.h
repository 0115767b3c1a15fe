// Sizes of one conv2d or max_pool2d call, shared by the CPU and CUDA kernels, and the pooling
// window arithmetic both use. The torch layer (csrc/checks.cpp) fills them after validating every
// argument; kernels trust them.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTLAYERS_HOST_DEVICE __host__ __device__
#else
#define FASTLAYERS_HOST_DEVICE
#endif

namespace fastlayers {

// Padding is given as top/left; the bottom/right padding is implied by OH and OW, so asymmetric
// padding ('same' with an even kernel) needs nothing special.
struct Conv2dParams {
  int64_t N, C, H, W;  // input
  int64_t OC, KH, KW;  // weight is [OC, C / groups, KH, KW]
  int64_t OH, OW;      // output
  int64_t stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups;
};

// `planes` is N * C; the padding is symmetric and filled with -inf.
struct Pool2dParams {
  int64_t planes, H, W, OH, OW;
  int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// The first of start, start + step, start + 2 * step, ... that is >= 0: a pooling window's first
// row or column inside the plane. Computed, not stepped to: the padding can be as large as half a
// window of any size.
FASTLAYERS_HOST_DEVICE inline int64_t first_in_bounds(int64_t start, int64_t step) {
  if (start >= 0) return start;
  const int64_t steps = -start / step + (-start % step != 0);
  return start + steps * step;
}

// Output (oh, ow)'s pooling window, clipped to the plane: rows h0, h0 + dilation_h, ... below h1,
// and columns w0, w0 + dilation_w, ... below w1 (none where h0 >= h1 or w0 >= w1: a window wholly
// in the padding, whose max_pool2d output is -inf and whose index is none of its taps). The walk
// of max_pool2d's forward on both backends.
struct PoolWindow {
  int64_t h0, h1, w0, w1;

  FASTLAYERS_HOST_DEVICE PoolWindow(const Pool2dParams& p, int64_t oh, int64_t ow) {
    const int64_t start_h = oh * p.stride_h - p.pad_h, start_w = ow * p.stride_w - p.pad_w;
    const int64_t end_h = start_h + (p.kernel_h - 1) * p.dilation_h + 1;
    const int64_t end_w = start_w + (p.kernel_w - 1) * p.dilation_w + 1;
    h0 = first_in_bounds(start_h, p.dilation_h), h1 = end_h < p.H ? end_h : p.H;
    w0 = first_in_bounds(start_w, p.dilation_w), w1 = end_w < p.W ? end_w : p.W;
  }
};

}  // namespace fastlayers
