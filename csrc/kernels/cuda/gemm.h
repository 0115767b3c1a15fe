// What the CUDA GEMM-based launchers (linear.h, conv2d.h) need from their caller, with no torch
// in sight: the stream, the SM count (to decide on split-K), and scratch memory. The torch layer
// (csrc/cuda_ops.cpp) fills it from the current stream and the caching allocator, so no launcher
// ever calls cudaMalloc or synchronises: every op can run inside CUDA graph capture.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace fastlayers::cuda {

// Device memory that stays valid for every kernel the launcher enqueues on the stream (the torch
// layer returns caching-allocator blocks freed when the op returns: stream-ordered reuse makes
// that safe).
class Workspace {
 public:
  virtual void* allocate(size_t bytes) = 0;

 protected:
  ~Workspace() = default;
};

struct GemmContext {
  cudaStream_t stream;
  int sm_count;           // multiprocessors of the stream's device
  Workspace* workspace;   // for split-K partial sums
  // The conv passes use 32-bit index arithmetic where every index fits (conv2d.cuh); true takes
  // the 64-bit path anyway, so that tests cover it at small sizes.
  bool wide_index = false;
  // The device runs the tensor-core kernel (nvcuda::wmma in float16, bfloat16 and TF32: compute
  // capability 8.0 and newer).
  bool tensor_cores = false;
  // float products may run on tensor cores in TF32 (for linear where
  // torch.backends.cuda.matmul.allow_tf32, for conv2d where torch.backends.cudnn.allow_tf32);
  // otherwise they stay in IEEE float.
  bool tf32 = false;
  // conv2d's forward on a layer of few input channels per group runs the thin-layer kernel
  // (conv2d.cuh) where it fits; false keeps it on the GEMM, which tests compare it with.
  bool thin_conv = true;
};

// How the K dimension of a GEMM is split over thread blocks. Split-K is used only when the
// output has too few tiles to fill the GPU and K is long (grad_weight: K = batch rows, or
// N * OH * OW for a conv). The partial sums go to a workspace and a second kernel adds them in
// split order, so the result does not depend on scheduling: it is deterministic for a given
// shape and SM count.
struct SplitK {
  int64_t splits;       // >= 1
  int64_t k_per_split;  // a multiple of the tile's BK (except when splits == 1)
};

// `tiles` output tiles in all (over every batch), `partial_elements` = batches * M * N, the size
// of one split's partial sums, of acc_bytes each.
SplitK plan_split_k(int64_t tiles, int64_t K, int64_t bk, int sm_count, int64_t partial_elements,
                    size_t acc_bytes);

// Whether a product of `batches` M x N outputs runs in the large tile, bm x bn (gemm.cuh), rather
// than the small one: where it fills that tile both ways (M >= bm and N >= bn; a smaller side
// would make most of each tile padding) and its tiles give every SM a block (with fewer, SMs
// would idle that the small tile's four times as many tiles keep busy).
bool use_large_tile(int64_t batches, int64_t M, int64_t N, int64_t bm, int64_t bn, int sm_count);

}  // namespace fastlayers::cuda
