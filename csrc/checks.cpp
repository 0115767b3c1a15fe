// See checks.h. Shape formulas follow ATen (ConvUtils.h, Pool.h) so that every size torch accepts,
// fastlayers accepts, with the same output size.
#include "checks.h"

#include <c10/util/irange.h>
#include <c10/util/safe_numerics.h>

#include <sstream>

namespace fastlayers {
namespace {

std::string list(c10::IntArrayRef v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void check_length(const char* op, const char* name, c10::IntArrayRef v, size_t n) {
  FASTLAYERS_CHECK(v.size() == n, op, "expected ", name, " to have ", n, " values, but got ",
                   name, "=", list(v));
}

void check_positive(const char* op, const char* name, c10::IntArrayRef v) {
  for (int64_t x : v) {
    FASTLAYERS_CHECK(x > 0, op, "expected ", name, " to be positive, but got ", name, "=", list(v));
  }
}

void check_non_negative(const char* op, const char* name, c10::IntArrayRef v) {
  for (int64_t x : v) {
    FASTLAYERS_CHECK(x >= 0, op, "expected ", name, " to be non-negative, but got ", name, "=",
                     list(v));
  }
}

// a + b and a * b for the geometry arithmetic, refusing arguments (padding, dilation, stride near
// 2^63) whose padded sizes or dilated windows int64 cannot hold, instead of wrapping around.
int64_t checked_add(const char* op, int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  FASTLAYERS_CHECK(!c10::add_overflows(a, b, &out), op, what, " overflows int64 (", a, " + ", b,
                   ")");
  return out;
}

int64_t checked_mul(const char* op, int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  FASTLAYERS_CHECK(!c10::mul_overflows(a, b, &out), op, what, " overflows int64 (", a, " * ", b,
                   ")");
  return out;
}

// dilation * (kernel - 1) + 1: the extent of a dilated window.
int64_t window_extent(const char* op, int64_t kernel, int64_t dilation, const char* what) {
  return checked_add(op, checked_mul(op, dilation, kernel - 1, what), 1, what);
}

}  // namespace

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kLong: return "torch.int64";
    case at::kInt: return "torch.int32";
    case at::kShort: return "torch.int16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kBool: return "torch.bool";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    default: return c10::toString(dtype);
  }
}

void check_dtype(const char* op, const char* name, const at::Tensor& t,
                 c10::ArrayRef<at::ScalarType> dtypes, const char* what) {
  FASTLAYERS_CHECK(t.defined(), op, "expected ", name, " to be a tensor, but got None");
  for (auto d : dtypes) {
    if (t.scalar_type() == d) return;
  }
  std::ostringstream allowed;
  for (size_t i = 0; i < dtypes.size(); ++i) {
    allowed << (i == 0 ? "" : (i + 1 == dtypes.size() ? " or " : ", ")) << dtype_name(dtypes[i]);
  }
  FASTLAYERS_CHECK(false, op, "expected ", name, " to be ", allowed.str(), *what ? " " : "", what,
                   ", but got ", dtype_name(t.scalar_type()));
}

void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                const at::Tensor& ref) {
  FASTLAYERS_CHECK(t.defined(), op, "expected ", name, " to be a tensor, but got None");
  FASTLAYERS_CHECK(t.device() == ref.device(), op, "expected ", name,
                   " to be on the same device as ", ref_name, " (", ref.device(), "), but got ",
                   t.device());
  FASTLAYERS_CHECK(t.scalar_type() == ref.scalar_type(), op, "expected ", name,
                   " to have the same dtype as ", ref_name, " (", dtype_name(ref.scalar_type()),
                   "), but got ", dtype_name(t.scalar_type()));
}

void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
               const char* layout) {
  FASTLAYERS_CHECK(t.dim() == dim, op, "expected ", name, " to be ", dim, "-D ", layout,
                   ", but got ", t.dim(), "-D ", name, " of size ", t.sizes());
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 c10::IntArrayRef expected) {
  FASTLAYERS_CHECK(t.sizes() == expected, op, "expected ", name, " of size ", expected,
                   ", but got ", t.sizes());
}

LinearSizes linear_sizes(const char* op, const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias) {
  FASTLAYERS_CHECK(input.dim() >= 1, op, "expected input to have at least 1 dimension, but got ",
                   "a 0-D tensor");
  check_dim(op, "weight", weight, 2, "(out_features, in_features)");
  const int64_t K = weight.size(1), N = weight.size(0);
  FASTLAYERS_CHECK(input.size(-1) == K, op, "expected the last dimension of input to be ",
                   "in_features=", K, " (weight is ", weight.sizes(), "), but got input of size ",
                   input.sizes());
  if (bias.has_value()) {
    check_shape(op, "bias", *bias, {N});
  }
  const int64_t M = c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
  return {M, N, K};
}

Conv2dParams conv2d_params(const char* op, c10::IntArrayRef input_size,
                           c10::IntArrayRef weight_size, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  check_length(op, "stride", stride, 2);
  check_length(op, "padding", padding, 4);
  check_length(op, "dilation", dilation, 2);
  check_positive(op, "stride", stride);
  check_positive(op, "dilation", dilation);
  check_non_negative(op, "padding", padding);
  FASTLAYERS_CHECK(groups > 0, op, "expected groups to be positive, but got groups=", groups);
  FASTLAYERS_CHECK(input_size.size() == 4, op, "expected input to be 4-D (N, C, H, W), but got ",
                   input_size.size(), "-D input of size ", input_size);
  FASTLAYERS_CHECK(weight_size.size() == 4, op,
                   "expected weight to be 4-D (out_channels, in_channels / groups, kH, kW), but got ",
                   weight_size.size(), "-D weight of size ", weight_size);
  for (int64_t s : input_size) {
    FASTLAYERS_CHECK(s >= 0, op, "expected input sizes to be non-negative, but got ", input_size);
  }
  for (int64_t s : weight_size) {
    FASTLAYERS_CHECK(s >= 0, op, "expected weight sizes to be non-negative, but got ", weight_size);
  }
  Conv2dParams p{};
  p.N = input_size[0], p.C = input_size[1], p.H = input_size[2], p.W = input_size[3];
  p.OC = weight_size[0], p.KH = weight_size[2], p.KW = weight_size[3];
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.pad_top = padding[0], p.pad_left = padding[2];
  p.dilation_h = dilation[0], p.dilation_w = dilation[1];
  p.groups = groups;
  // torch refuses both: a convolution without output channels, and empty planes in a batch of
  // channels (an empty batch, or zero channels, may have empty planes if the padding fills them).
  FASTLAYERS_CHECK(p.OC > 0, op, "expected out_channels (weight.size(0)) to be positive, but got ",
                   "weight of size ", weight_size);
  FASTLAYERS_CHECK(p.N == 0 || p.C == 0 || (p.H > 0 && p.W > 0), op, "expected non-empty ",
                   "planes (H and W > 0) in an input with a batch and channels, but got input of ",
                   "size ", input_size);
  FASTLAYERS_CHECK(p.C % groups == 0, op, "expected in_channels (", p.C,
                   ") to be divisible by groups (", groups, ")");
  FASTLAYERS_CHECK(p.OC % groups == 0, op, "expected out_channels (weight.size(0) = ", p.OC,
                   ") to be divisible by groups (", groups, ")");
  FASTLAYERS_CHECK(weight_size[1] == p.C / groups, op, "expected weight.size(1) to be ",
                   "in_channels / groups = ", p.C, " / ", groups, " = ", p.C / groups,
                   ", but got weight of size ", weight_size);
  FASTLAYERS_CHECK(p.KH > 0 && p.KW > 0, op, "expected a non-empty kernel, but got weight of size ",
                   weight_size);
  const int64_t padded_h = checked_add(op, checked_add(op, p.H, padding[0], "the padded height"),
                                       padding[1], "the padded height");
  const int64_t padded_w = checked_add(op, checked_add(op, p.W, padding[2], "the padded width"),
                                       padding[3], "the padded width");
  const int64_t kernel_h = window_extent(op, p.KH, p.dilation_h, "the dilated kernel height");
  const int64_t kernel_w = window_extent(op, p.KW, p.dilation_w, "the dilated kernel width");
  FASTLAYERS_CHECK(kernel_h <= padded_h && kernel_w <= padded_w, op, "expected the (dilated) ",
                   "kernel (", kernel_h, " x ", kernel_w, ") to fit in the padded input (",
                   padded_h, " x ", padded_w, "); the kernel can't be larger than the input");
  p.OH = (padded_h - kernel_h) / p.stride_h + 1;
  p.OW = (padded_w - kernel_w) / p.stride_w + 1;
  return p;
}

int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride,
                         int64_t dilation, bool ceil_mode) {
  // ATen's floor((in + 2 * pad - extent + (ceil_mode ? stride - 1 : 0)) / stride) + 1, as a floor
  // or ceil division of span by the stride, for either sign of span: nothing here can wrap around
  // for the sizes max_pool2d_params lets through (in + 2 * pad and the extent fit in int64).
  const int64_t span = in + 2 * pad - (dilation * (kernel - 1) + 1);
  int64_t out = 1;
  if (ceil_mode) {
    out += span >= 0 ? span / stride + (span % stride != 0) : -(-span / stride);
  } else {
    out += span >= 0 ? span / stride : -((-span - 1) / stride) - 1;
  }
  // In ceil mode, the last window must start inside the input or its left padding:
  // (out - 1) * stride < in + pad, compared without the product.
  if (ceil_mode && out > 1 && out - 1 > (in + pad - 1) / stride) --out;
  return out;
}

Pool2dParams max_pool2d_params(const char* op, c10::IntArrayRef input_size,
                               c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                               c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               bool ceil_mode) {
  check_length(op, "kernel_size", kernel_size, 2);
  check_length(op, "stride", stride, 2);
  check_length(op, "padding", padding, 2);
  check_length(op, "dilation", dilation, 2);
  check_positive(op, "kernel_size", kernel_size);
  check_positive(op, "stride", stride);
  check_positive(op, "dilation", dilation);
  check_non_negative(op, "padding", padding);
  for (const auto i : c10::irange(2)) {
    FASTLAYERS_CHECK(padding[i] <= kernel_size[i] / 2, op, "expected padding to be at most half ",
                     "of kernel_size, but got padding=", list(padding), " for kernel_size=",
                     list(kernel_size));
  }
  FASTLAYERS_CHECK(input_size.size() == 4, op, "expected input to be 4-D (N, C, H, W), but got ",
                   input_size.size(), "-D input of size ", input_size);
  FASTLAYERS_CHECK(input_size[1] > 0 && input_size[2] > 0 && input_size[3] > 0, op,
                   "expected input with non-zero C, H and W, but got input of size ", input_size);
  // pool_output_size needs in + 2 * pad and the window's extent in int64.
  for (const auto i : c10::irange(2)) {
    checked_add(op, input_size[2 + i], 2 * padding[i], "the padded input");
    window_extent(op, kernel_size[i], dilation[i], "the dilated window");
  }
  Pool2dParams p{};
  p.planes = input_size[0] * input_size[1];
  p.H = input_size[2], p.W = input_size[3];
  p.kernel_h = kernel_size[0], p.kernel_w = kernel_size[1];
  p.stride_h = stride[0], p.stride_w = stride[1];
  p.pad_h = padding[0], p.pad_w = padding[1];
  p.dilation_h = dilation[0], p.dilation_w = dilation[1];
  p.OH = pool_output_size(p.H, p.kernel_h, p.pad_h, p.stride_h, p.dilation_h, ceil_mode);
  p.OW = pool_output_size(p.W, p.kernel_w, p.pad_w, p.stride_w, p.dilation_w, ceil_mode);
  FASTLAYERS_CHECK(p.OH > 0 && p.OW > 0, op, "input of size ", input_size, " gives an output of ",
                   p.OH, " x ", p.OW, " with kernel_size=", list(kernel_size),
                   ", stride=", list(stride), ", padding=", list(padding), ", dilation=",
                   list(dilation), "; the output can't be empty");
  return p;
}

}  // namespace fastlayers
