"""The fake kernels let torch.compile and torch.export trace fastlayers layers: each of the
reference models, built from fastlayers layers, compiles with fullgraph=True (no graph breaks),
forward and backward, and exports, giving the same results as torch's layers with the same
weights."""

from __future__ import annotations

import pytest
import torch

from fastlayers import models

def twins(name):
    fast = models.build(name, "fastlayers")
    ref = models.build(name, "torch")
    ref.load_state_dict(fast.state_dict())
    return fast.eval(), ref.eval()  # eval: dropout would draw different masks in the two


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_compile_fullgraph_forward_and_backward(name):
    torch._dynamo.reset()
    fast, ref = twins(name)
    x = torch.randn(4, *fast.input_shape)
    out = torch.compile(fast, fullgraph=True)(x)
    expected = ref(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    for (pname, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-4, atol=1e-5, msg=lambda m: f"{pname}: {m}")


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_export(name):
    fast, ref = twins(name)
    x = torch.randn(2, *fast.input_shape)
    program = torch.export.export(fast, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert any(t.startswith("fastlayers.") for t in targets), f"no fastlayers op in the exported graph: {targets}"
    torch.testing.assert_close(program.module()(x), ref(x), rtol=1e-4, atol=1e-5)
