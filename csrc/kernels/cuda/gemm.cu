// Host side of the CUDA GEMM engine (gemm.cuh): how many K splits a product gets. Tested through
// the grad_weight tests (long K, few output tiles) of linear and conv2d with device="cuda".
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

}  // namespace fastlayers::cuda
