"""Autograd for every op. Each layer has a torch.autograd.Function whose forward calls a
fastlayers op and whose backward calls the matching backward ops, each only for the gradients that
are needed. The forward ops themselves (torch.ops.fastlayers.linear, conv2d, ...) have the same
backward in C++ (csrc/autograd.cpp), where the Python one's overhead would outweigh the smallest
layers' arithmetic. A fused ReLU saves its output, and the backward ops apply its mask inside
their own kernels.

The backward ops are differentiable too (their own autograd is registered at the end of this
file, with torch.library.register_autograd, in terms of fastlayers ops), so double backward
(torch.autograd.gradgradcheck, gradient penalties) works to any order, through the layers'
Functions and the ops alike. A ReLU mask is piecewise constant: it has no gradient."""

from __future__ import annotations

import torch
from ._shapes import conv2d_output_hw

ops = torch.ops.fastlayers


# --- shared setup and backward, per layer ------------------------------------------------------

def _as_computed(output, *tensors):
    """The tensors as the op computed with them. Under torch.autocast the op casts its arguments
    to the region's lower precision below this Function, so the backward must see them cast too."""
    return [t if t is None or t.dtype == output.dtype else t.to(output.dtype) for t in tensors]


def _linear_setup(ctx, input, weight, bias, output, relu):
    ctx.has_bias = bias is not None
    ctx.save_for_backward(*_as_computed(output, input, weight), output if relu else None)


def _linear_grads(ctx, grad):
    input, weight, relu_output = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = ops.linear_grad_input(grad, weight, relu_output) if need_input else None
    grad_weight = ops.linear_grad_weight(grad, input, relu_output) if need_weight else None
    grad_bias = ops.bias_grad(grad, relu_output, -1) if ctx.has_bias and need_bias else None
    return grad_input, grad_weight, grad_bias


def _conv2d_setup(ctx, input, weight, bias, stride, padding, dilation, groups, output, relu):
    ctx.has_bias = bias is not None
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.save_for_backward(*_as_computed(output, input, weight), output if relu else None)


def _conv2d_grads(ctx, grad, grad_bias=None):
    """The conv's input and weight gradients, and its bias gradient unless given."""
    input, weight, relu_output = ctx.saved_tensors[:3]
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = None
    if need_input:
        grad_input = ops.conv2d_grad_input(grad, weight, input.shape, *ctx.geometry, relu_output)
    if need_weight:
        grad_weight = ops.conv2d_grad_weight(grad, input, weight.shape, *ctx.geometry, relu_output)
    if ctx.has_bias and need_bias and grad_bias is None:
        grad_bias = ops.bias_grad(grad, relu_output, 1)
    return grad_input, grad_weight, grad_bias


def _max_pool2d_setup(ctx, input, indices, pool_args):
    ctx.set_materialize_grads(False)  # the indices' gradient would be a tensor of zeros
    ctx.input_shape = input.shape
    ctx.pool_args = tuple(pool_args)  # kernel_size, stride, padding, dilation, ceil_mode
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(indices)


def _max_pool2d_grad(ctx, grad, _grad_indices):
    if grad is None:
        return None
    (indices,) = ctx.saved_tensors
    return ops.max_pool2d_backward(grad, indices, ctx.input_shape, *ctx.pool_args)


def _conv2d_relu_max_pool2d_setup(ctx, input, weight, bias, stride, padding, dilation, groups, pool_args, output):
    out, indices = output
    ctx.set_materialize_grads(False)  # the indices' gradient would be a tensor of zeros
    ctx.pool_args = tuple(pool_args)
    ctx.has_bias = bias is not None
    ctx.geometry = (stride, padding, dilation, groups)
    ctx.mark_non_differentiable(indices)
    ctx.save_for_backward(*_as_computed(out, input, weight), out, indices)


def _conv2d_relu_max_pool2d_grads(ctx, grad, _grad_indices):
    # The ReLU's mask on the activation, read at each window's maximum, is the pooled output > 0;
    # the rest of the activation gets no gradient from the pool anyway.
    if grad is None:
        return None, None, None
    input, weight, out, indices = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    # The pool passes each window's gradient to one activation element, so the bias gradient (the
    # activation gradient's sum per channel) is the pooled gradient's, a quarter of the elements
    # for 2 x 2 windows. A window wholly in the padding passes nothing; its output, -inf, is
    # masked by the ReLU.
    grad_bias = ops.bias_grad(grad, out, 1) if ctx.has_bias and need_bias else None
    # Both gradients from the pooled one (the CPU kernels never write the unpooled gradient out).
    grad_input = grad_weight = None
    if need_input:
        grad_input = ops.conv2d_grad_input_pooled(grad, indices, weight, input.shape, *ctx.geometry, *ctx.pool_args, out)
    if need_weight:
        grad_weight = ops.conv2d_grad_weight_pooled(grad, indices, input, weight.shape, *ctx.geometry, *ctx.pool_args, out)
    return grad_input, grad_weight, grad_bias


def _relu_setup(ctx, output):
    ctx.save_for_backward(output)


def _relu_grad(ctx, grad):
    (output,) = ctx.saved_tensors
    return ops.relu_backward(grad, output)


# --- torch.autograd.Function per layer ----------------------------------------------------------

class Linear(torch.autograd.Function):
    @staticmethod
    def forward(input, weight, bias, relu: bool):
        return (ops.linear_relu if relu else ops.linear)(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _linear_setup(ctx, *inputs[:3], output, relu=inputs[3])

    @staticmethod
    def backward(ctx, grad):
        return *_linear_grads(ctx, grad), None


class Conv2d(torch.autograd.Function):
    """padding is [top, bottom, left, right]; input is 4-D."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, relu: bool):
        op = ops.conv2d_relu if relu else ops.conv2d
        return op(input, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _conv2d_setup(ctx, *inputs[:7], output, relu=inputs[7])

    @staticmethod
    def backward(ctx, grad):
        return *_conv2d_grads(ctx, grad), None, None, None, None, None


class Conv2dReLUMaxPool2d(torch.autograd.Function):
    """Returns (output, indices); padding is [top, bottom, left, right]; input is 4-D."""

    @staticmethod
    def forward(input, weight, bias, stride, padding, dilation, groups, *pool_args):
        return ops.conv2d_relu_max_pool2d(input, weight, bias, stride, padding, dilation, groups, *pool_args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _conv2d_relu_max_pool2d_setup(ctx, *inputs[:7], inputs[7:], output)

    @staticmethod
    def backward(ctx, grad, grad_indices):
        return *_conv2d_relu_max_pool2d_grads(ctx, grad, grad_indices), *([None] * 9)


class MaxPool2d(torch.autograd.Function):
    """Returns (output, indices); input is 4-D."""

    @staticmethod
    def forward(input, kernel_size, stride, padding, dilation, ceil_mode):
        return ops.max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _max_pool2d_setup(ctx, inputs[0], output[1], inputs[1:6])

    @staticmethod
    def backward(ctx, grad, grad_indices):
        return _max_pool2d_grad(ctx, grad, grad_indices), None, None, None, None, None


class ReLU(torch.autograd.Function):
    @staticmethod
    def forward(input):
        return ops.relu(input)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _relu_setup(ctx, output)

    @staticmethod
    def backward(ctx, grad):
        return _relu_grad(ctx, grad)


# --- the same autograd on the ops themselves ----------------------------------------------------

def _register(name, grads, setup_context):
    """Registers grads (which returns the gradients of the leading tensor arguments) as the op's
    backward, padded with None for its remaining arguments."""
    num_args = len(getattr(ops, name).default._schema.arguments)

    def backward(ctx, *grad_outputs):
        result = grads(ctx, *grad_outputs)
        result = result if isinstance(result, tuple) else (result,)
        return *result, *([None] * (num_args - len(result)))

    torch.library.register_autograd("fastlayers::" + name, backward, setup_context=setup_context)


# --- the backward ops' own autograd (double backward) -------------------------------------------
# Each backward op is linear in its gradient argument and in its other tensor argument, so its
# vector-Jacobian product is another fastlayers op: the adjoint of conv2d_grad_input with respect
# to grad_output is conv2d itself, and so on. `relu_output` only selects a mask: no gradient.

def _masked(grad, relu_output):
    """grad where relu_output > 0 and 0 elsewhere; grad itself when there was no fused ReLU."""
    return grad if relu_output is None else ops.relu_backward(grad, relu_output)


def _setup_saving_tensors(ctx, inputs, output):
    """Saves the op's tensor arguments (None stays None) and keeps the rest as they came."""
    tensors = [a if isinstance(a, torch.Tensor) or a is None else None for a in inputs]
    ctx.save_for_backward(*tensors)
    ctx.args = [None if isinstance(a, torch.Tensor) or a is None else a for a in inputs]


def _linear_grad_input_grads(ctx, gg):
    grad, weight, relu_output = ctx.saved_tensors
    need_grad, need_weight = ctx.needs_input_grad[:2]
    d_grad = _masked(ops.linear(gg, weight, None), relu_output) if need_grad else None
    d_weight = ops.linear_grad_weight(grad, gg, relu_output) if need_weight else None
    return d_grad, d_weight


def _linear_grad_weight_grads(ctx, gg):
    grad, input, relu_output = ctx.saved_tensors
    need_grad, need_input = ctx.needs_input_grad[:2]
    d_grad = _masked(ops.linear(input, gg, None), relu_output) if need_grad else None
    d_input = ops.linear_grad_input(grad, gg, relu_output) if need_input else None
    return d_grad, d_input


def _bias_grad_grads(ctx, gg):
    grad, relu_output = ctx.saved_tensors[:2]
    channel_dim = ctx.args[2]
    shape = [1] * grad.dim()
    shape[channel_dim] = grad.shape[channel_dim]
    return _masked(gg.reshape(shape).expand(grad.shape), relu_output)


def _conv2d_grad_input_grads(ctx, gg):
    grad, weight, relu_output = (ctx.saved_tensors[i] for i in (0, 1, 7))
    geometry = ctx.args[3:7]
    need_grad, need_weight = ctx.needs_input_grad[:2]
    d_grad = _masked(ops.conv2d(gg, weight, None, *geometry), relu_output) if need_grad else None
    d_weight = ops.conv2d_grad_weight(grad, gg, weight.shape, *geometry, relu_output) if need_weight else None
    return d_grad, d_weight


def _conv2d_grad_weight_grads(ctx, gg):
    grad, input, relu_output = (ctx.saved_tensors[i] for i in (0, 1, 7))
    geometry = ctx.args[3:7]
    need_grad, need_input = ctx.needs_input_grad[:2]
    d_grad = _masked(ops.conv2d(input, gg, None, *geometry), relu_output) if need_grad else None
    d_input = ops.conv2d_grad_input(grad, gg, input.shape, *geometry, relu_output) if need_input else None
    return d_grad, d_input


def _taps(indices, input_hw, kernel_size, stride, padding, dilation, ceil_mode):
    """Where each window's index is one of its taps: the outputs whose gradient max_pool2d_backward
    passes on (a window wholly in the padding, or a hand-made index, passes nothing)."""
    size = input_hw[0] * input_hw[1]
    inside = (indices >= 0) & (indices < size)
    q = indices.clamp(0, max(size - 1, 0))
    tap = inside
    for dim, position in ((-2, q.div(input_hw[1], rounding_mode="floor")), (-1, q.remainder(input_hw[1]))):
        i = dim + 2
        out = torch.arange(indices.shape[dim], device=indices.device).view(-1, *([1] * (-dim - 1)))
        offset = position - (out * stride[i] - padding[i])
        tap = tap & (offset >= 0) & (offset.remainder(dilation[i]) == 0) & (offset.div(dilation[i], rounding_mode="floor") < kernel_size[i])
    return tap


def _gather_taps(activation, indices, pool_args):
    """The adjoint of max_pool2d_backward with respect to its gradient: the activation-shaped
    tensor read at each window's index where that index is one of the window's taps, else 0."""
    tap = _taps(indices, activation.shape[-2:], *pool_args)
    picked = activation.flatten(-2).gather(-1, indices.where(tap, 0).flatten(-2)).view(indices.shape)
    return picked.where(tap, 0)


def _unpool(grad, indices, relu_output, input_shape, weight_shape, geometry, pool_args):
    """The masked pooled gradient passed to the conv's activation shape."""
    oh, ow = conv2d_output_hw(input_shape[2], input_shape[3], weight_shape[2:], *geometry[:3])
    activation_shape = [input_shape[0], weight_shape[0], oh, ow]
    return ops.max_pool2d_backward(_masked(grad, relu_output), indices, activation_shape, *pool_args)


def _conv2d_grad_weight_pooled_grads(ctx, gg):
    """conv2d_grad_weight of the unpooled gradient: with respect to the pooled gradient, the
    gather of conv2d(input, gg); with respect to the input, conv2d_grad_input of the unpooled
    gradient."""
    grad, indices, input, relu_output = (ctx.saved_tensors[i] for i in (0, 1, 2, 13))
    weight_size, geometry, pool_args = ctx.args[3], ctx.args[4:8], ctx.args[8:13]
    need_grad, _, need_input = ctx.needs_input_grad[:3]
    d_grad = None
    if need_grad:
        d_grad = _masked(_gather_taps(ops.conv2d(input, gg, None, *geometry), indices, pool_args), relu_output)
    d_input = None
    if need_input:
        unpooled = _unpool(grad, indices, relu_output, input.shape, weight_size, geometry, pool_args)
        d_input = ops.conv2d_grad_input(unpooled, gg, input.shape, *geometry, None)
    return d_grad, None, d_input


def _conv2d_grad_input_pooled_grads(ctx, gg):
    """conv2d_grad_input of the unpooled gradient: with respect to the pooled gradient, the
    gather of conv2d(gg, weight); with respect to the weight, conv2d_grad_weight of the unpooled
    gradient."""
    grad, indices, weight, relu_output = (ctx.saved_tensors[i] for i in (0, 1, 2, 13))
    input_size, geometry, pool_args = ctx.args[3], ctx.args[4:8], ctx.args[8:13]
    need_grad, _, need_weight = ctx.needs_input_grad[:3]
    d_grad = None
    if need_grad:
        d_grad = _masked(_gather_taps(ops.conv2d(gg, weight, None, *geometry), indices, pool_args), relu_output)
    d_weight = None
    if need_weight:
        unpooled = _unpool(grad, indices, relu_output, input_size, weight.shape, geometry, pool_args)
        d_weight = ops.conv2d_grad_weight(unpooled, gg, weight.shape, *geometry, None)
    return d_grad, None, d_weight


def _max_pool2d_backward_grads(ctx, gg):
    """The adjoint of passing each window's gradient to its maximum is gathering from it."""
    return _gather_taps(gg, ctx.saved_tensors[1], ctx.args[3:8])


def _relu_backward_grads(ctx, gg):
    return ops.relu_backward(gg, ctx.saved_tensors[1])


for _name, _grads in [
    ("linear_grad_input", _linear_grad_input_grads),
    ("linear_grad_weight", _linear_grad_weight_grads),
    ("bias_grad", _bias_grad_grads),
    ("conv2d_grad_input", _conv2d_grad_input_grads),
    ("conv2d_grad_weight", _conv2d_grad_weight_grads),
    ("conv2d_grad_weight_pooled", _conv2d_grad_weight_pooled_grads),
    ("conv2d_grad_input_pooled", _conv2d_grad_input_pooled_grads),
    ("max_pool2d_backward", _max_pool2d_backward_grads),
    ("relu_backward", _relu_backward_grads),
]:
    _register(_name, _grads, _setup_saving_tensors)
