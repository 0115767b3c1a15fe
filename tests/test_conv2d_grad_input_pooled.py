"""conv2d_grad_input_pooled: the input gradient of a conv whose output went through a max-pool,
the pooled gradient unpooled image by image into the conv's padded planes, against torch's dense
route (the pooled gradient scattered to its indices, then torch.nn.grad.conv2d_input) in
float64; with and without the ReLU mask (a NaN mask passes), every CPU ISA, gradcheck and
gradgradcheck, opcheck, and the errors bad input must raise. The cases are the weight
gradient's (test_conv2d_grad_weight_pooled.py): stride 1 takes the padded planes, the strided
ones unpool in full first."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close, assert_raises_with
from test_conv2d_grad_weight_pooled import CASES, IDS, POOL_2X2, pooled_problem, with_stray_indices

ops = torch.ops.fastlayers


def dense_reference(x, weight, geometry, grad, indices, relu_output):
    """torch's route, in float64: mask, scatter to the activation, conv2d_input."""
    stride, padding, dilation, groups = geometry[:4]
    weight, grad = weight.double(), grad.double()
    if relu_output is not None:
        grad = torch.where(relu_output.double() <= 0, torch.zeros_like(grad), grad)
    top, bottom, left, right = padding
    padded_shape = (x.shape[0], x.shape[1], x.shape[2] + top + bottom, x.shape[3] + left + right)
    act = torch.nn.functional.conv2d(torch.zeros(padded_shape, dtype=torch.float64, device=x.device), weight, None, stride, 0, dilation, groups)
    dense = torch.zeros(act.shape[0], act.shape[1], act.shape[2] * act.shape[3], dtype=torch.float64, device=x.device)
    dense.scatter_add_(2, indices.flatten(2), grad.flatten(2))
    gx = torch.nn.grad.conv2d_input(padded_shape, weight, dense.view(act.shape), stride, 0, dilation, groups)
    return gx[:, :, top:top + x.shape[2], left:left + x.shape[3]]


def problem(case, dtype, device, mask_nan=False):
    x, weight_size, geometry, grad, indices, out = pooled_problem(case, dtype, device, mask_nan)
    return x, torch.randn(weight_size, dtype=dtype, device=device), geometry, grad, indices, out


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask", ["none", "relu", "relu with NaN"])
def test_matches_torch_dense_route(device, cpu_isa, case, dtype, mask):
    x, weight, geometry, grad, indices, out = problem(case, dtype, device, mask_nan=mask == "relu with NaN")
    relu_output = None if mask == "none" else out
    got = ops.conv2d_grad_input_pooled(grad, indices, weight, list(x.shape), *geometry, relu_output)
    want = dense_reference(x, weight, geometry, grad, indices, relu_output)
    assert got.dtype == dtype and got.shape == x.shape
    assert_close(got, want, max(1, weight[0].numel()), "grad_input")


@pytest.mark.parametrize("case", [CASES[2], CASES[4], CASES[5]], ids=["stride 1", "strided", "groups"])
def test_indices_that_are_not_taps_pass_nothing(device, cpu_isa, case):
    # As max_pool2d_backward: a window's gradient goes to its index only where that index is one
    # of the window's taps (a window wholly in the padding has none).
    x, weight, geometry, grad, indices, out = problem(case, torch.float64, device)
    stray, tap = with_stray_indices(x, weight.shape, geometry, indices)
    got = ops.conv2d_grad_input_pooled(grad, stray, weight, list(x.shape), *geometry, out)
    want = dense_reference(x, weight, geometry, grad.where(tap, 0), stray.where(tap, 0), out)
    assert_close(got, want, max(1, weight[0].numel()), "grad_input")


def test_inf_in_the_gradient_reaches_only_its_window_maximum(device):
    # The pooled gradient lands on each window's maximum alone, so an Inf there spreads through
    # the weights to the pixels that maximum saw, and nowhere else, as in the dense route.
    x, weight, geometry, grad, indices, out = problem(CASES[2], torch.float64, device)
    grad[1, 3, 2, 4] = float("inf")
    got = ops.conv2d_grad_input_pooled(grad, indices, weight, list(x.shape), *geometry, None)
    want = dense_reference(x, weight, geometry, grad, indices, None)
    assert torch.equal(got.isinf(), want.isinf()) and torch.equal(got.isnan(), want.isnan()) and got.isinf().any()
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite])


def test_deterministic(cpu_isa):
    x, weight, geometry, grad, indices, out = problem(CASES[2], torch.float32, "cpu")
    first = ops.conv2d_grad_input_pooled(grad, indices, weight, list(x.shape), *geometry, out)
    assert torch.equal(first, ops.conv2d_grad_input_pooled(grad, indices, weight, list(x.shape), *geometry, out))


@pytest.mark.parametrize("case", [CASES[4], CASES[5], CASES[6]], ids=[IDS[4], IDS[5], IDS[6]])
def test_gradcheck_and_gradgradcheck(device, case):
    small = ((1, *case[0][1:3], min(case[0][3], 8)), min(case[1], 4 * case[6]), *case[2:])
    x, weight, geometry, grad, indices, out = problem(small, torch.float64, device)
    weight.requires_grad_()
    grad.requires_grad_()

    def f(grad, weight):
        return ops.conv2d_grad_input_pooled(grad, indices, weight, list(x.shape), *geometry, out)

    assert torch.autograd.gradcheck(f, (grad, weight))
    assert torch.autograd.gradgradcheck(f, (grad, weight))


def test_opcheck(device):
    x, weight, geometry, grad, indices, out = problem(CASES[4], torch.float32, device)
    torch.library.opcheck(ops.conv2d_grad_input_pooled, (grad, indices, weight.requires_grad_(), list(x.shape), *geometry, out))
    torch.library.opcheck(ops.conv2d_grad_input_pooled, (grad, indices, weight.to(memory_format=torch.channels_last), list(x.shape), *geometry, None))


def _call(grad=None, indices=None, weight=None, input_size=(2, 2, 8, 8)):
    weight = torch.randn(4, 2, 3, 3) if weight is None else weight
    grad = torch.randn(2, 4, 4, 4) if grad is None else grad
    indices = torch.zeros(grad.shape, dtype=torch.int64) if indices is None else indices
    return ops.conv2d_grad_input_pooled(grad, indices, weight, list(input_size), [1, 1], [1, 1, 1, 1], [1, 1], 1, *POOL_2X2, None)


ERRORS = [
    ("int32 indices", lambda: _call(indices=torch.zeros(2, 4, 4, 4, dtype=torch.int32)), ["indices", "torch.int64", "torch.int32"]),
    ("indices shape", lambda: _call(indices=torch.zeros(2, 4, 4, 3, dtype=torch.int64)), ["indices"]),
    ("grad batch", lambda: _call(grad=torch.randn(3, 4, 4, 4)), ["grad_output", "batch of input"]),
    ("grad not the pool's output", lambda: _call(grad=torch.randn(2, 4, 3, 3)), ["grad_output", "pool's output size", "[2, 4, 3, 3]"]),
    ("grad channels", lambda: _call(grad=torch.randn(2, 5, 4, 4)), ["grad_output", "output channels"]),
    ("dtype mismatch", lambda: _call(weight=torch.randn(4, 2, 3, 3, dtype=torch.float64)), ["weight", "same dtype as grad_output"]),
    ("input_size channels", lambda: _call(input_size=(2, 3, 8, 8)), ["conv2d_grad_input_pooled", "weight"]),
]


@pytest.mark.parametrize("what,call,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, words):
    assert_raises_with(call, words)
