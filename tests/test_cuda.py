"""What only the CUDA backend has to get right, beyond the per-op tests (which run every case with
device="cuda" too): bitwise-deterministic backward passes, max_pool2d_backward's gather equal to
the CPU's scatter bit for bit, CUDA graph capture of a training step, launching on the current stream, device guards,
CUDA error messages, and 64-bit indexing on tensors past 2^31 elements. Every test here skips
without a GPU and a CUDA build; see tests/gpu/README.md for running them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fastlayers
import fastlayers.functional as FF
from conftest import HAS_CUDA, assert_close_low_precision, assert_raises_with, needs_cuda

ops = torch.ops.fastlayers
pytestmark = needs_cuda


def small_net() -> torch.nn.Module:
    """Every fastlayers layer, with shapes that put the conv grad_weight GEMMs on split-K (few
    output tiles, K = batch * OH * OW in the thousands) and overlapping pooling windows."""
    return torch.nn.Sequential(
        fastlayers.nn.Conv2dReLUMaxPool2d(3, 8, 3, padding=1, pool_kernel_size=2),  # 16 -> 8
        fastlayers.nn.Conv2dReLU(8, 8, 3, padding=1, groups=2),
        fastlayers.nn.MaxPool2d(3, stride=1, padding=1),  # overlapping windows
        fastlayers.nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 8 -> 4
        fastlayers.nn.ReLU(),
        torch.nn.Flatten(),
        fastlayers.nn.LinearReLU(16 * 4 * 4, 32),
        fastlayers.nn.Linear(32, 10),
    )


def loss_and_grads(model: torch.nn.Module, x: torch.Tensor):
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    loss = model(x).square().sum()
    loss.backward()
    return loss.detach(), [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_backward_is_bitwise_deterministic(dtype):
    torch.use_deterministic_algorithms(True)
    model = small_net().to("cuda", dtype)
    x = torch.randn(64, 3, 16, 16, device="cuda", dtype=dtype)
    loss1, grads1 = loss_and_grads(model, x)
    loss2, grads2 = loss_and_grads(model, x)
    assert torch.equal(loss1, loss2)
    for i, (a, b) in enumerate(zip(grads1, grads2)):
        assert torch.equal(a, b), f"gradient {i} differs between two identical backward passes"


@pytest.mark.parametrize("fill", ["random", "constant"])  # constant: every window picks its first element
@pytest.mark.parametrize("deterministic", [True, False])
def test_max_pool2d_backward_equals_cpu_bitwise(fill, deterministic):
    # The gather adds each input element's gradients in output order, as the CPU's scatter does,
    # whatever the determinism setting; overlapping windows give elements several gradients.
    torch.use_deterministic_algorithms(deterministic)
    x = torch.randn(3, 5, 33, 29) if fill == "random" else torch.zeros(3, 5, 33, 29)
    for args in [(3, 1, 1, 1, False), (3, 2, 1, 1, True), (2, 1, 0, 2, False), (5, 2, 2, 1, True), (2, 2, 0, 1, False), ((3, 2), (2, 1), (1, 0), (2, 3), True)]:
        geometry = [[a] * 2 if isinstance(a, int) else list(a) for a in args[:4]] + [args[4]]
        _, idx = ops.max_pool2d(x, *geometry)
        gy = torch.randn(idx.shape)
        cpu = ops.max_pool2d_backward(gy, idx, list(x.shape), *geometry)
        gpu = ops.max_pool2d_backward(gy.cuda(), idx.cuda(), list(x.shape), *geometry)
        assert torch.equal(gpu.cpu(), cpu), f"kernel, stride, padding, dilation, ceil_mode = {args}"


def test_indices_that_are_not_taps_pass_nothing_on_cuda():
    # Out of the plane, before it, or another window's element: as on the CPU, nothing.
    gy = torch.ones(1, 1, 2, 2, device="cuda")
    idx = torch.tensor([[[[0, 99], [-1, 1]]]], device="cuda")  # only the first is its window's tap
    gx = ops.max_pool2d_backward(gy, idx, [1, 1, 4, 4], [2, 2], [2, 2], [0, 0], [1, 1], False)
    expected = torch.zeros(1, 1, 16, device="cuda")
    expected[..., 0] = 1
    assert torch.equal(gx, expected.view(1, 1, 4, 4))
    assert torch.equal(gx.cpu(), ops.max_pool2d_backward(gy.cpu(), idx.cpu(), [1, 1, 4, 4], [2, 2], [2, 2], [0, 0], [1, 1], False))


def test_cuda_graph_captures_forward_and_backward():
    torch.use_deterministic_algorithms(True)
    model = small_net().cuda()
    static_x = torch.randn(32, 3, 16, 16, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch's documentation does
        for _ in range(2):
            loss_and_grads(model, static_x)
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = model(static_x).square().sum()
        static_loss.backward()
    # The gradients allocated during capture are the graph's outputs: each replay rewrites them.
    static_grads = [p.grad for p in model.parameters()]
    for _ in range(2):  # replays follow the new contents of the static input
        new_x = torch.randn_like(static_x)
        static_x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        replayed = [static_loss.clone()] + [g.clone() for g in static_grads]
        eager_loss, eager_grads = loss_and_grads(model, new_x)
        for i, (a, b) in enumerate(zip(replayed, [eager_loss] + eager_grads[1:])):
            assert torch.equal(a, b), f"replayed result {i} differs from the eager one"


def test_ops_run_on_the_current_stream():
    # The inputs are written on a side stream after a long sleep; an op launched on any other
    # stream (the legacy default stream does not wait for torch's non-blocking streams) would read
    # them before they exist.
    torch.use_deterministic_algorithms(True)
    base = torch.randn(4, 6, 12, 12, device="cuda")
    w = torch.randn(8, 3, 3, 3, device="cuda")
    lw = torch.randn(5, 12, device="cuda")
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 2)

    def run_all(x):
        y = ops.conv2d_relu(x, w, None, *geometry)
        pooled, idx = ops.max_pool2d(y, [2, 2], [2, 2], [0, 0], [1, 1], False)
        fused, _ = ops.conv2d_relu_max_pool2d(x, w, None, *geometry, [2, 2], [2, 2], [0, 0], [1, 1], False)
        return [y, pooled, fused, ops.relu(x), ops.relu_backward(x, y[:, :6]),
                ops.conv2d_grad_input(y, w, list(x.shape), *geometry, y),
                ops.conv2d_grad_weight(y, x, list(w.shape), *geometry, y),
                ops.bias_grad(y, y, 1),
                ops.max_pool2d_backward(pooled, idx, list(y.shape), [2, 2], [2, 2], [0, 0], [1, 1], False),
                ops.linear(x, lw, None), ops.linear_grad_input(x[..., :5], lw, None),
                ops.linear_grad_weight(x[..., :5], x, None)]

    expected = run_all(base * 2)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU clock cycles
        got = run_all(base * 2)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for i, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"result {i} differs when computed on a side stream"


@pytest.mark.skipif(HAS_CUDA and torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_another_device_than_the_current_one():
    x = torch.randn(2, 3, 8, 8, device="cuda:1", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda:1", requires_grad=True)
    with torch.cuda.device(0):
        out = FF.max_pool2d(FF.conv2d_relu(x, w, padding=1), 2)
        out.sum().backward()
    assert out.device == x.grad.device == w.grad.device == torch.device("cuda:1")
    ref = F.max_pool2d(torch.relu(F.conv2d(x.detach().double(), w.detach().double(), padding=1)), 2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_cuda_error_messages():
    x, w = torch.randn(3, 5, device="cuda"), torch.randn(4, 5, device="cuda")
    assert_raises_with(lambda: FF.linear(x.cpu(), w), ["fastlayers.linear", "input", "on CUDA", "cpu"])
    assert_raises_with(lambda: FF.linear(x, w.cpu()), ["weight", "same device as input", "cuda:0", "cpu"])
    assert_raises_with(lambda: FF.linear(x.long(), w.long()),
                       ["input", "torch.float32, torch.float64, torch.float16 or torch.bfloat16 on CUDA", "torch.int64"])
    assert_raises_with(lambda: FF.linear(x.half(), w), ["weight", "same dtype as input", "torch.float16", "torch.float32"])
    gy = torch.randn(1, 1, 2, 2, device="cuda")
    assert_raises_with(lambda: ops.max_pool2d_backward(gy, torch.zeros(1, 1, 2, 2, dtype=torch.long), [1, 1, 4, 4], [2, 2], [2, 2], [0, 0], [1, 1], False),
                       ["max_pool2d_backward", "indices", "same device as grad_output"])
    assert_raises_with(lambda: ops.conv2d_grad_weight(torch.randn(2, 6, 6, 6, device="cuda"), torch.randn(2, 4, 8, 8, device="cuda"),
                                                      [6, 4, 3, 3], [1, 1], [0] * 4, [1, 1], 1, torch.randn(2, 6, 6, 6)),
                       ["relu_output", "same device as grad_output"])


# --- 64-bit indexing: tensors past 2^31 elements -----------------------------------------------

def gpu_memory_gib() -> float:
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if HAS_CUDA else 0.0


big = pytest.mark.skipif(gpu_memory_gib() < 48, reason="needs a GPU with 48 GiB (tensors of 4 GiB and more)")
PAST_2_31 = 2**31 + 2**20


@big
def test_relu_past_2_31_elements():
    x = torch.randn(PAST_2_31, device="cuda", dtype=torch.float16)
    y = FF.relu(x)
    assert torch.equal(y, torch.relu(x))
    gx = ops.relu_backward(x, y)  # x as the gradient: any values do
    assert torch.equal(gx, torch.where(y > 0, x, torch.zeros_like(x)))


@big
def test_max_pool2d_one_plane_past_2_31_elements():
    # One plane of 65600 x 32768: indices near the end exceed 2^31, and the backward's 64-bit
    # index arithmetic runs.
    H, W = 65600, 32768
    x = torch.randn(1, 1, H, W, device="cuda", dtype=torch.float16)
    out, idx = FF.max_pool2d(x, 2, return_indices=True)
    assert idx.max().item() > 2**31
    for rows in (slice(0, 4), slice(H - 4, H)):
        tail = x[..., rows, :]
        ref, ref_idx = F.max_pool2d(tail, 2, return_indices=True)
        out_rows = slice(rows.start // 2, rows.stop // 2)
        assert torch.equal(out[..., out_rows, :], ref)
        assert torch.equal(idx[..., out_rows, :], ref_idx + rows.start * W)
    gy = torch.randn_like(out)
    gx = ops.max_pool2d_backward(gy, idx, list(x.shape), [2, 2], [2, 2], [0, 0], [1, 1], False)
    tail = x[..., H - 4:, :].clone().requires_grad_()
    (g_tail,) = torch.autograd.grad(F.max_pool2d(tail, 2), tail, gy[..., -2:, :])
    assert torch.equal(gx[..., H - 4:, :], g_tail)


@big
def test_max_pool2d_many_planes_past_2_31_elements():
    # 4098 planes of 1024 x 512: plane offsets exceed 2^31.
    x = torch.randn(2, 2049, 1024, 512, device="cuda", dtype=torch.float16)
    assert x.numel() > 2**31
    out, idx = FF.max_pool2d(x, 2, return_indices=True)
    gy = torch.randn_like(out)
    gx = ops.max_pool2d_backward(gy, idx, list(x.shape), [2, 2], [2, 2], [0, 0], [1, 1], False)
    last = x[-1:, -1:].clone().requires_grad_()
    ref, ref_idx = F.max_pool2d(last, 2, return_indices=True)
    assert torch.equal(out[-1:, -1:], ref) and torch.equal(idx[-1:, -1:], ref_idx)
    (g_last,) = torch.autograd.grad(ref, last, gy[-1:, -1:])
    assert torch.equal(gx[-1:, -1:], g_last)


@big
def test_linear_output_past_2_31_elements():
    x = torch.randn(2**21, 64, device="cuda", dtype=torch.float16)
    w = torch.randn(1025, 64, device="cuda", dtype=torch.float16)
    y = FF.linear(x, w)  # 2^21 x 1025 > 2^31 elements
    assert y.numel() > 2**31
    for rows in (slice(0, 1000), slice(2**21 - 1000, 2**21)):
        assert_close_low_precision(y[rows], F.linear(x[rows].double(), w.double()), F.linear(x[rows], w), f"rows {rows}")


@big
def test_conv2d_output_past_2_31_elements():
    x = torch.randn(2, 4, 2048, 2048, device="cuda", dtype=torch.float16)
    w = torch.randn(256, 4, 3, 3, device="cuda", dtype=torch.float16)
    y = FF.conv2d(x, w, padding=1)  # 2 x 256 x 2048 x 2048 > 2^31 elements
    assert y.numel() > 2**31
    # The last 8 output rows of the last image: input rows H-9..H-1 with the bottom padding.
    x_tail = F.pad(x[1:, :, -9:, :], (1, 1, 0, 1))
    assert_close_low_precision(y[1:, :, -8:, :], F.conv2d(x_tail.double(), w.double()), F.conv2d(x_tail, w), "last rows")
