// conv2d as GEMM, one image and one group at a time:
//   forward      y[OCg, OH*OW]   = w[OCg, Cg*KH*KW] * cols[Cg*KH*KW, OH*OW]   (+ bias, ReLU)
//   grad_input   cols            = w^T * gy, then col2im adds cols back into gx
//   grad_weight  gw[OCg, Cg*KH*KW] += gy * cols^T
// Forward and grad_weight are implicit GEMMs: the GEMM packs its panels straight from the image
// (Im2col in gemm.h), so cols is never written; grad_input writes cols, a workspace of one image
// and group reused across images. A 1x1, stride-1, unpadded conv needs no cols at all: the input
// plane is already the GEMM operand. At stride 1 all three passes run on a zero-padded copy of
// the image instead (PaddedWidth below), grad_input as a forward conv with flipped weights:
//   - from 16 output channels per group, in the GEMM's window form (gemm_windows): the forward's
//     tile is a few output pixels of one row by NR channels, grad_weight's a few kernel taps;
//   - thinner convs as GEMMs that read the padded image in place (conv2d_padded_width), and
//     grad_weight in the GEMM's dot-product form over its rows (grad_weight_dot_operands).
// Images are spread over threads when there are enough of them; otherwise each GEMM uses every
// thread. grad_weight then keeps one partial sum per thread, added in a fixed order.
// Behind a max-pool, both gradients can also run on the pooled gradient itself: grad_input
// scatters it straight into the padded planes it reads (conv2d_grad_input_pooled); grad_weight
// either sums each window's gradient times the input patch at its maximum in the GEMM's gather
// form, from a per-image patch matrix (im2col transposed), or unpools a few images at a time
// for the dense kernels (conv2d_grad_weight_pooled).
#include "conv2d.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "max_pool2d.h"
#include "winograd.h"

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

// Stride-1 convs run as a "padded-width" implicit GEMM. The image is copied once into a zero-
// padded buffer of Hp x Wp per channel; output pixel (oh, ow) is given the index q = oh * Wp + ow,
// so that im2col row k = (c, kh, kw) is one contiguous run of that buffer, starting at
// off[k] = c * Hp * Wp + kh * dh * Wp + kw * dw. The GEMM reads B in place from those offsets (no
// index arithmetic per element) and writes outputs at every q; the Wp - OW columns past each
// output row are computed and dropped when the result is copied out.
// A buffer row is pad_left zeros, then the W pixels, then zeros up to Wp. The right padding
// needs no columns of its own: a window that reaches past Wp wraps into the next row's first
// columns, which are its left padding, zeros too. So Wp = W + max(pad_left, pad_right), not
// W + pad_left + pad_right (MNIST's 14-wide, pad-2 layer computes 16 columns per row, not 18).
struct PaddedWidth {
  int64_t Hp, Wp, Q;          // buffer plane size; Q = number of q indices computed
  int64_t size;               // elements of one padded image, with the zero tail the reads need
  std::vector<int64_t> off;   // per im2col row
};

PaddedWidth padded_width(const Conv2dParams& p, int64_t channels) {
  PaddedWidth pw;
  const int64_t reach_w = p.OW + (p.KW - 1) * p.dilation_w;  // padded columns the windows read
  pw.Hp = std::max(p.H + p.pad_top, p.OH + (p.KH - 1) * p.dilation_h);
  // Reads past Wp, at column c < reach_w, land on the next row's column c - Wp: a left-padding
  // column when c - Wp < pad_left. Wp >= OW keeps output rows apart.
  pw.Wp = std::max({p.W + p.pad_left, reach_w - p.pad_left, p.OW});
  pw.Q = (p.OH - 1) * pw.Wp + p.OW;
  // The last plane's last row wraps too (less than Wp elements), and the GEMM reads up to
  // kGemmColumnSlack past the end of a row, gemm_dot up to kGemmDotAlign: all zeros.
  pw.size = channels * pw.Hp * pw.Wp + pw.Wp + kGemmColumnSlack + kGemmDotAlign;
  pw.off.resize(static_cast<size_t>(channels * p.KH * p.KW));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t kh = 0; kh < p.KH; ++kh)
      for (int64_t kw = 0; kw < p.KW; ++kw)
        pw.off[(c * p.KH + kh) * p.KW + kw] =
            c * pw.Hp * pw.Wp + kh * p.dilation_h * pw.Wp + kw * p.dilation_w;
  return pw;
}

bool use_padded_width(const Conv2dParams& p) {
  return p.stride_h == 1 && p.stride_w == 1 && p.OH > 0 && p.OW > 0;
}

// grad_output as a max-pool's gradient: pool.OH x pool.OW elements per plane, scattered to their
// indices (offsets into each OH x OW activation plane; relu_output, if given, masks them). An
// index that is not one of its window's taps (PoolTaps) passes nothing.
template <typename T>
struct PooledGrad {
  Pool2dParams pool;
  const T* grad;
  const int64_t* indices;
  const T* relu_output;
  PoolTaps taps;  // built by the op, over its own table
  int64_t pooled() const { return pool.OH * pool.OW; }
};

// v where keep holds, else +0, by masking its bits: gcc branches on a plain select of a scalar
// float here, and a ReLU mask's bits are random (half the branches mispredicted).
template <typename T>
T zero_unless(bool keep, T v) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= Bits(0) - Bits(keep);
  std::memcpy(&v, &bits, sizeof bits);
  return v;
}

// Pooled plane `plane` of src (masked) added into out at its indices: pixel q at out[q], or at
// out[pos[q]] where pos is given.
template <typename T>
void unpool_plane(const PooledGrad<T>& src, int64_t plane, const int64_t* pos, T* out) {
  const int64_t* ind = src.indices + plane * src.pooled();
  const T* grad = src.grad + plane * src.pooled();
  const T* mask = src.relu_output ? src.relu_output + plane * src.pooled() : nullptr;
  // A NaN mask passes the gradient, as torch's threshold_backward.
  auto add = [&](int64_t e) {
    const int64_t q = ind[e];
    out[pos ? pos[q] : q] += zero_unless(!(mask && mask[e] <= T(0)), grad[e]);
  };
  // Every index tested at once where the CPU can (PoolTaps::all), else one by one.
  const PoolTaps taps = src.taps;  // a local: out's stores cannot alias it
  if (taps.all(ind)) {
    for (int64_t e = 0; e < src.pooled(); ++e) add(e);
    return;
  }
  for (int64_t oh = 0, e = 0; oh < src.pool.OH; ++oh) {
    for (int64_t ow = 0; ow < src.pool.OW; ++ow, ++e) {
      if (taps(oh, ow, ind[e])) add(e);
    }
  }
}

// Images [n0, n0 + count) of the unpooled gradient into dense[count, OC, OH * OW].
template <typename T>
void unpool_images(const Conv2dParams& p, const PooledGrad<T>& src, int64_t n0, int64_t count,
                   T* dense) {
  const int64_t OHW = p.OH * p.OW, planes = count * p.OC;
  std::fill(dense, dense + planes * OHW, T(0));
  for (int64_t i = 0; i < planes; ++i) {
    unpool_plane(src, n0 * p.OC + i, static_cast<const int64_t*>(nullptr), dense + i * OHW);
  }
}

// out[c][pad_top + h][pad_left + w] = x[c][h][w] (or 0 where mask[c][h][w] <= 0, if a mask is
// given), zero elsewhere, up to pw.size.
template <typename T>
void pad_planes(const Conv2dParams& p, const PaddedWidth& pw, int64_t channels, const T* x,
                const T* mask, T* out) {
  std::fill(out, out + pw.size, T(0));
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t h = 0; h < p.H; ++h) {
      const T* src = x + (c * p.H + h) * p.W;
      T* dst = out + (c * pw.Hp + p.pad_top + h) * pw.Wp + p.pad_left;
      if (mask) {
        const T* m = mask + (c * p.H + h) * p.W;
        for (int64_t w = 0; w < p.W; ++w) {
          const T v = src[w], k = m[w];
          dst[w] = k <= T(0) ? T(0) : v;
        }
      } else {
        std::copy(src, src + p.W, dst);
      }
    }
  }
}

// Image n, group g of a stride-1 conv's input into its padded planes: x's (masked by x_mask,
// see pad_planes) or, when `pooled` is set, a max-pool's gradient scattered to its indices (the
// fused conv->ReLU->pool's grad_input, conv2d_grad_input_pooled). padded_pos[q] is pixel q's
// offset in a padded plane.
template <typename T>
void pad_input(const Conv2dParams& p, const PaddedWidth& pw, int64_t channels, const T* x,
               const T* x_mask, const PooledGrad<T>* pooled, const int64_t* padded_pos, int64_t n,
               int64_t g, T* xpad) {
  const int64_t first = n * p.C + g * channels;  // the group's first plane
  if (!pooled) {
    const int64_t off = first * p.H * p.W;
    pad_planes(p, pw, channels, x + off, x_mask ? x_mask + off : nullptr, xpad);
    return;
  }
  std::fill(xpad, xpad + pw.size, T(0));
  for (int64_t c = 0; c < channels; ++c)
    unpool_plane(*pooled, first + c, padded_pos, xpad + c * pw.Hp * pw.Wp);
}

// padded_pos for pad_input: pixel q's offset in a padded plane, or nothing without a pooled input.
std::vector<int64_t> padded_positions(const Conv2dParams& p, const PaddedWidth& pw, bool pooled) {
  std::vector<int64_t> pos(static_cast<size_t>(pooled ? p.H * p.W : 0));
  for (int64_t q = 0; q < static_cast<int64_t>(pos.size()); ++q)
    pos[static_cast<size_t>(q)] = (p.pad_top + q / p.W) * pw.Wp + p.pad_left + q % p.W;
  return pos;
}

// y = conv(x, w) + bias, then ReLU if asked, for a stride-1 conv (see PaddedWidth). With x_mask,
// x reads as 0 wherever x_mask <= 0 (grad_input passes grad_output and the forward's output);
// with `pooled`, the input is that max-pool gradient unpooled (see pad_input).
template <typename T>
void conv2d_padded_width(const Context& ctx, const Conv2dParams& p, const T* x, const T* x_mask,
                         const T* w, const T* bias, T* y, bool relu,
                         const PooledGrad<T>* pooled = nullptr) {
  const Dims d = dims_of(p);
  const PaddedWidth pw = padded_width(p, d.Cg);
  const std::vector<int64_t> padded_pos = padded_positions(p, pw, pooled != nullptr);
  const ImageSplit split = split_images(ctx, p);
  const int64_t pad_size = pw.size;
  const int64_t out_size = d.OCg * p.OH * pw.Wp;
  for_each_image<T>(ctx, p, split, pad_size + out_size, [&](int64_t, int64_t n, bool, T* buf) {
    T* xpad = buf;
    T* ypw = buf + pad_size;
    for (int64_t g = 0; g < p.groups; ++g) {
      pad_input(p, pw, d.Cg, x, x_mask, pooled, padded_pos.data(), n, g, xpad);
      Operand<T> B{xpad, 0, 1};
      B.row_offsets = pw.off.data();
      const Operand<T> A{w + g * d.OCg * d.CKK, d.CKK, 1};
      Epilogue<T> ep;
      ep.row_bias = bias ? bias + g * d.OCg : nullptr;
      ep.relu = relu;
      gemm(split.inner, d.OCg, pw.Q, d.CKK, A, B, ypw, p.OH * pw.Wp, ep);
      T* yg = y + (n * p.OC + g * d.OCg) * d.OHW;
      for (int64_t oc = 0; oc < d.OCg; ++oc)
        for (int64_t oh = 0; oh < p.OH; ++oh) {
          const T* src = ypw + oc * p.OH * pw.Wp + oh * pw.Wp;
          std::copy(src, src + p.OW, yg + oc * d.OHW + oh * p.OW);
        }
    }
  });
}

// The same conv in the GEMM's window form (gemm_windows): each output pixel is a window of the
// padded image at the offsets pw.off, so the image is broadcast in place, the weights are packed
// once for the whole batch, and y is written directly, with no padded-width columns computed.
// Its register tile is a few pixels by NR output channels, so it pays from kWindowMinChannels
// output channels per group; thinner convs take conv2d_padded_width, whose tile is the other way.
constexpr int64_t kWindowMinChannels = 16;
constexpr int64_t kWindowMinTaps = 3;

// Runs the window-form conv image by image: image n's output goes to out(n, extra), then
// done(inner, n, extra) is called, extra being `extra_size` elements of the chunk's own scratch
// and inner the chunk's thread context (the fused conv->ReLU->pool writes each image's
// activation there and pools it).
template <typename T, typename Out, typename Done>
void conv2d_windows_each(const Context& ctx, const Conv2dParams& p, const T* x, const T* x_mask,
                         const T* w, const T* bias, bool relu, int64_t extra_size, const Out& out,
                         const Done& done, const PooledGrad<T>* pooled = nullptr) {
  const Dims d = dims_of(p);
  const PaddedWidth pw = padded_width(p, d.Cg);
  const std::vector<int64_t> padded_pos = padded_positions(p, pw, pooled != nullptr);
  const ImageSplit split = split_images(ctx, p);
  std::vector<WindowWeights<T>> weights;
  for (int64_t g = 0; g < p.groups; ++g) {
    weights.push_back(window_weights<T>(ctx, d.OCg, d.CKK));
    pack_window_rows(weights.back(), 0, d.CKK, w + g * d.OCg * d.CKK, d.CKK);
  }
  Epilogue<T> ep;
  ep.relu = relu;
  for_each_image<T>(ctx, p, split, pw.size + extra_size, [&](int64_t, int64_t n, bool, T* buf) {
    T* xpad = buf;
    T* extra = buf + pw.size;
    T* y = out(n, extra);
    for (int64_t g = 0; g < p.groups; ++g) {
      pad_input(p, pw, d.Cg, x, x_mask, pooled, padded_pos.data(), n, g, xpad);
      Epilogue<T> ep_g = ep;
      ep_g.row_bias = bias ? bias + g * d.OCg : nullptr;
      gemm_windows(split.inner, weights[static_cast<size_t>(g)], p.OH, p.OW, pw.Wp, xpad,
                   pw.off.data(), y + g * d.OCg * d.OHW, d.OHW, ep_g);
    }
    done(split.inner, n, extra);
  });
}

template <typename T>
void conv2d_windows(const Context& ctx, const Conv2dParams& p, const T* x, const T* x_mask,
                    const T* w, const T* bias, T* y, bool relu, const PooledGrad<T>* pooled) {
  const int64_t image_size = p.OC * p.OH * p.OW;
  conv2d_windows_each(
      ctx, p, x, x_mask, w, bias, relu, 0, [&](int64_t n, T*) { return y + n * image_size; },
      [](const Context&, int64_t, T*) {}, pooled);
}

// True when no element of x[0, n) is an Inf or a NaN: no exponent field all ones. Integer bit
// tests, so the compiler vectorises the loop (a float test would need reassociation).
template <typename T>
bool all_finite(const T* x, int64_t n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(U), "float or double");
  constexpr U kExponent = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    U bits;
    std::memcpy(&bits, x + i, sizeof bits);
    bad |= U((bits & kExponent) == kExponent);
  }
  return bad == 0;
}

// all_finite over ctx's threads, for whole batches.
template <typename T>
bool all_finite(const Context& ctx, const T* x, int64_t n) {
  std::atomic<bool> ok{true};
  parallel_for(ctx, n, 1 << 16, [&](int64_t begin, int64_t end) {
    if (!all_finite(x + begin, end - begin)) ok = false;
  });
  return ok.load();
}

// Winograd F(2x2, 3x3) or F(2x2, 5x5) (winograd.h) for a stride-1, undilated 3x3 or 5x5 conv
// with enough channels on both sides for its GEMMs to fill the window form's tile; 2.25x (3x3)
// or 2.8x (5x5) fewer multiplies than the direct window form. Off when ctx.winograd is
// (fastlayers.set_cpu_winograd).
bool use_winograd(const Context& ctx, const Conv2dParams& p) {
  return ctx.winograd && winograd_kernel_size(p.KH) && p.KW == p.KH && p.stride_h == 1 &&
         p.stride_w == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
         p.OC / p.groups >= kWindowMinChannels && p.C / p.groups >= kWindowMinChannels &&
         p.OH > 0 && p.OW > 0 && p.H > 0 && p.W > 0;
}

// conv2d_windows_each's contract, in Winograd's form. Returns false, having done nothing, when an
// input or weight is Inf or NaN: the transforms would spread it over whole tiles, where the
// direct sum confines it to the windows that hold it.
template <typename T, typename Out, typename Done>
bool conv2d_winograd_each(const Context& ctx, const Conv2dParams& p, const T* x, const T* x_mask,
                          const T* w, const T* bias, bool relu, int64_t extra_size, const Out& out,
                          const Done& done, const PooledGrad<T>* pooled = nullptr) {
  const Dims d = dims_of(p);
  if (!all_finite(w, p.OC * d.CKK)) return false;
  if (pooled ? !all_finite(ctx, pooled->grad, p.N * p.C * pooled->pooled())
             : !all_finite(ctx, x, p.N * p.C * d.HW))
    return false;
  const WinogradTiles g = winograd_tiles(p.KH, p.OH, p.OW);
  // A pooled input's scatter targets: every input pixel's place in its channel's quad planes
  // (all of them lie inside: 2 * Wq >= OW + K - 1 = W + pad_left + pad_right, and the same for
  // rows).
  std::vector<int64_t> pos(static_cast<size_t>(pooled ? d.HW : 0));
  for (int64_t q = 0; q < static_cast<int64_t>(pos.size()); ++q)
    pos[static_cast<size_t>(q)] = winograd_quad_offset(g, q / p.W + p.pad_top, q % p.W + p.pad_left);
  // U[xi] = (G w G^T)[xi] per group, as [OCg, Cg] matrices packed for the window form.
  std::vector<WindowWeights<T>> weights;
  const int64_t KK = p.KH * p.KW;
  std::vector<T> U(static_cast<size_t>(g.points * d.OCg * d.Cg));
  for (int64_t grp = 0; grp < p.groups; ++grp) {
    const Operand<T> kron{winograd_weight_transform<T>(p.KH), KK, 1};
    const Operand<T> taps{w + grp * d.OCg * d.CKK, 1, KK};  // [KK, OCg * Cg]
    gemm(ctx, g.points, d.OCg * d.Cg, KK, kron, taps, U.data(), d.OCg * d.Cg, Epilogue<T>{});
    for (int64_t xi = 0; xi < g.points; ++xi) {
      weights.push_back(window_weights<T>(ctx, d.OCg, d.Cg));
      pack_window_rows(weights.back(), 0, d.Cg, U.data() + xi * d.OCg * d.Cg, d.Cg);
    }
  }
  std::vector<int64_t> a_off(static_cast<size_t>(d.Cg));
  for (int64_t c = 0; c < d.Cg; ++c) a_off[static_cast<size_t>(c)] = c * g.Sv;
  const int64_t quad_size = d.Cg * 4 * g.Sq;
  const WinogradScratch sc = winograd_scratch(g, d.Cg, d.OCg, weights[0].NR);
  const ImageSplit split = split_images(ctx, p);
  for_each_image<T>(ctx, p, split, quad_size + sc.v + sc.m + sc.s + extra_size,
                    [&](int64_t, int64_t n, bool, T* buf) {
    T* quads = buf;
    T* V = quads + quad_size;
    T* M = V + sc.v;
    T* S = M + sc.m;
    T* extra = S + sc.s;
    T* y = out(n, extra);
    for (int64_t grp = 0; grp < p.groups; ++grp) {
      std::fill(quads, quads + quad_size, T(0));
      const int64_t first = n * p.C + grp * d.Cg;  // the group's first input plane
      for (int64_t c = 0; c < d.Cg; ++c) {
        T* dst = quads + c * 4 * g.Sq;
        if (pooled) {
          unpool_plane(*pooled, first + c, pos.data(), dst);
          continue;
        }
        winograd_fill_quads(weights[0].isa, g, p.H, p.W, p.pad_top, p.pad_left,
                            x + (first + c) * d.HW, x_mask ? x_mask + (first + c) * d.HW : nullptr,
                            dst);
      }
      winograd_image(g, d.Cg, d.OCg, quads, weights.data() + grp * g.points, a_off.data(), V, M, S,
                     bias ? bias + grp * d.OCg : nullptr, relu, y + grp * d.OCg * d.OHW);
    }
    done(split.inner, n, extra);
  });
  return true;
}

bool use_windows(const Conv2dParams& p) { return p.OC / p.groups >= kWindowMinChannels; }

// A stride-1 conv, in whichever form fits its channels.
template <typename T>
void conv2d_stride1(const Context& ctx, const Conv2dParams& p, const T* x, const T* x_mask,
                    const T* w, const T* bias, T* y, bool relu,
                    const PooledGrad<T>* pooled = nullptr) {
  const int64_t image_size = p.OC * p.OH * p.OW;
  if (use_winograd(ctx, p) &&
      conv2d_winograd_each(
          ctx, p, x, x_mask, w, bias, relu, 0, [&](int64_t n, T*) { return y + n * image_size; },
          [](const Context&, int64_t, T*) {}, pooled))
    return;
  if (use_windows(p))
    conv2d_windows(ctx, p, x, x_mask, w, bias, y, relu, pooled);
  else
    conv2d_padded_width(ctx, p, x, x_mask, w, bias, y, relu, pooled);
}

// grad_weight in the window form: its tile is (kh, kw) taps of one row of the kernel by NR output
// channels, so it needs unit dilation along the row, and enough taps and channels to fill.
bool use_windows_grad_weight(const Conv2dParams& p) {
  return p.dilation_w == 1 && p.OC / p.groups >= kWindowMinChannels && p.KW >= kWindowMinTaps;
}

// grad_weight of a stride-1 conv in the GEMM's dot-product form, over a few images at once:
//   gw[oc][k] (+)= sum_images sum_q gyp[oc][q] * xpad[off[k] + q]
// with xpad each image padded as for the forward (PaddedWidth) and gyp its grad_output, masked
// by the ReLU, laid out with the same row pitch Wp: gyp[oc][oh * Wp + ow], zero in the Wp - OW
// columns past each row and up to the next multiple of kGemmDotAlign. Both operands are read in
// place, so nothing is transposed or packed, and one lane sum serves the whole group of images.
// The zero columns meet real pixels of xpad, so a group with an Inf or a NaN in its input takes
// the im2col path instead (0 * Inf is NaN). This prepares one image's two operands.
template <typename T>
void grad_weight_dot_operands(const Conv2dParams& p, const PaddedWidth& pw, int64_t Qd, const T* gy,
                              const T* mask, const T* x, T* xpad, T* gyp) {
  const Dims d = dims_of(p);
  pad_planes(p, pw, d.Cg, x, static_cast<const T*>(nullptr), xpad);
  std::fill(gyp, gyp + d.OCg * Qd, T(0));
  for (int64_t oc = 0; oc < d.OCg; ++oc) {
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const int64_t o = (oc * p.OH + oh) * p.OW;
      T* dst = gyp + oc * Qd + oh * pw.Wp;
      if (mask) {
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const T v = gy[o + ow], k = mask[o + ow];  // both loaded: a select, not a branch
          dst[ow] = k <= T(0) ? T(0) : v;
        }
      } else {
        std::copy(gy + o, gy + o + p.OW, dst);
      }
    }
  }
}
}  // namespace

template <typename T>
void conv2d_forward(const Context& ctx, const Conv2dParams& p, const T* x, const T* w,
                    const T* bias, T* y, bool relu) {
  const Dims d = dims_of(p);
  if (!d.pointwise && use_padded_width(p)) {
    conv2d_stride1(ctx, p, x, static_cast<const T*>(nullptr), w, bias, y, relu);
    return;
  }
  const ImageSplit split = split_images(ctx, p);
  for_each_image<T>(ctx, p, split, 0, [&](int64_t, int64_t n, bool, T*) {
    for (int64_t g = 0; g < p.groups; ++g) {
      const T* xg = x + (n * p.C + g * d.Cg) * d.HW;
      const Im2col<T> cols{xg, &p};
      Operand<T> B{xg, d.HW, 1};
      if (!d.pointwise) B.im2col = &cols;
      const Operand<T> A{w + g * d.OCg * d.CKK, d.CKK, 1};
      Epilogue<T> ep;
      ep.row_bias = bias ? bias + g * d.OCg : nullptr;
      ep.relu = relu;
      gemm(split.inner, d.OCg, d.OHW, d.CKK, A, B, y + (n * p.OC + g * d.OCg) * d.OHW, d.OHW, ep);
    }
  });
}

// conv2d_grad_input, from gy (masked by relu_output) or, when `pooled` is set, from a pooled
// gradient: at stride 1 unpooled image by image straight into the padded planes the conv reads,
// otherwise into a whole unpooled copy first.
template <typename T>
void grad_input_impl(const Context& ctx, const Conv2dParams& p, const T* gy, const T* w,
                     const T* relu_output, const PooledGrad<T>* pooled, T* gx) {
  const Dims d = dims_of(p);
  // Stride 1: grad_input is itself a stride-1 conv, of grad_output (masked by the ReLU) with the
  // weights flipped in space and transposed in channels, padded by (K - 1) * dilation - padding.
  // Even with 1 to 6 input channels, where its GEMM's register tile is mostly empty, this beats
  // the col2im path below (measured 1.2 to 4x on the models' first layers, 1 and 2 threads).
  // col2im is left for stride > 1 and for padding past the kernel's reach.
  const int64_t pad_top = (p.KH - 1) * p.dilation_h - p.pad_top;
  const int64_t pad_left = (p.KW - 1) * p.dilation_w - p.pad_left;
  if (!d.pointwise && use_padded_width(p) && pad_top >= 0 && pad_left >= 0 &&
      p.H > 0 && p.W > 0) {
    Conv2dParams t = p;
    t.C = p.OC, t.H = p.OH, t.W = p.OW, t.OC = p.C, t.OH = p.H, t.OW = p.W;
    t.pad_top = pad_top, t.pad_left = pad_left;
    std::vector<T> wt(static_cast<size_t>(p.C * d.OCg * p.KH * p.KW));  // [C, OC/groups, KH, KW]
    for (int64_t g = 0; g < p.groups; ++g)
      for (int64_t oc = 0; oc < d.OCg; ++oc)
        for (int64_t c = 0; c < d.Cg; ++c)
          for (int64_t k = 0; k < p.KH * p.KW; ++k)
            wt[(((g * d.Cg + c) * d.OCg + oc) * p.KH * p.KW) + (p.KH * p.KW - 1 - k)] =
                w[((g * d.OCg + oc) * d.Cg + c) * p.KH * p.KW + k];
    conv2d_stride1(ctx, t, gy, relu_output, wt.data(), static_cast<const T*>(nullptr), gx, false,
                   pooled);
    return;
  }
  std::vector<T> unpooled;
  if (pooled) {
    unpooled.resize(static_cast<size_t>(p.N * p.OC * d.OHW));
    unpool_images(p, *pooled, 0, p.N, unpooled.data());
    gy = unpooled.data(), relu_output = nullptr;
  }
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
void conv2d_grad_input(const Context& ctx, const Conv2dParams& p, const T* gy, const T* w,
                       const T* relu_output, T* gx) {
  grad_input_impl(ctx, p, gy, w, relu_output, static_cast<const PooledGrad<T>*>(nullptr), gx);
}

template <typename T>
void conv2d_grad_input_pooled(const Context& ctx, const Conv2dParams& p, const Pool2dParams& pool,
                              const T* gy, const int64_t* indices, const T* relu_output,
                              const T* w, T* gx) {
  PoolTaps::Tables tables;
  const PooledGrad<T> src{pool, gy, indices, relu_output, PoolTaps::make(ctx, pool, tables)};
  grad_input_impl(ctx, p, static_cast<const T*>(nullptr), w, static_cast<const T*>(nullptr), &src,
                  gx);
}

// conv2d_grad_weight, from gy (masked by relu_output) or, when `pooled` is set, from a pooled
// gradient unpooled a group of images at a time into a per-chunk buffer that stays in cache
// (gy and relu_output are then unused).
template <typename T>
void grad_weight_impl(const Context& ctx, const Conv2dParams& p, const T* gy, const T* x,
                      const T* relu_output, const PooledGrad<T>* pooled, T* gw) {
  const Dims d = dims_of(p);
  const int64_t w_size = p.OC * d.CKK;
  if (p.N == 0) {
    std::fill(gw, gw + w_size, T(0));
    return;
  }
  const ImageSplit split = split_images(ctx, p);
  // Stride 1: the window form (see grad_weight_windows below) where its tile fills, else the
  // dot-product form (grad_weight_dot_operands), on groups of images whose operands fit in about
  // half of L2 together.
  const bool dot = !d.pointwise && use_padded_width(p);
  const bool windows = dot && use_windows_grad_weight(p);
  const PaddedWidth pw = dot ? padded_width(p, d.Cg) : PaddedWidth{};
  const int64_t Qd = round_up(pw.Q, kGemmDotAlign);
  const int64_t pad_size = pw.size, gyp_size = d.OCg * (windows ? 0 : Qd);
  const int64_t operand_size = pad_size + d.OCg * (windows ? d.OHW : Qd);
  const int64_t group =
      dot ? std::clamp<int64_t>(int64_t(512 * 1024 / sizeof(T)) / operand_size, 1, 8) : 1;
  std::vector<T> scratch(static_cast<size_t>(dot ? split.chunks * group * (pad_size + gyp_size) : 0));
  // The window form: per chunk, grad_output's panels for a group of images; a_off[i * OHW + q]
  // is output pixel q of the group's image i in the padded images.
  std::vector<WindowWeights<T>> gy_panels;
  std::vector<int64_t> a_off;
  if (windows) {
    for (int64_t c = 0; c < split.chunks; ++c) gy_panels.push_back(window_weights<T>(ctx, d.OCg, group * d.OHW));
    a_off.resize(static_cast<size_t>(group * d.OHW));
    for (int64_t i = 0; i < group; ++i)
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) a_off[(i * p.OH + oh) * p.OW + ow] = i * pad_size + oh * pw.Wp + ow;
  }
  // Chunk 0 sums into gw itself; the others into partial sums, added in chunk order below.
  std::vector<T> partial(static_cast<size_t>((split.chunks - 1) * w_size));
  parallel_chunks(ctx, split.chunks, [&](int64_t chunk) {
    T* out = chunk == 0 ? gw : partial.data() + (chunk - 1) * w_size;
    T* xpads = scratch.data() + chunk * group * (pad_size + gyp_size);
    T* gyps = xpads + group * pad_size;
    const int64_t begin = chunk * split.images_per_chunk;
    const int64_t end = std::min(p.N, begin + split.images_per_chunk);
    for (int64_t n0 = begin; n0 < end; n0 += group) {
      const int64_t count = std::min(group, end - n0);
      // A pooled gradient: the group's images unpooled into this thread's buffer, read there.
      const T* gy_src = gy;
      const T* mask_src = relu_output;
      int64_t first = 0;  // the image gy_src starts at
      if (pooled) {
        struct UnpooledTag;
        T* dense = thread_scratch<T, UnpooledTag>(count * p.OC * d.OHW);
        unpool_images(p, *pooled, n0, count, dense);
        gy_src = dense, mask_src = nullptr, first = n0;
      }
      for (int64_t g = 0; g < p.groups; ++g) {
        auto y_off = [&](int64_t n) { return ((n - first) * p.OC + g * d.OCg) * d.OHW; };
        auto x_of = [&](int64_t n) { return x + (n * p.C + g * d.Cg) * d.HW; };
        T* gw_g = out + g * d.OCg * d.CKK;
        if (windows) {
          // For each input channel c, gemm_windows with (h, w) = (kh, kw) and K = the group's
          // output pixels: gw[oc][c][kh][kw] (+)= sum_q xpad[c][oh + kh][ow + kw] * gy[oc][q].
          // Only real output pixels are summed, as torch's im2col does, so Inf and NaN inputs
          // need no special care.
          WindowWeights<T>& b = gy_panels[static_cast<size_t>(chunk)];
          b.K = count * d.OHW;  // the panels hold `group` images; this group may have fewer
          for (int64_t i = 0; i < count; ++i) {
            const int64_t o = y_off(n0 + i);
            pad_planes(p, pw, d.Cg, x_of(n0 + i), static_cast<const T*>(nullptr), xpads + i * pad_size);
            pack_window_rows(b, i * d.OHW, d.OHW, gy_src + o, d.OHW, mask_src ? mask_src + o : nullptr);
          }
          Epilogue<T> ep;
          ep.accumulate = n0 != begin;
          for (int64_t c = 0; c < d.Cg; ++c)
            gemm_windows(split.inner, b, p.KH, p.KW, p.dilation_h * pw.Wp, xpads + c * pw.Hp * pw.Wp,
                         a_off.data(), gw_g + c * p.KH * p.KW, d.CKK, ep);
          continue;
        }
        bool finite = dot;
        for (int64_t i = 0; i < count && finite; ++i) finite = all_finite(x_of(n0 + i), d.Cg * d.HW);
        if (finite) {
          for (int64_t i = 0; i < count; ++i) {
            const int64_t o = y_off(n0 + i);
            grad_weight_dot_operands(p, pw, Qd, gy_src + o, mask_src ? mask_src + o : nullptr,
                                     x_of(n0 + i), xpads + i * pad_size, gyps + i * gyp_size);
          }
          gemm_dot(split.inner, d.OCg, d.CKK, Qd, gyps, Qd, xpads, pw.off.data(), gw_g, d.CKK,
                   Epilogue<T>{n0 != begin}, DotBatch{count, gyp_size, pad_size});
          continue;
        }
        for (int64_t i = 0; i < count; ++i) {
          const int64_t o = y_off(n0 + i);
          const T* xg = x_of(n0 + i);
          const Operand<T> A{gy_src + o, d.OHW, 1, mask_src ? mask_src + o : nullptr};
          const Im2col<T> cols_t{xg, &p, /*transposed=*/true};
          Operand<T> B{xg, 1, d.HW};  // x_g^T
          if (!d.pointwise) B.im2col = &cols_t;  // cols^T
          Epilogue<T> ep;
          ep.accumulate = n0 != begin || i > 0;
          gemm(split.inner, d.OCg, d.CKK, d.OHW, A, B, gw_g, d.CKK, ep);
        }
      }
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

template <typename T>
void conv2d_grad_weight(const Context& ctx, const Conv2dParams& p, const T* gy, const T* x,
                        const T* relu_output, T* gw) {
  grad_weight_impl(ctx, p, gy, x, relu_output, static_cast<const PooledGrad<T>*>(nullptr), gw);
}

namespace {

// The padded planes of a strided conv's image for im2col_rows: every window inside, the image at
// (pad_top, pad_left), as pad_planes fills them.
PaddedWidth strided_padding(const Conv2dParams& p, int64_t channels) {
  PaddedWidth pw;
  pw.Hp = std::max(p.H + p.pad_top, (p.OH - 1) * p.stride_h + (p.KH - 1) * p.dilation_h + 1);
  pw.Wp = std::max(p.W + p.pad_left, (p.OW - 1) * p.stride_w + (p.KW - 1) * p.dilation_w + 1);
  pw.Q = 0;  // not a padded-width GEMM operand
  pw.size = channels * pw.Hp * pw.Wp;
  return pw;
}

// Rows q = oh * OW + ow of one image's im2col matrix transposed, from its padded planes xpad:
// P[q * ldp + (c * KH + kh) * KW + kw] = xpad[c][oh * sh + kh * dh][ow * sw + kw * dw]. For
// strides above 1 (stride 1 takes the engine's transposes, pack_gather_operand); columns past
// channels * KH * KW are left as they are.
template <typename T>
void im2col_rows(const Conv2dParams& p, const PaddedWidth& pw, int64_t channels, const T* xpad,
                 int64_t ldp, T* P) {
  const int64_t plane = pw.Hp * pw.Wp;
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      T* dst = P + (oh * p.OW + ow) * ldp;
      const T* corner = xpad + oh * p.stride_h * pw.Wp + ow * p.stride_w;
      for (int64_t c = 0; c < channels; ++c) {
        for (int64_t kh = 0; kh < p.KH; ++kh, dst += p.KW) {
          const T* src = corner + c * plane + kh * p.dilation_h * pw.Wp;
          for (int64_t kw = 0; kw < p.KW; ++kw) dst[kw] = src[kw * p.dilation_w];
        }
      }
    }
  }
}

// Whether the gather form pays for a pooled weight gradient: for few taps per output channel
// (C / groups * KH * KW) and many output channels, where the dense product's register tile is
// mostly empty and the patch matrix built per image serves many channels. Measured, 2 x 2
// pools, batch 64, 2 threads, against the dense kernels on the unpooled gradient: 1 -> 32 5x5
// and 3 -> 32 3x3 1.3 to 1.8x faster; 3 -> 6 5x5 (75 taps, 6 channels) 0.7 to 0.85x; 6 -> 16
// 5x5 and 32 -> 64 about even, the dense kernels running near the FMA peak there.
bool gather_pays(const Conv2dParams& p) {
  const Dims d = dims_of(p);
  return d.CKK <= 64 && d.OCg >= 16;
}

}  // namespace

template <typename T>
void conv2d_grad_weight_pooled(const Context& ctx, const Conv2dParams& p, const Pool2dParams& pool,
                               const T* gy, const int64_t* indices, const T* relu_output,
                               const T* x, T* gw) {
  PoolTaps::Tables tables;
  const PooledGrad<T> src{pool, gy, indices, relu_output, PoolTaps::make(ctx, pool, tables)};
  if (!gather_pays(p)) {  // the dense kernels, fed a group of images' unpooled gradient at a time
    grad_weight_impl(ctx, p, static_cast<const T*>(nullptr), x, static_cast<const T*>(nullptr),
                     &src, gw);
    return;
  }
  const int64_t pooled = src.pooled();
  const Dims d = dims_of(p);
  const int64_t ldp = round_up(d.CKK, kGemmDotAlign);  // the gather form's column multiple
  const int64_t part_size = p.OC * ldp;
  // The patch matrix P, one row per output position: at stride 1 the padded-width im2col matrix
  // (PaddedWidth), transposed by the engine, whose rows are positions oh * Wp + ow; otherwise
  // rows oh * OW + ow, copied from a padded image by im2col_rows.
  const bool stride1 = use_padded_width(p);
  const PaddedWidth pw = stride1 ? padded_width(p, d.Cg) : strided_padding(p, d.Cg);
  const int64_t rows = stride1 ? pw.Q : d.OHW;
  const int64_t pad_size = pw.size;
  const int64_t P_size = rows * ldp;
  std::vector<int64_t> position(static_cast<size_t>(d.OHW));  // P's row of each activation pixel
  for (int64_t q = 0; q < d.OHW; ++q)
    position[static_cast<size_t>(q)] = stride1 ? (q / p.OW) * pw.Wp + q % p.OW : q;
  // Whole images per thread, each thread summing into its own partial gw (padded rows).
  const double work = double(p.N) * (double(p.OC) * pooled * ldp + double(d.OHW) * d.CKK);
  const Context run = context_for_work(ctx, work);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(run.num_threads, p.N));
  const int64_t per_chunk = ceil_div(p.N, chunks);
  Context serial = ctx;
  serial.num_threads = 1;
  // Per chunk, in its thread's scratch (kept for the next call): the partial sums, P, the padded
  // image, a group's masked gradient, its columns (P's rows) and, for an image with Inf or NaN,
  // its unpooled gradient.
  const int64_t scratch_size = part_size + P_size + pad_size + d.OCg * pooled + d.OCg * d.OHW;
  std::vector<T*> parts(static_cast<size_t>(chunks));
  parallel_chunks(run, chunks, [&](int64_t chunk) {
    struct PooledScratchTag;
    T* part = thread_scratch<T, PooledScratchTag>(scratch_size);
    int64_t* cols = thread_scratch<int64_t, PooledScratchTag>(d.OCg * pooled);
    parts[static_cast<size_t>(chunk)] = part;
    T* P = part + part_size;
    T* xpad = P + P_size;
    T* grad = xpad + pad_size;
    T* unpooled = grad + d.OCg * pooled;
    std::fill(part, part + part_size, T(0));
    if (!stride1) {  // P's padding columns, which im2col_rows never writes
      for (int64_t q = 0; q < rows; ++q) std::fill(P + q * ldp + d.CKK, P + (q + 1) * ldp, T(0));
    }
    const int64_t end = std::min(p.N, (chunk + 1) * per_chunk);
    for (int64_t n = chunk * per_chunk; n < end; ++n) {
      for (int64_t g = 0; g < p.groups; ++g) {
        const T* xg = x + (n * p.C + g * d.Cg) * d.HW;
        pad_planes(p, pw, d.Cg, xg, static_cast<const T*>(nullptr), xpad);
        if (stride1) {
          pack_gather_operand(serial, rows, d.CKK, xpad, pw.off.data(), P, ldp);
        } else {
          im2col_rows(p, pw, d.Cg, xpad, ldp, P);
        }
        const int64_t o = (n * p.OC + g * d.OCg) * pooled;  // the group's first gradient row
        const T* mask = relu_output ? relu_output + o : nullptr;
        // An index that is not one of its window's taps passes nothing (column 0, weight 0).
        // Every index tested at once where the CPU can (PoolTaps::all), else one by one.
        const PoolTaps taps = src.taps;
        auto terms = [&](auto test_each) {
          for (int64_t oc = 0, t = 0; oc < d.OCg; ++oc) {
            for (int64_t ph = 0; ph < pool.OH; ++ph) {
              for (int64_t pw_ = 0; pw_ < pool.OW; ++pw_, ++t) {
                const int64_t q = indices[o + t];
                const bool tap = !test_each || taps(ph, pw_, q);
                // A NaN mask passes, as in torch.
                grad[t] = zero_unless(tap && !(mask && mask[t] <= T(0)), gy[o + t]);
                cols[t] = position[static_cast<size_t>(tap ? q : 0)];
              }
            }
          }
        };
        if (taps.all(indices + o, d.OCg)) {
          terms(std::false_type{});
        } else {
          terms(std::true_type{});
        }
        T* part_g = part + g * d.OCg * ldp;
        if (all_finite(xg, d.Cg * d.HW)) {
          gemm_gather(serial, d.OCg, ldp, pooled, grad, pooled, cols, pooled, P, rows, ldp, part_g,
                      ldp, /*accumulate=*/true);
          continue;
        }
        // Inf or NaN in the image: every position counts, as in the dense product that torch
        // computes (0 * Inf is NaN there too).
        std::fill_n(unpooled, d.OCg * d.OHW, T(0));
        for (int64_t oc = 0; oc < d.OCg; ++oc) {
          unpool_plane(src, n * p.OC + g * d.OCg + oc, static_cast<const int64_t*>(nullptr),
                       unpooled + oc * d.OHW);
        }
        gemm_gather(serial, d.OCg, ldp, d.OHW, unpooled, d.OHW, position.data(), 0, P, rows, ldp,
                    part_g, ldp, /*accumulate=*/true);
      }
    }
  });
  // gw = the partial sums, added in chunk order, without the padding columns.
  for (int64_t oc = 0; oc < p.OC; ++oc) {
    for (int64_t k = 0; k < d.CKK; ++k) {
      T s = parts[0][oc * ldp + k];
      for (int64_t c = 1; c < chunks; ++c) s += parts[static_cast<size_t>(c)][oc * ldp + k];
      gw[oc * d.CKK + k] = s;
    }
  }
}

template <typename T>
void conv2d_relu_max_pool2d_forward(const Context& ctx, const Conv2dParams& p,
                                    const Pool2dParams& pool, const T* x, const T* w,
                                    const T* bias, T* y, int64_t* indices) {
  const int64_t in_size = p.C * p.H * p.W, act_size = p.OC * p.OH * p.OW;
  const int64_t out_size = p.OC * pool.OH * pool.OW;
  Conv2dParams image = p;
  image.N = 1;
  Pool2dParams image_pool = pool;
  image_pool.planes = p.OC;
  if (!dims_of(p).pointwise && use_padded_width(p) && use_windows(p)) {
    // The weights packed once for the batch; each image's activation pooled while it is hot.
    const auto act = [](int64_t, T* a) { return a; };
    const auto pool_image = [&](const Context& inner, int64_t n, T* a) {
      max_pool2d_forward(inner, image_pool, a, y + n * out_size, indices + n * out_size);
    };
    if (use_winograd(ctx, p) && conv2d_winograd_each(ctx, p, x, static_cast<const T*>(nullptr),
                                                     w, bias, /*relu=*/true, act_size, act,
                                                     pool_image))
      return;
    conv2d_windows_each(ctx, p, x, static_cast<const T*>(nullptr), w, bias, /*relu=*/true,
                        act_size, act, pool_image);
    return;
  }
  const ImageSplit split = split_images(ctx, p);
  for_each_image<T>(ctx, p, split, act_size, [&](int64_t, int64_t n, bool, T* act) {
    conv2d_forward(split.inner, image, x + n * in_size, w, bias, act, /*relu=*/true);
    max_pool2d_forward(split.inner, image_pool, act, y + n * out_size, indices + n * out_size);
  });
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template void conv2d_forward<T>(const Context&, const Conv2dParams&, const T*, const T*,      \
                                  const T*, T*, bool);                                          \
  template void conv2d_grad_input<T>(const Context&, const Conv2dParams&, const T*, const T*,   \
                                     const T*, T*);                                             \
  template void conv2d_grad_weight<T>(const Context&, const Conv2dParams&, const T*, const T*,  \
                                      const T*, T*);                                            \
  template void conv2d_relu_max_pool2d_forward<T>(const Context&, const Conv2dParams&,          \
                                                  const Pool2dParams&, const T*, const T*,      \
                                                  const T*, T*, int64_t*);                      \
  template void conv2d_grad_weight_pooled<T>(const Context&, const Conv2dParams&,               \
                                             const Pool2dParams&, const T*, const int64_t*,      \
                                             const T*, const T*, T*);                            \
  template void conv2d_grad_input_pooled<T>(const Context&, const Conv2dParams&,                \
                                            const Pool2dParams&, const T*, const int64_t*,       \
                                            const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
