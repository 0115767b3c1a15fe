// Device-side helpers shared by every CUDA kernel file: the accumulation type of each element
// type, conversions, ceil_div, 32-bit division by invariant divisors, the block sizes with the
// reason for each, grid-stride loop bounds, and the one launch helper. Included by the .cu files only (never by the torch layer).
// Tested through every op's CUDA tests and the C++ tests' CPU emulation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fastlayers::cuda {

// Half types accumulate in float (ATen's opmath_type); float and double in themselves.
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<__half> {
  using type = float;
};
template <>
struct AccType<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using acc_t = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

// Round-to-nearest-even back to T.
template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v);
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <>
__device__ __forceinline__ double from_acc<double>(double v) { return v; }

// torch.relu: negatives become 0; NaN and -0.0 pass through.
template <typename A>
__device__ __forceinline__ A relu_value(A v) {
  return v < A(0) ? A(0) : v;
}

// 16 bytes of T: one 128-bit load or store, for pointers that are 16-byte aligned.
// The gradient through a fused ReLU, applied on load: data[offset], or 0 wherever mask (the
// ReLU's output, same layout; null for no ReLU) is <= 0. A NaN mask passes, as in torch's
// threshold_backward. Sums of these start at +0.0, so adding a masked +0.0 never changes them.
template <typename T>
__device__ __forceinline__ acc_t<T> masked(const T* data, const T* mask, int64_t offset) {
  if (mask != nullptr && to_acc(mask[offset]) <= acc_t<T>(0)) return acc_t<T>(0);
  return to_acc(data[offset]);
}

template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__host__ __device__ constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Division by a divisor fixed at launch, for numerators below 2^31, as a multiply-high and a
// shift (Granlund and Montgomery, "Division by invariant integers using multiplication", 1994,
// fig. 4.1): with s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1, n / d is
// (umulhi(m, n) + n) >> s, exact for every n < 2^32; n < 2^31 keeps the sum within 32 bits.
// A 64-bit division is a subroutine of about 70 instructions on the GPU, a 32-bit one about 20;
// this is 3. Built on the host (for 1 <= d < 2^31 only: callers check), used on the device.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 1, shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) ++shift;
    const uint64_t excess = (uint64_t{1} << shift) - d;  // < d, so the quotient is < 2^32
    multiplier = static_cast<uint32_t>((excess << 32) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return (__umulhi(n, multiplier) + n) >> shift;
  }
  // quotient and remainder of n (< 2^31).
  __device__ __forceinline__ void operator()(uint32_t n, uint32_t& quotient,
                                             uint32_t& remainder) const {
    quotient = div(n);
    remainder = n - quotient * divisor;
  }
};

constexpr int64_t kNarrowLimit = int64_t{1} << 31;

// A divisor with its 32-bit fast form (FastDivmod), which is built only for 1 <= d < 2^31 and
// used only where `fits` (an empty conv or pool has sizes of 0, which nothing then divides by).
struct Divisor {
  int64_t value = 1;
  bool fits = true;
  FastDivmod fast;
  Divisor() = default;
  explicit Divisor(int64_t d)
      : value(d), fits(d >= 1 && d < kNarrowLimit), fast(static_cast<uint32_t>(fits ? d : 1)) {}
};

// quotient = n / d and remainder = n % d (n >= 0): three instructions when kNarrow, which the
// launchers choose only where every numerator is below 2^31; 64-bit division otherwise.
template <bool kNarrow>
__device__ __forceinline__ void divmod(int64_t n, const Divisor& d, int64_t& quotient,
                                       int64_t& remainder) {
  if constexpr (kNarrow) {
    uint32_t q, r;
    d.fast(static_cast<uint32_t>(n), q, r);
    quotient = q;
    remainder = r;
  } else {
    quotient = n / d.value;
    remainder = n - quotient * d.value;
  }
}

// Whether n (>= 0) is a multiple of d: a position's distance from a pooling window's start lies
// on the window's dilated grid. No division where d is 1, the usual dilation.
template <bool kNarrow>
__device__ __forceinline__ bool is_multiple(int64_t n, const Divisor& d) {
  if (d.value == 1) return true;
  int64_t q, r;
  divmod<kNarrow>(n, d, q, r);
  return r == 0;
}

// Elementwise and per-output kernels: 256 threads is 8 warps, enough to hide one load's latency
// per thread at full occupancy on sm_80/sm_90 (2048 threads per SM = 8 blocks) while keeping
// blocks small enough that the last wave is not mostly idle.
constexpr int kElementwiseBlock = 256;

// Kernels that loop over their work with a grid stride launch at most this many blocks: far
// below the 2^31 - 1 limit of gridDim.x, and more than any GPU runs at once (132 SMs x 8 blocks
// on an H100), so the cap never costs parallelism and the loops stay short.
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;

// Blocks for `work` items at `per_block` items per block, capped for a grid-stride loop. Callers
// return before launching when work == 0 (a 0-block grid is a launch error).
inline unsigned grid_size(int64_t work, int64_t per_block) {
  const int64_t blocks = ceil_div(work, per_block);
  return static_cast<unsigned>(blocks < kMaxGridBlocks ? blocks : kMaxGridBlocks);
}

// Every kernel is launched through here: kernel<<<grid, block, 0, stream>>>(args...), returning
// the launch's error. Host compilers see these files only in the CPU emulation that runs the
// kernels in the C++ tests (tests/cpp/cuda_emulation.h), which defines its own launch().
#if defined(__CUDACC__)
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t stream,
                   Args... args) {
  kernel<<<grid, block, 0, stream>>>(args...);
  return cudaGetLastError();
}
#endif

// The first item of this thread in a 1-D grid-stride loop, and the stride; 64-bit, so that
// tensors past 2^31 elements are indexed correctly.
__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_thread_count() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace fastlayers::cuda
