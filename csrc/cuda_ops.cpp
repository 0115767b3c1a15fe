// The CUDA backend: validates with the CPU backend's checks (op_common.h), makes inputs
// contiguous, allocates contiguous outputs with the caching allocator, dispatches on float32,
// float64, float16 and bfloat16 and calls the torch-free launchers in kernels/cuda/. Every launch
// goes to the current stream of the input's device (under a CUDAGuard) and is checked; nothing
// synchronises with the host and nothing calls cudaMalloc, so the ops can be captured in a CUDA
// graph. Built only when torch has CUDA and nvcc is found (setup.py); `make test` compiles it
// against the headers (scripts/cuda_compile_check.py). Tested by every op's tests with
// device="cuda" and by tests/test_cuda.py.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <mutex>
#include <vector>

#include "kernels/cuda/conv2d.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/max_pool2d.h"
#include "kernels/cuda/relu.h"
#include "op_common.h"

namespace fastlayers {
namespace {

constexpr at::ScalarType kCudaDtypes[] = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16};
const Backend kCuda{c10::DeviceType::CUDA, kCudaDtypes, "on CUDA"};

// The kernels' element type for a torch scalar type: at::Half and at::BFloat16 have the layout
// of __half and __nv_bfloat16 (16 bits, same encoding), so data pointers are reinterpreted.
template <typename scalar_t>
struct KernelType {
  using type = scalar_t;
};
template <>
struct KernelType<at::Half> {
  using type = __half;
};
template <>
struct KernelType<at::BFloat16> {
  using type = __nv_bfloat16;
};
template <typename scalar_t>
using kernel_t = typename KernelType<scalar_t>::type;

template <typename T>
const T* ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.const_data_ptr()) : nullptr;
}

template <typename T>
T* mutable_ptr(at::Tensor& t) {
  return static_cast<T*>(t.mutable_data_ptr());
}

// Scratch memory for the GEMM's split-K partial sums: caching-allocator blocks, freed when the op
// returns. The allocator reuses a freed block only for work queued after it on the same stream,
// so the kernels already queued keep their memory.
class TorchWorkspace final : public cuda::Workspace {
 public:
  explicit TorchWorkspace(at::Device device) : device_(device) {}
  void* allocate(size_t bytes) override {
    blocks_.push_back(at::empty({static_cast<int64_t>(bytes)},
                                at::TensorOptions().dtype(at::kByte).device(device_)));
    return blocks_.back().mutable_data_ptr();
  }

 private:
  at::Device device_;
  std::vector<at::Tensor> blocks_;
};

// What the kernels' plans need to know of a device, read from the driver once per device.
struct DeviceInfo {
  int sm_count = 0;
  int major = 0;  // compute capability
};

const DeviceInfo& device_info(int device) {
  static std::once_flag read[C10_COMPILE_TIME_MAX_GPUS];
  static DeviceInfo info[C10_COMPILE_TIME_MAX_GPUS];
  TORCH_CHECK(device >= 0 && device < C10_COMPILE_TIME_MAX_GPUS, "fastlayers: CUDA device index ",
              device, " is out of range");
  std::call_once(read[device], [device] {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&info[device].sm_count,
                                          cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&info[device].major,
                                          cudaDevAttrComputeCapabilityMajor, device));
  });
  return info[device];
}

// The device guard, current stream and scratch memory of one op call on `t`'s device. Declared
// first in each op, so allocations and launches go to that device and its current stream.
class CudaCall {
 public:
  explicit CudaCall(const at::Tensor& t)
      : guard_(t.device()), stream_(c10::cuda::getCurrentCUDAStream().stream()),
        workspace_(t.device()) {}

  cudaStream_t stream() const { return stream_; }

  // tf32: float products may run in TF32 (see matmul_allows_tf32 and conv_allows_tf32).
  cuda::GemmContext gemm(bool tf32 = false) {
    const DeviceInfo& device = device_info(guard_.current_device().index());
    cuda::GemmContext ctx{stream_, device.sm_count, &workspace_};
    ctx.tensor_cores = device.major >= 8;
    ctx.tf32 = tf32;
    return ctx;
  }

 private:
  c10::cuda::CUDAGuard guard_;
  cudaStream_t stream_;
  TorchWorkspace workspace_;
};

// Float products may use TF32 where torch's own may: linear's as torch's matmuls, under
// torch.backends.cuda.matmul.allow_tf32 (or set_float32_matmul_precision "high" or "medium"),
// off by default; conv2d's as torch's cuDNN convolutions, under torch.backends.cudnn.allow_tf32,
// on by default. The thin-layer kernels stay in IEEE float either way.
bool matmul_allows_tf32() { return at::globalContext().allowTF32CuBLAS(); }
bool conv_allows_tf32() { return at::globalContext().allowTF32CuDNN(); }

// Every launcher returns the error of its launches (cudaGetLastError after each).
void check_launch(cudaError_t err) { C10_CUDA_CHECK(err); }

// The dtype was checked by op_common, so the dispatch's own "not implemented" error never shows;
// its name must be a literal.
#define FASTLAYERS_DISPATCH_CUDA(dtype, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fastlayers", __VA_ARGS__)

// --- linear ---------------------------------------------------------------------------------

at::Tensor linear_impl(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, bool relu) {
  const LinearForward f = linear_forward_args(kCuda, op, input, weight, bias);
  CudaCall call(input);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty(f.out_size, input.options());
  const cuda::GemmContext ctx = call.gemm(matmul_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(x.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::linear_forward<T>(ctx, f.s.M, f.s.N, f.s.K, ptr<T>(x), ptr<T>(w),
                                         ptr<T>(b), mutable_ptr<T>(y), relu));
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
  const LinearGradInput g = linear_grad_input_args(kCuda, op, grad_output, weight);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gx = at::empty(g.in_size, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(matmul_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::linear_grad_input<T>(ctx, g.s.M, g.s.N, g.s.K, ptr<T>(gy), ptr<T>(w),
                                            ptr<T>(mask), mutable_ptr<T>(gx)));
  });
  return gx;
}

at::Tensor linear_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              const std::optional<at::Tensor>& relu_output) {
  const char* op = "linear_grad_weight";
  const LinearSizes s = linear_grad_weight_args(kCuda, op, grad_output, input);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty({s.N, s.K}, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(matmul_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::linear_grad_weight<T>(ctx, s.M, s.N, s.K, ptr<T>(gy), ptr<T>(x),
                                             ptr<T>(mask), mutable_ptr<T>(gw)));
  });
  return gw;
}

at::Tensor bias_grad(const at::Tensor& grad_output, const std::optional<at::Tensor>& relu_output,
                     int64_t channel_dim) {
  const char* op = "bias_grad";
  const BiasGradLayout l = bias_grad_args(kCuda, op, grad_output, channel_dim);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous();
  at::Tensor gb = at::empty({l.channels}, grad_output.options());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::bias_grad<T>(call.stream(), l.outer, l.channels, l.inner, ptr<T>(gy),
                                    ptr<T>(mask), mutable_ptr<T>(gb)));
  });
  return gb;
}

// --- conv2d ---------------------------------------------------------------------------------

// y = conv2d(x, w) + b (then ReLU) into a new [N, OC, OH, OW] tensor.
at::Tensor conv2d_forward(CudaCall& call, const Conv2dParams& p, const at::Tensor& input,
                          const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          bool relu) {
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), b = contiguous_or_undefined(bias);
  at::Tensor y = at::empty({p.N, p.OC, p.OH, p.OW}, input.options());
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(x.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_forward<T>(ctx, p, ptr<T>(x), ptr<T>(w), ptr<T>(b),
                                         mutable_ptr<T>(y), relu));
  });
  return y;
}

at::Tensor conv2d_impl(const char* op, const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool relu) {
  const Conv2dParams p =
      conv2d_forward_args(kCuda, op, input, weight, bias, stride, padding, dilation, groups);
  CudaCall call(input);
  return conv2d_forward(call, p, input, weight, bias, relu);
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
  const Conv2dParams p = conv2d_grad_input_args(kCuda, op, grad_output, weight, in_size, stride,
                                                padding, dilation, groups);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_grad_input<T>(ctx, p, ptr<T>(gy), ptr<T>(w), ptr<T>(mask),
                                            mutable_ptr<T>(gx)));
  });
  return gx;
}

at::Tensor conv2d_grad_weight(const at::Tensor& grad_output, const at::Tensor& input,
                              c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                              const std::optional<at::Tensor>& relu_output) {
  const char* op = "conv2d_grad_weight";
  const auto w_size = C10_AS_INTARRAYREF_SLOW(weight_size);
  const Conv2dParams p = conv2d_grad_weight_args(kCuda, op, grad_output, input, w_size, stride,
                                                 padding, dilation, groups);
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty(w_size, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_grad_weight<T>(ctx, p, ptr<T>(gy), ptr<T>(x),
                                             ptr<T>(mask), mutable_ptr<T>(gw)));
  });
  return gw;
}

// --- max_pool2d -----------------------------------------------------------------------------

// y, indices = max_pool2d(x) into new [N, C, OH, OW] tensors.
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward(CudaCall& call, const Pool2dParams& p,
                                                      const at::Tensor& input) {
  const at::Tensor x = input.contiguous();
  const std::vector<int64_t> out_size{input.size(0), input.size(1), p.OH, p.OW};
  at::Tensor y = at::empty(out_size, input.options());
  at::Tensor indices = at::empty(out_size, input.options().dtype(at::kLong));
  FASTLAYERS_DISPATCH_CUDA(x.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::max_pool2d_forward<T>(call.stream(), p, ptr<T>(x), mutable_ptr<T>(y),
                                             indices.mutable_data_ptr<int64_t>()));
  });
  return {y, indices};
}

std::tuple<at::Tensor, at::Tensor> max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size,
                                              at::IntArrayRef stride, at::IntArrayRef padding,
                                              at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d";
  const Pool2dParams p =
      max_pool2d_args(kCuda, op, input, kernel_size, stride, padding, dilation, ceil_mode);
  CudaCall call(input);
  return max_pool2d_forward(call, p, input);
}

// gx of size input_size from the pooled gradient, gathered through the pool's windows
// (kernels/cuda/max_pool2d.h).
at::Tensor max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& indices,
                               c10::SymIntArrayRef input_size, at::IntArrayRef kernel_size,
                               at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "max_pool2d_backward";
  const auto in_size = C10_AS_INTARRAYREF_SLOW(input_size);
  const Pool2dParams p = max_pool2d_backward_args(
      kCuda, op, grad_output, indices, in_size, {kernel_size, stride, padding, dilation, ceil_mode});
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::max_pool2d_backward<T>(call.stream(), p, ptr<T>(gy),
                                              ind.const_data_ptr<int64_t>(), nullptr,
                                              mutable_ptr<T>(gx)));
  });
  return gx;
}

// --- conv2d_relu_max_pool2d -----------------------------------------------------------------

// In the conv's GEMM where the pool's windows allow (kernels/cuda/conv2d.h), else composed
// inside the launcher; both give the results and indices of conv2d_relu then max_pool2d.
std::tuple<at::Tensor, at::Tensor> conv2d_relu_max_pool2d(
    const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    at::IntArrayRef pool_kernel_size, at::IntArrayRef pool_stride, at::IntArrayRef pool_padding,
    at::IntArrayRef pool_dilation, bool pool_ceil_mode) {
  const char* op = "conv2d_relu_max_pool2d";
  const Conv2dParams p =
      conv2d_forward_args(kCuda, op, input, weight, bias, stride, padding, dilation, groups);
  const Pool2dParams pool = max_pool2d_params(op, {p.N, p.OC, p.OH, p.OW}, pool_kernel_size,
                                              pool_stride, pool_padding, pool_dilation,
                                              pool_ceil_mode);
  CudaCall call(input);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  const at::Tensor b = contiguous_or_undefined(bias);
  const std::vector<int64_t> out_size{p.N, p.OC, pool.OH, pool.OW};
  at::Tensor y = at::empty(out_size, input.options());
  at::Tensor indices = at::empty(out_size, input.options().dtype(at::kLong));
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(x.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_relu_max_pool2d<T>(ctx, p, pool, ptr<T>(x), ptr<T>(w),
                                                 ptr<T>(b), mutable_ptr<T>(y),
                                                 indices.mutable_data_ptr<int64_t>()));
  });
  return {y, indices};
}

// --- relu -----------------------------------------------------------------------------------

at::Tensor relu(const at::Tensor& input) {
  const char* op = "relu";
  check_input(kCuda, op, "input", input);
  CudaCall call(input);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  FASTLAYERS_DISPATCH_CUDA(x.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::relu_forward<T>(call.stream(), x.numel(), ptr<T>(x), mutable_ptr<T>(y)));
  });
  return y;
}

at::Tensor relu_backward(const at::Tensor& grad_output, const at::Tensor& output) {
  const char* op = "relu_backward";
  relu_backward_args(kCuda, op, grad_output, output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), y = output.contiguous();
  at::Tensor gx = at::empty(gy.sizes(), gy.options());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::relu_backward<T>(call.stream(), gy.numel(), ptr<T>(gy), ptr<T>(y),
                                        mutable_ptr<T>(gx)));
  });
  return gx;
}

// --- conv2d_grad_weight_pooled, conv2d_grad_input_pooled -----------------------------------------

// Both read the pooled gradient through the pool's windows where they do not overlap, and
// otherwise gather the unpooled gradient into scratch first (kernels/cuda/conv2d.h).
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
      kCuda, op, grad_output, indices, input, w_size, stride, padding, dilation, groups,
      {pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode});
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous();
  const at::Tensor x = input.contiguous();
  at::Tensor gw = at::empty(w_size, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_grad_weight_pooled<T>(
        ctx, p.conv, p.pool, ptr<T>(gy), ind.const_data_ptr<int64_t>(), ptr<T>(x),
        ptr<T>(mask), mutable_ptr<T>(gw)));
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
      kCuda, op, grad_output, indices, weight, in_size, stride, padding, dilation, groups,
      {pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode});
  const at::Tensor mask = relu_mask(op, relu_output, grad_output);
  CudaCall call(grad_output);
  const at::Tensor gy = grad_output.contiguous(), ind = indices.contiguous();
  const at::Tensor w = weight.contiguous();
  at::Tensor gx = at::empty(in_size, grad_output.options());
  const cuda::GemmContext ctx = call.gemm(conv_allows_tf32());
  FASTLAYERS_DISPATCH_CUDA(gy.scalar_type(), [&] {
    using T = kernel_t<scalar_t>;
    check_launch(cuda::conv2d_grad_input_pooled<T>(
        ctx, p.conv, p.pool, ptr<T>(gy), ind.const_data_ptr<int64_t>(), ptr<T>(w),
        ptr<T>(mask), mutable_ptr<T>(gx)));
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CUDA, m) {
  m.impl("linear", &linear);
  m.impl("linear_relu", &linear_relu);
  m.impl("linear_grad_input", &linear_grad_input);
  m.impl("linear_grad_weight", &linear_grad_weight);
  m.impl("bias_grad", &bias_grad);
  m.impl("conv2d", &conv2d);
  m.impl("conv2d_relu", &conv2d_relu);
  m.impl("conv2d_grad_input", &conv2d_grad_input);
  m.impl("conv2d_grad_weight", &conv2d_grad_weight);
  m.impl("conv2d_grad_weight_pooled", &conv2d_grad_weight_pooled);
  m.impl("conv2d_grad_input_pooled", &conv2d_grad_input_pooled);
  m.impl("conv2d_relu_max_pool2d", &conv2d_relu_max_pool2d);
  m.impl("max_pool2d", &max_pool2d);
  m.impl("max_pool2d_backward", &max_pool2d_backward);
  m.impl("relu", &relu);
  m.impl("relu_backward", &relu_backward);
}

}  // namespace fastlayers
