// The CUDA GEMM engine: C[z][m, n] = epilogue(sum_k A[z](m, k) * B[z](k, n)) for a batch of
// products z, with A and B read through operand policies. Linear runs it on plain strided
// matrices; every conv pass runs it as an implicit GEMM whose B (or A) operand gathers from the
// image with im2col arithmetic as it loads a tile, so no im2col matrix is ever written
// (conv2d.cuh). Tested through every linear and conv2d test with device="cuda", and on the CPU
// emulation of tests/cpp/test_cuda_kernels.cpp.
//
// The kernel is a shared-memory tiled GEMM: a block computes one BM x BN tile of C, walking K in
// steps of BK; each thread accumulates a TM x TN register block from the A (BM x BK) and B
// (BK x BN) tiles in shared memory, converted to the accumulation type. The tiles are double
// buffered and the loads software-pipelined: while the block multiplies the tiles of step k, each
// thread already holds its share of step k + 1 in registers (loads issued before the product, so
// their latency hides behind it), and stores it to the other buffer after; one barrier per step.
// Two tile shapes (GemmTile below), chosen per product by use_large_tile (gemm.h). Products in
// float16 and bfloat16, and float ones where TF32 is allowed, run in a tensor-core kernel of the
// same structure instead (gemm_mma_kernel, "Tensor cores" below).
//
// Operand policy: a copyable struct with
//   static constexpr bool kContiguousK  // consecutive k lie next to each other in memory (else
//                                       // consecutive rows of A, or columns of B, do)
//   View at(int64_t z) const            // the operand of batch entry z (base pointers bound)
// where View has
//   acc_t<T> operator()(int64_t row, int64_t col) const
// called only for row < rows and col < cols of that operand; it returns 0 for elements that
// are structurally zero (conv padding), and applies a ReLU mask where the policy has one.
// kContiguousK decides how a block's threads share out a tile's loads: consecutive threads take
// consecutive elements along the contiguous index, so that a warp's loads coalesce.
//
// Determinism: each C element is one thread's sum in a fixed k order. With split-K (gemm.h) the
// partial sums are added by a second kernel in split order. No atomics anywhere.
#pragma once

#include <mma.h>

#include <type_traits>

#include "common.cuh"
#include "gemm.h"

namespace fastlayers::cuda {

// A block computes one BM x BN tile of C with kThreads = (BM / TM) * (BN / TN) threads, each
// accumulating TM x TN values: TM / 4 groups of 4 rows, spread BM / (TM / 4) apart, times TN / 4
// groups of 4 columns, so that a thread reads each group from shared memory in one 16-byte load.
// The threads of a warp form 4 rows x 8 columns of that grid, so a warp's loads touch 4 groups
// of A and 8 of B: 64 + 128 bytes, one shared-memory wavefront each (for 4-byte values).
// kMinBlocks is __launch_bounds__'s: blocks per SM that must fit (registers per thread).
template <int BM_, int BN_, int BK_, int TM_, int TN_, int kMinBlocks_>
struct GemmTile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kMinBlocks = kMinBlocks_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;  // the grid of threads
  static constexpr int kThreads = kThreadsM * kThreadsN;
  static_assert(TM % 4 == 0 && TN % 4 == 0 && BM % TM == 0 && BN % TN == 0,
                "each thread's rows and columns are groups of 4 that tile the block tile");
  static_assert(kThreadsN % 8 == 0 && kThreadsM % 4 == 0 && kThreads % 32 == 0,
                "warps are 4 x 8 threads of the grid");
  static_assert(BM * BK % kThreads == 0 && BK * BN % kThreads == 0,
                "every thread loads the same number of tile elements");
};

// 64 x 64 x 16 tiles, 4 x 4 per thread: 256 threads, 16 accumulators each; for small products
// (the documents' layers), where a larger tile would leave SMs idle or compute padding, and for
// double. Two blocks per SM (at most 128 registers a thread; ptxas takes them all and spills
// nothing). Double-buffered shared tiles: 17 KiB in float, 35 KiB in double.
using SmallTile = GemmTile<64, 64, 16, 4, 4, 2>;
// 128 x 128 x 8 tiles, 8 x 8 per thread: 256 threads, 64 accumulators each, so each k-step
// reads 16 values from shared memory for 64 FMAs (the small tile reads 8 for 16), which keeps
// the FMA units, not shared memory, the limit. About 180 to 225 registers a thread (sm_90, no
// spills), so one block (8 warps) per SM; 64 independent FMAs per k keep each warp issuing.
// For 4-byte accumulators only: in double, 64 accumulators alone take 128 registers.
using LargeTile = GemmTile<128, 128, 8, 8, 8, 1>;

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
// backward of a fused ReLU, applied on load. kContiguousK: the stride of k (col_stride of an A,
// row_stride of a B) is the one that is 1.
template <typename T, bool kContiguousK_>
struct StridedOperand {
  static constexpr bool kContiguousK = kContiguousK_;
  const T* data;
  const T* relu_mask;
  BatchOffset batch;
  int64_t row_stride, col_stride;

  struct View {
    const T* data;
    const T* mask;
    int64_t row_stride, col_stride;
    __device__ acc_t<T> operator()(int64_t r, int64_t c) const {
      return masked(data, mask, r * row_stride + c * col_stride);
    }
    // Pack<T>::kSize elements from (r, c) on along the contiguous index, masked as above, in T;
    // only where packable().
    __device__ Pack<T> pack(int64_t r, int64_t c) const {
      const int64_t offset = r * row_stride + c * col_stride;
      Pack<T> v = *reinterpret_cast<const Pack<T>*>(data + offset);
      if (mask != nullptr) {
        const Pack<T> m = *reinterpret_cast<const Pack<T>*>(mask + offset);
#pragma unroll
        for (int j = 0; j < Pack<T>::kSize; ++j) {
          if (to_acc(m.v[j]) <= acc_t<T>(0)) v.v[j] = from_acc<T>(acc_t<T>(0));
        }
      }
      return v;
    }
  };
  __device__ View at(int64_t z) const {
    const int64_t offset = batch(z);
    return {data + offset, relu_mask != nullptr ? relu_mask + offset : nullptr, row_stride,
            col_stride};
  }

  // Whether every pack of Pack<T>::kSize elements that starts at a multiple of kSize along the
  // contiguous index is 16-byte aligned, in every batch entry, in data and mask alike: the
  // tensor-core kernel (gemm_mma_kernel) reads the operand in such packs.
  bool packable() const {
    const int64_t size = Pack<T>::kSize;
    const auto whole = [size](int64_t stride) { return stride % size == 0; };
    return aligned16(data) && (relu_mask == nullptr || aligned16(relu_mask)) &&
           whole(batch.outer_stride) && whole(batch.group_stride) &&
           (row_stride == 1 || whole(row_stride)) && (col_stride == 1 || whole(col_stride));
  }
};

enum class BiasKind { none, per_row, per_col };

// Epilogue policy: what happens to the finished sums of C. A copyable struct with
//   static constexpr int kGroup  // columns store() takes at once (a divisor of 4: a thread's
//                                // column groups are 4 wide), and N % kGroup == 0
//   View at(int64_t z) const     // the epilogue of batch entry z (base pointers bound)
// where View has
//   void store(int64_t m, int64_t n, const acc_t<T>* v) const  // C[z](m, n + j) = v[j], j < kGroup
// called only for m < M and n < N, n a multiple of kGroup.
//
// The plain epilogue: a sum v of C[z](m, n) plus the bias (per row: bias[group *
// bias_group_stride + m] with group = z % batch.groups, the conv layout; per column: bias[n],
// the linear layout), then ReLU if asked (NaN propagates, as torch.relu), then rounded to T and
// stored at out[batch(z) + m * ldc + n].
template <typename T>
struct Epilogue {
  static constexpr int kGroup = 1;
  T* out;
  BatchOffset batch;
  int64_t ldc;
  const T* bias = nullptr;
  BiasKind bias_kind = BiasKind::none;
  int64_t bias_group_stride = 0;
  bool relu = false;

  struct View {
    T* out;          // entry z's C
    const T* bias;   // entry z's group's bias, or null
    BiasKind bias_kind;
    int64_t ldc;
    bool relu;
    __device__ void store(int64_t m, int64_t n, const acc_t<T>* v) const {
      acc_t<T> x = v[0];
      if (bias_kind == BiasKind::per_row) {
        x += to_acc(bias[m]);
      } else if (bias_kind == BiasKind::per_col) {
        x += to_acc(bias[n]);
      }
      if (relu) x = relu_value(x);
      out[m * ldc + n] = from_acc<T>(x);
    }
  };
  // The batch offset's division runs once per work item here, not once per element.
  __device__ View at(int64_t z) const {
    const T* b = bias;
    if (bias_kind == BiasKind::per_row) b += (z % batch.groups) * bias_group_stride;
    return {out + batch(z), b, bias_kind, ldc, relu};
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

// Work item w of a GemmShape for a BM x BN tile: its batch entry, split, first row and column of
// C, and the k range of its split.
struct WorkItem {
  int64_t z, split, m0, n0, k_begin, k_end;
  __device__ WorkItem(const GemmShape& s, int64_t w, int bm, int bn) {
    const int64_t tile_m = w % s.tiles_m;
    w /= s.tiles_m;
    const int64_t tile_n = w % s.tiles_n;
    w /= s.tiles_n;
    split = w % s.splits;
    z = w / s.splits;
    m0 = tile_m * bm;
    n0 = tile_n * bn;
    k_begin = split * s.k_per_split;
    k_end = min(s.K, k_begin + s.k_per_split);
  }
};

// Where element e (< BK * extent) of a k-step's tile lies: k offset kk and row (of A) or column
// (of B) offset x. Consecutive e run along k where the operand is contiguous in k, else along x.
template <int BK, int kExtent, bool kContiguousK>
struct TileElement {
  int kk, x;
  __device__ __forceinline__ explicit TileElement(int e)
      : kk(kContiguousK ? e % BK : e / kExtent), x(kContiguousK ? e / BK : e % kExtent) {}
};

// Four consecutive values from shared memory (16-byte aligned) into registers: one 16-byte load
// for 4-byte values, two for double.
__device__ __forceinline__ void load4(const float* from, float* to) {
  const float4 v = *reinterpret_cast<const float4*>(from);
  to[0] = v.x, to[1] = v.y, to[2] = v.z, to[3] = v.w;
}
__device__ __forceinline__ void load4(const double* from, double* to) {
  const double2 lo = reinterpret_cast<const double2*>(from)[0];
  const double2 hi = reinterpret_cast<const double2*>(from)[1];
  to[0] = lo.x, to[1] = lo.y, to[2] = hi.x, to[3] = hi.y;
}

template <typename T, typename Tile, typename AOperand, typename BOperand, typename Ep>
__global__ void __launch_bounds__(Tile::kThreads, Tile::kMinBlocks)
    gemm_kernel(GemmShape s, AOperand a, BOperand b, Ep ep, acc_t<T>* partials) {
  using A = acc_t<T>;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, TM = Tile::TM, TN = Tile::TN;
  constexpr int kThreads = Tile::kThreads;
  constexpr int kLoadsA = BM * BK / kThreads, kLoadsB = BK * BN / kThreads;
  // A thread's 4-row groups lie kRowGap apart, its 4-column groups kColGap apart.
  constexpr int kRowGap = BM / (TM / 4), kColGap = BN / (TN / 4);
  // k-major tiles, so that a thread's 4 rows (columns) at one k are adjacent. The rows of 4 more
  // values keep them 16-byte aligned and spread a k-contiguous operand's stores over the banks.
  constexpr int kPad = 4;
  __shared__ __align__(16) A a_tile[2][BK][BM + kPad];
  __shared__ __align__(16) A b_tile[2][BK][BN + kPad];
  using AElement = TileElement<BK, BM, AOperand::kContiguousK>;
  using BElement = TileElement<BK, BN, BOperand::kContiguousK>;

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  constexpr int kWarpsN = Tile::kThreadsN / 8;
  const int ty = (warp / kWarpsN) * 4 + lane / 8;  // this thread's place in the thread grid
  const int tx = (warp % kWarpsN) * 8 + lane % 8;

  // Every thread of the block runs the same items (w depends on blockIdx only), so the
  // __syncthreads below are reached by all of them.
  for (int64_t w = blockIdx.x; w < s.work(); w += gridDim.x) {
    const WorkItem item(s, w, BM, BN);
    const int64_t z = item.z, split = item.split, m0 = item.m0, n0 = item.n0;
    const int64_t k_begin = item.k_begin, k_end = item.k_end;
    const auto av = a.at(z);
    const auto bv = b.at(z);

    // This thread's share of the tiles of the k-step at k0, in registers. Elements past M, N or
    // this split's K are zero, so the tail tiles need no special case in the product.
    A a_next[kLoadsA], b_next[kLoadsB];
    auto fetch = [&](int64_t k0) {
#pragma unroll
      for (int i = 0; i < kLoadsA; ++i) {
        const AElement e(tid + i * kThreads);
        const int64_t m = m0 + e.x, k = k0 + e.kk;
        a_next[i] = (m < s.M && k < k_end) ? av(m, k) : A(0);
      }
#pragma unroll
      for (int i = 0; i < kLoadsB; ++i) {
        const BElement e(tid + i * kThreads);
        const int64_t k = k0 + e.kk, n = n0 + e.x;
        b_next[i] = (k < k_end && n < s.N) ? bv(k, n) : A(0);
      }
    };
    auto stash = [&](int buffer) {
#pragma unroll
      for (int i = 0; i < kLoadsA; ++i) {
        const AElement e(tid + i * kThreads);
        a_tile[buffer][e.kk][e.x] = a_next[i];
      }
#pragma unroll
      for (int i = 0; i < kLoadsB; ++i) {
        const BElement e(tid + i * kThreads);
        b_tile[buffer][e.kk][e.x] = b_next[i];
      }
    };

    A acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

    if (k_begin < k_end) {
      fetch(k_begin);
      stash(0);
      __syncthreads();
    }
    int buffer = 0;
    for (int64_t k0 = k_begin; k0 < k_end; k0 += BK) {
      const bool more = k0 + BK < k_end;
      if (more) fetch(k0 + BK);
#pragma unroll
      for (int kk = 0; kk < BK; ++kk) {
        A a_reg[TM], b_reg[TN];
#pragma unroll
        for (int g = 0; g < TM / 4; ++g) {
          load4(&a_tile[buffer][kk][g * kRowGap + ty * 4], &a_reg[4 * g]);
        }
#pragma unroll
        for (int g = 0; g < TN / 4; ++g) {
          load4(&b_tile[buffer][kk][g * kColGap + tx * 4], &b_reg[4 * g]);
        }
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
          for (int j = 0; j < TN; ++j) acc[i][j] = fma(a_reg[i], b_reg[j], acc[i][j]);
      }
      // The other buffer was last read in the previous step, before its closing barrier.
      if (more) stash(buffer ^ 1);
      // The next step reads what was just stored; and the next item's first stash overwrites
      // buffer 0, which this step may have been reading.
      __syncthreads();
      buffer ^= 1;
    }

    // The epilogue takes kGroup adjacent columns at a time, all within one of this thread's
    // groups of 4 (kGroup divides 4, and N % kGroup == 0).
    constexpr int kGroup = Ep::kGroup;
    static_assert(4 % kGroup == 0, "an epilogue's column groups lie within a thread's");
    const auto out = ep.at(z);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const int64_t m = m0 + (i / 4) * kRowGap + ty * 4 + i % 4;
#pragma unroll
      for (int j = 0; j < TN; j += kGroup) {
        const int64_t n = n0 + (j / 4) * kColGap + tx * 4 + j % 4;
        if (m >= s.M || n >= s.N) continue;
        if (s.splits == 1) {
          out.store(m, n, &acc[i][j]);
        } else {  // partials[split][z][m][n]
#pragma unroll
          for (int c = 0; c < kGroup; ++c) {
            partials[((split * s.batches + z) * s.M + m) * s.N + n + c] = acc[i][j + c];
          }
        }
      }
    }
  }
}

// --- Tensor cores --------------------------------------------------------------------------
//
// Products in float16 and bfloat16, and in float where the caller allows TF32, run on tensor
// cores where each operand is either a strided one that reads in packs (packable(), and every
// extent along its contiguous index a multiple of a pack, so no pack straddles an edge) or one
// that computes its elements (the conv passes' implicit-GEMM operands, conv2d.cuh), which the
// kernel gathers a pack at a time, element by element. The multiply-accumulate is
// nvcuda::wmma's, warp-wide, with float sums: 16 x 16 x 16 in float16 and
// bfloat16; 16 x 16 x 8 in TF32 for float, where the caller allows it (GemmContext::tf32: each
// value rounded to 10 mantissa bits, the precision torch's allow_tf32 permits). A block of 8 warps
// computes a 128 x 128 tile of C, each warp 64 x 32 of it (4 x 2 fragments), walking K in steps
// of 64 bytes of values (32 halves, 16 floats) with the SIMT kernel's double-buffered pipeline;
// each thread moves 2 packs of A and 2 of B a step. A product with a gathered operand steps by 32
// bytes (one pack of A and one of B a thread): the gathered elements in flight, each in its own
// register until packed, and their addresses, would not otherwise fit beside the accumulators in
// the 255 registers a thread may have. The tiles stay in T in shared memory, laid out
// as the operand lies in memory (MmaSmem), so that a pack is one 16-byte store, and wmma reads
// either layout. Each warp sends its results through a 16 x 16 float staging area to the
// epilogue, which is the SIMT kernel's (bias, ReLU, rounding, split-K partials; the fused pool's
// groups of 4 columns).
template <typename T, int kStepBytes>
struct MmaTile {
  static constexpr bool kTf32 = std::is_same_v<T, float>;
  static constexpr int BM = 128, BN = 128, BK = kStepBytes / static_cast<int>(sizeof(T));
  static constexpr int kWarpsM = 2, kWarpsN = 4, kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int WM = BM / kWarpsM, WN = BN / kWarpsN;  // a warp's part of the tile
  static constexpr int kFrag = 16;                             // wmma's m and n
  static constexpr int kFragK = kTf32 ? 8 : 16;                // and k
  static_assert(BK % kFragK == 0 && BM * BK % (kThreads * Pack<T>::kSize) == 0,
                "a step is whole fragments, and whole packs for every thread");
  // A pack (16 bytes) more than the tile needs per row: every pack stays 16 bytes aligned and
  // every fragment 32 bytes (wmma's requirement), and rows start on different banks.
  static constexpr int kPad = Pack<T>::kSize;
};

// Where a k-step's operand tile keeps element (x, k), x being the row of A or the column of B
// within the tile: in rows of BK (+ pad) per x where the operand is contiguous in k (a row-major
// A, a column-major B, for wmma), else in rows of BX (+ pad) per k.
template <typename Tile, typename T, int BX, bool kContiguousK>
struct MmaSmem {
  static constexpr int BK = Tile::BK;
  static constexpr int kLd = (kContiguousK ? BK : BX) + Tile::kPad;
  static constexpr int kSize = (kContiguousK ? BX : BK) * kLd;
  __device__ static int offset(int x, int k) { return kContiguousK ? x * kLd + k : k * kLd + x; }
  // Where pack p of the tile starts: packs run along the contiguous index.
  template <int kPack>
  __device__ static void pack_start(int p, int& x, int& k) {
    if (kContiguousK) {
      x = p / (BK / kPack), k = p % (BK / kPack) * kPack;
    } else {
      k = p / (BX / kPack), x = p % (BX / kPack) * kPack;
    }
  }
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
// A TF32 fragment loaded from float holds the floats as they were, and the multiply would ignore
// their low 13 mantissa bits (truncation); rounding them to nearest first halves that error.
template <typename Fragment>
__device__ __forceinline__ void round_to_tf32(Fragment& f) {
#pragma unroll
  for (int i = 0; i < f.num_elements; ++i) f.x[i] = nvcuda::wmma::__float_to_tf32(f.x[i]);
}
#endif

template <typename Operand>
struct IsStridedOperand : std::false_type {};
template <typename T, bool kContiguousK>
struct IsStridedOperand<StridedOperand<T, kContiguousK>> : std::true_type {};

// The pack of an operand view that starts at element (r, c) and runs along rows (kAlongRows) or
// along columns: one 16-byte load from a strided operand (whose packs use_tensor_cores checked
// lie whole inside it), else Pack<T>::kSize elements read one by one, rounded to T (exact: they
// are T values or zeros), the ones at or past row `rows` or column `cols` zero.
template <typename T, typename Operand, bool kAlongRows, typename View>
__device__ __forceinline__ Pack<T> operand_pack(const View& v, int64_t r, int64_t c, int64_t rows,
                                                int64_t cols) {
  Pack<T> p{};
  if constexpr (IsStridedOperand<Operand>::value) {
    if (r < rows && c < cols) p = v.pack(r, c);
  } else {
#pragma unroll
    for (int j = 0; j < Pack<T>::kSize; ++j) {
      const int64_t rj = kAlongRows ? r + j : r, cj = kAlongRows ? c : c + j;
      if (rj < rows && cj < cols) p.v[j] = from_acc<T>(v(rj, cj));
    }
  }
  return p;
}

template <typename T, typename Tile, typename AOperand, typename BOperand, typename Ep>
__global__ void __launch_bounds__(Tile::kThreads, 1)
    gemm_mma_kernel(GemmShape s, AOperand a, BOperand b, Ep ep, float* partials) {
  constexpr int kGroup = Ep::kGroup;
  static_assert(16 % kGroup == 0, "an epilogue's column groups lie within a staged row");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // no bfloat16 or TF32 wmma before sm_80; never launched there (GemmContext)
#else
  namespace wmma = nvcuda::wmma;
  constexpr int BM = Tile::BM, BN = Tile::BN, BK = Tile::BK, kFrag = Tile::kFrag;
  constexpr int kFragK = Tile::kFragK;
  constexpr int kThreads = Tile::kThreads, kPack = Pack<T>::kSize;
  constexpr int kFragsM = Tile::WM / kFrag, kFragsN = Tile::WN / kFrag;
  constexpr int kPacksA = BM * BK / kPack / kThreads, kPacksB = BK * BN / kPack / kThreads;
  using ASmem = MmaSmem<Tile, T, BM, AOperand::kContiguousK>;
  using BSmem = MmaSmem<Tile, T, BN, BOperand::kContiguousK>;
  using ALayout = std::conditional_t<AOperand::kContiguousK, wmma::row_major, wmma::col_major>;
  using BLayout = std::conditional_t<BOperand::kContiguousK, wmma::col_major, wmma::row_major>;
  // The fragments' element type: float's is TF32, loaded from float and rounded.
  using Element = std::conditional_t<Tile::kTf32, wmma::precision::tf32, T>;
  __shared__ __align__(32) T a_tile[2][ASmem::kSize];
  __shared__ __align__(32) T b_tile[2][BSmem::kSize];
  static_assert(sizeof(a_tile) >= Tile::kThreads / 32 * kFrag * kFrag * sizeof(float),
                "the warps' staging areas fit in the A tiles");

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, lane = tid % 32;
  const int warp_m = warp / Tile::kWarpsN * Tile::WM;  // this warp's part of the tile
  const int warp_n = warp % Tile::kWarpsN * Tile::WN;

  for (int64_t w = blockIdx.x; w < s.work(); w += gridDim.x) {
    const WorkItem item(s, w, BM, BN);
    const auto av = a.at(item.z);
    const auto bv = b.at(item.z);
    const auto out = ep.at(item.z);

    // Packs run along k in an operand contiguous in k (A's columns, B's rows), else along A's
    // rows or B's columns.
    Pack<T> a_next[kPacksA], b_next[kPacksB];
    auto fetch = [&](int64_t k0) {
#pragma unroll
      for (int i = 0; i < kPacksA; ++i) {
        int x, k;
        ASmem::template pack_start<kPack>(tid + i * kThreads, x, k);
        a_next[i] = operand_pack<T, AOperand, !AOperand::kContiguousK>(
            av, item.m0 + x, k0 + k, s.M, item.k_end);
      }
#pragma unroll
      for (int i = 0; i < kPacksB; ++i) {
        int x, k;
        BSmem::template pack_start<kPack>(tid + i * kThreads, x, k);
        b_next[i] = operand_pack<T, BOperand, BOperand::kContiguousK>(
            bv, k0 + k, item.n0 + x, item.k_end, s.N);
      }
    };
    auto stash = [&](int buffer) {
#pragma unroll
      for (int i = 0; i < kPacksA; ++i) {
        int x, k;
        ASmem::template pack_start<kPack>(tid + i * kThreads, x, k);
        *reinterpret_cast<Pack<T>*>(&a_tile[buffer][ASmem::offset(x, k)]) = a_next[i];
      }
#pragma unroll
      for (int i = 0; i < kPacksB; ++i) {
        int x, k;
        BSmem::template pack_start<kPack>(tid + i * kThreads, x, k);
        *reinterpret_cast<Pack<T>*>(&b_tile[buffer][BSmem::offset(x, k)]) = b_next[i];
      }
    };

    wmma::fragment<wmma::accumulator, kFrag, kFrag, kFragK, float> acc[kFragsM][kFragsN];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i)
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    if (item.k_begin < item.k_end) {
      fetch(item.k_begin);
      stash(0);
      __syncthreads();
    }
    int buffer = 0;
    for (int64_t k0 = item.k_begin; k0 < item.k_end; k0 += BK) {
      const bool more = k0 + BK < item.k_end;
      if (more) fetch(k0 + BK);
#pragma unroll
      for (int ks = 0; ks < BK; ks += kFragK) {
        wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFragK, Element, ALayout> a_frag[kFragsM];
        wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFragK, Element, BLayout> b_frag[kFragsN];
#pragma unroll
        for (int i = 0; i < kFragsM; ++i) {
          wmma::load_matrix_sync(a_frag[i], &a_tile[buffer][ASmem::offset(warp_m + i * kFrag, ks)],
                                 ASmem::kLd);
          if constexpr (Tile::kTf32) round_to_tf32(a_frag[i]);
        }
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) {
          wmma::load_matrix_sync(b_frag[j], &b_tile[buffer][BSmem::offset(warp_n + j * kFrag, ks)],
                                 BSmem::kLd);
          if constexpr (Tile::kTf32) round_to_tf32(b_frag[j]);
        }
#pragma unroll
        for (int i = 0; i < kFragsM; ++i)
#pragma unroll
          for (int j = 0; j < kFragsN; ++j) {
            wmma::mma_sync(acc[i][j], a_frag[i], b_frag[j], acc[i][j]);
          }
      }
      if (more) stash(buffer ^ 1);  // as in the SIMT kernel
      __syncthreads();
      buffer ^= 1;
    }

    // The tiles are free after the loop's last barrier (or untouched without one): each warp
    // stages its fragments in its own 16 x 16 floats of them.
    float* stage = reinterpret_cast<float*>(&a_tile[0][0]) + warp * kFrag * kFrag;
#pragma unroll
    for (int i = 0; i < kFragsM; ++i) {
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        wmma::store_matrix_sync(stage, acc[i][j], kFrag, wmma::mem_row_major);
        __syncwarp();  // every lane's part of the fragment is staged
        // A lane takes kGroup adjacent columns of a row at a time (n is then a multiple of
        // kGroup, and N % kGroup == 0: the group lies inside C where its first column does).
#pragma unroll
        for (int e = lane * kGroup; e < kFrag * kFrag; e += 32 * kGroup) {
          const int64_t m = item.m0 + warp_m + i * kFrag + e / kFrag;
          const int64_t n = item.n0 + warp_n + j * kFrag + e % kFrag;
          if (m >= s.M || n >= s.N) continue;
          if (s.splits == 1) {
            out.store(m, n, &stage[e]);
          } else {  // partials[split][z][m][n]
#pragma unroll
            for (int c = 0; c < kGroup; ++c) {
              partials[((item.split * s.batches + item.z) * s.M + m) * s.N + n + c] = stage[e + c];
            }
          }
        }
        __syncwarp();  // read before the next fragment overwrites it
      }
    }
    __syncthreads();  // the next item's first stash overwrites the staging areas
  }
#endif
}

// The second pass of split-K: C = epilogue(sum of the partials in split order), one thread per
// epilogue group of C (Ep::kGroup adjacent elements), partials laid out [split][z][m][n].
template <typename T, typename Ep>
__global__ void __launch_bounds__(kElementwiseBlock)
    split_k_reduce_kernel(int64_t splits, int64_t batches, int64_t M, int64_t N,
                          const acc_t<T>* partials, Ep ep) {
  constexpr int kGroup = Ep::kGroup;
  const int64_t total = batches * M * N;
  for (int64_t i = global_thread_index(); i < total / kGroup; i += grid_thread_count()) {
    const int64_t e = i * kGroup;
    acc_t<T> sum[kGroup];
#pragma unroll
    for (int c = 0; c < kGroup; ++c) {
      sum[c] = partials[e + c];
      for (int64_t split = 1; split < splits; ++split) sum[c] += partials[split * total + e + c];
    }
    const int64_t n = e % N, zm = e / N;
    ep.at(zm / M).store(zm % M, n, sum);
  }
}

// Launches kernel (gemm_kernel or gemm_mma_kernel) on Tile's work items, with split-K where
// plan_split_k asks for it.
template <typename T, typename Tile, typename AOperand, typename BOperand, typename Ep>
cudaError_t gemm_with_tile(void (*kernel)(GemmShape, AOperand, BOperand, Ep, acc_t<T>*),
                           const GemmContext& ctx, int64_t batches, int64_t M, int64_t N,
                           int64_t K, const AOperand& a, const BOperand& b, const Ep& ep) {
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
  const cudaError_t err = launch(kernel, grid_size(s.work(), 1), Tile::kThreads, ctx.stream, s,
                                 a, b, ep, partials);
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t groups = batches * M * N / Ep::kGroup;
  return launch(split_k_reduce_kernel<T, Ep>, grid_size(groups, kElementwiseBlock),
                kElementwiseBlock, ctx.stream, s.splits, batches, M, N, partials, ep);
}

template <typename T>
constexpr bool kHalfType = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
// The element types with a tensor-core kernel: the half types, and float in TF32.
template <typename T>
constexpr bool kMmaType = kHalfType<T> || std::is_same_v<T, float>;

// Whether gemm_mma_kernel can read an operand (a B where kIsB, else an A) of `extent` elements
// along its contiguous index (K, or M for an A and N for a B not contiguous in k): a strided
// operand only in whole packs (unit stride along that index, every pack inside the extent,
// 16-byte aligned); an operand that computes its elements always (gathered).
template <typename T, bool kIsB, typename Operand>
bool reads_in_packs(const Operand& op, int64_t extent) {
  if constexpr (IsStridedOperand<Operand>::value) {
    // k indexes A's columns and B's rows. A pack's elements are adjacent only where the stride
    // along the contiguous index is 1.
    const bool along_rows = kIsB == Operand::kContiguousK;
    const bool unit = (along_rows ? op.row_stride : op.col_stride) == 1;
    return unit && extent % Pack<T>::kSize == 0 && op.packable();
  } else {
    return true;
  }
}

// Whether gemm_mma_kernel runs the product: a device with such tensor cores, TF32 allowed for
// float, and operands it can read (reads_in_packs).
template <typename T, typename AOperand, typename BOperand>
bool use_tensor_cores(const GemmContext& ctx, int64_t M, int64_t N, int64_t K, const AOperand& a,
                      const BOperand& b) {
  const bool allowed = kHalfType<T> || ctx.tf32;
  return ctx.tensor_cores && allowed &&
         reads_in_packs<T, false>(a, AOperand::kContiguousK ? K : M) &&
         reads_in_packs<T, true>(b, BOperand::kContiguousK ? K : N);
}

// C[z] = epilogue(A[z] * B[z]) for z < batches, on ctx.stream: on tensor cores where
// use_tensor_cores, else in the SIMT tile use_large_tile picks (the small one always for
// double). Launches nothing for an empty C; K == 0 stores epilogue(0) (bias, or zeros). Returns
// the first launch error.
template <typename T, typename AOperand, typename BOperand, typename Ep>
cudaError_t gemm(const GemmContext& ctx, int64_t batches, int64_t M, int64_t N, int64_t K,
                 const AOperand& a, const BOperand& b, const Ep& ep) {
  if (batches == 0 || M == 0 || N == 0) return cudaSuccess;
  if constexpr (kMmaType<T>) {
    if (use_tensor_cores<T>(ctx, M, N, K, a, b)) {
      constexpr bool kGathered =
          !IsStridedOperand<AOperand>::value || !IsStridedOperand<BOperand>::value;
      using Tile = MmaTile<T, kGathered ? 32 : 64>;
      return gemm_with_tile<T, Tile>(gemm_mma_kernel<T, Tile, AOperand, BOperand, Ep>, ctx,
                                     batches, M, N, K, a, b, ep);
    }
  }
  if constexpr (sizeof(acc_t<T>) == 4) {
    if (use_large_tile(batches, M, N, LargeTile::BM, LargeTile::BN, ctx.sm_count)) {
      return gemm_with_tile<T, LargeTile>(gemm_kernel<T, LargeTile, AOperand, BOperand, Ep>, ctx,
                                          batches, M, N, K, a, b, ep);
    }
  }
  return gemm_with_tile<T, SmallTile>(gemm_kernel<T, SmallTile, AOperand, BOperand, Ep>, ctx,
                                      batches, M, N, K, a, b, ep);
}

}  // namespace fastlayers::cuda
