// conv2d's input gradient, plain and through a fused max-pool: the transposed conv gathered as
// an implicit GEMM, or in the thin-layer kernel (conv2d.cuh).
#include "conv2d.cuh"

namespace fastlayers::cuda {

using namespace conv;

namespace {

// gx = the input gradient of output gradient gy (a gradient source): in the thin kernel where
// it applies (as the transposed conv), else as an implicit GEMM.
template <typename T, bool kNarrow, typename Gradient>
cudaError_t grad_input_gemm(const GemmContext& ctx, const ConvGeometry& g, const Gradient& gy,
                            const T* w, T* gx) {
  const Conv2dParams& p = g.p;
  const Epilogue<T> ep{gx, BatchOffset{p.groups, p.C * g.HW, g.Cg * g.HW}, g.HW};
  if (ctx.thin_conv && thin_grad_input(g)) {
    const ConvGeometry t = transposed_conv(g);
    const PixelColumns columns{p.H, p.W};
    const ThinShape plan = plan_thin<acc_t<T>>(t, columns, t.OHW, ctx.sm_count);
    if (plan.fits) {
      return thin_conv<T>(ctx, plan, GradientInput<Gradient>{gy}, FlippedFilters<T>{w}, columns,
                          ep);
    }
  }
  return gemm<T>(ctx, p.N * p.groups, g.Cg, g.HW, g.OCg * g.KHKW,
                 TransposedWeightOperand<T, kNarrow>{w, g},
                 GradOutputGatherOperand<T, kNarrow, Gradient>{gy, g}, ep);
}

}  // namespace

template <typename T>
cudaError_t conv2d_grad_input(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                              const T* w, const T* relu_output, T* gx) {
  const ConvGeometry g(p, ctx.wide_index);
  const DenseGradient<T> source{gy, relu_output, p.OW, g.OHW};
  return g.narrow ? grad_input_gemm<T, true>(ctx, g, source, w, gx)
                  : grad_input_gemm<T, false>(ctx, g, source, w, gx);
}

template <typename T>
cudaError_t conv2d_grad_input_pooled(const GemmContext& ctx, const Conv2dParams& p,
                                     const Pool2dParams& pool, const T* gy,
                                     const int64_t* indices, const T* w, const T* mask, T* gx) {
  const auto windows = [&](const ConvGeometry& g, const auto& source, auto narrow) {
    return grad_input_gemm<T, decltype(narrow)::value>(ctx, g, source, w, gx);
  };
  const auto composed = [&](const T* activation_grad) {
    return conv2d_grad_input<T>(ctx, p, activation_grad, w, nullptr, gx);
  };
  return pooled_gradient_pass(ctx, p, pool, gy, indices, mask, windows, composed);
}

template <typename T>
int conv2d_grad_input_thin_slices(const Conv2dParams& p, int sm_count) {
  const ConvGeometry g(p, false);
  if (!thin_grad_input(g)) return 0;
  const ConvGeometry t = transposed_conv(g);
  const ThinShape plan = plan_thin<acc_t<T>>(t, PixelColumns{p.H, p.W}, t.OHW, sm_count);
  return plan.fits ? plan.slices : 0;
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template cudaError_t conv2d_grad_input<T>(const GemmContext&, const Conv2dParams&, const T*, \
                                            const T*, const T*, T*);                           \
  template bool conv2d_pooled_grads_read_windows<T>(const Pool2dParams&);                      \
  template cudaError_t conv2d_grad_input_pooled<T>(const GemmContext&, const Conv2dParams&,    \
                                                   const Pool2dParams&, const T*,              \
                                                   const int64_t*, const T*, const T*, T*);    \
  template int conv2d_grad_input_thin_slices<T>(const Conv2dParams&, int);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
