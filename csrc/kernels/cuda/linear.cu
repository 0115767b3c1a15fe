// linear's three GEMMs (see linear.h); the transposes are operand strides, never copies:
//   forward      y[M, N]  = x[M, K]      * (w[N, K])^T      A = x (K, 1),  B(k, n) = w[n, k] (1, K)
//   grad_input   gx[M, K] = gy[M, N]     * w[N, K]          A = gy (N, 1), B = w (K, 1)
//   grad_weight  gw[N, K] = (gy[M, N])^T * x[M, K]          A(n, m) = gy[m, n] (1, N), B = x (K, 1)
// (strides given as (row_stride, col_stride) of the GEMM operand).
#include "gemm.cuh"
#include "linear.h"

namespace fastlayers::cuda {

template <typename T>
cudaError_t linear_forward(const GemmContext& ctx, int64_t M, int64_t N, int64_t K, const T* x,
                           const T* w, const T* bias, T* y, bool relu) {
  const StridedOperand<T, true> a{x, nullptr, BatchOffset{}, K, 1};
  const StridedOperand<T, true> b{w, nullptr, BatchOffset{}, 1, K};
  Epilogue<T> ep{y, BatchOffset{}, N};
  ep.bias = bias;
  ep.bias_kind = bias != nullptr ? BiasKind::per_col : BiasKind::none;
  ep.relu = relu;
  return gemm<T>(ctx, 1, M, N, K, a, b, ep);
}

template <typename T>
cudaError_t linear_grad_input(const GemmContext& ctx, int64_t M, int64_t N, int64_t K,
                              const T* gy, const T* w, const T* relu_output, T* gx) {
  const StridedOperand<T, true> a{gy, relu_output, BatchOffset{}, N, 1};
  const StridedOperand<T, false> b{w, nullptr, BatchOffset{}, K, 1};
  return gemm<T>(ctx, 1, M, K, N, a, b, Epilogue<T>{gx, BatchOffset{}, K});
}

template <typename T>
cudaError_t linear_grad_weight(const GemmContext& ctx, int64_t M, int64_t N, int64_t K,
                               const T* gy, const T* x, const T* relu_output, T* gw) {
  const StridedOperand<T, false> a{gy, relu_output, BatchOffset{}, 1, N};
  const StridedOperand<T, false> b{x, nullptr, BatchOffset{}, K, 1};
  return gemm<T>(ctx, 1, N, K, M, a, b, Epilogue<T>{gw, BatchOffset{}, K});
}

#define FASTLAYERS_INSTANTIATE(T)                                                                \
  template cudaError_t linear_forward<T>(const GemmContext&, int64_t, int64_t, int64_t, const T*, \
                                         const T*, const T*, T*, bool);                            \
  template cudaError_t linear_grad_input<T>(const GemmContext&, int64_t, int64_t, int64_t,        \
                                            const T*, const T*, const T*, T*);                     \
  template cudaError_t linear_grad_weight<T>(const GemmContext&, int64_t, int64_t, int64_t,       \
                                             const T*, const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
