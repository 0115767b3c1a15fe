// The per-op front end shared by every backend (cpu_ops.cpp, cuda_ops.cpp): argument checks on
// the tensors, and the sizes each kernel needs, computed once. A backend calls the function for
// its op, makes its inputs contiguous, allocates outputs and launches; it never re-checks. Each
// message names the op and the argument (see checks.h), so CPU and CUDA raise the same errors,
// except for the dtype list, which names the backend ("... torch.float32 or torch.float64 on
// CPU"). Tested by the bad-input tests of every op in tests/.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <vector>

#include "checks.h"
#include "kernels/params.h"

namespace fastlayers {

// What a backend runs on: the device type its tensors must have and the dtypes it supports.
// `where` completes the dtype message: "on CPU", "on CUDA".
struct Backend {
  c10::DeviceType device_type;
  c10::ArrayRef<at::ScalarType> dtypes;
  const char* where;
};

// The first tensor argument of an op: a `backend` tensor of one of its dtypes. Every other tensor
// argument is then checked against it with check_like (same device, same dtype).
void check_input(const Backend& backend, const char* op, const char* name, const at::Tensor& t);

// A contiguous copy of an optional tensor, or an undefined tensor.
at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t);

// The optional ReLU mask of a backward op: same shape, dtype and device as grad_output. Returns it
// contiguous, or an undefined tensor.
at::Tensor relu_mask(const char* op, const std::optional<at::Tensor>& relu_output,
                     const at::Tensor& grad_output);

// --- linear ---------------------------------------------------------------------------------

// linear / linear_relu: y[M, N] = x[M, K] w[N, K]^T + b. out_size is input's size with the last
// dimension replaced by N.
struct LinearForward {
  LinearSizes s;
  std::vector<int64_t> out_size;
};
LinearForward linear_forward_args(const Backend& backend, const char* op, const at::Tensor& input,
                                  const at::Tensor& weight, const std::optional<at::Tensor>& bias);

// linear_grad_input: gx[M, K] = gy[M, N] w[N, K]; in_size is grad_output's size with the last
// dimension replaced by K.
struct LinearGradInput {
  LinearSizes s;
  std::vector<int64_t> in_size;
};
LinearGradInput linear_grad_input_args(const Backend& backend, const char* op,
                                       const at::Tensor& grad_output, const at::Tensor& weight);

// linear_grad_weight: gw[N, K] = gy[M, N]^T x[M, K].
LinearSizes linear_grad_weight_args(const Backend& backend, const char* op,
                                    const at::Tensor& grad_output, const at::Tensor& input);

// bias_grad: grad_output viewed as [outer, channels, inner] around channel_dim.
struct BiasGradLayout {
  int64_t outer, channels, inner;
};
BiasGradLayout bias_grad_args(const Backend& backend, const char* op,
                              const at::Tensor& grad_output, int64_t channel_dim);

// --- conv2d ---------------------------------------------------------------------------------

// The checks of a conv forward (conv2d, conv2d_relu, conv2d_relu_max_pool2d) and its sizes.
Conv2dParams conv2d_forward_args(const Backend& backend, const char* op, const at::Tensor& input,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                 at::IntArrayRef dilation, int64_t groups);

// conv2d_grad_input: the geometry of the forward whose input had size input_size; grad_output
// must be its [N, OC, OH, OW].
Conv2dParams conv2d_grad_input_args(const Backend& backend, const char* op,
                                    const at::Tensor& grad_output, const at::Tensor& weight,
                                    at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation,
                                    int64_t groups);

// conv2d_grad_weight: the geometry of the forward whose weight had size weight_size.
Conv2dParams conv2d_grad_weight_args(const Backend& backend, const char* op,
                                     const at::Tensor& grad_output, const at::Tensor& input,
                                     at::IntArrayRef weight_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups);

// A max-pool's geometry as the schemas give it: kernel_size, stride, padding, dilation,
// ceil_mode.
struct PoolGeometry {
  at::IntArrayRef kernel_size, stride, padding, dilation;
  bool ceil_mode;
};

// The conv and the max-pool on its [N, OC, OH, OW] activation, of a pooled conv gradient.
struct PooledConvParams {
  Conv2dParams conv;
  Pool2dParams pool;
};

// conv2d_grad_weight_pooled: conv2d_grad_weight_args's geometry and the pool's on the
// activation, with grad_output and indices of the pooled size [N, OC, PH, PW] (the indices int64,
// on grad_output's device).
PooledConvParams conv2d_grad_weight_pooled_args(const Backend& backend, const char* op,
                                                const at::Tensor& grad_output,
                                                const at::Tensor& indices, const at::Tensor& input,
                                                at::IntArrayRef weight_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, int64_t groups,
                                                const PoolGeometry& pool);

// conv2d_grad_input_pooled: conv2d_grad_input_args's geometry and the pool's, as above.
PooledConvParams conv2d_grad_input_pooled_args(const Backend& backend, const char* op,
                                               const at::Tensor& grad_output,
                                               const at::Tensor& indices, const at::Tensor& weight,
                                               at::IntArrayRef input_size, at::IntArrayRef stride,
                                               at::IntArrayRef padding, at::IntArrayRef dilation,
                                               int64_t groups, const PoolGeometry& pool);

// --- max_pool2d -----------------------------------------------------------------------------

Pool2dParams max_pool2d_args(const Backend& backend, const char* op, const at::Tensor& input,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode);

// max_pool2d_backward: the forward's geometry on an input of size input_size; grad_output and
// indices must be its output's size [N, C, OH, OW].
Pool2dParams max_pool2d_backward_args(const Backend& backend, const char* op,
                                      const at::Tensor& grad_output, const at::Tensor& indices,
                                      at::IntArrayRef input_size, const PoolGeometry& pool);

// --- relu -----------------------------------------------------------------------------------

void relu_backward_args(const Backend& backend, const char* op, const at::Tensor& grad_output,
                        const at::Tensor& output);

}  // namespace fastlayers
