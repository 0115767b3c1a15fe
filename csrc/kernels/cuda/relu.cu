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

// bias_grad sums each channel's elements in a fixed order (deterministic, no atomics): each
// thread its share in order, then the block's partial sums pairwise in a fixed tree in shared
// memory. Two layouts:
//
// inner > 1 (a conv's gradient, [N, C, H * W]): one block per channel, kChannelBlock threads.
// Thread t sums the channel's elements j = t, t + kChannelBlock, ... (element j is gy[(o *
// channels + c) * inner + i] for o = j / inner, i = j % inner, a 32-bit multiply-high division
// where kNarrow), kUnroll loads at a time (one on the 64-bit path, whose division routine
// leaves no registers for more within the block's 64 a thread): a warp's loads run along a row
// of `inner` values.
constexpr int kChannelBlock = 1024;
constexpr int kUnroll = 4;

// The partial sums partial[0 .. width * 2 - 1] (each at partial[k * stride]) added pairwise into
// partial[0]: the fixed tree. Every thread of the block calls it, `t` its index in the tree.
template <typename A>
__device__ __forceinline__ void add_tree(A* partial, int width, int stride, int t) {
  for (; width > 0; width /= 2) {
    if (t < width) partial[t * stride] += partial[(t + width) * stride];
    __syncthreads();
  }
}

template <typename T, bool kNarrow>
__global__ void __launch_bounds__(kChannelBlock)
    bias_grad_channel_kernel(int64_t outer, int64_t channels, Divisor inner, const T* gy,
                             const T* mask, T* gb) {
  using A = acc_t<T>;
  constexpr int kLoads = kNarrow ? kUnroll : 1;
  __shared__ A partial[kChannelBlock];
  const int t = static_cast<int>(threadIdx.x);
  const Divisor row = inner;  // in registers (see max_pool2d.cu)
  const int64_t per_channel = outer * row.value;
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    A sum = A(0);
    for (int64_t j0 = t; j0 < per_channel; j0 += kLoads * kChannelBlock) {
      A v[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int64_t j = j0 + int64_t{u} * kChannelBlock;
        v[u] = A(0);
        if (j < per_channel) {
          int64_t o, i;
          divmod<kNarrow>(j, row, o, i);
          const int64_t offset = (o * channels + c) * row.value + i;
          v[u] = masked(gy, mask, offset);
        }
      }
#pragma unroll
      for (int u = 0; u < kLoads; ++u) sum += v[u];
    }
    partial[t] = sum;
    __syncthreads();
    add_tree(partial, kChannelBlock / 2, 1, t);
    if (t == 0) gb[c] = from_acc<T>(partial[0]);
    __syncthreads();  // partial[0] is read before the next channel overwrites it
  }
}

// inner == 1 (linear's gradient, [rows, channels]): a block takes kColumns consecutive
// channels, so that a warp reads 32 consecutive values of a row; thread (y, x) (y = t / 32)
// sums rows y, y + kRowGroups, ... of channel c0 + x.
constexpr int kColumns = 32, kRowGroups = 8;

template <typename T>
__global__ void __launch_bounds__(kColumns * kRowGroups)
    bias_grad_columns_kernel(int64_t rows, int64_t channels, const T* gy, const T* mask, T* gb) {
  using A = acc_t<T>;
  __shared__ A partial[kRowGroups * kColumns];
  const int t = static_cast<int>(threadIdx.x), x = t % kColumns, y = t / kColumns;
  for (int64_t tile = blockIdx.x; tile < ceil_div(channels, kColumns); tile += gridDim.x) {
    const int64_t c = tile * kColumns + x;
    A sum = A(0);
    if (c < channels) {
      for (int64_t r = y; r < rows; r += kRowGroups) {
        const int64_t offset = r * channels + c;
        sum += masked(gy, mask, offset);
      }
    }
    partial[t] = sum;  // partial[y * kColumns + x]
    __syncthreads();
    add_tree(partial + x, kRowGroups / 2, kColumns, y);
    if (y == 0 && c < channels) gb[c] = from_acc<T>(partial[x]);
    __syncthreads();  // read before the next tile overwrites it
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
  if (inner == 1) {
    return launch(bias_grad_columns_kernel<T>, grid_size(ceil_div(channels, kColumns), 1),
                  kColumns * kRowGroups, stream, outer, channels, gy, relu_output, gb);
  }
  // inner == 0 leaves nothing to sum (each channel's gradient is 0); Divisor(0) does not fit,
  // which takes the 64-bit path, whose loop then never divides.
  const Divisor row(inner);
  const unsigned grid = grid_size(channels, 1);
  if (row.fits && outer * inner < kNarrowLimit) {
    return launch(bias_grad_channel_kernel<T, true>, grid, kChannelBlock, stream, outer, channels,
                  row, gy, relu_output, gb);
  }
  return launch(bias_grad_channel_kernel<T, false>, grid, kChannelBlock, stream, outer, channels,
                row, gy, relu_output, gb);
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
