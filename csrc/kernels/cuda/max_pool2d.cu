// max_pool2d forward and backward (see max_pool2d.h). The window walk is the CPU kernel's
// (csrc/kernels/cpu/max_pool2d.cpp) and ATen's, so ties, -inf-only windows and NaNs pick the
// same index as torch:
//   h0 = oh * stride_h - pad_h, h1 = min(h0 + (kernel_h - 1) * dilation_h + 1, H), then h0 is
//   moved past the padding in dilation steps (likewise w0, w1); the running maximum starts at
//   -inf with index h0 * W + w0, and a value takes over when it is strictly greater or NaN.
// Values are compared in the accumulation type (float for half types), as ATen's CUDA kernel.
#include <cuda/std/limits>

#include "common.cuh"
#include "max_pool2d.h"

namespace fastlayers::cuda {
namespace {

// One thread per output element, over every plane.
template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    max_pool2d_forward_kernel(Pool2dParams p, const T* x, T* y, int64_t* indices) {
  using A = acc_t<T>;
  const int64_t OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t o = global_thread_index(); o < total; o += grid_thread_count()) {
    const int64_t plane = o / OHW, r = o - plane * OHW;
    const int64_t oh = r / p.OW, ow = r - oh * p.OW;
    int64_t h0 = oh * p.stride_h - p.pad_h;
    const int64_t h1 = min(h0 + (p.kernel_h - 1) * p.dilation_h + 1, p.H);
    while (h0 < 0) h0 += p.dilation_h;
    int64_t w0 = ow * p.stride_w - p.pad_w;
    const int64_t w1 = min(w0 + (p.kernel_w - 1) * p.dilation_w + 1, p.W);
    while (w0 < 0) w0 += p.dilation_w;
    const T* in = x + plane * p.H * p.W;
    int64_t best_index = h0 * p.W + w0;
    A best = -::cuda::std::numeric_limits<A>::infinity();
    for (int64_t h = h0; h < h1; h += p.dilation_h) {
      for (int64_t w = w0; w < w1; w += p.dilation_w) {
        const A v = to_acc(in[h * p.W + w]);
        if (v > best || v != v) {
          best = v;
          best_index = h * p.W + w;
        }
      }
    }
    y[o] = from_acc<T>(best);  // exact: best is -inf or a value read from x
    indices[o] = best_index;
  }
}

constexpr int kWarp = 32;

// Deterministic backward: one warp per plane (__match_any_sync: sm_70 and newer). The warp
// zeroes the plane, then takes its outputs 32 at a time, in order. Lanes whose indices are equal
// form a group (__match_any_sync); the lowest lane of each group adds the group's gradients to gx
// in lane order. Groups of one chunk write distinct elements, and chunks follow each other
// (__syncwarp orders the memory), so each gx element receives its gradients in increasing output
// order with no race.
template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    max_pool2d_backward_ordered_kernel(Pool2dParams p, const T* gy, const int64_t* indices,
                                       T* gx) {
  using A = acc_t<T>;
  constexpr int kWarpsPerBlock = kElementwiseBlock / kWarp;
  __shared__ A grads[kWarpsPerBlock][kWarp];
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int warp = static_cast<int>(threadIdx.x) / kWarp;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  const int64_t first_plane = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  const int64_t plane_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  // All 32 lanes of a warp run the same planes and chunks: the full-mask warp intrinsics below
  // always have every lane present.
  for (int64_t plane = first_plane; plane < p.planes; plane += plane_stride) {
    T* out = gx + plane * HW;
    const T* g = gy + plane * OHW;
    const int64_t* ind = indices + plane * OHW;
    for (int64_t i = lane; i < HW; i += kWarp) out[i] = from_acc<T>(A(0));
    __syncwarp();
    for (int64_t base = 0; base < OHW; base += kWarp) {
      const int64_t o = base + lane;
      const bool active = o < OHW;
      const int64_t index = active ? ind[o] : -1;
      const bool valid = active && index >= 0 && index < HW;
      grads[warp][lane] = valid ? to_acc(g[o]) : A(0);
      // Invalid lanes all carry key -1 and are never added.
      const unsigned peers = __match_any_sync(0xffffffffu, static_cast<unsigned long long>(
                                                               valid ? index : int64_t{-1}));
      __syncwarp();  // grads[warp][*] written
      if (valid && lane == __ffs(peers) - 1) {
        A sum = to_acc(out[index]);
        for (unsigned rest = peers; rest != 0; rest &= rest - 1) {
          sum += grads[warp][__ffs(rest) - 1];
        }
        out[index] = from_acc<T>(sum);
      }
      __syncwarp();  // gx and grads[warp][*] settled before the next chunk
    }
  }
}

// Non-deterministic backward: one thread per output, atomicAdd into gx (zeroed beforehand).
// atomicAdd on __half is native from sm_70; on __nv_bfloat16 from sm_80 (a compare-and-swap loop
// in cuda_bf16.hpp before that).
template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    max_pool2d_backward_atomic_kernel(Pool2dParams p, const T* gy, const int64_t* indices,
                                      T* gx) {
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW, total = p.planes * OHW;
  for (int64_t o = global_thread_index(); o < total; o += grid_thread_count()) {
    const int64_t index = indices[o];
    if (index < 0 || index >= HW) continue;
    atomicAdd(gx + (o / OHW) * HW + index, gy[o]);
  }
}

}  // namespace

template <typename T>
cudaError_t max_pool2d_forward(cudaStream_t stream, const Pool2dParams& p, const T* x, T* y,
                               int64_t* indices) {
  const int64_t total = p.planes * p.OH * p.OW;
  if (total == 0) return cudaSuccess;
  return launch(max_pool2d_forward_kernel<T>, grid_size(total, kElementwiseBlock),
                kElementwiseBlock, stream, p, x, y, indices);
}

template <typename T>
cudaError_t max_pool2d_backward(cudaStream_t stream, const Pool2dParams& p, const T* gy,
                                const int64_t* indices, T* gx, bool deterministic) {
  const int64_t HW = p.H * p.W, total = p.planes * p.OH * p.OW;
  if (p.planes * HW == 0) return cudaSuccess;
  if (deterministic) {
    // Also the path for total == 0 (an output with OH or OW of 0): it still zeroes gx.
    return launch(max_pool2d_backward_ordered_kernel<T>,
                  grid_size(p.planes, kElementwiseBlock / kWarp), kElementwiseBlock, stream, p, gy,
                  indices, gx);
  }
  // All-zero bits are 0.0 in every floating type.
  cudaError_t err = cudaMemsetAsync(gx, 0, static_cast<size_t>(p.planes * HW) * sizeof(T), stream);
  if (err != cudaSuccess || total == 0) return err;
  return launch(max_pool2d_backward_atomic_kernel<T>, grid_size(total, kElementwiseBlock),
                kElementwiseBlock, stream, p, gy, indices, gx);
}

#define FASTLAYERS_INSTANTIATE(T)                                                               \
  template cudaError_t max_pool2d_forward<T>(cudaStream_t, const Pool2dParams&, const T*, T*,    \
                                             int64_t*);                                           \
  template cudaError_t max_pool2d_backward<T>(cudaStream_t, const Pool2dParams&, const T*,       \
                                              const int64_t*, T*, bool);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
