// Every fastlayers op schema, in one place. Backends (cpu_ops.cpp, and cuda_ops.cpp when built
// with CUDA) only register implementations; the fake kernels live in fastlayers/_fake.py.
//
// Conventions: conv2d padding is [top, bottom, left, right] (asymmetric for 'same' with even
// kernels); max_pool2d padding is [h, w]. Backward ops take the forward's output as `relu_output`
// when the forward had a fused ReLU, and apply its mask inside their own kernel.
#include <torch/library.h>

TORCH_LIBRARY(fastlayers, m) {
  m.set_python_module("fastlayers._fake");

  m.def("linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.def("linear_relu(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.def("linear_grad_input(Tensor grad_output, Tensor weight, Tensor? relu_output) -> Tensor");
  m.def("linear_grad_weight(Tensor grad_output, Tensor input, Tensor? relu_output) -> Tensor");
  // Sum of grad_output over every dim but channel_dim (the bias of linear and conv2d).
  m.def("bias_grad(Tensor grad_output, Tensor? relu_output, int channel_dim) -> Tensor");

  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_relu(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, "
        "int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_grad_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, "
        "int[2] stride, int[4] padding, int[2] dilation, int groups, Tensor? relu_output) "
        "-> Tensor");
  m.def("conv2d_grad_weight(Tensor grad_output, Tensor input, SymInt[4] weight_size, "
        "int[2] stride, int[4] padding, int[2] dilation, int groups, Tensor? relu_output) "
        "-> Tensor");

  // conv2d_grad_weight of max_pool2d_backward(grad_output masked by relu_output, indices,
  // [N, OC, OH, OW], pool_*): the weight gradient of conv2d_relu_max_pool2d, computed from each
  // window's maximum alone, without the unpooled gradient.
  m.def("conv2d_grad_weight_pooled(Tensor grad_output, Tensor indices, Tensor input, "
        "SymInt[4] weight_size, int[2] stride, int[4] padding, int[2] dilation, int groups, "
        "int[2] pool_kernel_size, int[2] pool_stride, int[2] pool_padding, "
        "int[2] pool_dilation, bool pool_ceil_mode, Tensor? relu_output) -> Tensor");
  // conv2d_grad_input of the same unpooled gradient: conv2d_relu_max_pool2d's input gradient.
  m.def("conv2d_grad_input_pooled(Tensor grad_output, Tensor indices, Tensor weight, "
        "SymInt[4] input_size, int[2] stride, int[4] padding, int[2] dilation, int groups, "
        "int[2] pool_kernel_size, int[2] pool_stride, int[2] pool_padding, "
        "int[2] pool_dilation, bool pool_ceil_mode, Tensor? relu_output) -> Tensor");

  // Returns (output, indices); indices are int64 offsets into each H*W plane, as torch's.
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // The forward's geometry: each output's gradient goes to its index where that index is one of
  // its window's taps, and nowhere otherwise (a window wholly in the padding has no tap inside
  // the input: its output is -inf and its index is not one of its own).
  m.def("max_pool2d_backward(Tensor grad_output, Tensor indices, SymInt[4] input_size, "
        "int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) "
        "-> Tensor");

  // max_pool2d(relu(conv2d(...))) without writing the unpooled activation. Returns (output,
  // indices into each plane of the activation); the backward composes relu_backward (on the
  // pooled output), max_pool2d_backward and the conv2d gradients, or the two pooled ones.
  m.def("conv2d_relu_max_pool2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups, int[2] pool_kernel_size, "
        "int[2] pool_stride, int[2] pool_padding, int[2] pool_dilation, bool pool_ceil_mode) "
        "-> (Tensor, Tensor)");

  m.def("relu(Tensor input) -> Tensor");
  m.def("relu_backward(Tensor grad_output, Tensor output) -> Tensor");
}
