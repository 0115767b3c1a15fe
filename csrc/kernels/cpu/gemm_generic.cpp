// The portable GEMM: plain C++ that the compiler vectorises for its baseline (SSE2 on x86-64,
// NEON on aarch64). The fallback wherever no wider ISA is available, and the reference path the
// tests force next to the others.
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "gemm_isa.h"

namespace fastlayers::cpu {
namespace {

// MR x NR accumulators fill 8 of the 16 baseline vector registers (4 floats or 2 doubles each),
// leaving room for the A broadcast and the B loads.
template <typename T, int64_t MR_, int64_t NR_>
struct PortableKernel {
  static constexpr int64_t MR = MR_, NR = NR_;
  static constexpr bool kPackTransposed = false, kPackRows = false;  // the driver's scalar packing
  static void pack_transposed(const T*, int64_t, int64_t, T*, const T* = nullptr) {}
  static void pack_rows(const T*, const T*, int64_t, int64_t, T*) {}
  template <int ROWS>
  static void run(int64_t kc, const T* __restrict a, const T* __restrict b, T* __restrict acc_out) {
    T acc[ROWS][NR] = {};
    for (int64_t p = 0; p < kc; ++p) {
      for (int r = 0; r < ROWS; ++r) {
        const T ar = a[p * MR + r];
        for (int64_t c = 0; c < NR; ++c) acc[r][c] += ar * b[p * NR + c];
      }
    }
    for (int r = 0; r < ROWS; ++r)
      for (int64_t c = 0; c < NR; ++c) acc_out[r * NR + c] = acc[r][c];
  }
  // The same with an unpacked B: row p of the panel is read straight from b + b_off[p].
  template <int ROWS>
  static void run_offsets(int64_t kc, const T* __restrict a, const T* __restrict b,
                          const int64_t* __restrict b_off, T* __restrict acc_out) {
    T acc[ROWS][NR] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const T* row = b + b_off[p];
      for (int r = 0; r < ROWS; ++r) {
        const T ar = a[p * MR + r];
        for (int64_t c = 0; c < NR; ++c) acc[r][c] += ar * row[c];
      }
    }
    for (int r = 0; r < ROWS; ++r)
      for (int64_t c = 0; c < NR; ++c) acc_out[r * NR + c] = acc[r][c];
  }
  // The window form (see SimdKernel::run_windows), NVU halves of the NR channels.
  static constexpr int64_t kWindowRows = MR;
  static constexpr bool kStoreWindowsRow = false;  // the driver's scalar store
  static void store_windows_row(const T*, int64_t, int64_t, T*, int64_t, const T*, bool, bool) {}
  template <int NVU, int RH, int RW>
  static void run_windows(int64_t kc, const T* __restrict a, int64_t pitch,
                          const int64_t* __restrict a_off, const T* __restrict b,
                          T* __restrict acc_out) {
    constexpr int64_t cols = NVU * NR / 2;
    T acc[RH * RW][cols] = {};
    for (int64_t p = 0; p < kc; ++p) {
      const T* px = a + a_off[p];
      for (int rh = 0; rh < RH; ++rh) {
        for (int rw = 0; rw < RW; ++rw) {
          const T ar = px[rh * pitch + rw];
          for (int64_t c = 0; c < cols; ++c) acc[rh * RW + rw][c] += ar * b[p * NR + c];
        }
      }
    }
    for (int r = 0; r < RH * RW; ++r)
      for (int64_t c = 0; c < cols; ++c) acc_out[r * NR + c] = acc[r][c];
  }
};

// The dot-product form (see SimdDotKernel): 2 x 4 scalar dot products.
template <typename T, int MT_, int NT_>
struct PortableDotKernel {
  static constexpr int MT = MT_, NT = NT_;
  static void run(int64_t K, int64_t batch, int64_t batch_a, int64_t batch_b,
                  const T* const* __restrict a, const T* const* __restrict b, T* __restrict out) {
    T acc[MT][NT] = {};
    for (int64_t g = 0; g < batch; ++g) {
      for (int64_t p = 0; p < K; ++p) {
        for (int r = 0; r < MT; ++r) {
          for (int c = 0; c < NT; ++c) acc[r][c] += a[r][g * batch_a + p] * b[c][g * batch_b + p];
        }
      }
    }
    for (int r = 0; r < MT; ++r)
      for (int c = 0; c < NT; ++c) out[r * NT + c] = acc[r][c];
  }
};
template <typename T>
struct DotKernel : PortableDotKernel<T, 2, 4> {};
template <typename T>
struct DotRowKernel : PortableDotKernel<T, 1, 4> {};

// The gather form (see SimdGatherKernel): blocks of 16 columns, which the compiler keeps in
// vector registers; each row's terms in order.
template <typename T>
struct GatherKernel {
  static constexpr int64_t kCols = 16;  // kGemmDotAlign: N is a multiple of it
  static void pack(int64_t rows, int64_t cols, const T* src, const int64_t* off, T* B,
                   int64_t ldb) {
    const int64_t padded = round_up(cols, kGemmDotAlign);
    for (int64_t q = 0; q < rows; ++q) {
      for (int64_t k = 0; k < padded; ++k) B[q * ldb + k] = src[off[std::min(k, cols - 1)] + q];
    }
  }
  static bool run(int64_t M, int64_t N, int64_t terms, const T* a, int64_t lda,
                  const int64_t* col, int64_t ldcol, const T* B, int64_t rows, int64_t ldb, T* C,
                  int64_t ldc, bool accumulate) {
    bool inside = true;
    for (int64_t j0 = 0; j0 < N; j0 += kCols) {
      for (int64_t i = 0; i < M; ++i) {
        T acc[kCols] = {};
        for (int64_t t = 0; t < terms; ++t) {
          int64_t k = col[i * ldcol + t];
          if (uint64_t(k) >= uint64_t(rows)) inside = false, k = 0;
          const T x = a[i * lda + t];
          const T* r = B + k * ldb + j0;
          for (int64_t c = 0; c < kCols; ++c) acc[c] += x * r[c];
        }
        T* c_row = C + i * ldc + j0;
        for (int64_t c = 0; c < kCols; ++c) c_row[c] = accumulate ? c_row[c] + acc[c] : acc[c];
      }
    }
    return inside;
  }
};

// One lane of T, for the Winograd transforms (winograd_kernel.inc), which the compiler may
// vectorise across their independent columns.
template <typename T_>
struct Scalar {
  using T = T_;
  using R = T_;
  static constexpr int64_t W = 1;
  static R load(const T* p) { return *p; }
  static void store(T* p, R v) { *p = v; }
  static R set1(T x) { return x; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static constexpr bool kDeinterleave = false;
};

template <typename T>
struct Kernel;
template <>
struct Kernel<float> : PortableKernel<float, 4, 8> {
  static constexpr int64_t MC = 128, KC = 256, NC = 512;
};
template <>
struct Kernel<double> : PortableKernel<double, 4, 4> {
  static constexpr int64_t MC = 64, KC = 256, NC = 256;
};

#include "gemm_driver.inc"
#include "winograd_kernel.inc"

}  // namespace

template <typename T>
void gemm_generic(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B,
                  T* C, int64_t ldc, const Epilogue<T>& epilogue) {
  gemm_blocked<T, Kernel<T>>(ctx, M, N, K, A, B, C, ldc, epilogue);
}
template <typename T>
void gemm_dot_generic(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
                      const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,
                      const DotBatch& batch) {
  gemm_dot_blocked<T, DotKernel<T>, DotRowKernel<T>>(ctx, M, N, K, a, lda, b, b_off, C, ldc, ep,
                                                      batch);
}
FASTLAYERS_INSTANTIATE_GEMM(gemm_generic, float)
FASTLAYERS_INSTANTIATE_GEMM(gemm_generic, double)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_generic, float)
FASTLAYERS_INSTANTIATE_GEMM_DOT(gemm_dot_generic, double)
FASTLAYERS_DEFINE_WINDOWS(generic)
FASTLAYERS_DEFINE_GEMM_GATHER(generic)
FASTLAYERS_DEFINE_WINOGRAD(generic, Scalar<float>, Scalar<double>)

}  // namespace fastlayers::cpu
