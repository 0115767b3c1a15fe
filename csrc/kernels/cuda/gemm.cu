// Host side of the CUDA GEMM engine (gemm.cuh): which tile a product runs in and how many K splits
// it gets. Tested through the linear and conv2d tests with device="cuda" (split-K: grad_weight,
// long K and few output tiles) and tests/cpp/test_cuda_kernels.cpp.
#include <algorithm>

#include "common.cuh"
#include "gemm.h"

namespace fastlayers::cuda {

namespace {
// Each split walks at least 256 values of K (16 steps of BK = 16), so the second pass, which
// reads `splits` partials per output, stays small next to the product.
constexpr int64_t kMinKPerSplit = 256;
// Beyond 32 splits the second pass's reads outgrow what is saved.
constexpr int64_t kMaxSplits = 32;
// Partial sums never take more than 256 MiB of scratch.
constexpr int64_t kMaxWorkspaceBytes = int64_t{256} << 20;
}  // namespace

SplitK plan_split_k(int64_t tiles, int64_t K, int64_t bk, int sm_count, int64_t partial_elements,
                    size_t acc_bytes) {
  const SplitK none{1, K};
  // Aim for two blocks per SM: one block per SM leaves it idle at every __syncthreads.
  const int64_t target_blocks = 2 * std::max(sm_count, 1);
  if (tiles >= std::max(sm_count, 1) || partial_elements <= 0) return none;
  const int64_t split_bytes = partial_elements * static_cast<int64_t>(acc_bytes);
  int64_t splits = ceil_div(target_blocks, tiles);
  splits = std::min({splits, K / kMinKPerSplit, kMaxSplits, kMaxWorkspaceBytes / split_bytes});
  if (splits <= 1) return none;
  // Whole BK steps per split, then no split left empty by the rounding.
  const int64_t k_per_split = ceil_div(ceil_div(K, splits), bk) * bk;
  return {ceil_div(K, k_per_split), k_per_split};
}

bool use_large_tile(int64_t batches, int64_t M, int64_t N, int64_t bm, int64_t bn, int sm_count) {
  if (M < bm || N < bn) return false;
  return batches * ceil_div(M, bm) * ceil_div(N, bn) >= std::max(sm_count, 1);
}

}  // namespace fastlayers::cuda
