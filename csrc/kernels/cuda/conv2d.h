// conv2d on CUDA, NCHW, as implicit GEMMs on the GEMM engine (gemm.cuh): forward (with bias and
// ReLU in the epilogue, and for conv2d_relu_max_pool2d the max-pool too), grad_input and
// grad_weight (with the ReLU mask of a fused conv2d_relu applied to grad_output as it is loaded,
// or for conv2d_relu_max_pool2d the pooled gradient read through the pool's windows). No im2col
// buffer is written. Launchers take raw pointers to contiguous tensors and enqueue on
// ctx.stream; they return the first launch error. T is float, double, __half or __nv_bfloat16.
// Tested by tests/test_conv2d.py, tests/test_conv2d_relu_max_pool2d.py and
// tests/test_conv2d_grad_{input,weight}_pooled.py with device="cuda", and on the CPU emulation
// of tests/cpp/test_cuda_kernels.cpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include "../params.h"
#include "gemm.h"

namespace fastlayers::cuda {

// y[N, OC, OH, OW] = conv(x, w) + bias, then ReLU if relu. bias may be null. A thin layer (see
// conv2d_thin_slices) runs a direct convolution instead of the GEMM.
template <typename T>
cudaError_t conv2d_forward(const GemmContext& ctx, const Conv2dParams& p, const T* x, const T* w,
                           const T* bias, T* y, bool relu);

// gx[N, C, H, W] from gy[N, OC, OH, OW]; gy reads as 0 wherever relu_output <= 0 when
// relu_output is set. Each gx element is one thread's sum, or a thin layer's (see
// conv2d_grad_input_thin_slices) a fixed number of threads' added in a fixed order:
// deterministic.
template <typename T>
cudaError_t conv2d_grad_input(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                              const T* w, const T* relu_output, T* gx);

// gw[OC, C / groups, KH, KW] from gy and x, with the same optional ReLU mask. The sum over
// images and output pixels is the GEMM's K: one block's k-loop, or split-K with a fixed-order
// second pass (for a thin layer, see conv2d_grad_weight_runs_thin, a direct kernel's chunks).
// Deterministic.
template <typename T>
cudaError_t conv2d_grad_weight(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                               const T* x, const T* relu_output, T* gw);

// Whether a pool's windows do not overlap: each window's extent, (kernel - 1) * dilation + 1, is
// at most its stride, on both axes, so that each activation element lies in one window at most.
bool pool_windows_apart(const Pool2dParams& pool);

// Whether conv2d_grad_input_pooled and conv2d_grad_weight_pooled read the pooled gradient through
// the pool's windows: where pool_windows_apart, in float, __half and __nv_bfloat16. double's GEMM
// tile holds 16 double sums a thread and is at its 128-register bound already: the window
// arithmetic would spill there, so double composes.
template <typename T>
bool conv2d_pooled_grads_read_windows(const Pool2dParams& pool);

// conv2d_grad_input and conv2d_grad_weight (no mask) of the activation gradient that
// max_pool2d_backward (max_pool2d.h) gives from the pooled gradient gy [N, OC, POH, POW], its
// indices and mask (the pooled output, or null): the input and weight gradients of
// conv2d_relu_max_pool2d, pool being its pool (planes = N * OC, over the OH x OW activation).
// Where conv2d_pooled_grads_read_windows, the GEMMs read gy through the windows and the
// activation gradient is never written; otherwise it is, to workspace scratch, and the plain pass
// reads it. Either way the result is bit for bit the composition's.
template <typename T>
cudaError_t conv2d_grad_input_pooled(const GemmContext& ctx, const Conv2dParams& p,
                                     const Pool2dParams& pool, const T* gy,
                                     const int64_t* indices, const T* w, const T* mask, T* gx);
template <typename T>
cudaError_t conv2d_grad_weight_pooled(const GemmContext& ctx, const Conv2dParams& p,
                                      const Pool2dParams& pool, const T* gy,
                                      const int64_t* indices, const T* x, const T* mask, T* gw);

// Whether conv2d_relu_max_pool2d pools in the forward GEMM's epilogue: windows of 4 taps (2 x 2,
// 1 x 4, 4 x 1) that do not overlap (pool_windows_apart). Other pools run composed:
// conv2d_forward into workspace scratch, then max_pool2d_forward.
bool conv2d_relu_max_pool2d_fuses(const Pool2dParams& pool);

// y, indices [N, OC, POH, POW] = max_pool2d(relu(conv(x, w) + bias)), pool being the pool's
// geometry over the [N, OC, OH, OW] activation (planes = N * OC). The same values, ties, NaNs
// and indices as conv2d_forward with relu followed by max_pool2d_forward (bit for bit where both
// split their sums alike: K in the GEMMs, the input channels in the thin kernel's slices).
template <typename T>
cudaError_t conv2d_relu_max_pool2d(const GemmContext& ctx, const Conv2dParams& p,
                                   const Pool2dParams& pool, const T* x, const T* w,
                                   const T* bias, T* y, int64_t* indices);

// How conv2d_forward (pool null), or conv2d_relu_max_pool2d with pool where it fuses, runs a
// layer on sm_count SMs (where ctx.thin_conv): 0 in the GEMM; else in the thin-layer kernel, a
// direct convolution for layers of at most 8 input channels per group (such as the documents'
// first layers) whose filters and input rows fit its shared memory, with the input channels
// split into that many slices. It stages them once per block and sums 4 pixels x 8 channels a
// thread. With 1 slice its sums are the GEMM's, in the same order, so where the GEMM does not
// split K the results are the GEMM path's bit for bit (but for the sign of a sum of zero: the
// GEMM's padding terms turn a -0.0 sum of underflowed products into +0.0); with more, the
// slices' sums are added in slice order. Small layers take more slices, to fill the GPU.
template <typename T>
int conv2d_thin_slices(const Conv2dParams& p, const Pool2dParams* pool, int sm_count);

// How conv2d_grad_input, and conv2d_grad_input_pooled (either way), run a layer on sm_count SMs
// (where ctx.thin_conv): 0 in the GEMM; else, for a layer of at most 8 input channels per group
// and stride 1 whose gradient rows and filters fit, in the thin-layer kernel as the transposed
// conv (the output gradient convolved with the flipped filters), with that many slices; its
// sums are in a different order from the GEMM's. The slices depend on the SM count, so a small
// thin layer's results (forward and grad_input) may differ in their last bits between GPUs of
// different sizes; on one GPU they are deterministic, as split-K's are.
template <typename T>
int conv2d_grad_input_thin_slices(const Conv2dParams& p, int sm_count);

// Whether conv2d_grad_weight and conv2d_grad_weight_pooled (where it reads the windows) run the
// thin-layer grad_weight kernel (where ctx.thin_conv): at most 8 input channels per group, at
// most 1024 taps (C / groups * KH * KW), and input rows that fit its shared memory. It splits
// the sum over images and pixels into chunks, deterministically, where the GEMM's tile would be
// mostly padding and its split-K too coarse; its sums are in a different order from the GEMM's.
template <typename T>
bool conv2d_grad_weight_runs_thin(const Conv2dParams& p);

}  // namespace fastlayers::cuda
