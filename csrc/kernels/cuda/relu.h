// Elementwise ReLU on CUDA, its backward, and the bias gradient that a fused ReLU's backward
// needs. Launchers take raw pointers to contiguous tensors and enqueue on `stream`; they return
// the first launch error. T is float, double, __half or __nv_bfloat16. Outputs must not overlap
// the inputs (the kernels read through __restrict__ pointers). Tested by
// tests/test_relu.py, and through linear_relu and conv2d_relu, with device="cuda".
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastlayers::cuda {

// y = max(x, 0) with NaN propagated, as torch.relu.
template <typename T>
cudaError_t relu_forward(cudaStream_t stream, int64_t n, const T* x, T* y);

// gx = gy where y > 0, else 0 (torch's threshold_backward on the output).
template <typename T>
cudaError_t relu_backward(cudaStream_t stream, int64_t n, const T* gy, const T* y, T* gx);

// Bias gradient of a tensor viewed as [outer, channels, inner]: gb[c] = sum of gy[o, c, i] over
// o and i, reading gy as 0 where relu_output <= 0 when relu_output is set. Each channel summed
// by one block (a block takes 32 channels where inner is 1), in a fixed order: deterministic, no
// atomics.
template <typename T>
cudaError_t bias_grad(cudaStream_t stream, int64_t outer, int64_t channels, int64_t inner,
                      const T* gy, const T* relu_output, T* gb);

}  // namespace fastlayers::cuda
