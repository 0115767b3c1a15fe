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
#include "conv2d.h"
#include "gemm.cuh"

namespace fastlayers::cuda {
namespace {

// A conv's sizes with the per-group ones derived once on the host.
struct ConvGeometry {
  Conv2dParams p;
  int64_t Cg, OCg, KHKW, CKK, HW, OHW;

  explicit ConvGeometry(const Conv2dParams& params)
      : p(params),
        Cg(params.C / params.groups),
        OCg(params.OC / params.groups),
        KHKW(params.KH * params.KW),
        CKK(params.C / params.groups * params.KH * params.KW),
        HW(params.H * params.W),
        OHW(params.OH * params.OW) {}

  // Offset of cols[k, q] in one image's group of Cg planes, or -1 where it lies in the padding.
  __device__ int64_t im2col_offset(int64_t k, int64_t q) const {
    const int64_t c = k / KHKW, r = k - c * KHKW;
    const int64_t kh = r / p.KW, kw = r - kh * p.KW;
    const int64_t oh = q / p.OW, ow = q - oh * p.OW;
    const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
    const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
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
template <typename T>
struct Im2colOperand {
  const T* x;
  ConvGeometry g;
  struct View {
    const T* x;  // image n, first channel of group g
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t q) const {
      const int64_t offset = g.im2col_offset(k, q);
      return offset < 0 ? acc_t<T>(0) : to_acc(x[offset]);
    }
  };
  __device__ View at(int64_t z) const {
    const BatchOffset batch{g.p.groups, g.p.C * g.HW, g.Cg * g.HW};
    return {x + batch(z), g};
  }
};

// grad_weight A: (oc, k) with k = n * OH*OW + q reads gy[n, g*OCg + oc, q] (masked); z = g.
template <typename T>
struct GradOutputRowsOperand {
  const T* gy;
  const T* mask;
  ConvGeometry g;
  struct View {
    const T* gy;  // group g's first channel of image 0
    const T* mask;
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t oc, int64_t k) const {
      const int64_t n = k / g.OHW, q = k - n * g.OHW;
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
template <typename T>
struct Im2colTransposedOperand {
  const T* x;
  ConvGeometry g;
  struct View {
    const T* x;  // group g's first channel of image 0
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t j) const {
      const int64_t n = k / g.OHW, q = k - n * g.OHW;
      const int64_t offset = g.im2col_offset(j, q);
      return offset < 0 ? acc_t<T>(0) : to_acc(x[n * g.p.C * g.HW + offset]);
    }
  };
  __device__ View at(int64_t z) const { return {x + z * g.Cg * g.HW, g}; }
};

// grad_input A: (c, k) with k = oc * KH*KW + r (r = kh * KW + kw) reads w[g*OCg + oc, c, kh, kw];
// z = n * groups + g.
template <typename T>
struct TransposedWeightOperand {
  const T* w;
  ConvGeometry g;
  struct View {
    const T* w;  // group g's first filter
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t c, int64_t k) const {
      const int64_t oc = k / g.KHKW, r = k - oc * g.KHKW;
      return to_acc(w[oc * g.CKK + c * g.KHKW + r]);
    }
  };
  __device__ View at(int64_t z) const { return {w + (z % g.p.groups) * g.OCg * g.CKK, g}; }
};

// grad_input B: (k, i) with k = oc * KH*KW + kh * KW + kw and i = h * W + w reads
// gy[n, g*OCg + oc, oh, ow] (masked) for the output pixel whose window puts tap (kh, kw) on
// input pixel (h, w), or 0 where there is none; z = n * groups + g.
template <typename T>
struct GradOutputGatherOperand {
  const T* gy;
  const T* mask;
  ConvGeometry g;
  struct View {
    const T* gy;  // image n, group g's first channel
    const T* mask;
    ConvGeometry g;
    __device__ acc_t<T> operator()(int64_t k, int64_t i) const {
      const Conv2dParams& p = g.p;
      const int64_t oc = k / g.KHKW, r = k - oc * g.KHKW;
      const int64_t kh = r / p.KW, kw = r - kh * p.KW;
      const int64_t h = i / p.W, w = i - h * p.W;
      // ih = oh * stride_h - pad_top + kh * dilation_h solved for oh (and likewise ow).
      const int64_t th = h + p.pad_top - kh * p.dilation_h;
      const int64_t tw = w + p.pad_left - kw * p.dilation_w;
      if (th < 0 || tw < 0) return acc_t<T>(0);
      const int64_t oh = th / p.stride_h, ow = tw / p.stride_w;
      if (oh * p.stride_h != th || ow * p.stride_w != tw || oh >= p.OH || ow >= p.OW) {
        return acc_t<T>(0);
      }
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
  const ConvGeometry g(p);
  // A = w_g, [OCg, CKK] row-major, at group g's filters.
  const StridedOperand<T> a{w, nullptr, BatchOffset{p.groups, 0, g.OCg * g.CKK}, g.CKK, 1};
  const Im2colOperand<T> b{x, g};
  Epilogue<T> ep{y, BatchOffset{p.groups, p.OC * g.OHW, g.OCg * g.OHW}, g.OHW};
  ep.bias = bias;
  ep.bias_kind = bias != nullptr ? BiasKind::per_row : BiasKind::none;
  ep.bias_group_stride = g.OCg;
  ep.relu = relu;
  return gemm<T>(ctx, p.N * p.groups, g.OCg, g.OHW, g.CKK, a, b, ep);
}

template <typename T>
cudaError_t conv2d_grad_input(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                              const T* w, const T* relu_output, T* gx) {
  const ConvGeometry g(p);
  const TransposedWeightOperand<T> a{w, g};
  const GradOutputGatherOperand<T> b{gy, relu_output, g};
  const Epilogue<T> ep{gx, BatchOffset{p.groups, p.C * g.HW, g.Cg * g.HW}, g.HW};
  return gemm<T>(ctx, p.N * p.groups, g.Cg, g.HW, g.OCg * g.KHKW, a, b, ep);
}

template <typename T>
cudaError_t conv2d_grad_weight(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                               const T* x, const T* relu_output, T* gw) {
  const ConvGeometry g(p);
  const GradOutputRowsOperand<T> a{gy, relu_output, g};
  const Im2colTransposedOperand<T> b{x, g};
  // Entry z = g writes group g's filters, gw[g*OCg : (g+1)*OCg] viewed as [OCg, CKK].
  const Epilogue<T> ep{gw, BatchOffset{1, g.OCg * g.CKK, 0}, g.CKK};
  // K = N * OH * OW may be 0 (an empty batch): the GEMM then stores zeros.
  return gemm<T>(ctx, p.groups, g.OCg, g.CKK, p.N * g.OHW, a, b, ep);
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
