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

// gx[plane][q] = the sum, in output order, of gy[o] over the plane's outputs o whose window has
// q as a tap (in the plane, on the dilated grid) and whose index indices[o] is q; where mask is
// non-null, gy[o] counts as 0 wherever mask[o] <= 0 (a NaN passes, as torch's threshold_backward:
// the fused conv->ReLU->pool's gradient, mask being its pooled output). An index that is not one
// of its own window's taps passes nothing: a window wholly in the padding gives such an index,
// and its output depends on no input. A gather, one thread per input element: every gx element is
// written once, with no zero fill and no atomics, so it is deterministic and sums in the same
// order as the CPU (bitwise equal for float and double).
template <typename T>
cudaError_t max_pool2d_backward(cudaStream_t stream, const Pool2dParams& p, const T* gy,
                                const int64_t* indices, const T* mask, T* gx);

}  // namespace fastlayers::cuda
