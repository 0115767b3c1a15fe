// conv2d's three passes as implicit GEMMs, one GEMM per (image, group) batch entry, or per group
// when the sum runs over images. With Cg = C / groups, OCg = OC / groups, CKK = Cg * KH * KW:
//
//   forward      y[n, g*OCg + oc, q]  = sum_k  w_g[oc, k] * cols[k, q]          M = OCg, N = OH*OW, K = CKK
//   grad_weight  gw[g*OCg + oc, k]    = sum_nq gy[n, g*OCg + oc, q] * cols_n[k, q]   M = OCg, N = CKK, K = N*OH*OW
//   grad_input   gx[n, g*Cg + c, h, w] = sum over oc, kh, kw of
//                  w[g*OCg + oc, c, kh, kw] * gy[n, g*OCg + oc, oh, ow]     M = Cg, N = H*W, K = OCg*KH*KW
//                where oh * stride_h = h + pad_top - kh * dilation_h (and likewise ow), when that
//                divides exactly and 0 <= oh < OH (the transposed convolution, gathered: each
//                gx element is one thread's sum, so there is no col2im scatter and no atomic).
//
// cols is the im2col matrix of one image and group, read on the fly (ConvGeometry::im2col_offset):
//   k = (c * KH + kh) * KW + kw,  q = oh * OW + ow,
//   cols[k, q] = x[c, ih, iw] with ih = oh * stride_h - pad_top + kh * dilation_h,
//                                  iw = ow * stride_w - pad_left + kw * dilation_w,
//   and 0 outside 0 <= ih < H, 0 <= iw < W (the padding; bottom/right padding is implied by OH, OW).
// The same formulas as csrc/kernels/cpu/gemm.h (Im2col) and conv2d.cpp (col2im).
//
// The operands split k, q and i into their parts on every load. Where every numerator is below
// 2^31 (CKK, OCg * KH * KW, N * OH * OW, H * W, H + pad_top and W + pad_left) and every divisor
// is too, they divide with FastDivmod (common.cuh), a multiply-high and a shift; else with 64-bit
// division, which the GPU runs as a subroutine of about 70 instructions.
#include <algorithm>

#include "conv2d.h"
#include "gemm.cuh"

namespace fastlayers::cuda {
namespace {

constexpr int64_t kNarrowLimit = int64_t{1} << 31;

// A divisor with its 32-bit fast form (FastDivmod), which is built only for 1 <= d < 2^31 and
// used only where `fits` (an empty conv has sizes of 0, which no operand then divides by).
struct Divisor {
  int64_t value = 1;
  bool fits = true;
  FastDivmod fast;
  Divisor() = default;
  explicit Divisor(int64_t d)
      : value(d), fits(d >= 1 && d < kNarrowLimit), fast(static_cast<uint32_t>(fits ? d : 1)) {}
};

// quotient = n / d and remainder = n % d (n >= 0): three instructions when kNarrow, which the
// launchers choose only where every numerator is below 2^31; 64-bit division otherwise.
template <bool kNarrow>
__device__ __forceinline__ void divmod(int64_t n, const Divisor& d, int64_t& quotient,
                                       int64_t& remainder) {
  if constexpr (kNarrow) {
    uint32_t q, r;
    d.fast(static_cast<uint32_t>(n), q, r);
    quotient = q;
    remainder = r;
  } else {
    quotient = n / d.value;
    remainder = n - quotient * d.value;
  }
}

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

  // Offset of cols[k, q] in one image's group of Cg planes, or -1 where it lies in the padding.
  template <bool kNarrow>
  __device__ int64_t im2col_offset(int64_t k, int64_t q) const {
    int64_t c, r, kh, kw_, oh, ow_;
    divmod<kNarrow>(k, khkw, c, r);
    divmod<kNarrow>(r, kw, kh, kw_);
    divmod<kNarrow>(q, ow, oh, ow_);
    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
    const int64_t iw = ow_ * p.stride_w - p.pad_left + kw_ * p.dilation_w;
    if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) return -1;
    return (c * p.H + ih) * p.W + iw;
  }
};

template <typename T>
__device__ acc_t<T> masked(const T* data, const T* mask, int64_t offset) {
  const acc_t<T> v = to_acc(data[offset]);
  if (mask != nullptr && to_acc(mask[offset]) <= acc_t<T>(0)) return acc_t<T>(0);
  return v;
}

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

// grad_weight A: (oc, k) with k = n * OH*OW + q reads gy[n, g*OCg + oc, q] (masked); z = g.
template <typename T, bool kNarrow>
struct GradOutputRowsOperand {
  static constexpr bool kContiguousK = true;  // k runs along an image's pixels
  const T* gy;
  const T* mask;
  ConvGeometry g;
  struct View {
    const T* gy;  // group g's first channel of image 0
    const T* mask;
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t oc, int64_t k) const {
      int64_t n, q;
      divmod<kNarrow>(k, g.ohw, n, q);
      return masked(gy, mask, (n * g.p.OC + oc) * g.OHW + q);
    }
  };
  __device__ View at(int64_t z) const {
    const int64_t offset = z * g.OCg * g.OHW;
    return {gy + offset, mask != nullptr ? mask + offset : nullptr, g};
  }
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

// grad_input B: (k, i) with k = oc * KH*KW + kh * KW + kw and i = h * W + w reads
// gy[n, g*OCg + oc, oh, ow] (masked) for the output pixel whose window puts tap (kh, kw) on
// input pixel (h, w), or 0 where there is none; z = n * groups + g.
template <typename T, bool kNarrow>
struct GradOutputGatherOperand {
  static constexpr bool kContiguousK = false;  // neighbouring i are neighbouring pixels
  const T* gy;
  const T* mask;
  ConvGeometry g;
  struct View {
    const T* gy;  // image n, group g's first channel
    const T* mask;
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
      return masked(gy, mask, (oc * p.OH + oh) * p.OW + ow);
    }
  };
  __device__ View at(int64_t z) const {
    const BatchOffset batch{g.p.groups, g.p.OC * g.OHW, g.OCg * g.OHW};
    const int64_t offset = batch(z);
    return {gy + offset, mask != nullptr ? mask + offset : nullptr, g};
  }
};

}  // namespace

template <typename T>
cudaError_t conv2d_forward(const GemmContext& ctx, const Conv2dParams& p, const T* x, const T* w,
                           const T* bias, T* y, bool relu) {
  const ConvGeometry g(p, ctx.wide_index);
  // A = w_g, [OCg, CKK] row-major, at group g's filters.
  const StridedOperand<T, true> a{w, nullptr, BatchOffset{p.groups, 0, g.OCg * g.CKK}, g.CKK, 1};
  Epilogue<T> ep{y, BatchOffset{p.groups, p.OC * g.OHW, g.OCg * g.OHW}, g.OHW};
  ep.bias = bias;
  ep.bias_kind = bias != nullptr ? BiasKind::per_row : BiasKind::none;
  ep.bias_group_stride = g.OCg;
  ep.relu = relu;
  if (g.narrow) {
    return gemm<T>(ctx, p.N * p.groups, g.OCg, g.OHW, g.CKK, a, Im2colOperand<T, true>{x, g}, ep);
  }
  return gemm<T>(ctx, p.N * p.groups, g.OCg, g.OHW, g.CKK, a, Im2colOperand<T, false>{x, g}, ep);
}

template <typename T>
cudaError_t conv2d_grad_input(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                              const T* w, const T* relu_output, T* gx) {
  const ConvGeometry g(p, ctx.wide_index);
  const Epilogue<T> ep{gx, BatchOffset{p.groups, p.C * g.HW, g.Cg * g.HW}, g.HW};
  const int64_t batches = p.N * p.groups, K = g.OCg * g.KHKW;
  if (g.narrow) {
    return gemm<T>(ctx, batches, g.Cg, g.HW, K, TransposedWeightOperand<T, true>{w, g},
                   GradOutputGatherOperand<T, true>{gy, relu_output, g}, ep);
  }
  return gemm<T>(ctx, batches, g.Cg, g.HW, K, TransposedWeightOperand<T, false>{w, g},
                 GradOutputGatherOperand<T, false>{gy, relu_output, g}, ep);
}

template <typename T>
cudaError_t conv2d_grad_weight(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                               const T* x, const T* relu_output, T* gw) {
  const ConvGeometry g(p, ctx.wide_index);
  // Entry z = g writes group g's filters, gw[g*OCg : (g+1)*OCg] viewed as [OCg, CKK].
  const Epilogue<T> ep{gw, BatchOffset{1, g.OCg * g.CKK, 0}, g.CKK};
  // K = N * OH * OW may be 0 (an empty batch): the GEMM then stores zeros.
  if (g.narrow) {
    return gemm<T>(ctx, p.groups, g.OCg, g.CKK, p.N * g.OHW,
                   GradOutputRowsOperand<T, true>{gy, relu_output, g},
                   Im2colTransposedOperand<T, true>{x, g}, ep);
  }
  return gemm<T>(ctx, p.groups, g.OCg, g.CKK, p.N * g.OHW,
                 GradOutputRowsOperand<T, false>{gy, relu_output, g},
                 Im2colTransposedOperand<T, false>{x, g}, ep);
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template cudaError_t conv2d_forward<T>(const GemmContext&, const Conv2dParams&, const T*,     \
                                         const T*, const T*, T*, bool);                          \
  template cudaError_t conv2d_grad_input<T>(const GemmContext&, const Conv2dParams&, const T*,  \
                                            const T*, const T*, T*);                             \
  template cudaError_t conv2d_grad_weight<T>(const GemmContext&, const Conv2dParams&, const T*, \
                                             const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
