// Autograd for linear and linear_relu in C++, on the Autograd key of every backend. These are the
// ops of the smallest layers (10 outputs, 20 inputs), whose arithmetic takes a few microseconds:
// a Python backward (torch.library.register_autograd, as the other ops have in
// fastlayers/_autograd.py) cost them about 25 us per forward and backward, more than the kernels.
// The backward calls the backward ops through the dispatcher, so under create_graph their own
// autograd (Python, _autograd.py) still gives double backward. Under torch.autocast the autocast kernel runs first
// and redispatches here with the cast arguments, which are what is saved.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>

namespace fastlayers {
namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using LinearSignature = Tensor(const Tensor&, const Tensor&, const OptionalTensor&);
using GradSignature = Tensor(const Tensor&, const Tensor&, const OptionalTensor&);
using BiasGradSignature = Tensor(const Tensor&, const OptionalTensor&, int64_t);

template <class Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

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
    // A plain backward (grad mode off: not create_graph) records nothing, so the backward ops go
    // straight to their kernels, past their own autograd, which is Python and costs ~3 us a call.
    std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd;
    if (!at::GradMode::is_enabled()) below_autograd.emplace();
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

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, Autograd, m) {
  m.impl("linear", &linear_autograd<false>);
  m.impl("linear_relu", &linear_autograd<true>);
}

}  // namespace fastlayers
