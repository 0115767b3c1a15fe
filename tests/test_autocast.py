"""Low precision: float16 and bfloat16 calls, and torch.autocast. Under autocast, fastlayers
layers compute in the dtype torch's layers would (conv2d and linear in the region's dtype,
max_pool2d and relu in whatever they receive). Outputs and gradients are compared with a float64
reference of the same computation (the arguments rounded to the low-precision dtype):
fastlayers' error must stay within twice torch's own, plus one rounding unit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import fastlayers.functional as FF
from fastlayers import models
from fastlayers import nn as fnn

from conftest import HAS_CUDA

LOW = [torch.bfloat16, torch.float16]
CASES = [("cpu", dtype) for dtype in LOW] + [
    pytest.param("cuda", dtype, marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build"))
    for dtype in LOW
]


def assert_within_torch_error(fast, ref_low, ref64, dtype, what):
    assert fast.dtype == ref_low.dtype, f"{what}: dtype {fast.dtype}, torch gives {ref_low.dtype}"
    assert fast.shape == ref_low.shape, f"{what}: shape {tuple(fast.shape)} != {tuple(ref_low.shape)}"
    fast_err = (fast.double() - ref64).abs().max().item()
    torch_err = (ref_low.double() - ref64).abs().max().item()
    ulp = torch.finfo(dtype).eps * ref64.abs().max().item()
    assert fast_err <= 2 * torch_err + ulp, f"{what}: error {fast_err:.3g}, torch's {torch_err:.3g}, ulp {ulp:.3g}"


def torch_twin(fast):
    """The torch layers computing what the fastlayers layer does, with its weights."""
    conv = dict(in_channels=5, out_channels=12, kernel_size=3, padding=1)
    twins = {
        fnn.Linear: lambda: torch.nn.Linear(37, 19),
        fnn.LinearReLU: lambda: torch.nn.Sequential(torch.nn.Linear(37, 19), torch.nn.ReLU()),
        fnn.Conv2d: lambda: torch.nn.Conv2d(**conv, stride=2),
        fnn.Conv2dReLU: lambda: torch.nn.Sequential(torch.nn.Conv2d(**conv), torch.nn.ReLU()),
        fnn.Conv2dReLUMaxPool2d: lambda: torch.nn.Sequential(torch.nn.Conv2d(**conv), torch.nn.ReLU(), torch.nn.MaxPool2d(2)),
    }
    ref = twins[type(fast)]()
    prefix = "0." if isinstance(ref, torch.nn.Sequential) else ""
    ref.load_state_dict({prefix + k: v for k, v in fast.state_dict().items()})
    return ref


LAYERS = [
    lambda: fnn.Linear(37, 19),
    lambda: fnn.LinearReLU(37, 19),
    lambda: fnn.Conv2d(5, 12, 3, padding=1, stride=2),
    lambda: fnn.Conv2dReLU(5, 12, 3, padding=1),
    lambda: fnn.Conv2dReLUMaxPool2d(5, 12, 3, padding=1, pool_kernel_size=2),
]


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("make", LAYERS, ids=["Linear", "LinearReLU", "Conv2d", "Conv2dReLU", "Conv2dReLUMaxPool2d"])
def test_layers_under_autocast_match_torch(device, dtype, make):
    fast = make().to(device)
    ref = torch_twin(fast).to(device)
    what = type(fast).__name__
    x = torch.randn(6, 37, device=device) if isinstance(fast, torch.nn.Linear) else torch.randn(3, 5, 11, 10, device=device)
    with torch.autocast(device, dtype=dtype):
        out = fast(x)
        expected = ref(x)

    # The float64 reference of what autocast computes: the layer's arguments rounded to `dtype`.
    ref64 = copy.deepcopy(ref).double()
    ref64.load_state_dict({k: v.to(dtype).double() for k, v in ref.state_dict().items()})
    expected64 = ref64(x.to(dtype).double())
    assert_within_torch_error(out, expected, expected64, dtype, f"{what} forward")

    grad = torch.randn_like(expected64)
    (out.double() * grad).sum().backward()
    (expected.double() * grad).sum().backward()
    (expected64 * grad.to(dtype).double()).sum().backward()
    for (name, p_fast), p_ref, p64 in zip(fast.named_parameters(), ref.parameters(), ref64.parameters()):
        assert p_fast.grad.dtype == p_ref.grad.dtype, f"{what}.{name}.grad: dtype {p_fast.grad.dtype}"
        assert_within_torch_error(p_fast.grad, p_ref.grad, p64.grad, dtype, f"{what}.{name}.grad")


@pytest.mark.parametrize("device,dtype", CASES)
def test_unfused_ops_keep_their_input_dtype(device, dtype):
    """torch runs max_pool2d and relu in the dtype they receive, under autocast or not."""
    x = torch.randn(2, 3, 8, 9, device=device)
    with torch.autocast(device, dtype=dtype):
        assert FF.max_pool2d(x, 2).dtype == F.max_pool2d(x, 2).dtype == torch.float32
        assert FF.relu(x).dtype == torch.relu(x).dtype == torch.float32
        assert FF.max_pool2d(x.to(dtype), 2).dtype == dtype


@pytest.mark.parametrize("device,dtype", CASES)
def test_ops_take_low_precision_directly(device, dtype):
    """Every op takes float16 and bfloat16 tensors without autocast, as torch's do."""
    x = torch.randn(2, 4, 9, 10, device=device).to(dtype)
    w = torch.randn(6, 4, 3, 3, device=device).to(dtype)
    b = torch.randn(6, device=device).to(dtype)
    x64, w64, b64 = x.double(), w.double(), b.double()
    assert_within_torch_error(FF.conv2d_relu(x, w, b, padding=1), F.relu(F.conv2d(x, w, b, padding=1)),
                              F.relu(F.conv2d(x64, w64, b64, padding=1)), dtype, "conv2d_relu")
    out, idx = FF.max_pool2d(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx), "max_pool2d"
    assert torch.equal(FF.relu(x), torch.relu(x)), "relu"
    flat, lw = x.flatten(1), torch.randn(7, 360, device=device).to(dtype)
    assert_within_torch_error(FF.linear(flat, lw), F.linear(flat, lw), F.linear(flat.double(), lw.double()), dtype, "linear")


def test_low_precision_arguments_must_agree():
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"fastlayers.linear: expected weight to have the same dtype as input \(torch.bfloat16\), but got torch.float16"):
        torch.ops.fastlayers.linear(x, torch.randn(4, 3, dtype=torch.float16), None)
    with pytest.raises(RuntimeError, match=r"fastlayers.linear: expected weight to have the same dtype as input \(torch.float32\)"):
        torch.ops.fastlayers.linear(x.float(), torch.randn(4, 3, dtype=torch.bfloat16), None)


@pytest.mark.parametrize("name", ["cifar_cnn", "lenet", "mnist_cnn", "mlp"])
def test_models_under_cpu_autocast_are_as_accurate_as_torch(name):
    """A whole training step's loss and gradients under bfloat16 autocast: each layer rounds its
    output, so the reference is the float64 model, and fastlayers may be off by at most twice as
    much as torch is."""
    dtype = torch.bfloat16
    fast = models.build(name, "fastlayers").eval()
    ref = models.build(name, "torch").eval()
    ref.load_state_dict(fast.state_dict())
    ref64 = models.build(name, "torch").double().eval()
    ref64.load_state_dict({k: v.to(dtype).double() for k, v in fast.state_dict().items()})
    x = torch.randn(4, *fast.input_shape)
    target = torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=dtype):
        out, expected = fast(x), ref(x)
        loss, ref_loss = fast.loss(out, target), ref.loss(expected, target)
    out64 = ref64(x.to(dtype).double())
    assert_within_torch_error(out, expected, out64, dtype, f"{name} output")
    loss.backward()
    ref_loss.backward()
    ref64.loss(out64, target).backward()
    for (pname, p), p_ref, p64 in zip(fast.named_parameters(), ref.parameters(), ref64.parameters()):
        assert_within_torch_error(p.grad, p_ref.grad, p64.grad, dtype, f"{name}.{pname}.grad")
