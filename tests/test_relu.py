"""relu: values (NaN, +-inf, 0 and random; float16 and bfloat16 too on CUDA), gradient, in-place,
the module, opcheck and errors."""

from __future__ import annotations

import pytest
import torch

import fastlayers
import fastlayers.functional as FF
from conftest import LOW_PRECISION, needs_cuda

ops = torch.ops.fastlayers


@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5, 7), (300, 301)])  # 90,300 elements: threaded
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch(device, shape, dtype):
    x = torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
    y = FF.relu(x)
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    xr = x.detach().clone().requires_grad_()
    yr = torch.relu(xr)
    (gr,) = torch.autograd.grad(yr, xr, gy)
    assert torch.equal(y, yr) and torch.equal(gx, gr)


@needs_cuda
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_on_cuda(dtype):
    x = torch.randn(300, 301, device="cuda", dtype=dtype)
    x[0, :7] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.5, 2.5])
    x.requires_grad_()
    y = FF.relu(x)
    ref = torch.relu(x.detach())
    assert y.dtype == dtype
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.nan_to_num(), ref.nan_to_num())
    gy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, gy)
    assert torch.equal(gx, torch.where(ref <= 0, torch.zeros_like(gy), gy))  # a select: exact


def test_special_values(device):
    x = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0, -1.5, 2.5], device=device, requires_grad=True)
    y = FF.relu(x)
    ref = torch.relu(x.detach())
    assert torch.equal(y.isnan(), ref.isnan()) and torch.equal(y.nan_to_num(), ref.nan_to_num())
    assert torch.equal(y.signbit(), ref.signbit())  # relu(-0.0) is -0.0
    (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    # threshold_backward: the gradient stops where y <= 0, so a NaN output passes it on.
    assert gx.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    xr = x.detach().clone().requires_grad_()
    assert torch.equal(gx, torch.autograd.grad(torch.relu(xr), xr, torch.ones_like(y))[0])


@pytest.mark.parametrize("n", [7, 100_000])  # scalar loop and the threaded, vectorised one
def test_nan_output_passes_the_gradient_like_torch(device, n):
    x = torch.randn(n, device=device)
    x[::3] = float("nan")
    x.requires_grad_()
    gy = torch.randn(n, device=device)
    (gx,) = torch.autograd.grad(FF.relu(x), x, gy)
    xr = x.detach().clone().requires_grad_()
    (gr,) = torch.autograd.grad(torch.relu(xr), xr, gy)
    assert torch.equal(gx, gr)


def test_gradcheck(device):
    x = torch.randn(4, 5, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FF.relu, (x,))
    assert torch.autograd.gradgradcheck(FF.relu, (x,))


def test_non_contiguous(device):
    x = torch.randn(6, 8, device=device).t()
    assert torch.equal(FF.relu(x), torch.relu(x))
    c = torch.randn(2, 3, 4, 5, device=device).to(memory_format=torch.channels_last)
    assert torch.equal(FF.relu(c), torch.relu(c))


def test_inplace_like_torch(device):
    x = torch.randn(10, device=device)
    expected = torch.relu(x)
    out = FF.relu(x, inplace=True)
    assert out is x and torch.equal(x, expected)
    leaf = torch.randn(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        FF.relu(leaf, inplace=True)
    h = leaf * 2
    FF.relu(h, inplace=True).sum().backward()
    assert torch.equal(leaf.grad, 2.0 * (leaf.detach() > 0))


def test_module(device):
    x = torch.randn(4, 5, device=device)
    assert torch.equal(fastlayers.nn.ReLU()(x), torch.nn.ReLU()(x))
    y = x.clone()
    fastlayers.nn.ReLU(inplace=True)(y)
    assert torch.equal(y, torch.relu(x))


def test_opcheck(device):
    x = torch.randn(3, 4, device=device, requires_grad=True)
    torch.library.opcheck(ops.relu.default, (x,))
    torch.library.opcheck(ops.relu.default, (torch.randn(2, 3, 4, 5, device=device).to(memory_format=torch.channels_last),))
    y = ops.relu(x.detach())
    torch.library.opcheck(ops.relu_backward.default, (torch.randn_like(y), y))
    c = torch.randn(2, 3, 4, 5, device=device).to(memory_format=torch.channels_last)
    torch.library.opcheck(ops.relu.default, (c.requires_grad_(),))
    torch.library.opcheck(ops.relu_backward.default, (torch.randn_like(c), ops.relu(c.detach())))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_unsupported_dtype_raises(dtype):
    with pytest.raises(RuntimeError, match=r"fastlayers.relu: expected input to be torch.float32 or torch.float64 on CPU, but got torch\."):
        FF.relu(torch.ones(3, dtype=dtype))


def test_not_a_tensor_raises_type_error():
    with pytest.raises(TypeError, match=r"fastlayers.relu: expected input to be a Tensor, but got list"):
        FF.relu([1.0, -1.0])


def test_relu_backward_shape_mismatch_raises():
    with pytest.raises(RuntimeError, match=r"relu_backward: expected output of size \[3\], but got \[4\]"):
        ops.relu_backward(torch.randn(3), torch.randn(4))
