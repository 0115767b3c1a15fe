// The CPU GEMM engine against a naive double-precision triple loop, with no torch involved:
// every operand layout (plain and transposed strides), sizes on both sides of each cache block
// (MC/KC/NC), every epilogue (accumulate, row and column bias, ReLU), the ReLU mask on either
// operand, 1 or 2 threads, and every ISA's micro-kernel this CPU can run; and the dot-product
// form (gemm_dot) with B's rows at arbitrary, overlapping offsets; and the window form
// (gemm_windows) over rows of pixels at arbitrary offsets, with bias per channel or per
// position and ReLU, for channel counts on both sides of the half-width and full-width panels,
// and in single columns (linear's forward); and the gather form (gemm_gather) with
// sparse rows of A given as values and column numbers (shared or per row, repeated, out of range),
// over every column block width and past the kernel's term block, and its operand packing
// (pack_gather_operand) from overlapping offsets, with the padding columns. Built and run by
// CMake/ctest (`make test` runs it).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cpu/gemm.h"

using fastlayers::cpu::Context;
using fastlayers::cpu::Isa;
using fastlayers::cpu::Epilogue;
using fastlayers::cpu::gemm;
using fastlayers::cpu::DotBatch;
using fastlayers::cpu::gemm_dot;
using fastlayers::cpu::kGemmDotAlign;
using fastlayers::cpu::Operand;
using fastlayers::cpu::gemm_windows;
using fastlayers::cpu::pack_window_rows;
using fastlayers::cpu::window_weights;
using fastlayers::cpu::gemm_gather;
using fastlayers::cpu::pack_gather_operand;

namespace {

int failures = 0;

template <typename T>
void check(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, bool accumulate,
           bool row_bias, bool col_bias, bool relu, bool mask_a, bool mask_b, int threads,
           Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(M * 131 + N * 17 + K));
  std::normal_distribution<double> normal;
  auto random = [&](int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (auto& x : v) x = static_cast<T>(normal(rng));
    return v;
  };
  const auto a = random(M * K), b = random(K * N), ma = random(M * K), mb = random(K * N);
  const auto rb = random(M), cb = random(N), c0 = random(M * N);
  // Element (i, k) of A is a[i * K + k] (plain) or a[k * M + i] (transposed storage).
  const Operand<T> A{a.data(), trans_a ? 1 : K, trans_a ? M : 1, mask_a ? ma.data() : nullptr};
  const Operand<T> B{b.data(), trans_b ? 1 : N, trans_b ? K : 1, mask_b ? mb.data() : nullptr};
  auto at = [](const Operand<T>& op, int64_t i, int64_t k) {
    const int64_t o = i * op.row_stride + k * op.col_stride;
    return (op.relu_mask && op.relu_mask[o] <= 0) ? 0.0 : double(op.data[o]);  // NaN passes
  };
  Epilogue<T> ep;
  ep.accumulate = accumulate;
  ep.row_bias = row_bias ? rb.data() : nullptr;
  ep.col_bias = col_bias ? cb.data() : nullptr;
  ep.relu = relu;
  std::vector<T> c = c0;
  gemm(Context{threads, isa}, M, N, K, A, B, c.data(), N, ep);

  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * std::sqrt(double(K) + 1.0);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double want = accumulate ? double(c0[i * N + j]) : 0.0;
      for (int64_t k = 0; k < K; ++k) want += at(A, i, k) * at(B, k, j);
      if (row_bias) want += rb[i];
      if (col_bias) want += cb[j];
      if (relu) want = want > 0 ? want : 0;
      const double got = c[i * N + j];
      if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
        std::printf("FAIL %s %s M=%lld N=%lld K=%lld transA=%d transB=%d acc=%d relu=%d threads=%d "
                    "at (%lld, %lld): got %.9g, want %.9g\n",
                    fastlayers::cpu::isa_name(isa), sizeof(T) == 4 ? "float" : "double", (long long)M, (long long)N, (long long)K,
                    trans_a, trans_b, accumulate, relu, threads, (long long)i, (long long)j, got,
                    want);
        ++failures;
        return;
      }
    }
  }
}

template <typename T>
int run_all(Isa isa) {
  const int64_t sizes[][3] = {{1, 1, 1},   {3, 5, 7},     {4, 8, 16},   {17, 9, 300},
                              {130, 20, 5}, {7, 600, 260}, {129, 513, 257}, {5, 4, 0},
                              {11, 33, 3},  {15, 47, 31},  {100, 10, 784}, {64, 64, 100}};
  int cases = 0;
  for (const auto& s : sizes) {
    for (int flags = 0; flags < 16; ++flags) {
      for (int threads : {1, 2}) {
        const bool ta = flags & 1, tb = flags & 2, acc = flags & 4, relu = flags & 8;
        check<T>(s[0], s[1], s[2], ta, tb, acc, flags % 3 == 0, flags % 3 == 1, relu, ta && relu,
                 tb && !relu, threads, isa);
        ++cases;
      }
    }
  }
  return cases;
}

// gemm_dot: C (+)= sum_g A_g * B_g^T over a batch of `batch` products, with B's rows at
// overlapping offsets into one buffer per product (as a conv's shifted input rows are); with
// `bias_relu`, plus a row and a column bias, then ReLU. With `padded`, A's rows are padded with
// zeros from K to a multiple of kGemmDotAlign and the call is given that K; else it is given K
// itself, and the elements past K in A's rows are NaN, which no sum may read.
template <typename T>
void check_dot(int64_t M, int64_t N, int64_t K, bool accumulate, bool bias_relu, int threads,
               int64_t batch, bool padded, Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(M * 7 + N * 131 + K + batch));
  std::normal_distribution<double> normal;
  const int64_t Kp = padded ? (K + kGemmDotAlign - 1) / kGemmDotAlign * kGemmDotAlign : K;
  const int64_t lda = Kp + 3;
  const int64_t stride_a = M * lda + 5, stride_b = N * 5 + Kp + 7;  // per product
  std::vector<T> a(static_cast<size_t>(batch * stride_a)), b(static_cast<size_t>(batch * stride_b));
  std::vector<T> c0(static_cast<size_t>(M * N));
  for (auto& x : a) x = static_cast<T>(normal(rng));
  for (auto& x : b) x = static_cast<T>(normal(rng));
  for (auto& x : c0) x = static_cast<T>(normal(rng));
  std::vector<T> row_bias(static_cast<size_t>(M)), col_bias(static_cast<size_t>(N));
  for (auto& x : row_bias) x = static_cast<T>(normal(rng));
  for (auto& x : col_bias) x = static_cast<T>(normal(rng));
  for (int64_t g = 0; g < batch; ++g)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = K; k < lda; ++k)
        a[g * stride_a + i * lda + k] = k < Kp ? T(0) : std::numeric_limits<T>::quiet_NaN();
  std::vector<int64_t> off(static_cast<size_t>(N));
  for (int64_t j = 0; j < N; ++j) off[j] = (j * 37) % (N * 5 + 1);  // overlapping, unordered
  std::vector<T> c = c0;
  Epilogue<T> ep{accumulate};
  if (bias_relu) {
    ep.row_bias = row_bias.data();
    ep.col_bias = col_bias.data();
    ep.relu = true;
  }
  gemm_dot(Context{threads, isa}, M, N, Kp, a.data(), lda, b.data(), off.data(), c.data(), N, ep,
           DotBatch{batch, stride_a, stride_b});
  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * std::sqrt(double(K * batch) + 1.0);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double want = accumulate ? double(c0[i * N + j]) : 0.0;
      for (int64_t g = 0; g < batch; ++g)
        for (int64_t k = 0; k < K; ++k)
          want += double(a[g * stride_a + i * lda + k]) * double(b[g * stride_b + off[j] + k]);
      if (bias_relu) want = std::max(0.0, want + double(row_bias[i]) + double(col_bias[j]));
      const double got = c[i * N + j];
      if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
        std::printf("FAIL gemm_dot %s %s M=%lld N=%lld K=%lld batch=%lld acc=%d bias_relu=%d "
                    "threads=%d padded=%d at (%lld, %lld): got %.9g, want %.9g\n",
                    fastlayers::cpu::isa_name(isa), sizeof(T) == 4 ? "float" : "double",
                    (long long)M, (long long)N, (long long)K, (long long)batch, accumulate,
                    bias_relu, threads, padded, (long long)i, (long long)j, got, want);
        ++failures;
        return;
      }
    }
  }
}

template <typename T>
int run_all_dot(Isa isa) {
  // One-row products (matrix-vector) take their own tile; a few rows of many columns are split
  // across threads by columns.
  const int64_t sizes[][3] = {{1, 1, 1},    {3, 5, 16},   {4, 6, 33},   {9, 13, 100},
                              {32, 75, 892}, {64, 800, 248}, {100, 7, 64}, {5, 7, 0},
                              {1, 300, 37},  {1, 9, 784},   {2, 70, 17},  {1, 1030, 84},
                              {6, 130, 120}};
  int cases = 0;
  for (const auto& s : sizes) {
    for (bool acc : {false, true}) {
      for (bool bias_relu : {false, true}) {
        for (int threads : {1, 2}) {
          for (int64_t batch : {1, 3}) {
            for (bool padded : {true, false}) {
              check_dot<T>(s[0], s[1], s[2], acc, bias_relu, threads, batch, padded, isa);
              ++cases;
            }
          }
        }
      }
    }
  }
  return cases;
}


// gemm_windows: C[j][h * cols + w] (+)= sum_k a[off[k] + h * pitch + w] * B[j][k], then bias and
// ReLU, the offsets overlapping and unordered, C's channel stride wider than rows * cols. B is
// packed in two pieces from a wider matrix, through a ReLU mask when `masked`.
template <typename T>
void check_windows(int64_t N, int64_t K, int64_t rows, int64_t cols, bool bias, bool relu,
                   bool accumulate, bool masked, int threads, Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(N * 7 + K * 131 + rows * 17 + cols));
  std::normal_distribution<double> normal;
  const int64_t pitch = cols + 3, ldc = rows * cols + 5, ldb = K + 3;
  std::vector<int64_t> off(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) off[k] = (k * 37) % (2 * K + 1);
  std::vector<T> a(static_cast<size_t>(2 * K + 1 + rows * pitch)), b(static_cast<size_t>(N * ldb));
  std::vector<T> mask(b.size()), bv(static_cast<size_t>(N)), c0(static_cast<size_t>(N * ldc));
  std::vector<T> pv(static_cast<size_t>(rows * cols));  // the bias per position
  for (auto& x : a) x = static_cast<T>(normal(rng));
  for (auto& x : b) x = static_cast<T>(normal(rng));
  for (auto& x : mask) x = static_cast<T>(normal(rng));
  for (auto& x : bv) x = static_cast<T>(normal(rng));
  for (auto& x : pv) x = static_cast<T>(normal(rng));
  for (auto& x : c0) x = static_cast<T>(normal(rng));
  const Context ctx{threads, isa};
  auto w = window_weights<T>(ctx, N, K);
  const T* m = masked ? mask.data() : nullptr;
  pack_window_rows(w, 0, K / 2, b.data(), ldb, m);
  pack_window_rows(w, K / 2, K - K / 2, b.data() + K / 2, ldb, m ? m + K / 2 : nullptr);
  Epilogue<T> ep;
  ep.accumulate = accumulate;
  ep.row_bias = bias ? bv.data() : nullptr;
  ep.col_bias = bias && (rows + cols) % 2 == 1 ? pv.data() : nullptr;
  ep.relu = relu;
  std::vector<T> c = c0;
  gemm_windows(ctx, w, rows, cols, pitch, a.data(), off.data(), c.data(), ldc, ep);
  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * std::sqrt(double(K) + 1.0);
  for (int64_t j = 0; j < N; ++j) {
    for (int64_t i = 0; i < ldc; ++i) {
      const int64_t h = i / cols, x = i % cols;
      double want = c0[j * ldc + i];  // past rows * cols: untouched
      if (i < rows * cols) {
        want = (accumulate ? want : 0.0) + (bias ? double(bv[j]) : 0.0) +
               (ep.col_bias ? double(pv[i]) : 0.0);
        for (int64_t k = 0; k < K; ++k) {
          const bool keep = !masked || mask[j * ldb + k] > 0;
          want += keep ? double(a[off[k] + h * pitch + x]) * double(b[j * ldb + k]) : 0.0;
        }
        if (relu && want < 0) want = 0;
      }
      const double got = c[j * ldc + i];
      if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
        std::printf("FAIL gemm_windows %s %s N=%lld K=%lld rows=%lld cols=%lld bias=%d relu=%d "
                    "acc=%d mask=%d threads=%d at (%lld, %lld): got %.9g, want %.9g\n",
                    fastlayers::cpu::isa_name(isa), sizeof(T) == 4 ? "float" : "double",
                    (long long)N, (long long)K, (long long)rows, (long long)cols, bias, relu,
                    accumulate, masked, threads, (long long)j, (long long)i, got, want);
        ++failures;
        return;
      }
    }
  }
}

template <typename T>
int run_all_windows(Isa isa) {
  const int64_t sizes[][4] = {{1, 1, 1, 1},  {5, 9, 2, 3},    {16, 25, 3, 14}, {17, 30, 2, 15},
                              {32, 75, 4, 29}, {33, 40, 1, 28}, {64, 288, 3, 12}, {70, 7, 2, 40},
                              {64, 200, 5, 5}, {6, 0, 2, 5},
                              // one column: linear's forward, the positions its output features
                              {64, 100, 30, 1}, {33, 50, 1, 1}, {40, 64, 14, 1}};
  int cases = 0;
  for (const auto& s : sizes) {
    for (int variant = 0; variant < 8; ++variant) {
      const bool bias = variant & 1, relu = variant & 2, accumulate = variant & 4;
      for (bool masked : {false, true}) {
        for (int threads : {1, 2}) {
          check_windows<T>(s[0], s[1], s[2], s[3], bias, relu, accumulate, masked, threads, isa);
          ++cases;
        }
      }
    }
  }
  return cases;
}

// gemm_gather: C[i, 0:N] (+)= sum_t a[i * lda + t] * B[col[i * ldcol + t], 0:N], the columns
// drawn at random with repeats (both ends included), shared by every row when ldcol is 0; A's
// rows padded past `terms` and B's rows past N with NaN, which a read past either would carry
// into C; C's columns past N (up to ldc) must be left alone. Then one column at rows, or at -1,
// must make the call return false.
template <typename T>
void check_gather(int64_t M, int64_t N, int64_t terms, bool shared_cols, bool accumulate,
                  Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(M * 7 + N * 131 + terms * 17 + shared_cols));
  std::normal_distribution<double> normal;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const int64_t rows = 3 + (M * 5 + terms) % 41;
  const int64_t lda = terms + 3, ldb = N + 7, ldc = N + 5;
  const int64_t ldcol = shared_cols ? 0 : terms;
  const int64_t ncol = shared_cols ? terms : M * terms;
  // Sized exactly, so that a read past the last row trips the sanitizers.
  std::vector<T> a(static_cast<size_t>(M * lda), nan), b(static_cast<size_t>((rows - 1) * ldb + N));
  std::vector<T> c0(static_cast<size_t>(M * ldc));
  std::vector<int64_t> col(static_cast<size_t>(ncol));
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t t = 0; t < terms; ++t) {
      double x = normal(rng);
      if ((i + t) % 5 == 0) x = 0.0;                  // a window whose gradient is zero
      else if ((i + t) % 3 == 0) x = -std::fabs(x);   // a negative gradient
      a[i * lda + t] = static_cast<T>(x);
    }
  }
  for (int64_t q = 0; q < rows; ++q)
    for (int64_t j = 0; j < ldb && q * ldb + j < int64_t(b.size()); ++j)
      b[q * ldb + j] = j < N ? static_cast<T>(normal(rng)) : nan;
  for (auto& x : c0) x = static_cast<T>(normal(rng));
  std::uniform_int_distribution<int64_t> pick(0, rows - 1);
  for (auto& k : col) k = pick(rng);
  if (ncol > 0) col[0] = rows - 1;
  if (ncol > 1) col[ncol - 1] = 0;
  auto column = [&](int64_t i, int64_t t) { return col[i * ldcol + t]; };

  std::vector<T> c = c0;
  const Context ctx{1, isa};
  const bool ok = gemm_gather(ctx, M, N, terms, a.data(), lda, col.data(), ldcol, b.data(), rows,
                              ldb, c.data(), ldc, accumulate);
  const char* type = sizeof(T) == 4 ? "float" : "double";
  if (!ok) {
    std::printf("FAIL gemm_gather %s %s M=%lld N=%lld terms=%lld ldcol=%lld acc=%d: returned "
                "false with every column inside [0, %lld)\n",
                fastlayers::cpu::isa_name(isa), type, (long long)M, (long long)N,
                (long long)terms, (long long)ldcol, accumulate, (long long)rows);
    ++failures;
    return;
  }
  const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-12) * std::sqrt(double(terms) + 1.0);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      double want = c0[i * ldc + j];  // past N: untouched
      if (j < N) {
        if (!accumulate) want = 0.0;
        for (int64_t t = 0; t < terms; ++t)
          want += double(a[i * lda + t]) * double(b[column(i, t) * ldb + j]);
      }
      const double got = c[i * ldc + j];
      if (!(std::fabs(got - want) <= tol * (1.0 + std::fabs(want)))) {
        std::printf("FAIL gemm_gather %s %s M=%lld N=%lld terms=%lld ldcol=%lld acc=%d at "
                    "(%lld, %lld): got %.9g, want %.9g\n",
                    fastlayers::cpu::isa_name(isa), type, (long long)M, (long long)N,
                    (long long)terms, (long long)ldcol, accumulate, (long long)i, (long long)j,
                    got, want);
        ++failures;
        return;
      }
    }
  }

  // One column out of range, anywhere (the last term of the last row, or a random one): false.
  if (terms <= 0) return;
  for (int64_t bad : {rows, int64_t(-1)}) {
    std::vector<int64_t> bad_col = col;
    const int64_t at = bad == rows ? ncol - 1 : std::uniform_int_distribution<int64_t>(0, ncol - 1)(rng);
    bad_col[at] = bad;
    c = c0;
    if (gemm_gather(ctx, M, N, terms, a.data(), lda, bad_col.data(), ldcol, b.data(), rows, ldb,
                    c.data(), ldc, accumulate)) {
      std::printf("FAIL gemm_gather %s %s M=%lld N=%lld terms=%lld ldcol=%lld acc=%d: returned "
                  "true with column %lld (of %lld rows) at %lld\n",
                  fastlayers::cpu::isa_name(isa), type, (long long)M, (long long)N,
                  (long long)terms, (long long)ldcol, accumulate, (long long)bad, (long long)rows,
                  (long long)at);
      ++failures;
      return;
    }
  }
}

// gemm_gather's degenerate shapes: no rows or no columns of C is a no-op that returns true; no
// terms zeroes C (unless accumulating) and returns true; terms but no rows of B returns false.
template <typename T>
int check_gather_edges(Isa isa) {
  const Context ctx{1, isa};
  const int64_t N = 32, ldc = N + 3;
  const T a[2] = {T(1.5), T(-2)};
  const int64_t col[2] = {0, 0};
  const T b[N] = {};
  int cases = 0;
  auto expect = [&](const char* what, int64_t M, int64_t n, int64_t terms, int64_t rows,
                    bool accumulate, bool want_ok, bool zeroed) {
    std::vector<T> c(static_cast<size_t>(3 * ldc), T(7));
    const bool ok = gemm_gather(ctx, M, n, terms, a, 2, col, 0, b, rows, N, c.data(), ldc,
                                accumulate);
    bool good = ok == want_ok;
    if (want_ok) {  // C is unspecified after a false return
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t j = 0; j < ldc; ++j)
          good &= c[i * ldc + j] == ((zeroed && i < M && j < n) ? T(0) : T(7));
    }
    if (!good) {
      std::printf("FAIL gemm_gather %s %s %s (M=%lld N=%lld terms=%lld rows=%lld acc=%d): "
                  "returned %d\n",
                  fastlayers::cpu::isa_name(isa), sizeof(T) == 4 ? "float" : "double", what,
                  (long long)M, (long long)n, (long long)terms, (long long)rows, accumulate, ok);
      ++failures;
    }
    ++cases;
  };
  for (bool acc : {false, true}) {
    expect("M = 0", 0, N, 2, 1, acc, true, false);
    expect("N = 0", 3, 0, 2, 1, acc, true, false);
    expect("terms = 0", 3, N, 0, 1, acc, true, !acc);
    expect("terms = 0, rows = 0", 3, N, 0, 0, acc, true, !acc);
    expect("rows = 0", 3, N, 2, 0, acc, false, false);
  }
  return cases;
}

template <typename T>
int run_all_gather(Isa isa) {
  int cases = check_gather_edges<T>(isa);
  for (int64_t M : {1, 5, 37}) {
    for (int64_t N : {16, 32, 48, 64, 80, 800}) {  // 1, 2, 3 and 4 vectors in the last block
      for (int64_t terms : {0, 1, 3, 7, 49, 200}) {  // past the term block of every ISA
        for (bool shared_cols : {false, true}) {
          for (bool acc : {false, true}) {
            check_gather<T>(M, N, terms, shared_cols, acc, isa);
            ++cases;
          }
        }
      }
    }
  }
  return cases;
}

// pack_gather_operand: B[q * ldb + k] = src[off[k] + q], the offsets overlapping and unordered
// (random in [0, 50], or 3 apart), columns from cols to round_up(cols, 16) repeating column
// cols - 1, and B's elements past those (up to ldb) left alone. src ends right after the last row
// any offset reaches.
template <typename T>
void check_pack_gather(int64_t rows, int64_t cols, bool random_off, int64_t extra_ldb, Isa isa) {
  std::mt19937 rng(static_cast<unsigned>(rows * 131 + cols * 17 + random_off));
  std::normal_distribution<double> normal;
  const int64_t padded = (cols + kGemmDotAlign - 1) / kGemmDotAlign * kGemmDotAlign;
  const int64_t ldb = padded + extra_ldb;
  std::vector<int64_t> off(static_cast<size_t>(cols));
  std::uniform_int_distribution<int64_t> pick(0, 50);
  int64_t reach = 0;
  for (int64_t k = 0; k < cols; ++k) {
    off[k] = random_off ? pick(rng) : k * 3;
    reach = std::max(reach, off[k] + rows);
  }
  std::vector<T> src(static_cast<size_t>(reach));
  for (auto& x : src) x = static_cast<T>(normal(rng));
  const T sentinel = T(12345);
  std::vector<T> B(static_cast<size_t>(rows * ldb), sentinel);
  pack_gather_operand(Context{1, isa}, rows, cols, src.data(), off.data(), B.data(), ldb);
  for (int64_t q = 0; q < rows; ++q) {
    for (int64_t k = 0; k < ldb; ++k) {
      const T want = k < padded ? src[off[std::min(k, cols - 1)] + q] : sentinel;
      const T got = B[q * ldb + k];
      if (!(got == want)) {
        std::printf("FAIL pack_gather_operand %s %s rows=%lld cols=%lld ldb=%lld random_off=%d "
                    "at (%lld, %lld): got %.9g, want %.9g\n",
                    fastlayers::cpu::isa_name(isa), sizeof(T) == 4 ? "float" : "double",
                    (long long)rows, (long long)cols, (long long)ldb, random_off, (long long)q,
                    (long long)k, double(got), double(want));
        ++failures;
        return;
      }
    }
  }
}

template <typename T>
int run_all_pack_gather(Isa isa) {
  int cases = 0;
  for (int64_t rows : {1, 15, 16, 17, 248}) {
    for (int64_t cols : {1, 9, 16, 25, 27, 75, 800}) {
      for (bool random_off : {false, true}) {
        for (int64_t extra_ldb : {0, 5}) {
          check_pack_gather<T>(rows, cols, random_off, extra_ldb, isa);
          ++cases;
        }
      }
    }
  }
  return cases;
}

}  // namespace

int main() {
  int cases = 0;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    if (!fastlayers::cpu::isa_supported(isa)) {
      std::printf("%s: not supported by this CPU, skipped\n", fastlayers::cpu::isa_name(isa));
      continue;
    }
    cases += run_all<float>(isa) + run_all<double>(isa);
    cases += run_all_dot<float>(isa) + run_all_dot<double>(isa);
    cases += run_all_windows<float>(isa) + run_all_windows<double>(isa);
    cases += run_all_gather<float>(isa) + run_all_gather<double>(isa);
    cases += run_all_pack_gather<float>(isa) + run_all_pack_gather<double>(isa);
  }
  std::printf("%d gemm cases, %d failed\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
