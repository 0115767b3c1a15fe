// The CPU GEMM engine: C[M, N] (+)= A[M, K] * B[K, N], with bias and ReLU in the epilogue and an
// optional ReLU mask applied to an operand while it is packed. Linear and all three conv passes
// (forward, grad_input, grad_weight) run on it. Tested through every op's tests and by
// tests/cpp/test_gemm.cpp against a naive triple loop.
#pragma once

#include <cstdint>
#include <vector>

#include "../params.h"
#include "parallel.h"

namespace fastlayers::cpu {

// A read-only matrix operand with arbitrary strides: element (i, k) is data[i * row_stride +
// k * col_stride], so transposes cost nothing. When relu_mask is set (same strides as data), the
// element reads as 0 wherever relu_mask <= 0: this is how a ReLU's backward is fused into the GEMM
// that consumes its gradient.
// Elements past column N that a row-offsets B operand must keep readable (see Operand): the
// widest register tile's NR.
constexpr int64_t kGemmColumnSlack = 32;

template <typename T>
struct Im2col;

template <typename T>
struct Operand {
  const T* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 0;
  const T* relu_mask = nullptr;
  // Row offsets (B only, col_stride 1): when set, row k starts at data + row_offsets[k] instead
  // of data + k * row_stride, and (without a mask) the micro-kernel reads B in place, unpacked;
  // every row must then stay readable kGemmColumnSlack elements past column N. A stride-1 conv's
  // input, padded, is such a matrix (conv2d.cpp).
  const int64_t* row_offsets = nullptr;
  // Implicit GEMM: when set (B only), the operand is one image's im2col matrix, or its transpose,
  // gathered straight into the packed panels; data, strides and relu_mask are then unused.
  const Im2col<T>* im2col = nullptr;
};

// The im2col matrix of one image and group, never materialised: element (k, n) with
// k = (c * KH + kh) * KW + kw and n = oh * OW + ow is x[c][ih][iw] (0 in the padding), where
// ih = oh * stride_h - pad_top + kh * dilation_h and iw likewise. transposed swaps (k, n).
template <typename T>
struct Im2col {
  const T* x;  // [channels, H, W]
  const Conv2dParams* p;
  bool transposed = false;
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

// The same engine in its dot-product form, for operands both contiguous along K:
//   C[M, N] (+)= sum_g A_g[M, K] * B_g[N, K]^T,  g < batch.count,  then the epilogue,
// row i of A_g at a + g * batch.stride_a + i * lda, row j of B_g at b + g * batch.stride_b +
// b_off[j]. Nothing is packed; each C element is a vector dot product summed across lanes once
// for the whole batch, so it pays when the K of the batch is long and M, N are short (a conv's
// grad_weight over a few images), when N is too short to fill the blocked GEMM's register tile
// (a classifier's last layer, B being its weight), and when M is a few rows (a matrix-vector
// product: B is read once, straight from memory, where the blocked GEMM would pack all of it).
// Any K works: one that is no multiple of the vector width ends in a step of partial vectors,
// which callers that can pad both operands with zeros (or, for B, any finite values where A's
// padding is zero) to a multiple of kGemmDotAlign save. Deterministic, whatever the thread count.
constexpr int64_t kGemmDotAlign = 16;

struct DotBatch {
  int64_t count = 1;
  int64_t stride_a = 0, stride_b = 0;
};

template <typename T>
void gemm_dot(const Context& ctx, int64_t M, int64_t N, int64_t K, const T* a, int64_t lda,
              const T* b, const int64_t* b_off, T* C, int64_t ldc, const Epilogue<T>& ep,
              const DotBatch& batch = DotBatch{});


// The engine's gather form, for a product whose A is sparse with `terms` nonzeros per row, given
// as values and column numbers:
//   C[i, 0:N] (+)= sum_{t < terms} a[i * lda + t] * B[col[i * ldcol + t], 0:N],   i < M,
// B row-major, `rows` rows with leading dimension ldb. ldcol may be 0: every row then has the
// same columns. This is a conv's grad_weight through a max-pool (conv2d_grad_weight_pooled): only
// a window's maximum carries a gradient, so A, the unpooled gradient, is the pooled gradient with
// the pool's indices as columns, and B is the image's im2col matrix, positions by taps. Each
// term's row of B is gathered, scaled and added in registers, a few vectors of columns at a time.
// N must be a multiple of kGemmDotAlign (the caller pads B and C). A column outside [0, rows)
// is never read through: the call then returns false, and C is unspecified. Serial, on the
// calling thread (the caller splits the work); ctx only picks the ISA. Deterministic.
template <typename T>
bool gemm_gather(const Context& ctx, int64_t M, int64_t N, int64_t terms, const T* a,
                 int64_t lda, const int64_t* col, int64_t ldcol, const T* B, int64_t rows,
                 int64_t ldb, T* C, int64_t ldc, bool accumulate);


// The gather form's B from a matrix given by row offsets (a stride-1 conv's im2col matrix of a
// zero-padded image: tap k's row starts at off[k]), transposed:
//   B[q * ldb + k] = src[off[k] + q]   for q < rows, k < cols,
// in W x W blocks through in-register transposes where the ISA has them. Columns from cols up to
// round_up(cols, kGemmDotAlign) repeat column cols - 1; ldb must be at least that. ctx only
// picks the ISA.
template <typename T>
void pack_gather_operand(const Context& ctx, int64_t rows, int64_t cols, const T* src,
                         const int64_t* off, T* B, int64_t ldb);

// The engine's window form, for stride-1 convs read from a zero-padded image (conv2d.cpp):
//   C[j * ldc + h * cols + w] (+)= sum_k a[a_off[k] + h * pitch + w] * B[j][k]
// for channels j < N, rows h < rows and columns w < cols; then + row_bias[j] + col_bias[h * cols
// + w] (a bias per position) and ReLU, as the epilogue asks. The micro-kernel holds a few
// consecutive (h, w) positions of one row times NR channels: it broadcasts them straight from
// `a` at each of the K
// offsets and loads B from panels packed beforehand (WindowWeights), so nothing is packed per
// call and no position past the end of a row is computed.
//   forward:      (h, w) = output pixel, k = (c, kh, kw), B = the weight [OC, C*KH*KW]
//   grad_weight:  (h, w) = (kh, kw) of one input channel, k = output pixel of each image,
//                 B = grad_output [OC, pixels], so C = that channel's grad_weight columns.
//   linear:       (h, w) = (output feature, 0), read in place from the weight's rows (pitch K),
//                 B = the input [batch, K], so C = the output [batch, features].
template <typename T>
struct WindowWeights {
  Isa isa = Isa::generic;  // the micro-kernel the panels are packed for
  int64_t N = 0, K = 0, NR = 0;
  std::vector<T> panels;  // ceil(N / NR) panels of K x NR, channels past N zero
};

// Panels for an N x K operand, for the ISA ctx asks for; filled by pack_window_rows.
template <typename T>
WindowWeights<T> window_weights(const Context& ctx, int64_t N, int64_t K);

// Columns [k0, k0 + count) of B from b, row-major with leading dimension ldb: B[j][k0 + t] =
// b[j * ldb + t], or 0 where mask (if given, same layout) is <= 0 (a NaN mask passes).
template <typename T>
void pack_window_rows(WindowWeights<T>& w, int64_t k0, int64_t count, const T* b, int64_t ldb,
                      const T* mask = nullptr);

// Uses up to ctx.num_threads threads, fewer when the product is small. Deterministic.
template <typename T>
void gemm_windows(const Context& ctx, const WindowWeights<T>& w, int64_t rows, int64_t cols,
                  int64_t pitch, const T* a, const int64_t* a_off, T* C, int64_t ldc,
                  const Epilogue<T>& ep);

}  // namespace fastlayers::cpu
