"""The fake kernels let torch.compile and torch.export trace fastlayers layers: a whole model
compiles with fullgraph=True (no graph breaks), forward and backward, and exports, giving the
same results as torch's layers with the same weights."""

from __future__ import annotations

import torch

from fastlayers import models


def twins():
    fast = models.build("lenet", "fastlayers")
    ref = models.build("lenet", "torch")
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    fast, ref = twins()
    x = torch.randn(4, 3, 32, 32)
    out = torch.compile(fast, fullgraph=True)(x)
    expected = ref(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    expected.sum().backward()
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_export():
    fast, ref = twins()
    x = torch.randn(2, 3, 32, 32)
    program = torch.export.export(fast.eval(), (x,))
    torch.testing.assert_close(program.module()(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
