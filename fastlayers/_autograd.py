"""torch.autograd.Function for each layer: forward calls a fastlayers op, backward calls the
matching backward ops, each only for the gradients that are needed. A fused ReLU saves its output,
and the backward ops apply its mask inside their own kernels."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

ops = torch.ops.fastlayers


class Linear(torch.autograd.Function):
    @staticmethod
    def forward(input, weight, bias, relu: bool):
        return (ops.linear_relu if relu else ops.linear)(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, relu = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, weight, output if relu else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        input, weight, relu_output = ctx.saved_tensors
        need_input, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_input = ops.linear_grad_input(grad, weight, relu_output) if need_input else None
        grad_weight = ops.linear_grad_weight(grad, input, relu_output) if need_weight else None
        grad_bias = ops.bias_grad(grad, relu_output, -1) if ctx.has_bias and need_bias else None
        return grad_input, grad_weight, grad_bias, None


class Conv2d(torch.autograd.Function):
    """padding is [top, bottom, left, right]; input is 4-D."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, relu: bool):
        op = ops.conv2d_relu if relu else ops.conv2d
        return op(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias, stride, padding, dilation, groups, relu = inputs
        ctx.has_bias = bias is not None
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.save_for_backward(input, weight, output if relu else None)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        input, weight, relu_output = ctx.saved_tensors
        need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_input = grad_weight = grad_bias = None
        if need_input:
            grad_input = ops.conv2d_grad_input(grad, weight, input.shape, *ctx.geometry, relu_output)
        if need_weight:
            grad_weight = ops.conv2d_grad_weight(grad, input, weight.shape, *ctx.geometry, relu_output)
        if ctx.has_bias and need_bias:
            grad_bias = ops.bias_grad(grad, relu_output, 1)
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


class MaxPool2d(torch.autograd.Function):
    """Returns (output, indices); input is 4-D."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, dilation, ceil_mode):
        return ops.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.input_shape = inputs[0].shape
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_indices):
        (indices,) = ctx.saved_tensors
        return ops.max_pool2d_backward(grad, indices, ctx.input_shape), None, None, None, None, None


class ReLU(torch.autograd.Function):
    @staticmethod
    def forward(input):
        return ops.relu(input)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (output,) = ctx.saved_tensors
        return ops.relu_backward(grad, output)
