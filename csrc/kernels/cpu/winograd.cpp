#include "winograd.h"

#include <array>

#include "gemm_isa.h"

namespace fastlayers::cpu {

WinogradTiles winograd_tiles(int64_t K, int64_t OH, int64_t OW) {
  constexpr int64_t kWidestVector = 16;  // floats in a 512-bit register
  WinogradTiles g;
  g.K = K, g.points = (K + 1) * (K + 1);
  g.OH = OH, g.OW = OW;
  g.TH = ceil_div(OH, 2), g.TW = ceil_div(OW, 2);
  g.Wq = g.TW + K / 2;
  g.Sv = round_up(g.TH * g.Wq, kWidestVector);
  g.Sq = g.Sv + (K / 2) * (g.Wq + 1);
  g.Mplane = g.TH * g.TW;
  return g;
}

namespace {

// G (x) G for an n x k matrix G, row-major [n * n][k * k].
template <typename T, int n, int k>
std::array<T, n * n * k * k> kronecker_square(const double (&G)[n][k]) {
  std::array<T, n * n * k * k> out{};
  for (int u = 0; u < n; ++u)
    for (int v = 0; v < n; ++v)
      for (int r = 0; r < k; ++r)
        for (int s = 0; s < k; ++s) out[(u * n + v) * k * k + r * k + s] = T(G[u][r] * G[v][s]);
  return out;
}

}  // namespace

template <typename T>
const T* winograd_weight_transform(int64_t K) {
  // K = 3: points 0, 1, -1, infinity, as Lavin and Gray scale them (B^T then holds only 0 and
  // +-1; winograd_kernel.inc).
  static const std::array<T, 16 * 9> kron3 = kronecker_square<T, 4, 3>({
      {1, 0, 0},
      {0.5, 0.5, 0.5},
      {0.5, -0.5, 0.5},
      {0, 0, 1},
  });
  // K = 5: points 0, 1/2, -1/2, 2, -2, infinity. Row j is (p_j^k / prod_{l != j} (p_j - p_l))
  // for k < 5, and e_4 for infinity.
  static const std::array<T, 36 * 25> kron5 = kronecker_square<T, 6, 5>({
      {1, 0, 0, 0, 0},
      {-8 / 15.0, -4 / 15.0, -2 / 15.0, -1 / 15.0, -1 / 30.0},
      {-8 / 15.0, 4 / 15.0, -2 / 15.0, 1 / 15.0, -1 / 30.0},
      {1 / 30.0, 1 / 15.0, 2 / 15.0, 4 / 15.0, 8 / 15.0},
      {1 / 30.0, -1 / 15.0, 2 / 15.0, -4 / 15.0, 8 / 15.0},
      {0, 0, 0, 0, 1},
  });
  return K == 3 ? kron3.data() : kron5.data();
}

WinogradScratch winograd_scratch(const WinogradTiles& g, int64_t channels, int64_t out_channels,
                                 int64_t nr) {
  WinogradScratch s;
  s.v = g.points * winograd_v_stride(g, channels);
  s.m = g.points * ceil_div(out_channels, nr) * g.Mplane * nr;
  s.s = round_up(g.OH * g.OW, 16) * nr;  // store_windows_row reads whole 16-position blocks
  return s;
}

template <typename T>
void winograd_image(const WinogradTiles& g, int64_t channels, int64_t out_channels,
                    const T* quads, const WindowWeights<T>* weights, const int64_t* a_off, T* V,
                    T* M, T* S, const T* bias, bool relu, T* y) {
  switch (weights[0].isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      return winograd_image_avx512(g, channels, out_channels, quads, weights, a_off, V, M, S,
                                   bias, relu, y);
    case Isa::avx2:
      return winograd_image_avx2(g, channels, out_channels, quads, weights, a_off, V, M, S, bias,
                                 relu, y);
#endif
    default:
      return winograd_image_generic(g, channels, out_channels, quads, weights, a_off, V, M, S,
                                    bias, relu, y);
  }
}

template <typename T>
void winograd_fill_quads(Isa isa, const WinogradTiles& g, int64_t H, int64_t width,
                         int64_t pad_top, int64_t pad_left, const T* x, const T* mask, T* out) {
  switch (isa) {
#if defined(__x86_64__)
    case Isa::avx512:
      return winograd_fill_quads_avx512(g, H, width, pad_top, pad_left, x, mask, out);
    case Isa::avx2:
      return winograd_fill_quads_avx2(g, H, width, pad_top, pad_left, x, mask, out);
#endif
    default:
      return winograd_fill_quads_generic(g, H, width, pad_top, pad_left, x, mask, out);
  }
}

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template const T* winograd_weight_transform<T>(int64_t);                                    \
  template void winograd_image<T>(const WinogradTiles&, int64_t, int64_t, const T*,           \
                                  const WindowWeights<T>*, const int64_t*, T*, T*, T*,         \
                                  const T*, bool, T*);                                        \
  template void winograd_fill_quads<T>(Isa, const WinogradTiles&, int64_t, int64_t, int64_t,  \
                                       int64_t, const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
