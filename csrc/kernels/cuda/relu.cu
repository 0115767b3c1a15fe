// ReLU forward/backward and bias_grad (see relu.h). ReLU is memory-bound (one read and one write
// per element, two reads for the backward), so its kernels move 16 bytes per load and store
// (Pack<T>: 4 floats, 2 doubles, 8 halves) where every pointer is 16-byte aligned, the
// contiguous tensors of the caching allocator; the last n % Pack<T>::kSize elements, and
// unaligned tensors, go one element at a time.
#include <cstdint>

#include "common.cuh"
#include "relu.h"

namespace fastlayers::cuda {
namespace {

// torch.relu on one element: NaN and -0.0 pass.
template <typename T>
__device__ __forceinline__ T relu_element(T v) {
  return to_acc(v) < acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : v;
}

// threshold_backward on the output: gy where y > 0 (or NaN), else 0.
template <typename T>
__device__ __forceinline__ T relu_grad_element(T gy, T y) {
  return to_acc(y) <= acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : gy;
}

// Elements [0, packs * kSize) as packs when kPacked (the launcher checked the alignment), then
// the rest one by one; kPacked == false takes every element one by one.
template <typename T, bool kPacked>
__global__ void __launch_bounds__(kElementwiseBlock)
    relu_forward_kernel(int64_t n, const T* __restrict__ x, T* __restrict__ y) {
  using P = Pack<T>;
  const int64_t packs = kPacked ? n / P::kSize : 0;
  for (int64_t i = global_thread_index(); i < packs; i += grid_thread_count()) {
    P p = reinterpret_cast<const P*>(x)[i];
#pragma unroll
    for (int j = 0; j < P::kSize; ++j) p.v[j] = relu_element(p.v[j]);
    reinterpret_cast<P*>(y)[i] = p;
  }
  for (int64_t i = packs * P::kSize + global_thread_index(); i < n; i += grid_thread_count()) {
    y[i] = relu_element(x[i]);
  }
}

template <typename T, bool kPacked>
__global__ void __launch_bounds__(kElementwiseBlock)
    relu_backward_kernel(int64_t n, const T* __restrict__ gy, const T* __restrict__ y,
                         T* __restrict__ gx) {
  using P = Pack<T>;
  const int64_t packs = kPacked ? n / P::kSize : 0;
  for (int64_t i = global_thread_index(); i < packs; i += grid_thread_count()) {
    P g = reinterpret_cast<const P*>(gy)[i];
    const P out = reinterpret_cast<const P*>(y)[i];
#pragma unroll
    for (int j = 0; j < P::kSize; ++j) g.v[j] = relu_grad_element(g.v[j], out.v[j]);
    reinterpret_cast<P*>(gx)[i] = g;
  }
  for (int64_t i = packs * P::kSize + global_thread_index(); i < n; i += grid_thread_count()) {
    gx[i] = relu_grad_element(gy[i], y[i]);
  }
}

// A power of two for the tree below; 256 threads read 256 consecutive elements of a channel's
// rows at a time (coalesced when inner is large, the conv case).
constexpr int kReduceBlock = 256;

// One block per channel (grid-stride over channels). Thread t sums the channel's elements
// t, t + 256, t + 512, ... in order, j = o * inner + i for element gy[(o * channels + c) * inner
// + i]; then the 256 partial sums are added pairwise in a fixed tree.
template <typename T>
__global__ void __launch_bounds__(kReduceBlock)
    bias_grad_kernel(int64_t outer, int64_t channels, int64_t inner, const T* gy, const T* mask,
                     T* gb) {
  using A = acc_t<T>;
  __shared__ A partial[kReduceBlock];
  const int t = static_cast<int>(threadIdx.x);
  const int64_t per_channel = outer * inner;
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    A sum = A(0);
    for (int64_t j = t; j < per_channel; j += kReduceBlock) {
      const int64_t o = j / inner, i = j - o * inner;
      const int64_t offset = (o * channels + c) * inner + i;
      const A v = to_acc(gy[offset]);
      if (mask == nullptr || !(to_acc(mask[offset]) <= A(0))) sum += v;
    }
    partial[t] = sum;
    __syncthreads();
    for (int width = kReduceBlock / 2; width > 0; width /= 2) {
      if (t < width) partial[t] += partial[t + width];
      __syncthreads();
    }
    if (t == 0) gb[c] = from_acc<T>(partial[0]);
    __syncthreads();  // partial[0] is read before the next channel overwrites it
  }
}

}  // namespace

// One thread per pack (or per element when unaligned).
template <typename T>
cudaError_t relu_forward(cudaStream_t stream, int64_t n, const T* x, T* y) {
  if (n == 0) return cudaSuccess;
  if (aligned16(x) && aligned16(y)) {
    return launch(relu_forward_kernel<T, true>, grid_size(ceil_div(n, Pack<T>::kSize),
                                                          kElementwiseBlock),
                  kElementwiseBlock, stream, n, x, y);
  }
  return launch(relu_forward_kernel<T, false>, grid_size(n, kElementwiseBlock), kElementwiseBlock,
                stream, n, x, y);
}

template <typename T>
cudaError_t relu_backward(cudaStream_t stream, int64_t n, const T* gy, const T* y, T* gx) {
  if (n == 0) return cudaSuccess;
  if (aligned16(gy) && aligned16(y) && aligned16(gx)) {
    return launch(relu_backward_kernel<T, true>, grid_size(ceil_div(n, Pack<T>::kSize),
                                                           kElementwiseBlock),
                  kElementwiseBlock, stream, n, gy, y, gx);
  }
  return launch(relu_backward_kernel<T, false>, grid_size(n, kElementwiseBlock),
                kElementwiseBlock, stream, n, gy, y, gx);
}

template <typename T>
cudaError_t bias_grad(cudaStream_t stream, int64_t outer, int64_t channels, int64_t inner,
                      const T* gy, const T* relu_output, T* gb) {
  if (channels == 0) return cudaSuccess;
  return launch(bias_grad_kernel<T>, grid_size(channels, 1), kReduceBlock, stream, outer, channels,
                inner, gy, relu_output, gb);
}

#define FASTLAYERS_INSTANTIATE(T)                                                               \
  template cudaError_t relu_forward<T>(cudaStream_t, int64_t, const T*, T*);                     \
  template cudaError_t relu_backward<T>(cudaStream_t, int64_t, const T*, const T*, T*);          \
  template cudaError_t bias_grad<T>(cudaStream_t, int64_t, int64_t, int64_t, const T*, const T*, \
                                    T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
