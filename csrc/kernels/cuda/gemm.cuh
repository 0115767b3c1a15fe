// The CUDA GEMM engine: C[z][m, n] = epilogue(sum_k A[z](m, k) * B[z](k, n)) for a batch of
// products z, with A and B read through operand policies. Linear runs it on plain strided
// matrices; every conv pass runs it as an implicit GEMM whose B (or A) operand gathers from the
// image with im2col arithmetic as it loads a tile, so no im2col matrix is ever written
// (conv2d.cu). Tested through every linear and conv2d test with device="cuda".
//
// The kernel is the classic shared-memory tiled GEMM: a block computes one BM x BN tile of C,
// walking K in steps of BK; each step, the block's threads load the A (BM x BK) and B (BK x BN)
// tiles into shared memory, converted to the accumulation type, and each thread accumulates a
// TM x TN register block from them. Tile sizes are template parameters so that faster variants
// (tensor cores, cp.async pipelines) can slot in behind the same operand policies and epilogue.
//
// Operand policy: a copyable struct with
//   View at(int64_t z) const            // the operand of batch entry z (base pointers bound)
// where View has
//   acc_t<T> operator()(int64_t row, int64_t col) const
// called only for row < rows and col < cols of that operand; it returns 0 for elements that
// are structurally zero (conv padding), and applies a ReLU mask where the policy has one.
//
// Determinism: each C element is one thread's sum in a fixed k order. With split-K (gemm.h) the
// partial sums are added by a second kernel in split order. No atomics anywhere.
#pragma once

#include "common.cuh"
#include "gemm.h"

namespace fastlayers::cuda {

template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsN = BN / TN;  // threads along a tile row
  static constexpr int kThreads = (BM / TM) * kThreadsN;
  static constexpr int kLoadsA = BM * BK / kThreads;  // A elements each thread loads per k-step
  static constexpr int kLoadsB = BK * BN / kThreads;
  static_assert(BM % TM == 0 && BN % TN == 0, "the register blocks must tile the block tile");
  static_assert(BM * BK % kThreads == 0 && BK * BN % kThreads == 0,
                "every thread loads the same number of tile elements");
};

// 64 x 64 tiles, 4 x 4 per thread: 256 threads, 16 accumulators per thread, and 2 x 16 x 64
// shared elements (8 KiB in float, 16 KiB in double), so several blocks fit on an SM.
using DefaultTile = GemmTile<64, 64, 16, 4, 4>;

// The offset of batch entry z = outer * groups + group: conv passes batch over (image, group).
struct BatchOffset {
  int64_t groups = 1;
  int64_t outer_stride = 0;
  int64_t group_stride = 0;
  __host__ __device__ int64_t operator()(int64_t z) const {
    const int64_t outer = z / groups;
    return outer * outer_stride + (z - outer * groups) * group_stride;
  }
};

// A plain matrix: element (r, c) of entry z is data[batch(z) + r * row_stride + c * col_stride],
// so transposes are strides, never copies. With relu_mask (same layout as data), the element
// reads as 0 wherever relu_mask <= 0 (a NaN mask passes, as in torch's threshold_backward): the
// backward of a fused ReLU, applied on load.
template <typename T>
struct StridedOperand {
  const T* data;
  const T* relu_mask;
  BatchOffset batch;
  int64_t row_stride, col_stride;

  struct View {
    const T* data;
    const T* mask;
    int64_t row_stride, col_stride;
    __device__ acc_t<T> operator()(int64_t r, int64_t c) const {
      const int64_t offset = r * row_stride + c * col_stride;
      const acc_t<T> v = to_acc(data[offset]);
      if (mask != nullptr && to_acc(mask[offset]) <= acc_t<T>(0)) return acc_t<T>(0);
      return v;
    }
  };
  __device__ View at(int64_t z) const {
    const int64_t offset = batch(z);
    return {data + offset, relu_mask != nullptr ? relu_mask + offset : nullptr, row_stride,
            col_stride};
  }
};

enum class BiasKind { none, per_row, per_col };

// What happens to a finished sum v of C[z](m, n): plus the bias (per row: bias[group *
// bias_group_stride + m] with group = z % batch.groups, the conv layout; per column: bias[n],
// the linear layout), then ReLU if asked (NaN propagates, as torch.relu), then rounded to T and
// stored at out[batch(z) + m * ldc + n].
template <typename T>
struct Epilogue {
  T* out;
  BatchOffset batch;
  int64_t ldc;
  const T* bias = nullptr;
  BiasKind bias_kind = BiasKind::none;
  int64_t bias_group_stride = 0;
  bool relu = false;

  __device__ void store(int64_t z, int64_t m, int64_t n, acc_t<T> v) const {
    if (bias_kind == BiasKind::per_row) {
      v += to_acc(bias[(z % batch.groups) * bias_group_stride + m]);
    } else if (bias_kind == BiasKind::per_col) {
      v += to_acc(bias[n]);
    }
    if (relu) v = relu_value(v);
    out[batch(z) + m * ldc + n] = from_acc<T>(v);
  }
};

// The problem and its decomposition into work items, one block-tile of one split of one batch
// entry each: item w = ((z * splits + split) * tiles_n + tile_n) * tiles_m + tile_m.
struct GemmShape {
  int64_t batches, M, N, K;
  int64_t tiles_m, tiles_n;
  int64_t splits, k_per_split;
  __host__ __device__ int64_t work() const { return batches * splits * tiles_n * tiles_m; }
};

template <typename T, typename Tile, typename AOperand, typename BOperand>
__global__ void __launch_bounds__(Tile::kThreads)
    gemm_kernel(GemmShape s, AOperand a, BOperand b, Epilogue<T> ep, acc_t<T>* partials) {
  using A = acc_t<T>;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  // k-major tiles: in the inner loop a thread reads TM consecutive A and TN consecutive B values.
  __shared__ A a_tile[BK][BM];
  __shared__ A b_tile[BK][BN];

  const int tid = static_cast<int>(threadIdx.x);
  const int row0 = (tid / Tile::kThreadsN) * TM;  // this thread's rows in the tile
  const int col0 = (tid % Tile::kThreadsN) * TN;  // and columns

  // Every thread of the block runs the same items (w depends on blockIdx only), so the
  // __syncthreads below are reached by all of them.
  for (int64_t w = blockIdx.x; w < s.work(); w += gridDim.x) {
    int64_t rest = w;
    const int64_t tile_m = rest % s.tiles_m;
    rest /= s.tiles_m;
    const int64_t tile_n = rest % s.tiles_n;
    rest /= s.tiles_n;
    const int64_t split = rest % s.splits;
    const int64_t z = rest / s.splits;
    const int64_t m0 = tile_m * BM, n0 = tile_n * BN;
    const int64_t k_begin = split * s.k_per_split;
    const int64_t k_end = min(s.K, k_begin + s.k_per_split);
    const auto av = a.at(z);
    const auto bv = b.at(z);

    A acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

    for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
      // Consecutive threads take consecutive k of one A row (contiguous for a row-major A) and
      // consecutive n of one B row (contiguous for a row-major B). Elements past M, N or this
      // split's K are zero, so the tail tiles need no special case in the product.
#pragma unroll
      for (int i = 0; i < Tile::kLoadsA; ++i) {
        const int e = tid + i * Tile::kThreads;
        const int mm = e / BK, kk = e % BK;
        const int64_t m = m0 + mm, k = k0 + kk;
        a_tile[kk][mm] = (m < s.M && k < k_end) ? av(m, k) : A(0);
      }
#pragma unroll
      for (int i = 0; i < Tile::kLoadsB; ++i) {
        const int e = tid + i * Tile::kThreads;
        const int kk = e / BN, nn = e % BN;
        const int64_t k = k0 + kk, n = n0 + nn;
        b_tile[kk][nn] = (k < k_end && n < s.N) ? bv(k, n) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        A a_reg[TM], b_reg[TN];
#pragma unroll
        for (int i = 0; i < TM; ++i) a_reg[i] = a_tile[kk][row0 + i];
#pragma unroll
        for (int j = 0; j < TN; ++j) b_reg[j] = b_tile[kk][col0 + j];
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
      }
      __syncthreads();  // the tiles are overwritten by the next step
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + row0 + i;
#pragma unroll
      for (int j = 0; j < TN; ++j) {
        const int64_t n = n0 + col0 + j;
        if (m >= s.M || n >= s.N) continue;
        if (s.splits == 1) {
          ep.store(z, m, n, acc[i][j]);
        } else {  // partials[split][z][m][n]
          partials[((split * s.batches + z) * s.M + m) * s.N + n] = acc[i][j];
        }
      }
    }
  }
}

// The second pass of split-K: C = epilogue(sum of the partials in split order), one thread per
// element of C, partials laid out [split][z][m][n].
template <typename T>
__global__ void __launch_bounds__(kElementwiseBlock)
    split_k_reduce_kernel(int64_t splits, int64_t batches, int64_t M, int64_t N,
                          const acc_t<T>* partials, Epilogue<T> ep) {
  const int64_t total = batches * M * N;
  for (int64_t i = global_thread_index(); i < total; i += grid_thread_count()) {
    acc_t<T> sum = partials[i];
    for (int64_t split = 1; split < splits; ++split) sum += partials[split * total + i];
    const int64_t n = i % N, zm = i / N;
    ep.store(zm / M, zm % M, n, sum);
  }
}

// C[z] = epilogue(A[z] * B[z]) for z < batches, on ctx.stream. Launches nothing for an empty C;
// K == 0 stores epilogue(0) (bias, or zeros). Returns the first launch error.
template <typename T, typename Tile = DefaultTile, typename AOperand, typename BOperand>
cudaError_t gemm(const GemmContext& ctx, int64_t batches, int64_t M, int64_t N, int64_t K,
                 const AOperand& a, const BOperand& b, const Epilogue<T>& ep) {
  if (batches == 0 || M == 0 || N == 0) return cudaSuccess;
  using A = acc_t<T>;
  GemmShape s{batches, M, N, K, ceil_div(M, Tile::BM), ceil_div(N, Tile::BN), 1, K};
  const SplitK plan = plan_split_k(batches * s.tiles_m * s.tiles_n, K, Tile::BK, ctx.sm_count,
                                   batches * M * N, sizeof(A));
  A* partials = nullptr;
  if (plan.splits > 1) {
    s.splits = plan.splits;
    s.k_per_split = plan.k_per_split;
    partials = static_cast<A*>(
        ctx.workspace->allocate(static_cast<size_t>(plan.splits * batches * M * N) * sizeof(A)));
  }
  const cudaError_t err =
      launch(gemm_kernel<T, Tile, AOperand, BOperand>, grid_size(s.work(), 1), Tile::kThreads,
             ctx.stream, s, a, b, ep, partials);
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t total = batches * M * N;
  return launch(split_k_reduce_kernel<T>, grid_size(total, kElementwiseBlock), kElementwiseBlock,
                ctx.stream, s.splits, batches, M, N, partials, ep);
}

}  // namespace fastlayers::cuda
