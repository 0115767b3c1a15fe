// ReLU forward/backward (one read and one write per element, two reads for the backward: memory-
// bound, so a plain grid-stride loop) and bias_grad (see relu.h).
#include "common.cuh"
#include "relu.h"

namespace fastlayers::cuda {
namespace {

template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    relu_forward_kernel(int64_t n, const T* x, T* y) {
  for (int64_t i = global_thread_index(); i < n; i += grid_thread_count()) {
    const T v = x[i];
    const acc_t<T> a = to_acc(v);
    y[i] = a < acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : v;  // NaN and -0.0 pass, as in torch.relu
  }
}

template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    relu_backward_kernel(int64_t n, const T* gy, const T* y, T* gx) {
  for (int64_t i = global_thread_index(); i < n; i += grid_thread_count()) {
    gx[i] = to_acc(y[i]) <= acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : gy[i];  // NaN y: gy passes
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

template <typename T>
cudaError_t relu_forward(cudaStream_t stream, int64_t n, const T* x, T* y) {
  if (n == 0) return cudaSuccess;
  return launch(relu_forward_kernel<T>, grid_size(n, kElementwiseBlock), kElementwiseBlock, stream,
                n, x, y);
}

template <typename T>
cudaError_t relu_backward(cudaStream_t stream, int64_t n, const T* gy, const T* y, T* gx) {
  if (n == 0) return cudaSuccess;
  return launch(relu_backward_kernel<T>, grid_size(n, kElementwiseBlock), kElementwiseBlock,
                stream, n, gy, y, gx);
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
