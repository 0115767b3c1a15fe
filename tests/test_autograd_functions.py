"""fastlayers.autograd: the layers as torch.autograd.Function classes give torch's outputs and
gradients, and pass gradcheck and gradgradcheck in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers.autograd as FA


def double(*shape, device):
    return torch.randn(*shape, dtype=torch.float64, device=device, requires_grad=True)


@pytest.mark.parametrize("relu", [False, True])
def test_linear(device, relu):
    x, w, b = double(5, 7, device=device), double(3, 7, device=device), double(3, device=device)
    ref = F.linear(x, w, b)
    torch.testing.assert_close(FA.Linear.apply(x, w, b, relu), ref.relu() if relu else ref)
    assert torch.autograd.gradcheck(lambda x, w, b: FA.Linear.apply(x, w, b, relu), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w, b: FA.Linear.apply(x, w, b, relu), (x, w, b))


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d(device, relu):
    x, w, b = double(2, 4, 7, 6, device=device), double(6, 2, 3, 3, device=device), double(6, device=device)
    args = ([2, 1], [1, 0, 1, 1], [1, 1], 2, relu)
    ref = F.conv2d(F.pad(x, [1, 1, 1, 0]), w, b, stride=(2, 1), groups=2)  # F.pad: left, right, top, bottom
    torch.testing.assert_close(FA.Conv2d.apply(x, w, b, *args), ref.relu() if relu else ref)
    assert torch.autograd.gradcheck(lambda x, w, b: FA.Conv2d.apply(x, w, b, *args), (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w, b: FA.Conv2d.apply(x, w, b, *args), (x, w, b))


def test_max_pool2d_and_relu(device):
    x = double(2, 3, 7, 8, device=device)
    out, idx = FA.MaxPool2d.apply(x, [3, 3], [2, 2], [1, 1], [1, 1], True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    assert torch.equal(FA.ReLU.apply(x), torch.relu(x))
    assert torch.autograd.gradcheck(lambda x: FA.MaxPool2d.apply(x, [3, 3], [2, 2], [1, 1], [1, 1], True)[0], (x,))
    assert torch.autograd.gradgradcheck(lambda x: FA.MaxPool2d.apply(x, [3, 3], [2, 2], [1, 1], [1, 1], True)[0], (x,))
    assert torch.autograd.gradgradcheck(FA.ReLU.apply, (x,))


def test_conv2d_relu_max_pool2d(device):
    x, w, b = double(2, 3, 8, 9, device=device), double(4, 3, 3, 3, device=device), double(4, device=device)
    args = ([1, 1], [1, 1, 1, 1], [1, 1], 1, [2, 2], [2, 2], [0, 0], [1, 1], False)
    out, idx = FA.Conv2dReLUMaxPool2d.apply(x, w, b, *args)
    ref, ref_idx = F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=1)), 2, return_indices=True)
    torch.testing.assert_close(out, ref)
    assert torch.equal(idx, ref_idx)
    assert torch.autograd.gradcheck(lambda x, w, b: FA.Conv2dReLUMaxPool2d.apply(x, w, b, *args)[0], (x, w, b))
    assert torch.autograd.gradgradcheck(lambda x, w, b: FA.Conv2dReLUMaxPool2d.apply(x, w, b, *args)[0], (x, w, b))
