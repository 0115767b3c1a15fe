// torch.autocast for the fastlayers ops. Inside an autocast region torch runs conv2d and linear in
// the region's lower-precision dtype (bfloat16 by default on CPU, float16 on CUDA) and max_pool2d
// and relu in whatever dtype they receive. The fastlayers ops follow the same rule: the conv2d and
// linear ops, fused or not, cast their floating arguments with ATen's own autocast wrapper
// (at::autocast::WrapFunction, which also caches the casts of leaf weights for the region);
// max_pool2d, relu and the backward ops fall through. Tested in tests/test_autocast.py.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace fastlayers {
namespace {

using at::IntArrayRef;
using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// The op `name` with C++ signature `Signature`, looked up once.
template <class Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Each function calls its op through the dispatcher; WrapFunction runs it below the autocast key.
Tensor linear(const Tensor& input, const Tensor& weight, const OptionalTensor& bias) {
  static const auto op = op_handle<decltype(linear)>("fastlayers::linear");
  return op.call(input, weight, bias);
}

Tensor linear_relu(const Tensor& input, const Tensor& weight, const OptionalTensor& bias) {
  static const auto op = op_handle<decltype(linear_relu)>("fastlayers::linear_relu");
  return op.call(input, weight, bias);
}

Tensor conv2d(const Tensor& input, const Tensor& weight, const OptionalTensor& bias,
              IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  static const auto op = op_handle<decltype(conv2d)>("fastlayers::conv2d");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

Tensor conv2d_relu(const Tensor& input, const Tensor& weight, const OptionalTensor& bias,
                   IntArrayRef stride, IntArrayRef padding, IntArrayRef dilation, int64_t groups) {
  static const auto op = op_handle<decltype(conv2d_relu)>("fastlayers::conv2d_relu");
  return op.call(input, weight, bias, stride, padding, dilation, groups);
}

std::tuple<Tensor, Tensor> conv2d_relu_max_pool2d(
    const Tensor& input, const Tensor& weight, const OptionalTensor& bias, IntArrayRef stride,
    IntArrayRef padding, IntArrayRef dilation, int64_t groups, IntArrayRef pool_kernel_size,
    IntArrayRef pool_stride, IntArrayRef pool_padding, IntArrayRef pool_dilation,
    bool pool_ceil_mode) {
  static const auto op =
      op_handle<decltype(conv2d_relu_max_pool2d)>("fastlayers::conv2d_relu_max_pool2d");
  return op.call(input, weight, bias, stride, padding, dilation, groups, pool_kernel_size,
                 pool_stride, pool_padding, pool_dilation, pool_ceil_mode);
}

}  // namespace

#define FASTLAYERS_AUTOCAST(DEVICE, OP)                                                        \
  m.impl(#OP, &at::autocast::WrapFunction<at::autocast::CastPolicy::lower_precision_fp, DEVICE, \
                                          decltype(OP), decltype(OP), &OP>::type::call)

#define FASTLAYERS_AUTOCAST_OPS(DEVICE)                     \
  FASTLAYERS_AUTOCAST(DEVICE, linear);                      \
  FASTLAYERS_AUTOCAST(DEVICE, linear_relu);                 \
  FASTLAYERS_AUTOCAST(DEVICE, conv2d);                      \
  FASTLAYERS_AUTOCAST(DEVICE, conv2d_relu);                 \
  FASTLAYERS_AUTOCAST(DEVICE, conv2d_relu_max_pool2d)

TORCH_LIBRARY_IMPL(fastlayers, AutocastCPU, m) { FASTLAYERS_AUTOCAST_OPS(c10::DeviceType::CPU); }

TORCH_LIBRARY_IMPL(fastlayers, AutocastCUDA, m) { FASTLAYERS_AUTOCAST_OPS(c10::DeviceType::CUDA); }

}  // namespace fastlayers
