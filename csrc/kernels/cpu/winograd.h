// Winograd F(2x2, 3x3) and F(2x2, 5x5): a stride-1, undilated K x K conv (K = 3 or 5) computed
// on 2 x 2 output tiles with (K + 1)^2 multiplies per tile and channel pair instead of 4 K^2
// (16 for 36 at K = 3, 36 for 100 at K = 5; Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016). Per image, with n = K + 1 and xi over the n x n transformed points:
//   V[xi][c] = B^T d B       the n x n input window d of every tile, transformed
//   M[xi]    = U[xi] V[xi]   n^2 GEMMs over channels in the window form, U[xi] = (G w G^T)[xi]
//   y        = A^T M A       back to each tile's 2 x 2 outputs, + bias, ReLU
// The points are 0, 1, -1 and infinity for K = 3 (B, G and A hold only 0, +-1 and +-1/2), and
// 0, 1/2, -1/2, 2, -2 and infinity for K = 5. The K = 5 transforms add rounding error: on
// unit-normal data with 32 input channels, about 5x the RMS error of a direct float32 sum (still
// within a third of the tests' float32 tolerance). Inf and NaN would spread to the whole tile
// (0 * Inf is NaN), so conv2d.cpp uses this only on finite inputs and weights.
// Tested by tests/test_conv2d.py (every ISA, with and without it) against torch.
#pragma once

#include <cstdint>

#include "gemm.h"
#include "parallel.h"

namespace fastlayers::cpu {

// The layouts, for an OH x OW output plane. Tiles (ty, tx) cover outputs [2ty, 2ty + 2) x
// [2tx, 2tx + 2) and read the padded input's rows [2ty, 2ty + n) and columns [2tx, 2tx + n).
//  - quads: per channel, 4 planes of Sq elements: plane (a, b) holds the padded input's pixels
//    (2i + a, 2j + b) at i * Wq + j, zeros elsewhere. Element (r, s) of tile t = ty * Wq + tx's
//    window is then at plane (r % 2, s % 2), offset t + (r / 2) * Wq + s / 2: for every (r, s),
//    consecutive tiles of a row are consecutive elements.
//  - V: n^2 blocks of [channels][Sv], winograd_v_stride apart; tile t = ty * Wq + tx (tx < TW
//    are the real ones).
//  - M: per xi, panels of NR output channels, each [Mplane][NR], tile t = ty * TW + tx.
struct WinogradTiles {
  int64_t K = 0;           // the kernel's size, 3 or 5
  int64_t points = 0;      // (K + 1)^2: the GEMMs per image
  int64_t OH = 0, OW = 0;
  int64_t TH = 0, TW = 0;  // ceil(OH / 2), ceil(OW / 2)
  int64_t Wq = 0;          // TW + K / 2: holds a padded row's OW + K - 1 pixels in its two halves
  int64_t Sv = 0;          // TH * Wq, rounded up to a whole number of the widest vectors
  int64_t Sq = 0;          // Sv + (K / 2) * (Wq + 1): every window read of every computed tile
  int64_t Mplane = 0;      // TH * TW
};

// Whether winograd_tiles takes kernels of size K.
inline bool winograd_kernel_size(int64_t K) { return K == 3 || K == 5; }

WinogradTiles winograd_tiles(int64_t K, int64_t OH, int64_t OW);

// Where padded-image pixel (r, c) lies in its channel's quad planes.
inline int64_t winograd_quad_offset(const WinogradTiles& g, int64_t r, int64_t c) {
  return ((r & 1) * 2 + (c & 1)) * g.Sq + (r >> 1) * g.Wq + (c >> 1);
}

// The distance between V's n^2 blocks: a cache line more than channels * Sv, so that the input
// transform's n^2 store streams do not all fall into one L1 set (channels * Sv is often a
// multiple of 4 KiB).
inline int64_t winograd_v_stride(const WinogradTiles& g, int64_t channels) {
  return channels * g.Sv + 16;
}

// The (K + 1)^2 x K^2 matrix G (x) G, row-major: U[xi] = sum_k kron[xi * K^2 + k] * w[k]
// transforms a K x K kernel w.
template <typename T>
const T* winograd_weight_transform(int64_t K);

// One image (or group) of the conv: V from quads (`channels` input channels), the g.points
// products with weights[xi] (U[xi], [out_channels, channels], packed by the caller for
// weights[0].isa), then y[out_channels][OH][OW] + bias[oc] (may be null), ReLU if relu.
// a_off[c] = c * g.Sv.
// Scratch, sized by winograd_scratch: V, M, S.
template <typename T>
void winograd_image(const WinogradTiles& g, int64_t channels, int64_t out_channels,
                    const T* quads, const WindowWeights<T>* weights, const int64_t* a_off, T* V,
                    T* M, T* S, const T* bias, bool relu, T* y);

// One input plane x[H][width] (0 where mask <= 0, if mask is given) into its channel's quad
// planes `out`, zeroed beforehand, for an input padded by pad_top rows and pad_left columns; with
// isa's vectors.
template <typename T>
void winograd_fill_quads(Isa isa, const WinogradTiles& g, int64_t H, int64_t width,
                         int64_t pad_top, int64_t pad_left, const T* x, const T* mask, T* out);

// Elements of V, M and S for winograd_image, with panels of nr channels (weights[0].NR).
struct WinogradScratch {
  int64_t v, m, s;
};
WinogradScratch winograd_scratch(const WinogradTiles& g, int64_t channels, int64_t out_channels,
                                 int64_t nr);

}  // namespace fastlayers::cpu
