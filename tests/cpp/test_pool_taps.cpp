// The CPU's test of which indices a max-pool window's gradient may go to (PoolTaps, in
// cpu/max_pool2d.h), with no torch involved: its per-index test and its whole-plane vector pass
// (PoolTaps::all) against the window walk itself (PoolWindow), over random geometries (padding,
// dilation, strides below and above the kernel, ceil_mode's partial windows, windows wholly in
// the padding, kernels far larger than the plane), for every offset of a small plane and one past
// each end, and for indices that only a wrong narrowing or a wrapped subtraction would take for a
// tap (2^32 plus a tap, INT64_MIN, ...). The vector pass is checked for every ISA context: it
// runs where the CPU has AVX-512 and says false (test each index) otherwise. Built and run by
// CMake/ctest (`make test` runs it).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "cpu/max_pool2d.h"

using fastlayers::PoolWindow;
using fastlayers::Pool2dParams;
using fastlayers::cpu::Context;
using fastlayers::cpu::Isa;
using fastlayers::cpu::PoolTaps;

namespace {

int failures = 0;

// torch's output size for one dimension (ceil_mode's last window must start inside the input or
// its left padding).
int64_t pooled_size(int64_t in, int64_t k, int64_t s, int64_t pad, int64_t dil, bool ceil_mode) {
  const int64_t span = dil * (k - 1) + 1;
  const int64_t num = in + 2 * pad - span + (ceil_mode ? s - 1 : 0);
  int64_t out = num / s + 1;
  if (ceil_mode && (out - 1) * s >= in + pad) --out;
  return out;
}

// Output o's taps, from the forward's window walk.
std::set<int64_t> taps_of(const Pool2dParams& p, int64_t oh, int64_t ow) {
  std::set<int64_t> taps;
  const PoolWindow win(p, oh, ow);
  for (int64_t h = win.h0; h < win.h1; h += p.dilation_h)
    for (int64_t w = win.w0; w < win.w1; w += p.dilation_w) taps.insert(h * p.W + w);
  return taps;
}

void check(const Pool2dParams& p, Isa isa, std::mt19937& rng, int& cases) {
  const int64_t HW = p.H * p.W, n = p.OH * p.OW;
  PoolTaps::Tables tables;
  const PoolTaps taps = PoolTaps::make(Context{1, isa}, p, tables);
  const bool vector = isa == Isa::avx512 && fastlayers::cpu::runnable_isa(isa) == Isa::avx512 &&
                      fastlayers::cpu::WindowSpans::applies(p);
  std::vector<std::set<int64_t>> want(static_cast<size_t>(n));
  std::vector<int64_t> plane(static_cast<size_t>(n));  // one tap per output where it has one
  bool plane_all = true;
  for (int64_t o = 0; o < n; ++o) {
    want[o] = taps_of(p, o / p.OW, o % p.OW);
    if (want[o].empty()) {
      plane_all = false;
      plane[o] = 0;
    } else {
      auto it = want[o].begin();
      std::advance(it, rng() % want[o].size());
      plane[o] = *it;
    }
  }
  auto fail = [&](const char* what, int64_t o, int64_t q, bool got) {
    std::printf("FAIL %s isa=%s H=%lld W=%lld k=%lldx%lld s=%lldx%lld pad=%lldx%lld dil=%lldx%lld "
                "OH=%lld OW=%lld output %lld index %lld: got %d\n",
                what, fastlayers::cpu::isa_name(isa), (long long)p.H, (long long)p.W,
                (long long)p.kernel_h, (long long)p.kernel_w, (long long)p.stride_h,
                (long long)p.stride_w, (long long)p.pad_h, (long long)p.pad_w,
                (long long)p.dilation_h, (long long)p.dilation_w, (long long)p.OH,
                (long long)p.OW, (long long)o, (long long)q, int(got));
    ++failures;
  };
  // The plane as the forward makes it, then three planes with it in the middle.
  if (taps.all(plane.data()) != (vector && plane_all)) fail("all(forward's plane)", -1, -1, !plane_all);
  std::vector<int64_t> three;
  for (int i = 0; i < 3; ++i) three.insert(three.end(), plane.begin(), plane.end());
  if (taps.all(three.data(), 3) != (vector && plane_all)) fail("all(3 planes)", -1, -1, !plane_all);
  ++cases;

  const int64_t big = int64_t{1} << 32;
  for (int64_t o = 0; o < n; ++o) {
    const int64_t oh = o / p.OW, ow = o % p.OW;
    std::vector<int64_t> qs;
    for (int64_t q = -2; q < HW + 2; ++q) qs.push_back(q);
    for (int64_t t : want[o]) {
      for (int64_t q : {t + big, t - big, t + 2 * big, t | (int64_t{1} << 62), t - (int64_t{1} << 31)})
        qs.push_back(q);
    }
    for (int64_t q : {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max(),
                      int64_t{1} << 30, int64_t{1} << 31, -(int64_t{1} << 31), big})
      qs.push_back(q);
    // The vector pass on a plane of taps but for this output, at every candidate for a few
    // outputs (the first, the last, one at random); the per-index test at every candidate.
    const bool whole = o == 0 || o == n - 1 || rng() % 8 == 0;
    for (int64_t q : qs) {
      const bool is_tap = want[o].count(q) > 0;
      const bool got = taps(oh, ow, q);
      if (got != is_tap) fail("per-index test", o, q, got);
      if (!whole) continue;
      std::vector<int64_t> bad = three;
      bad[n + o] = q;
      bool all_valid = is_tap;
      for (int64_t e = 0; e < n; ++e) all_valid &= e == o || !want[e].empty();
      const bool got_all = taps.all(bad.data(), 3);
      if (got_all != (vector && all_valid)) fail("all()", o, q, got_all);
      ++cases;
    }
    cases += static_cast<int>(qs.size());
  }
}

int64_t pick(std::mt19937& rng, int64_t lo, int64_t hi) {  // uniform in [lo, hi]
  return lo + static_cast<int64_t>(rng() % static_cast<uint32_t>(hi - lo + 1));
}

}  // namespace

int main() {
  int cases = 0;
  for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
    std::mt19937 rng(7);
    for (int trial = 0; trial < 400; ++trial) {
      Pool2dParams p{};
      p.planes = trial % 7 == 0 ? 1 : 64;  // one plane: too few for the vector pass
      p.H = pick(rng, 1, 13), p.W = pick(rng, 1, 13);
      p.kernel_h = pick(rng, 1, 5), p.kernel_w = pick(rng, 1, 5);
      p.stride_h = pick(rng, 1, 4), p.stride_w = pick(rng, 1, 4);
      p.pad_h = pick(rng, 0, p.kernel_h / 2), p.pad_w = pick(rng, 0, p.kernel_w / 2);
      p.dilation_h = trial % 3 == 0 ? pick(rng, 1, 3) : 1;
      p.dilation_w = trial % 5 == 0 ? pick(rng, 1, 3) : 1;
      const bool ceil_mode = rng() % 2;
      p.OH = pooled_size(p.H, p.kernel_h, p.stride_h, p.pad_h, p.dilation_h, ceil_mode);
      p.OW = pooled_size(p.W, p.kernel_w, p.stride_w, p.pad_w, p.dilation_w, ceil_mode);
      if (p.OH <= 0 || p.OW <= 0) continue;
      check(p, isa, rng, cases);
    }
    // Kernels, paddings and dilations far past the plane (the torch layer allows any that give
    // a positive output size): one window covers the plane, or rows of the plane fall between a
    // window's taps.
    const int64_t huge = int64_t{1} << 40;
    for (const Pool2dParams& p : {
             Pool2dParams{8, 5, 7, 1, 1, huge, huge, 1, 1, huge / 2, huge / 2, 1, 1},
             Pool2dParams{8, 9, 6, 2, 3, 2, 2, huge, 2, 0, 0, 8, 1},
             Pool2dParams{8, 9, 6, 1, 2, 2, 3, 1, 3, 1, 1, 7, 1},
             Pool2dParams{8, 1, 40, 1, 20, 1, 2, 1, 2, 0, 0, 1, 1},
             Pool2dParams{8, 40, 1, 20, 1, 2, 1, 2, 1, 0, 0, 1, 1},
         }) {
      std::mt19937 r(11);
      check(p, isa, r, cases);
    }
  }
  std::printf("%d pool tap cases, %d failed\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
