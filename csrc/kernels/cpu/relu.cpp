// One read and one write per element (two reads for the backward): these are memory-bound, so
// the loops are kept branch-free for the vectoriser and split over threads only past 64K elements.
#include "relu.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fastlayers::cpu {

namespace {
constexpr int64_t kElementwiseGrain = 65536;
}

template <typename T>
void relu_forward(const Context& ctx, int64_t n, const T* x, T* y) {
  parallel_for(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T v = x[i];
      y[i] = v < T(0) ? T(0) : v;  // NaN and -0.0 pass through, as in torch.relu
    }
  });
}

template <typename T>
void relu_backward(const Context& ctx, int64_t n, const T* gy, const T* y, T* gx) {
  parallel_for(ctx, n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T g = gy[i], out = y[i];  // both loaded unconditionally, so the select vectorises
      gx[i] = out <= T(0) ? T(0) : g;  // threshold_backward: where out is NaN, g passes
    }
  });
}

// Sum of g[i] over i < n, skipping those where the mask (if any) is <= 0. The mask is applied in a separate
// select loop (branch-free, vectorised: a branch on random signs mispredicts half the time), then
// 16 independent float lanes add up a block (a single running sum would serialise on the add
// latency); blocks are added in double.
template <typename T>
double masked_sum(const T* g, const T* mask, int64_t n) {
  constexpr int64_t L = 16, kBlock = 256;
  T selected[kBlock];
  double sum = 0.0;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    const T* src = g + b;
    if (mask) {
      const T* m = mask + b;
      for (int64_t i = 0; i < len; ++i) {
        const T v = src[i], k = m[i];  // unconditional loads: the select vectorises
        selected[i] = k <= T(0) ? T(0) : v;
      }
      src = selected;
    }
    T lanes[L] = {};
    int64_t i = 0;
    for (; i + L <= len; i += L)
      for (int64_t l = 0; l < L; ++l) lanes[l] += src[i + l];
    for (; i < len; ++i) sum += double(src[i]);
    for (int64_t l = 0; l < L; ++l) sum += double(lanes[l]);
  }
  return sum;
}

template <typename T>
void bias_grad(const Context& ctx, int64_t outer, int64_t channels, int64_t inner, const T* gy,
               const T* relu_output, T* gb) {
  const int64_t per_channel = outer * inner;
  if (inner == 1) {
    // Channels are the contiguous dim (linear's bias): sum whole rows at once, in double.
    parallel_for(ctx, channels, ceil_div(kElementwiseGrain, std::max<int64_t>(1, outer)),
                 [&](int64_t begin, int64_t end) {
                   std::vector<double> sum(static_cast<size_t>(end - begin), 0.0);
                   std::vector<T> row(relu_output ? static_cast<size_t>(end - begin) : 0);
                   for (int64_t o = 0; o < outer; ++o) {
                     const T* g = gy + o * channels + begin;
                     const T* m = relu_output ? relu_output + o * channels + begin : nullptr;
                     if (m) {  // select in T first: a select that widens does not vectorise
                       for (int64_t c = 0; c < end - begin; ++c) {
                         const T v = g[c], k = m[c];
                         row[c] = k <= T(0) ? T(0) : v;
                       }
                       g = row.data();
                     }
                     for (int64_t c = 0; c < end - begin; ++c) sum[c] += double(g[c]);
                   }
                   for (int64_t c = begin; c < end; ++c) gb[c] = static_cast<T>(sum[c - begin]);
                 });
    return;
  }
  // Parallel over channels; each channel's sum is one thread's, in a fixed order.
  parallel_for(ctx, channels, ceil_div(kElementwiseGrain, std::max<int64_t>(1, per_channel)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t c = begin; c < end; ++c) {
                   double sum = 0.0;
                   for (int64_t o = 0; o < outer; ++o) {
                     const int64_t base = (o * channels + c) * inner;
                     sum += masked_sum(gy + base, relu_output ? relu_output + base : nullptr, inner);
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
