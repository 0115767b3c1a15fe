// conv2d's forward, and the fused conv2d_relu_max_pool2d: implicit GEMMs, or the thin-layer
// kernel (conv2d.cuh).
#include "conv2d.cuh"

namespace fastlayers::cuda {

using namespace conv;

template <typename T>
cudaError_t conv2d_forward(const GemmContext& ctx, const Conv2dParams& p, const T* x, const T* w,
                           const T* bias, T* y, bool relu) {
  const ConvGeometry g(p, ctx.wide_index);
  const StridedOperand<T, true> a = filters_operand(w, g);
  Epilogue<T> ep{y, BatchOffset{p.groups, p.OC * g.OHW, g.OCg * g.OHW}, g.OHW};
  ep.bias = bias;
  ep.bias_kind = bias != nullptr ? BiasKind::per_row : BiasKind::none;
  ep.bias_group_stride = g.OCg;
  ep.relu = relu;
  if (ctx.thin_conv && thin_layer(g)) {
    const PixelColumns columns{p.OH, p.OW};
    const ThinShape plan = plan_thin<acc_t<T>>(g, columns, g.OHW, ctx.sm_count);
    if (plan.fits) {
      return thin_conv<T>(ctx, plan, ImageInput<T>{x}, LayerFilters<T>{w}, columns, ep);
    }
  }
  if (g.narrow) {
    return gemm<T>(ctx, p.N * p.groups, g.OCg, g.OHW, g.CKK, a, Im2colOperand<T, true>{x, g}, ep);
  }
  return gemm<T>(ctx, p.N * p.groups, g.OCg, g.OHW, g.CKK, a, Im2colOperand<T, false>{x, g}, ep);
}
bool pool_windows_apart(const Pool2dParams& pool) {
  return (pool.kernel_h - 1) * pool.dilation_h < pool.stride_h &&
         (pool.kernel_w - 1) * pool.dilation_w < pool.stride_w;
}

bool conv2d_relu_max_pool2d_fuses(const Pool2dParams& pool) {
  return pool.kernel_h * pool.kernel_w == 4 && pool_windows_apart(pool);
}

template <typename T>
cudaError_t conv2d_relu_max_pool2d(const GemmContext& ctx, const Conv2dParams& p,
                                   const Pool2dParams& pool, const T* x, const T* w,
                                   const T* bias, T* y, int64_t* indices) {
  if (!conv2d_relu_max_pool2d_fuses(pool)) {
    const int64_t activation_size = p.N * p.OC * p.OH * p.OW;
    T* activation = static_cast<T*>(
        ctx.workspace->allocate(static_cast<size_t>(activation_size) * sizeof(T)));
    const cudaError_t err = conv2d_forward(ctx, p, x, w, bias, activation, /*relu=*/true);
    if (err != cudaSuccess) return err;
    return max_pool2d_forward(ctx.stream, pool, activation, y, indices);
  }
  const ConvGeometry g(p, ctx.wide_index);
  const int64_t plane = pool.OH * pool.OW;
  const int tap_shift = pool.kernel_w == 4 ? 2 : pool.kernel_w == 2 ? 1 : 0;
  const PoolWindows windows{pool, Divisor(pool.OW), tap_shift};
  const StridedOperand<T, true> a = filters_operand(w, g);
  const BatchOffset batch{p.groups, p.OC * plane, g.OCg * plane};
  const bool narrow = g.narrow && windows.pooled_w.fits && 4 * plane < kNarrowLimit;
  if (ctx.thin_conv && thin_layer(g)) {
    const WindowColumns columns{windows};
    const ThinShape thin = plan_thin<acc_t<T>>(g, columns, 4 * plane, ctx.sm_count);
    const ImageInput<T> input{x};
    const LayerFilters<T> filters{w};
    if (thin.fits && narrow) {
      return thin_conv<T>(ctx, thin, input, filters, columns,
                          PoolEpilogue<T, true>{y, indices, batch, bias, g.OCg, windows});
    }
    if (thin.fits) {
      return thin_conv<T>(ctx, thin, input, filters, columns,
                          PoolEpilogue<T, false>{y, indices, batch, bias, g.OCg, windows});
    }
  }
  if (narrow) {
    return gemm<T>(ctx, p.N * p.groups, g.OCg, 4 * plane, g.CKK, a,
                   PooledIm2colOperand<T, true>{x, g, windows},
                   PoolEpilogue<T, true>{y, indices, batch, bias, g.OCg, windows});
  }
  return gemm<T>(ctx, p.N * p.groups, g.OCg, 4 * plane, g.CKK, a,
                 PooledIm2colOperand<T, false>{x, g, windows},
                 PoolEpilogue<T, false>{y, indices, batch, bias, g.OCg, windows});
}

template <typename T>
int conv2d_thin_slices(const Conv2dParams& p, const Pool2dParams* pool, int sm_count) {
  const ConvGeometry g(p, false);
  const auto slices = [](const ThinShape& plan) { return plan.fits ? plan.slices : 0; };
  if (!thin_layer(g)) return 0;
  if (pool == nullptr) {
    return slices(plan_thin<acc_t<T>>(g, PixelColumns{p.OH, p.OW}, g.OHW, sm_count));
  }
  if (!conv2d_relu_max_pool2d_fuses(*pool)) return 0;
  const WindowColumns columns{PoolWindows{*pool, Divisor(pool->OW), 0}};
  return slices(plan_thin<acc_t<T>>(g, columns, 4 * pool->OH * pool->OW, sm_count));
}

#define FASTLAYERS_INSTANTIATE(T)                                                           \
  template cudaError_t conv2d_forward<T>(const GemmContext&, const Conv2dParams&, const T*, \
                                         const T*, const T*, T*, bool);                     \
  template cudaError_t conv2d_relu_max_pool2d<T>(const GemmContext&, const Conv2dParams&,   \
                                                 const Pool2dParams&, const T*, const T*,   \
                                                 const T*, T*, int64_t*);                   \
  template int conv2d_thin_slices<T>(const Conv2dParams&, const Pool2dParams*, int);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
