// Elementwise ReLU and the reductions that a fused ReLU's backward needs. Tested by
// tests/test_relu.py, and through linear_relu and conv2d_relu.
#pragma once

#include <cstdint>

#include "parallel.h"

namespace fastlayers::cpu {

// y = max(x, 0) with NaN propagated, as torch.relu.
template <typename T>
void relu_forward(const Context& ctx, int64_t n, const T* x, T* y);

// gx = 0 where y <= 0, else gy: torch's threshold_backward on the output, so a NaN output passes
// its gradient. Every fused ReLU mask (bias_grad, the GEMM's operand masks, conv2d's padded
// planes) selects the same way.
template <typename T>
void relu_backward(const Context& ctx, int64_t n, const T* gy, const T* y, T* gx);

// Bias gradient of a tensor viewed as [outer, channels, inner]: gb[c] = sum of gy[o, c, i] over
// o and i, reading gy as 0 where relu_output <= 0 when relu_output is set. Linear uses
// inner = 1, conv2d uses outer = N and inner = OH * OW. Accumulates in double.
template <typename T>
void bias_grad(const Context& ctx, int64_t outer, int64_t channels, int64_t inner, const T* gy,
               const T* relu_output, T* gb);

}  // namespace fastlayers::cpu
