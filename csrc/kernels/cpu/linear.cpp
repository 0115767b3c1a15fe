// linear's three GEMMs; the transposes are operand strides, never copies.
#include "linear.h"

#include <vector>

#include "gemm.h"

namespace fastlayers::cpu {

// The forward runs in the GEMM's dot-product form, where x's rows and the weight's rows, both
// contiguous along K, are read in place and nothing is packed:
// - below kDotMaxFeatures output features, where the blocked GEMM would pad the few features to
//   a whole register tile (32 columns on AVX-512) and pack them. A classifier's last layer (1024
//   -> 10 on a batch of 64) takes 9 us instead of 20; 84 -> 10 on 64 rows 6.9 us instead of 8.2.
//   Wider layers stay blocked: the dot form sums each output across vector lanes and streams the
//   weight from L2, and measured slower there (64 x 3136 -> 1024: 1.45 ms against 1.2);
// - up to kDotMaxBatch rows (inference on a few samples), where the blocked GEMM would pack the
//   whole weight for a product that reads it once; the dot form reads it once per 4 rows
//   (AVX-512's tile), once for one row (its 1 x 8 matrix-vector tile). Measured on a Zen 4, 2
//   threads, blocked -> dot: 1 x 3136 -> 1024 0.83 -> 0.18 ms (torch 0.22-0.28), 4 rows 1.02 ->
//   0.26 ms, 8 rows 1.24 -> 0.53 ms; 1 x 784 -> 128 17.8 -> 7.9 us (torch 8.4); 8 x 4096 -> 4096
//   7.7 -> 6.0 ms. At 12 rows the blocked GEMM is slightly ahead (12 x 4096 -> 4096: 9.0 ms
//   against 9.2; 12 x 120 -> 84: 8.2 us against 8.8), and from 16 rows clearly on large weights;
// - for a single output feature (a regression head), as the one-row product w * x^T: y [M, 1]
//   is the same memory as its transpose. 1000 x 20 -> 1 20 -> 6.8 us, 64 rows 4.5 -> 3.4 us.
constexpr int64_t kDotMaxFeatures = 16;
constexpr int64_t kDotMaxBatch = 8;

// From this many batch rows and weight elements the forward runs in the GEMM's window form, with
// the output features as its positions: the weight is read in place, its rows broadcast into
// the register tile (14 features by 32 batch rows on AVX-512), and only the input is packed,
// where the blocked GEMM packs the whole weight transposed on every call. Measured, 2 threads:
// 64 x 3136 -> 1024 1.17 -> 0.92 ms, 32 rows 0.71 -> 0.46 ms, 64 x 4096 -> 4096 7.2 -> 6.0 ms,
// 64 x 1024 -> 1024 even. Below 32 rows the tile's batch vectors are mostly empty (8 rows:
// 0.29 -> 0.32 ms); small weights fit in cache, where packing them costs little (100 x 784 ->
// 128: 56 -> 77 us in the window form).
// Not where the weight's row stride is a multiple of 1 KB: the tile's 14 rows are then read from
// at most 4 of L1's sets (64 sets of 64-byte lines repeat every 4 KB; rows 4 KB apart all share
// one), more lines than its ways hold. Measured on a Zen 4 (32 KB, 8-way L1), 2 threads, window
// form against blocked: 1024 x 1024 -> 1024 14.5-17.6 against 11.0 ms, 2048^3 110-122 against
// 89-92 ms, 64 x 1024 -> 1024 0.89 against 0.69 ms, 64 x 4096 -> 4096 13.2-13.6 against 12.9 ms;
// with a row stride of 12.25 KB (16 sets), 64 x 3136 -> 1024 1.94-1.98 against 2.13-2.18 ms.
constexpr int64_t kWindowMinBatch = 32;
constexpr int64_t kWindowMinWeight = int64_t(1) << 20;
constexpr int64_t kWindowAliasedStride = 1024;  // bytes

template <typename T>
void linear_forward(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* x, const T* w,
                    const T* bias, T* y, bool relu) {
  Epilogue<T> ep;
  ep.col_bias = bias;
  ep.relu = relu;
  if (N == 1 && M > 1) {
    std::vector<int64_t> rows(static_cast<size_t>(M));
    for (int64_t i = 0; i < M; ++i) rows[i] = i * K;
    Epilogue<T> transposed;
    transposed.row_bias = bias;
    transposed.relu = relu;
    gemm_dot(ctx, 1, M, K, w, K, x, rows.data(), y, M, transposed);
    return;
  }
  if (N <= kDotMaxFeatures || M <= kDotMaxBatch) {
    std::vector<int64_t> rows(static_cast<size_t>(N));
    for (int64_t j = 0; j < N; ++j) rows[j] = j * K;
    gemm_dot(ctx, M, N, K, x, K, w, rows.data(), y, N, ep);
    return;
  }
  const bool aliased = (K * int64_t(sizeof(T))) % kWindowAliasedStride == 0;
  if (M >= kWindowMinBatch && N * K >= kWindowMinWeight && !aliased) {
    WindowWeights<T> batch = window_weights<T>(ctx, M, K);
    pack_window_rows(batch, 0, K, x, K);
    std::vector<int64_t> columns(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) columns[k] = k;
    gemm_windows(ctx, batch, N, 1, K, w, columns.data(), y, N, ep);
    return;
  }
  gemm(ctx, M, N, K, Operand<T>{x, K, 1}, Operand<T>{w, 1, K}, y, N, ep);
}

template <typename T>
void linear_grad_input(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* gy,
                       const T* w, const T* relu_output, T* gx) {
  gemm(ctx, M, K, N, Operand<T>{gy, N, 1, relu_output}, Operand<T>{w, K, 1}, gx, K, Epilogue<T>{});
}

template <typename T>
void linear_grad_weight(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* gy,
                        const T* x, const T* relu_output, T* gw) {
  gemm(ctx, N, K, M, Operand<T>{gy, 1, N, relu_output}, Operand<T>{x, K, 1}, gw, K, Epilogue<T>{});
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template void linear_forward<T>(const Context&, int64_t, int64_t, int64_t, const T*, const T*, \
                                  const T*, T*, bool);                                          \
  template void linear_grad_input<T>(const Context&, int64_t, int64_t, int64_t, const T*,      \
                                     const T*, const T*, T*);                                   \
  template void linear_grad_weight<T>(const Context&, int64_t, int64_t, int64_t, const T*,     \
                                      const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
