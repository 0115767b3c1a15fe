"""conv2d_relu_max_pool2d: the fused conv -> ReLU -> max-pool against torch's three ops (float32
against a float64 reference; float16 and bfloat16 on CUDA against torch's own error), its indices
against torch's, every gradient, gradcheck in float64, opcheck, the module, and the errors bad
input must raise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers
import fastlayers.functional as FF
from conftest import LOW_PRECISION, assert_close, assert_close_low_precision, assert_raises_with, needs_cuda, run_with_grads

ops = torch.ops.fastlayers

# (input shape, out_channels, kernel, conv keyword arguments, pool keyword arguments)
CASES = [
    ((2, 3, 9, 11), 5, (3, 3), dict(padding=1), dict(pool_kernel_size=2)),
    ((2, 4, 10, 9), 6, (3, 2), dict(stride=(2, 1), dilation=(1, 2)), dict(pool_kernel_size=3, pool_stride=2, ceil_mode=True)),
    ((1, 6, 12, 12), 7, (5, 5), dict(padding=2, groups=1), dict(pool_kernel_size=3, pool_stride=1, pool_padding=1)),
    ((2, 32, 8, 8), 16, (3, 3), dict(padding="same", groups=2), dict(pool_kernel_size=(2, 3), pool_dilation=(1, 2))),
    ((0, 3, 8, 8), 4, (3, 3), dict(padding=1), dict(pool_kernel_size=2)),  # empty batch
    ((3, 8, 8), 4, (3, 3), dict(padding=1), dict(pool_kernel_size=2)),  # unbatched
    # few taps and many channels: the weight gradient is summed over the windows' maxima alone
    # (conv2d_grad_weight_pooled), here with strides, dilation, overlapping windows and groups
    ((2, 2, 11, 10), 32, (3, 3), dict(stride=(2, 1), dilation=(1, 2), padding=1), dict(pool_kernel_size=3, pool_stride=2, ceil_mode=True)),
    ((2, 4, 9, 9), 32, (3, 3), dict(padding=1, groups=2), dict(pool_kernel_size=2)),
    # the models' layers
    ((16, 3, 24, 24), 32, (3, 3), dict(padding=1), dict(pool_kernel_size=2)),
    ((8, 32, 12, 12), 64, (3, 3), dict(padding=1), dict(pool_kernel_size=2)),
    ((8, 3, 32, 32), 6, (5, 5), dict(), dict(pool_kernel_size=2, pool_stride=2)),
    ((8, 1, 28, 28), 32, (5, 5), dict(padding=2), dict(pool_kernel_size=2, pool_stride=2)),
    # 3x3 and 5x5 with 16 or more channels (and 32 -> 64 3x3 above): the CPU's Winograd forward
    # and pooled grad_input
    ((4, 16, 14, 14), 32, (5, 5), dict(padding=2), dict(pool_kernel_size=2, pool_stride=2)),
    ((2, 16, 9, 11), 16, (5, 5), dict(padding=1), dict(pool_kernel_size=3, pool_stride=2, ceil_mode=True)),
    ((2, 16, 11, 9), 24, (3, 3), dict(padding=(1, 2)), dict(pool_kernel_size=3, pool_stride=2, ceil_mode=True)),
]
IDS = [f"{'x'.join(map(str, c[0]))}-oc{c[1]}-{c[3]}-{c[4]}" for c in CASES]


def torch_reference(x, w, b, conv, pool):
    y = torch.relu(F.conv2d(x, w, b, **conv))
    return F.max_pool2d_with_indices(
        y, pool["pool_kernel_size"], pool.get("pool_stride"), pool.get("pool_padding", 0),
        pool.get("pool_dilation", 1), pool.get("ceil_mode", False))


@pytest.mark.parametrize("shape,oc,kernel,conv,pool", CASES, ids=IDS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_indices_and_grads_match_torch(device, cpu_isa, shape, oc, kernel, conv, pool, bias, dtype):
    groups = conv.get("groups", 1)
    x = torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(oc, shape[-3] // groups, *kernel, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(oc, dtype=dtype, device=device, requires_grad=True) if bias else None
    tensors = [t for t in (x, w, b) if t is not None]

    def fused(*ts):
        return FF.conv2d_relu_max_pool2d(ts[0], ts[1], ts[2] if bias else None, **conv, **pool)

    out, grads, gy = run_with_grads(fused, tensors)
    ref_in = [t.detach().double().requires_grad_() for t in tensors]
    ref, ref_grads, _ = run_with_grads(
        lambda *ts: torch_reference(ts[0], ts[1], ts[2] if bias else None, conv, pool)[0], ref_in, gy.double())
    terms = w[0].numel()
    assert_close(out, ref, terms, "output")
    # Indices: the same window maximum as torch's (compared where the maxima are unambiguous).
    _, indices = FF.conv2d_relu_max_pool2d(x.detach(), w.detach(), None if b is None else b.detach(), **conv, **pool, return_indices=True)
    _, ref_indices = torch_reference(x.detach().double(), w.detach().double(), None if b is None else b.detach().double(), conv, pool)
    if dtype == torch.float64:
        assert torch.equal(indices.cpu(), ref_indices.cpu())
    for name, g, r in zip(["grad_input", "grad_weight", "grad_bias"], grads, ref_grads):
        assert_close(g, r, terms * max(1, out.numel() // max(1, oc)), name)


@needs_cuda
@pytest.mark.parametrize("shape,oc,kernel,conv,pool", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_on_cuda(shape, oc, kernel, conv, pool, dtype):
    # In half precision, rounding makes near-ties in a window pick different maxima in different
    # implementations, which moves whole gradients. So the references pool at fastlayers' own
    # indices (checked to be window maxima by the output comparison) and compare the arithmetic.
    groups = conv.get("groups", 1)
    x = torch.randn(*shape, dtype=dtype, device="cuda", requires_grad=True)
    w = torch.randn(oc, shape[-3] // groups, *kernel, dtype=dtype, device="cuda", requires_grad=True)
    b = torch.randn(oc, dtype=dtype, device="cuda", requires_grad=True)
    out, grads, gy = run_with_grads(lambda *ts: FF.conv2d_relu_max_pool2d(*ts, **conv, **pool), [x, w, b])
    _, idx = FF.conv2d_relu_max_pool2d(x.detach(), w.detach(), b.detach(), **conv, **pool, return_indices=True)

    def pooled_at_indices(x, w, b):
        act = torch.relu(F.conv2d(x, w, b, **conv))
        return act.flatten(-2).gather(-1, idx.flatten(-2)).view(idx.shape)

    same = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    torch_out, torch_grads, _ = run_with_grads(pooled_at_indices, same, gy)
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(pooled_at_indices, exact, gy.double())
    max_ref, _ = torch_reference(*[t.detach().double() for t in (x, w, b)], conv, pool)
    assert_close_low_precision(out, max_ref, torch_out, "output (against the window maxima)")
    for name, g, t, r in zip(["grad_input", "grad_weight", "grad_bias"], grads, torch_grads, ref_grads):
        assert_close_low_precision(g, r, t, name)


@pytest.mark.parametrize("shape,oc,kernel,conv,pool", [CASES[0], CASES[1], CASES[3]], ids=[IDS[0], IDS[1], IDS[3]])
def test_gradcheck(device, cpu_isa, shape, oc, kernel, conv, pool):
    groups = conv.get("groups", 1)
    small = (1, shape[-3], min(shape[-2], 8), min(shape[-1], 8))
    x = torch.randn(*small, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(min(oc, 4 * groups), small[1] // groups, *kernel, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(w.shape[0], dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: FF.conv2d_relu_max_pool2d(x, w, b, **conv, **pool), (x, w, b))
    if x.numel() * w.numel() <= 50_000:  # double backward's numerical Jacobians grow with both
        assert torch.autograd.gradgradcheck(lambda x, w, b: FF.conv2d_relu_max_pool2d(x, w, b, **conv, **pool), (x, w, b))


def test_pool_window_wholly_in_the_padding_passes_no_gradient(device):
    # 1 x 1 activations, a dilated pool window starting in the padding: the output is -inf, its
    # index lies past the plane (as torch's), and nothing depends on the input: zero gradients.
    # (torch's max_pool2d backward writes past the plane there, so the gradient is computed here.)
    x = torch.randn(3, 2, 1, 1, device=device, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 2, 1, 1, device=device, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, device=device, dtype=torch.float64, requires_grad=True)
    pool = dict(pool_kernel_size=(1, 2), pool_stride=(1, 2), pool_padding=(0, 1), pool_dilation=(1, 2))
    out, idx = FF.conv2d_relu_max_pool2d(x, w, b, **pool, return_indices=True)
    ref, ref_idx = torch_reference(x.detach(), w.detach(), b.detach(), {}, pool)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx) and out.isneginf().all()
    for g in torch.autograd.grad(out, (x, w, b), torch.randn_like(out)):
        assert not g.any()


def test_opcheck(device):
    x = torch.randn(2, 4, 9, 8, device=device, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    args = ([1, 1], [1, 1, 0, 1], [1, 1], 2, [2, 2], [2, 2], [0, 0], [1, 1], True)
    torch.library.opcheck(ops.conv2d_relu_max_pool2d, (x, w, b, *args))
    torch.library.opcheck(ops.conv2d_relu_max_pool2d, (x.to(memory_format=torch.channels_last), w, None, *args))
    cl = lambda t: t.detach().to(memory_format=torch.channels_last).requires_grad_()  # noqa: E731
    torch.library.opcheck(ops.conv2d_relu_max_pool2d, (cl(x), cl(w), b, *args))


def test_module_matches_torch_sequence_and_shares_state_dict(device):
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, device=device)
    torch_model = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    fused = fastlayers.nn.Conv2dReLUMaxPool2d(3, 8, 3, padding=1, pool_kernel_size=2, device=device)
    fused.load_state_dict(conv.state_dict())
    assert set(fused.state_dict()) == {"weight", "bias"}
    assert "pool_kernel_size=2" in repr(fused)
    x = torch.randn(4, 3, 10, 10, device=device)
    torch.testing.assert_close(fused(x), torch_model(x), rtol=1e-5, atol=1e-5)
    reflect = fastlayers.nn.Conv2dReLUMaxPool2d(3, 8, 3, padding=1, padding_mode="reflect", pool_kernel_size=2, device=device)
    torch_reflect = torch.nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect", device=device)
    torch_reflect.load_state_dict(reflect.state_dict())
    torch.testing.assert_close(reflect(x), F.max_pool2d(torch.relu(torch_reflect(x)), 2), rtol=1e-5, atol=1e-5)


X, W = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
ERRORS = [
    ("input 2-D", lambda: FF.conv2d_relu_max_pool2d(torch.randn(4, 8), W), ["fastlayers.conv2d_relu_max_pool2d", "3-D (C, H, W) or 4-D", "2-D"]),
    ("weight in_channels", lambda: FF.conv2d_relu_max_pool2d(X, torch.randn(6, 3, 3, 3)), ["conv2d_relu_max_pool2d", "weight.size(1)"]),
    ("pool window too large", lambda: FF.conv2d_relu_max_pool2d(X, W, pool_kernel_size=7), ["conv2d_relu_max_pool2d", "kernel_size"]),
    ("pool stride zero", lambda: FF.conv2d_relu_max_pool2d(X, W, pool_stride=0), ["conv2d_relu_max_pool2d", "stride"]),
    ("pool padding too large", lambda: FF.conv2d_relu_max_pool2d(X, W, pool_kernel_size=2, pool_padding=2), ["conv2d_relu_max_pool2d", "pad"]),
    ("dtype mismatch", lambda: FF.conv2d_relu_max_pool2d(X, W.double()), ["weight", "same dtype as input"]),
    ("integer input", lambda: FF.conv2d_relu_max_pool2d(X.long(), W.long()), ["input", "torch.int64"]),
]


@pytest.mark.parametrize("what,call,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, words):
    assert_raises_with(call, words)
