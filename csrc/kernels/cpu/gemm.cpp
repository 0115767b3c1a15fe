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
              const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,
              const DotBatch& batch) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0 || batch.count <= 0) {
    epilogue_only(M, N, C, ldc, ep);
    return;
  }
  switch (runnable_isa(ctx.isa)) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_dot_avx512(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep, batch);
    case Isa::avx2:
      return gemm_dot_avx2(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep, batch);
#endif
    default:
      return gemm_dot_generic(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep, batch);
  }
}

template <typename T>
bool gemm_gather(const Context& ctx, int64_t M, int64_t N, int64_t terms, const T* a,
                 int64_t lda, const int64_t* col, int64_t ldcol, const T* B, int64_t rows,
                 int64_t ldb, T* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return true;
  if (terms <= 0 || rows <= 0) {  // no terms, or none with a row to read
    if (!accumulate) epilogue_only(M, N, C, ldc, Epilogue<T>{});
    return terms <= 0;
  }
  switch (runnable_isa(ctx.isa)) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_gather_avx512(M, N, terms, a, lda, col, ldcol, B, rows, ldb, C, ldc, accumulate);
    case Isa::avx2:
      return gemm_gather_avx2(M, N, terms, a, lda, col, ldcol, B, rows, ldb, C, ldc, accumulate);
#endif
    default:
      return gemm_gather_generic(M, N, terms, a, lda, col, ldcol, B, rows, ldb, C, ldc, accumulate);
  }
}

template <typename T>
void pack_gather_operand(const Context& ctx, int64_t rows, int64_t cols, const T* src,
                         const int64_t* off, T* B, int64_t ldb) {
  if (rows <= 0 || cols <= 0) return;
  switch (runnable_isa(ctx.isa)) {
#if defined(__x86_64__)
    case Isa::avx512:
      return pack_gather_operand_avx512(rows, cols, src, off, B, ldb);
    case Isa::avx2:
      return pack_gather_operand_avx2(rows, cols, src, off, B, ldb);
#endif
    default:
      return pack_gather_operand_generic(rows, cols, src, off, B, ldb);
  }
}

template <typename T>
WindowWeights<T> window_weights(const Context& ctx, int64_t N, int64_t K) {
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
  w.panels.resize(static_cast<size_t>(std::max<int64_t>(0, ceil_div(N, w.NR) * K * w.NR)));
  return w;
}

template <typename T>
void pack_window_rows(WindowWeights<T>& w, int64_t k0, int64_t count, const T* b, int64_t ldb,
                      const T* mask) {
  if (w.N <= 0 || count <= 0) return;
  switch (w.isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      return pack_window_panels_avx512(w, k0, count, b, ldb, mask);
    case Isa::avx2:
      return pack_window_panels_avx2(w, k0, count, b, ldb, mask);
#endif
    default:
      return pack_window_panels_generic(w, k0, count, b, ldb, mask);
  }
}

template <typename T>
void gemm_windows(const Context& ctx, const WindowWeights<T>& w, int64_t rows, int64_t cols,
                  int64_t pitch, const T* a, const int64_t* a_off, T* C, int64_t ldc,
                  const Epilogue<T>& ep) {
  if (w.N <= 0 || rows <= 0 || cols <= 0) return;
  if (w.K <= 0) {  // no terms: the epilogue only, on each channel's rows x cols block
    for (int64_t j = 0; j < w.N; ++j) {
      Epilogue<T> one = ep;
      one.row_bias = ep.row_bias ? ep.row_bias + j : nullptr;
      epilogue_only(1, rows * cols, C + j * ldc, ldc, one);
    }
    return;
  }
  switch (w.isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      return gemm_windows_avx512(ctx, w, rows, cols, pitch, a, a_off, C, ldc, ep);
    case Isa::avx2:
      return gemm_windows_avx2(ctx, w, rows, cols, pitch, a, a_off, C, ldc, ep);
#endif
    default:
      return gemm_windows_generic(ctx, w, rows, cols, pitch, a, a_off, C, ldc, ep);
  }
}

#define FASTLAYERS_INSTANTIATE_WINDOWS(T)                                                      \
  template WindowWeights<T> window_weights<T>(const Context&, int64_t, int64_t);              \
  template void pack_window_rows<T>(WindowWeights<T>&, int64_t, int64_t, const T*, int64_t,    \
                                    const T*);                                                 \
  template void gemm_windows<T>(const Context&, const WindowWeights<T>&, int64_t, int64_t,      \
                                int64_t, const T*, const int64_t*, T*, int64_t,                \
                                const Epilogue<T>&);
FASTLAYERS_INSTANTIATE_WINDOWS(float)
FASTLAYERS_INSTANTIATE_WINDOWS(double)
#undef FASTLAYERS_INSTANTIATE_WINDOWS

template void gemm_dot<float>(const Context&, int64_t, int64_t, int64_t, const float*, int64_t,
                              const float*, const int64_t*, float*, int64_t,
                              const Epilogue<float>&, const DotBatch&);
template void gemm_dot<double>(const Context&, int64_t, int64_t, int64_t, const double*, int64_t,
                               const double*, const int64_t*, double*, int64_t, const Epilogue<double>&,
                               const DotBatch&);

template bool gemm_gather<float>(const Context&, int64_t, int64_t, int64_t, const float*, int64_t,
                                 const int64_t*, int64_t, const float*, int64_t, int64_t, float*,
                                 int64_t, bool);
template bool gemm_gather<double>(const Context&, int64_t, int64_t, int64_t, const double*,
                                  int64_t, const int64_t*, int64_t, const double*, int64_t,
                                  int64_t, double*, int64_t, bool);

template void pack_gather_operand<float>(const Context&, int64_t, int64_t, const float*,
                                         const int64_t*, float*, int64_t);
template void pack_gather_operand<double>(const Context&, int64_t, int64_t, const double*,
                                          const int64_t*, double*, int64_t);

template void gemm<float>(const Context&, int64_t, int64_t, int64_t, Operand<float>, Operand<float>,
                          float*, int64_t, const Epilogue<float>&);
template void gemm<double>(const Context&, int64_t, int64_t, int64_t, Operand<double>,
                           Operand<double>, double*, int64_t, const Epilogue<double>&);

}  // namespace fastlayers::cpu
