"""The functional API: same names, signatures and defaults as torch.nn.functional, computed by
fastlayers' kernels, differentiable through fastlayers' backward kernels. Each function calls its
op, whose autograd is registered on the op itself (csrc/autograd.cpp), so torch.autocast casts
before autograd records, as for torch's layers; fastlayers.autograd has the same layers as
torch.autograd.Function classes, with their backward in Python, slower per call.

    import fastlayers.functional as FF
    y = FF.conv2d_relu(x, weight, bias, padding="same")
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _autograd  # noqa: F401  (registers the ops' autograd)
from ._shapes import IntOrPair, conv2d_padding, pair

__all__ = ["linear", "linear_relu", "conv2d", "conv2d_relu", "conv2d_relu_max_pool2d", "max_pool2d", "relu"]

# Each function calls its op's one overload directly (ops.<name>.default): the overload packet's
# own call resolves the overload again on every call, about 2.5 us a call on CPU.
ops = torch.ops.fastlayers


def _check_tensor(op, name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastlayers.{op}: expected {name} to be a Tensor, but got {type(t).__name__}")


def linear(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """y = input @ weight.T + bias over the last dimension, like torch.nn.functional.linear."""
    _check_tensor("linear", "input", input)
    return ops.linear.default(input, weight, bias)


def linear_relu(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """relu(linear(input, weight, bias)) in one kernel: bias and ReLU in the GEMM epilogue."""
    _check_tensor("linear_relu", "input", input)
    return ops.linear_relu.default(input, weight, bias)


def _conv2d_args(op, input, weight, stride, padding, dilation):
    """Checks the input and weight ranks; returns stride, [top, bottom, left, right] padding and
    dilation as the ops take them."""
    _check_tensor(op, "input", input)
    _check_tensor(op, "weight", weight)
    if input.dim() not in (3, 4):
        raise RuntimeError(f"fastlayers.{op}: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), but got {input.dim()}-D input of size {list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"fastlayers.{op}: expected weight to be 4-D (out_channels, in_channels / groups, kH, kW), but got {weight.dim()}-D weight of size {list(weight.shape)}")
    stride = pair(stride, "stride", op)
    dilation = pair(dilation, "dilation", op)
    return stride, conv2d_padding(padding, weight.shape[2:], stride, dilation, op), dilation


def _pool_args(op, kernel_size, stride, padding, dilation, ceil_mode, prefix=""):
    """The op's (kernel, stride, padding, dilation, ceil_mode); no stride means the kernel's."""
    kernel = pair(kernel_size, prefix + "kernel_size", op)
    no_stride = stride is None or (not isinstance(stride, int) and len(stride) == 0)
    stride = kernel if no_stride else pair(stride, prefix + "stride", op)
    return kernel, stride, pair(padding, prefix + "padding", op), pair(dilation, prefix + "dilation", op), bool(ceil_mode)


def _conv2d(op, input, weight, bias, stride, padding, dilation, groups, relu):
    stride, padding, dilation = _conv2d_args(op, input, weight, stride, padding, dilation)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    y = (ops.conv2d_relu.default if relu else ops.conv2d.default)(x, weight, bias, stride, padding, dilation, groups)
    return y if batched else y.squeeze(0)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding=0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """2-D convolution over NCHW (or unbatched CHW) input, like torch.nn.functional.conv2d.
    padding is an int, a pair, 'valid' or 'same'."""
    return _conv2d("conv2d", input, weight, bias, stride, padding, dilation, groups, False)


def conv2d_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding=0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """relu(conv2d(...)) in one pass: bias and ReLU in the GEMM epilogue."""
    return _conv2d("conv2d_relu", input, weight, bias, stride, padding, dilation, groups, True)


def conv2d_relu_max_pool2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntOrPair = 1,
    padding=0,
    dilation: IntOrPair = 1,
    groups: int = 1,
    pool_kernel_size: IntOrPair = 2,
    pool_stride: Optional[IntOrPair] = None,
    pool_padding: IntOrPair = 0,
    pool_dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """max_pool2d(relu(conv2d(input, weight, bias, stride, padding, dilation, groups)),
    pool_kernel_size, pool_stride, pool_padding, pool_dilation, ceil_mode) in one op that never
    writes the unpooled activation. The indices (with return_indices) point into the activation's
    planes, as max_pool2d's would."""
    op = "conv2d_relu_max_pool2d"
    stride, padding, dilation = _conv2d_args(op, input, weight, stride, padding, dilation)
    pool_args = _pool_args(op, pool_kernel_size, pool_stride, pool_padding, pool_dilation, ceil_mode, "pool_")
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    args = (x, weight, bias, stride, padding, dilation, groups, *pool_args)
    out, indices = ops.conv2d_relu_max_pool2d.default(*args)
    if not batched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out


def max_pool2d(
    input: torch.Tensor,
    kernel_size: IntOrPair,
    stride: Optional[IntOrPair] = None,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """2-D max pooling with torch's semantics (-inf padding, ceil_mode, NaN propagation); the
    indices are torch's, usable by torch.nn.functional.max_unpool2d."""
    op = "max_pool2d"
    _check_tensor(op, "input", input)
    if input.dim() not in (3, 4):
        raise RuntimeError(f"fastlayers.{op}: expected input to be 3-D (C, H, W) or 4-D (N, C, H, W), but got {input.dim()}-D input of size {list(input.shape)}")
    args = _pool_args(op, kernel_size, stride, padding, dilation, ceil_mode)
    batched = input.dim() == 4
    x = input if batched else input.unsqueeze(0)
    out, indices = ops.max_pool2d.default(x, *args)
    if not batched:
        out, indices = out.squeeze(0), indices.squeeze(0)
    return (out, indices) if return_indices else out


def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """max(input, 0), NaN propagated. With inplace=True the result is written back into input
    (and input is returned), with the same autograd rules as torch's in-place ReLU."""
    _check_tensor("relu", "input", input)
    out = ops.relu.default(input)
    return input.copy_(out) if inplace else out
