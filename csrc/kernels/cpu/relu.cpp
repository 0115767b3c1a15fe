// One read and one write per element (two reads for the backward): these are memory-bound, so
// the loops are kept branch-free for the vectoriser and split over threads only past 64K elements.
#include "relu.h"

#include <cmath>

namespace fastlayers::cpu {

namespace {
constexpr int64_t kElementwiseGrain = 65536;
}

template <typename T>
void relu_forward(const Context& ctx, int64_t n, const T* x, T* y) {
  parallel_for(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T v = x[i];
      y[i] = (v > T(0) || v != v) ? v : T(0);  // v != v: NaN passes through
    }
  });
}

template <typename T>
void relu_backward(const Context& ctx, int64_t n, const T* gy, const T* y, T* gx) {
  parallel_for(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) gx[i] = y[i] > T(0) ? gy[i] : T(0);
  });
}

template <typename T>
void bias_grad(const Context& ctx, int64_t outer, int64_t channels, int64_t inner, const T* gy,
               const T* relu_output, T* gb) {
  // Parallel over channels; each channel's sum is one thread's, in a fixed order.
  const int64_t per_channel = outer * inner;
  parallel_for(ctx, channels, ceil_div(kElementwiseGrain, std::max<int64_t>(1, per_channel)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t c = begin; c < end; ++c) {
                   double sum = 0.0;
                   for (int64_t o = 0; o < outer; ++o) {
                     const int64_t base = (o * channels + c) * inner;
                     for (int64_t i = 0; i < inner; ++i) {
                       const T g = gy[base + i];
                       if (!relu_output || relu_output[base + i] > T(0)) sum += g;
                     }
                   }
                   gb[c] = static_cast<T>(sum);
                 }
               });
}

#define FASTLAYERS_INSTANTIATE(T)                                                            \
  template void relu_forward<T>(const Context&, int64_t, const T*, T*);                       \
  template void relu_backward<T>(const Context&, int64_t, const T*, const T*, T*);            \
  template void bias_grad<T>(const Context&, int64_t, int64_t, int64_t, const T*, const T*, T*);
FASTLAYERS_INSTANTIATE(float)
FASTLAYERS_INSTANTIATE(double)
#undef FASTLAYERS_INSTANTIATE

}  // namespace fastlayers::cpu
