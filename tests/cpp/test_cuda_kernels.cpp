// fastlayers' CUDA kernels (csrc/kernels/cuda/) run on the CPU emulation of cuda_emulation.h and
// checked against naive double-precision loops, with no GPU and no torch: linear's forward (bias,
// ReLU) and both gradients (with the ReLU mask, and split-K for long reductions), conv2d's
// forward and both gradients over strides, asymmetric padding, dilation, groups and split-K
// (thin layers' forward and grad_weight in their direct kernels too, and the forward bit for bit
// against the GEMM),
// conv2d_relu_max_pool2d (pooled in the GEMM's epilogue, or composed) and its two pooled
// gradients (read through the pool's windows, or composed) against their compositions,
// max_pool2d forward (values and indices, padding, dilation, ceil_mode windows, -inf and NaN
// inputs) and backward (a gather, with indices that are not their window's taps skipped), ReLU
// forward and backward (NaN, -0.0), and the bias gradient; in float, double, __half and
// __nv_bfloat16. Outputs are poisoned with NaN before each launch, so an element never written
// fails. Every case runs twice: as launched, and with grids of at most 3 blocks and threads
// scheduled in reverse. Also the 32-bit division by invariant integers (FastDivmod) the conv
// passes index with. Built and run by CMake/ctest where the CUDA headers are found
// (`make test`), and under AddressSanitizer by `make sanitize`.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/conv2d.h"
#include "cuda/gemm.h"
#include "cuda/linear.h"
#include "cuda/max_pool2d.h"
#include "cuda/relu.h"

using fastlayers::Conv2dParams;
using fastlayers::Pool2dParams;
using fastlayers::first_in_bounds;
namespace fc = fastlayers::cuda;

namespace {

int failures = 0;
int checks = 0;

// Conversions between the element types and double on the host.
template <typename T>
T from_double(double v) {
  return static_cast<T>(v);
}
template <>
__half from_double<__half>(double v) {
  return __float2half_rn(static_cast<float>(v));
}
template <>
__nv_bfloat16 from_double<__nv_bfloat16>(double v) {
  return __float2bfloat16_rn(static_cast<float>(v));
}
double to_double(float v) { return v; }
double to_double(double v) { return v; }
double to_double(__half v) { return __half2float(v); }
double to_double(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
const char* type_name();
template <>
const char* type_name<float>() { return "float"; }
template <>
const char* type_name<double>() { return "double"; }
template <>
const char* type_name<__half>() { return "half"; }
template <>
const char* type_name<__nv_bfloat16>() { return "bfloat16"; }

// The accumulation type's relative rounding over a short sum (float for every type but double).
template <typename T>
double accumulation_error() {
  return std::is_same_v<T, double> ? 1e-13 : 2e-6;
}

// The unit roundoff of storing a float sum as T (0 where T is the accumulation type).
template <typename T>
double output_rounding() {
  if constexpr (std::is_same_v<T, __half>) return 1.0 / 2048;        // 11 significant bits
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return 1.0 / 256;  // 8
  return 0.0;
}

std::mt19937 rng(2024);

// Values in [-1, 1] rounded to T (the reference reads the rounded values back).
template <typename T>
std::vector<T> random_values(int64_t n) {
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = from_double<T>(uniform(rng));
  return v;
}

// A ReLU output to mask with: about half the values <= 0, some exactly 0, one NaN (which passes).
template <typename T>
std::vector<T> random_mask(int64_t n) {
  auto v = random_values<T>(n);
  for (size_t i = 0; i < v.size(); i += 7) v[i] = from_double<T>(0.0);
  if (!v.empty()) v[v.size() / 2] = from_double<T>(std::nan(""));
  return v;
}

template <typename T>
std::vector<T> poisoned(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), from_double<T>(std::nan("")));
}

template <typename T>
double masked(const std::vector<T>& v, const std::vector<T>* mask, int64_t i) {
  if (mask != nullptr && to_double((*mask)[i]) <= 0.0) return 0.0;  // NaN passes
  return to_double(v[i]);
}

// Scratch from the host heap, kept until the test ends.
class HostWorkspace final : public fc::Workspace {
 public:
  void* allocate(size_t bytes) override {
    blocks_.push_back(std::make_unique<double[]>(bytes / sizeof(double) + 1));
    return blocks_.back().get();
  }
  size_t blocks() const { return blocks_.size(); }

 private:
  std::vector<std::unique_ptr<double[]>> blocks_;
};

// A small SM count makes split-K happen at test sizes; wide_index takes the conv passes' 64-bit
// index path; the emulation runs the tensor-core kernel (nvcuda::wmma) too, and in TF32 for
// float products where tf32.
fc::GemmContext context(HostWorkspace& workspace, bool wide_index = false, bool tf32 = false) {
  fc::GemmContext ctx{nullptr, 4, &workspace, wide_index};
  ctx.tensor_cores = true;
  ctx.tf32 = tf32;
  return ctx;
}

// TF32 keeps 10 of float's 23 mantissa bits: each product of two rounded values is off by at most
// about 2^-10 of its magnitude.
constexpr double kTf32Error = 1.0 / 1024;

void expect_success(cudaError_t err, const std::string& what) {
  ++checks;
  if (err != cudaSuccess) {
    std::printf("FAIL %s: launch returned error %d\n", what.c_str(), static_cast<int>(err));
    ++failures;
  }
}

// The largest error of rounding a tiny float sum to T: half the spacing of T's subnormals, where
// the relative rounding above no longer holds (float16 has them from 2^-14 down, bfloat16 from
// 2^-126; 0 where T is the accumulation type).
template <typename T>
double subnormal_rounding() {
  if constexpr (std::is_same_v<T, __half>) return std::ldexp(1.0, -25);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return std::ldexp(1.0, -134);
  return 0.0;
}

// Compares got[i] with ref[i]; scale[i] is the sum of the terms' magnitudes. The sum may be off by
// the accumulation's rounding, accumulation_error * scale, and by one rounding to T of the
// result (relative, or subnormal_rounding for tiny results), or, when rounded_per_term
// (half-type atomics and chunked adds store T after each term), by a rounding of every partial
// sum, output_rounding * scale.
// term_error, where given, replaces accumulation_error (TF32 products).
template <typename T>
void expect_close(const std::vector<T>& got, const std::vector<double>& ref,
                  const std::vector<double>& scale, const std::string& what,
                  bool rounded_per_term = false, double term_error = 0.0) {
  ++checks;
  const double error = term_error > 0.0 ? term_error : accumulation_error<T>();
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = to_double(got[i]);
    const bool both_nan = std::isnan(g) && std::isnan(ref[i]);
    const double magnitude = std::fabs(ref[i]) + (rounded_per_term ? scale[i] : 0.0);
    const double allowed = output_rounding<T>() * magnitude + subnormal_rounding<T>() +
                           error * (scale[i] + std::fabs(ref[i]));
    if (!both_nan && !(std::fabs(g - ref[i]) <= allowed)) {
      std::printf("FAIL %s %s: element %zu is %.9g, expected %.9g (allowed error %.3g)\n",
                  what.c_str(), type_name<T>(), i, g, ref[i], allowed);
      ++failures;
      return;
    }
  }
}

// Bitwise-equal values (NaN matches NaN; -0.0 is checked separately where it matters).
template <typename T>
void expect_equal(const std::vector<T>& got, const std::vector<double>& ref,
                  const std::string& what) {
  ++checks;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = to_double(got[i]);
    if (!(g == ref[i] || (std::isnan(g) && std::isnan(ref[i])))) {
      std::printf("FAIL %s %s: element %zu is %.9g, expected exactly %.9g\n", what.c_str(),
                  type_name<T>(), i, g, ref[i]);
      ++failures;
      return;
    }
  }
}

// The same bits, element for element (the sign of zero, and NaN payloads, included).
template <typename T>
void expect_identical(const std::vector<T>& got, const std::vector<T>& want,
                      const std::string& what) {
  ++checks;
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      std::printf("FAIL %s %s: element %zu is %.9g, expected the bits of %.9g\n", what.c_str(),
                  type_name<T>(), i, to_double(got[i]), to_double(want[i]));
      ++failures;
      return;
    }
  }
}

double relu(double v) { return v < 0 ? 0.0 : v; }

// ---------------------------------------------------------------------------------------------
// linear

// tf32: float products may run in TF32 (the tensor-core kernel, where the shape allows).
template <typename T>
void test_linear(int64_t M, int64_t N, int64_t K, bool tf32 = false) {
  const std::string shape = "linear M=" + std::to_string(M) + " N=" + std::to_string(N) +
                            " K=" + std::to_string(K) + (tf32 ? " tf32" : "");
  const double term_error = tf32 ? kTf32Error : 0.0;
  HostWorkspace ws;
  const auto x = random_values<T>(M * K), w = random_values<T>(N * K), b = random_values<T>(N);
  for (bool with_bias : {false, true}) {
    for (bool with_relu : {false, true}) {
      auto y = poisoned<T>(M * N);
      expect_success(fc::linear_forward<T>(context(ws, false, tf32), M, N, K, x.data(),
                                           w.data(), with_bias ? b.data() : nullptr, y.data(),
                                           with_relu),
                     shape);
      std::vector<double> ref(M * N), scale(M * N);
      for (int64_t m = 0; m < M; ++m) {
        for (int64_t n = 0; n < N; ++n) {
          double sum = with_bias ? to_double(b[n]) : 0.0, abs = std::fabs(sum);
          for (int64_t k = 0; k < K; ++k) {
            const double t = to_double(x[m * K + k]) * to_double(w[n * K + k]);
            sum += t;
            abs += std::fabs(t);
          }
          ref[m * N + n] = with_relu ? relu(sum) : sum;
          scale[m * N + n] = abs;
        }
      }
      expect_close(y, ref, scale,
                   shape + " forward bias=" + std::to_string(with_bias) +
                       " relu=" + std::to_string(with_relu),
                   false, term_error);
    }
  }
  const auto gy = random_values<T>(M * N), mask = random_mask<T>(M * N);
  for (bool with_mask : {false, true}) {
    const std::vector<T>* m_ = with_mask ? &mask : nullptr;
    const T* mask_ptr = with_mask ? mask.data() : nullptr;
    auto gx = poisoned<T>(M * K);
    expect_success(fc::linear_grad_input<T>(context(ws, false, tf32), M, N, K, gy.data(),
                                            w.data(), mask_ptr, gx.data()),
                   shape);
    std::vector<double> ref(M * K), scale(M * K);
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t k = 0; k < K; ++k) {
        double sum = 0, abs = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double t = masked(gy, m_, m * N + n) * to_double(w[n * K + k]);
          sum += t;
          abs += std::fabs(t);
        }
        ref[m * K + k] = sum;
        scale[m * K + k] = abs;
      }
    }
    expect_close(gx, ref, scale, shape + " grad_input mask=" + std::to_string(with_mask), false,
                 term_error);

    auto gw = poisoned<T>(N * K);
    expect_success(fc::linear_grad_weight<T>(context(ws, false, tf32), M, N, K, gy.data(),
                                             x.data(), mask_ptr, gw.data()),
                   shape);
    ref.assign(N * K, 0.0);
    scale.assign(N * K, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t m = 0; m < M; ++m) {
          const double t = masked(gy, m_, m * N + n) * to_double(x[m * K + k]);
          ref[n * K + k] += t;
          scale[n * K + k] += std::fabs(t);
        }
      }
    }
    expect_close(gw, ref, scale, shape + " grad_weight mask=" + std::to_string(with_mask), false,
                 term_error);
  }
}

// A product that tells TF32 from float, and rounding from truncation: every x is 1 + 3 * 2^-12,
// which TF32 rounds to 1 + 2^-10 (truncation would give 1), every w is 1, so each y is exactly
// K * (1 + 2^-10) on the TF32 path, and K * (1 + 3 * 2^-12) in float. Both paths are checked,
// with TF32 allowed and not.
void test_tf32_rounding() {
  const int64_t M = 16, N = 16, K = 16;
  HostWorkspace ws;
  const std::vector<float> x(M * K, 1.0f + 3.0f / 4096), w(N * K, 1.0f);
  for (bool tf32 : {false, true}) {
    std::vector<float> y = poisoned<float>(M * N);
    expect_success(fc::linear_forward<float>(context(ws, false, tf32), M, N, K, x.data(),
                                             w.data(), nullptr, y.data(), false),
                   "linear tf32 rounding");
    const std::vector<double> ref(M * N, K * (tf32 ? 1.0 + 1.0 / 1024 : 1.0 + 3.0 / 4096));
    expect_equal(y, ref, std::string("linear tf32 rounding, tf32=") + (tf32 ? "1" : "0"));
  }
}

// ---------------------------------------------------------------------------------------------
// conv2d

// A conv with the bottom/right padding given; OH and OW follow.
Conv2dParams conv(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OC, int64_t KH, int64_t KW,
                  int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
                  int64_t pad_left, int64_t pad_right, int64_t dilation_h, int64_t dilation_w,
                  int64_t groups) {
  Conv2dParams p{};
  p.N = N, p.C = C, p.H = H, p.W = W, p.OC = OC, p.KH = KH, p.KW = KW;
  p.stride_h = stride_h, p.stride_w = stride_w, p.pad_top = pad_top, p.pad_left = pad_left;
  p.dilation_h = dilation_h, p.dilation_w = dilation_w, p.groups = groups;
  p.OH = (H + pad_top + pad_bottom - dilation_h * (KH - 1) - 1) / stride_h + 1;
  p.OW = (W + pad_left + pad_right - dilation_w * (KW - 1) - 1) / stride_w + 1;
  return p;
}

// test_tf32_rounding's product for conv2d_forward, as a 1 x 1 conv of C channels: with 16 it
// runs in the GEMM, on tensor cores in TF32 where allowed; with 4 it is a thin layer, whose
// kernel stays in float either way.
void test_conv_tf32_rounding() {
  for (int64_t C : {16, 4}) {
    const Conv2dParams p = conv(2, C, 4, 5, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1);
    HostWorkspace ws;
    const std::vector<float> x(p.N * C * p.H * p.W, 1.0f + 3.0f / 4096), w(p.OC * C, 1.0f);
    for (bool tf32 : {false, true}) {
      std::vector<float> y = poisoned<float>(p.N * p.OC * p.OH * p.OW);
      expect_success(fc::conv2d_forward<float>(context(ws, false, tf32), p, x.data(), w.data(),
                                               nullptr, y.data(), false),
                     "conv2d tf32 rounding");
      const bool rounded = tf32 && C == 16;
      const std::vector<double> ref(y.size(),
                                    C * (rounded ? 1.0 + 1.0 / 1024 : 1.0 + 3.0 / 4096));
      expect_equal(y, ref, "conv2d tf32 rounding, C=" + std::to_string(C) +
                               ", tf32=" + (tf32 ? "1" : "0"));
    }
  }
}

std::string describe(const Conv2dParams& p) {
  char text[256];
  std::snprintf(text, sizeof(text),
                "conv2d N=%lld C=%lld %lldx%lld OC=%lld k=%lldx%lld s=%lld,%lld pad=%lld,%lld "
                "d=%lld,%lld g=%lld",
                (long long)p.N, (long long)p.C, (long long)p.H, (long long)p.W, (long long)p.OC,
                (long long)p.KH, (long long)p.KW, (long long)p.stride_h, (long long)p.stride_w,
                (long long)p.pad_top, (long long)p.pad_left, (long long)p.dilation_h,
                (long long)p.dilation_w, (long long)p.groups);
  return text;
}

// Calls f(n, oc, oh, ow, c, kh, kw, ih, iw) for every in-bounds term of the convolution.
template <typename F>
void for_each_term(const Conv2dParams& p, F f) {
  const int64_t Cg = p.C / p.groups, OCg = p.OC / p.groups;
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t oc = 0; oc < p.OC; ++oc)
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow)
          for (int64_t c = 0; c < Cg; ++c)
            for (int64_t kh = 0; kh < p.KH; ++kh)
              for (int64_t kw = 0; kw < p.KW; ++kw) {
                const int64_t ih = oh * p.stride_h - p.pad_top + kh * p.dilation_h;
                const int64_t iw = ow * p.stride_w - p.pad_left + kw * p.dilation_w;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                f(n, oc, oh, ow, (oc / OCg) * Cg + c, kh, kw, ih, iw);
              }
}

// tf32: float products may run in TF32 (the GEMM paths on tensor cores; the thin kernels stay in
// float).
template <typename T>
void test_conv2d(const Conv2dParams& p, bool wide_index, bool tf32 = false) {
  const std::string shape =
      describe(p) + (wide_index ? " 64-bit index" : "") + (tf32 ? " tf32" : "");
  const double term_error = tf32 ? kTf32Error : 0.0;
  HostWorkspace ws;
  const int64_t Cg = p.C / p.groups;
  const int64_t x_size = p.N * p.C * p.H * p.W, w_size = p.OC * Cg * p.KH * p.KW;
  const int64_t y_size = p.N * p.OC * p.OH * p.OW;
  const auto x = random_values<T>(x_size), w = random_values<T>(w_size);
  const auto b = random_values<T>(p.OC);
  auto x_at = [&](int64_t n, int64_t c, int64_t h, int64_t ww) {
    return ((n * p.C + c) * p.H + h) * p.W + ww;
  };
  auto y_at = [&](int64_t n, int64_t oc, int64_t oh, int64_t ow) {
    return ((n * p.OC + oc) * p.OH + oh) * p.OW + ow;
  };
  auto w_at = [&](int64_t oc, int64_t c, int64_t kh, int64_t kw) {
    return ((oc * Cg + c % Cg) * p.KH + kh) * p.KW + kw;
  };

  for (bool with_bias : {false, true}) {
    for (bool with_relu : {false, true}) {
      const std::string what = shape + " forward bias=" + std::to_string(with_bias) +
                               " relu=" + std::to_string(with_relu);
      auto y = poisoned<T>(y_size);
      expect_success(fc::conv2d_forward<T>(context(ws, wide_index, tf32), p, x.data(), w.data(),
                                           with_bias ? b.data() : nullptr, y.data(), with_relu),
                     shape);
      // A thin layer's direct kernel against the GEMM off tensor cores, which must agree bit for
      // bit where the kernel sums all input channels in one slice and the GEMM does not split K
      // (they then sum in the same order; a split takes scratch).
      const int slices = fc::conv2d_thin_slices<T>(p, nullptr, context(ws).sm_count);
      if (slices > 0) {
        fc::GemmContext gemm_ctx = context(ws, wide_index);
        gemm_ctx.thin_conv = false;
        gemm_ctx.tensor_cores = false;
        auto y_gemm = poisoned<T>(y_size);
        const size_t blocks = ws.blocks();
        expect_success(fc::conv2d_forward<T>(gemm_ctx, p, x.data(), w.data(),
                                             with_bias ? b.data() : nullptr, y_gemm.data(),
                                             with_relu),
                       shape);
        if (ws.blocks() == blocks && slices == 1) {
          expect_identical(y, y_gemm, what + " thin against the GEMM");
        }
      }
      std::vector<double> ref(y_size, 0.0), scale(y_size, 0.0);
      for (int64_t n = 0; n < p.N; ++n)
        for (int64_t oc = 0; oc < p.OC; ++oc)
          for (int64_t q = 0; q < p.OH * p.OW; ++q) {
            const double bias = with_bias ? to_double(b[oc]) : 0.0;
            ref[(n * p.OC + oc) * p.OH * p.OW + q] = bias;
            scale[(n * p.OC + oc) * p.OH * p.OW + q] = std::fabs(bias);
          }
      for_each_term(p, [&](int64_t n, int64_t oc, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                           int64_t kw, int64_t ih, int64_t iw) {
        const double t = to_double(x[x_at(n, c, ih, iw)]) * to_double(w[w_at(oc, c, kh, kw)]);
        ref[y_at(n, oc, oh, ow)] += t;
        scale[y_at(n, oc, oh, ow)] += std::fabs(t);
      });
      if (with_relu) {
        for (auto& v : ref) v = relu(v);
      }
      expect_close(y, ref, scale, what, false, term_error);
    }
  }

  const auto gy = random_values<T>(y_size), mask = random_mask<T>(y_size);
  for (bool with_mask : {false, true}) {
    const std::vector<T>* m_ = with_mask ? &mask : nullptr;
    const T* mask_ptr = with_mask ? mask.data() : nullptr;
    // A gradient of a thin layer runs its thin kernel, and then the GEMM is checked too; both
    // against the reference.
    const auto check_paths = [&](const std::string& name, int64_t size, bool runs_thin,
                                 const std::vector<double>& ref, const std::vector<double>& scale,
                                 auto run) {
      for (bool thin : {true, false}) {
        if (!thin && !runs_thin) continue;
        fc::GemmContext ctx = context(ws, wide_index, tf32);
        ctx.thin_conv = thin;
        auto out = poisoned<T>(size);
        expect_success(run(ctx, out.data()), shape);
        expect_close(out, ref, scale,
                     shape + " " + name + " mask=" + std::to_string(with_mask) +
                         (thin ? "" : " in the GEMM"),
                     false, term_error);
      }
    };
    std::vector<double> ref(x_size, 0.0), scale(x_size, 0.0);
    for_each_term(p, [&](int64_t n, int64_t oc, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                         int64_t kw, int64_t ih, int64_t iw) {
      const double t = masked(gy, m_, y_at(n, oc, oh, ow)) * to_double(w[w_at(oc, c, kh, kw)]);
      ref[x_at(n, c, ih, iw)] += t;
      scale[x_at(n, c, ih, iw)] += std::fabs(t);
    });
    check_paths("grad_input", x_size,
                fc::conv2d_grad_input_thin_slices<T>(p, context(ws).sm_count) > 0, ref, scale,
                [&](const fc::GemmContext& ctx, T* gx) {
                  return fc::conv2d_grad_input<T>(ctx, p, gy.data(), w.data(), mask_ptr, gx);
                });

    ref.assign(w_size, 0.0);
    scale.assign(w_size, 0.0);
    for_each_term(p, [&](int64_t n, int64_t oc, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                         int64_t kw, int64_t ih, int64_t iw) {
      const double t = masked(gy, m_, y_at(n, oc, oh, ow)) * to_double(x[x_at(n, c, ih, iw)]);
      ref[w_at(oc, c, kh, kw)] += t;
      scale[w_at(oc, c, kh, kw)] += std::fabs(t);
    });
    check_paths("grad_weight", w_size, fc::conv2d_grad_weight_runs_thin<T>(p), ref, scale,
                [&](const fc::GemmContext& ctx, T* gw) {
                  return fc::conv2d_grad_weight<T>(ctx, p, gy.data(), x.data(), mask_ptr, gw);
                });
  }
}

// ---------------------------------------------------------------------------------------------
// max_pool2d

// kernel_h x kernel_w windows, strides stride_h and stride_w; the same padding and dilation on
// both axes.
Pool2dParams pool(int64_t planes, int64_t H, int64_t W, int64_t kernel_h, int64_t kernel_w,
                  int64_t stride_h, int64_t stride_w, int64_t pad, int64_t dilation,
                  bool ceil_mode) {
  Pool2dParams p{};
  p.planes = planes, p.H = H, p.W = W;
  p.kernel_h = kernel_h, p.kernel_w = kernel_w, p.stride_h = stride_h, p.stride_w = stride_w;
  p.pad_h = p.pad_w = pad;
  p.dilation_h = p.dilation_w = dilation;
  auto out = [&](int64_t size, int64_t kernel, int64_t stride) {  // pooling_output_shape
    const int64_t span =
        size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    int64_t o = span / stride + 1;
    if (ceil_mode && (o - 1) * stride >= size + pad) --o;
    return o;
  };
  p.OH = out(H, kernel_h, stride_h);
  p.OW = out(W, kernel_w, stride_w);
  return p;
}

// Square windows.
Pool2dParams pool(int64_t planes, int64_t H, int64_t W, int64_t kernel, int64_t stride,
                  int64_t pad, int64_t dilation, bool ceil_mode) {
  return pool(planes, H, W, kernel, kernel, stride, stride, pad, dilation, ceil_mode);
}

template <typename T>
void test_max_pool2d(const Pool2dParams& p) {
  char text[160];
  std::snprintf(text, sizeof(text),
                "max_pool2d planes=%lld %lldx%lld k=%lld s=%lld pad=%lld d=%lld",
                (long long)p.planes, (long long)p.H, (long long)p.W, (long long)p.kernel_h,
                (long long)p.stride_h, (long long)p.pad_h, (long long)p.dilation_h);
  const std::string shape = text;
  const int64_t HW = p.H * p.W, OHW = p.OH * p.OW;
  auto x = random_values<T>(p.planes * HW);
  // Ties, an -inf and a NaN: torch keeps the first maximum, and a NaN wins its window.
  for (size_t i = 3; i < x.size(); i += 11) x[i] = x[i - 1];
  if (x.size() > 5) x[5] = from_double<T>(-std::numeric_limits<double>::infinity());
  if (x.size() > 17) x[17] = from_double<T>(std::nan(""));

  // Whether (h, w) of the plane is a tap of window (oh, ow): the plane's elements in row-major
  // order are the window's taps in its own order, and a window may be far larger than the plane.
  auto tap = [&](int64_t oh, int64_t ow, int64_t h, int64_t w) {
    const int64_t dh = h - (oh * p.stride_h - p.pad_h), dw = w - (ow * p.stride_w - p.pad_w);
    return dh >= 0 && dh % p.dilation_h == 0 && dh / p.dilation_h < p.kernel_h && dw >= 0 &&
           dw % p.dilation_w == 0 && dw / p.dilation_w < p.kernel_w;
  };
  std::vector<double> ref(p.planes * OHW);
  std::vector<int64_t> ref_index(p.planes * OHW);
  for (int64_t plane = 0; plane < p.planes; ++plane)
    for (int64_t oh = 0; oh < p.OH; ++oh)
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        double best = -std::numeric_limits<double>::infinity();
        int64_t best_index = -1;
        for (int64_t h = 0; h < p.H; ++h)
          for (int64_t w = 0; w < p.W; ++w) {
            if (!tap(oh, ow, h, w)) continue;
            if (best_index < 0) best_index = h * p.W + w;  // an all -inf window keeps its first
            const double v = to_double(x[plane * HW + h * p.W + w]);
            if (v > best || std::isnan(v)) {
              best = v;
              best_index = h * p.W + w;
            }
          }
        if (best_index < 0) {  // no tap inside the plane: torch's index, past the padding
          int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
          while (h0 < 0) h0 += p.dilation_h;
          while (w0 < 0) w0 += p.dilation_w;
          best_index = h0 * p.W + w0;
        }
        ref[plane * OHW + oh * p.OW + ow] = best;
        ref_index[plane * OHW + oh * p.OW + ow] = best_index;
      }

  auto y = poisoned<T>(p.planes * OHW);
  std::vector<int64_t> indices(p.planes * OHW, -7);
  expect_success(fc::max_pool2d_forward<T>(nullptr, p, x.data(), y.data(), indices.data()), shape);
  expect_equal(y, ref, shape + " forward");
  ++checks;
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] != ref_index[i]) {
      std::printf("FAIL %s %s forward: index %zu is %lld, expected %lld\n", shape.c_str(),
                  type_name<T>(), i, (long long)indices[i], (long long)ref_index[i]);
      ++failures;
      break;
    }
  }

  // The backward with the forward's indices, plus hand-made ones that are not their window's
  // taps (past the plane, before it, another window's, just past the window), which pass nothing; without and with a
  // mask (some <= 0, which drop their gradient, and a NaN, which passes it). The reference walks
  // each window's taps, in output order, summing in the kernel's accumulation type, so the
  // result must be bitwise equal.
  const auto gy = random_values<T>(p.planes * OHW);
  auto mask = random_values<T>(p.planes * OHW);
  if (mask.size() > 4) mask[4] = from_double<T>(std::nan(""));
  if (indices.size() > 5) {
    indices[1] = HW;
    indices[2] = -1;
    indices[3] = indices[0];
    indices[5] = HW - 1;
    // Output 4's index just past its window's last column, in the window's first row.
    const int64_t oh = 4 / p.OW, ow = 4 % p.OW;
    const int64_t h = std::max<int64_t>(0, oh * p.stride_h - p.pad_h);
    const int64_t past = ow * p.stride_w - p.pad_w + (p.kernel_w - 1) * p.dilation_w + 1;
    if (h < p.H && past >= 0 && past < p.W) indices[4] = h * p.W + past;
  }
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  for (bool masked : {false, true}) {
    std::vector<A> sum(p.planes * HW, A(0));
    for (int64_t plane = 0; plane < p.planes; ++plane)
      for (int64_t oh = 0; oh < p.OH; ++oh)
        for (int64_t ow = 0; ow < p.OW; ++ow) {
          const int64_t o = plane * OHW + oh * p.OW + ow;
          if (masked && to_double(mask[o]) <= 0.0) continue;
          for (int64_t h = 0; h < p.H; ++h)
            for (int64_t w = 0; w < p.W; ++w) {
              if (!tap(oh, ow, h, w) || indices[o] != h * p.W + w) continue;
              sum[plane * HW + indices[o]] += static_cast<A>(to_double(gy[o]));
            }
        }
    std::vector<double> gx_ref(sum.size());
    for (size_t i = 0; i < sum.size(); ++i) gx_ref[i] = to_double(from_double<T>(double(sum[i])));
    auto gx = poisoned<T>(p.planes * HW);
    expect_success(fc::max_pool2d_backward<T>(nullptr, p, gy.data(), indices.data(),
                                              masked ? mask.data() : nullptr, gx.data()),
                   shape);
    expect_equal(gx, gx_ref, shape + (masked ? " backward, masked" : " backward"));
  }
}

// ---------------------------------------------------------------------------------------------
// conv2d_relu_max_pool2d

// The fused layer against its composition (conv2d_forward with ReLU, then max_pool2d_forward),
// which must agree bit for bit, values and indices, wherever both split their sums alike (K in
// the GEMMs, the input channels in the thin kernel: they then sum in the same order); and
// against double precision: each value within the conv's rounding of
// its window's maximum, and each index on a tap whose value is within that of the maximum. The
// bias makes ties at 0 after the ReLU common, and a few NaN inputs NaN windows.
enum class PoolPath {
  fused,        // in the GEMM's epilogue, with no scratch
  fused_split,  // the same with split-K (scratch for the partial sums only)
  composed,     // conv2d_relu into scratch, then max_pool2d
};

template <typename T>
void test_conv2d_relu_max_pool2d(const Conv2dParams& p, int64_t kernel, int64_t stride,
                                 int64_t pad, int64_t dilation, bool ceil_mode, PoolPath path,
                                 bool tf32 = false) {
  char text[96];
  std::snprintf(text, sizeof(text), " pool k=%lld s=%lld pad=%lld d=%lld%s", (long long)kernel,
                (long long)stride, (long long)pad, (long long)dilation,
                ceil_mode ? " ceil" : "");
  const std::string shape = describe(p) + text + (tf32 ? " tf32" : "");
  Pool2dParams pl = pool(p.N * p.OC, p.OH, p.OW, kernel, stride, pad, dilation, ceil_mode);
  HostWorkspace ws;
  const int64_t Cg = p.C / p.groups;
  const int64_t x_size = p.N * p.C * p.H * p.W, w_size = p.OC * Cg * p.KH * p.KW;
  const int64_t y_size = p.N * p.OC * p.OH * p.OW, pooled_size = pl.planes * pl.OH * pl.OW;
  auto x = random_values<T>(x_size);
  if (x_size > 40) x[37] = from_double<T>(std::nan(""));
  const auto w = random_values<T>(w_size), b = random_values<T>(p.OC);
  ++checks;
  if (fc::conv2d_relu_max_pool2d_fuses(pl) != (path != PoolPath::composed)) {
    std::printf("FAIL %s: expected the %s path\n", shape.c_str(),
                path == PoolPath::composed ? "composed" : "fused");
    ++failures;
  }

  for (int variant = 0; variant < 4; ++variant) {
    const bool with_bias = variant % 2 == 1, wide_index = variant >= 2;
    const T* bias = with_bias ? b.data() : nullptr;
    const std::string what = shape + " bias=" + std::to_string(with_bias) +
                             (wide_index ? " 64-bit index" : "");
    auto y = poisoned<T>(pooled_size);
    std::vector<int64_t> indices(pooled_size, -7);
    const size_t blocks = ws.blocks();
    expect_success(fc::conv2d_relu_max_pool2d<T>(context(ws, wide_index, tf32), p, pl, x.data(),
                                                 w.data(), bias, y.data(), indices.data()),
                   what);
    ++checks;
    if ((path == PoolPath::fused) != (ws.blocks() == blocks) && y_size > 0) {
      std::printf("FAIL %s %s: %zu scratch blocks\n", what.c_str(), type_name<T>(),
                  ws.blocks() - blocks);
      ++failures;
    }

    // A thin layer's direct kernel against the fused GEMM, bit for bit where neither splits K
    // (the kernel's input channels in one slice).
    const int sm_count = context(ws).sm_count;
    const int slices = fc::conv2d_thin_slices<T>(p, &pl, sm_count);
    if (slices > 0) {
      fc::GemmContext gemm_ctx = context(ws, wide_index);
      gemm_ctx.thin_conv = false;
      gemm_ctx.tensor_cores = false;
      auto y_gemm = poisoned<T>(pooled_size);
      std::vector<int64_t> indices_gemm(pooled_size, -7);
      const size_t before = ws.blocks();
      expect_success(fc::conv2d_relu_max_pool2d<T>(gemm_ctx, p, pl, x.data(), w.data(), bias,
                                                   y_gemm.data(), indices_gemm.data()),
                     what);
      if (ws.blocks() == before && blocks == before && slices == 1) {
        expect_identical(y, y_gemm, what + " thin against the GEMM");
        ++checks;
        if (indices != indices_gemm) {
          std::printf("FAIL %s %s: thin and GEMM indices differ\n", what.c_str(),
                      type_name<T>());
          ++failures;
        }
      }
    }

    // The composition.
    auto activation = poisoned<T>(y_size);
    expect_success(
        fc::conv2d_forward<T>(context(ws, wide_index, tf32), p, x.data(), w.data(), bias,
                              activation.data(), true),
        what);
    auto y_ref = poisoned<T>(pooled_size);
    std::vector<int64_t> indices_ref(pooled_size, -7);
    expect_success(fc::max_pool2d_forward<T>(nullptr, pl, activation.data(), y_ref.data(),
                                             indices_ref.data()),
                   what);
    // The same sums where both split alike: the same slices, or K the same way.
    const int composed_slices = fc::conv2d_thin_slices<T>(p, nullptr, sm_count);
    if (path != PoolPath::fused_split && (slices == composed_slices ||
                                          std::max(slices, composed_slices) == 1)) {
      ++checks;
      for (int64_t i = 0; i < pooled_size; ++i) {
        const double got = to_double(y[i]), want = to_double(y_ref[i]);
        const bool same = (got == want && std::signbit(got) == std::signbit(want)) ||
                          (std::isnan(got) && std::isnan(want));
        if (!same || indices[i] != indices_ref[i]) {
          std::printf("FAIL %s %s: pooled element %lld is %g at %lld, composed %g at %lld\n",
                      what.c_str(), type_name<T>(), (long long)i, got, (long long)indices[i],
                      want, (long long)indices_ref[i]);
          ++failures;
          break;
        }
      }
    }

    // Double precision: the activation and its rounding bound, then each window.
    std::vector<double> act(y_size, 0.0), scale(y_size, 0.0);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t oc = 0; oc < p.OC; ++oc)
        for (int64_t q = 0; q < p.OH * p.OW; ++q) {
          act[(n * p.OC + oc) * p.OH * p.OW + q] = with_bias ? to_double(b[oc]) : 0.0;
          scale[(n * p.OC + oc) * p.OH * p.OW + q] = with_bias ? std::fabs(to_double(b[oc])) : 0.0;
        }
    for_each_term(p, [&](int64_t n, int64_t oc, int64_t oh, int64_t ow, int64_t c, int64_t kh,
                         int64_t kw, int64_t ih, int64_t iw) {
      const double t = to_double(x[((n * p.C + c) * p.H + ih) * p.W + iw]) *
                       to_double(w[((oc * Cg + c % Cg) * p.KH + kh) * p.KW + kw]);
      const int64_t o = ((n * p.OC + oc) * p.OH + oh) * p.OW + ow;
      act[o] += t;
      scale[o] += std::fabs(t);
    });
    ++checks;
    const int64_t OHW = p.OH * p.OW, plane = pl.OH * pl.OW;
    for (int64_t i = 0; i < pooled_size; ++i) {
      const int64_t base = (i / plane) * OHW;
      double best = -std::numeric_limits<double>::infinity(), slack = 0.0;
      bool any = false;
      const int64_t oh0 = (i % plane) / pl.OW * stride - pad;
      const int64_t ow0 = (i % plane) % pl.OW * stride - pad;
      for (int64_t th = 0; th < kernel; ++th)
        for (int64_t tw = 0; tw < kernel; ++tw) {
          const int64_t oh = oh0 + th * dilation, ow = ow0 + tw * dilation;
          if (oh < 0 || oh >= p.OH || ow < 0 || ow >= p.OW) continue;
          const double v = relu(act[base + oh * p.OW + ow]);
          best = std::isnan(v) || std::isnan(best) ? std::nan("") : std::max(best, v);
          slack = std::max(slack, scale[base + oh * p.OW + ow]);
          any = true;
        }
      const double tolerance = slack * (tf32 ? kTf32Error : accumulation_error<T>()) * 4 +
                               std::fabs(best) * output_rounding<T>() + 1e-300;
      const double got = to_double(y[i]);
      const int64_t index = indices[i];
      bool ok = any ? (std::isnan(best) ? std::isnan(got) : std::fabs(got - best) <= tolerance)
                    : std::isinf(got) && got < 0;
      if (ok && any) {
        const int64_t ih = index / p.OW, iw = index % p.OW;
        const bool in_window = index >= 0 && index < OHW && (ih - oh0) % dilation == 0 &&
                               (iw - ow0) % dilation == 0 && ih >= oh0 && iw >= ow0 &&
                               (ih - oh0) / dilation < kernel && (iw - ow0) / dilation < kernel;
        const double at = in_window ? relu(act[base + index]) : std::nan("");
        ok = in_window && (std::isnan(best) ? std::isnan(at) : best - at <= 2 * tolerance);
      }
      if (!ok) {
        std::printf("FAIL %s %s: pooled element %lld is %g at %lld, expected %g\n", what.c_str(),
                    type_name<T>(), (long long)i, got, (long long)index, best);
        ++failures;
        break;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// conv2d_grad_input_pooled and conv2d_grad_weight_pooled

// The pooled gradients against their composition (max_pool2d_backward into the activation
// gradient, then conv2d_grad_input and conv2d_grad_weight unmasked), bit for bit: both run the
// same GEMMs (or thin kernels, with the same plans) on the same values. The indices are the pool's over a random activation, plus
// hand-made ones that are not their window's taps (past the plane, before it, another window's,
// just past the window), which pass nothing; the mask has values <= 0, which drop their
// gradient, and a NaN, which passes it. Where the GEMMs read through the windows, no scratch is
// taken but the GEMM's own; otherwise one block more, for the activation gradient.
template <typename T>
void test_pooled_grads(const Conv2dParams& p, const Pool2dParams& pl, bool apart,
                       bool tf32 = false) {
  const bool reads_windows = apart && !std::is_same_v<T, double>;  // double composes
  char text[128];
  std::snprintf(text, sizeof(text), " pooled grads k=%lldx%lld s=%lld,%lld pad=%lld d=%lld",
                (long long)pl.kernel_h, (long long)pl.kernel_w, (long long)pl.stride_h,
                (long long)pl.stride_w, (long long)pl.pad_h, (long long)pl.dilation_h);
  const std::string shape = describe(p) + text + (tf32 ? " tf32" : "");
  ++checks;
  if (fc::pool_windows_apart(pl) != apart ||
      fc::conv2d_pooled_grads_read_windows<T>(pl) != reads_windows) {
    std::printf("FAIL %s %s: expected windows %s\n", shape.c_str(), type_name<T>(),
                apart ? "apart" : "overlapping");
    ++failures;
  }
  const int64_t Cg = p.C / p.groups;
  const int64_t x_size = p.N * p.C * p.H * p.W, w_size = p.OC * Cg * p.KH * p.KW;
  const int64_t y_size = p.N * p.OC * p.OH * p.OW, pooled_size = pl.planes * pl.OH * pl.OW;
  const auto x = random_values<T>(x_size), w = random_values<T>(w_size);
  const auto activation = random_values<T>(y_size);
  auto pooled = poisoned<T>(pooled_size);
  std::vector<int64_t> indices(pooled_size, -7);
  expect_success(fc::max_pool2d_forward<T>(nullptr, pl, activation.data(), pooled.data(),
                                           indices.data()),
                 shape);
  // Hand-made indices that are not their window's taps: past the plane, before it, another
  // window's; in window 5's first tap row, just past its extent (a gap between windows spaced
  // wider than they reach, or the next window); in window 6's, between its first two taps (off
  // a dilated grid); in windows 7 and 8's first tap columns, the same along the rows; and two
  // that a window past the last one would own: window (1, 0)'s index in the column after the
  // last window (reading window (0, POW) there would find it), and plane 1's first window's
  // index in the row after plane 0's last window row (likewise).
  const int64_t windows = pl.OH * pl.OW;
  auto set_index = [&](int64_t o, int64_t h, int64_t w) {
    if (o < pooled_size && h >= 0 && h < pl.H && w >= 0 && w < pl.W) indices[o] = h * pl.W + w;
  };
  // Window o of plane 0: where it starts (in the padding, perhaps), and its first tap inside.
  struct Window {
    int64_t start_h, start_w, tap_h, tap_w;
  };
  auto window = [&](int64_t o) {
    const int64_t start_h = o / pl.OW * pl.stride_h - pl.pad_h;
    const int64_t start_w = o % pl.OW * pl.stride_w - pl.pad_w;
    return Window{start_h, start_w, first_in_bounds(start_h, pl.dilation_h),
                  first_in_bounds(start_w, pl.dilation_w)};
  };
  const int64_t span_h = (pl.kernel_h - 1) * pl.dilation_h;
  const int64_t span_w = (pl.kernel_w - 1) * pl.dilation_w;
  if (pl.planes > 0 && windows > 8) {
    indices[1] = pl.H * pl.W;
    indices[2] = -1;
    indices[3] = indices[0];
    set_index(5, window(5).tap_h, window(5).start_w + span_w + 1);
    if (pl.dilation_w > 1) set_index(6, window(6).tap_h, window(6).start_w + 1);
    set_index(7, window(7).start_h + span_h + 1, window(7).tap_w);
    if (pl.dilation_h > 1) set_index(8, window(8).start_h + 1, window(8).tap_w);
  }
  const int64_t top = window(0).tap_h, left = window(0).tap_w;
  if (pl.planes > 0 && pl.OH > 1) set_index(pl.OW, top, pl.OW * pl.stride_w - pl.pad_w);
  if (pl.planes > 1) set_index(windows, pl.OH * pl.stride_h - pl.pad_h, left);
  const auto gy = random_values<T>(pooled_size), mask = random_mask<T>(pooled_size);

  HostWorkspace ws;
  for (int variant = 0; variant < 4; ++variant) {
    const bool with_mask = variant % 2 == 1, wide_index = variant >= 2;
    const T* m = with_mask ? mask.data() : nullptr;
    const std::string what = shape + " mask=" + std::to_string(with_mask) +
                             (wide_index ? " 64-bit index" : "");
    auto activation_grad = poisoned<T>(y_size);
    expect_success(fc::max_pool2d_backward<T>(nullptr, pl, gy.data(), indices.data(), m,
                                              activation_grad.data()),
                   what);

    auto check = [&](const char* pass, auto pooled_pass, auto plain_pass, int64_t size) {
      std::vector<T> got = poisoned<T>(size), want = poisoned<T>(size);
      size_t before = ws.blocks();
      expect_success(plain_pass(want.data()), what);
      const size_t plain_blocks = ws.blocks() - before;
      before = ws.blocks();
      expect_success(pooled_pass(got.data()), what);
      const size_t pooled_blocks = ws.blocks() - before;
      std::vector<double> ref(size);
      for (int64_t i = 0; i < size; ++i) ref[i] = to_double(want[i]);
      expect_equal(got, ref, what + " " + pass);
      ++checks;
      if (y_size > 0 && pooled_blocks != plain_blocks + (reads_windows ? 0 : 1)) {
        std::printf("FAIL %s %s %s: %zu scratch blocks, the plain pass %zu\n", what.c_str(),
                    type_name<T>(), pass, pooled_blocks, plain_blocks);
        ++failures;
      }
    };
    check(
        "grad_input",
        [&](T* gx) {
          return fc::conv2d_grad_input_pooled<T>(context(ws, wide_index, tf32), p, pl, gy.data(),
                                                 indices.data(), w.data(), m, gx);
        },
        [&](T* gx) {
          return fc::conv2d_grad_input<T>(context(ws, wide_index, tf32), p, activation_grad.data(),
                                          w.data(), nullptr, gx);
        },
        x_size);
    check(
        "grad_weight",
        [&](T* gw) {
          return fc::conv2d_grad_weight_pooled<T>(context(ws, wide_index, tf32), p, pl, gy.data(),
                                                  indices.data(), x.data(), m, gw);
        },
        [&](T* gw) {
          return fc::conv2d_grad_weight<T>(context(ws, wide_index, tf32), p, activation_grad.data(),
                                           x.data(), nullptr, gw);
        },
        w_size);
  }
}

// ---------------------------------------------------------------------------------------------
// ReLU and the bias gradient

// The inputs start `offset` elements into their buffers, the outputs `out_offset`: both 0 takes
// the 16-byte packs, anything else the element-wise path.
template <typename T>
void test_relu(int64_t n, int64_t offset, int64_t out_offset) {
  const std::string shape = "relu n=" + std::to_string(n) + " offset=" + std::to_string(offset) +
                            "," + std::to_string(out_offset);
  auto x = random_values<T>(n + offset);
  if (n > 3) {
    x[offset + 1] = from_double<T>(std::nan(""));
    x[offset + 2] = from_double<T>(-0.0);
  }
  auto y = poisoned<T>(n + out_offset);
  expect_success(fc::relu_forward<T>(nullptr, n, x.data() + offset, y.data() + out_offset), shape);
  std::vector<double> ref(n + out_offset);
  for (int64_t i = 0; i < n + out_offset; ++i) {
    ref[i] = i < out_offset ? NAN : relu(to_double(x[i - out_offset + offset]));
  }
  expect_equal(y, ref, shape + " forward");
  ++checks;
  if (n > 3 && !std::signbit(to_double(y[out_offset + 2]))) {
    std::printf("FAIL %s %s: relu(-0.0) lost its sign\n", shape.c_str(), type_name<T>());
    ++failures;
  }

  const auto gy = random_values<T>(n + offset), mask = random_mask<T>(n + offset);
  auto gx = poisoned<T>(n + out_offset);
  expect_success(fc::relu_backward<T>(nullptr, n, gy.data() + offset, mask.data() + offset,
                                      gx.data() + out_offset),
                 shape);
  for (int64_t i = 0; i < n + out_offset; ++i) {
    ref[i] = i < out_offset ? NAN : masked(gy, &mask, i - out_offset + offset);
  }
  expect_equal(gx, ref, shape + " backward");
}

template <typename T>
void test_bias_grad(int64_t outer, int64_t channels, int64_t inner) {
  const std::string shape = "bias_grad " + std::to_string(outer) + "x" + std::to_string(channels) +
                            "x" + std::to_string(inner);
  const int64_t n = outer * channels * inner;
  const auto gy = random_values<T>(n), mask = random_mask<T>(n);
  for (bool with_mask : {false, true}) {
    auto gb = poisoned<T>(channels);
    expect_success(fc::bias_grad<T>(nullptr, outer, channels, inner, gy.data(),
                                    with_mask ? mask.data() : nullptr, gb.data()),
                   shape);
    std::vector<double> ref(channels, 0.0), scale(channels, 0.0);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < channels; ++c)
        for (int64_t i = 0; i < inner; ++i) {
          const double v = masked(gy, with_mask ? &mask : nullptr, (o * channels + c) * inner + i);
          ref[c] += v;
          scale[c] += std::fabs(v);
        }
    expect_close(gb, ref, scale, shape + " mask=" + std::to_string(with_mask));
  }
}

// FastDivmod against integer division: small divisors with every numerator up to 5000, and
// divisors near powers of two with numerators near their multiples and the top of the range.
void test_fast_divmod() {
  auto check = [](uint32_t d, uint32_t n) {
    const fc::FastDivmod fast(d);
    uint32_t q, r;
    fast(n, q, r);
    if (q != n / d || r != n % d) {
      std::printf("FAIL FastDivmod %u / %u gave %u rem %u\n", n, d, q, r);
      ++failures;
      return false;
    }
    return true;
  };
  ++checks;
  for (uint32_t d = 1; d <= 300; ++d) {
    for (uint32_t n = 0; n <= 5000; ++n) {
      if (!check(d, n)) return;
    }
  }
  std::uniform_int_distribution<uint32_t> any(0, (1u << 31) - 1);
  // Powers of two and their neighbours, the largest divisor, and random ones of every size.
  std::vector<uint32_t> divisors;
  for (int bits = 1; bits < 31; ++bits) {
    for (int64_t delta : {-1, 0, 1}) {
      divisors.push_back(static_cast<uint32_t>((int64_t{1} << bits) + delta));
    }
  }
  divisors.push_back((1u << 31) - 1);
  for (int i = 0; i < 200; ++i) divisors.push_back(std::max(1u, any(rng) >> (i % 31)));
  for (const uint32_t d : divisors) {
    const uint32_t last_multiple = ((1u << 31) - 1) / d * d;
    for (uint32_t top : {(1u << 31) - 1, (1u << 31) - 2, last_multiple, last_multiple - 1}) {
      if (!check(d, top)) return;
    }
    for (int i = 0; i < 1000; ++i) {
      const uint32_t n = any(rng);
      if (!check(d, n) || (n >= d && !check(d, n / d * d - 1)) || !check(d, n / d * d)) return;
    }
  }
}

// The products that the large-tile cases below rely on do run in the large tile (with the
// context's 4 SMs), and the small ones in the small tile, so that a change of the choice cannot
// leave the large tile untested.
void test_tile_choice() {
  struct Case {
    int64_t batches, M, N;
    bool large;
  };
  const Case cases[] = {{1, 131, 129, true},  {1, 256, 256, true}, {2, 130, 144, true},
                        {1, 130, 144, true},  {1, 130, 135, true}, {1, 65, 63, false},
                        {1, 127, 1000, false}, {1, 1000, 127, false}, {1, 128, 384, false},
                        {4, 128, 128, true}};
  for (const Case& c : cases) {
    ++checks;
    if (fc::use_large_tile(c.batches, c.M, c.N, 128, 128, 4) != c.large) {
      std::printf("FAIL tile choice batches=%lld M=%lld N=%lld: expected the %s tile\n",
                  (long long)c.batches, (long long)c.M, (long long)c.N,
                  c.large ? "large" : "small");
      ++failures;
    }
  }
}

// Which layers the thin-layer kernels take (on 132 SMs, an H100's): the documents' first layers
// (LeNet-5's two, the MNIST and CIFAR CNNs' first), with and without their 2 x 2 pools, and a
// depthwise conv; not the second layers of the MNIST and CIFAR CNNs (32 input channels), nor a
// layer whose input rows outgrow its shared memory (a 3 x 3 conv over rows of 5000), nor one of
// 8 x 12 x 12 taps, nor a pool that runs composed. grad_weight likewise. grad_input, as the
// transposed conv, for stride 1 only, and where its input (OC / groups channels of gradient)
// and flipped filters fit: not for the MNIST and CIFAR CNNs' first layers (32 channels of
// gradient rows; their input needs no gradient anyway), but for the 8 x 12 x 12 taps (whose
// transposed conv has 4 x 12 x 12); in double not for LeNet-5's second layer or the 12 x 12 taps
// (8 filters of 400 and 576 values outgrow 20 KiB). 8 channels of 40 x 40 pixels stage their
// rows in tiles of fewer than 256 threads. The plan's slices: 1 where the layer fills the GPU
// as it is, or has one input channel; more for LeNet-5's layers at batch 64, forward and
// grad_input.
template <typename T>
void test_thin_choice() {
  constexpr int kSms = 132;
  constexpr bool kDouble = std::is_same_v<T, double>;
  struct Case {
    Conv2dParams p;
    bool thin, thin_grad_input;
  };
  const Case cases[] = {
      {conv(64, 3, 32, 32, 6, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1), true, true},
      {conv(64, 6, 14, 14, 16, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1), true, !kDouble},
      {conv(64, 1, 28, 28, 32, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), true, false},
      {conv(64, 3, 24, 24, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), true, false},
      {conv(64, 32, 14, 14, 64, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), false, false},
      {conv(64, 32, 12, 12, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false, false},
      {conv(8, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32), true, true},
      {conv(1, 3, 8, 5000, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false, false},
      {conv(1, 8, 14, 14, 4, 12, 12, 1, 1, 0, 0, 0, 0, 1, 1, 1), false, !kDouble},
      {conv(8, 3, 32, 32, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1), true, false},
      {conv(1, 8, 40, 40, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), true, true},
  };
  for (const Case& c : cases) {
    const Pool2dParams pooled = pool(c.p.N * c.p.OC, c.p.OH, c.p.OW, 2, 2, 0, 1, false);
    const Pool2dParams overlapping = pool(c.p.N * c.p.OC, c.p.OH, c.p.OW, 2, 1, 0, 1, false);
    const bool got[] = {fc::conv2d_thin_slices<T>(c.p, nullptr, kSms) > 0,
                        fc::conv2d_thin_slices<T>(c.p, &pooled, kSms) > 0,
                        fc::conv2d_thin_slices<T>(c.p, &overlapping, kSms) > 0,
                        fc::conv2d_grad_weight_runs_thin<T>(c.p),
                        fc::conv2d_grad_input_thin_slices<T>(c.p, kSms) > 0};
    const bool want[] = {c.thin, c.thin, false, c.thin, c.thin_grad_input};
    const char* what[] = {"", " with a 2x2 pool", " with an overlapping pool", " grad_weight",
                          " grad_input"};
    for (int i = 0; i < 5; ++i) {
      ++checks;
      if (got[i] != want[i]) {
        std::printf("FAIL %s %s%s: expected %s\n", describe(c.p).c_str(), type_name<T>(),
                    what[i], want[i] ? "the thin kernel" : "the GEMM");
        ++failures;
      }
    }
  }
  // The slices of the documents' small layers at batch 64 on 132 SMs: LeNet-5's conv2 splits its
  // 6 channels 6 ways, in blocks of 8 output channels (two blocks an image, not one of 16), and
  // its grad_input its 16 gradient channels 8 ways; MNIST's conv1 launches enough threads
  // unsplit. In double, LeNet-5's conv2 grad_input runs in the GEMM (0 slices). Slices are as
  // even as the block's threads allow.
  const Conv2dParams lenet1 = cases[0].p, lenet2 = cases[1].p, mnist1 = cases[2].p;
  const Pool2dParams pooled = pool(lenet2.N * lenet2.OC, lenet2.OH, lenet2.OW, 2, 2, 0, 1, false);
  struct Slices {
    const char* what;
    int got, want;
  };
  const Slices slices[] = {
      {"MNIST conv1", fc::conv2d_thin_slices<T>(mnist1, nullptr, kSms), 1},
      {"LeNet-5 conv1", fc::conv2d_thin_slices<T>(lenet1, nullptr, kSms), 3},
      {"LeNet-5 conv2 with its pool", fc::conv2d_thin_slices<T>(lenet2, &pooled, kSms), 6},
      {"LeNet-5 conv2 grad_input", fc::conv2d_grad_input_thin_slices<T>(lenet2, kSms),
       kDouble ? 0 : 8},
      // Three slices would reach the target, but split 8 channels 3 + 3 + 2; four are even.
      {"8 channels, 400 images of 16 x 16",
       fc::conv2d_thin_slices<T>(conv(400, 8, 16, 16, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1),
                                 nullptr, kSms),
       4},
  };
  for (const Slices& c : slices) {
    ++checks;
    if (c.got != c.want) {
      std::printf("FAIL %s %s: %d slices, expected %d\n", c.what, type_name<T>(), c.got, c.want);
      ++failures;
    }
  }
}

template <typename T>
void test_all() {
  test_thin_choice<T>();

  // Tails on every side of the 64 x 64 x 16 tile, an empty reduction, and (M = 1100 with one
  // output tile) split-K for grad_weight.
  test_linear<T>(1, 1, 1);
  test_linear<T>(3, 5, 7);
  test_linear<T>(65, 63, 17);
  test_linear<T>(4, 3, 0);
  test_linear<T>(1100, 10, 20);
  // The 128 x 128 x 8 tile (4-byte accumulators; double stays in the small one): tails on every
  // side, and whole tiles with K a multiple of 8; forward in the large tile, the backward
  // passes in whichever their shapes pick.
  test_linear<T>(131, 129, 19);
  test_linear<T>(256, 256, 16);
  // In float16 and bfloat16, every pass with N and K multiples of 8 runs on tensor cores (the
  // 128 x 128 x 32 tile): M past one tile, a product smaller than a fragment's 16, and (K =
  // 1100 for grad_weight, with one output tile) split-K. In float and double, the SIMT tiles.
  test_linear<T>(131, 136, 40);
  test_linear<T>(5, 8, 8);
  test_linear<T>(1100, 16, 24);
  // float in TF32 on tensor cores (N and K multiples of 4), the same cases; with K = 6, a shape
  // that stays in the SIMT tile.
  if constexpr (std::is_same_v<T, float>) {
    test_linear<T>(131, 136, 40, true);
    test_linear<T>(5, 8, 8, true);
    test_linear<T>(1100, 16, 24, true);
    test_linear<T>(9, 12, 6, true);
  }

  // The documents' layer kinds, then strides, asymmetric padding, dilation, groups, a 1x1 conv,
  // and a long reduction (split-K in grad_weight); each with 32-bit and 64-bit index arithmetic.
  for (bool wide_index : {false, true}) {
    test_conv2d<T>(conv(2, 1, 12, 12, 6, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(2, 3, 9, 8, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(1, 3, 11, 10, 4, 3, 2, 2, 3, 1, 2, 0, 1, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(2, 2, 9, 9, 3, 3, 3, 1, 2, 2, 2, 1, 1, 2, 3, 1), wide_index);
    test_conv2d<T>(conv(2, 4, 7, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2), wide_index);
    test_conv2d<T>(conv(1, 6, 5, 5, 6, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 3), wide_index);
    test_conv2d<T>(conv(3, 2, 16, 16, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    // Empty: no images; no channels and no width (sizes of 0 are divisors nowhere).
    test_conv2d<T>(conv(0, 3, 5, 4, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(2, 0, 5, 0, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    // Each pass in the large tile once: forward (2 groups of 130 filters, 12 x 12 outputs; a thin
    // layer, whose GEMM runs against the thin kernel),
    // grad_input (130 channels, 12 x 12 inputs), grad_weight (130 filters of 15 x 3 x 3).
    test_conv2d<T>(conv(1, 4, 12, 12, 260, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2), wide_index);
    test_conv2d<T>(conv(1, 130, 12, 12, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(2, 15, 6, 6, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    // More than 8 input channels a group: every pass in the GEMM. On tensor cores in float16
    // and bfloat16, and in float where TF32 is allowed; in the SIMT tiles in float and double.
    // The first's forward reads its filters in packs (CKK = 144); the second's CKK = 225 is no
    // multiple of a pack, so its forward stays in the SIMT tiles, and its gradients gather
    // with tails past their last k-step (K = 150 and 35), through groups, strides, asymmetric
    // padding and dilation.
    test_conv2d<T>(conv(2, 16, 9, 9, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index);
    test_conv2d<T>(conv(1, 18, 11, 13, 12, 5, 5, 2, 1, 2, 1, 0, 2, 1, 2, 2), wide_index);
    if constexpr (std::is_same_v<T, float>) {
      test_conv2d<T>(conv(2, 16, 9, 9, 24, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index, true);
      test_conv2d<T>(conv(1, 18, 11, 13, 12, 5, 5, 2, 1, 2, 1, 0, 2, 1, 2, 2), wide_index, true);
      // A thin layer in TF32: its thin kernels and, against the reference, its GEMM.
      test_conv2d<T>(conv(2, 3, 9, 8, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), wide_index, true);
    }
  }
  // The thin-layer kernels' tiling (most cases above run in them too, in one tile): two tiles of
  // 1024 pixels, the second partial; two channel tiles of 32 with 8 channels in the second; 13
  // channels in 2 groups of 8, with strides, asymmetric padding and dilation; 8 input channels of
  // 5 x 5, whose filters take fewer channel groups to fit; a depthwise conv with 2 filters a
  // channel.
  test_conv2d<T>(conv(1, 1, 40, 40, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false);
  test_conv2d<T>(conv(2, 2, 20, 18, 40, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false);
  test_conv2d<T>(conv(1, 3, 11, 13, 13, 5, 5, 2, 1, 2, 1, 0, 2, 1, 2, 1), false);
  test_conv2d<T>(conv(1, 8, 9, 9, 32, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), false);
  test_conv2d<T>(conv(2, 4, 10, 10, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4), false);
  // 3 x 11 x 11 taps: the thin grad_weight takes 2 of its 3 channel octets at a time (91 quads
  // of taps each), the thin forward 1 channel group.
  test_conv2d<T>(conv(1, 3, 14, 14, 20, 11, 11, 1, 1, 5, 5, 5, 5, 1, 1, 1), false);
  // The thin grad_weight's sum over 9 images of 24 x 24 pixels in 45 chunks (4 of 128 pixels
  // and one of 64 an image) and 8 splits of 6 chunks: splits that cross images.
  test_conv2d<T>(conv(9, 1, 24, 24, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false);
  // Rows too wide for a tile of 256 threads (8 channels of 40 x 40 pixels), staged in smaller
  // tiles; grad_input with a padding wider than the window (its transposed conv cuts the
  // gradient's first rows and columns away), with dilation.
  test_conv2d<T>(conv(1, 8, 40, 40, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false);
  test_conv2d<T>(conv(2, 3, 7, 9, 5, 3, 2, 1, 1, 5, 1, 4, 4, 2, 3, 1), false);
  // grad_input whose transposed conv has 16 input channels (in slices), and 2 groups with a
  // padding wider than the window.
  test_conv2d<T>(conv(2, 2, 6, 6, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), false);
  test_conv2d<T>(conv(1, 4, 6, 7, 6, 2, 3, 1, 1, 2, 1, 3, 2, 1, 1, 2), false);

  test_max_pool2d<T>(pool(3, 8, 8, 2, 2, 0, 1, false));
  test_max_pool2d<T>(pool(2, 7, 9, 3, 2, 1, 1, true));
  test_max_pool2d<T>(pool(2, 9, 7, 3, 1, 1, 2, false));
  test_max_pool2d<T>(pool(1, 5, 5, 2, 3, 0, 1, true));
  test_max_pool2d<T>(pool(9, 12, 11, 3, 3, 1, 1, false));
  test_max_pool2d<T>(pool(3, 2, 2, 2, 1, 1, 3, false));  // a window wholly in the padding
  // Windows of 2^31 rows and columns padded by 2^30: the backward's 64-bit index arithmetic.
  test_max_pool2d<T>(pool(2, 3, 4, int64_t{1} << 31, 1, int64_t{1} << 30, 1, false));

  // Fused where the pool has non-overlapping windows of 4 taps: the documents' layers (LeNet-5's
  // and the MNIST CNN's first convs, 2 x 2 pools), odd sizes with a floor-mode edge and a
  // ceil-mode overhang, pool padding, a dilated window, a window wholly in the padding (-inf, and
  // max_pool2d's index past it), groups, the large tile (2 groups of 130 filters), split-K
  // (K = 64 * 9 = 576 over 1 tile) and an empty batch. Composed otherwise: 3 x 3 windows, and
  // 2 x 2 windows that overlap (stride 1).
  using Path = PoolPath;
  auto fused_layer = [](const Conv2dParams& p, int64_t kernel, int64_t stride, int64_t pad,
                        int64_t dilation, bool ceil_mode, Path path, bool tf32 = false) {
    test_conv2d_relu_max_pool2d<T>(p, kernel, stride, pad, dilation, ceil_mode, path, tf32);
  };
  fused_layer(conv(2, 3, 12, 12, 6, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused);
  fused_layer(conv(2, 1, 10, 10, 8, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused);
  fused_layer(conv(1, 2, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused);
  fused_layer(conv(1, 2, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, true, Path::fused);
  fused_layer(conv(2, 2, 8, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 1, 1, true, Path::fused);
  fused_layer(conv(1, 2, 11, 11, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 3, 1, 2, false,
              Path::fused);
  fused_layer(conv(1, 2, 3, 3, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1), 2, 3, 1, 2, false, Path::fused);
  fused_layer(conv(2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2), 2, 2, 0, 1, false, Path::fused);
  fused_layer(conv(1, 4, 24, 24, 260, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2), 2, 2, 0, 1, false,
              Path::fused);
  fused_layer(conv(1, 64, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused_split);
  // 12 input channels, in the GEMM: on tensor cores in the half types and in TF32, whose
  // staging hands the epilogue a window's 4 columns at a time; with split-K in TF32 too.
  fused_layer(conv(2, 12, 10, 10, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused);
  if constexpr (std::is_same_v<T, float>) {
    fused_layer(conv(2, 12, 10, 10, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false,
                Path::fused, true);
    fused_layer(conv(1, 64, 6, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false,
                Path::fused_split, true);
  }
  fused_layer(conv(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 3, 2, 1, 1, true,
              Path::composed);
  fused_layer(conv(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 1, 0, 1, false,
              Path::composed);
  fused_layer(conv(0, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 0, 1, false, Path::fused);
  // The thin-layer kernel over several tiles of windows: the MNIST CNN's first layer (4 tiles of
  // 64 windows, 32 channels), and 420 windows in 2 tiles with pool padding and ceil mode.
  fused_layer(conv(2, 1, 28, 28, 32, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), 2, 2, 0, 1, false,
              Path::fused);
  fused_layer(conv(1, 3, 40, 37, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 1, 1, true,
              Path::fused);

  // The pooled gradients, read through the windows where they are apart: the fused layer's
  // cases above, windows with gaps between them, 3 x 3 and 1 x 4 windows, a strided conv,
  // grad_input in the large tile (130 channels, 12 x 12), grad_weight in the large tile (130
  // filters of 15 x 3 x 3) and with split-K (K = 4 * 24 * 24 over one tile); composed where
  // windows overlap.
  auto pooled_grads = [](const Conv2dParams& p, int64_t kernel_h, int64_t kernel_w,
                         int64_t stride_h, int64_t stride_w, int64_t pad, int64_t dilation,
                         bool ceil_mode, bool apart, bool tf32 = false) {
    test_pooled_grads<T>(p, pool(p.N * p.OC, p.OH, p.OW, kernel_h, kernel_w, stride_h, stride_w,
                                 pad, dilation, ceil_mode),
                         apart, tf32);
  };
  pooled_grads(conv(2, 3, 12, 12, 6, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(2, 1, 10, 10, 8, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(1, 2, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(1, 2, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, true, true);
  pooled_grads(conv(2, 2, 8, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 1, 1, true, true);
  pooled_grads(conv(1, 2, 11, 11, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 3, 3, 1, 2, false,
               true);
  pooled_grads(conv(2, 2, 11, 12, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 3, 3, 0, 1, false,
               true);
  pooled_grads(conv(1, 2, 3, 3, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1), 2, 2, 3, 3, 1, 2, false, true);
  pooled_grads(conv(2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2), 2, 2, 2, 2, 0, 1, false, true);
  pooled_grads(conv(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 3, 3, 3, 3, 1, 1, true, true);
  pooled_grads(conv(2, 3, 7, 13, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 1, 4, 1, 4, 0, 1, false,
               true);
  pooled_grads(conv(2, 3, 13, 13, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(1, 130, 12, 12, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(2, 15, 6, 6, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  if constexpr (std::is_same_v<T, float>) {  // in TF32: the large-tile cases on tensor cores
    pooled_grads(conv(1, 130, 12, 12, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1,
                 false, true, true);
    pooled_grads(conv(2, 15, 6, 6, 130, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1,
                 false, true, true);
  }
  pooled_grads(conv(4, 2, 24, 24, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false,
               true);
  pooled_grads(conv(0, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 2, 2, 0, 1, false, true);
  pooled_grads(conv(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 3, 3, 2, 2, 1, 1, true,
               false);
  pooled_grads(conv(2, 3, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), 2, 2, 1, 1, 0, 1, false,
               false);

  // Packs of 16 bytes with a tail of every length, and unaligned buffers.
  for (int64_t n : {1, 7, 8, 9, 15, 1000, 4099}) {
    test_relu<T>(n, 0, 0);
    test_relu<T>(n, 1, 1);
    test_relu<T>(n, 0, 1);
    test_relu<T>(n, 1, 0);
  }
  test_bias_grad<T>(3, 5, 7);
  test_bias_grad<T>(1, 2, 600);
  test_bias_grad<T>(2, 3, 3000);  // several rounds of a channel block's unrolled loads
  test_bias_grad<T>(70, 100, 1);  // linear's layout: 4 tiles of 32 channels, 70 rows in 8 groups
  test_bias_grad<T>(5, 3, 1);
  test_bias_grad<T>(4, 2, 0);  // nothing to sum: zeros
  test_bias_grad<T>(0, 3, 1);
}

}  // namespace

int main() {
  test_fast_divmod();
  test_tile_choice();
  test_tf32_rounding();
  test_conv_tf32_rounding();
  // Twice: with every launch's own grid and threads in order, then with grids of at most 3
  // blocks (every grid-stride loop takes several steps) and threads in reverse order.
  namespace emulation = fastlayers::cuda::emulation;
  for (const emulation::Schedule schedule : {emulation::Schedule{0, false},
                                             emulation::Schedule{3, true}}) {
    emulation::schedule = schedule;
    test_all<float>();
    test_all<double>();
    test_all<__half>();
    test_all<__nv_bfloat16>();
  }
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
