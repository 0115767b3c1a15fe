// max_pool2d on the CPU, NCHW, with torch's semantics: -inf padding, dilation, ceil_mode windows,
// NaN propagation, and indices as flat offsets into each H*W plane. Tested by
// tests/test_max_pool2d.py against torch.nn.functional.max_pool2d.
#pragma once

#include <cstdint>
#include <vector>

#include "../params.h"
#include "parallel.h"

namespace fastlayers::cpu {

// Each output's window in a form that a vector pass can test whole planes of indices against
// (PoolTaps::all), for undilated rows (dilation_w == 1) and planes of at most 2^30 elements: in
// int32, per output of a plane, its first tap f = h0 * W + w0 (PoolWindow), `extent` and `width`.
// An index q is one of the window's taps exactly where, with d = q - f,
//   d < extent = (rows - 1) * row_step + W  (unsigned: d >= 0; rows is the window's rows in the
//                                            plane, row_step = dilation_h * W), and
//   d - i * row_step < width = w1 - w0,     i = how many of row_step, 2 * row_step, ...,
//                                            row_steps * row_step d reaches;
// an empty window has extent 0. (q = f + i * row_step + j with 0 <= j < width is tap row i's
// column w0 + j; an index between the window's rows leaves j >= W >= width.)
struct WindowSpans {
  std::vector<int32_t> first, extent, width;
  int32_t row_step = 0, row_steps = 0;
  int64_t outputs = 0;  // per plane, OH * OW

  // Also: building the tables costs 2 to 5 ns an output, once per call, and the pass saves
  // about 1 ns an output per plane; so from 4 planes, and at most 2^20 outputs a plane (12 MB).
  static bool applies(const Pool2dParams& p) {
    return p.dilation_w == 1 && p.H * p.W <= (int64_t{1} << 30) && p.planes >= 4 &&
           p.OH * p.OW <= (int64_t{1} << 20);
  }
  WindowSpans() = default;
  explicit WindowSpans(const Pool2dParams& p);
};

#if defined(__x86_64__)
// max_pool2d_avx512.cpp: whether each of `planes` consecutive planes of indices holds only taps
// of its outputs' windows (WindowSpans), 16 outputs per step.
bool max_pool2d_all_taps_avx512(const WindowSpans& spans, int64_t planes, const int64_t* indices);
#endif

// Whether offset q of a plane is one of output (oh, ow)'s window taps, for the scatters of the
// pool's gradient (max_pool2d_backward, and the pooled conv gradients): any q, one before or past
// the plane being none. A value type, to copy into the scatter loop (a local cannot alias the
// stores). Two forms for one index:
//   windows that cannot overlap (undilated, stride >= kernel) on a plane of up to kTableLimit
//   elements, where no vector pass applies (see all()): a table of the output whose window holds
//   each element (filled by PoolTaps::make), one load and a compare;
//   otherwise: q's row from a multiply by 1 / W in double, exact after one correction for
//   q < 2^52 (far past any plane in memory), then its offsets in the window. No division, and no
//   branch on which tap q is (one on the row of a window's maximum, random, mispredicts every
//   other window).
// Either costs a few cycles per index, more than the scatter itself; where the CPU has AVX-512,
// all() first tests whole planes in one vector pass, and the scatters test index by index only
// planes that fail it. (Measured, one thread, 3 x 3 windows at stride 2: 1.1 ns an index one by
// one, 0.16 ns in the vector pass, against 0.7 ns for the zero fill and scatter.)
class PoolTaps {
 public:
  static constexpr int64_t kTableLimit = int64_t{1} << 16;

  // What a PoolTaps reads, owned by the op that makes it.
  struct Tables {
    std::vector<int32_t> owner;
    WindowSpans spans;
  };

  static PoolTaps make(const Context& ctx, const Pool2dParams& p, Tables& tables) {
    PoolTaps t(p);
#if defined(__x86_64__)
    if (runnable_isa(ctx.isa) == Isa::avx512 && WindowSpans::applies(p)) {
      tables.spans = WindowSpans(p);
      t.spans_ = &tables.spans;
      return t;  // only planes that fail all() are tested one by one: no owner table for them
    }
#else
    (void)ctx;
#endif
    const bool disjoint = p.dilation_h == 1 && p.dilation_w == 1 && p.stride_h >= p.kernel_h &&
                          p.stride_w >= p.kernel_w;
    if (disjoint && p.H * p.W <= kTableLimit) {
      tables.owner.assign(static_cast<size_t>(p.H * p.W), -1);
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const PoolWindow win(p, oh, ow);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w)
              tables.owner[static_cast<size_t>(h * p.W + w)] = static_cast<int32_t>(oh * p.OW + ow);
        }
      t.owner_ = tables.owner.data();
    }
    return t;
  }

  // Whether every index of `planes` consecutive planes is one of its window's taps; false also
  // where no vector pass applies. Where it is true, the scatter needs no test of its own.
  bool all(const int64_t* indices, int64_t planes = 1) const {
#if defined(__x86_64__)
    return spans_ && max_pool2d_all_taps_avx512(*spans_, planes, indices);
#else
    (void)indices, (void)planes;
    return false;
#endif
  }

  bool operator()(int64_t oh, int64_t ow, int64_t q) const {
    if (uint64_t(q) >= uint64_t(p_.H * p_.W)) return false;
    if (owner_) return owner_[q] == oh * p_.OW + ow;
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
  const int32_t* owner_ = nullptr;
  const WindowSpans* spans_ = nullptr;
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
