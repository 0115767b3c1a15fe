// conv2d on the CPU, NCHW, lowered to the GEMM engine: forward, grad_input and grad_weight.
// Tested by tests/test_conv2d.py against torch.nn.functional.conv2d.
#pragma once

#include <cstdint>

#include "../params.h"
#include "parallel.h"

namespace fastlayers::cpu {

// y[N, OC, OH, OW] = conv(x, w) + bias, then ReLU if relu. bias may be null.
template <typename T>
void conv2d_forward(const Context& ctx, const Conv2dParams& p, const T* x, const T* w,
                    const T* bias, T* y, bool relu);

// gx[N, C, H, W] from gy[N, OC, OH, OW]. When relu_output is non-null, gy is read as 0 wherever
// relu_output <= 0 (the backward of a fused conv2d_relu).
template <typename T>
void conv2d_grad_input(const Context& ctx, const Conv2dParams& p, const T* gy, const T* w,
                       const T* relu_output, T* gx);

// gw[OC, C / groups, KH, KW] from gy and x, with the same optional ReLU mask.
template <typename T>
void conv2d_grad_weight(const Context& ctx, const Conv2dParams& p, const T* gy, const T* x,
                        const T* relu_output, T* gw);

// gw[OC, C / groups, KH, KW] of a conv whose output went through max_pool2d: the same as
// conv2d_grad_weight on max_pool2d_backward(gy, indices), without forming that unpooled gradient.
// For few taps and many output channels each pooled element adds its gradient times the input
// patch of its window's maximum (the GEMM's gather form), a quarter of the dense product's work
// for 2 x 2 windows; otherwise conv2d_grad_weight's kernels run on a few images' unpooled
// gradient at a time, in a buffer that stays in cache. gy and indices are
// [N, OC, pool.OH, pool.OW] (indices: offsets into each OH x OW plane, as max_pool2d's, pool the
// max-pool's geometry on the activation); an index that is not one of its window's taps
// (PoolTaps) passes nothing. When relu_output (gy's layout) is non-null, gy reads as 0
// wherever it is <= 0. Deterministic for a given thread count.
template <typename T>
void conv2d_grad_weight_pooled(const Context& ctx, const Conv2dParams& p, const Pool2dParams& pool,
                               const T* gy, const int64_t* indices, const T* relu_output,
                               const T* x, T* gw);

// gx[N, C, H, W] of a conv whose output went through max_pool2d: conv2d_grad_input of
// max_pool2d_backward(gy, indices), the pooled gradient scattered straight into the padded image
// planes the stride-1 kernels read, one image at a time, so the unpooled gradient is never
// formed in full (other geometries unpool it first). gy, indices and relu_output as in
// conv2d_grad_weight_pooled.
template <typename T>
void conv2d_grad_input_pooled(const Context& ctx, const Conv2dParams& p, const Pool2dParams& pool,
                              const T* gy, const int64_t* indices, const T* relu_output,
                              const T* w, T* gx);

// y, indices = max_pool2d(relu(conv2d(x, w) + bias)), one image at a time: each image's
// activation lives in a per-thread workspace and is pooled while in cache, so the unpooled
// [N, OC, OH, OW] tensor is never written. pool.planes must be N * OC; indices are offsets into
// each OH x OW plane of the activation, as max_pool2d's.
template <typename T>
void conv2d_relu_max_pool2d_forward(const Context& ctx, const Conv2dParams& p,
                                    const Pool2dParams& pool, const T* x, const T* w,
                                    const T* bias, T* y, int64_t* indices);

}  // namespace fastlayers::cpu
