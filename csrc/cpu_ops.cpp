// The CPU backend: validates (checks.h), makes inputs contiguous, allocates contiguous outputs,
// dispatches on float32/float64 and calls the torch-free kernels in kernels/cpu/.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"
#include "cpu_context.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/max_pool2d.h"
#include "kernels/cpu/relu.h"

namespace fastlayers {
namespace {

constexpr at::ScalarType kCpuDtypes[] = {at::kFloat, at::kDouble};

void check_input(const char* op, const char* name, const at::Tensor& t) {
  check_dtype(op, name, t, kCpuDtypes, "on CPU");
}

// A contiguous copy of an optional tensor, or an undefined tensor.
at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

// The optional ReLU mask of a backward op: same shape, dtype and device as grad_output.
at::Tensor relu_mask(const char* op, const std::optional<at::Tensor>& relu_output,
                     const at::Tensor& grad_output) {
  if (!relu_output.has_value()) return at::Tensor();
  check_like(op, "relu_output", *relu_output, "grad_output", grad_output);
  check_shape(op, "relu_output", *relu_output, grad_output.sizes());
  return relu_output->contiguous();
}

// Calls f(scalar_t{}) for the (already checked) float32 or float64 dtype.
template <typename F>
void dispatch(at::ScalarType dtype, const F& f) {
  if (dtype == at::kDouble) {
    f(double{});
  } else {
    f(float{});
  }
}

template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// --- linear ---------------------------------------------------------------------------------

at::Tensor linear_impl(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, bool relu) {
  check_input(op, "input", input);
  check_like(op, "weight", weight, "input", input);
  if (bias.has_value()) check_like(op, "bias", *bias, "input", input);
  const LinearSizes s = linear_sizes(op, input, weight, bias);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  auto out_size = input.sizes().vec();
  out_size.back() = s.N;
  at::Tensor y = at::empty(out_size, input.options());
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::linear_forward<scalar_t>(cpu_context(), s.M, s.N, s.K, x.const_data_ptr<scalar_t>(),
                                  w.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(b),
                                  y.mutable_data_ptr<scalar_t>(), relu);
  });
  return y;
}

at::Tensor linear(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias) {
  return linear_impl("linear", input, weight, bias, false);
}

at::Tensor linear_relu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias) {
  return linear_impl("linear_relu", input, weight, bias, true);
}

at::Tensor linear_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                             const std::optional<at::Tensor>& relu_output) {
  const char* op = "linear_grad_input";
  check_input(op, "grad_output", grad_output);
  check_like(op, "weight", weight, "grad_output", grad_output);
  check_dim(op, "weight", weight, 2, "(out_features, in_features)");
  FASTLAYERS_CHECK(grad_output.dim() >= 1 && grad_output.size(-1) == weight.size(0), op,
                   "expected the last dimension of grad_output to be out_features=",
                   weight.size(0), ", but got grad_output of size ", grad_output.sizes());
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), w = weight.contiguous();
  const int64_t N = weight.size(0), K = weight.size(1);
  const int64_t M = c10::multiply_integers(gy.sizes().begin(), gy.sizes().end() - 1);
  auto in_size = grad_output.sizes().vec();
  in_size.back() = K;
  at::Tensor gx = at::empty(in_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::linear_grad_input<scalar_t>(cpu_context(), M, N, K, gy.const_data_ptr<scalar_t>(),
                                     w.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                     gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

at::Tensor linear_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              const std::optional<at::Tensor>& relu_output) {
  const char* op = "linear_grad_weight";
  check_input(op, "grad_output", grad_output);
  check_like(op, "input", input, "grad_output", grad_output);
  FASTLAYERS_CHECK(grad_output.dim() >= 1 && input.dim() == grad_output.dim() &&
                       input.sizes().slice(0, input.dim() - 1) ==
                           grad_output.sizes().slice(0, grad_output.dim() - 1),
                   op, "expected input and grad_output to share their leading dimensions, but ",
                   "got input of size ", input.sizes(), " and grad_output of size ",
                   grad_output.sizes());
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  const int64_t N = gy.size(-1), K = x.size(-1);
  const int64_t M = c10::multiply_integers(gy.sizes().begin(), gy.sizes().end() - 1);
  at::Tensor gw = at::empty({N, K}, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::linear_grad_weight<scalar_t>(cpu_context(), M, N, K, gy.const_data_ptr<scalar_t>(),
                                      x.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                      gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

at::Tensor bias_grad(const at::Tensor& grad_output, const std::optional<at::Tensor>& relu_output,
                     int64_t channel_dim) {
  const char* op = "bias_grad";
  check_input(op, "grad_output", grad_output);
  FASTLAYERS_CHECK(grad_output.dim() >= 1, op, "expected grad_output to have at least 1 ",
                   "dimension, but got a 0-D tensor");
  const int64_t dim = grad_output.dim();
  FASTLAYERS_CHECK(channel_dim >= -dim && channel_dim < dim, op, "expected channel_dim in [",
                   -dim, ", ", dim - 1, "], but got channel_dim=", channel_dim);
  const int64_t c = channel_dim < 0 ? channel_dim + dim : channel_dim;
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous();
  const auto sizes = gy.sizes();
  const int64_t outer = c10::multiply_integers(sizes.begin(), sizes.begin() + c);
  const int64_t inner = c10::multiply_integers(sizes.begin() + c + 1, sizes.end());
  at::Tensor gb = at::empty({sizes[c]}, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::bias_grad<scalar_t>(cpu_context(), outer, sizes[c], inner, gy.const_data_ptr<scalar_t>(),
                             data_or_null<scalar_t>(mask), gb.mutable_data_ptr<scalar_t>());
  });
  return gb;
}

// --- conv2d ---------------------------------------------------------------------------------

// The checks of a conv forward (conv2d, conv2d_relu, conv2d_relu_max_pool2d) and its sizes.
Conv2dParams conv2d_forward_params(const char* op, const at::Tensor& input,
                                   const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                   at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, int64_t groups) {
  check_input(op, "input", input);
  check_like(op, "weight", weight, "input", input);
  const Conv2dParams p =
      conv2d_params(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  if (bias.has_value()) {
    check_like(op, "bias", *bias, "input", input);
    check_shape(op, "bias", *bias, {p.OC});
  }
  return p;
}

at::Tensor conv2d_impl(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool relu) {
  const Conv2dParams p =
      conv2d_forward_params(op, input, weight, bias, stride, padding, dilation, groups);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty({p.N, p.OC, p.OH, p.OW}, input.options());
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_forward<scalar_t>(cpu_context(), p, x.const_data_ptr<scalar_t>(),
                                  w.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(b),
                                  y.mutable_data_ptr<scalar_t>(), relu);
  });
  return y;
}

at::Tensor conv2d(const at::Tensor& input, const at::Tensor& weight,
                  const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                  at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_impl("conv2d", input, weight, bias, stride, padding, dilation, groups, false);
}

at::Tensor conv2d_relu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_impl("conv2d_relu", input, weight, bias, stride, padding, dilation, groups, true);
}

// grad_output must be [N, OC, OH, OW] for the convolution that params describe.
void check_conv_grad_output(const char* op, const at::Tensor& grad_output, const Conv2dParams& p) {
  check_shape(op, "grad_output", grad_output, {p.N, p.OC, p.OH, p.OW});
}

at::Tensor conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                             c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_input";
  check_input(op, "grad_output", grad_output);
  check_like(op, "weight", weight, "grad_output", grad_output);
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  const Conv2dParams p =
      conv2d_params(op, in_size, weight.sizes(), stride, padding, dilation, groups);
  check_conv_grad_output(op, grad_output, p);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_grad_input<scalar_t>(cpu_context(), p, gy.const_data_ptr<scalar_t>(),
                                     w.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                     gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

at::Tensor conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_weight";
  check_input(op, "grad_output", grad_output);
  check_like(op, "input", input, "grad_output", grad_output);
  const auto w_size = C10_AS_INTARRAYREF_SLOW(weight_size);
  const Conv2dParams p = conv2d_params(op, input.sizes(), w_size, stride, padding, dilation, groups);
  check_conv_grad_output(op, grad_output, p);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty(w_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_grad_weight<scalar_t>(cpu_context(), p, gy.const_data_ptr<scalar_t>(),
                                      x.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                      gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

// --- conv2d_relu_max_pool2d ---------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> conv2d_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    at::IntArrayRef pool_kernel_size, at::IntArrayRef pool_stride, at::IntArrayRef pool_padding,
    at::IntArrayRef pool_dilation, bool pool_ceil_mode) {
  const char* op = "conv2d_relu_max_pool2d";
  const Conv2dParams p =
      conv2d_forward_params(op, input, weight, bias, stride, padding, dilation, groups);
  const Pool2dParams pool = max_pool2d_params(op, {p.N, p.OC, p.OH, p.OW}, pool_kernel_size,
                                              pool_stride, pool_padding, pool_dilation,
                                              pool_ceil_mode);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  const std::vector<int64_t> out_size{p.N, p.OC, pool.OH, pool.OW};
  at::Tensor y = at::empty(out_size, input.options());
  at::Tensor indices = at::empty(out_size, input.options().dtype(at::kLong));
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_relu_max_pool2d_forward<scalar_t>(
        cpu_context(), p, pool, x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
        data_or_null<scalar_t>(b), y.mutable_data_ptr<scalar_t>(),
        indices.mutable_data_ptr<int64_t>());
  });
  return {y, indices};
}

// --- max_pool2d -----------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d";
  check_input(op, "input", input);
  const Pool2dParams p =
      max_pool2d_params(op, input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
  const at::Tensor x = input.contiguous();
  const std::vector<int64_t> out_size{input.size(0), input.size(1), p.OH, p.OW};
  at::Tensor y = at::empty(out_size, input.options());
  at::Tensor indices = at::empty(out_size, input.options().dtype(at::kLong));
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::max_pool2d_forward<scalar_t>(cpu_context(), p, x.const_data_ptr<scalar_t>(),
                                      y.mutable_data_ptr<scalar_t>(),
                                      indices.mutable_data_ptr<int64_t>());
  });
  return {y, indices};
}

at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                               c10::SymIntArrayRef input_size) {
  const char* op = "max_pool2d_backward";
  check_input(op, "grad_output", grad_output);
  check_dtype(op, "indices", indices, {at::kLong}, "");
  FASTLAYERS_CHECK(indices.device() == grad_output.device(), op, "expected indices to be on the ",
                   "same device as grad_output (", grad_output.device(), "), but got ",
                   indices.device());
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  FASTLAYERS_CHECK(in_size.size() == 4, op, "expected input_size to have 4 values (N, C, H, W), ",
                   "but got ", in_size);
  uint64_t numel = 0;
  const bool overflows = c10::safe_multiplies_u64(in_size, &numel);
  FASTLAYERS_CHECK(std::all_of(in_size.begin(), in_size.end(), [](int64_t s) { return s >= 0; }) &&
                       !overflows && numel <= uint64_t(INT64_MAX),
                   op, "expected input_size to be non-negative sizes whose product int64 can hold, ",
                   "but got ", in_size);
  check_dim(op, "grad_output", grad_output, 4, "(N, C, OH, OW)");
  FASTLAYERS_CHECK(grad_output.size(0) == in_size[0] && grad_output.size(1) == in_size[1], op,
                   "expected grad_output to have the batch and channels of input_size ", in_size,
                   ", but got grad_output of size ", grad_output.sizes());
  check_shape(op, "indices", indices, grad_output.sizes());
  Pool2dParams p{};
  p.planes = in_size[0] * in_size[1];
  p.H = in_size[2], p.W = in_size[3];
  p.OH = grad_output.size(2), p.OW = grad_output.size(3);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  bool ok = true;
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    ok = cpu::max_pool2d_backward<scalar_t>(cpu_context(), p, gy.const_data_ptr<scalar_t>(),
                                            ind.const_data_ptr<int64_t>(),
                                            gx.mutable_data_ptr<scalar_t>());
  });
  FASTLAYERS_CHECK(ok, op, "found an index outside its ", p.H, " x ", p.W, " input plane; ",
                   "indices must come from max_pool2d on an input of size ", in_size);
  return gx;
}

// --- relu -----------------------------------------------------------------------------------

at::Tensor relu(const at::Tensor& input) {
  check_input("relu", "input", input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  dispatch(x.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::relu_forward<scalar_t>(cpu_context(), x.numel(), x.const_data_ptr<scalar_t>(),
                                y.mutable_data_ptr<scalar_t>());
  });
  return y;
}

at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  const char* op = "relu_backward";
  check_input(op, "grad_output", grad_output);
  check_like(op, "output", output, "grad_output", grad_output);
  check_shape(op, "output", output, grad_output.sizes());
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  at::Tensor gx = at::empty(gy.sizes(), gy.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::relu_backward<scalar_t>(cpu_context(), gy.numel(), gy.const_data_ptr<scalar_t>(),
                                 y.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("linear", &linear);
  m.impl("linear_relu", &linear_relu);
  m.impl("linear_grad_input", &linear_grad_input);
  m.impl("linear_grad_weight", &linear_grad_weight);
  m.impl("bias_grad", &bias_grad);
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_relu", &conv2d_relu);
  m.impl("conv2d_grad_input", &conv2d_grad_input);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight);
  m.impl("conv2d_relu_max_pool2d", &conv2d_relu_max_pool2d);
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("relu", &relu);
  m.impl("relu_backward", &relu_backward);
}

}  // namespace fastlayers
