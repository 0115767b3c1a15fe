"""The five reference models built from fastlayers layers against the same models built from
torch.nn layers with the same weights: outputs, every parameter's gradient, and the parameters
after a few SGD steps (each model's training loss, SGD lr 0.01 momentum 0.9)."""

from __future__ import annotations

import pytest
import torch

from fastlayers import models

NAMES = list(models.MODELS)


def twins(name, device, dtype):
    ref = models.build(name, "torch").to(device, dtype)
    fast = models.build(name, "fastlayers").to(device, dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def batch(model, device, dtype, n=None):
    n = n or min(model.batch_size, 16)
    x = torch.randn(n, *model.input_shape, device=device, dtype=dtype)
    if isinstance(model, models.RegressionMLP):
        return x, torch.randn(n, 1, device=device, dtype=dtype)
    return x, torch.randint(0, 10, (n,), device=device)


def step(model, opt, x, target, seed):
    torch.manual_seed(seed)  # the same dropout masks in both twins
    opt.zero_grad()
    loss = model.loss(model(x), target)
    loss.backward()
    opt.step()
    return loss.item()


# float32 bounds: each layer adds relative rounding of ~1e-6 (sums of <= 3136 terms); these bounds
# leave a margin over that and stay far below any real error (a wrong element moves things by ~1).
TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-4, atol=2e-5)}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_outputs_and_gradients_match_torch(device, name, dtype):
    ref, fast = twins(name, device, dtype)
    ref.eval(), fast.eval()
    x, target = batch(ref, device, dtype)
    out_ref, out_fast = ref(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, **TOLERANCE[dtype])
    ref.loss(out_ref, target).backward()
    fast.loss(out_fast, target).backward()
    for (pname, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, **TOLERANCE[dtype], msg=lambda m: f"{pname}: {m}")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sgd_steps_match_torch(device, name, dtype):
    ref, fast = twins(name, device, dtype)
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in (ref, fast)]
    for i in range(4):
        x, target = batch(ref, device, dtype)
        loss_ref = step(ref, opts[0], x, target, seed=i)
        loss_fast = step(fast, opts[1], x, target, seed=i)
        assert loss_fast == pytest.approx(loss_ref, rel=TOLERANCE[dtype]["rtol"], abs=TOLERANCE[dtype]["atol"])
    for (pname, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast, p_ref, **TOLERANCE[dtype], msg=lambda m: f"{pname}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_checkpoints_move_both_ways(name):
    ref, fast = twins(name, "cpu", torch.float32)
    assert list(ref.state_dict()) == list(fast.state_dict())
    back = models.build(name, "torch")
    back.load_state_dict(fast.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_full_batch_shapes(device):
    # The documented batch sizes go through every model (the flatten sizes only fit these inputs).
    for name in NAMES:
        _, fast = twins(name, device, torch.float32)
        x, _ = batch(fast, device, torch.float32, n=fast.batch_size)
        out = fast(x)
        assert out.shape == (fast.batch_size, 1 if name == "regression_mlp" else 10)


def test_unknown_model_and_layers():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.build("vgg")
    with pytest.raises(ValueError, match="layers must be 'torch' or 'fastlayers'"):
        models.build("mlp", layers="tf")
