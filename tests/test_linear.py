"""linear and linear_relu: forward and every gradient against torch (float32 against a float64
reference; float16 and bfloat16 on CUDA against torch's own error), gradcheck in float64, opcheck,
thread counts, and the errors bad input must raise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers
import fastlayers.functional as FF
from conftest import LOW_PRECISION, assert_close, assert_close_low_precision, assert_raises_with, needs_cuda, run_with_grads

ops = torch.ops.fastlayers

# (leading dims of input, in_features, out_features). Odd sizes, a 1-D input, an empty batch,
# in_features = 0, and sizes past every GEMM cache block (MC 128 / KC 256 / NC 512 for float32).
# The GEMM's dot-product form runs few out_features, up to 8 rows (one row in its matrix-vector
# tile, columns split across threads) and a single out_feature (as the transposed product),
# in_features a multiple of the vector width or not.
SHAPES = [
    ((5,), 7, 3),
    ((), 13, 5),
    ((1,), 1, 1),
    ((0,), 6, 4),
    ((3,), 0, 4),
    ((2, 3, 4), 9, 11),
    ((100,), 784, 128),
    ((130,), 300, 600),
    ((64,), 3136, 10),
    ((64,), 84, 10),
    ((130,), 48, 16),
    ((37,), 32, 1),
    ((1000,), 20, 1),
    ((1,), 2000, 700),
    ((6,), 1100, 200),
    ((2, 4), 120, 84),
    ((9,), 120, 84),
    # the window form: a weight of 2^20 elements or more, at least 32 rows; the second case has
    # a last tile of one row
    ((2, 32), 1030, 1024),
    ((33,), 1100, 960),
    # as large, but rows a multiple of 1 KB apart: the blocked form
    ((40,), 1024, 1024),
]


def reference(x, w, b, relu):
    y = F.linear(x, w, b)
    return torch.relu(y) if relu else y


@pytest.mark.parametrize("lead,k,n", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_grads_match_torch(device, cpu_isa, lead, k, n, bias, relu, dtype):
    x = torch.randn(*lead, k, device=device, dtype=dtype, requires_grad=True)
    w = torch.randn(n, k, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(n, device=device, dtype=dtype, requires_grad=True) if bias else None
    fn = FF.linear_relu if relu else FF.linear
    out, grads, gy = run_with_grads(fn, [x, w, b])

    refs = [t.detach().double().requires_grad_() if t is not None else None for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(lambda *a: reference(*a, relu), refs, gy.double())
    assert out.dtype == dtype
    assert_close(out, ref_out, terms=k, what="output")
    rows = x[..., 0].numel() if k else 0
    for name, g, r, terms in zip(("grad_input", "grad_weight", "grad_bias"), grads, ref_grads, (n, rows, rows)):
        assert_close(g, r, terms=terms, what=name)


@needs_cuda
@pytest.mark.parametrize("lead,k,n", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_on_cuda(lead, k, n, relu, dtype):
    x = torch.randn(*lead, k, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(n, k, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(n, device="cuda", dtype=dtype, requires_grad=True)
    out, grads, gy = run_with_grads(FF.linear_relu if relu else FF.linear, [x, w, b])
    same = [t.detach().clone().requires_grad_() for t in (x, w, b)]
    torch_out, torch_grads, _ = run_with_grads(lambda *a: reference(*a, relu), same, gy)
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(lambda *a: reference(*a, relu), exact, gy.double())
    assert out.dtype == dtype
    assert_close_low_precision(out, ref_out, torch_out, "output")
    for name, g, t, r in zip(("grad_input", "grad_weight", "grad_bias"), grads, torch_grads, ref_grads):
        assert_close_low_precision(g, r, t, name)


@needs_cuda
@pytest.mark.parametrize("lead,k,n", [((5,), 7, 3), ((130,), 48, 16), ((100,), 784, 128), ((2, 32), 1030, 1024)])
def test_tf32_on_cuda_where_torch_allows_it(lead, k, n):
    """Under torch.backends.cuda.matmul.allow_tf32, float32 linear may round its products to TF32
    as torch's matmul does: every pass within twice torch's own TF32 error of float64, and the
    output different from the IEEE one where the shape runs on tensor cores (compute capability
    8.0+, in_features and out_features multiples of 4)."""
    x = torch.randn(*lead, k, device="cuda", requires_grad=True)
    w = torch.randn(n, k, device="cuda", requires_grad=True)
    b = torch.randn(n, device="cuda", requires_grad=True)
    with torch.no_grad():
        ieee_out = FF.linear(x, w, b)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        out, grads, gy = run_with_grads(FF.linear, [x, w, b])
        same = [t.detach().clone().requires_grad_() for t in (x, w, b)]
        torch_out, torch_grads, _ = run_with_grads(lambda *a: reference(*a, False), same, gy)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    exact = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref_out, ref_grads, _ = run_with_grads(lambda *a: reference(*a, False), exact, gy.double())
    assert_close_low_precision(out, ref_out, torch_out, "output")
    for name, g, t, r in zip(("grad_input", "grad_weight", "grad_bias"), grads, torch_grads, ref_grads):
        assert_close_low_precision(g, r, t, name)
    if k % 4 == 0 and n % 4 == 0 and torch.cuda.get_device_capability()[0] >= 8:
        assert not torch.equal(out, ieee_out), "TF32 allowed, but the output is the IEEE float32 one"


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("lead,k,n", [((4,), 5, 3), ((2, 3), 4, 6), ((1,), 1, 2)])
def test_gradcheck(device, cpu_isa, relu, lead, k, n):
    x = torch.randn(*lead, k, device=device, dtype=torch.float64, requires_grad=True)
    w = torch.randn(n, k, device=device, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, device=device, dtype=torch.float64, requires_grad=True)
    fn = FF.linear_relu if relu else FF.linear
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: fn(x, w), (x, w))
    # Double backward: the backward ops are differentiable too.
    assert torch.autograd.gradgradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(torch.ops.fastlayers.linear_relu if relu else torch.ops.fastlayers.linear, (x, w, b))


def test_only_requested_gradients(device):
    x = torch.randn(4, 5, device=device)
    w = torch.randn(3, 5, device=device, requires_grad=True)
    b = torch.randn(3, device=device)
    FF.linear(x, w, b).sum().backward()
    assert w.grad is not None and x.grad is None and b.grad is None


def test_non_contiguous_inputs(device):
    x = torch.randn(9, 6, device=device).t()  # 6 x 9, transposed strides
    w = torch.randn(9, 5, device=device).t()[:4]  # 4 x 9 view
    b = torch.randn(8, device=device)[::2]
    assert_close(FF.linear_relu(x, w, b), reference(x.double(), w.double(), b.double(), True), terms=9)


def test_thread_counts_agree(device, cpu_isa):
    x, w, b = torch.randn(200, 300), torch.randn(260, 300), torch.randn(260)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = FF.linear_relu(x, w, b)
        torch.set_num_threads(2)
        two = FF.linear_relu(x, w, b)
    finally:
        torch.set_num_threads(old)
    assert_close(one, reference(x.double(), w.double(), b.double(), True), terms=300)
    assert_close(two, reference(x.double(), w.double(), b.double(), True), terms=300)


def test_relu_backward_mask_drops_nan_grad(device, cpu_isa):
    # torch's threshold_backward is a select, not a product: masked-out NaN gradients become 0.
    x = torch.tensor([[1.0, -1.0]], device=device, requires_grad=True)
    w = torch.eye(2, device=device, requires_grad=True)
    y = FF.linear_relu(x, w)
    (gx,) = torch.autograd.grad(y, x, torch.tensor([[2.0, float("nan")]], device=device))
    assert gx.tolist() == [[2.0, 0.0]]


def test_relu_backward_mask_passes_nan_outputs(device, cpu_isa):
    # A NaN output of linear_relu passes its gradient on, as torch.relu's threshold_backward does
    # (it stops the gradient only where the output is <= 0): into grad_input, grad_weight and
    # grad_bias alike.
    x = torch.randn(5, 4, device=device, dtype=torch.float64)
    x[1, 2] = float("nan")
    w = torch.randn(3, 4, device=device, dtype=torch.float64)
    b = torch.randn(3, device=device, dtype=torch.float64)
    gy = torch.randn(5, 3, device=device, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(FF.linear_relu(*leaves), leaves, gy)
    refs = [t.clone().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(torch.relu(F.linear(*refs)), refs, gy)
    for name, g, r in zip(("grad_input", "grad_weight", "grad_bias"), got, want):
        torch.testing.assert_close(g, r, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("relu", [False, True])
def test_opcheck(device, relu):
    x = torch.randn(3, 4, 5, device=device, requires_grad=True)
    w = torch.randn(6, 5, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    fwd = ops.linear_relu if relu else ops.linear
    torch.library.opcheck(fwd.default, (x, w, b))
    torch.library.opcheck(fwd.default, (x, w, None))
    gy = torch.randn(3, 4, 6, device=device)
    y = fwd(x, w, b).detach() if relu else None
    torch.library.opcheck(ops.linear_grad_input.default, (gy, w.detach(), y))
    torch.library.opcheck(ops.linear_grad_weight.default, (gy, x.detach(), y))
    torch.library.opcheck(ops.bias_grad.default, (gy, y, -1))


def test_modules_match_torch_and_share_state_dict(device):
    ref = torch.nn.Linear(20, 7).to(device)
    fast = fastlayers.nn.Linear(20, 7).to(device)
    fused = fastlayers.nn.LinearReLU(20, 7).to(device)
    fast.load_state_dict(ref.state_dict())
    fused.load_state_dict(fast.state_dict())
    assert list(fast.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 20, device=device)
    assert_close(fast(x), ref(x).double(), terms=20)
    assert_close(fused(x), torch.relu(ref(x)).double(), terms=20)
    no_bias = fastlayers.nn.Linear(20, 7, bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == ["weight"]


ERRORS = [
    # (description, call, exception type, words the message must contain)
    ("in_features mismatch", lambda: FF.linear(torch.randn(3, 5), torch.randn(4, 6)), RuntimeError, ["fastlayers.linear", "in_features=6", "[3, 5]"]),
    ("weight not 2-D", lambda: FF.linear(torch.randn(3, 5), torch.randn(5)), RuntimeError, ["weight", "2-D", "1-D"]),
    ("0-D input", lambda: FF.linear(torch.tensor(1.0), torch.randn(4, 1)), RuntimeError, ["input", "0-D"]),
    ("bias shape", lambda: FF.linear(torch.randn(3, 5), torch.randn(4, 5), torch.randn(3)), RuntimeError, ["bias", "[4]", "[3]"]),
    ("dtype mismatch", lambda: FF.linear(torch.randn(3, 5), torch.randn(4, 5, dtype=torch.float64)), RuntimeError, ["weight", "same dtype as input", "torch.float32", "torch.float64"]),
    ("bias dtype", lambda: FF.linear_relu(torch.randn(3, 5), torch.randn(4, 5), torch.randn(4, dtype=torch.float64)), RuntimeError, ["fastlayers.linear_relu", "bias", "torch.float64"]),
    ("integer input", lambda: FF.linear(torch.ones(3, 5, dtype=torch.int64), torch.ones(4, 5, dtype=torch.int64)), RuntimeError, ["input", "torch.float32 or torch.float64", "torch.int64"]),
    ("bool input", lambda: FF.linear(torch.ones(3, 5, dtype=torch.bool), torch.ones(4, 5, dtype=torch.bool)), RuntimeError, ["torch.bool"]),
    ("device mismatch", lambda: FF.linear(torch.randn(3, 5), torch.randn(4, 5, device="meta")), RuntimeError, ["weight", "same device as input", "meta"]),
    ("grad_output width", lambda: ops.linear_grad_input(torch.randn(3, 5), torch.randn(4, 6), None), RuntimeError, ["linear_grad_input", "out_features=4"]),
    ("relu_output shape", lambda: ops.linear_grad_weight(torch.randn(3, 4), torch.randn(3, 6), torch.randn(3, 5)), RuntimeError, ["relu_output", "[3, 4]"]),
    ("input a list", lambda: FF.linear([[1.0]], torch.randn(4, 1)), TypeError, ["fastlayers.linear", "input", "list"]),
    ("weight None", lambda: FF.linear_relu(torch.randn(3, 5), None), RuntimeError, ["fastlayers.linear_relu", "weight", "None"]),
    ("bias_grad channel_dim", lambda: ops.bias_grad(torch.randn(3, 4), None, 2), RuntimeError, ["bias_grad", "channel_dim"]),
]


@pytest.mark.parametrize("what,call,exc,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_input_raises_clear_error(what, call, exc, words):
    assert_raises_with(call, words, exc)
