"""max_pool2d: outputs, indices and gradients equal to torch's over kernel sizes, strides,
paddings, dilations and ceil_mode (float16 and bfloat16 too on CUDA); NaN and -inf semantics;
max_unpool2d compatibility; gradcheck in float64; opcheck; layouts; and the errors bad input must
raise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers
import fastlayers.functional as FF
from conftest import LOW_PRECISION, assert_close_low_precision, assert_raises_with, needs_cuda

ops = torch.ops.fastlayers

# (input shape, kernel_size, stride, padding, dilation, ceil_mode)
CASES = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 7), 3, 2, 1, 1, False),
    ((2, 3, 9, 7), 3, 2, 1, 1, True),
    ((1, 2, 10, 11), (3, 2), (2, 1), (1, 1), (2, 1), True),
    ((1, 2, 10, 11), (2, 3), (3, 2), (1, 0), (1, 2), False),
    ((2, 2, 5, 5), 5, 1, 2, 1, False),
    ((2, 2, 6, 6), 4, 3, 2, 1, True),  # ceil_mode's last window would start in the padding
    ((1, 1, 1, 1), 1, 1, 0, 1, False),
    ((0, 3, 6, 6), 2, 2, 0, 1, False),
    ((3, 7, 7), 3, 2, 1, 1, True),  # unbatched
    ((64, 32, 24, 24), 2, None, 0, 1, False),  # the models' shapes
    ((64, 64, 14, 14), 2, 2, 0, 1, False),
    # 2 x 2 at stride 2 inside the plane (a vectorised path): rows of 1, 7, 16 and 17 outputs,
    # an odd width (the last column is in no window) and an odd height
    ((2, 3, 4, 2), 2, 2, 0, 1, False),
    ((2, 3, 6, 15), 2, 2, 0, 1, False),
    ((1, 2, 5, 32), 2, 2, 0, 1, False),
    ((1, 2, 4, 35), 2, 2, 0, 1, False),
]


@pytest.mark.parametrize("shape,k,s,p,d,ceil", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torch_exactly(device, cpu_isa, shape, k, s, p, d, ceil, dtype):
    x = torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)
    out, idx = FF.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    xr = x.detach().clone().requires_grad_()
    ref, ref_idx = F.max_pool2d(xr, k, s, p, d, ceil_mode=ceil, return_indices=True)
    assert out.dtype == dtype and idx.dtype == torch.int64
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    gy = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, gy)
    (gr,) = torch.autograd.grad(ref, xr, gy)
    torch.testing.assert_close(gx, gr, rtol=1e-6, atol=1e-6)  # overlapping windows sum gradients


@needs_cuda
@pytest.mark.parametrize("shape,k,s,p,d,ceil", CASES)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_on_cuda(shape, k, s, p, d, ceil, dtype):
    x = torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=True)
    out, idx = FF.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
    xr = x.detach().clone().requires_grad_()
    ref, ref_idx = F.max_pool2d(xr, k, s, p, d, ceil_mode=ceil, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)  # comparisons only: exact, ties too
    gy = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, gy)
    (gr,) = torch.autograd.grad(ref, xr, gy)
    # float64 reference: the gradients scattered to their indices in each plane (on the CPU,
    # where scatter_add_ is deterministic)
    exact = torch.zeros(*x.shape[:-2], x.shape[-2] * x.shape[-1], dtype=torch.float64)
    exact.scatter_add_(-1, idx.flatten(-2).cpu(), gy.double().flatten(-2).cpu())
    assert_close_low_precision(gx, exact.view(x.shape), gr, "grad_input")


@pytest.mark.parametrize("ceil", [False, True])
def test_nan_and_inf_semantics(device, cpu_isa, ceil):
    x = torch.randn(2, 3, 7, 7, device=device)
    x[0, 0, 1, 1] = float("nan")
    x[0, 1, 2:5, 2:5] = float("-inf")
    x[1, 2, 0, 0] = float("inf")
    x[1, 2, 4, 3] = float("nan")
    x[1, 2, 4, 4] = float("nan")  # two NaNs in one window: torch keeps the last
    out, idx = FF.max_pool2d(x, 3, 2, 1, ceil_mode=ceil, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, ceil_mode=ceil, return_indices=True)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())
    assert torch.equal(idx, ref_idx)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ties_nan_and_inf_in_two_by_two_windows(device, cpu_isa, dtype):
    # Every order of a tie, a NaN (two in one window: torch keeps the last), +-inf, in 2 x 2
    # windows at stride 2: the first strict maximum wins, any NaN takes over.
    vals = torch.tensor([1.0, 1.0, 2.0, 2.0, float("nan"), float("nan"), float("inf"), float("-inf")], dtype=dtype)
    x = vals[torch.randint(0, len(vals), (3, 4, 10, 34))].to(device)
    out, idx = FF.max_pool2d(x, 2, 2, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())
    assert torch.equal(idx, ref_idx)


# The geometry of a 2 x 2 pool at stride 2, as max_pool2d_backward takes it.
TWO_BY_TWO = ([2, 2], [2, 2], [0, 0], [1, 1], False)


@pytest.mark.parametrize("hw", [(8, 10), (9, 7), (2, 34)])
def test_backward_passes_each_gradient_to_its_tap(device, cpu_isa, hw):
    # Indices each in their own output's 2 x 2 cell (written densely where the CPU has AVX-512),
    # and in some planes an index that is not one of its window's taps: in another cell (the
    # plane's first element, or the first cell's index, shared with that window), before the
    # plane or past it. Those pass nothing; every other gradient goes to its index.
    h, w = hw
    oh, ow = h // 2, w // 2
    rows = torch.arange(oh, device=device)[:, None] * 2 + torch.randint(0, 2, (4, 3, oh, ow), device=device)
    cols = torch.arange(ow, device=device) * 2 + torch.randint(0, 2, (4, 3, oh, ow), device=device)
    idx = rows * w + cols
    idx[1, 2, 0, -1] = 0
    idx[3, 0, -1, -1] = idx[3, 0, 0, 0]
    idx[2, 1, 0, 0] = -1
    idx[0, 0, -1, 0] = h * w
    tap = torch.ones_like(idx, dtype=torch.bool)
    tap[1, 2, 0, -1] = tap[3, 0, -1, -1] = tap[2, 1, 0, 0] = tap[0, 0, -1, 0] = False
    gy = torch.randn(4, 3, oh, ow, device=device)
    gx = ops.max_pool2d_backward(gy, idx, [4, 3, h, w], *TWO_BY_TWO)
    want = torch.zeros(4, 3, h * w, device=device).scatter_add_(-1, idx.where(tap, 0).flatten(-2), gy.where(tap, 0).flatten(-2))
    assert torch.equal(gx, want.view(4, 3, h, w))


def test_backward_of_overlapping_windows_sums_in_output_order(device):
    # 3 x 3 windows at stride 1 on a plane of equal values: every window takes its first tap, so
    # most elements receive several gradients, summed in output order (bitwise, as the CPU).
    x = torch.zeros(2, 3, 7, 6, device=device, dtype=torch.float64)
    out, idx = ops.max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], False)
    gy = torch.randn_like(out)
    gx = ops.max_pool2d_backward(gy, idx, list(x.shape), [3, 3], [1, 1], [1, 1], [1, 1], False)
    want = torch.zeros(2, 3, 42, device=device, dtype=torch.float64)
    flat_idx, flat_gy = idx.flatten(-2), gy.flatten(-2)
    for o in range(flat_idx.shape[-1]):  # one output at a time: the order of the sums
        want.scatter_add_(-1, flat_idx[..., o:o + 1], flat_gy[..., o:o + 1])
    assert torch.equal(gx, want.view_as(x))


def test_all_minus_inf_window_takes_torchs_index(device):
    x = torch.full((1, 1, 4, 4), float("-inf"), device=device)
    for args in [(2,), (3, 1, 1), (2, 2, 1, 2)]:
        out, idx = FF.max_pool2d(x, *args, return_indices=True)
        ref, ref_idx = F.max_pool2d(x, *args, return_indices=True)
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


# A dilated window that starts in the padding can step over the whole input: its output is -inf
# and its index (torch's) is none of its taps: past the end of the plane (first case), or the
# next row's first element (second case). Its output depends on no input: it passes no gradient.
# (torch's backward adds it at that index: past the plane, that writes out of bounds.)
EMPTY_WINDOWS = [((1, 1, 1, 1), (1, 2), (1, 2), (0, 1), (1, 2)), ((2, 3, 4, 2), (3, 2), (2, 2), (1, 1), (2, 3))]


@pytest.mark.parametrize("shape,k,s,p,d", EMPTY_WINDOWS)
@pytest.mark.parametrize("api", ["functional", "op"])
def test_window_wholly_in_the_padding_passes_no_gradient(device, shape, k, s, p, d, api):
    x = torch.randn(*shape, device=device, dtype=torch.float64, requires_grad=True)
    pool = (lambda x: FF.max_pool2d(x, k, s, p, d, return_indices=True)) if api == "functional" else (lambda x: ops.max_pool2d(x, k, s, p, d, False))
    out, idx = pool(x)
    ref, ref_idx = F.max_pool2d(x.detach(), k, s, p, d, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    empty = F.max_pool2d(torch.zeros(shape[2:], device=device)[None], k, s, p, d)[0].isneginf()  # no tap inside
    assert empty.any() and out[..., empty].isneginf().all()
    gy = torch.randn_like(out)
    (gx,) = torch.autograd.grad(out, x, gy)
    expected = torch.zeros_like(x).flatten(-2).scatter_add(-1, idx.masked_fill(empty, 0).flatten(-2), gy.masked_fill(empty, 0).flatten(-2))
    assert torch.equal(gx, expected.view_as(x))


def test_indices_work_with_max_unpool2d(device):
    x = torch.randn(2, 3, 8, 8, device=device)
    out, idx = FF.max_pool2d(x, 2, return_indices=True)
    restored = F.max_unpool2d(out, idx, 2, output_size=x.shape[-2:])
    ref_out, ref_idx = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(restored, F.max_unpool2d(ref_out, ref_idx, 2, output_size=x.shape[-2:]))


def test_windows_and_strides_near_int64(device):
    # A 2**62-row window padded by 2**61 is one window over every row (the walk to its first row
    # used to step through the padding one row at a time); a 2**63 - 1 stride in ceil mode gives
    # one window. Both as torch gives them with small numbers.
    x = torch.randn(2, 3, 7, 5, device=device)
    out, idx = FF.max_pool2d(x, (2**62, 2), (2**62, 1), (2**61, 0), return_indices=True)
    ref, ref_idx = F.max_pool2d(x, (7, 2), (7, 1), return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
    out, idx = FF.max_pool2d(x, 3, 2**63 - 1, 1, ceil_mode=True, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 100, 1, ceil_mode=True, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


@pytest.mark.parametrize("shape,k,s,p,d,ceil", [((2, 2, 6, 7), 3, 2, 1, 1, True), ((1, 3, 5, 5), 2, 1, 0, 2, False), ((2, 4, 4), 2, None, 1, 1, False)])
def test_gradcheck(device, shape, k, s, p, d, ceil):
    # Random inputs have no ties, so the max is differentiable at every point gradcheck probes.
    x = torch.randn(*shape, device=device, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: FF.max_pool2d(x, k, s, p, d, ceil_mode=ceil), (x,))
    assert torch.autograd.gradgradcheck(lambda x: FF.max_pool2d(x, k, s, p, d, ceil_mode=ceil), (x,))


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_non_contiguous_inputs(device, layout):
    x = torch.randn(2, 6, 9, 9, device=device)
    x = x.to(memory_format=torch.channels_last) if layout == "channels_last" else x[:, ::2, 1:, :]
    out, idx = FF.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx)


def test_opcheck(device):
    x = torch.randn(2, 3, 7, 8, device=device, requires_grad=True)
    torch.library.opcheck(ops.max_pool2d.default, (x, [3, 3], [2, 2], [1, 1], [1, 1], True))
    xc = x.detach().to(memory_format=torch.channels_last)
    torch.library.opcheck(ops.max_pool2d.default, (xc, [2, 2], [2, 2], [0, 0], [1, 1], False))
    out, idx = ops.max_pool2d(x.detach(), [3, 3], [2, 2], [1, 1], [1, 1], True)
    geometry = ([3, 3], [2, 2], [1, 1], [1, 1], True)
    torch.library.opcheck(ops.max_pool2d_backward.default, (torch.randn_like(out), idx, list(x.shape), *geometry))
    cl = lambda t: t.to(memory_format=torch.channels_last)  # noqa: E731
    torch.library.opcheck(ops.max_pool2d.default, (cl(x.detach()).requires_grad_(), [3, 3], [2, 2], [1, 1], [1, 1], True))
    torch.library.opcheck(ops.max_pool2d_backward.default, (cl(torch.randn_like(out)), cl(idx), list(x.shape), *geometry))


def test_module_matches_torch(device):
    x = torch.randn(2, 3, 9, 9, device=device)
    for kwargs in [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), dict(kernel_size=2, return_indices=True)]:
        fast, ref = fastlayers.nn.MaxPool2d(**kwargs), torch.nn.MaxPool2d(**kwargs)
        got, want = fast(x), ref(x)
        if kwargs.get("return_indices"):
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        else:
            assert torch.equal(got, want)
        assert repr(fast).endswith(repr(ref)[len("MaxPool2d"):])


X = torch.randn(2, 3, 8, 8)
ERRORS = [
    ("input 2-D", lambda: FF.max_pool2d(torch.randn(8, 8), 2), ["fastlayers.max_pool2d", "3-D (C, H, W) or 4-D", "2-D"]),
    ("padding over half the kernel", lambda: FF.max_pool2d(X, 3, padding=2), ["padding", "at most half of kernel_size", "[2, 2]", "[3, 3]"]),
    ("kernel zero", lambda: FF.max_pool2d(X, 0), ["kernel_size", "positive"]),
    ("stride zero", lambda: FF.max_pool2d(X, 2, stride=0), ["stride", "positive"]),
    ("dilation zero", lambda: FF.max_pool2d(X, 2, dilation=(1, 0)), ["dilation", "positive", "[1, 0]"]),
    ("negative padding", lambda: FF.max_pool2d(X, 2, padding=-1), ["padding", "non-negative"]),
    ("output too small", lambda: FF.max_pool2d(torch.randn(1, 1, 2, 9), 3), ["output of 0 x 3", "can't be empty"]),
    ("empty plane", lambda: FF.max_pool2d(torch.randn(1, 0, 4, 4), 2), ["non-zero C, H and W"]),
    ("integer input", lambda: FF.max_pool2d(X.long(), 2), ["input", "torch.int64"]),
    ("grad_output not the pool's output", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.int64), [1, 1, 4, 4], *TWO_BY_TWO), ["max_pool2d_backward", "grad_output", "[1, 1, 2, 2]", "[1, 1, 3, 3]"]),
    ("indices not grad_output's size", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 1, dtype=torch.int64), [1, 1, 4, 4], *TWO_BY_TWO), ["max_pool2d_backward", "indices", "[1, 1, 2, 2]", "[1, 1, 2, 1]"]),
    ("backward geometry", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, 4, 4], [2, 2], [0, 2], [0, 0], [1, 1], False), ["max_pool2d_backward", "stride", "positive"]),
    # dilation 2**62 wrapped the window's extent around to 1
    ("window overflows", lambda: FF.max_pool2d(X, 5, dilation=(1, 2**62)), ["dilated window", "overflows int64"]),
    ("window overflows, fused", lambda: FF.conv2d_relu_max_pool2d(X, torch.randn(2, 3, 1, 1), pool_kernel_size=3, pool_dilation=2**62), ["conv2d_relu_max_pool2d", "overflows int64"]),
    ("negative input_size", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, -4, 4], *TWO_BY_TWO), ["max_pool2d_backward", "input_size", "non-negative"]),
    ("input_size past int64", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, 2**62, 4], *TWO_BY_TWO), ["max_pool2d_backward", "input_size", "int64"]),
    ("indices dtype", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32), [1, 1, 4, 4], *TWO_BY_TWO), ["indices", "torch.int64", "torch.int32"]),
]


@pytest.mark.parametrize("what,call,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, words):
    assert_raises_with(call, words)


def test_wrong_argument_types_raise_type_error():
    assert_raises_with(lambda: FF.max_pool2d(None, 2), ["fastlayers.max_pool2d", "input", "NoneType"], TypeError)
    assert_raises_with(lambda: FF.max_pool2d(X, 2.5), ["fastlayers.max_pool2d", "kernel_size", "2.5"], TypeError)
