"""Random invalid configurations: hypothesis draws a valid call of an op (random sizes, geometry,
dtype, API), checks that it runs, then applies one of tests/bad_inputs.py's mutations (a wrong
rank, mismatched channels, a zero stride, an integer dtype, an overflowing dilation, ...) and
checks that the op refuses it with a clean error naming the op and the argument. In process: the
fixed corpus of tests/test_bad_inputs.py is the one that runs in a subprocess."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st

import bad_inputs
import fuzz_report

OPS = ["linear", "linear_relu", "relu", "max_pool2d", "conv2d", "conv2d_relu", "conv2d_relu_max_pool2d"]


def valid_config(data, op):
    """A random valid call of op; bad_inputs.base_config's layout with drawn sizes and geometry."""
    api = data.draw(st.sampled_from(["functional", "op"]), label="api")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), label="dtype")
    kernel = [data.draw(st.integers(1, 4), label="kernel") for _ in range(2)]
    cfg = bad_inputs.base_config(op, api, dtype, n=data.draw(st.integers(0, 3), label="N"),
                                 groups=data.draw(st.integers(1, 3), label="groups"),
                                 cg=data.draw(st.integers(1, 3), label="in_channels / groups"),
                                 ocg=data.draw(st.integers(1, 3), label="out_channels / groups"), kernel=kernel,
                                 h=data.draw(st.integers(1, 6), label="H - kernel") + 3 * kernel[0],
                                 w=data.draw(st.integers(1, 6), label="W - kernel") + 3 * kernel[1])
    if op in bad_inputs.CONV_OPS:
        stride = [data.draw(st.integers(1, 3), label="stride") for _ in range(2)]
        pad = [data.draw(st.integers(0, 2), label="padding") for _ in range(2)]
        cfg.update(stride=stride, padding=pad if api == "functional" else [pad[0], pad[0], pad[1], pad[1]])
        if not data.draw(st.booleans(), label="bias"):
            cfg["b"] = None
    if op == "max_pool2d":
        cfg.update(stride=[data.draw(st.integers(1, 3), label="stride") for _ in range(2)],
                   padding=[data.draw(st.integers(0, k // 2), label="padding") for k in kernel],
                   ceil_mode=data.draw(st.booleans(), label="ceil_mode"))
    if op in ("linear", "linear_relu") and not data.draw(st.booleans(), label="bias"):
        cfg["b"] = None
    if op != "linear" and op != "linear_relu" and op != "relu" and api == "functional" and data.draw(st.booleans(), label="unbatched"):
        cfg["x"] = cfg["x"][1:]
    return cfg


@pytest.mark.parametrize("op", OPS)
@given(data=st.data())
def test_fuzz_invalid_op(op, data):
    fuzz_report.count(op, "invalid")
    cfg = valid_config(data, op)
    note(f"valid config: {cfg}")
    bad_inputs.call(cfg)
    mutations = bad_inputs.applicable(cfg)
    mutation = data.draw(st.sampled_from(mutations), label="mutation")
    bad = bad_inputs.mutated(cfg, mutation)
    note(f"mutated config: {bad}")
    error = None
    try:
        bad_inputs.call(bad)
    except Exception as e:  # noqa: BLE001  (every exception is judged by problem())
        error = e
    assert bad_inputs.problem(op, error, mutation[3]) is None, bad_inputs.problem(op, error, mutation[3])
