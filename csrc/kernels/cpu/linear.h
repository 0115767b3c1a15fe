// linear on the CPU: y = x w^T + b over rows of x, on the GEMM engine. Tested by
// tests/test_linear.py against torch.nn.functional.linear.
#pragma once

#include <cstdint>

#include "parallel.h"

namespace fastlayers::cpu {

// y[M, N] = x[M, K] * w[N, K]^T + bias[N], then ReLU if relu. bias may be null.
template <typename T>
void linear_forward(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* x, const T* w,
                    const T* bias, T* y, bool relu);

// gx[M, K] = gy[M, N] * w[N, K]; gy reads as 0 where relu_output <= 0 when relu_output is set.
template <typename T>
void linear_grad_input(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* gy,
                       const T* w, const T* relu_output, T* gx);

// gw[N, K] = gy[M, N]^T * x[M, K], with the same optional ReLU mask on gy.
template <typename T>
void linear_grad_weight(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* gy,
                        const T* x, const T* relu_output, T* gw);

}  // namespace fastlayers::cpu
