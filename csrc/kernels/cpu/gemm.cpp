// gemm(): picks the micro-kernel of the ISA the context asks for (gemm_generic.cpp, gemm_avx2.cpp,
// gemm_avx512.cpp share one blocked driver, gemm_driver.inc) and handles the K == 0 case.
#include "gemm.h"

#include <algorithm>

#include "gemm_isa.h"

namespace fastlayers::cpu {
namespace {

// K == 0: the product is zero and only the epilogue remains.
template <typename T>
void epilogue_only(int64_t M, int64_t N, T* C, int64_t ldc, const Epilogue<T>& ep) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T v = ep.accumulate ? C[i * ldc + j] : T(0);
      if (ep.row_bias) v += ep.row_bias[i];
      if (ep.col_bias) v += ep.col_bias[j];
      C[i * ldc + j] = (ep.relu && v < T(0)) ? T(0) : v;
    }
  }
}


}  // namespace

template <typename T>
void gemm(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B, T* C,
          int64_t ldc, const Epilogue<T>& epilogue) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    epilogue_only(M, N, C, ldc, epilogue);
    return;
  }
  switch (runnable_isa(ctx.isa)) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_avx512(ctx, M, N, K, A, B, C, ldc, epilogue);
    case Isa::avx2:
      return gemm_avx2(ctx, M, N, K, A, B, C, ldc, epilogue);
#endif
    default:
      return gemm_generic(ctx, M, N, K, A, B, C, ldc, epilogue);
  }
}

template <typename T>
void gemm_dot(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
              const T* b, const int64_t* b_off, T* C, int64_t ldc, bool accumulate,
              const DotBatch& batch) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || batch.count <= 0) {
    epilogue_only(M, N, C, ldc, Epilogue<T>{accumulate});
    return;
  }
  switch (runnable_isa(ctx.isa)) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_dot_avx512(ctx, M, N, K, a, lda, b, b_off, C, ldc, accumulate, batch);
    case Isa::avx2:
      return gemm_dot_avx2(ctx, M, N, K, a, lda, b, b_off, C, ldc, accumulate, batch);
#endif
    default:
      return gemm_dot_generic(ctx, M, N, K, a, lda, b, b_off, C, ldc, accumulate, batch);
  }
}

template <typename T>
WindowWeights<T> pack_window_weights(const Context& ctx, int64_t N, int64_t K, const T* b) {
  WindowWeights<T> w;
  w.isa = runnable_isa(ctx.isa);
  w.N = N;
  w.K = K;
  switch (w.isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      w.NR = window_nr_avx512<T>();
      break;
    case Isa::avx2:
      w.NR = window_nr_avx2<T>();
      break;
#endif
    default:
      w.isa = Isa::generic;
      w.NR = window_nr_generic<T>();
  }
  w.panels.resize(static_cast<size_t>(ceil_div(N, w.NR) * K * w.NR));
  if (N <= 0 || K <= 0) return w;
  switch (w.isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      pack_window_panels_avx512(N, K, b, w.panels.data());
      break;
    case Isa::avx2:
      pack_window_panels_avx2(N, K, b, w.panels.data());
      break;
#endif
    default:
      pack_window_panels_generic(N, K, b, w.panels.data());
  }
  return w;
}

template <typename T>
void gemm_windows(const Context& ctx, const WindowWeights<T>& w, int64_t rows, int64_t cols,
                  int64_t pitch, const T* a, const int64_t* a_off, T* C, int64_t ldc,
                  const T* bias, bool relu) {
  if (w.N <= 0 || rows <= 0 || cols <= 0) return;
  if (w.K <= 0) {  // no terms: bias and ReLU only
    for (int64_t j = 0; j < w.N; ++j) {
      const T v = bias ? bias[j] : T(0);
      std::fill(C + j * ldc, C + j * ldc + rows * cols, (relu && v < T(0)) ? T(0) : v);
    }
    return;
  }
  switch (w.isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_windows_avx512(ctx, w, rows, cols, pitch, a, a_off, C, ldc, bias, relu);
    case Isa::avx2:
      return gemm_windows_avx2(ctx, w, rows, cols, pitch, a, a_off, C, ldc, bias, relu);
#endif
    default:
      return gemm_windows_generic(ctx, w, rows, cols, pitch, a, a_off, C, ldc, bias, relu);
  }
}

#define FASTLAYERS_INSTANTIATE_WINDOWS(T)                                                      \
  template WindowWeights<T> pack_window_weights<T>(const Context&, int64_t, int64_t, const T*); \
  template void gemm_windows<T>(const Context&, const WindowWeights<T>&, int64_t, int64_t,      \
                                int64_t, const T*, const int64_t*, T*, int64_t, const T*, bool);
FASTLAYERS_INSTANTIATE_WINDOWS(float)
FASTLAYERS_INSTANTIATE_WINDOWS(double)
#undef FASTLAYERS_INSTANTIATE_WINDOWS

template void gemm_dot<float>(const Context&, int64_t, int64_t, int64_t, const float*, int64_t,
                              const float*, const int64_t*, float*, int64_t, bool, const DotBatch&);
template void gemm_dot<double>(const Context&, int64_t, int64_t, int64_t, const double*, int64_t,
                               const double*, const int64_t*, double*, int64_t, bool,
                               const DotBatch&);

template void gemm<float>(const Context&, int64_t, int64_t, int64_t, Operand<float>, Operand<float>,
                          float*, int64_t, const Epilogue<float>&);
template void gemm<double>(const Context&, int64_t, int64_t, int64_t, Operand<double>,
                           Operand<double>, double*, int64_t, const Epilogue<double>&);

}  // namespace fastlayers::cpu
