// Autograd for the forward ops (linear, linear_relu, conv2d, conv2d_relu,
// conv2d_relu_max_pool2d, max_pool2d and relu) in C++, on the Autograd key of every backend. A
// Python backward (torch.library.register_autograd) cost about 25 us per forward and backward
// for linear and 80 us for the fused conv, more than the arithmetic of the models' smallest
// layers (a classifier of 10 outputs, LeNet-5's 6 -> 16 conv). The backward calls the backward
// ops through the dispatcher, so under create_graph their own autograd (Python,
// fastlayers/_autograd.py, which also holds the torch.autograd.Function layers with the same
// backward) still gives double backward. Under torch.autocast the autocast kernel runs first and
// redispatches here with the cast arguments, which are what is saved.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

namespace fastlayers {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using at::IntArrayRef;
using c10::SymIntArrayRef;
using LinearSignature = Tensor(const Tensor&, const Tensor&, const OptionalTensor&);
using GradSignature = Tensor(const Tensor&, const Tensor&, const OptionalTensor&);
using BiasGradSignature = Tensor(const Tensor&, const OptionalTensor&, int64_t);

template <class Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// A plain backward (grad mode off: not create_graph) records nothing, so the backward ops go
// straight to their kernels, past their own autograd, which is Python and costs ~3 us a call.
struct BelowAutogradUnlessRecording {
  std::optional<at::AutoDispatchBelowADInplaceOrView> guard;
  BelowAutogradUnlessRecording() {
    if (!at::GradMode::is_enabled()) guard.emplace();
  }
};

// y = input @ weight^T + bias, then ReLU when Relu; the backward masks by y when Relu.
template <bool Relu>
struct LinearFunction : public torch::autograd::Function<LinearFunction<Relu>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                        const OptionalTensor& bias) {
    static const auto op =
        op_handle<LinearSignature>(Relu ? "fastlayers::linear_relu" : "fastlayers::linear");
    Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = op.call(input, weight, bias);
    }
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward({input, weight, Relu ? output : Tensor()});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto grad_input_op = op_handle<GradSignature>("fastlayers::linear_grad_input");
    static const auto grad_weight_op = op_handle<GradSignature>("fastlayers::linear_grad_weight");
    static const auto bias_grad_op = op_handle<BiasGradSignature>("fastlayers::bias_grad");
    const auto saved = ctx->get_saved_variables();
    const Tensor& input = saved[0];
    const Tensor& weight = saved[1];
    const OptionalTensor relu_output = saved[2].defined() ? OptionalTensor(saved[2]) : std::nullopt;
    const Tensor& grad = grad_outputs[0];
    Tensor grad_input, grad_weight, grad_bias;
    if (!grad.defined()) return {grad_input, grad_weight, grad_bias};
    BelowAutogradUnlessRecording below;
    if (ctx->needs_input_grad(0)) grad_input = grad_input_op.call(grad, weight, relu_output);
    if (ctx->needs_input_grad(1)) grad_weight = grad_weight_op.call(grad, input, relu_output);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grad_bias = bias_grad_op.call(grad, relu_output, -1);
    }
    return {grad_input, grad_weight, grad_bias};
  }
};

// An undefined (None) input or weight goes straight to the kernel, whose argument check names it.
template <bool Relu>
Tensor linear_autograd(const Tensor& input, const Tensor& weight, const OptionalTensor& bias) {
  if (!input.defined() || !weight.defined()) {
    static const auto op =
        op_handle<LinearSignature>(Relu ? "fastlayers::linear_relu" : "fastlayers::linear");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, weight, bias);
  }
  return LinearFunction<Relu>::apply(input, weight, bias);
}

// --- conv2d and conv2d_relu -----------------------------------------------------------------

using ConvSignature = Tensor(const Tensor&, const Tensor&, const OptionalTensor&, IntArrayRef,
                             IntArrayRef, IntArrayRef, int64_t);
using ConvGradSignature = Tensor(const Tensor&, const Tensor&, SymIntArrayRef, IntArrayRef,
                                 IntArrayRef, IntArrayRef, int64_t, const OptionalTensor&);

// A conv's geometry, kept in the context for its backward.
struct ConvGeometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
  }
  static ConvGeometry load(AutogradContext* ctx) {
    return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
            ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
  }
};

// The input and weight gradients of a conv whose output gradient is grad (masked by
// relu_output, if given), each only where needed.
std::pair<Tensor, Tensor> conv_grads(AutogradContext* ctx, const ConvGeometry& g,
                                     const Tensor& grad, const Tensor& input, const Tensor& weight,
                                     const OptionalTensor& relu_output) {
  static const auto grad_input_op = op_handle<ConvGradSignature>("fastlayers::conv2d_grad_input");
  static const auto grad_weight_op =
      op_handle<ConvGradSignature>("fastlayers::conv2d_grad_weight");
  Tensor grad_input, grad_weight;
  if (ctx->needs_input_grad(0)) {
    grad_input = grad_input_op.call(grad, weight, input.sym_sizes(), g.stride, g.padding,
                                    g.dilation, g.groups, relu_output);
  }
  if (ctx->needs_input_grad(1)) {
    grad_weight = grad_weight_op.call(grad, input, weight.sym_sizes(), g.stride, g.padding,
                                      g.dilation, g.groups, relu_output);
  }
  return {grad_input, grad_weight};
}

// y = conv2d(input, weight) + bias, then ReLU when Relu; the backward masks by y when Relu.
template <bool Relu>
struct Conv2dFunction : public torch::autograd::Function<Conv2dFunction<Relu>> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                        const OptionalTensor& bias, IntArrayRef stride, IntArrayRef padding,
                        IntArrayRef dilation, int64_t groups) {
    static const auto op =
        op_handle<ConvSignature>(Relu ? "fastlayers::conv2d_relu" : "fastlayers::conv2d");
    Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = op.call(input, weight, bias, stride, padding, dilation, groups);
    }
    ConvGeometry{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward({input, weight, Relu ? output : Tensor()});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto bias_grad_op = op_handle<BiasGradSignature>("fastlayers::bias_grad");
    const auto saved = ctx->get_saved_variables();
    const OptionalTensor relu_output = saved[2].defined() ? OptionalTensor(saved[2]) : std::nullopt;
    const Tensor& grad = grad_outputs[0];
    variable_list grads(7);
    if (!grad.defined()) return grads;
    BelowAutogradUnlessRecording below;
    std::tie(grads[0], grads[1]) =
        conv_grads(ctx, ConvGeometry::load(ctx), grad, saved[0], saved[1], relu_output);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grads[2] = bias_grad_op.call(grad, relu_output, 1);
    }
    return grads;
  }
};

template <bool Relu>
Tensor conv2d_autograd(const Tensor& input, const Tensor& weight, const OptionalTensor& bias,
                       IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                       int64_t groups) {
  if (!input.defined() || !weight.defined()) {
    static const auto op =
        op_handle<ConvSignature>(Relu ? "fastlayers::conv2d_relu" : "fastlayers::conv2d");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, weight, bias, stride, padding, dilation, groups);
  }
  return Conv2dFunction<Relu>::apply(input, weight, bias, stride, padding, dilation, groups);
}

// --- max_pool2d and the fused conv2d_relu_max_pool2d ----------------------------------------

using PoolBackwardSignature = Tensor(const Tensor&, const Tensor&, SymIntArrayRef, IntArrayRef,
                                     IntArrayRef, IntArrayRef, IntArrayRef, bool);

// A pool's geometry, kept in the context for its backward, which needs it: the gradient goes to
// each window's index only where that index is one of the window's taps.
struct PoolGeometry {
  std::vector<int64_t> kernel, stride, padding, dilation;
  bool ceil_mode;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["pool_kernel"] = kernel;
    ctx->saved_data["pool_stride"] = stride;
    ctx->saved_data["pool_padding"] = padding;
    ctx->saved_data["pool_dilation"] = dilation;
    ctx->saved_data["pool_ceil_mode"] = ceil_mode;
  }
  static PoolGeometry load(AutogradContext* ctx) {
    return {ctx->saved_data["pool_kernel"].toIntVector(),
            ctx->saved_data["pool_stride"].toIntVector(),
            ctx->saved_data["pool_padding"].toIntVector(),
            ctx->saved_data["pool_dilation"].toIntVector(),
            ctx->saved_data["pool_ceil_mode"].toBool()};
  }
};

using PoolSignature = std::tuple<Tensor, Tensor>(const Tensor&, IntArrayRef, IntArrayRef,
                                                 IntArrayRef, IntArrayRef, bool);

// (output, indices) = max_pool2d(input); the indices have no gradient.
struct MaxPool2dFunction : public torch::autograd::Function<MaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, IntArrayRef kernel,
                               IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation,
                               bool ceil_mode) {
    static const auto op = op_handle<PoolSignature>("fastlayers::max_pool2d");
    Tensor output, indices;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(output, indices) = op.call(input, kernel, stride, padding, dilation, ceil_mode);
    }
    ctx->set_materialize_grads(false);  // the indices' gradient would be a tensor of zeros
    ctx->mark_non_differentiable({indices});
    PoolGeometry{kernel.vec(), stride.vec(), padding.vec(), dilation.vec(), ceil_mode}.save(ctx);
    ctx->saved_data["input_size"] = c10::IValue(input.sym_sizes().vec());
    ctx->save_for_backward({indices});
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto backward_op =
        op_handle<PoolBackwardSignature>("fastlayers::max_pool2d_backward");
    variable_list grads(6);
    if (!grad_outputs[0].defined()) return grads;
    BelowAutogradUnlessRecording below;
    const auto input_size = ctx->saved_data["input_size"].toSymIntList().vec();
    const PoolGeometry pool = PoolGeometry::load(ctx);
    grads[0] = backward_op.call(grad_outputs[0], ctx->get_saved_variables()[0], input_size,
                                pool.kernel, pool.stride, pool.padding, pool.dilation,
                                pool.ceil_mode);
    return grads;
  }
};

std::tuple<Tensor, Tensor> max_pool2d_autograd(const Tensor& input, IntArrayRef kernel,
                                               IntArrayRef stride, IntArrayRef padding,
                                               IntArrayRef dilation, bool ceil_mode) {
  if (!input.defined()) {
    static const auto op = op_handle<PoolSignature>("fastlayers::max_pool2d");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, kernel, stride, padding, dilation, ceil_mode);
  }
  const auto out = MaxPool2dFunction::apply(input, kernel, stride, padding, dilation, ceil_mode);
  return {out[0], out[1]};
}

using FusedSignature = std::tuple<Tensor, Tensor>(
    const Tensor&, const Tensor&, const OptionalTensor&, IntArrayRef, IntArrayRef, IntArrayRef,
    int64_t, IntArrayRef, IntArrayRef, IntArrayRef, IntArrayRef, bool);
using PooledGradSignature = Tensor(const Tensor&, const Tensor&, const Tensor&, SymIntArrayRef,
                                   IntArrayRef, IntArrayRef, IntArrayRef, int64_t, IntArrayRef,
                                   IntArrayRef, IntArrayRef, IntArrayRef, bool,
                                   const OptionalTensor&);

// (output, indices) = max_pool2d(relu(conv2d(input, weight) + bias)). The ReLU's mask on the
// activation, read at each window's maximum, is the pooled output > 0; the rest of the
// activation gets no gradient from the pool anyway.
struct Conv2dReluMaxPool2dFunction : public torch::autograd::Function<Conv2dReluMaxPool2dFunction> {
  static variable_list forward(AutogradContext* ctx, const Tensor& input, const Tensor& weight,
                               const OptionalTensor& bias, IntArrayRef stride, IntArrayRef padding,
                               IntArrayRef dilation, int64_t groups, IntArrayRef pool_kernel,
                               IntArrayRef pool_stride, IntArrayRef pool_padding,
                               IntArrayRef pool_dilation, bool ceil_mode) {
    static const auto op = op_handle<FusedSignature>("fastlayers::conv2d_relu_max_pool2d");
    Tensor output, indices;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(output, indices) =
          op.call(input, weight, bias, stride, padding, dilation, groups, pool_kernel,
                  pool_stride, pool_padding, pool_dilation, ceil_mode);
    }
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({indices});
    ConvGeometry{stride.vec(), padding.vec(), dilation.vec(), groups}.save(ctx);
    PoolGeometry{pool_kernel.vec(), pool_stride.vec(), pool_padding.vec(), pool_dilation.vec(),
                 ceil_mode}
        .save(ctx);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward({input, weight, output, indices});
    return {output, indices};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto bias_grad_op = op_handle<BiasGradSignature>("fastlayers::bias_grad");
    static const auto grad_input_op =
        op_handle<PooledGradSignature>("fastlayers::conv2d_grad_input_pooled");
    static const auto grad_weight_op =
        op_handle<PooledGradSignature>("fastlayers::conv2d_grad_weight_pooled");
    variable_list grads(12);
    if (!grad_outputs[0].defined()) return grads;
    BelowAutogradUnlessRecording below;
    const auto saved = ctx->get_saved_variables();
    const Tensor &input = saved[0], &weight = saved[1], &output = saved[2], &indices = saved[3];
    const Tensor& grad = grad_outputs[0];
    const ConvGeometry g = ConvGeometry::load(ctx);
    const PoolGeometry pool = PoolGeometry::load(ctx);
    // The pool passes each window's gradient to one activation element, so the bias gradient
    // (the activation gradient's sum per channel) is the pooled gradient's. A window wholly in
    // the padding, which passes nothing, has the output -inf, which the ReLU's mask drops.
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2)) {
      grads[2] = bias_grad_op.call(grad, output, 1);
    }
    // Both gradients from the pooled one (the CPU kernels never write the unpooled gradient out).
    if (ctx->needs_input_grad(0)) {
      grads[0] = grad_input_op.call(grad, indices, weight, input.sym_sizes(), g.stride, g.padding,
                                    g.dilation, g.groups, pool.kernel, pool.stride, pool.padding,
                                    pool.dilation, pool.ceil_mode, output);
    }
    if (ctx->needs_input_grad(1)) {
      grads[1] = grad_weight_op.call(grad, indices, input, weight.sym_sizes(), g.stride,
                                     g.padding, g.dilation, g.groups, pool.kernel, pool.stride,
                                     pool.padding, pool.dilation, pool.ceil_mode, output);
    }
    return grads;
  }
};

std::tuple<Tensor, Tensor> conv2d_relu_max_pool2d_autograd(
    const Tensor& input, const Tensor& weight, const OptionalTensor& bias, IntArrayRef stride,
    IntArrayRef padding, IntArrayRef dilation, int64_t groups, IntArrayRef pool_kernel,
    IntArrayRef pool_stride, IntArrayRef pool_padding, IntArrayRef pool_dilation,
    bool ceil_mode) {
  if (!input.defined() || !weight.defined()) {
    static const auto op = op_handle<FusedSignature>("fastlayers::conv2d_relu_max_pool2d");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input, weight, bias, stride, padding, dilation, groups, pool_kernel,
                   pool_stride, pool_padding, pool_dilation, ceil_mode);
  }
  const auto out =
      Conv2dReluMaxPool2dFunction::apply(input, weight, bias, stride, padding, dilation, groups,
                                         pool_kernel, pool_stride, pool_padding, pool_dilation,
                                         ceil_mode);
  return {out[0], out[1]};
}

// --- relu -----------------------------------------------------------------------------------

using ReluBackwardSignature = Tensor(const Tensor&, const Tensor&);

struct ReluFunction : public torch::autograd::Function<ReluFunction> {
  static Tensor forward(AutogradContext* ctx, const Tensor& input) {
    static const auto op = op_handle<Tensor(const Tensor&)>("fastlayers::relu");
    Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = op.call(input);
    }
    ctx->save_for_backward({output});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    static const auto backward_op = op_handle<ReluBackwardSignature>("fastlayers::relu_backward");
    if (!grad_outputs[0].defined()) return {Tensor()};
    BelowAutogradUnlessRecording below;
    return {backward_op.call(grad_outputs[0], ctx->get_saved_variables()[0])};
  }
};

Tensor relu_autograd(const Tensor& input) {
  if (!input.defined()) {
    static const auto op = op_handle<Tensor(const Tensor&)>("fastlayers::relu");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(input);
  }
  return ReluFunction::apply(input);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, Autograd, m) {
  m.impl("linear", &linear_autograd<false>);
  m.impl("linear_relu", &linear_autograd<true>);
  m.impl("conv2d", &conv2d_autograd<false>);
  m.impl("conv2d_relu", &conv2d_autograd<true>);
  m.impl("max_pool2d", &max_pool2d_autograd);
  m.impl("conv2d_relu_max_pool2d", &conv2d_relu_max_pool2d_autograd);
  m.impl("relu", &relu_autograd);
}

}  // namespace fastlayers
