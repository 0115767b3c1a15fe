"""Drop-in modules. Each subclasses its torch.nn twin, so constructor arguments, parameter names,
initialisation, state_dict keys and repr are torch's own; only forward runs on fastlayers' kernels.
A torch checkpoint loads into these modules, and theirs into torch's, unchanged."""

from __future__ import annotations

import torch

from . import functional as F

__all__ = ["Linear", "LinearReLU", "Conv2d", "Conv2dReLU", "MaxPool2d", "ReLU"]


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


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input: torch.Tensor):
        return F.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )


class ReLU(torch.nn.ReLU):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(input, inplace=self.inplace)
