"""conv2d_grad_weight_pooled: the weight gradient of a conv whose output went through a max-pool,
gathered from the windows' maxima or computed densely a few images at a time, against torch's
dense route (the pooled gradient scattered to
its indices, then torch.nn.grad.conv2d_weight) in float64; with and without the ReLU mask (a NaN
mask passes), Inf and NaN inputs (NaN wherever torch's dense product has one), every CPU ISA,
gradcheck and gradgradcheck, opcheck, and the errors bad input must raise."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close, assert_raises_with

ops = torch.ops.fastlayers

# (input shape, out_channels, kernel, stride, padding [top, bottom, left, right], dilation, groups,
#  pool kernel, pool stride, pool padding, ceil_mode)
CASES = [
    ((4, 1, 28, 28), 32, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1, (2, 2), (2, 2), (0, 0), False),  # MNIST CNN conv1
    ((4, 3, 24, 24), 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, (2, 2), (2, 2), (0, 0), False),  # CIFAR CNN conv1
    ((3, 32, 14, 14), 64, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 1, (2, 2), (2, 2), (0, 0), False),  # MNIST CNN conv2
    ((4, 3, 32, 32), 6, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, (2, 2), (2, 2), (0, 0), False),  # LeNet-5 conv1
    ((2, 2, 11, 10), 17, (3, 3), (2, 1), (1, 1, 1, 1), (1, 2), 1, (3, 3), (2, 2), (0, 0), True),  # overlapping windows
    ((2, 4, 9, 9), 12, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, (2, 2), (2, 2), (0, 0), False),  # groups
    ((2, 3, 9, 8), 5, (2, 2), (1, 1), (1, 0, 0, 1), (1, 1), 1, (3, 3), (1, 1), (1, 1), False),  # asymmetric padding
    ((2, 2, 13, 12), 4, (4, 6), (1, 1), (0, 0, 2, 3), (1, 1), 1, (2, 2), (2, 2), (0, 0), True),  # kernel width 6
    ((1, 2, 10, 12), 3, (3, 7), (1, 2), (1, 1, 3, 3), (2, 1), 1, (2, 2), (2, 2), (0, 0), False),  # width 7, stride 2
    ((0, 2, 8, 8), 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, (2, 2), (2, 2), (0, 0), False),  # empty batch
]
IDS = [f"{'x'.join(map(str, c[0]))}-oc{c[1]}-k{c[2][0]}x{c[2][1]}-s{c[3][0]}{c[3][1]}-g{c[6]}" for c in CASES]


def pooled_problem(case, dtype, device, mask_nan=False):
    """Input, weight size, geometry (the conv's stride, padding, dilation and groups, then the
    pool's kernel, stride, padding, dilation and ceil_mode), and a pooled gradient, indices and
    ReLU output from the fused forward of `case`."""
    shape, oc, kernel, stride, padding, dilation, groups, pk, ps, pp, ceil = case
    x = torch.randn(*shape, dtype=dtype, device=device)
    w = torch.randn(oc, shape[1] // groups, *kernel, dtype=dtype, device=device)
    b = torch.randn(oc, dtype=dtype, device=device)
    geometry = (list(stride), list(padding), list(dilation), groups, list(pk), list(ps), list(pp), [1, 1], ceil)
    out, indices = ops.conv2d_relu_max_pool2d(x, w, b, *geometry)
    grad = torch.randn_like(out)
    if mask_nan and out.numel():
        out = out.clone()
        out.view(-1)[:: 7] = float("nan")  # a NaN mask passes the gradient
    return x, list(w.shape), geometry, grad, indices, out


def dense_reference(x, weight_size, geometry, grad, indices, relu_output):
    """torch's route, in float64: mask, scatter to the activation, conv2d_weight."""
    stride, padding, dilation, groups = geometry[:4]
    x, grad = x.double(), grad.double()
    if relu_output is not None:
        grad = torch.where(relu_output.double() <= 0, torch.zeros_like(grad), grad)
    top, bottom, left, right = padding
    xp = torch.nn.functional.pad(x, (left, right, top, bottom))
    act = torch.nn.functional.conv2d(xp, torch.zeros(weight_size, dtype=torch.float64, device=x.device), None, stride, 0, dilation, groups)
    dense = torch.zeros(act.shape[0], act.shape[1], act.shape[2] * act.shape[3], dtype=torch.float64, device=x.device)
    dense.scatter_add_(2, indices.flatten(2), grad.flatten(2))
    return torch.nn.grad.conv2d_weight(xp, weight_size, dense.view(act.shape), stride, 0, dilation, groups)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask", ["none", "relu", "relu with NaN"])
def test_matches_torch_dense_route(device, cpu_isa, case, dtype, mask):
    x, weight_size, geometry, grad, indices, out = pooled_problem(case, dtype, device, mask_nan=mask == "relu with NaN")
    relu_output = None if mask == "none" else out
    got = ops.conv2d_grad_weight_pooled(grad, indices, x, weight_size, *geometry, relu_output)
    want = dense_reference(x, weight_size, geometry, grad, indices, relu_output)
    assert got.dtype == dtype and got.shape == torch.Size(weight_size)
    assert_close(got, want, max(1, grad.numel() // max(1, weight_size[0])), "grad_weight")


def with_stray_indices(x, weight_size, geometry, indices):
    """indices with some that are none of their window's taps (before the activation plane, past
    it, and the first window's index in the last window), and where the rest are."""
    oh, ow = ops.conv2d(x, torch.zeros(weight_size, dtype=x.dtype, device=x.device), None, *geometry[:4]).shape[-2:]
    indices, tap = indices.clone(), torch.ones_like(indices, dtype=torch.bool)
    for n, c, value in [(0, 0, -1), (-1, 1, oh * ow), (0, -1, None)]:
        indices[n, c, -1, -1] = indices[n, c, 0, 0] if value is None else value
        tap[n, c, -1, -1] = False
    return indices, tap


@pytest.mark.parametrize("case", [CASES[1], CASES[3], CASES[5]], ids=["gathered", "dense", "groups"])
def test_indices_that_are_not_taps_pass_nothing(device, cpu_isa, case):
    # As max_pool2d_backward: a window's gradient goes to its index only where that index is one
    # of the window's taps (a window wholly in the padding has none).
    x, weight_size, geometry, grad, indices, out = pooled_problem(case, torch.float64, device)
    stray, tap = with_stray_indices(x, weight_size, geometry, indices)
    got = ops.conv2d_grad_weight_pooled(grad, stray, x, weight_size, *geometry, out)
    want = dense_reference(x, weight_size, geometry, grad.where(tap, 0), stray.where(tap, 0), out)
    assert_close(got, want, max(1, grad.numel() // max(1, weight_size[0])), "grad_weight")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.parametrize("case", [CASES[1], CASES[3]], ids=["gathered", "dense"])
def test_inf_and_nan_inputs_spread_as_in_the_dense_product(device, cpu_isa, case, bad):
    # torch's dense product multiplies every pixel by the unpooled gradient, zeros included, so
    # an Inf makes NaN (0 * Inf) in every tap it reaches; the pooled sum must do the same.
    x, weight_size, geometry, grad, indices, out = pooled_problem(case, torch.float64, device)
    x[1, 2, 5, 7] = bad
    got = ops.conv2d_grad_weight_pooled(grad, indices, x, weight_size, *geometry, out)
    want = dense_reference(x, weight_size, geometry, grad, indices, out)
    assert torch.equal(got.isnan(), want.isnan()) and got.isnan().any()
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite])


def test_deterministic_and_thread_count_independent_up_to_rounding(cpu_isa):
    x, weight_size, geometry, grad, indices, out = pooled_problem(CASES[0], torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        results = {}
        for n in (1, 2):
            torch.set_num_threads(n)
            first = ops.conv2d_grad_weight_pooled(grad, indices, x, weight_size, *geometry, out)
            again = ops.conv2d_grad_weight_pooled(grad, indices, x, weight_size, *geometry, out)
            assert torch.equal(first, again)
            results[n] = first
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(results[1], results[2], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("case", [CASES[4], CASES[5], CASES[6]], ids=[IDS[4], IDS[5], IDS[6]])
def test_gradcheck_and_gradgradcheck(device, case):
    small = ((1, *case[0][1:3], min(case[0][3], 8)), min(case[1], 4 * case[6]), *case[2:])
    x, weight_size, geometry, grad, indices, out = pooled_problem(small, torch.float64, device)
    x.requires_grad_()
    grad.requires_grad_()

    def f(grad, x):
        return ops.conv2d_grad_weight_pooled(grad, indices, x, weight_size, *geometry, out)

    assert torch.autograd.gradcheck(f, (grad, x))
    assert torch.autograd.gradgradcheck(f, (grad, x))


def test_opcheck(device):
    x, weight_size, geometry, grad, indices, out = pooled_problem(CASES[4], torch.float32, device)
    torch.library.opcheck(ops.conv2d_grad_weight_pooled, (grad, indices, x.requires_grad_(), weight_size, *geometry, out))
    torch.library.opcheck(ops.conv2d_grad_weight_pooled, (grad, indices, x.to(memory_format=torch.channels_last), weight_size, *geometry, None))


# A 2 x 2 pool at stride 2, as the pooled ops take it.
POOL_2X2 = ([2, 2], [2, 2], [0, 0], [1, 1], False)


def _call(grad=None, indices=None, x=None, weight_size=(4, 2, 3, 3)):
    x = torch.randn(2, 2, 8, 8) if x is None else x
    grad = torch.randn(2, 4, 4, 4) if grad is None else grad
    indices = torch.zeros(grad.shape, dtype=torch.int64) if indices is None else indices
    return ops.conv2d_grad_weight_pooled(grad, indices, x, list(weight_size), [1, 1], [1, 1, 1, 1], [1, 1], 1, *POOL_2X2, None)


ERRORS = [
    ("int32 indices", lambda: _call(indices=torch.zeros(2, 4, 4, 4, dtype=torch.int32)), ["indices", "torch.int64", "torch.int32"]),
    ("indices shape", lambda: _call(indices=torch.zeros(2, 4, 4, 3, dtype=torch.int64)), ["indices"]),
    ("grad batch", lambda: _call(grad=torch.randn(3, 4, 4, 4)), ["grad_output", "[2, 4, 4, 4]", "batch of input", "[3, 4, 4, 4]"]),
    ("grad channels", lambda: _call(grad=torch.randn(2, 5, 4, 4)), ["grad_output", "output channels"]),
    ("grad 3-D", lambda: _call(grad=torch.randn(4, 4, 4)), ["grad_output", "[2, 4, 4, 4]", "[4, 4, 4]"]),
    ("grad not the pool's output", lambda: _call(grad=torch.randn(2, 4, 3, 3)), ["grad_output", "pool's output size", "[2, 4, 3, 3]"]),
    ("dtype mismatch", lambda: _call(x=torch.randn(2, 2, 8, 8, dtype=torch.float64)), ["input", "same dtype as grad_output"]),
    ("weight in_channels", lambda: _call(weight_size=(4, 3, 3, 3)), ["conv2d_grad_weight_pooled", "weight"]),
]


@pytest.mark.parametrize("what,call,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, words):
    assert_raises_with(call, words)
