// conv2d's three passes as implicit GEMMs, one GEMM per (image, group) batch entry, or per group
// when the sum runs over images. With Cg = C / groups, OCg = OC / groups, CKK = Cg * KH * KW:
//
//   forward      y[n, g*OCg + oc, q] = sum_k w_g[oc, k] * cols[k, q]
//                M = OCg, N = OH*OW, K = CKK
//   grad_weight  gw[g*OCg + oc, k] = sum_nq gy[n, g*OCg + oc, q] * cols_n[k, q]
//                M = OCg, N = CKK, K = N*OH*OW
//   grad_input   gx[n, g*Cg + c, h, w] = sum over oc, kh, kw of
//                  w[g*OCg + oc, c, kh, kw] * gy[n, g*OCg + oc, oh, ow]
//                M = Cg, N = H*W, K = OCg*KH*KW
//                where oh * stride_h = h + pad_top - kh * dilation_h (and likewise ow), when that
//                divides exactly and 0 <= oh < OH (the transposed convolution, gathered: each
//                gx element is one thread's sum, so there is no col2im scatter and no atomic).
//
// cols is the im2col matrix of one image and group, read on the fly (ConvGeometry::im2col_offset):
//   k = (c * KH + kh) * KW + kw,  q = oh * OW + ow,
//   cols[k, q] = x[c, ih, iw] with ih = oh * stride_h - pad_top + kh * dilation_h,
//                                  iw = ow * stride_w - pad_left + kw * dilation_w,
//   and 0 outside 0 <= ih < H, 0 <= iw < W (the padding; the bottom/right padding is implied by
//   OH and OW).
// The same formulas as csrc/kernels/cpu/gemm.h (Im2col) and conv2d.cpp (col2im).
//
// The backward passes read gy through a gradient source: gy itself, masked by a fused ReLU's
// output, or for conv2d_relu_max_pool2d's gradients the pooled gradient through the pool's
// windows (PooledGradient), so that the activation gradient is never written.
//
// A thin layer (at most 8 input channels per group, as the documents' first layers) runs its
// forward in a direct convolution instead (conv2d_thin_kernel below), with the GEMM's sums in
// the GEMM's order, and its grad_weight in a direct kernel that splits the sum over pixels
// finer than the GEMM's split-K (conv2d_thin_grad_weight_kernel, conv2d_grad_weight.cu).
//
// This header holds what the passes share, in namespace conv; each pass is its own translation
// unit (conv2d_forward.cu, conv2d_grad_input.cu, conv2d_grad_weight.cu), so that they compile in
// parallel: their kernels, over four types, take minutes in one.
//
// In float16 and bfloat16, and in float where TF32 is allowed (GemmContext::tf32), the GEMM runs
// on tensor cores (gemm.cuh), which gathers the operands below a pack of 16 bytes at a time. The
// forward's filters are a strided operand, read in packs: where CKK is no multiple of a pack (or
// the filters are not 16-byte aligned) the forward runs in the SIMT tiles. The thin kernels stay
// in float.
//
// The operands split k, q and i into their parts on every load. Where every numerator is below
// 2^31 (CKK, OCg * KH * KW, N * OH * OW, H * W, H + pad_top and W + pad_left) and every divisor
// is too, they divide with FastDivmod (common.cuh), a multiply-high and a shift; else with 64-bit
// division, which the GPU runs as a subroutine of about 70 instructions.
#pragma once

#include <algorithm>
#include <type_traits>

#include <cuda/std/limits>

#include "conv2d.h"
#include "gemm.cuh"
#include "max_pool2d.h"

namespace fastlayers::cuda {
namespace conv {

// A conv's sizes with the per-group ones derived once on the host, and its divisors.
struct ConvGeometry {
  Conv2dParams p;
  int64_t Cg, OCg, KHKW, CKK, HW, OHW;
  Divisor khkw, kw, ow, ohw, w, stride_h, stride_w;
  // Every divisor fits FastDivmod and every numerator the operands divide (k, q and i of each
  // pass, h + pad_top, w + pad_left) is below 2^31, so the 32-bit divisions serve.
  bool narrow;

  ConvGeometry(const Conv2dParams& params, bool wide_index)
      : p(params),
        Cg(params.C / params.groups),
        OCg(params.OC / params.groups),
        KHKW(params.KH * params.KW),
        CKK(params.C / params.groups * params.KH * params.KW),
        HW(params.H * params.W),
        OHW(params.OH * params.OW),
        khkw(KHKW),
        kw(params.KW),
        ow(params.OW),
        ohw(OHW),
        w(params.W),
        stride_h(params.stride_h),
        stride_w(params.stride_w) {
    const int64_t largest = std::max({CKK, OCg * KHKW, params.N * OHW, HW,
                                      params.H + params.pad_top, params.W + params.pad_left});
    const bool divisors_fit = khkw.fits && kw.fits && ow.fits && ohw.fits && w.fits &&
                              stride_h.fits && stride_w.fits;
    narrow = !wide_index && divisors_fit && largest < kNarrowLimit;
  }

  // Offset of cols[k, q] in one image's group of Cg planes, or -1 where it lies in the padding;
  // q = oh * OW + ow.
  template <bool kNarrow>
  __device__ int64_t im2col_offset(int64_t k, int64_t oh, int64_t ow_) const {
    int64_t c, r, kh, kw_;
    divmod<kNarrow>(k, khkw, c, r);
    divmod<kNarrow>(r, kw, kh, kw_);
    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
    const int64_t iw = ow_ * p.stride_w - p.pad_left + kw_ * p.dilation_w;
    if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) return -1;
    return (c * p.H + ih) * p.W + iw;
  }
  template <bool kNarrow>
  __device__ int64_t im2col_offset(int64_t k, int64_t q) const {
    int64_t oh, ow_;
    divmod<kNarrow>(q, ow, oh, ow_);
    return im2col_offset<kNarrow>(k, oh, ow_);
  }
};

// --- the output gradient, as the backward passes read it ------------------------------------
//
// A gradient source: a copyable struct with
//   Source from_plane(int64_t plane) const  // the same gradient from plane `plane` on
//   acc_t<T> operator()(int64_t plane, int64_t oh, int64_t ow) const
//   acc_t<T> operator()(int64_t plane, int64_t q) const  // q = oh * OW + ow
// giving element (oh, ow) of the conv's output gradient in plane n * OC + oc.

// gy itself, [N, OC, OH, OW], read as 0 wherever mask (a fused ReLU's output, or null) is <= 0.
template <typename T>
struct DenseGradient {
  const T* gy;
  const T* mask;
  int64_t OW, OHW;
  __device__ DenseGradient from_plane(int64_t plane) const {
    const int64_t offset = plane * OHW;
    return {gy + offset, mask != nullptr ? mask + offset : nullptr, OW, OHW};
  }
  __device__ acc_t<T> operator()(int64_t plane, int64_t q) const {
    return masked(gy, mask, plane * OHW + q);
  }
  __device__ acc_t<T> operator()(int64_t plane, int64_t oh, int64_t ow) const {
    return (*this)(plane, oh * OW + ow);
  }
};

// The activation gradient of conv2d_relu_max_pool2d, read from its pooled gradient gy through the
// pool's windows, so that it is never written: what max_pool2d_backward (max_pool2d.h) would
// store from gy, the indices and the mask (the pooled output, or null), for a pool whose windows
// are apart (pool_windows_apart, conv2d.h). Activation element (h, w) then lies in at most one
// window: ph = (h + pad_h) / stride_h, and only where ph < POH and the remainder, its offset in
// the window, is a tap (at most (kernel_h - 1) * dilation_h, and a multiple of dilation_h);
// likewise pw. Its gradient is that window's masked gy where the window's index is (h, w), else 0.
template <typename T, bool kNarrow>
struct PooledGradient {
  const T* gy;
  const int64_t* indices;
  const T* mask;
  int64_t pooled_h, pooled_w;            // POH x POW
  int64_t pad_h, pad_w, span_h, span_w;   // span: a window's last tap, (kernel - 1) * dilation
  Divisor stride_h, stride_w, dilation_h, dilation_w;
  Divisor width;                          // the activation's, OW
  bool numerators_fit;

  PooledGradient(const T* gy_, const int64_t* indices_, const T* mask_, const Pool2dParams& p)
      : gy(gy_), indices(indices_), mask(mask_), pooled_h(p.OH), pooled_w(p.OW), pad_h(p.pad_h),
        pad_w(p.pad_w), span_h((p.kernel_h - 1) * p.dilation_h),
        span_w((p.kernel_w - 1) * p.dilation_w), stride_h(p.stride_h), stride_w(p.stride_w),
        dilation_h(p.dilation_h), dilation_w(p.dilation_w), width(p.W),
        numerators_fit(std::max({p.H + p.pad_h, p.W + p.pad_w, p.H * p.W}) < kNarrowLimit) {}

  // The divisors fit FastDivmod and every numerator (h + pad_h, w + pad_w, q) is below 2^31.
  bool narrow() const {
    return stride_h.fits && stride_w.fits && dilation_h.fits && dilation_w.fits && width.fits &&
           numerators_fit;
  }

  __device__ PooledGradient from_plane(int64_t plane) const {
    PooledGradient shifted = *this;
    const int64_t offset = plane * pooled_h * pooled_w;
    shifted.gy += offset;
    shifted.indices += offset;
    if (mask != nullptr) shifted.mask += offset;
    return shifted;
  }
  __device__ acc_t<T> operator()(int64_t plane, int64_t h, int64_t w) const {
    int64_t ph, rh, pw, rw;
    divmod<kNarrow>(h + pad_h, stride_h, ph, rh);
    divmod<kNarrow>(w + pad_w, stride_w, pw, rw);
    if (ph >= pooled_h || pw >= pooled_w || rh > span_h || rw > span_w ||
        !is_multiple<kNarrow>(rh, dilation_h) || !is_multiple<kNarrow>(rw, dilation_w)) {
      return acc_t<T>(0);
    }
    const int64_t o = (plane * pooled_h + ph) * pooled_w + pw;
    if (indices[o] != h * width.value + w) return acc_t<T>(0);
    return masked(gy, mask, o);
  }
  __device__ acc_t<T> operator()(int64_t plane, int64_t q) const {
    int64_t h, w;
    divmod<kNarrow>(q, width, h, w);
    return (*this)(plane, h, w);
  }
};

// forward B: cols[k, q] of batch entry z = n * groups + g.
template <typename T, bool kNarrow>
struct Im2colOperand {
  static constexpr bool kContiguousK = false;  // neighbouring q are neighbouring pixels
  const T* x;
  ConvGeometry g;
  struct View {
    const T* x;  // image n, first channel of group g
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t q) const {
      const int64_t offset = g.im2col_offset<kNarrow>(k, q);
      return offset < 0 ? acc_t<T>(0) : to_acc(x[offset]);
    }
  };
  __device__ View at(int64_t z) const {
    const BatchOffset batch{g.p.groups, g.p.C * g.HW, g.Cg * g.HW};
    return {x + batch(z), g};
  }
};

// grad_weight A: (oc, k) with k = n * OH*OW + q reads the output gradient (n, g*OCg + oc, q);
// z = g.
template <typename T, bool kNarrow, typename Gradient>
struct GradOutputRowsOperand {
  static constexpr bool kContiguousK = true;  // k runs along an image's pixels
  Gradient gy;
  ConvGeometry g;
  struct View {
    Gradient gy;  // from group g's first channel of image 0
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t oc, int64_t k) const {
      int64_t n, q;
      divmod<kNarrow>(k, g.ohw, n, q);
      return gy(n * g.p.OC + oc, q);
    }
  };
  __device__ View at(int64_t z) const { return {gy.from_plane(z * g.OCg), g}; }
};

// grad_weight B: (k, j) with k = n * OH*OW + q is cols_n[j, q] (the transposed im2col of image
// n); z = g.
template <typename T, bool kNarrow>
struct Im2colTransposedOperand {
  static constexpr bool kContiguousK = true;  // k runs along an image's pixels
  const T* x;
  ConvGeometry g;
  struct View {
    const T* x;  // group g's first channel of image 0
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t j) const {
      int64_t n, q;
      divmod<kNarrow>(k, g.ohw, n, q);
      const int64_t offset = g.im2col_offset<kNarrow>(j, q);
      return offset < 0 ? acc_t<T>(0) : to_acc(x[n * g.p.C * g.HW + offset]);
    }
  };
  __device__ View at(int64_t z) const { return {x + z * g.Cg * g.HW, g}; }
};

// grad_input A: (c, k) with k = oc * KH*KW + r (r = kh * KW + kw) reads w[g*OCg + oc, c, kh, kw];
// z = n * groups + g.
template <typename T, bool kNarrow>
struct TransposedWeightOperand {
  static constexpr bool kContiguousK = true;  // k runs along a filter's taps
  const T* w;
  ConvGeometry g;
  struct View {
    const T* w;  // group g's first filter
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t c, int64_t k) const {
      int64_t oc, r;
      divmod<kNarrow>(k, g.khkw, oc, r);
      return to_acc(w[oc * g.CKK + c * g.KHKW + r]);
    }
  };
  __device__ View at(int64_t z) const { return {w + (z % g.p.groups) * g.OCg * g.CKK, g}; }
};

// grad_input B: (k, i) with k = oc * KH*KW + kh * KW + kw and i = h * W + w reads the output
// gradient (n, g*OCg + oc, oh, ow) for the output pixel whose window puts tap (kh, kw) on input
// pixel (h, w), or 0 where there is none; z = n * groups + g.
template <typename T, bool kNarrow, typename Gradient>
struct GradOutputGatherOperand {
  static constexpr bool kContiguousK = false;  // neighbouring i are neighbouring pixels
  Gradient gy;
  ConvGeometry g;
  struct View {
    Gradient gy;  // from image n, group g's first channel
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t i) const {
      const Conv2dParams& p = g.p;
      int64_t oc, r, kh, kw, h, w;
      divmod<kNarrow>(k, g.khkw, oc, r);
      divmod<kNarrow>(r, g.kw, kh, kw);
      divmod<kNarrow>(i, g.w, h, w);
      // ih = oh * stride_h - pad_top + kh * dilation_h solved for oh (and likewise ow).
      const int64_t th = h + p.pad_top - kh * p.dilation_h;
      const int64_t tw = w + p.pad_left - kw * p.dilation_w;
      if (th < 0 || tw < 0) return acc_t<T>(0);
      int64_t oh, ow, rest_h, rest_w;
      divmod<kNarrow>(th, g.stride_h, oh, rest_h);
      divmod<kNarrow>(tw, g.stride_w, ow, rest_w);
      if (rest_h != 0 || rest_w != 0 || oh >= p.OH || ow >= p.OW) return acc_t<T>(0);
      return gy(oc, oh, ow);
    }
  };
  __device__ View at(int64_t z) const {
    const BatchOffset first_plane{g.p.groups, g.p.OC, g.OCg};
    return {gy.from_plane(first_plane(z)), g};
  }
};

// --- conv2d_relu_max_pool2d ------------------------------------------------------------------
//
// A pool whose windows have 4 taps (2 x 2, 1 x 4 or 4 x 1) and do not overlap, as in the
// documents' models, runs in the forward GEMM itself: its columns are the windows' taps,
//   n = window * 4 + t,  window = ph * POW + pw,  t = th * pool_kernel_w + tw,
// so a window's 4 columns are one of a thread's groups of 4, and the epilogue (kGroup 4) adds the
// bias, applies the ReLU, rounds to T (the value conv2d_relu would store) and keeps the window's
// maximum and its index, with max_pool2d's walk (max_pool2d.cu). M = OCg, N = 4 * POH * POW,
// K = CKK per (image, group) entry; the activation is never written, and no tap is computed
// twice. Taps outside the activation (the pool's padding, ceil_mode's last windows) compute 0,
// which the epilogue skips. Other pools run composed: conv2d_relu into scratch, then max_pool2d.

// The windows of a pool over the activation (the pool's H x W; its OH x OW is the pooled
// output): window w's tap t lies at (ph * stride_h - pad_h + th * dilation_h, likewise w).
struct PoolWindows {
  Pool2dParams p;
  Divisor pooled_w;  // POW
  int tap_shift;     // log2(kernel_w), so th = t >> tap_shift and tw = t & (kernel_w - 1)

  // The top-left tap of window w (which may lie in the padding).
  template <bool kNarrow>
  __device__ void origin(int64_t window, int64_t& h, int64_t& w) const {
    int64_t ph, pw;
    divmod<kNarrow>(window, pooled_w, ph, pw);
    h = ph * p.stride_h - p.pad_h;
    w = pw * p.stride_w - p.pad_w;
  }
  __device__ int64_t tap_h(int t) const { return (t >> tap_shift) * p.dilation_h; }
  __device__ int64_t tap_w(int t) const { return (t & ((1 << tap_shift) - 1)) * p.dilation_w; }
  __device__ bool inside(int64_t h, int64_t w) const {
    return h >= 0 && h < p.H && w >= 0 && w < p.W;
  }
};

// forward B of the fused layer: cols[k, q] of the activation pixel q under tap n % 4 of window
// n / 4, or 0 for a tap outside the activation; z = image * groups + group.
template <typename T, bool kNarrow>
struct PooledIm2colOperand {
  static constexpr bool kContiguousK = false;  // a window's taps are mostly neighbours
  const T* x;
  ConvGeometry g;
  PoolWindows windows;
  struct View {
    const T* x;  // image n, first channel of group g
    ConvGeometry g;
    PoolWindows windows;
    __device__ acc_t<T> operator()(int64_t k, int64_t n) const {
      int64_t h, w;
      windows.origin<kNarrow>(n >> 2, h, w);
      const int t = static_cast<int>(n & 3);
      h += windows.tap_h(t);
      w += windows.tap_w(t);
      if (!windows.inside(h, w)) return acc_t<T>(0);
      const int64_t offset = g.im2col_offset<kNarrow>(k, h, w);
      return offset < 0 ? acc_t<T>(0) : to_acc(x[offset]);
    }
  };
  __device__ View at(int64_t z) const {
    const BatchOffset batch{g.p.groups, g.p.C * g.HW, g.Cg * g.HW};
    return {x + batch(z), g, windows};
  }
};

// The fused layer's epilogue: the 4 sums of window n / 4 of filter m go through conv2d_relu's
// epilogue (bias, ReLU, rounding to T), and their maximum and its activation index are stored
// at [image, group * OCg + m, window] of the pooled output and the indices.
template <typename T, bool kNarrow>
struct PoolEpilogue {
  static constexpr int kGroup = 4;
  T* out;
  int64_t* indices;
  BatchOffset batch;  // of an entry's pooled planes, in out and indices alike
  const T* bias;      // or null
  int64_t bias_group_stride;
  PoolWindows windows;

  struct View {
    T* out;
    int64_t* indices;
    const T* bias;
    PoolWindows windows;
    __device__ void store(int64_t m, int64_t n, const acc_t<T>* v) const {
      using A = acc_t<T>;
      const Pool2dParams& p = windows.p;
      const int64_t window = n >> 2;
      int64_t h0, w0;
      windows.origin<kNarrow>(window, h0, w0);
      // max_pool2d's index starts at the window's first tap past the padding.
      int64_t first_h = h0, first_w = w0;
      while (first_h < 0) first_h += p.dilation_h;
      while (first_w < 0) first_w += p.dilation_w;
      int64_t best_index = first_h * p.W + first_w;
      A best = -::cuda::std::numeric_limits<A>::infinity();
      const A b = bias != nullptr ? to_acc(bias[m]) : A(0);
#pragma unroll
      for (int t = 0; t < kGroup; ++t) {
        const int64_t h = h0 + windows.tap_h(t), w = w0 + windows.tap_w(t);
        if (!windows.inside(h, w)) continue;
        A x = v[t];
        if (bias != nullptr) x += b;  // as Epilogue: adding 0.0 would turn -0.0 into +0.0
        x = to_acc(from_acc<T>(relu_value(x)));
        if (x > best || x != x) {
          best = x;
          best_index = h * p.W + w;
        }
      }
      const int64_t o = m * (p.OH * p.OW) + window;
      out[o] = from_acc<T>(best);  // exact: best is -inf or a value of T
      indices[o] = best_index;
    }
  };
  __device__ View at(int64_t z) const {
    const int64_t offset = batch(z);
    const T* b = bias != nullptr ? bias + (z % batch.groups) * bias_group_stride : nullptr;
    return {out + offset, indices + offset, b, windows};
  }
};

// forward A: the filters w_g, [OCg, CKK] row-major, at group g's (z = n * groups + g).
template <typename T>
StridedOperand<T, true> filters_operand(const T* w, const ConvGeometry& g) {
  return {w, nullptr, BatchOffset{g.p.groups, 0, g.OCg * g.CKK}, g.CKK, 1};
}

// --- thin layers: direct convolution -----------------------------------------------------------
//
// A layer with few input channels per group (the documents' first layers have 1, 3 or 6) is a
// GEMM of short K (CKK = 25 to 150) and few rows (OCg = 6 to 32): the GEMM's 64-row tile is
// mostly padding, and its B operand splits k and q into their parts for each element it loads,
// which then feeds only OCg products. The thin kernel instead stages in shared memory, once per
// block, the input rows that its output pixels read (zero-padded, so the loop tests no bounds)
// and the filters of up to 32 output channels. Each thread then sums kPixels = 4 output pixels
// times kChannels = 8 channels in registers, stepping through the staged input by (c, kh, kw),
// with no division in the loop: a tap's 4 input values and 8 weights (two 16-byte broadcasts)
// feed 32 FMAs.
//
// A small layer gives few blocks of few threads, each walking all Cg * KH * KW taps, which would
// leave most of the GPU idle: the plan then takes smaller tiles of pixels, splits the input
// channels into slices, each summed by its own threads over the same staged input, and gives a
// block fewer output channels; the slices' sums are added in slice order at the end (through
// shared memory, kExchanged at a time).
//
// With one slice the sums run over k = (c * KH + kh) * KW + kw in order with fma from 0, as the
// GEMM's do where it does not split K: the results are the GEMM path's, bit for bit, but for
// the sign of a sum of zero (the GEMM adds 0 * 0 for the k that pad its last step, which turns
// a -0.0 from products that underflow into +0.0; here it stays -0.0). The epilogues are the
// GEMM's (Epilogue for conv2d_forward, PoolEpilogue for the fused layer), handed the same
// columns of the GEMM's N: a thread's 4 pixels are 4 columns.
//
// conv2d_grad_input of a thin layer with stride 1 runs the same kernel as the conv that it is:
// the output gradient (read through a gradient source) convolved with the filters transposed
// and flipped (transposed_conv below).

struct ThinTile {
  static constexpr int kPixels = 4;              // a thread's output pixels (GEMM columns)
  static constexpr int kChannels = 8;            // a thread's output channels
  static constexpr int kMaxChannelGroups = 4;    // so a block has at most 32 channels
  static constexpr int kMaxThreads = 256;
  static constexpr int kMaxChannelsIn = 8;       // C / groups of a thin layer
  // Static shared memory, 44 KiB of the 48 a block may have without opting in.
  static constexpr int kPatchBytes = 24 << 10, kFilterBytes = 20 << 10;
  // The plan splits a small layer's work, where that adds threads, until the launch has this
  // many threads per SM (4 warps per scheduler).
  static constexpr int kTargetThreadsPerSm = 512;
  // The slices exchange this many of their 32 sums at a time, through the staged input's memory.
  static constexpr int kExchanged = 8;
};

// Adds the sums acc of the block's `groups` groups of `width` threads (thread group * width + u)
// into the registers of group 0, in group order: kExchanged of acc's values a round, through
// `exchange`, kExchanged * kMaxThreads values of shared memory whose contents are no longer
// needed. Every thread of the block calls it; it begins and ends with a barrier (after it,
// `exchange` may be written again). Nothing to do for one group.
template <int kExchanged, int kMaxThreads, typename A, int R, int C>
__device__ __forceinline__ void add_groups_in_order(A (&acc)[R][C], A* exchange, int groups,
                                                    int width) {
  static_assert(R * C % kExchanged == 0, "whole rounds");
  if (groups <= 1) return;
  const int tid = static_cast<int>(threadIdx.x), group = tid / width, u = tid - group * width;
  __syncthreads();  // every thread is done with what `exchange` held
#pragma unroll
  for (int round = 0; round < R * C / kExchanged; ++round) {
    if (group > 0) {
#pragma unroll
      for (int e = 0; e < kExchanged; ++e) {
        const int v = round * kExchanged + e;
        exchange[e * kMaxThreads + tid] = acc[v / C][v % C];
      }
    }
    __syncthreads();
    if (group == 0) {
#pragma unroll
      for (int e = 0; e < kExchanged; ++e) {
        const int v = round * kExchanged + e;
        A sum = acc[v / C][v % C];
        const A* sums = exchange + e * kMaxThreads + u;
        for (int l = 1; l < groups; ++l) sum += sums[l * width];
        acc[v / C][v % C] = sum;
      }
    }
    __syncthreads();  // read before the next round overwrites it
  }
}

// Whether a layer is thin: few enough input channels per group for the thin kernels.
inline bool thin_layer(const ConvGeometry& g) { return g.Cg <= ThinTile::kMaxChannelsIn; }

// conv2d_forward's columns: output pixel q = oh * OW + ow. The threads of a tile take its
// columns in turn (thread t's pixel s is column first + s * threads + t), so that a warp's loads
// from the staged input and its stores of y are consecutive.
struct PixelColumns {
  static constexpr int kGroup = 1;  // the epilogue group its 4 columns form
  int64_t OH, OW;
  __device__ int64_t column(int64_t first, int threads, int t, int s) const {
    return first + s * threads + t;
  }
  // The output pixel of column n (every column has one).
  __device__ bool pixel(int64_t n, int64_t& oh, int64_t& ow) const {
    oh = n / OW;
    ow = n - oh * OW;
    return true;
  }
  // The first and last output rows of columns first .. last.
  __device__ void rows(int64_t first, int64_t last, int64_t& r0, int64_t& r1) const {
    r0 = first / OW;
    r1 = last / OW;
  }
  // The most output rows that `count` consecutive columns touch.
  int64_t max_rows(int64_t count) const { return std::min(OH, (count - 1) / OW + 2); }
};

// The fused layer's columns: tap t of pool window w is column w * 4 + t (PoolEpilogue's). Thread
// t of a tile takes the tile's window t, its 4 taps its 4 pixels: one epilogue group.
struct WindowColumns {
  static constexpr int kGroup = 4;
  PoolWindows windows;
  __device__ int64_t column(int64_t first, int, int t, int s) const { return first + 4 * t + s; }
  // The activation pixel of column n, and whether it lies in the activation (a tap in the pool's
  // padding computes nothing that the epilogue reads).
  __device__ bool pixel(int64_t n, int64_t& oh, int64_t& ow) const {
    windows.origin<false>(n >> 2, oh, ow);
    oh += windows.tap_h(static_cast<int>(n & 3));
    ow += windows.tap_w(static_cast<int>(n & 3));
    return windows.inside(oh, ow);
  }
  // The first and last activation rows that the windows of columns first .. last cover, clipped
  // to the activation (r1 < r0 where they lie wholly in the padding).
  __device__ void rows(int64_t first, int64_t last, int64_t& r0, int64_t& r1) const {
    const Pool2dParams& p = windows.p;
    r0 = max((first >> 2) / p.OW * p.stride_h - p.pad_h, int64_t{0});
    r1 = min((last >> 2) / p.OW * p.stride_h - p.pad_h + (p.kernel_h - 1) * p.dilation_h,
             p.H - 1);
  }
  int64_t max_rows(int64_t count) const {
    const Pool2dParams& p = windows.p;
    const int64_t pooled_rows = std::min(p.OH, (count / 4 - 1) / p.OW + 2);
    return std::min(p.H, (pooled_rows - 1) * p.stride_h + (p.kernel_h - 1) * p.dilation_h + 1);
  }
};

// What a thin kernel stages as its input, channel c's pixel (h, w) of an image's group, read only
// inside the image: the conv's input itself,
template <typename T>
struct ImageRows {
  const T* image;  // the group's first channel
  int64_t H, W;
  __device__ acc_t<T> operator()(int c, int64_t h, int64_t w) const {
    return to_acc(image[(c * H + h) * W + w]);
  }
};
// or an output gradient, through a gradient source.
template <typename Gradient>
struct GradientRows {
  Gradient gy;
  int64_t first_plane;  // the group's first channel: image * OC + group * OCg
  __device__ auto operator()(int c, int64_t h, int64_t w) const {
    return gy(first_plane + c, h, w);
  }
};

// The thin kernel's input policy: rows(g, z) gives batch entry z's staged rows (above).
template <typename T>
struct ImageInput {  // conv2d's input x [N, C, H, W]
  const T* x;
  __device__ ImageRows<T> rows(const ConvGeometry& g, int64_t z) const {
    const Conv2dParams& p = g.p;
    return {x + BatchOffset{p.groups, p.C * g.HW, g.Cg * g.HW}(z), p.H, p.W};
  }
};
template <typename Gradient>
struct GradientInput {  // an output gradient, the input of a transposed_conv
  Gradient gy;
  __device__ GradientRows<Gradient> rows(const ConvGeometry& g, int64_t z) const {
    const Conv2dParams& p = g.p;
    return {gy, BatchOffset{p.groups, p.C, g.Cg}(z)};
  }
};

// The thin kernel's filter policy: (g, group, oc, k) gives the weight of filter oc of the group
// at k = (c * KH + kh) * KW + kw, for the conv of geometry g: the layer's own filters,
template <typename T>
struct LayerFilters {
  const T* w;  // [OC, C / groups, KH, KW]
  __device__ acc_t<T> operator()(const ConvGeometry& g, int64_t group, int64_t oc,
                                 int64_t k) const {
    return to_acc(w[(group * g.OCg + oc) * g.CKK + k]);
  }
};
// or, for a transposed_conv g of a layer, that layer's filters w transposed and flipped: the
// transposed conv's filter c at (oc, kh, kw) is the layer's filter oc at (c, KH-1-kh, KW-1-kw).
template <typename T>
struct FlippedFilters {
  const T* w;  // the layer's, [C, OC / groups, KH, KW] in g's names
  __device__ acc_t<T> operator()(const ConvGeometry& g, int64_t group, int64_t c,
                                 int64_t k) const {
    const int64_t oc = k / g.KHKW, r = k - oc * g.KHKW;
    return to_acc(w[((group * g.Cg + oc) * g.OCg + c) * g.KHKW + (g.KHKW - 1 - r)]);
  }
};

// The conv whose output is conv2d_grad_input, for a layer of stride 1: its input is the layer's
// output gradient (C' = OC channels of OH x OW), its output the input gradient (OC' = C channels
// of H x W), its filters the layer's transposed and flipped (FlippedFilters), and its padding
// what makes input pixel h read output pixel h + pad_top - kh * dilation_h under tap kh (which
// may be negative: a padding larger than the window cuts the gradient's first rows away).
inline ConvGeometry transposed_conv(const ConvGeometry& g) {
  Conv2dParams t = g.p;
  t.C = g.p.OC, t.H = g.p.OH, t.W = g.p.OW;
  t.OC = g.p.C, t.OH = g.p.H, t.OW = g.p.W;
  t.pad_top = (g.p.KH - 1) * g.p.dilation_h - g.p.pad_top;
  t.pad_left = (g.p.KW - 1) * g.p.dilation_w - g.p.pad_left;
  return ConvGeometry(t, false);
}

// Whether conv2d_grad_input of a layer may run in the thin kernel: a thin layer of stride 1.
inline bool thin_grad_input(const ConvGeometry& g) {
  return thin_layer(g) && g.p.stride_h == 1 && g.p.stride_w == 1;
}

// A thin layer's launch: work item ((z * channel_tiles) + channel_tile) * column_tiles + tile
// computes channels [channel_tile * 8 * channel_groups, + 8 * channel_groups) of batch entry
// z = n * groups + group, at columns [tile * 4 * threads, + 4 * threads); with slices *
// channel_groups * threads threads: slice i sums input channels [i * slice_channels,
// + slice_channels) of Cg, its channel group j being its threads j * threads .. (j + 1) *
// threads - 1.
struct ThinShape {
  ConvGeometry g;
  int64_t batches, columns, column_tiles, channel_tiles;
  int64_t patch_width;  // the staged input's row: every input column an output row reads
  int threads, channel_groups, slices, slice_channels;
  int filter_ld;  // the staged filters' row: a tap's 8 * channel_groups channels, padded
  bool fits;  // the plan's staged input and filters fit the kernel's shared memory
  __host__ __device__ int64_t work() const { return batches * channel_tiles * column_tiles; }
  int block() const { return slices * channel_groups * threads; }
};

// The input rows that a thin kernel stages for a tile of at most output_rows output rows: rows
// of `width` values (every input column that output rows read, padding included), `rows` of
// them a channel (the rows their windows cover); false where the Cg channels of them do not fit
// ThinTile::kPatchBytes of A.
template <typename A>
bool fit_staged_input(const ConvGeometry& g, int64_t output_rows, int64_t& width,
                      int64_t& rows) {
  const Conv2dParams& p = g.p;
  const int64_t capacity = ThinTile::kPatchBytes / sizeof(A);
  width = (p.OW - 1) * p.stride_w + (p.KW - 1) * p.dilation_w + 1;
  const int64_t window_rows = (p.KH - 1) * p.dilation_h + 1;
  if (width > capacity || window_rows > capacity || output_rows > capacity) return false;
  rows = (output_rows - 1) * p.stride_h + window_rows;
  return rows <= capacity && g.Cg * rows * width <= capacity;
}

// Stages the Cg channels of input rows top .. top + rows - 1 (of the conv's input, H x W),
// columns -pad_left .. width - 1 - pad_left, read through `read` (ImageRows, GradientRows) as
// accumulation values, 0 outside the input: channel c's row r at patch[c * plane + r * width].
// The block's threads share the work along the rows, so that a warp's loads are consecutive.
template <typename A, typename Read>
__device__ void stage_input(A* patch, int plane, const Conv2dParams& p, int Cg, int64_t top,
                            int rows, int width, const Read& read) {
  const int size = rows * width;
  for (int e = static_cast<int>(threadIdx.x); e < Cg * size; e += blockDim.x) {
    const int c = e / size, rc = e - c * size;
    const int r = rc / width, col = rc - r * width;
    const int64_t ih = top + r, iw = col - p.pad_left;
    const bool inside = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
    patch[c * plane + rc] = inside ? A(read(c, ih, iw)) : A(0);
  }
}

// Stages `rows` rows of `channels` values (a multiple of 16 bytes) into dst, row r at dst[r *
// ld]: value(j, r) for channel j < valid, 0 for the rest. A thread stages a 16-byte pack of
// channels of one row with one store, consecutive threads consecutive rows: a warp reads along
// the rows, and an ld of an odd number of packs puts its stores in distinct banks.
template <typename A, typename Value>
__device__ __forceinline__ void stage_packs(A* dst, int rows, int channels, int ld,
                                            int64_t valid, const Value& value) {
  constexpr int kPack = Pack<A>::kSize;
  for (int e = static_cast<int>(threadIdx.x); e < rows * (channels / kPack); e += blockDim.x) {
    const int r = e % rows, j = e / rows * kPack;
    Pack<A> pack;
#pragma unroll
    for (int q = 0; q < kPack; ++q) pack.v[q] = j + q < valid ? value(j + q, r) : A(0);
    *reinterpret_cast<Pack<A>*>(&dst[r * ld + j]) = pack;
  }
}

// The thin kernel's plan for a conv of geometry g with `columns` columns read through cols, in
// accumulation type A, on sm_count SMs; fits is false where its filters, or the input rows of a
// tile of 32 threads, do not fit its shared memory. (Whether a layer is thin enough to be worth
// it is the caller's: thin_layer.) Tiles of up to 256 threads' pixels; a small layer's tiles and
// slices then spread it over kTargetThreadsPerSm threads an SM where its size allows.
template <typename A, typename Columns>
ThinShape plan_thin(const ConvGeometry& g, const Columns& cols, int64_t columns, int sm_count) {
  using Tile = ThinTile;
  const Conv2dParams& p = g.p;
  ThinShape s{g, p.N * p.groups, columns, 0, 0, 0, 0, 0, 0, 0, 0, false};
  if (columns == 0 || g.OCg == 0 || g.Cg == 0) return s;
  const int64_t filter_capacity = Tile::kFilterBytes / sizeof(A);
  int groups = g.OCg <= 8 ? 1 : g.OCg <= 16 ? 2 : Tile::kMaxChannelGroups;
  while (groups > 1 && g.CKK * Tile::kChannels * groups > filter_capacity) groups /= 2;
  if (g.CKK * Tile::kChannels * groups > filter_capacity) return s;
  const int64_t per_thread = Tile::kPixels;
  // Halves a tile's threads, to multiples of 32; false at 32.
  const auto halve = [](int& threads) {
    if (threads <= 32) return false;
    threads = std::max(32, (threads / 2 + 31) / 32 * 32);
    return true;
  };
  int threads = static_cast<int>(
      std::min<int64_t>(Tile::kMaxThreads / groups,
                        ceil_div(ceil_div(columns, per_thread), 32) * 32));
  // The largest tile whose input rows fit,
  int64_t rows;
  while (!fit_staged_input<A>(g, cols.max_rows(per_thread * threads), s.patch_width, rows)) {
    if (!halve(threads)) return s;
  }
  // then as many slices as help reach the target and the block's threads allow, smaller tiles
  // while the launch is short of the target and they add threads, and then, likewise, fewer
  // channel groups a block (more blocks, with room for more slices).
  const int64_t target = int64_t{Tile::kTargetThreadsPerSm} * std::max(sm_count, 1);
  // The threads launched with tiles of `tile` threads and `groups` channel groups a block, and
  // their slices: whole channels each, as evenly split as the block's threads allow (3 channels
  // in 3 slices rather than 2 + 1 where 3 fit).
  const auto spread = [&](int tile, int groups, int& slices) {
    const int64_t tiles = s.batches * ceil_div(g.OCg, Tile::kChannels * groups) *
                          ceil_div(columns, per_thread * tile);
    const int64_t tile_threads = std::max<int64_t>(1, tiles * groups * tile);
    const int64_t most = std::min<int64_t>(g.Cg, Tile::kMaxThreads / (groups * tile));
    const int64_t wanted = std::min(most, std::max<int64_t>(1, ceil_div(target, tile_threads)));
    int64_t per_slice = std::max<int64_t>(1, g.Cg / wanted);
    if (ceil_div(g.Cg, per_slice) > most) per_slice = ceil_div(g.Cg, wanted);
    slices = static_cast<int>(ceil_div(g.Cg, per_slice));
    return tile_threads * slices;
  };
  int slices;
  int64_t launched = spread(threads, groups, slices);
  for (int smaller = threads; launched < target && halve(smaller);) {
    int more;
    const int64_t more_threads = spread(smaller, groups, more);
    if (more_threads <= launched) break;
    threads = smaller, slices = more, launched = more_threads;
  }
  while (launched < target && groups > 1) {
    int more;
    const int64_t more_threads = spread(threads, groups / 2, more);
    if (more_threads <= launched) break;
    groups /= 2, slices = more, launched = more_threads;
  }
  s.slice_channels = static_cast<int>(ceil_div(g.Cg, slices));
  s.slices = static_cast<int>(ceil_div(g.Cg, s.slice_channels));
  s.threads = threads;
  s.channel_groups = groups;
  // 16 bytes of padding, where they fit, put the 16-byte stores of the filters' staging (a
  // warp's, to consecutive taps) in distinct banks.
  const int block_channels = Tile::kChannels * groups;
  const int padded = block_channels + Pack<A>::kSize;
  s.filter_ld = g.CKK * padded <= filter_capacity ? padded : block_channels;
  s.column_tiles = ceil_div(columns, per_thread * threads);
  s.channel_tiles = ceil_div(g.OCg, block_channels);
  s.fits = true;
  return s;
}

template <typename T, typename Input, typename Filters, typename Columns, typename Ep>
__global__ void __launch_bounds__(ThinTile::kMaxThreads)
    conv2d_thin_kernel(ThinShape s, Input input, Filters weights, Columns cols, Ep ep) {
  using A = acc_t<T>;
  using Tile = ThinTile;
  constexpr int kPixels = Tile::kPixels, kChannels = Tile::kChannels;
  static_assert(kChannels % Pack<A>::kSize == 0, "a thread's channels are whole 16-byte packs");
  static_assert(Ep::kGroup == Columns::kGroup && kPixels % Columns::kGroup == 0,
                "a thread's columns form whole epilogue groups");
  static_assert(Tile::kExchanged * Tile::kMaxThreads * sizeof(A) <= Tile::kPatchBytes,
                "the slices' exchange fits in the staged input's memory");
  __shared__ __align__(16) A patch[Tile::kPatchBytes / sizeof(A)];
  __shared__ __align__(16) A filters[Tile::kFilterBytes / sizeof(A)];
  const ConvGeometry& g = s.g;
  const Conv2dParams& p = g.p;
  const int tid = static_cast<int>(threadIdx.x);
  const int slice_threads = s.channel_groups * s.threads;
  const int slice = tid / slice_threads, u = tid % slice_threads;
  const int channel_group = u / s.threads, t = u % s.threads;
  const int block_channels = kChannels * s.channel_groups;
  const int64_t tile_columns = int64_t{kPixels} * s.threads;
  // Sizes in int: a plan that fits keeps every offset into the staged input and filters small.
  const int Cg = static_cast<int>(g.Cg), KH = static_cast<int>(p.KH), KW = static_cast<int>(p.KW);
  const int CKK = static_cast<int>(g.CKK);
  const int dilation_h = static_cast<int>(p.dilation_h);
  const int dilation_w = static_cast<int>(p.dilation_w);
  const int width = static_cast<int>(s.patch_width);
  const int c_begin = slice * s.slice_channels, c_end = min(Cg, c_begin + s.slice_channels);

  for (int64_t item = blockIdx.x; item < s.work(); item += gridDim.x) {
    const int64_t tile = item % s.column_tiles, rest = item / s.column_tiles;
    const int64_t channel_tile = rest % s.channel_tiles, z = rest / s.channel_tiles;
    const int64_t first = tile * tile_columns;
    const int64_t last = min(first + tile_columns, s.columns) - 1;

    // The input rows that the tile's output rows r0 .. r1 read, every column, zero-padded: row r
    // of the staged plane is input row r0 * stride_h - pad_top + r, column c is input column
    // c - pad_left.
    int64_t r0, r1;
    cols.rows(first, last, r0, r1);
    const int rows =
        static_cast<int>(max(r1 - r0, int64_t{0}) * p.stride_h + (KH - 1) * dilation_h + 1);
    const int plane = rows * width;
    stage_input(patch, plane, p, Cg, r0 * p.stride_h - p.pad_top, rows, width,
                input.rows(g, z));
    // The block's filters, [CKK][filter_ld]: a tap's channels side by side, read along the taps.
    const int64_t oc0 = channel_tile * block_channels, group = z % p.groups;
    stage_packs(filters, CKK, block_channels, s.filter_ld, g.OCg - oc0,
                [&](int j, int k) { return weights(g, group, oc0 + j, k); });
    __syncthreads();

    // Where this thread's pixels start in the staged plane (tap (0, 0) of channel 0).
    int start[kPixels];
#pragma unroll
    for (int i = 0; i < kPixels; ++i) {
      const int64_t column = cols.column(first, s.threads, t, i);
      int64_t oh = 0, ow = 0;
      const bool in = column < s.columns && cols.pixel(column, oh, ow);
      start[i] = in ? static_cast<int>((oh - r0) * p.stride_h * width + ow * p.stride_w) : 0;
    }

    A acc[kPixels][kChannels];
#pragma unroll
    for (int i = 0; i < kPixels; ++i)
#pragma unroll
      for (int j = 0; j < kChannels; ++j) acc[i][j] = A(0);
    const A* tap_filters = filters + c_begin * KH * KW * s.filter_ld + channel_group * kChannels;
    for (int c = c_begin; c < c_end; ++c) {
      for (int kh = 0; kh < KH; ++kh) {
        const int row = c * plane + kh * dilation_h * width;
        for (int kw = 0; kw < KW; ++kw, tap_filters += s.filter_ld) {
          const int tap = row + kw * dilation_w;
          A v[kPixels], f[kChannels];
#pragma unroll
          for (int i = 0; i < kPixels; ++i) v[i] = patch[start[i] + tap];
          load4(tap_filters, f);
          load4(tap_filters + 4, f + 4);
#pragma unroll
          for (int i = 0; i < kPixels; ++i)
#pragma unroll
            for (int j = 0; j < kChannels; ++j) acc[i][j] = fma(f[j], v[i], acc[i][j]);
        }
      }
    }

    // Slice 0 adds the other slices' sums to its own, in slice order, through the staged input's
    // memory.
    add_groups_in_order<Tile::kExchanged, Tile::kMaxThreads>(acc, patch, s.slices, slice_threads);

    if (slice == 0) {
      constexpr int kGroup = Ep::kGroup;
      const auto out = ep.at(z);
#pragma unroll
      for (int j = 0; j < kChannels; ++j) {
        const int64_t m = oc0 + channel_group * kChannels + j;
        if (m >= g.OCg) continue;
#pragma unroll
        for (int i = 0; i < kPixels; i += kGroup) {
          const int64_t column = cols.column(first, s.threads, t, i);
          if (column >= s.columns) continue;
          A v[kGroup];
#pragma unroll
          for (int c = 0; c < kGroup; ++c) v[c] = acc[i + c][j];
          out.store(m, column, v);
        }
      }
    }
    __syncthreads();  // the next item's staging overwrites what this one read
  }
}

// Runs a planned thin layer (plan.fits) on ctx.stream.
template <typename T, typename Input, typename Filters, typename Columns, typename Ep>
cudaError_t thin_conv(const GemmContext& ctx, const ThinShape& plan, const Input& input,
                      const Filters& weights, const Columns& cols, const Ep& ep) {
  if (plan.batches == 0) return cudaSuccess;
  return launch(conv2d_thin_kernel<T, Input, Filters, Columns, Ep>, grid_size(plan.work(), 1),
                plan.block(), ctx.stream, plan, input, weights, cols, ep);
}

}  // namespace conv

template <typename T>
bool conv2d_pooled_grads_read_windows(const Pool2dParams& pool) {
  return pool_windows_apart(pool) && sizeof(acc_t<T>) == 4;
}

namespace conv {

// A gradient of conv2d_relu_max_pool2d through its pool (gy pooled, with the pool's indices and
// mask). Where conv2d_pooled_grads_read_windows: windows(g, source, narrow), source the pooled
// gradient read through the windows (a PooledGradient), narrow a std::bool_constant, true where
// the conv's and the windows' index arithmetic fit 32 bits. Else, the composed form (pools whose
// windows overlap, and double): the activation gradient, written by max_pool2d_backward to
// workspace scratch, then composed(activation_grad).
template <typename T, typename Windows, typename Composed>
cudaError_t pooled_gradient_pass(const GemmContext& ctx, const Conv2dParams& p,
                                 const Pool2dParams& pool, const T* gy, const int64_t* indices,
                                 const T* mask, const Windows& windows, const Composed& composed) {
  if constexpr (sizeof(acc_t<T>) == 4) {  // not even instantiated for double (conv2d.h)
    if (conv2d_pooled_grads_read_windows<T>(pool)) {
      const ConvGeometry g(p, ctx.wide_index);
      const PooledGradient<T, true> narrow(gy, indices, mask, pool);
      if (g.narrow && narrow.narrow()) return windows(g, narrow, std::true_type{});
      return windows(g, PooledGradient<T, false>(gy, indices, mask, pool), std::false_type{});
    }
  }
  T* activation_grad = static_cast<T*>(ctx.workspace->allocate(
      static_cast<size_t>(p.N * p.OC * p.OH * p.OW) * sizeof(T)));
  const cudaError_t err =
      max_pool2d_backward(ctx.stream, pool, gy, indices, mask, activation_grad);
  if (err != cudaSuccess) return err;
  return composed(activation_grad);
}

}  // namespace conv

}  // namespace fastlayers::cuda
