// max_pool2d on CUDA, NCHW, with torch's semantics: -inf padding, dilation, ceil_mode windows,
// NaN propagation, and int64 indices as flat offsets into each H*W plane. Launchers take raw
// pointers to contiguous tensors and enqueue on `stream`; they return the first launch error.
// T is float, double, __half or __nv_bfloat16. Tested by tests/test_max_pool2d.py and
// tests/test_conv2d_relu_max_pool2d.py with device="cuda".
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "../params.h"

namespace fastlayers::cuda {

template <typename T>
cudaError_t max_pool2d_forward(cudaStream_t stream, const Pool2dParams& p, const T* x, T* y,
                               int64_t* indices);

// gx = 0, then gx[plane][indices[o]] += gy[o] for every output o of the plane. Only p.planes,
// H, W, OH and OW are read (the op's schema carries no window geometry: the indices say where
// each gradient goes). An index outside its H*W plane, which only hand-made indices can hold,
// is skipped: reporting it would need a device-to-host synchronisation.
//   deterministic: one warp per plane adds the gradients in output order, so every gx element
//                  is summed in the same order as on the CPU (bitwise equal for float/double).
//   otherwise:     one thread per output, atomicAdd into gx (order-dependent rounding where
//                  windows overlap; exact where they don't, as in 2x2/2 pooling).
template <typename T>
cudaError_t max_pool2d_backward(cudaStream_t stream, const Pool2dParams& p, const T* gy,
                                const int64_t* indices, T* gx, bool deterministic);

}  // namespace fastlayers::cuda
