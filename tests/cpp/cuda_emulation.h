// A CPU emulation of the parts of the CUDA execution model that fastlayers' kernels use, so that
// the kernels of csrc/kernels/cuda/ run, and are checked against a reference, on machines with no
// GPU (tests/cpp/test_cuda_kernels.cpp): their index arithmetic, tiling, tails, barriers and warp
// collectives. Under `make sanitize` the same run is an AddressSanitizer check of every global
// and shared memory access, the counterpart of compute-sanitizer's memcheck.
//
// The kernel files are compiled by the host compiler with this header included first
// (-include; see CMakeLists.txt). Each CUDA thread of a block is a fiber (its own stack, switched
// with swapcontext) on the calling thread. The schedule is deterministic: thread 0 runs until it
// waits at a barrier or leaves the kernel, then thread 1, and so on (or from the last thread to
// the first: Schedule::reverse); when every thread of the block (or lane of the warp) waits at
// the same barrier, they all go on. So a kernel that reads shared memory another thread writes,
// without a barrier in between, reads it too early or too late in one of the two orders, and
// fails its test. Blocks run one after another, so __shared__ arrays are function statics. A
// barrier that the threads of a block (or lanes of a warp) do not all reach at the same line,
// including a thread that leaves the kernel while others wait, aborts the program with the
// places named.
//
// Not modelled: timing, blocks running at the same time, 2-D and 3-D launches, warp masks other
// than the full warp, shared memory's undefined contents at a block's start (here it is zero at
// the first block and what the last block left after that), and weak memory ordering (here a
// warp collective also orders the lanes' memory accesses, which the hardware does not promise
// without __syncwarp).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// Device code calls these unqualified, as CUDA's math headers declare them.
using std::fma;
using std::max;
using std::min;

#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace fastlayers::cuda::emulation {

// How launches run: at most max_grid blocks when it is not 0 (every fastlayers kernel walks its
// work in grid-stride loops, so any grid must give the same result, and a small one makes every
// loop take more than one step), and the threads of a block scheduled from the last to the first
// when reverse is set (a barrier missing between a write by a lower thread and a read by a higher
// one shows only in that order).
struct Schedule {
  unsigned max_grid = 0;
  bool reverse = false;
};
extern Schedule schedule;

// Where the running fiber is in the launch.
struct Position {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern thread_local Position position;

// Runs body once per thread of every block: `block` fibers, over blocks 0 .. grid - 1 in
// order. Returns cudaErrorInvalidConfiguration for an empty grid or block, or a block of more
// than 1024 threads, as a launch would.
cudaError_t run_grid(unsigned grid, unsigned block, const std::function<void()>& body);

// The barriers and warp collectives; `where` names the call site in a failure. Only full-warp
// masks are supported.
void sync_block(const char* where);
void sync_warp(const char* where, unsigned mask = 0xffffffffu);
unsigned match_any(const char* where, unsigned mask, unsigned long long value);

// The emulated atomics (one thread runs at a time); half types are added in float and rounded,
// as the hardware's atomicAdd does.
float atomic_add(float* address, float value);
double atomic_add(double* address, double value);
__half atomic_add(__half* address, __half value);
__nv_bfloat16 atomic_add(__nv_bfloat16* address, __nv_bfloat16 value);

}  // namespace fastlayers::cuda::emulation

#define FASTLAYERS_EMULATION_STR2(x) #x
#define FASTLAYERS_EMULATION_STR(x) FASTLAYERS_EMULATION_STR2(x)
#define FASTLAYERS_EMULATION_WHERE __FILE__ ":" FASTLAYERS_EMULATION_STR(__LINE__)

#define threadIdx (::fastlayers::cuda::emulation::position.thread)
#define blockIdx (::fastlayers::cuda::emulation::position.block)
#define blockDim (::fastlayers::cuda::emulation::position.block_dim)
#define gridDim (::fastlayers::cuda::emulation::position.grid_dim)

#define __syncthreads() ::fastlayers::cuda::emulation::sync_block(FASTLAYERS_EMULATION_WHERE)
#define __syncwarp(...) \
  ::fastlayers::cuda::emulation::sync_warp(FASTLAYERS_EMULATION_WHERE, ##__VA_ARGS__)
#define __match_any_sync(mask, value) \
  ::fastlayers::cuda::emulation::match_any(FASTLAYERS_EMULATION_WHERE, mask, value)
#define atomicAdd ::fastlayers::cuda::emulation::atomic_add

inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}

// nvcuda::wmma (<mma.h>, which defines nothing outside nvcc), for the tensor-core GEMM. The
// hardware spreads a fragment over the warp's lanes in a layout it does not document, and the
// kernels treat fragments as opaque, so any layout serves; here each lane of a warp holds the
// whole of an A or B fragment and its own share of a 16 x 16 accumulator, laid out as PTX's
// mma.m16n8k16 lays out its accumulators (twice, for columns 0-7 and 8-15), so that a kernel that
// reads another lane's share through shared memory without a __syncwarp reads it too early; and
// mma_sync computes the share in float, in k order. The calls are not barriers (the hardware
// does not order one lane's memory accesses before another's in them either): a kernel's own
// __syncwarp or __syncthreads must. Each call checks wmma's requirements: 256-bit aligned
// pointers, and a leading dimension of whole 16-byte units. TF32 fragments hold floats, and the
// multiply reads only their TF32 bits (a value not passed through __float_to_tf32 is truncated).
namespace nvcuda::wmma {

namespace precision {
struct tf32 {};
}  // namespace precision

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment;

namespace detail {
// What a fragment of T holds: float for TF32, else T.
template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<precision::tf32> {
  using type = float;
};
}  // namespace detail

// An A (M x K) or B (K x N) fragment: the whole matrix, row-major.
template <int M, int N, int K, typename T, typename Layout>
struct fragment<matrix_a, M, N, K, T, Layout> {
  using storage_type = typename detail::Storage<T>::type;
  static constexpr int rows = M, cols = K, num_elements = M * K;
  static constexpr bool row_major_layout = std::is_same_v<Layout, row_major>;
  storage_type x[num_elements];
};
template <int M, int N, int K, typename T, typename Layout>
struct fragment<matrix_b, M, N, K, T, Layout> {
  using storage_type = typename detail::Storage<T>::type;
  static constexpr int rows = K, cols = N, num_elements = K * N;
  static constexpr bool row_major_layout = std::is_same_v<Layout, row_major>;
  storage_type x[num_elements];
};
// An accumulator's share of this lane (detail::owned).
template <int M, int N, int K, typename T>
struct fragment<accumulator, M, N, K, T, void> {
  using storage_type = T;
  static_assert(M == 16 && N == 16, "the emulation has 16 x 16 accumulators only");
  static constexpr int rows = M, cols = N, num_elements = M * N / 32;
  T x[num_elements];
};

namespace detail {
// Where element i (< 8) of this lane's share of a 16 x 16 accumulator lies: rows lane / 4 and
// lane / 4 + 8, columns 2 * (lane % 4) + {0, 1}, and the same 8 columns on.
inline void owned(int i, int& row, int& col) {
  const int lane = static_cast<int>(::fastlayers::cuda::emulation::position.thread.x % 32);
  row = lane / 4 + 8 * (i / 2 % 2);
  col = lane % 4 * 2 + i % 2 + 8 * (i / 4);
}
void check(const void* pointer, unsigned ldm, size_t element_bytes, const char* where);
// The TF32 bits of a float: its sign, exponent and top 10 mantissa bits.
inline float tf32_bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= 0xffffe000u;
  std::memcpy(&v, &bits, sizeof bits);
  return v;
}
inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
}  // namespace detail

// cvt.rna.tf32.f32: to nearest, ties away from zero; NaN and infinities stay.
inline float __float_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = (bits + 0x1000u) & 0xffffe000u;  // half of the dropped bits' unit, then drop them
  std::memcpy(&v, &bits, sizeof bits);
  return v;
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void fill_fragment(fragment<Use, M, N, K, T, Layout>& f,
                   typename fragment<Use, M, N, K, T, Layout>::storage_type value) {
  for (auto& v : f.x) v = value;
}

template <typename Use, int M, int N, int K, typename T, typename Layout>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f,
                      const typename fragment<Use, M, N, K, T, Layout>::storage_type* p,
                      unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  detail::check(p, ldm, sizeof(*p), "wmma::load_matrix_sync");
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      f.x[r * F::cols + c] = F::row_major_layout ? p[r * ldm + c] : p[c * ldm + r];
    }
  }
}

template <int M, int N, int K, typename T>
void store_matrix_sync(T* p, const fragment<accumulator, M, N, K, T>& f, unsigned ldm,
                       layout_t layout) {
  detail::check(p, ldm, sizeof(T), "wmma::store_matrix_sync");
  for (int i = 0; i < M * N / 32; ++i) {
    int r, c;
    detail::owned(i, r, c);
    p[layout == mem_row_major ? r * ldm + c : c * ldm + r] = f.x[i];
  }
}

template <int M, int N, int K, typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d,
              const fragment<matrix_a, M, N, K, TA, LA>& a,
              const fragment<matrix_b, M, N, K, TB, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  for (int i = 0; i < M * N / 32; ++i) {
    int row, col;
    detail::owned(i, row, col);
    float sum = c.x[i];
    for (int k = 0; k < K; ++k) {
      float va = detail::to_float(a.x[row * K + k]), vb = detail::to_float(b.x[k * N + col]);
      if constexpr (std::is_same_v<TA, precision::tf32>) va = detail::tf32_bits(va);
      if constexpr (std::is_same_v<TB, precision::tf32>) vb = detail::tf32_bits(vb);
      sum = std::fma(va, vb, sum);
    }
    d.x[i] = sum;
  }
}

}  // namespace nvcuda::wmma

namespace fastlayers::cuda {

// The emulated kernel<<<grid, block, 0, stream>>>(args...): the arguments are converted to the
// kernel's parameter types once, and each thread gets its own copy, as on a GPU. Runs to
// completion before returning (the stream is ignored).
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t,
                   Args... args) {
  const std::tuple<std::decay_t<Params>...> params(args...);
  return emulation::run_grid(grid, block, [&] { std::apply(kernel, params); });
}

}  // namespace fastlayers::cuda
