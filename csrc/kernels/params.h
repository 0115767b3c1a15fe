// Sizes of one conv2d or max_pool2d call, shared by the CPU and CUDA kernels. The torch layer
// (csrc/checks.cpp) fills them after validating every argument; kernels trust them.
#pragma once

#include <cstdint>

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

}  // namespace fastlayers
