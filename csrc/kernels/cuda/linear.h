// linear on CUDA: y = x w^T + b over the rows of x, and its two gradients, on the GEMM engine
// (gemm.cuh). Launchers take raw pointers to contiguous tensors and enqueue on ctx.stream; they
// return the first launch error. T is float, double, __half or __nv_bfloat16 (half types
// accumulate in float). Tested by tests/test_linear.py with device="cuda".
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "gemm.h"

namespace fastlayers::cuda {

// y[M, N] = x[M, K] * w[N, K]^T + bias[N], then ReLU if relu. bias may be null.
template <typename T>
cudaError_t linear_forward(const GemmContext& ctx, int64_t M, int64_t N, int64_t K, const T* x,
                           const T* w, const T* bias, T* y, bool relu);

// gx[M, K] = gy[M, N] * w[N, K]; gy reads as 0 where relu_output <= 0 when relu_output is set.
template <typename T>
cudaError_t linear_grad_input(const GemmContext& ctx, int64_t M, int64_t N, int64_t K,
                              const T* gy, const T* w, const T* relu_output, T* gx);

// gw[N, K] = gy[M, N]^T * x[M, K], with the same optional ReLU mask on gy. The reduction over
// the M rows is in the GEMM's k-loop (split-K with a fixed-order second pass when M is long).
template <typename T>
cudaError_t linear_grad_weight(const GemmContext& ctx, int64_t M, int64_t N, int64_t K,
                               const T* gy, const T* x, const T* relu_output, T* gw);

}  // namespace fastlayers::cuda
