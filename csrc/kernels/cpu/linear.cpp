// linear's three GEMMs; the transposes are operand strides, never copies.
#include "linear.h"

#include "gemm.h"

namespace fastlayers::cpu {

template <typename T>
void linear_forward(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* x, const T* w,
                    const T* bias, T* y, bool relu) {
  Epilogue<T> ep;
  ep.col_bias = bias;
  ep.relu = relu;
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
