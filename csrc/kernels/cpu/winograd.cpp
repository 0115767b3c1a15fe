#include "winograd.h"

#include <array>

#include "gemm_isa.h"

namespace fastlayers::cpu {

WinogradTiles winograd_tiles(int64_t OH, int64_t OW) {
  constexpr int64_t kWidestVector = 16;  // floats in a 512-bit register
  WinogradTiles g;
  g.OH = OH, g.OW = OW;
  g.TH = ceil_div(OH, 2), g.TW = ceil_div(OW, 2);
  g.Wq = g.TW + 2;
  g.Sv = round_up(g.TH * g.Wq, kWidestVector);
  g.Sq = g.Sv + 2 * g.Wq + 2;
  g.Mplane = g.TH * g.TW;
  return g;
}

template <typename T>
const T* winograd_weight_transform() {
  // G for the points 0, 1/2, -1/2, 2, -2, infinity: row j is (p_j^k / prod_{l != j} (p_j - p_l))
  // for k < 5, and e_4 for infinity.
  static const std::array<T, 36 * 25> kron = [] {
    constexpr double G[6][5] = {
        {1, 0, 0, 0, 0},
        {-8 / 15.0, -4 / 15.0, -2 / 15.0, -1 / 15.0, -1 / 30.0},
        {-8 / 15.0, 4 / 15.0, -2 / 15.0, 1 / 15.0, -1 / 30.0},
        {1 / 30.0, 1 / 15.0, 2 / 15.0, 4 / 15.0, 8 / 15.0},
        {1 / 30.0, -1 / 15.0, 2 / 15.0, -4 / 15.0, 8 / 15.0},
        {0, 0, 0, 0, 1},
    };
    std::array<T, 36 * 25> k{};
    for (int u = 0; u < 6; ++u)
      for (int v = 0; v < 6; ++v)
        for (int r = 0; r < 5; ++r)
          for (int s = 0; s < 5; ++s) k[(u * 6 + v) * 25 + r * 5 + s] = T(G[u][r] * G[v][s]);
    return k;
  }();
  return kron.data();
}

WinogradScratch winograd_scratch(const WinogradTiles& g, int64_t channels, int64_t out_channels,
                                 int64_t nr) {
  WinogradScratch s;
  s.v = 36 * winograd_v_stride(g, channels);
  s.m = 36 * ceil_div(out_channels, nr) * g.Mplane * nr;
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

#define FASTLAYERS_INSTANTIATE(T)                                                              \
  template const T* winograd_weight_transform<T>();                                           \
  template void winograd_image<T>(const WinogradTiles&, int64_t, int64_t, const T*,           \
                                  const WindowWeights<T>*, const int64_t*, T*, T*, T*,         \
                                  const T*, bool, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
