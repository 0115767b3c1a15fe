// See op_common.h. The order of the checks in each function is the order the messages are meant
// to be met in: the first tensor's dtype and device, then the others against it, then shapes.
#include "op_common.h"

#include <c10/util/accumulate.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>

namespace fastlayers {

void check_input(const Backend& backend, const char* op, const char* name, const at::Tensor& t) {
  check_dtype(op, name, t, backend.dtypes, backend.where);
  // The dispatcher picks a backend from all tensor arguments, so a CPU tensor can reach the CUDA
  // kernel next to a CUDA one.
  FASTLAYERS_CHECK(t.device().type() == backend.device_type, op, "expected ", name, " to be on ",
                   c10::DeviceTypeName(backend.device_type), " like the other tensor arguments, ",
                   "but got ", name, " on ", t.device());
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->contiguous() : at::Tensor();
}

at::Tensor relu_mask(const char* op, const std::optional<at::Tensor>& relu_output,
                     const at::Tensor& grad_output) {
  if (!relu_output.has_value()) return at::Tensor();
  check_like(op, "relu_output", *relu_output, "grad_output", grad_output);
  check_shape(op, "relu_output", *relu_output, grad_output.sizes());
  return relu_output->contiguous();
}

// --- linear ---------------------------------------------------------------------------------

LinearForward linear_forward_args(const Backend& backend, const char* op, const at::Tensor& input,
                                  const at::Tensor& weight,
                                  const std::optional<at::Tensor>& bias) {
  check_input(backend, op, "input", input);
  check_like(op, "weight", weight, "input", input);
  if (bias.has_value()) check_like(op, "bias", *bias, "input", input);
  LinearForward f;
  f.s = linear_sizes(op, input, weight, bias);
  f.out_size = input.sizes().vec();
  f.out_size.back() = f.s.N;
  return f;
}

LinearGradInput linear_grad_input_args(const Backend& backend, const char* op,
                                       const at::Tensor& grad_output, const at::Tensor& weight) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "weight", weight, "grad_output", grad_output);
  check_dim(op, "weight", weight, 2, "(out_features, in_features)");
  FASTLAYERS_CHECK(grad_output.dim() >= 1 && grad_output.size(-1) == weight.size(0), op,
                   "expected the last dimension of grad_output to be out_features=",
                   weight.size(0), ", but got grad_output of size ", grad_output.sizes());
  LinearGradInput g;
  const auto sizes = grad_output.sizes();
  g.s.N = weight.size(0), g.s.K = weight.size(1);
  g.s.M = c10::multiply_integers(sizes.begin(), sizes.end() - 1);
  g.in_size = sizes.vec();
  g.in_size.back() = g.s.K;
  return g;
}

LinearSizes linear_grad_weight_args(const Backend& backend, const char* op,
                                    const at::Tensor& grad_output, const at::Tensor& input) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "input", input, "grad_output", grad_output);
  FASTLAYERS_CHECK(grad_output.dim() >= 1 && input.dim() == grad_output.dim() &&
                       input.sizes().slice(0, input.dim() - 1) ==
                           grad_output.sizes().slice(0, grad_output.dim() - 1),
                   op, "expected input and grad_output to share their leading dimensions, but ",
                   "got input of size ", input.sizes(), " and grad_output of size ",
                   grad_output.sizes());
  const auto sizes = grad_output.sizes();
  LinearSizes s;
  s.N = grad_output.size(-1), s.K = input.size(-1);
  s.M = c10::multiply_integers(sizes.begin(), sizes.end() - 1);
  return s;
}

BiasGradLayout bias_grad_args(const Backend& backend, const char* op,
                              const at::Tensor& grad_output, int64_t channel_dim) {
  check_input(backend, op, "grad_output", grad_output);
  FASTLAYERS_CHECK(grad_output.dim() >= 1, op, "expected grad_output to have at least 1 ",
                   "dimension, but got a 0-D tensor");
  const int64_t dim = grad_output.dim();
  FASTLAYERS_CHECK(channel_dim >= -dim && channel_dim < dim, op, "expected channel_dim in [",
                   -dim, ", ", dim - 1, "], but got channel_dim=", channel_dim);
  const int64_t c = channel_dim < 0 ? channel_dim + dim : channel_dim;
  const auto sizes = grad_output.sizes();
  return {c10::multiply_integers(sizes.begin(), sizes.begin() + c), sizes[c],
          c10::multiply_integers(sizes.begin() + c + 1, sizes.end())};
}

// --- conv2d ---------------------------------------------------------------------------------

Conv2dParams conv2d_forward_args(const Backend& backend, const char* op, const at::Tensor& input,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups) {
  check_input(backend, op, "input", input);
  check_like(op, "weight", weight, "input", input);
  const Conv2dParams p =
      conv2d_params(op, input.sizes(), weight.sizes(), stride, padding, dilation, groups);
  if (bias.has_value()) {
    check_like(op, "bias", *bias, "input", input);
    check_shape(op, "bias", *bias, {p.OC});
  }
  return p;
}

Conv2dParams conv2d_grad_input_args(const Backend& backend, const char* op,
                                    const at::Tensor& grad_output, const at::Tensor& weight,
                                    at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "weight", weight, "grad_output", grad_output);
  const Conv2dParams p =
      conv2d_params(op, input_size, weight.sizes(), stride, padding, dilation, groups);
  check_shape(op, "grad_output", grad_output, {p.N, p.OC, p.OH, p.OW});
  return p;
}

Conv2dParams conv2d_grad_weight_args(const Backend& backend, const char* op,
                                     const at::Tensor& grad_output, const at::Tensor& input,
                                     at::IntArrayRef weight_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "input", input, "grad_output", grad_output);
  const Conv2dParams p =
      conv2d_params(op, input.sizes(), weight_size, stride, padding, dilation, groups);
  check_shape(op, "grad_output", grad_output, {p.N, p.OC, p.OH, p.OW});
  return p;
}

// The int64 indices of a max-pool backward: on grad_output's device, of grad_output's size.
static void check_pool_indices(const char* op, const at::Tensor& indices, const at::Tensor& grad_output) {
  check_dtype(op, "indices", indices, {at::kLong}, "");
  FASTLAYERS_CHECK(indices.device() == grad_output.device(), op, "expected indices to be on the ",
                   "same device as grad_output (", grad_output.device(), "), but got ",
                   indices.device());
}

// The pool on a conv's activation [N, OC, OH, OW], with a pooled gradient and its indices of the
// pool's output size.
static Pool2dParams pooled_grad_params(const char* op, const at::Tensor& grad_output,
                                       const at::Tensor& indices, const Conv2dParams& p,
                                       const PoolGeometry& g) {
  const Pool2dParams pool = max_pool2d_params(op, {p.N, p.OC, p.OH, p.OW}, g.kernel_size,
                                              g.stride, g.padding, g.dilation, g.ceil_mode);
  const std::vector<int64_t> expected{p.N, p.OC, pool.OH, pool.OW};
  FASTLAYERS_CHECK(grad_output.sizes() == at::IntArrayRef(expected), op,
                   "expected grad_output of size ", at::IntArrayRef(expected), " (the batch of input, the output ",
                   "channels of weight and the pool's output size), but got ", grad_output.sizes());
  check_shape(op, "indices", indices, grad_output.sizes());
  return pool;
}

PooledConvParams conv2d_grad_weight_pooled_args(const Backend& backend, const char* op,
                                                const at::Tensor& grad_output,
                                                const at::Tensor& indices, const at::Tensor& input,
                                                at::IntArrayRef weight_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, int64_t groups,
                                                const PoolGeometry& pool) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "input", input, "grad_output", grad_output);
  check_pool_indices(op, indices, grad_output);
  const Conv2dParams p =
      conv2d_params(op, input.sizes(), weight_size, stride, padding, dilation, groups);
  return {p, pooled_grad_params(op, grad_output, indices, p, pool)};
}

PooledConvParams conv2d_grad_input_pooled_args(const Backend& backend, const char* op,
                                               const at::Tensor& grad_output,
                                               const at::Tensor& indices, const at::Tensor& weight,
                                               at::IntArrayRef input_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef dilation,
                                               int64_t groups, const PoolGeometry& pool) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "weight", weight, "grad_output", grad_output);
  check_pool_indices(op, indices, grad_output);
  const Conv2dParams p =
      conv2d_params(op, input_size, weight.sizes(), stride, padding, dilation, groups);
  return {p, pooled_grad_params(op, grad_output, indices, p, pool)};
}

// --- max_pool2d -----------------------------------------------------------------------------

Pool2dParams max_pool2d_args(const Backend& backend, const char* op, const at::Tensor& input,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_input(backend, op, "input", input);
  return max_pool2d_params(op, input.sizes(), kernel_size, stride, padding, dilation, ceil_mode);
}

Pool2dParams max_pool2d_backward_args(const Backend& backend, const char* op,
                                      const at::Tensor& grad_output, const at::Tensor& indices,
                                      at::IntArrayRef input_size, const PoolGeometry& pool) {
  check_input(backend, op, "grad_output", grad_output);
  check_pool_indices(op, indices, grad_output);
  FASTLAYERS_CHECK(input_size.size() == 4, op, "expected input_size to have 4 values (N, C, H, ",
                   "W), but got ", input_size);
  uint64_t numel = 0;
  const bool overflows = c10::safe_multiplies_u64(input_size, &numel);
  FASTLAYERS_CHECK(std::all_of(input_size.begin(), input_size.end(), [](int64_t s) { return s >= 0; }) &&
                       !overflows && numel <= uint64_t(INT64_MAX),
                   op, "expected input_size to be non-negative sizes whose product int64 can hold, ",
                   "but got ", input_size);
  const Pool2dParams p = max_pool2d_params(op, input_size, pool.kernel_size, pool.stride,
                                           pool.padding, pool.dilation, pool.ceil_mode);
  check_shape(op, "grad_output", grad_output, {input_size[0], input_size[1], p.OH, p.OW});
  check_shape(op, "indices", indices, grad_output.sizes());
  return p;
}

// --- relu -----------------------------------------------------------------------------------

void relu_backward_args(const Backend& backend, const char* op, const at::Tensor& grad_output,
                        const at::Tensor& output) {
  check_input(backend, op, "grad_output", grad_output);
  check_like(op, "output", output, "grad_output", grad_output);
  check_shape(op, "output", output, grad_output.sizes());
}

}  // namespace fastlayers
