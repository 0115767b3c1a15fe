// Argument checks and shape arithmetic shared by every backend. Each check names the op and the
// argument and says what was expected and what came, e.g.
//   fastlayers.conv2d: expected stride to be positive, but got stride=[0, 1]
// Backends call these before touching data, so kernels only ever see validated sizes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string>

#include "kernels/params.h"

#define FASTLAYERS_CHECK(cond, op, ...) TORCH_CHECK(cond, "fastlayers.", op, ": ", __VA_ARGS__)

namespace fastlayers {

// torch's spelling of a dtype ("torch.float32").
std::string dtype_name(at::ScalarType dtype);

// `t` has one of `dtypes`; `what` names the backend in the message ("on CPU").
void check_dtype(const char* op, const char* name, const at::Tensor& t,
                 c10::ArrayRef<at::ScalarType> dtypes, const char* what);

// `t` has the dtype and device of `ref`.
void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                const at::Tensor& ref);

void check_dim(const char* op, const char* name, const at::Tensor& t, int64_t dim,
               const char* layout);

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 c10::IntArrayRef expected);

// Validates a linear's operands; returns {rows, out_features, in_features}.
struct LinearSizes {
  int64_t M, N, K;
};
LinearSizes linear_sizes(const char* op, const at::Tensor& input, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias);

// Validates a convolution's geometry from the input and weight sizes; padding is
// [top, bottom, left, right].
Conv2dParams conv2d_params(const char* op, c10::IntArrayRef input_size,
                           c10::IntArrayRef weight_size, c10::IntArrayRef stride,
                           c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups);

// Validates a max-pool's geometry; padding is symmetric [h, w].
Pool2dParams max_pool2d_params(const char* op, c10::IntArrayRef input_size,
                               c10::IntArrayRef kernel_size, c10::IntArrayRef stride,
                               c10::IntArrayRef padding, c10::IntArrayRef dilation,
                               bool ceil_mode);

// torch's pooling output size (ATen's pooling_output_shape), shared with the fake kernels' rule.
int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride,
                         int64_t dilation, bool ceil_mode);

}  // namespace fastlayers
