"""Drop-in modules. Each subclasses its torch.nn twin, so constructor arguments, parameter names,
initialisation, state_dict keys and repr are torch's own; only forward runs on fastlayers' kernels.
A torch checkpoint loads into these modules, and theirs into torch's, unchanged."""

from __future__ import annotations

import torch

from . import functional as F

__all__ = ["Linear", "LinearReLU", "Conv2d", "Conv2dReLU", "Conv2dReLUMaxPool2d", "MaxPool2d", "ReLU"]


class Linear(torch.nn.Linear):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, self.bias)


class LinearReLU(torch.nn.Linear):
    """Linear followed by ReLU, fused; parameters and state_dict as torch.nn.Linear."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear_relu(input, self.weight, self.bias)


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d on fastlayers' kernels. Non-zero padding modes (reflect, replicate,
    circular) pad with torch.nn.functional.pad first, exactly as torch.nn.Conv2d does."""

    _relu = False

    def _conv_forward(self, input, weight, bias):
        conv = F.conv2d_relu if self._relu else F.conv2d
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2dReLU(Conv2d):
    """Conv2d followed by ReLU, fused; parameters and state_dict as torch.nn.Conv2d."""

    _relu = True


class Conv2dReLUMaxPool2d(torch.nn.Conv2d):
    """Conv2d, ReLU and MaxPool2d fused into one op that never writes the unpooled activation.
    Takes torch.nn.Conv2d's arguments plus the pool's (pool_kernel_size, pool_stride,
    pool_padding, pool_dilation, ceil_mode); parameters and state_dict are the Conv2d's, so
    `Conv2dReLUMaxPool2d(...).load_state_dict(conv.state_dict())` works."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 pool_kernel_size=2, pool_stride=None, pool_padding=0, pool_dilation=1, ceil_mode=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, device, dtype)
        self.pool_kernel_size = pool_kernel_size
        self.pool_stride = pool_stride if pool_stride is not None else pool_kernel_size
        self.pool_padding = pool_padding
        self.pool_dilation = pool_dilation
        self.ceil_mode = ceil_mode

    def extra_repr(self):
        return (super().extra_repr() + f", pool_kernel_size={self.pool_kernel_size}, pool_stride={self.pool_stride}"
                f", pool_padding={self.pool_padding}, pool_dilation={self.pool_dilation}, ceil_mode={self.ceil_mode}")

    def _conv_forward(self, input, weight, bias):
        pool = (self.pool_kernel_size, self.pool_stride, self.pool_padding, self.pool_dilation, self.ceil_mode)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return F.conv2d_relu_max_pool2d(input, weight, bias, self.stride, padding, self.dilation, self.groups, *pool)


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input: torch.Tensor):
        return F.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )


class ReLU(torch.nn.ReLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(input, inplace=self.inplace)
