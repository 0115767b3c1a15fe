// max_pool2d on the CPU, NCHW, with torch's semantics: -inf padding, dilation, ceil_mode windows,
// NaN propagation, and indices as flat offsets into each H*W plane. Tested by
// tests/test_max_pool2d.py against torch.nn.functional.max_pool2d.
#pragma once

#include <cstdint>
#include <vector>

#include "../params.h"
#include "parallel.h"

namespace fastlayers::cpu {

// Whether offset q of a plane is one of output (oh, ow)'s window taps, for the scatters of the
// pool's gradient (max_pool2d_backward, and the pooled conv gradients): any q, one before or past
// the plane being none. A value type, to copy into the scatter loop (a local cannot alias the
// stores). Two forms:
//   windows that cannot overlap (undilated, stride >= kernel) on a plane of up to kTableLimit
//   elements: a table of the output whose window holds each element (the caller's `table`,
//   filled by PoolTaps::make), one load and a compare;
//   otherwise: q's row from a multiply by 1 / W in double, exact after one correction for
//   q < 2^52 (far past any plane in memory), then its offsets in the window. No division, and no
//   branch on which tap q is (one on the row of a window's maximum, random, mispredicts every
//   other window).
class PoolTaps {
 public:
  static constexpr int64_t kTableLimit = int64_t{1} << 16;

  // The check for p's windows; `table` is resized and filled where the table form applies.
  static PoolTaps make(const Pool2dParams& p, std::vector<int32_t>& table) {
    PoolTaps t(p);
    const bool disjoint = p.dilation_h == 1 && p.dilation_w == 1 && p.stride_h >= p.kernel_h &&
                          p.stride_w >= p.kernel_w;
    if (disjoint && p.H * p.W <= kTableLimit) {
      table.assign(static_cast<size_t>(p.H * p.W), -1);
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const PoolWindow win(p, oh, ow);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w)
              table[static_cast<size_t>(h * p.W + w)] = static_cast<int32_t>(oh * p.OW + ow);
        }
      t.table_ = table.data();
    }
    return t;
  }

  bool operator()(int64_t oh, int64_t ow, int64_t q) const {
    if (uint64_t(q) >= uint64_t(p_.H * p_.W)) return false;
    if (table_) return table_[q] == oh * p_.OW + ow;
    int64_t h = int64_t(double(q) * inv_w_);
    int64_t w = q - h * p_.W;
    if (w < 0) {
      --h, w += p_.W;
    } else if (w >= p_.W) {
      ++h, w -= p_.W;
    }
    const int64_t dh = h - (oh * p_.stride_h - p_.pad_h), dw = w - (ow * p_.stride_w - p_.pad_w);
    const bool grid_h = p_.dilation_h == 1 || dh % p_.dilation_h == 0;
    const bool grid_w = p_.dilation_w == 1 || dw % p_.dilation_w == 0;
    return (uint64_t(dh) <= uint64_t(span_h_)) & (uint64_t(dw) <= uint64_t(span_w_)) & grid_h &
           grid_w;
  }

 private:
  explicit PoolTaps(const Pool2dParams& p)
      : p_(p), inv_w_(1.0 / double(p.W)), span_h_((p.kernel_h - 1) * p.dilation_h),
        span_w_((p.kernel_w - 1) * p.dilation_w) {}

  Pool2dParams p_;
  double inv_w_;
  int64_t span_h_, span_w_;
  const int32_t* table_ = nullptr;
};

template <typename T>
void max_pool2d_forward(const Context& ctx, const Pool2dParams& p, const T* x, T* y,
                        int64_t* indices);

// gx = 0, then gx[plane][indices[o]] += gy[o] for every output o, in order, whose index is one
// of its window's taps (PoolTaps); any other index passes nothing (a window wholly in the
// padding gives one, and its output depends on no input).
template <typename T>
void max_pool2d_backward(const Context& ctx, const Pool2dParams& p, const T* gy,
                         const int64_t* indices, T* gx);

}  // namespace fastlayers::cpu
