// The CPU GEMM engine: C[M, N] (+)= A[M, K] * B[K, N], with bias and ReLU in the epilogue and an
// optional ReLU mask applied to an operand while it is packed. Linear and all three conv passes
// (forward, grad_input, grad_weight) run on it. Tested through every op's tests and by
// tests/cpp/test_gemm.cpp against a naive triple loop.
#pragma once

#include <cstdint>

#include "parallel.h"

namespace fastlayers::cpu {

// A read-only matrix operand with arbitrary strides: element (i, k) is data[i * row_stride +
// k * col_stride], so transposes cost nothing. When relu_mask is set (same strides as data), the
// element reads as 0 wherever relu_mask <= 0: this is how a ReLU's backward is fused into the GEMM
// that consumes its gradient.
template <typename T>
struct Operand {
  const T* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;
  const T* relu_mask = nullptr;
};

// What happens to each finished element of C: optionally added to the old C, then plus
// row_bias[i] and col_bias[j] (either may be null), then ReLU (NaN propagates, as torch.relu).
template <typename T>
struct Epilogue {
  bool accumulate = false;
  const T* row_bias = nullptr;
  const T* col_bias = nullptr;
  bool relu = false;
};

// C is row-major with leading dimension ldc. Uses up to ctx.num_threads threads, fewer when the
// product is small. Deterministic for a given thread count (no atomics, fixed K order).
template <typename T>
void gemm(const Context& ctx, int64_t M, int64_t N, int64_t K, Operand<T> A, Operand<T> B, T* C,
          int64_t ldc, const Epilogue<T>& epilogue);

}  // namespace fastlayers::cpu
