// linear's three GEMMs; the transposes are operand strides, never copies.
#include "linear.h"

#include <vector>

#include "gemm.h"

namespace fastlayers::cpu {

// Below this many output features the forward runs in the GEMM's dot-product form: x's rows and
// the weight's rows are both contiguous along K, so nothing is packed, where the blocked GEMM
// would pad the few features to a whole register tile (32 columns on AVX-512) and pack them.
// A classifier's last layer (1024 -> 10 on a batch of 64) takes 9 us instead of 20. Wider
// layers stay blocked: the dot form sums each output across vector lanes and streams the
// weight from L2, and measured slower there (64 x 3136 -> 1024: 1.45 ms against 1.2).
constexpr int64_t kDotMaxFeatures = 16;

template <typename T>
void linear_forward(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* x, const T* w,
                    const T* bias, T* y, bool relu) {
  Epilogue<T> ep;
  ep.col_bias = bias;
  ep.relu = relu;
  if (N <= kDotMaxFeatures && K % kGemmDotAlign == 0) {
    std::vector<int64_t> rows(static_cast<size_t>(N));
    for (int64_t j = 0; j < N; ++j) rows[j] = j * K;
    gemm_dot(ctx, M, N, K, x, K, w, rows.data(), y, N, ep);
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
