// The CPU backend: validates (op_common.h, shared with the CUDA backend), makes inputs contiguous,
// allocates contiguous outputs, dispatches on float32/float64 and calls the torch-free kernels in
// kernels/cpu/. float16 and bfloat16 calls are widened to float32 (cpu_half.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include "cpu_context.h"
#include "cpu_half.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/max_pool2d.h"
#include "kernels/cpu/relu.h"
#include "op_common.h"

namespace fastlayers {
namespace {

constexpr at::ScalarType kCpuDtypes[] = {at::kFloat, at::kDouble};
const Backend kCpu{c10::DeviceType::CPU, kCpuDtypes, "on CPU"};

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
  const LinearForward f = linear_forward_args(kCpu, op, input, weight, bias);
  const LinearSizes& s = f.s;
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty(f.out_size, input.options());
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
  const LinearGradInput g = linear_grad_input_args(kCpu, op, grad_output, weight);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gx = at::empty(g.in_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::linear_grad_input<scalar_t>(cpu_context(), g.s.M, g.s.N, g.s.K, gy.const_data_ptr<scalar_t>(),
                                     w.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                     gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

at::Tensor linear_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              const std::optional<at::Tensor>& relu_output) {
  const char* op = "linear_grad_weight";
  const LinearSizes s = linear_grad_weight_args(kCpu, op, grad_output, input);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty({s.N, s.K}, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::linear_grad_weight<scalar_t>(cpu_context(), s.M, s.N, s.K, gy.const_data_ptr<scalar_t>(),
                                      x.const_data_ptr<scalar_t>(), data_or_null<scalar_t>(mask),
                                      gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

at::Tensor bias_grad(const at::Tensor& grad_output, const std::optional<at::Tensor>& relu_output,
                     int64_t channel_dim) {
  const char* op = "bias_grad";
  const BiasGradLayout l = bias_grad_args(kCpu, op, grad_output, channel_dim);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous();
  at::Tensor gb = at::empty({l.channels}, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::bias_grad<scalar_t>(cpu_context(), l.outer, l.channels, l.inner, gy.const_data_ptr<scalar_t>(),
                             data_or_null<scalar_t>(mask), gb.mutable_data_ptr<scalar_t>());
  });
  return gb;
}

// --- conv2d ---------------------------------------------------------------------------------

at::Tensor conv2d_impl(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool relu) {
  const Conv2dParams p =
      conv2d_forward_args(kCpu, op, input, weight, bias, stride, padding, dilation, groups);
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

at::Tensor conv2d_grad_input(const at::Tensor& grad_output, const at::Tensor& weight,
                             c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_input";
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  const Conv2dParams p = conv2d_grad_input_args(kCpu, op, grad_output, weight, in_size, stride,
                                                padding, dilation, groups);
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
  const auto w_size = C10_AS_INTARRAYREF_SLOW(weight_size);
  const Conv2dParams p = conv2d_grad_weight_args(kCpu, op, grad_output, input, w_size, stride,
                                                 padding, dilation, groups);
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

at::Tensor conv2d_grad_weight_pooled(const at::Tensor& grad_output, const at::Tensor& indices,
                                     const at::Tensor& input, c10::SymIntArrayRef weight_size,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation, int64_t groups,
                                     at::IntArrayRef pool_kernel_size,
                                     at::IntArrayRef pool_stride, at::IntArrayRef pool_padding,
                                     at::IntArrayRef pool_dilation, bool pool_ceil_mode,
                                     const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_weight_pooled";
  const auto w_size = C10_AS_INTARRAYREF_SLOW(weight_size);
  const PooledConvParams p = conv2d_grad_weight_pooled_args(
      kCpu, op, grad_output, indices, input, w_size, stride, padding, dilation, groups,
      {pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode});
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty(w_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_grad_weight_pooled<scalar_t>(
        cpu_context(), p.conv, p.pool, gy.const_data_ptr<scalar_t>(),
        ind.const_data_ptr<int64_t>(), data_or_null<scalar_t>(mask), x.const_data_ptr<scalar_t>(),
        gw.mutable_data_ptr<scalar_t>());
  });
  return gw;
}

at::Tensor conv2d_grad_input_pooled(const at::Tensor& grad_output, const at::Tensor& indices,
                                    const at::Tensor& weight, c10::SymIntArrayRef input_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    at::IntArrayRef pool_kernel_size, at::IntArrayRef pool_stride,
                                    at::IntArrayRef pool_padding, at::IntArrayRef pool_dilation,
                                    bool pool_ceil_mode,
                                    const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_input_pooled";
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  const PooledConvParams p = conv2d_grad_input_pooled_args(
      kCpu, op, grad_output, indices, weight, in_size, stride, padding, dilation, groups,
      {pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode});
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous(), w = weight.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::conv2d_grad_input_pooled<scalar_t>(
        cpu_context(), p.conv, p.pool, gy.const_data_ptr<scalar_t>(),
        ind.const_data_ptr<int64_t>(), data_or_null<scalar_t>(mask), w.const_data_ptr<scalar_t>(),
        gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

// --- conv2d_relu_max_pool2d ---------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> conv2d_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    at::IntArrayRef pool_kernel_size, at::IntArrayRef pool_stride, at::IntArrayRef pool_padding,
    at::IntArrayRef pool_dilation, bool pool_ceil_mode) {
  const char* op = "conv2d_relu_max_pool2d";
  const Conv2dParams p =
      conv2d_forward_args(kCpu, op, input, weight, bias, stride, padding, dilation, groups);
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
  const Pool2dParams p =
      max_pool2d_args(kCpu, op, input, kernel_size, stride, padding, dilation, ceil_mode);
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
                               c10::SymIntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  const Pool2dParams p = max_pool2d_backward_args(
      kCpu, op, grad_output, indices, in_size, {kernel_size, stride, padding, dilation, ceil_mode});
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  dispatch(gy.scalar_type(), [&](auto tag) {
    using scalar_t = decltype(tag);
    cpu::max_pool2d_backward<scalar_t>(cpu_context(), p, gy.const_data_ptr<scalar_t>(),
                                       ind.const_data_ptr<int64_t>(),
                                       gx.mutable_data_ptr<scalar_t>());
  });
  return gx;
}

// --- relu -----------------------------------------------------------------------------------

at::Tensor relu(const at::Tensor& input) {
  check_input(kCpu, "relu", "input", input);
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
  relu_backward_args(kCpu, op, grad_output, output);
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

// Every op takes float16 and bfloat16 too, computed in float32 (cpu_half.h).
TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("linear", widened(&linear, "linear"));
  m.impl("linear_relu", widened(&linear_relu, "linear_relu"));
  m.impl("linear_grad_input", widened(&linear_grad_input, "linear_grad_input"));
  m.impl("linear_grad_weight", widened(&linear_grad_weight, "linear_grad_weight"));
  m.impl("bias_grad", widened(&bias_grad, "bias_grad"));
  m.impl("conv2d", widened(&conv2d, "conv2d"));
  m.impl("conv2d_relu", widened(&conv2d_relu, "conv2d_relu"));
  m.impl("conv2d_grad_input", widened(&conv2d_grad_input, "conv2d_grad_input"));
  m.impl("conv2d_grad_weight", widened(&conv2d_grad_weight, "conv2d_grad_weight"));
  m.impl("conv2d_grad_weight_pooled", widened(&conv2d_grad_weight_pooled, "conv2d_grad_weight_pooled"));
  m.impl("conv2d_grad_input_pooled", widened(&conv2d_grad_input_pooled, "conv2d_grad_input_pooled"));
  m.impl("conv2d_relu_max_pool2d", widened(&conv2d_relu_max_pool2d, "conv2d_relu_max_pool2d"));
  m.impl("max_pool2d", widened(&max_pool2d, "max_pool2d"));
  m.impl("max_pool2d_backward", widened(&max_pool2d_backward, "max_pool2d_backward"));
  m.impl("relu", widened(&relu, "relu"));
  m.impl("relu_backward", widened(&relu_backward, "relu_backward"));
}

}  // namespace fastlayers
