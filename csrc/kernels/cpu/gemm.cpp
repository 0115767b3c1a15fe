// gemm(): picks the micro-kernel of the ISA the context asks for (gemm_generic.cpp, gemm_avx2.cpp,
// gemm_avx512.cpp share one blocked driver, gemm_driver.inc) and handles the K == 0 case.
#include "gemm.h"

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

// The ISA the context asks for, or the widest the CPU has where it lacks that one.
Isa runnable_isa(const Context& ctx) {
  const Isa isa = resolve_isa(ctx.isa);
  return isa_supported(isa) ? isa : best_isa();
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
  switch (runnable_isa(ctx)) {
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
  switch (runnable_isa(ctx)) {
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
