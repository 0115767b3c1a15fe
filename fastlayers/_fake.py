"""Fake (meta) kernels for every torch.ops.fastlayers op: output shapes, dtypes and layouts
without data, so torch.compile and torch.export can trace the ops. Each returns contiguous
tensors, as the real kernels do. The real kernels validate arguments in full; these check what
tracing needs to get the shapes right."""

from __future__ import annotations

import torch

from . import _shapes

_LIB = "fastlayers::"


def _fake(name):
    return torch.library.register_fake(_LIB + name)


def _check_like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise RuntimeError(f"fastlayers.{op}: expected {name} to be on the same device as {ref_name} ({ref.device}), but got {t.device}")
    if t.dtype != ref.dtype:
        raise RuntimeError(f"fastlayers.{op}: expected {name} to have the same dtype as {ref_name} ({ref.dtype}), but got {t.dtype}")


def _linear(op, input, weight, bias):
    _check_like(op, "weight", weight, "input", input)
    if bias is not None:
        _check_like(op, "bias", bias, "input", input)
    torch._check(weight.dim() == 2, lambda: f"fastlayers.{op}: expected weight to be 2-D (out_features, in_features), but got {weight.dim()}-D")
    torch._check(input.shape[-1] == weight.shape[1], lambda: f"fastlayers.{op}: expected the last dimension of input to be in_features={weight.shape[1]}, but got input of size {list(input.shape)}")
    return input.new_empty((*input.shape[:-1], weight.shape[0]))


@_fake("linear")
def _(input, weight, bias):
    return _linear("linear", input, weight, bias)


@_fake("linear_relu")
def _(input, weight, bias):
    return _linear("linear_relu", input, weight, bias)


@_fake("linear_grad_input")
def _(grad_output, weight, relu_output):
    return grad_output.new_empty((*grad_output.shape[:-1], weight.shape[1]))


@_fake("linear_grad_weight")
def _(grad_output, input, relu_output):
    return grad_output.new_empty((grad_output.shape[-1], input.shape[-1]))


@_fake("bias_grad")
def _(grad_output, relu_output, channel_dim):
    return grad_output.new_empty((grad_output.shape[channel_dim],))


def _conv2d(op, input, weight, bias, stride, padding, dilation, groups):
    _check_like(op, "weight", weight, "input", input)
    if bias is not None:
        _check_like(op, "bias", bias, "input", input)
    torch._check(input.dim() == 4, lambda: f"fastlayers.{op}: expected input to be 4-D (N, C, H, W), but got {input.dim()}-D")
    torch._check(weight.dim() == 4, lambda: f"fastlayers.{op}: expected weight to be 4-D, but got {weight.dim()}-D")
    n, _, h, w = input.shape
    oh, ow = _shapes.conv2d_output_hw(h, w, weight.shape[2:], stride, padding, dilation)
    return input.new_empty((n, weight.shape[0], oh, ow))


@_fake("conv2d")
def _(input, weight, bias, stride, padding, dilation, groups):
    return _conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups)


@_fake("conv2d_relu")
def _(input, weight, bias, stride, padding, dilation, groups):
    return _conv2d("conv2d_relu", input, weight, bias, stride, padding, dilation, groups)


@_fake("conv2d_grad_input")
def _(grad_output, weight, input_size, stride, padding, dilation, groups, relu_output):
    return grad_output.new_empty(input_size)


@_fake("conv2d_grad_weight")
def _(grad_output, input, weight_size, stride, padding, dilation, groups, relu_output):
    return grad_output.new_empty(weight_size)


@_fake("conv2d_grad_weight_pooled")
def _(grad_output, indices, input, weight_size, stride, padding, dilation, groups, pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode, relu_output):
    return grad_output.new_empty(weight_size)


@_fake("conv2d_grad_input_pooled")
def _(grad_output, indices, weight, input_size, stride, padding, dilation, groups, pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode, relu_output):
    return grad_output.new_empty(input_size)


@_fake("max_pool2d")
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    torch._check(input.dim() == 4, lambda: f"fastlayers.max_pool2d: expected input to be 4-D (N, C, H, W), but got {input.dim()}-D")
    n, c, h, w = input.shape
    oh = _shapes.pool_output_size(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode)
    ow = _shapes.pool_output_size(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode)
    return input.new_empty((n, c, oh, ow)), input.new_empty((n, c, oh, ow), dtype=torch.int64)


@_fake("conv2d_relu_max_pool2d")
def _(input, weight, bias, stride, padding, dilation, groups, pool_kernel_size, pool_stride, pool_padding, pool_dilation, pool_ceil_mode):
    act = _conv2d("conv2d_relu_max_pool2d", input, weight, bias, stride, padding, dilation, groups)
    n, c, h, w = act.shape
    oh = _shapes.pool_output_size(h, pool_kernel_size[0], pool_padding[0], pool_stride[0], pool_dilation[0], pool_ceil_mode)
    ow = _shapes.pool_output_size(w, pool_kernel_size[1], pool_padding[1], pool_stride[1], pool_dilation[1], pool_ceil_mode)
    return input.new_empty((n, c, oh, ow)), input.new_empty((n, c, oh, ow), dtype=torch.int64)


@_fake("max_pool2d_backward")
def _(grad_output, indices, input_size, kernel_size, stride, padding, dilation, ceil_mode):
    return grad_output.new_empty(input_size)


@_fake("relu")
def _(input):
    return input.new_empty(input.shape)


@_fake("relu_backward")
def _(grad_output, output):
    _check_like("relu_backward", "output", output, "grad_output", grad_output)
    return grad_output.new_empty(grad_output.shape)
