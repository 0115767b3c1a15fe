#include "fma_peak.h"

#include <chrono>
#include <cstdint>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace fastlayers::cpu {
namespace {

// Each loop runs `iters` x 12 independent FMA chains (enough to cover 4-cycle latency on two
// pipes) and returns a value that depends on all of them, so nothing is optimised away.
float chains_generic(int64_t iters) {
  float acc[12][4];
  for (int i = 0; i < 12; ++i)
    for (int l = 0; l < 4; ++l) acc[i][l] = 1.0f + 1e-3f * float(i + l);
  const float a = 0.999999f, b = 1e-7f;
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < 12; ++i)
      for (int l = 0; l < 4; ++l) acc[i][l] = acc[i][l] * a + b;
  float s = 0;
  for (int i = 0; i < 12; ++i)
    for (int l = 0; l < 4; ++l) s += acc[i][l];
  return s;
}

#if defined(__x86_64__)
#define FASTLAYERS_CHAINS(name, flags, R, W, set1, fmadd, reduce)                       \
  __attribute__((target(flags))) float name(int64_t iters) {                         \
    R acc[12];                                                                           \
    for (int i = 0; i < 12; ++i) acc[i] = set1(1.0f + 1e-3f * float(i));                 \
    const R a = set1(0.999999f), b = set1(1e-7f);                                        \
    for (int64_t n = 0; n < iters; ++n) {                                                \
      for (int i = 0; i < 12; ++i) acc[i] = fmadd(acc[i], a, b);                         \
    }                                                                                    \
    for (int i = 1; i < 12; ++i) acc[0] = _mm##W##_add_ps(acc[0], acc[i]);              \
    return reduce(acc[0]);                                                               \
  }
__attribute__((target("avx2,fma"))) inline float reduce256(__m256 v) {
  alignas(32) float f[8];
  _mm256_store_ps(f, v);
  return f[0] + f[7];
}
__attribute__((target("avx512f"))) inline float reduce512(__m512 v) {
  alignas(64) float f[16];
  _mm512_store_ps(f, v);
  return f[0] + f[15];
}
FASTLAYERS_CHAINS(chains_avx2, "avx2,fma", __m256, 256, _mm256_set1_ps, _mm256_fmadd_ps, reduce256)
FASTLAYERS_CHAINS(chains_avx512, "avx512f", __m512, 512, _mm512_set1_ps, _mm512_fmadd_ps, reduce512)
#undef FASTLAYERS_CHAINS
#endif

// (lanes of float32, chains function) for the ISA.
int lanes(Isa isa) { return isa == Isa::avx512 ? 16 : isa == Isa::avx2 ? 8 : 4; }

float run_chains(Isa isa, int64_t iters) {
#if defined(__x86_64__)
  if (isa == Isa::avx512) return chains_avx512(iters);
  if (isa == Isa::avx2) return chains_avx2(iters);
#endif
  return chains_generic(iters);
}

}  // namespace

double fma_peak_gflops(const Context& ctx, double seconds) {
  Isa isa = resolve_isa(ctx.isa);
  if (!isa_supported(isa)) isa = best_isa();
  using clock = std::chrono::steady_clock;
  // Calibrate on one thread, then run every thread for about `seconds`.
  int64_t iters = 1 << 16;
  double elapsed = 0;
  for (;;) {
    const auto t0 = clock::now();
    volatile float sink = run_chains(isa, iters);
    (void)sink;
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
    if (elapsed > 0.02) break;
    iters *= 4;
  }
  iters = std::max<int64_t>(1, int64_t(double(iters) * seconds / elapsed));
  const int threads = std::max(1, ctx.num_threads);
  const auto t0 = clock::now();
  parallel_chunks(ctx, threads, [&](int64_t) {
    volatile float sink = run_chains(isa, iters);
    (void)sink;
  });
  elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  const double flops = double(threads) * double(iters) * 12.0 * lanes(isa) * 2.0;
  return flops / elapsed / 1e9;
}

}  // namespace fastlayers::cpu
