"""conv2d and conv2d_relu: forward and every gradient against torch (float32 against a float64
reference) over a grid of strides, paddings ('same'/'valid' too), dilations, groups, odd sizes,
batch 1, unbatched and empty batches (float16 and bfloat16 on CUDA against torch's own error);
gradcheck in float64; opcheck; layouts; the Conv2d module's padding modes; and the errors bad
input must raise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers
import fastlayers.functional as FF
from conftest import LOW_PRECISION, assert_close, assert_close_low_precision, assert_raises_with, needs_cuda, run_with_grads

ops = torch.ops.fastlayers

# (input shape, out_channels, kernel, keyword arguments)
CASES = [
    ((2, 3, 9, 11), 5, (3, 3), dict()),
    ((2, 3, 9, 11), 4, (3, 3), dict(stride=2, padding=1)),
    ((1, 4, 10, 7), 6, (3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))),
    ((2, 3, 8, 8), 4, (5, 5), dict(padding=2, dilation=2)),
    ((2, 4, 7, 9), 6, (3, 3), dict(padding="same")),
    ((2, 4, 7, 9), 6, (4, 2), dict(padding="same")),  # even kernel: extra padding bottom/right
    ((2, 2, 9, 9), 3, (4, 4), dict(padding="same", dilation=(2, 1))),
    ((2, 3, 9, 9), 4, (3, 3), dict(padding="valid")),
    ((2, 6, 8, 8), 9, (3, 3), dict(groups=3, padding=1)),
    ((2, 8, 7, 7), 8, (3, 3), dict(groups=8, stride=2)),  # depthwise
    ((3, 5, 6, 6), 7, (1, 1), dict()),  # pointwise: the GEMM reads the input directly
    ((2, 5, 7, 7), 3, (1, 1), dict(stride=2)),
    ((1, 3, 5, 5), 2, (5, 5), dict()),  # kernel as large as the input: 1 x 1 output
    ((0, 3, 8, 8), 4, (3, 3), dict(padding=1)),  # empty batch
    ((3, 6, 6), 4, (3, 3), dict(padding=1)),  # unbatched
    ((64, 3, 24, 24), 32, (3, 3), dict(padding=1)),  # the models' shapes
    ((8, 32, 14, 14), 64, (5, 5), dict(padding=2)),
    ((8, 6, 14, 14), 16, (5, 5), dict()),
    # grouped, dilated, uneven 'same' padding: grad_input as a conv with flipped weights
    ((2, 32, 9, 8), 6, (3, 2), dict(groups=2, padding="same", dilation=(2, 1))),
    ((1, 16, 5, 6), 4, (3, 3), dict(padding=3)),  # padding past the kernel: the col2im path
]
IDS = [f"{'x'.join(map(str, c[0]))}-oc{c[1]}-k{c[2][0]}{c[2][1]}-{c[3]}" for c in CASES]


def make(shape, oc, kernel, groups, dtype, device, bias=True):
    c = shape[-3]
    x = torch.randn(*shape, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(oc, c // groups, *kernel, dtype=dtype, device=device, requires_grad=True)
    b = torch.randn(oc, dtype=dtype, device=device, requires_grad=True) if bias else None
    return x, w, b


@pytest.mark.parametrize("shape,oc,kernel,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_torch(device, cpu_isa, shape, oc, kernel, kwargs, relu, bias, dtype):
    x, w, b = make(shape, oc, kernel, kwargs.get("groups", 1), dtype, device, bias)
    fast = FF.conv2d_relu if relu else FF.conv2d
    out, grads, gy = run_with_grads(lambda *a: fast(*a, **kwargs), [x, w, b])

    def ref(*a):
        y = F.conv2d(*a, **kwargs)
        return torch.relu(y) if relu else y

    refs = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(ref, refs, gy.double())
    k_terms = w[0].numel()
    per_channel = gy[..., 0, :, :].numel() // max(gy.shape[-3], 1) if gy.numel() else 0
    assert out.dtype == dtype
    assert_close(out, ref_out, terms=k_terms, what="output")
    terms = (oc * kernel[0] * kernel[1], per_channel * kernel[0] * kernel[1], per_channel)
    for name, g, r, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads, terms):
        assert_close(g, r, terms=t, what=name)


@needs_cuda
@pytest.mark.parametrize("shape,oc,kernel,kwargs", CASES, ids=IDS)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_on_cuda(shape, oc, kernel, kwargs, relu, dtype):
    x, w, b = make(shape, oc, kernel, kwargs.get("groups", 1), dtype, "cuda")
    fast = FF.conv2d_relu if relu else FF.conv2d

    def ref(*a):
        y = F.conv2d(*a, **kwargs)
        return torch.relu(y) if relu else y

    out, grads, gy = run_with_grads(lambda *a: fast(*a, **kwargs), [x, w, b])
    same = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    torch_out, torch_grads, _ = run_with_grads(ref, same, gy)
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(ref, exact, gy.double())
    assert out.dtype == dtype
    assert_close_low_precision(out, ref_out, torch_out, "output")
    for name, g, t, r in zip(("grad_input", "grad_weight", "grad_bias"), grads, torch_grads, ref_grads):
        assert_close_low_precision(g, r, t, name)


# Layers of more than 8 input channels a group (the GEMM in every pass), and a thin one (its
# forward and weight gradient in the thin kernels, which stay in float32).
TF32_CASES = [
    ((8, 32, 14, 14), 64, (5, 5), dict(padding=2)),
    ((2, 32, 9, 8), 6, (3, 2), dict(groups=2, padding="same", dilation=(2, 1))),
    ((1, 16, 5, 6), 4, (3, 3), dict(padding=3, stride=2)),
    ((16, 3, 24, 24), 32, (3, 3), dict(padding=1)),
]


@needs_cuda
@pytest.mark.parametrize("shape,oc,kernel,kwargs", TF32_CASES)
def test_tf32_on_cuda_where_torch_allows_it(shape, oc, kernel, kwargs):
    """Under torch.backends.cudnn.allow_tf32, float32 conv2d may round its products to TF32 as
    torch's cuDNN convolutions do: each pass within TF32's error of the float64 result (every term
    off by at most 2^-10 of its magnitude, bounded by the same conv of the magnitudes), and the
    output different from the IEEE one where the GEMM runs on tensor cores (compute capability
    8.0+)."""
    x, w, b = make(shape, oc, kernel, kwargs.get("groups", 1), torch.float32, "cuda")
    with torch.no_grad():
        ieee_out = FF.conv2d(x, w, b, **kwargs)
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        out, grads, gy = run_with_grads(lambda *a: FF.conv2d(*a, **kwargs), [x, w, b])
    finally:
        torch.backends.cudnn.allow_tf32 = previous
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(lambda *a: F.conv2d(*a, **kwargs), exact, gy.double())
    # The sums of the terms' magnitudes: the same conv, and its gradients, of |x|, |w| and |gy|.
    magnitudes = [t.detach().double().abs().requires_grad_() for t in (x, w)]
    scale_out, scale_grads, _ = run_with_grads(lambda *a: F.conv2d(*a, **kwargs), magnitudes,
                                               gy.double().abs())
    bias_scale = b.detach().double().abs().view(-1, 1, 1)
    for name, got, want, scale in [("output", out, ref_out, scale_out + bias_scale),
                                   ("grad_input", grads[0], ref_grads[0], scale_grads[0]),
                                   ("grad_weight", grads[1], ref_grads[1], scale_grads[1]),
                                   ("grad_bias", grads[2], ref_grads[2], gy.double().abs().sum((0, 2, 3)))]:
        err = (got.double() - want).abs()
        bound = 2.0 ** -10 * scale + 1e-6 * (scale + want.abs())
        assert (err <= bound).all(), f"{name}: largest error {err.max().item():.3g}, bound there {bound.flatten()[err.argmax()].item():.3g}"
    thin = shape[-3] // kwargs.get("groups", 1) <= 8
    if not thin and torch.cuda.get_device_capability()[0] >= 8:
        assert not torch.equal(out.detach(), ieee_out), "TF32 allowed, but the output is the IEEE float32 one"


GRADCHECK = [
    ((2, 2, 5, 6), 3, (3, 3), dict(stride=2, padding=1)),
    ((1, 2, 6, 5), 2, (2, 3), dict(padding="same", dilation=2)),
    ((2, 4, 5, 5), 4, (3, 3), dict(groups=2, padding=(0, 1))),
    ((2, 3, 4, 4), 2, (1, 1), dict()),
    ((0, 2, 4, 4), 3, (3, 3), dict()),
    ((2, 4, 4), 3, (3, 3), dict(padding=1)),
]


@pytest.mark.parametrize("shape,oc,kernel,kwargs", GRADCHECK)
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck(device, cpu_isa, shape, oc, kernel, kwargs, relu):
    x, w, b = make(shape, oc, kernel, kwargs.get("groups", 1), torch.float64, device)
    fast = FF.conv2d_relu if relu else FF.conv2d
    assert torch.autograd.gradcheck(lambda x, w, b: fast(x, w, b, **kwargs), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: fast(x, w, None, **kwargs), (x, w))
    # Double backward: the backward ops are differentiable too.
    assert torch.autograd.gradgradcheck(lambda x, w, b: fast(x, w, b, **kwargs), (x, w, b))


@pytest.mark.parametrize("in_channels", [3, 16])
@pytest.mark.parametrize("stride", [1, 2])  # grad_input as a conv with flipped weights, and through col2im
def test_relu_mask_passes_gradient_where_output_is_nan(device, cpu_isa, in_channels, stride):
    """torch's threshold_backward drops the gradient only where the output is <= 0: a NaN
    output passes it, in grad_input, grad_weight and grad_bias alike."""
    x = torch.randn(2, in_channels, 7, 8, device=device, dtype=torch.float64)
    x[1, 0, 3, 4] = float("nan")
    w = torch.randn(5, in_channels, 3, 3, device=device, dtype=torch.float64)
    b = torch.randn(5, device=device, dtype=torch.float64)
    gy = torch.randn_like(F.conv2d(x, w, b, stride=stride, padding=1))
    fast = [t.clone().requires_grad_() for t in (x, w, b)]
    ref = [t.clone().requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(FF.conv2d_relu(*fast, stride=stride, padding=1), fast, gy)
    want = torch.autograd.grad(torch.relu(F.conv2d(*ref, stride=stride, padding=1)), ref, gy)
    for name, g, r in zip(("input", "weight", "bias"), got, want):
        torch.testing.assert_close(g, r, equal_nan=True, msg=lambda m: f"{name}: {m}")


# 3x3 or 5x5, stride 1, no dilation, at least 16 channels in and out per group: the CPU's
# Winograd path (forward, and grad_input as a conv with flipped weights), with odd output sizes,
# asymmetric padding, groups, wide rows and a batch spread over threads.
WINOGRAD_CASES = [
    ((2, 16, 9, 11), 16, 5, dict(padding=2)),
    ((1, 20, 7, 6), 17, 5, dict(padding=(1, 3))),
    ((2, 32, 6, 7), 32, 5, dict(groups=2)),
    ((5, 16, 14, 14), 24, 5, dict(padding=4)),
    ((2, 16, 9, 11), 16, 3, dict(padding=1)),
    ((1, 20, 7, 6), 17, 3, dict(padding=(0, 2))),
    ((2, 32, 5, 8), 32, 3, dict(groups=2)),
    ((5, 16, 12, 12), 24, 3, dict(padding=3)),
    # rows wider than two vectors of every ISA, split into even and odd columns in pieces
    ((1, 16, 4, 37), 16, 3, dict(padding=(2, 1))),
    ((1, 16, 5, 70), 17, 5, dict(padding=(0, 3))),
]


@pytest.mark.parametrize("shape,oc,k,kwargs", WINOGRAD_CASES, ids=[f"{c[0]}-{c[2]}x{c[2]}" for c in WINOGRAD_CASES])
@pytest.mark.parametrize("winograd", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_winograd_and_direct_paths_match_torch(cpu_isa, shape, oc, k, kwargs, winograd, relu, dtype):
    x, w, b = make(shape, oc, (k, k), kwargs.get("groups", 1), dtype, "cpu")
    fast = FF.conv2d_relu if relu else FF.conv2d
    old = fastlayers.cpu_winograd()
    fastlayers.set_cpu_winograd(winograd)
    try:
        out, grads, gy = run_with_grads(lambda *a: fast(*a, **kwargs), [x, w, b])
    finally:
        fastlayers.set_cpu_winograd(old)

    def ref(*a):
        y = F.conv2d(*a, **kwargs)
        return torch.relu(y) if relu else y

    refs = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(ref, refs, gy.double())
    per_channel = gy[..., 0, :, :].numel()
    assert_close(out, ref_out, terms=w[0].numel(), what="output")
    terms = (oc * k * k, per_channel * k * k, per_channel)
    for name, g, r, t in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads, terms):
        assert_close(g, r, terms=t, what=name)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("k", [3, 5])
def test_winograd_shape_with_a_non_finite_value_matches_torch(cpu_isa, value, where, k):
    """Winograd would spread an Inf or a NaN over whole 2 x 2 output tiles (0 * Inf is NaN); the
    direct path confines it to the windows that hold it, as torch does."""
    x, w, pad = torch.randn(2, 16, 8, 8), torch.randn(16, 16, k, k), k // 2
    if where == "input":
        x[1, 3, 2, 5] = value
    else:
        w[1, 3, 2, k - 1] = value
    ref = F.conv2d(x.double(), w.double(), padding=pad)
    torch.testing.assert_close(FF.conv2d(x, w, padding=pad).double(), ref, rtol=1e-5, atol=1e-3, equal_nan=True)
    if where == "weight":
        return
    gy = torch.randn(2, 16, 8, 8)
    gy[0, 2, 4, 4] = value
    gx = torch.ops.fastlayers.conv2d_grad_input(gy, w, list(x.shape), [1, 1], [pad] * 4, [1, 1], 1, None)
    gr = torch.ops.aten.convolution_backward(gy.double(), x.double(), w.double(), None, [1, 1], [pad] * 2, [1, 1],
                                             False, [0, 0], 1, [True, False, False])[0]
    torch.testing.assert_close(gx.double(), gr, rtol=1e-5, atol=1e-3, equal_nan=True)


def test_winograd_switch():
    old = fastlayers.cpu_winograd()
    try:
        fastlayers.set_cpu_winograd(False)
        assert fastlayers.cpu_winograd() is False
        fastlayers.set_cpu_winograd(True)
        assert fastlayers.cpu_winograd() is True
        with pytest.raises(TypeError, match="expected a bool"):
            fastlayers.set_cpu_winograd(1)
    finally:
        fastlayers.set_cpu_winograd(old)


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_non_contiguous_inputs(device, layout):
    x = torch.randn(2, 4, 9, 10, device=device)
    w = torch.randn(6, 4, 3, 3, device=device)
    if layout == "channels_last":
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        x = torch.randn(2, 8, 9, 20, device=device)[:, ::2, :, ::2]
    else:
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    x.requires_grad_()
    out, (gx,), gy = run_with_grads(lambda x: FF.conv2d_relu(x, w, None, padding=1), [x])
    xr = x.detach().double().requires_grad_()
    ref, (gr,), _ = run_with_grads(lambda x: torch.relu(F.conv2d(x, w.double(), None, padding=1)), [xr], gy.double())
    assert_close(out, ref, terms=36)
    assert_close(gx, gr, terms=54)


def test_thread_counts_agree(device, cpu_isa):
    x, w, b = torch.randn(5, 8, 12, 12, device=device), torch.randn(16, 8, 3, 3, device=device), torch.randn(16, device=device)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            assert_close(FF.conv2d(x, w, b, padding=1), ref, terms=72, what=f"{threads} threads")
            xr = x.clone().requires_grad_()
            wr = w.clone().requires_grad_()
            FF.conv2d(xr, wr, b, padding=1).square().sum().backward()
            xt, wt = x.double().requires_grad_(), w.double().requires_grad_()
            F.conv2d(xt, wt, b.double(), padding=1).square().sum().backward()
            assert_close(wr.grad, wt.grad, terms=5 * 144, what=f"grad_weight, {threads} threads")
            assert_close(xr.grad, xt.grad, terms=144, what=f"grad_input, {threads} threads")
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("channels", [2, 16])
@pytest.mark.parametrize("stride", [1, 2])  # the flipped-weight conv grad_input, and col2im
def test_relu_backward_mask_passes_nan_outputs(device, cpu_isa, channels, stride):
    # A NaN output of conv2d_relu passes its gradient on, as torch.relu's threshold_backward does
    # (it stops the gradient only where the output is <= 0): NaN where the mask keeps it.
    x = torch.randn(2, channels, 6, 6, device=device, dtype=torch.float64)
    x[0, 0, 2, 3] = float("nan")
    w = torch.randn(3, channels, 3, 3, device=device, dtype=torch.float64)
    b = torch.randn(3, device=device, dtype=torch.float64)
    gy = torch.randn_like(F.conv2d(x, w, b, stride=stride, padding=1))
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(FF.conv2d_relu(*leaves, stride=stride, padding=1), leaves, gy)
    refs = [t.clone().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(torch.relu(F.conv2d(*refs, stride=stride, padding=1)), refs, gy)
    for name, g, r in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        assert torch.equal(g.isnan(), r.isnan()), name
        torch.testing.assert_close(g, r, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
@pytest.mark.parametrize("pixel", [(0, 0), (2, 6), (6, 6)])  # corner, right edge, bottom corner
def test_grad_weight_with_a_non_finite_input_matches_torch(device, cpu_isa, value, pixel):
    # Stride-1 grad_weight runs on rows padded to a common pitch, whose padding columns meet real
    # pixels; an image holding an Inf or a NaN must not turn those 0 * Inf products into NaNs
    # that torch does not have. Only the weights that really see the pixel become non-finite.
    # 11 images: the kernel sums a few images at a time; the Inf or NaN is in one of a later group.
    x = torch.randn(11, 3, 7, 7, device=device, dtype=torch.float64)
    x[9, 2, pixel[0], pixel[1]] = value
    w = torch.randn(4, 3, 3, 3, device=device, dtype=torch.float64)
    gy = torch.randn(11, 4, 5, 5, device=device, dtype=torch.float64)
    got = ops.conv2d_grad_weight(gy, x, list(w.shape), [1, 1], [0, 0, 0, 0], [1, 1], 1, None)
    want = torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]
    assert torch.equal(got.isfinite(), want.isfinite()) and not got.isfinite().all()
    torch.testing.assert_close(got, want, equal_nan=True)


def test_opcheck(device):
    x, w, b = make((2, 4, 6, 7), 6, (3, 3), 2, torch.float32, device)
    args = ([1, 2], [1, 0, 1, 1], [1, 1], 2)
    for op in (ops.conv2d, ops.conv2d_relu):
        torch.library.opcheck(op.default, (x, w, b, *args))
        torch.library.opcheck(op.default, (x.detach().to(memory_format=torch.channels_last), w.detach(), None, *args))
    y = ops.conv2d_relu(x, w, b, *args).detach()
    gy = torch.randn_like(y)
    torch.library.opcheck(ops.conv2d_grad_input.default, (gy, w.detach(), list(x.shape), *args, y))
    torch.library.opcheck(ops.conv2d_grad_weight.default, (gy, x.detach(), list(w.shape), *args, None))
    torch.library.opcheck(ops.bias_grad.default, (gy, y, 1))
    # channels_last everywhere, with gradients through the registered autograd.
    cl = lambda t: t.detach().to(memory_format=torch.channels_last)  # noqa: E731
    xc, wc = cl(x).requires_grad_(), cl(w).requires_grad_()
    torch.library.opcheck(ops.conv2d_relu.default, (xc, wc, b, *args))
    torch.library.opcheck(ops.conv2d_grad_input.default, (cl(gy), wc.detach(), list(x.shape), *args, cl(y)))
    torch.library.opcheck(ops.conv2d_grad_weight.default, (cl(gy), xc.detach(), list(w.shape), *args, cl(y)))
    torch.library.opcheck(ops.bias_grad.default, (cl(gy), None, 1))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same"])
def test_module_padding_modes_match_torch(device, padding_mode, padding):
    ref = torch.nn.Conv2d(3, 5, 3, padding=padding, padding_mode=padding_mode).to(device)
    fast = fastlayers.nn.Conv2d(3, 5, 3, padding=padding, padding_mode=padding_mode).to(device)
    fused = fastlayers.nn.Conv2dReLU(3, 5, 3, padding=padding, padding_mode=padding_mode).to(device)
    fast.load_state_dict(ref.state_dict())
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 7, 8, device=device)
    assert_close(fast(x), ref(x).double(), terms=27)
    assert_close(fused(x), torch.relu(ref(x)).double(), terms=27)


def test_module_is_a_torch_conv2d_with_its_state_dict(device):
    torch.manual_seed(1)
    ref = torch.nn.Conv2d(4, 6, (3, 5), stride=2, groups=2, bias=True)
    torch.manual_seed(1)
    fast = fastlayers.nn.Conv2d(4, 6, (3, 5), stride=2, groups=2, bias=True)
    assert isinstance(fast, torch.nn.Conv2d)
    assert list(fast.state_dict()) == list(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, fast.state_dict()[k]), k  # same initialisation from the same seed
    back = torch.nn.Conv2d(4, 6, (3, 5), stride=2, groups=2)
    back.load_state_dict(fast.state_dict())


TYPE_ERRORS = [
    ("input a list", lambda: FF.conv2d([[1.0]], W), ["fastlayers.conv2d", "input", "Tensor", "list"]),
    ("weight None", lambda: FF.conv2d_relu(X, None), ["fastlayers.conv2d_relu", "weight", "NoneType"]),
    ("stride a float", lambda: FF.conv2d(X, W, stride=1.5), ["fastlayers.conv2d", "stride", "1.5"]),
    ("dilation a string", lambda: FF.conv2d(X, W, dilation="2"), ["dilation", "'2'"]),
]


@pytest.mark.parametrize("what,call,words", TYPE_ERRORS, ids=[e[0] for e in TYPE_ERRORS])
def test_wrong_argument_types_raise_type_error(what, call, words):
    assert_raises_with(call, words, TypeError)


def test_undefined_weight_through_the_op_is_named():
    assert_raises_with(lambda: ops.conv2d(X, None, None, [1, 1], [0] * 4, [1, 1], 1), ["fastlayers.conv2d", "weight", "None"])


def test_empty_planes_in_an_empty_batch_or_no_channels(device):
    # torch accepts empty planes when the batch or the channels are empty too; the padding makes
    # the output plane. With no input channels the convolution is its bias (torch returns a
    # tensor of zero channels there, whatever the weight; fastlayers returns the bias).
    w, b = torch.randn(6, 4, 3, 3, device=device), torch.randn(6, device=device)
    out = FF.conv2d(torch.randn(0, 4, 0, 8, device=device), w, b, padding=2)
    assert out.shape == F.conv2d(torch.randn(0, 4, 0, 8, device=device), w, b, padding=2).shape == (0, 6, 2, 10)
    out = FF.conv2d(torch.randn(3, 0, 0, 5, device=device), torch.randn(6, 0, 3, 3, device=device), b, padding=2)
    assert torch.equal(out, b.view(1, 6, 1, 1).expand(3, 6, 2, 7))


def test_same_padding_with_stride_is_refused():
    with pytest.raises(RuntimeError, match="padding='same' is not supported for strided convolutions"):
        FF.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        fastlayers.nn.Conv2d(2, 3, 3, stride=2, padding="same")  # as torch.nn.Conv2d


X, W = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
ERRORS = [
    ("input 2-D", lambda: FF.conv2d(torch.randn(4, 8), W), ["fastlayers.conv2d", "input", "3-D (C, H, W) or 4-D", "2-D"]),
    ("input 5-D via op", lambda: ops.conv2d(torch.randn(1, 2, 4, 8, 8), W, None, [1, 1], [0] * 4, [1, 1], 1), ["input", "4-D", "5-D"]),
    ("weight 3-D", lambda: FF.conv2d(X, torch.randn(6, 4, 3)), ["weight", "4-D", "3-D"]),
    ("weight in_channels", lambda: FF.conv2d(X, torch.randn(6, 3, 3, 3)), ["weight.size(1)", "in_channels / groups = 4 / 1 = 4", "[6, 3, 3, 3]"]),
    ("channels not divisible", lambda: FF.conv2d(X, torch.randn(6, 1, 3, 3), groups=3), ["in_channels (4)", "divisible by groups (3)"]),
    ("out_channels not divisible", lambda: FF.conv2d(X, torch.randn(5, 2, 3, 3), groups=2), ["out_channels", "5", "divisible by groups (2)"]),
    ("groups zero", lambda: FF.conv2d(X, W, groups=0), ["groups", "positive", "groups=0"]),
    ("kernel too large", lambda: FF.conv2d(X, torch.randn(6, 4, 11, 3), padding=1), ["kernel (11 x 3)", "padded input (10 x 10)"]),
    ("dilated kernel too large", lambda: FF.conv2d(X, W, dilation=5), ["kernel (11 x 11)", "(8 x 8)"]),
    ("stride zero", lambda: FF.conv2d(X, W, stride=(0, 1)), ["stride", "positive", "[0, 1]"]),
    ("stride negative", lambda: FF.conv2d_relu(X, W, stride=-1), ["fastlayers.conv2d_relu", "stride", "positive"]),
    ("dilation zero", lambda: FF.conv2d(X, W, dilation=0), ["dilation", "positive"]),
    ("padding negative", lambda: FF.conv2d(X, W, padding=-1), ["padding", "non-negative"]),
    ("padding string", lambda: FF.conv2d(X, W, padding="full"), ["padding", "'full'"]),
    ("dtype mismatch", lambda: FF.conv2d(X, W.double()), ["weight", "same dtype as input", "torch.float64"]),
    ("bias dtype", lambda: FF.conv2d(X, W, torch.randn(6, dtype=torch.float64)), ["bias", "torch.float64"]),
    ("bias shape", lambda: FF.conv2d(X, W, torch.randn(5)), ["bias", "[6]", "[5]"]),
    ("integer input", lambda: FF.conv2d(X.long(), W.long()), ["input", "torch.float32 or torch.float64", "torch.int64"]),
    ("bool input", lambda: FF.conv2d(X.bool(), W.bool()), ["torch.bool"]),
    ("device mismatch", lambda: FF.conv2d(X, W.to("meta")), ["weight", "same device as input", "meta"]),
    ("grad_output shape", lambda: ops.conv2d_grad_input(torch.randn(2, 6, 5, 5), W, [2, 4, 8, 8], [1, 1], [0] * 4, [1, 1], 1, None), ["conv2d_grad_input", "grad_output", "[2, 6, 6, 6]", "[2, 6, 5, 5]"]),
    ("padding list length", lambda: ops.conv2d(X, W, None, [1, 1], [1, 1], [1, 1], 1), ["padding", "4 values"]),
    # sizes whose arithmetic int64 cannot hold (dilation 2**62 wrapped the kernel's extent to 1)
    ("dilation overflows", lambda: FF.conv2d(X, W, dilation=2**62), ["dilated kernel height", "overflows int64"]),
    ("padding overflows", lambda: FF.conv2d(X, W, padding=(1, 2**62)), ["padded width", "overflows int64"]),
    ("grad_weight dilation overflows", lambda: ops.conv2d_grad_weight(torch.randn(2, 6, 6, 6), X, [6, 4, 3, 3], [1, 1], [0] * 4, [1, 2**62], 1, None), ["conv2d_grad_weight", "overflows int64"]),
    # refused by torch too
    ("no out_channels", lambda: FF.conv2d(X, torch.randn(0, 4, 3, 3)), ["out_channels (weight.size(0)) to be positive", "[0, 4, 3, 3]"]),
    ("empty planes", lambda: FF.conv2d(torch.randn(2, 4, 0, 8), W, padding=1), ["non-empty planes", "[2, 4, 0, 8]"]),
    ("empty planes, conv2d_relu", lambda: FF.conv2d_relu(torch.randn(1, 4, 8, 0), W, padding=1), ["fastlayers.conv2d_relu", "non-empty planes"]),
]


@pytest.mark.parametrize("what,call,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, words):
    assert_raises_with(call, words)
