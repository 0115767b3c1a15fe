// The per-ISA GEMM entry points behind gemm() (gemm.cpp picks one from Context::isa). Each is
// defined in its own file, compiled for its ISA; the avx2 and avx512 ones exist on x86-64 only.
// K > 0, M > 0, N > 0 here.
#pragma once

#include <type_traits>

#include "gemm.h"
#include "winograd.h"

namespace fastlayers::cpu {

#define FASTLAYERS_DECLARE_GEMM(name)                                                          \
  template <typename T>                                                                        \
  void name(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B, T* C, \
            int64_t ldc, const Epilogue<T>& epilogue);
FASTLAYERS_DECLARE_GEMM(gemm_generic)
FASTLAYERS_DECLARE_GEMM(gemm_avx2)
FASTLAYERS_DECLARE_GEMM(gemm_avx512)
#undef FASTLAYERS_DECLARE_GEMM

#define FASTLAYERS_DECLARE_GEMM_DOT(name)                                                      \
  template <typename T>                                                                        \
  void name(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,      \
            const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,      \
            const DotBatch& batch);
FASTLAYERS_DECLARE_GEMM_DOT(gemm_dot_generic)
FASTLAYERS_DECLARE_GEMM_DOT(gemm_dot_avx2)
FASTLAYERS_DECLARE_GEMM_DOT(gemm_dot_avx512)
#undef FASTLAYERS_DECLARE_GEMM_DOT

#define FASTLAYERS_DECLARE_GEMM_GATHER(name)                                                   \
  template <typename T>                                                                        \
  bool name(int64_t M, int64_t N, int64_t terms, const T* a, int64_t lda, const int64_t* col,  \
            int64_t ldcol, const T* B, int64_t rows, int64_t ldb, T* C, int64_t ldc,             \
            bool accumulate);
FASTLAYERS_DECLARE_GEMM_GATHER(gemm_gather_generic)
FASTLAYERS_DECLARE_GEMM_GATHER(gemm_gather_avx2)
FASTLAYERS_DECLARE_GEMM_GATHER(gemm_gather_avx512)
#undef FASTLAYERS_DECLARE_GEMM_GATHER

#define FASTLAYERS_DECLARE_PACK_GATHER(name)                                                   \
  template <typename T>                                                                        \
  void name(int64_t rows, int64_t cols, const T* src, const int64_t* off, T* B, int64_t ldb);
FASTLAYERS_DECLARE_PACK_GATHER(pack_gather_operand_generic)
FASTLAYERS_DECLARE_PACK_GATHER(pack_gather_operand_avx2)
FASTLAYERS_DECLARE_PACK_GATHER(pack_gather_operand_avx512)
#undef FASTLAYERS_DECLARE_PACK_GATHER

#define FASTLAYERS_DECLARE_WINDOWS(isa)                                                        \
  template <typename T>                                                                        \
  void pack_window_panels_##isa(WindowWeights<T>& w, int64_t k0, int64_t count, const T* b,   \
                                int64_t ldb, const T* mask);                                   \
  template <typename T>                                                                        \
  int64_t window_nr_##isa();                                                                   \
  template <typename T>                                                                        \
  void gemm_windows_##isa(const Context& ctx, const WindowWeights<T>& w, int64_t rows,        \
                          int64_t cols, int64_t pitch, const T* a, const int64_t* a_off, T* C,  \
                          int64_t ldc, const Epilogue<T>& ep);
FASTLAYERS_DECLARE_WINDOWS(generic)
FASTLAYERS_DECLARE_WINDOWS(avx2)
FASTLAYERS_DECLARE_WINDOWS(avx512)
#undef FASTLAYERS_DECLARE_WINDOWS

// Defines the window-form entry points of one ISA file, for float and double, from its Kernel.
#define FASTLAYERS_DEFINE_WINDOWS(isa)                                                         \
  template <typename T>                                                                        \
  void pack_window_panels_##isa(WindowWeights<T>& w, int64_t k0, int64_t count, const T* b,   \
                                int64_t ldb, const T* mask) {                                  \
    pack_window_panels<T, Kernel<T>>(w, k0, count, b, ldb, mask);                              \
  }                                                                                            \
  template <typename T>                                                                        \
  int64_t window_nr_##isa() {                                                                  \
    return Kernel<T>::NR;                                                                      \
  }                                                                                            \
  template <typename T>                                                                        \
  void gemm_windows_##isa(const Context& ctx, const WindowWeights<T>& w, int64_t rows,        \
                          int64_t cols, int64_t pitch, const T* a, const int64_t* a_off, T* C,  \
                          int64_t ldc, const Epilogue<T>& ep) {                                \
    gemm_windows_blocked<T, Kernel<T>>(ctx, w, rows, cols, pitch, a, a_off, C, ldc, ep);       \
  }                                                                                            \
  template void pack_window_panels_##isa<float>(WindowWeights<float>&, int64_t, int64_t,       \
                                                const float*, int64_t, const float*);          \
  template void pack_window_panels_##isa<double>(WindowWeights<double>&, int64_t, int64_t,     \
                                                 const double*, int64_t, const double*);       \
  template int64_t window_nr_##isa<float>();                                                   \
  template int64_t window_nr_##isa<double>();                                                  \
  template void gemm_windows_##isa<float>(const Context&, const WindowWeights<float>&, int64_t, \
                                          int64_t, int64_t, const float*, const int64_t*,     \
                                          float*, int64_t, const Epilogue<float>&);           \
  template void gemm_windows_##isa<double>(const Context&, const WindowWeights<double>&,       \
                                           int64_t, int64_t, int64_t, const double*,           \
                                           const int64_t*, double*, int64_t,                   \
                                           const Epilogue<double>&);

#define FASTLAYERS_INSTANTIATE_GEMM_DOT(name, T)                                               \
  template void name<T>(const Context&, int64_t, int64_t, int64_t, const T*, int64_t, const T*, \
                        const int64_t*, T*, int64_t, const Epilogue<T>&, const DotBatch&);

// Defines the gather-form entry point of one ISA file, for float and double, from its GatherKernel.
#define FASTLAYERS_DEFINE_GEMM_GATHER(isa)                                                     \
  template <typename T>                                                                        \
  bool gemm_gather_##isa(int64_t M, int64_t N, int64_t terms, const T* a, int64_t lda,         \
                         const int64_t* col, int64_t ldcol, const T* B, int64_t rows,          \
                         int64_t ldb, T* C, int64_t ldc, bool accumulate) {                    \
    return GatherKernel<T>::run(M, N, terms, a, lda, col, ldcol, B, rows, ldb, C, ldc,         \
                                accumulate);                                                   \
  }                                                                                            \
  template bool gemm_gather_##isa<float>(int64_t, int64_t, int64_t, const float*, int64_t,     \
                                         const int64_t*, int64_t, const float*, int64_t,       \
                                         int64_t, float*, int64_t, bool);                      \
  template bool gemm_gather_##isa<double>(int64_t, int64_t, int64_t, const double*, int64_t,   \
                                          const int64_t*, int64_t, const double*, int64_t,     \
                                          int64_t, double*, int64_t, bool);                    \
  template <typename T>                                                                        \
  void pack_gather_operand_##isa(int64_t rows, int64_t cols, const T* src, const int64_t* off, \
                                 T* B, int64_t ldb) {                                          \
    GatherKernel<T>::pack(rows, cols, src, off, B, ldb);                                       \
  }                                                                                            \
  template void pack_gather_operand_##isa<float>(int64_t, int64_t, const float*,               \
                                                 const int64_t*, float*, int64_t);             \
  template void pack_gather_operand_##isa<double>(int64_t, int64_t, const double*,             \
                                                  const int64_t*, double*, int64_t);

#define FASTLAYERS_INSTANTIATE_GEMM(name, T)                                                   \
  template void name<T>(const Context&, int64_t, int64_t, int64_t, Operand<T>, Operand<T>, T*, \
                        int64_t, const Epilogue<T>&);

#define FASTLAYERS_DECLARE_WINOGRAD(isa)                                                       \
  template <typename T>                                                                        \
  void winograd_image_##isa(const WinogradTiles& g, int64_t channels, int64_t out_channels,     \
                            const T* quads, const WindowWeights<T>* weights,                   \
                            const int64_t* a_off, T* V, T* M, T* S, const T* bias, bool relu,  \
                            T* y);                                                             \
  template <typename T>                                                                        \
  void winograd_fill_quads_##isa(const WinogradTiles& g, int64_t H, int64_t width,              \
                                 int64_t pad_top, int64_t pad_left, const T* x, const T* mask, \
                                 T* out);
FASTLAYERS_DECLARE_WINOGRAD(generic)
FASTLAYERS_DECLARE_WINOGRAD(avx2)
FASTLAYERS_DECLARE_WINOGRAD(avx512)
#undef FASTLAYERS_DECLARE_WINOGRAD

// Defines the Winograd entry points of one ISA file, for float and double, from its vector types
// and Kernel.
#define FASTLAYERS_DEFINE_WINOGRAD(isa, VF, VD)                                                \
  template <typename T>                                                                        \
  void winograd_image_##isa(const WinogradTiles& g, int64_t channels, int64_t out_channels,     \
                            const T* quads, const WindowWeights<T>* weights,                   \
                            const int64_t* a_off, T* V, T* M, T* S, const T* bias, bool relu,  \
                            T* y) {                                                            \
    using Vec = std::conditional_t<std::is_same_v<T, float>, VF, VD>;                          \
    if (g.K == 3)                                                                              \
      WinogradKernel<Vec, Kernel<T>, 3>::image(g, channels, out_channels, quads, weights,      \
                                               a_off, V, M, S, bias, relu, y);                 \
    else                                                                                       \
      WinogradKernel<Vec, Kernel<T>, 5>::image(g, channels, out_channels, quads, weights,      \
                                               a_off, V, M, S, bias, relu, y);                 \
  }                                                                                            \
  template void winograd_image_##isa<float>(const WinogradTiles&, int64_t, int64_t,            \
                                            const float*, const WindowWeights<float>*,         \
                                            const int64_t*, float*, float*, float*,            \
                                            const float*, bool, float*);                       \
  template void winograd_image_##isa<double>(const WinogradTiles&, int64_t, int64_t,           \
                                             const double*, const WindowWeights<double>*,      \
                                             const int64_t*, double*, double*, double*,        \
                                             const double*, bool, double*);                    \
  template <typename T>                                                                        \
  void winograd_fill_quads_##isa(const WinogradTiles& g, int64_t H, int64_t width,              \
                                 int64_t pad_top, int64_t pad_left, const T* x, const T* mask, \
                                 T* out) {                                                     \
    using Vec = std::conditional_t<std::is_same_v<T, float>, VF, VD>;                          \
    WinogradQuads<Vec>::fill(g, H, width, pad_top, pad_left, x, mask, out);                   \
  }                                                                                            \
  template void winograd_fill_quads_##isa<float>(const WinogradTiles&, int64_t, int64_t,       \
                                                 int64_t, int64_t, const float*, const float*, \
                                                 float*);                                      \
  template void winograd_fill_quads_##isa<double>(const WinogradTiles&, int64_t, int64_t,      \
                                                  int64_t, int64_t, const double*,             \
                                                  const double*, double*);

}  // namespace fastlayers::cpu
