// conv2d as GEMM, one image and one group at a time:
//   forward      y[OCg, OH*OW]   = w[OCg, Cg*KH*KW] * cols[Cg*KH*KW, OH*OW]   (+ bias, ReLU)
//   grad_input   cols            = w^T * gy, then col2im adds cols back into gx
//   grad_weight  gw[OCg, Cg*KH*KW] += gy * cols^T
// cols (im2col) is a workspace of one image and group, reused across images. A 1x1, stride-1,
// unpadded conv needs no cols: the input plane is already the GEMM operand.
// Images are spread over threads when there are enough of them; otherwise each GEMM uses every
// thread. grad_weight then keeps one partial sum per thread, added in a fixed order.
#include "conv2d.h"

#include <algorithm>
#include <vector>

#include "gemm.h"

namespace fastlayers::cpu {
namespace {

struct Dims {
  int64_t Cg, OCg, CKK, HW, OHW;
  bool pointwise;  // 1x1, stride 1, no padding: cols == input
};

Dims dims_of(const Conv2dParams& p) {
  Dims d;
  d.Cg = p.C / p.groups;
  d.OCg = p.OC / p.groups;
  d.CKK = d.Cg * p.KH * p.KW;
  d.HW = p.H * p.W;
  d.OHW = p.OH * p.OW;
  d.pointwise = p.KH == 1 && p.KW == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0 &&
                p.pad_left == 0 && p.OH == p.H && p.OW == p.W;
  return d;
}

// cols[(c * KH + kh) * KW + kw][oh * OW + ow] = x[c][ih][iw], or 0 in the padding.
template <typename T>
void im2col(const Conv2dParams& p, int64_t channels, const T* x, T* cols) {
  const int64_t OHW = p.OH * p.OW;
  for (int64_t c = 0; c < channels; ++c) {
    const T* plane = x + c * p.H * p.W;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        T* row = cols + ((c * p.KH + kh) * p.KW + kw) * OHW;
        for (int64_t oh = 0; oh < p.OH; ++oh) {
          T* dst = row + oh * p.OW;
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.H) {
            std::fill(dst, dst + p.OW, T(0));
            continue;
          }
          const T* src = plane + ih * p.W;
          const int64_t iw0 = kw * p.dilation_w - p.pad_left;
          for (int64_t ow = 0; ow < p.OW; ++ow) {
            const int64_t iw = iw0 + ow * p.stride_w;
            dst[ow] = (iw >= 0 && iw < p.W) ? src[iw] : T(0);
          }
        }
      }
    }
  }
}

// The adjoint of im2col: x = 0, then every cols element is added to the pixel it came from.
template <typename T>
void col2im(const Conv2dParams& p, int64_t channels, const T* cols, T* x) {
  const int64_t OHW = p.OH * p.OW;
  std::fill(x, x + channels * p.H * p.W, T(0));
  for (int64_t c = 0; c < channels; ++c) {
    T* plane = x + c * p.H * p.W;
    for (int64_t kh = 0; kh < p.KH; ++kh) {
      for (int64_t kw = 0; kw < p.KW; ++kw) {
        const T* row = cols + ((c * p.KH + kh) * p.KW + kw) * OHW;
        for (int64_t oh = 0; oh < p.OH; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
          if (ih < 0 || ih >= p.H) continue;
          const T* src = row + oh * p.OW;
          T* dst = plane + ih * p.W;
          const int64_t iw0 = kw * p.dilation_w - p.pad_left;
          for (int64_t ow = 0; ow < p.OW; ++ow) {
            const int64_t iw = iw0 + ow * p.stride_w;
            if (iw >= 0 && iw < p.W) dst[iw] += src[ow];
          }
        }
      }
    }
  }
}

// How a batch is run: `chunks` groups of whole images in parallel, each GEMM on `inner` threads.
struct ImageSplit {
  int64_t chunks;
  Context inner;
  int64_t images_per_chunk;
};

ImageSplit split_images(const Context& ctx, const Conv2dParams& p) {
  const double work_per_image = double(p.OC) * (p.C / p.groups) * p.KH * p.KW * p.OH * p.OW;
  const Context total = context_for_work(ctx, work_per_image * p.N);
  if (total.num_threads > 1 && p.N >= total.num_threads) {
    Context one = ctx;
    one.num_threads = 1;
    return {total.num_threads, one, ceil_div(p.N, total.num_threads)};
  }
  return {1, ctx, p.N};
}

// Calls f(chunk, n, first, cols) for every image n: the batch's chunks run in parallel, each with
// its own im2col workspace `cols` of cols_size elements; `first` marks a chunk's first image.
template <typename T, typename F>
void for_each_image(const Context& ctx, const Conv2dParams& p, const ImageSplit& split,
                    int64_t cols_size, const F& f) {
  std::vector<T> scratch(static_cast<size_t>(split.chunks * cols_size));
  parallel_chunks(ctx, split.chunks, [&](int64_t chunk) {
    T* cols = scratch.data() + chunk * cols_size;
    const int64_t begin = chunk * split.images_per_chunk;
    const int64_t end = std::min(p.N, begin + split.images_per_chunk);
    for (int64_t n = begin; n < end; ++n) f(chunk, n, n == begin, cols);
  });
}

}  // namespace

template <typename T>
void conv2d_forward(const Context& ctx, const Conv2dParams& p, const T* x, const T* w,
                    const T* bias, T* y, bool relu) {
  const Dims d = dims_of(p);
  const ImageSplit split = split_images(ctx, p);
  const int64_t cols_size = d.pointwise ? 0 : d.CKK * d.OHW;
  for_each_image<T>(ctx, p, split, cols_size, [&](int64_t, int64_t n, bool, T* cols) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * d.Cg) * d.HW;
      Operand<T> B{xg, d.HW, 1};
      if (!d.pointwise) {
        im2col(p, d.Cg, xg, cols);
        B = Operand<T>{cols, d.OHW, 1};
      }
      const Operand<T> A{w + g * d.OCg * d.CKK, d.CKK, 1};
      Epilogue<T> ep;
      ep.row_bias = bias ? bias + g * d.OCg : nullptr;
      ep.relu = relu;
      gemm(split.inner, d.OCg, d.OHW, d.CKK, A, B, y + (n * p.OC + g * d.OCg) * d.OHW, d.OHW, ep);
    }
  });
}

template <typename T>
void conv2d_grad_input(const Context& ctx, const Conv2dParams& p, const T* gy, const T* w,
                       const T* relu_output, T* gx) {
  const Dims d = dims_of(p);
  const ImageSplit split = split_images(ctx, p);
  const int64_t cols_size = d.pointwise ? 0 : d.CKK * d.OHW;
  for_each_image<T>(ctx, p, split, cols_size, [&](int64_t, int64_t n, bool, T* cols) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t y_off = (n * p.OC + g * d.OCg) * d.OHW;
      const Operand<T> A{w + g * d.OCg * d.CKK, 1, d.CKK};  // w_g^T
      const Operand<T> B{gy + y_off, d.OHW, 1, relu_output ? relu_output + y_off : nullptr};
      T* gxg = gx + (n * p.C + g * d.Cg) * d.HW;
      if (d.pointwise) {
        gemm(split.inner, d.CKK, d.OHW, d.OCg, A, B, gxg, d.HW, Epilogue<T>{});
      } else {
        gemm(split.inner, d.CKK, d.OHW, d.OCg, A, B, cols, d.OHW, Epilogue<T>{});
        col2im(p, d.Cg, cols, gxg);
      }
    }
  });
}

template <typename T>
void conv2d_grad_weight(const Context& ctx, const Conv2dParams& p, const T* gy, const T* x,
                        const T* relu_output, T* gw) {
  const Dims d = dims_of(p);
  const int64_t w_size = p.OC * d.CKK;
  if (p.N == 0) {
    std::fill(gw, gw + w_size, T(0));
    return;
  }
  const ImageSplit split = split_images(ctx, p);
  const int64_t cols_size = d.pointwise ? 0 : d.CKK * d.OHW;
  // Chunk 0 sums into gw itself; the others into partial sums, added in chunk order below.
  std::vector<T> partial(static_cast<size_t>((split.chunks - 1) * w_size));
  for_each_image<T>(ctx, p, split, cols_size, [&](int64_t chunk, int64_t n, bool first, T* cols) {
    T* out = chunk == 0 ? gw : partial.data() + (chunk - 1) * w_size;
    for (int64_t g = 0; g < p.groups; ++g) {
      const int64_t y_off = (n * p.OC + g * d.OCg) * d.OHW;
      const T* xg = x + (n * p.C + g * d.Cg) * d.HW;
      const Operand<T> A{gy + y_off, d.OHW, 1, relu_output ? relu_output + y_off : nullptr};
      Operand<T> B{xg, 1, d.HW};  // x_g^T
      if (!d.pointwise) {
        im2col(p, d.Cg, xg, cols);
        B = Operand<T>{cols, 1, d.OHW};  // cols^T
      }
      Epilogue<T> ep;
      ep.accumulate = !first;
      gemm(split.inner, d.OCg, d.CKK, d.OHW, A, B, out + g * d.OCg * d.CKK, d.CKK, ep);
    }
  });
  if (split.chunks > 1) {
    // Parallel over weight elements; each adds the partials in the same order.
    parallel_for(ctx, w_size, 16384, [&](int64_t begin, int64_t end) {
      for (int64_t c = 1; c < split.chunks; ++c) {
        const T* part = partial.data() + (c - 1) * w_size;
        if ((c * split.images_per_chunk) >= p.N) break;  // chunk had no images
        for (int64_t i = begin; i < end; ++i) gw[i] += part[i];
      }
    });
  }
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template void conv2d_forward<T>(const Context&, const Conv2dParams&, const T*, const T*,      \
                                  const T*, T*, bool);                                          \
  template void conv2d_grad_input<T>(const Context&, const Conv2dParams&, const T*, const T*,   \
                                     const T*, T*);                                             \
  template void conv2d_grad_weight<T>(const Context&, const Conv2dParams&, const T*, const T*,  \
                                      const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
