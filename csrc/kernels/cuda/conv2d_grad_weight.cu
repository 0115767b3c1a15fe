// conv2d's weight gradient, plain and through a fused max-pool: an implicit GEMM, or the
// thin-layer grad_weight kernel below.
#include "conv2d.cuh"

namespace fastlayers::cuda {

using namespace conv;

namespace {

// conv2d_grad_weight of a thin layer: gw[oc, k] = sum over images n and output pixels q of
// gy(n, oc, q) * cols_n[k, q], where the GEMM has M = OCg and N = CKK both small and a long K =
// N * OH * OW that it can only split 32 ways. A work item takes one group's channel tile (8 a
// thread), every tap (4 a thread: a quad), and a split's run of chunks, each up to `chunk`
// consecutive output pixels of one image. Per chunk it stages the input rows (as the forward
// does), the gradient [pixel][channel] read through the gradient source, and each pixel's start
// in the staged rows; each thread sums its 8 x 4 products over the chunk's pixels of its lane
// (pixel i goes to lane i % lanes): 8 gradient values (two 16-byte loads) and 4 input values
// feed 32 FMAs. At the item's end the lanes' sums are added in lane order (8 at a time, through
// the staged input's memory, which is free by then), and the total goes
// to gw, or with several splits to partial sums that split_k_reduce_kernel adds in split order.
// The order depends on the shape and the SM count only: deterministic, as the GEMM's split-K.
struct ThinGradTile {
  static constexpr int kChannels = 8;     // a thread's channels
  static constexpr int kTaps = 4;         // and taps
  static constexpr int kMaxOctets = 4;    // channel groups of 8 in a work item
  static constexpr int kMaxThreads = 256;
  static constexpr int kMaxChunk = 128;   // pixels
  // Static shared memory: the staged input of ThinTile::kPatchBytes, and the gradient.
  static constexpr int kGradientBytes = 16 << 10;
  // A split sums at least this many chunks, so that staging and the lanes' exchange stay small
  // next to its products.
  static constexpr int64_t kMinChunksPerSplit = 4;
  // The lanes exchange this many of their 32 sums at a time, through the staged input's memory.
  static constexpr int kExchanged = 8;
};

struct ThinGradShape {
  ConvGeometry g;
  int64_t patch_width = 0, patch_plane = 0;  // a staged row, and a channel (the rows' bound)
  int64_t chunk = 0, chunks_per_image = 0, chunks = 0;
  int64_t channel_tiles = 0, splits = 1, chunks_per_split = 0;
  int quads = 0, octets = 0, units = 0, lanes = 0;  // units = quads * octets threads per lane
  int gradient_ld = 0;  // the staged gradient's row: 8 * octets, padded
  bool fits = false;
  __host__ __device__ int64_t work() const { return g.p.groups * channel_tiles * splits; }
};

// The thin grad_weight kernel's plan for geometry g on sm_count SMs, in accumulation type A;
// fits is false where it does not apply: more than 8 input channels per group, more than 256
// threads' worth of taps, input rows too large for its shared memory, or nothing to sum over
// (no output pixels: the GEMM stores the zeros).
template <typename A>
ThinGradShape plan_thin_grad_weight(const ConvGeometry& g, int sm_count) {
  using Tile = ThinGradTile;
  const Conv2dParams& p = g.p;
  ThinGradShape s{g};
  if (!thin_layer(g) || g.CKK == 0 || g.OCg == 0 || g.OHW == 0) return s;
  const int64_t quads = ceil_div(g.CKK, Tile::kTaps);
  int64_t octets = std::min<int64_t>(Tile::kMaxOctets, ceil_div(g.OCg, Tile::kChannels));
  while (octets > 1 && quads * octets > Tile::kMaxThreads) --octets;
  if (quads * octets > Tile::kMaxThreads) return s;
  s.quads = static_cast<int>(quads);
  s.octets = static_cast<int>(octets);
  s.units = s.quads * s.octets;
  s.lanes = Tile::kMaxThreads / s.units;
  // A 16-byte pack of padding keeps the rows 16-byte aligned and an odd number of packs long,
  // so that the staging's 16-byte stores for consecutive pixels fall in distinct banks.
  s.gradient_ld = Tile::kChannels * s.octets + Pack<A>::kSize;
  s.chunk = std::min<int64_t>(Tile::kMaxChunk,
                              Tile::kGradientBytes / static_cast<int64_t>(sizeof(A)) /
                                  s.gradient_ld);
  int64_t rows;
  const int64_t output_rows = PixelColumns{p.OH, p.OW}.max_rows(s.chunk);
  if (!fit_staged_input<A>(g, output_rows, s.patch_width, rows)) return s;
  s.patch_plane = rows * s.patch_width;
  s.chunks_per_image = ceil_div(g.OHW, s.chunk);
  s.chunks = p.N * s.chunks_per_image;
  s.channel_tiles = ceil_div(ceil_div(g.OCg, Tile::kChannels), octets);
  // Two blocks per SM, split over the chunks, at least kMinChunksPerSplit each; no split left
  // empty, and partial sums within the GEMM's scratch bound.
  const int64_t items = p.groups * s.channel_tiles;
  const int64_t partial_bytes = p.groups * g.OCg * g.CKK * static_cast<int64_t>(sizeof(A));
  int64_t splits = std::min({ceil_div(2 * std::max(sm_count, 1), items),
                             ceil_div(s.chunks, Tile::kMinChunksPerSplit),
                             (int64_t{256} << 20) / partial_bytes});
  splits = std::max<int64_t>(splits, 1);
  s.chunks_per_split = ceil_div(s.chunks, splits);
  s.splits = s.chunks == 0 ? 1 : ceil_div(s.chunks, s.chunks_per_split);
  s.fits = true;
  return s;
}

template <typename T, typename Gradient>
__global__ void __launch_bounds__(ThinGradTile::kMaxThreads)
    conv2d_thin_grad_weight_kernel(ThinGradShape s, Gradient gy, const T* x, Epilogue<T> ep,
                                   acc_t<T>* partials) {
  using A = acc_t<T>;
  using Tile = ThinGradTile;
  constexpr int kChannels = Tile::kChannels, kTaps = Tile::kTaps;
  static_assert(kChannels % Pack<A>::kSize == 0, "a thread's channels are whole 16-byte packs");
  __shared__ __align__(16) A patch[ThinTile::kPatchBytes / sizeof(A)];
  __shared__ __align__(16) A gradient[Tile::kGradientBytes / sizeof(A)];
  __shared__ int starts[Tile::kMaxChunk];
  static_assert(Tile::kExchanged * Tile::kMaxThreads * sizeof(A) <= ThinTile::kPatchBytes,
                "the lanes' exchange fits in the staged input's memory");
  const ConvGeometry& g = s.g;
  const Conv2dParams& p = g.p;
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid / s.units, unit = tid % s.units;
  const int octet = unit / s.quads, quad = unit % s.quads;
  const int block_channels = kChannels * s.octets;
  const int width = static_cast<int>(s.patch_width), plane = static_cast<int>(s.patch_plane);
  const int Cg = static_cast<int>(g.Cg);

  // Where this thread's taps lie in a staged channel, from the top-left of a pixel's window.
  int tap[kTaps];
#pragma unroll
  for (int j = 0; j < kTaps; ++j) {
    const int64_t k = int64_t{quad} * kTaps + j;
    int64_t c = 0, kh = 0, kw = 0;
    if (k < g.CKK) {
      c = k / g.KHKW;
      kh = k % g.KHKW / p.KW;
      kw = k % p.KW;
    }
    tap[j] = static_cast<int>(c * plane + kh * p.dilation_h * width + kw * p.dilation_w);
  }

  for (int64_t item = blockIdx.x; item < s.work(); item += gridDim.x) {
    const int64_t split = item % s.splits, rest = item / s.splits;
    const int64_t channel_tile = rest % s.channel_tiles, group = rest / s.channel_tiles;
    const int64_t oc0 = channel_tile * block_channels;
    A acc[kChannels][kTaps];
#pragma unroll
    for (int o = 0; o < kChannels; ++o)
#pragma unroll
      for (int j = 0; j < kTaps; ++j) acc[o][j] = A(0);

    const int64_t chunk_end = min((split + 1) * s.chunks_per_split, s.chunks);
    for (int64_t chunk = split * s.chunks_per_split; chunk < chunk_end; ++chunk) {
      const int64_t n = chunk / s.chunks_per_image;
      const int64_t first = chunk % s.chunks_per_image * s.chunk;
      const int count = static_cast<int>(min(s.chunk, g.OHW - first));
      const int64_t r0 = first / p.OW, r1 = (first + count - 1) / p.OW;
      // The input rows r0 * stride_h - pad_top on that these pixels read, as the forward stages
      // them, each channel at a multiple of plane.
      const int rows = static_cast<int>((r1 - r0) * p.stride_h + (p.KH - 1) * p.dilation_h + 1);
      const T* image = x + n * p.C * g.HW + group * g.Cg * g.HW;
      stage_input(patch, plane, p, Cg, r0 * p.stride_h - p.pad_top, rows, width,
                  ImageRows<T>{image, p.H, p.W});
      // The gradient of the tile's channels at these pixels, [pixel][gradient_ld], read along
      // the pixels.
      const int64_t first_plane = n * p.OC + group * g.OCg + oc0;
      stage_packs(gradient, count, block_channels, s.gradient_ld, g.OCg - oc0,
                  [&](int j, int i) { return gy(first_plane + j, first + i); });
      for (int i = tid; i < count; i += blockDim.x) {
        const int64_t oh = (first + i) / p.OW, ow = (first + i) % p.OW;
        starts[i] = static_cast<int>((oh - r0) * p.stride_h * width + ow * p.stride_w);
      }
      __syncthreads();

      for (int i = lane; i < count; i += s.lanes) {
        const int start = starts[i];
        A v[kTaps], d[kChannels];
#pragma unroll
        for (int j = 0; j < kTaps; ++j) v[j] = patch[start + tap[j]];
        load4(&gradient[i * s.gradient_ld + octet * kChannels], d);
        load4(&gradient[i * s.gradient_ld + octet * kChannels + 4], d + 4);
#pragma unroll
        for (int o = 0; o < kChannels; ++o)
#pragma unroll
          for (int j = 0; j < kTaps; ++j) acc[o][j] = fma(d[o], v[j], acc[o][j]);
      }
      __syncthreads();  // the next chunk's staging overwrites what this one read
    }

    // Each sum of the lanes, in lane order, into lane 0's registers, through the staged input's
    // memory.
    add_groups_in_order<Tile::kExchanged, Tile::kMaxThreads>(acc, patch, s.lanes, s.units);
    if (lane == 0) {
      const auto out = ep.at(group);
#pragma unroll
      for (int o = 0; o < kChannels; ++o) {
        const int64_t m = oc0 + octet * kChannels + o;
#pragma unroll
        for (int j = 0; j < kTaps; ++j) {
          const int64_t k = int64_t{quad} * kTaps + j;
          if (m >= g.OCg || k >= g.CKK) continue;
          if (s.splits == 1) {
            out.store(m, k, &acc[o][j]);
          } else {  // partials[split][group][m][k], split_k_reduce_kernel's layout
            partials[((split * p.groups + group) * g.OCg + m) * g.CKK + k] = acc[o][j];
          }
        }
      }
    }
  }
}

// Runs a planned thin grad_weight (plan.fits) on ctx.stream, reading the output gradient
// through gy (a gradient source), into gw [OC, C / groups, KH, KW].
template <typename T, typename Gradient>
cudaError_t thin_grad_weight(const GemmContext& ctx, const ThinGradShape& plan, const Gradient& gy,
                             const T* x, T* gw) {
  const ConvGeometry& g = plan.g;
  const Epilogue<T> ep{gw, BatchOffset{1, g.OCg * g.CKK, 0}, g.CKK};
  acc_t<T>* partials = nullptr;
  if (plan.splits > 1) {
    partials = static_cast<acc_t<T>*>(ctx.workspace->allocate(
        static_cast<size_t>(plan.splits * g.p.groups * g.OCg * g.CKK) * sizeof(acc_t<T>)));
  }
  const cudaError_t err =
      launch(conv2d_thin_grad_weight_kernel<T, Gradient>, grid_size(plan.work(), 1),
             plan.units * plan.lanes, ctx.stream, plan, gy, x, ep, partials);
  if (err != cudaSuccess || plan.splits == 1) return err;
  const int64_t outputs = g.p.groups * g.OCg * g.CKK;
  return launch(split_k_reduce_kernel<T, Epilogue<T>>, grid_size(outputs, kElementwiseBlock),
                kElementwiseBlock, ctx.stream, plan.splits, g.p.groups, g.OCg, g.CKK, partials,
                ep);
}

// gw = the weight gradient of output gradient gy (a gradient source): in the thin kernel where
// it applies, else as an implicit GEMM.
template <typename T, bool kNarrow, typename Gradient>
cudaError_t grad_weight_gemm(const GemmContext& ctx, const ConvGeometry& g, const Gradient& gy,
                             const T* x, T* gw) {
  if (ctx.thin_conv) {
    const ThinGradShape plan = plan_thin_grad_weight<acc_t<T>>(g, ctx.sm_count);
    if (plan.fits) return thin_grad_weight(ctx, plan, gy, x, gw);
  }
  const Conv2dParams& p = g.p;
  // Entry z = g writes group g's filters, gw[g*OCg : (g+1)*OCg] viewed as [OCg, CKK].
  const Epilogue<T> ep{gw, BatchOffset{1, g.OCg * g.CKK, 0}, g.CKK};
  // K = N * OH * OW may be 0 (an empty batch): the GEMM then stores zeros.
  return gemm<T>(ctx, p.groups, g.OCg, g.CKK, p.N * g.OHW,
                 GradOutputRowsOperand<T, kNarrow, Gradient>{gy, g},
                 Im2colTransposedOperand<T, kNarrow>{x, g}, ep);
}

}  // namespace

template <typename T>
cudaError_t conv2d_grad_weight(const GemmContext& ctx, const Conv2dParams& p, const T* gy,
                               const T* x, const T* relu_output, T* gw) {
  const ConvGeometry g(p, ctx.wide_index);
  const DenseGradient<T> source{gy, relu_output, p.OW, g.OHW};
  return g.narrow ? grad_weight_gemm<T, true>(ctx, g, source, x, gw)
                  : grad_weight_gemm<T, false>(ctx, g, source, x, gw);
}

template <typename T>
cudaError_t conv2d_grad_weight_pooled(const GemmContext& ctx, const Conv2dParams& p,
                                      const Pool2dParams& pool, const T* gy,
                                      const int64_t* indices, const T* x, const T* mask, T* gw) {
  const auto windows = [&](const ConvGeometry& g, const auto& source, auto narrow) {
    return grad_weight_gemm<T, decltype(narrow)::value>(ctx, g, source, x, gw);
  };
  const auto composed = [&](const T* activation_grad) {
    return conv2d_grad_weight<T>(ctx, p, activation_grad, x, nullptr, gw);
  };
  return pooled_gradient_pass(ctx, p, pool, gy, indices, mask, windows, composed);
}

template <typename T>
bool conv2d_grad_weight_runs_thin(const Conv2dParams& p) {
  return plan_thin_grad_weight<acc_t<T>>(ConvGeometry(p, false), 1).fits;
}

#define FASTLAYERS_INSTANTIATE(T)                                                               \
  template cudaError_t conv2d_grad_weight<T>(const GemmContext&, const Conv2dParams&, const T*, \
                                             const T*, const T*, T*);                           \
  template cudaError_t conv2d_grad_weight_pooled<T>(const GemmContext&, const Conv2dParams&,    \
                                                    const Pool2dParams&, const T*,              \
                                                    const int64_t*, const T*, const T*, T*);    \
  template bool conv2d_grad_weight_runs_thin<T>(const Conv2dParams&);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
FASTLAYERS_INSTANTIATE(__half)
FASTLAYERS_INSTANTIATE(__nv_bfloat16)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cuda
