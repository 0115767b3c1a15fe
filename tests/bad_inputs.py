"""Bad inputs for every op, and what their errors must say. A call is described by a config (the
op, the API - fastlayers.functional or torch.ops.fastlayers -, tensor shapes, dtypes and devices,
and the geometry arguments); a mutation turns a valid config into an invalid one (a wrong rank,
mismatched channels, groups that do not divide, a zero or negative stride, padding past half a
pool window, a dtype mismatch, integer dtypes, another device, a wrong bias shape, sizes whose
arithmetic overflows int64, ...) and names the words its error must contain.

Each case must raise RuntimeError, ValueError or TypeError whose message names the op
("fastlayers.<op>" or torch's "fastlayers::<op>") and the argument: never crash, hang, or return.

Used two ways: `python tests/bad_inputs.py` runs the fixed corpus (every mutation on a base config
of each op and API, and hand-written calls of the backward ops) and prints one JSON line per case;
tests/test_bad_inputs.py runs it in a subprocess, so that a crash or a hang fails that test instead
of killing the test run. tests/test_fuzz_invalid.py applies the same mutations to random valid
configs with hypothesis. This file imports neither pytest nor hypothesis."""

from __future__ import annotations

import copy
import json
import sys

import torch

import fastlayers  # noqa: F401  (registers torch.ops.fastlayers)
import fastlayers.functional as FF

ops = torch.ops.fastlayers
CLEAN_ERRORS = (RuntimeError, ValueError, TypeError)
CONV_OPS = ("conv2d", "conv2d_relu", "conv2d_relu_max_pool2d")
BIG = 2**62  # fits int64, but doubles, squares and sums of it do not
TOO_BIG = 2**63  # does not fit int64
# A tensor on another device than the input's: meta everywhere, a GPU where fastlayers has CUDA kernels.
OTHER_DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() and fastlayers.has_cuda() else [])


# --- configs and calls ------------------------------------------------------------------------------

def base_config(op, api, dtype=torch.float32, n=2, groups=2, cg=2, ocg=3, kernel=(3, 3), h=7, w=6):
    """A valid call of `op` through `api`: small sizes, float32 on the CPU."""
    cfg = {"op": op, "api": api, "dtype": dict.fromkeys("xwb", dtype), "device": dict.fromkeys("xwb", "cpu"), "raw": {}}
    if op in CONV_OPS:
        cfg.update(x=[n, cg * groups, h, w], w=[ocg * groups, cg, *kernel], b=[ocg * groups], stride=[1, 2],
                   padding=[1, 0] if api == "functional" else [1, 1, 0, 0], dilation=[1, 1], groups=groups)
        if op == "conv2d_relu_max_pool2d":
            cfg.update(pool_kernel_size=[2, 2], pool_stride=[2, 1], pool_padding=[1, 0], pool_dilation=[1, 1], ceil_mode=False)
    elif op == "max_pool2d":
        cfg.update(x=[n, cg, h, w], w=None, b=None, kernel_size=list(kernel), stride=[2, 1], padding=[1, 0], dilation=[1, 1], ceil_mode=True)
    elif op in ("linear", "linear_relu"):
        cfg.update(x=[n, h, w], w=[ocg, w], b=[ocg])
    else:
        cfg.update(x=[n, h, w], w=None, b=None)
    return cfg


def _tensor(cfg, name):
    if name in cfg["raw"]:
        return cfg["raw"][name]
    shape, dtype, device = cfg[name], cfg["dtype"][name], cfg["device"][name]
    if shape is None:
        return None
    if device == "meta":
        return torch.empty(shape, dtype=dtype, device="meta")
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.ones(shape, dtype=dtype, device=device)


def call(cfg):
    """Calls the op as the config says; returns what it returns."""
    x, w, b = (_tensor(cfg, name) for name in "xwb")
    op, api = cfg["op"], cfg["api"]
    lib = FF if api == "functional" else ops
    if op in CONV_OPS:
        args = [x, w, b, cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"]]
        if op == "conv2d_relu_max_pool2d":
            args += [cfg["pool_kernel_size"], cfg["pool_stride"], cfg["pool_padding"], cfg["pool_dilation"], cfg["ceil_mode"]]
        return getattr(lib, op)(*args)
    if op == "max_pool2d":
        return lib.max_pool2d(x, cfg["kernel_size"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["ceil_mode"])
    if op in ("linear", "linear_relu"):
        return getattr(lib, op)(x, w, b)
    return lib.relu(x)


def problem(op, error, words):
    """None if `error` (an exception, or None if the call returned) is a clean error naming the op
    and every word; else what is wrong with it."""
    if error is None:
        return "returned instead of raising"
    message = str(error)
    if not isinstance(error, CLEAN_ERRORS):
        return f"raised {type(error).__name__}, not RuntimeError/ValueError/TypeError: {message}"
    if f"fastlayers.{op}" not in message and f"fastlayers::{op}" not in message:
        return f"the message does not name fastlayers.{op}: {message}"
    missing = [word for word in words if word not in message]
    return f"the message lacks {missing}: {message}" if missing else None


# --- mutations: (name, applies to (cfg) -> bool, mutates (cfg) in place, words) ------------------

def _set(**fields):
    def mutate(cfg):
        for key, value in fields.items():
            if key in ("dtype", "device"):
                cfg[key].update(value)
            else:
                cfg[key] = value
    return mutate


def _conv(cfg):
    return cfg["op"] in CONV_OPS


def _functional(cfg):
    return cfg["api"] == "functional"


def _op_api(cfg):
    return cfg["api"] == "op"


def _pad_total(cfg, dim):
    p = cfg["padding"]
    if isinstance(p, list) and len(p) == 4:
        return p[2 * dim] + p[2 * dim + 1]
    return 2 * p[dim]


def _bigger_kernel(cfg):
    cfg["w"][2] = cfg["x"][-2] + _pad_total(cfg, 0) + 1


def _dilated_past_input(cfg):
    cfg["w"][2] = max(cfg["w"][2], 2)
    cfg["dilation"] = [cfg["x"][-2] + _pad_total(cfg, 0) + 1, 1]


def _groups_not_dividing_in(cfg):
    cfg["groups"] = cfg["x"][-3] + 1


def _groups_not_dividing_out(cfg):
    cfg["groups"] = 2
    cfg["x"][-3] = 2 * cfg["w"][1]
    cfg["w"][0] = 3
    cfg["b"] = [3] if cfg["b"] is not None else None


def _negative(cfg, key, value=-1):
    v = cfg[key]
    cfg[key] = [value] + list(v[1:]) if isinstance(v, list) else value


def _pool_key(cfg, name):
    return ("pool_" + name) if cfg["op"] == "conv2d_relu_max_pool2d" else name


def _pool(name, value):
    def mutate(cfg):
        key = _pool_key(cfg, name)
        cfg[key] = value(cfg[key]) if callable(value) else value
    return mutate


def _pool_padding_past_half(cfg):
    kernel, padding = cfg[_pool_key(cfg, "kernel_size")], cfg[_pool_key(cfg, "padding")]
    cfg[_pool_key(cfg, "padding")] = [padding[0], kernel[1] // 2 + 1]


def _pool_window_past_input(cfg):
    key = _pool_key(cfg, "kernel_size")
    plane = cfg["x"][-2] if cfg["op"] == "max_pool2d" else cfg["x"][-2] + _pad_total(cfg, 0)
    cfg[key] = [plane + 2, 1]
    cfg[_pool_key(cfg, "padding")] = [0, 0]
    cfg[_pool_key(cfg, "dilation")] = [1, 1]
    cfg["ceil_mode"] = False


def _is_pool(cfg):
    return cfg["op"] in ("max_pool2d", "conv2d_relu_max_pool2d")


def _has_weight(cfg):
    return cfg["op"] not in ("max_pool2d", "relu")


def _has_bias(cfg):
    return _has_weight(cfg) and cfg["b"] is not None


def _other_float(cfg):
    return torch.float32 if cfg["dtype"]["x"] == torch.float64 else torch.float64


def _always(cfg):
    return True


MUTATIONS = [
    # ranks
    ("input 2-D", lambda c: c["op"] in CONV_OPS + ("max_pool2d",), lambda c: c.update(x=c["x"][-2:]), ["input", "2-D"]),
    ("input 5-D", lambda c: c["op"] in CONV_OPS + ("max_pool2d",), lambda c: c.update(x=[1] + c["x"] if len(c["x"]) == 4 else [1, 1] + c["x"]), ["input", "5-D"]),
    ("input 0-D", lambda c: c["op"] in ("linear", "linear_relu"), _set(x=[]), ["input", "0-D"]),
    ("weight 3-D", _conv, lambda c: c.update(w=c["w"][:3]), ["weight", "3-D"]),
    ("weight 5-D", _conv, lambda c: c.update(w=c["w"] + [1]), ["weight", "5-D"]),
    ("weight 1-D", lambda c: c["op"] in ("linear", "linear_relu"), lambda c: c.update(w=c["w"][1:]), ["weight", "1-D"]),
    ("weight 3-D linear", lambda c: c["op"] in ("linear", "linear_relu"), lambda c: c.update(w=[1] + c["w"]), ["weight", "3-D"]),
    # channels, features and groups
    ("weight in_channels", _conv, lambda c: c["w"].__setitem__(1, c["w"][1] + 1), ["weight.size(1)"]),
    ("in_features", lambda c: c["op"] in ("linear", "linear_relu"), lambda c: c["w"].__setitem__(1, c["w"][1] + 1), ["in_features"]),
    ("groups do not divide in_channels", _conv, _groups_not_dividing_in, ["in_channels", "divisible by groups"]),
    ("groups do not divide out_channels", _conv, _groups_not_dividing_out, ["out_channels", "divisible by groups"]),
    ("groups zero", _conv, _set(groups=0), ["groups"]),
    ("groups negative", _conv, _set(groups=-2), ["groups"]),
    ("groups float", _conv, _set(groups=2.0), ["groups"]),
    ("out_channels zero", _conv, lambda c: c.update(w=[0] + c["w"][1:], b=None, groups=1, x=c["x"][:-3] + [c["w"][1]] + c["x"][-2:]), ["out_channels"]),
    ("empty planes", lambda c: _conv(c) and len(c["x"]) == 4 and c["x"][0] > 0, lambda c: c["x"].__setitem__(-2, 0), ["planes"]),
    # conv geometry
    ("stride zero", _conv, _set(stride=[0, 1]), ["stride", "positive"]),
    ("stride negative", _conv, _set(stride=[1, -2]), ["stride", "positive"]),
    ("stride float", _conv, _set(stride=1.5), ["stride"]),
    ("stride of 3 values", _conv, _set(stride=[1, 1, 1]), ["stride"]),
    ("stride past int64", _conv, _set(stride=[TOO_BIG, 1]), ["stride"]),
    ("dilation zero", _conv, _set(dilation=[1, 0]), ["dilation", "positive"]),
    ("dilation negative", _conv, _set(dilation=[-1, 1]), ["dilation", "positive"]),
    ("dilated kernel past int64", _conv, lambda c: c.update(dilation=[BIG, 1], w=c["w"][:2] + [3, c["w"][3]]), ["dilated kernel", "overflows int64"]),
    ("dilated kernel past the input", _conv, _dilated_past_input, ["kernel", "padded input"]),
    ("kernel past the input", _conv, _bigger_kernel, ["kernel", "padded input"]),
    ("kernel of zero size", _conv, lambda c: c["w"].__setitem__(2, 0), ["kernel"]),
    ("padding negative", _conv, lambda c: _negative(c, "padding"), ["padding", "non-negative"]),
    ("padding past int64", _conv, lambda c: c.update(padding=[BIG, BIG] if _functional(c) else [BIG, BIG, 0, 0]), ["padded height", "overflows int64"]),
    ("padding string", lambda c: _conv(c) and _functional(c), _set(padding="full"), ["padding", "'full'"]),
    ("padding same with a stride", lambda c: _conv(c) and _functional(c), _set(padding="same", stride=[2, 1]), ["padding='same'", "stride"]),
    ("padding of 3 values", _conv, _set(padding=[1, 1, 1]), ["padding"]),
    ("padding of 2 values for the op", lambda c: _conv(c) and _op_api(c), _set(padding=[1, 1]), ["padding", "4 values"]),
    # pools (max_pool2d, and the fused op's pool_* arguments)
    ("pool kernel zero", _is_pool, _pool("kernel_size", [0, 2]), ["kernel_size", "positive"]),
    ("pool kernel negative", _is_pool, _pool("kernel_size", [2, -1]), ["kernel_size", "positive"]),
    ("pool stride zero", _is_pool, _pool("stride", [0, 1]), ["stride", "positive"]),
    ("pool stride negative", _is_pool, _pool("stride", [1, -1]), ["stride", "positive"]),
    ("pool padding negative", _is_pool, _pool("padding", [-1, 0]), ["padding", "non-negative"]),
    ("pool padding past half the window", _is_pool, _pool_padding_past_half, ["padding", "at most half"]),
    ("pool dilation zero", _is_pool, _pool("dilation", [1, 0]), ["dilation", "positive"]),
    ("pool window past the input", _is_pool, _pool_window_past_input, ["output", "can't be empty"]),
    ("pool kernel of 3 values", _is_pool, _pool("kernel_size", [2, 2, 2]), ["kernel_size"]),
    ("pool kernel float", lambda c: _is_pool(c) and _functional(c), _pool("kernel_size", 2.5), ["kernel_size"]),
    ("pool window past int64", _is_pool, lambda c: (_pool("kernel_size", lambda k: [3, k[1]])(c), _pool("padding", lambda p: [0, p[1]])(c),
                                                     _pool("dilation", [BIG, 1])(c)), ["dilated window", "overflows int64"]),
    ("pool kernel near int64", _is_pool, _pool("kernel_size", [BIG, 1]), []),
    ("pool kernel past int64", _is_pool, _pool("kernel_size", [TOO_BIG, 2]), ["kernel_size"]),
    ("pool empty channels", lambda c: c["op"] == "max_pool2d", lambda c: c["x"].__setitem__(-3, 0), ["non-zero C, H and W"]),
    ("pool empty plane", lambda c: c["op"] == "max_pool2d", lambda c: c["x"].__setitem__(-1, 0), ["non-zero C, H and W"]),
    # dtypes
    ("weight dtype", _has_weight, lambda c: c["dtype"].update(w=_other_float(c)), ["weight", "same dtype as input"]),
    ("bias dtype", _has_bias, lambda c: c["dtype"].update(b=_other_float(c)), ["bias", "same dtype as input"]),
    ("int64", _always, _set(dtype=dict.fromkeys("xwb", torch.int64)), ["input", "torch.int64"]),
    ("int32", _always, _set(dtype=dict.fromkeys("xwb", torch.int32)), ["input", "torch.int32"]),
    ("uint8", _always, _set(dtype=dict.fromkeys("xwb", torch.uint8)), ["input", "torch.uint8"]),
    ("bool", _always, _set(dtype=dict.fromkeys("xwb", torch.bool)), ["input", "torch.bool"]),
    # float16 and bfloat16 are taken (widened to float32 on CPU), but not mixed with another dtype
    ("float16 weight", _has_weight, _set(dtype={"x": torch.bfloat16, "w": torch.float16, "b": torch.bfloat16}), ["weight", "same dtype as input", "torch.float16"]),
    ("bfloat16 bias", _has_bias, _set(dtype={"x": torch.float16, "w": torch.float16, "b": torch.bfloat16}), ["bias", "same dtype as input", "torch.bfloat16"]),
    ("complex64", _always, _set(dtype=dict.fromkeys("xwb", torch.complex64)), ["input", "torch.complex64"]),
    # devices
    *[(f"weight on {d}", _has_weight, _set(device={"w": d}), ["weight", "same device as input"]) for d in OTHER_DEVICES],
    *[(f"bias on {d}", _has_bias, _set(device={"b": d}), ["bias", "same device as input"]) for d in OTHER_DEVICES],
    # bias
    ("bias one too long", _has_bias, lambda c: c["b"].__setitem__(0, c["b"][0] + 1), ["bias"]),
    ("bias 2-D", _has_bias, lambda c: c.update(b=c["b"] + [1]), ["bias"]),
    ("bias 0-D", _has_bias, _set(b=[]), ["bias"]),
    ("bias a list", _has_bias, lambda c: c["raw"].update(b=[0.0] * c["b"][0]), ["bias"]),
    # not a tensor
    ("input None", _functional, lambda c: c["raw"].update(x=None), ["input"]),
    ("input None to the op", _op_api, lambda c: c["raw"].update(x=None), []),  # torch's dispatcher answers
    ("input a list", _always, lambda c: c["raw"].update(x=[[1.0, 2.0]]), []),
    ("weight None", _has_weight, lambda c: c["raw"].update(w=None), ["weight"]),
]

# The backward ops, called directly with what no forward produces.
X, GY4 = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 6, 6)
W = torch.randn(6, 4, 3, 3)
CONV_GEOMETRY = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
# A 2 x 2 pool at stride 2, as the pooled gradients and max_pool2d_backward take it.
POOL_2X2 = ([2, 2], [2, 2], [0, 0], [1, 1], False)
BACKWARD_CASES = [
    ("relu_backward", "shapes differ", lambda: ops.relu_backward(torch.randn(3), torch.randn(4)), ["output", "[3]", "[4]"]),
    ("relu_backward", "dtypes differ", lambda: ops.relu_backward(torch.randn(3), torch.randn(3, dtype=torch.float64)), ["output", "same dtype"]),
    ("relu_backward", "integer grad", lambda: ops.relu_backward(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64)), ["grad_output", "torch.int64"]),
    ("max_pool2d_backward", "grad_output not the pool's output", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 3, 3), torch.zeros(1, 1, 3, 3, dtype=torch.int64), [1, 1, 4, 4], *POOL_2X2), ["grad_output", "[1, 1, 2, 2]"]),
    ("max_pool2d_backward", "padding over half the kernel", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, 4, 4], [2, 2], [2, 2], [2, 2], [1, 1], False), ["padding", "at most half"]),
    ("max_pool2d_backward", "int32 indices", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32), [1, 1, 4, 4], *POOL_2X2), ["indices", "torch.int32"]),
    ("max_pool2d_backward", "indices shape", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 3, dtype=torch.int64), [1, 1, 4, 4], *POOL_2X2), ["indices"]),
    ("max_pool2d_backward", "input_size of 3 values", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 4, 4], *POOL_2X2), ["input_size"]),
    ("max_pool2d_backward", "negative input_size", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, -4, 4], *POOL_2X2), ["input_size"]),
    ("max_pool2d_backward", "input_size past int64", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [1, 1, BIG, BIG], *POOL_2X2), ["input_size"]),
    ("max_pool2d_backward", "batch differs", lambda: ops.max_pool2d_backward(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), [2, 1, 4, 4], *POOL_2X2), ["grad_output", "[2, 1, 2, 2]"]),
    ("conv2d_grad_weight_pooled", "grad not the pool's output", lambda: ops.conv2d_grad_weight_pooled(torch.randn(2, 6, 2, 2), torch.zeros(2, 6, 2, 2, dtype=torch.int64), X, [6, 4, 3, 3], *CONV_GEOMETRY, *POOL_2X2, None), ["grad_output", "pool's output size"]),
    ("conv2d_grad_weight_pooled", "float indices", lambda: ops.conv2d_grad_weight_pooled(torch.randn(2, 6, 3, 3), torch.zeros(2, 6, 3, 3), X, [6, 4, 3, 3], *CONV_GEOMETRY, *POOL_2X2, None), ["indices", "torch.float32"]),
    ("conv2d_grad_weight_pooled", "grad channels differ", lambda: ops.conv2d_grad_weight_pooled(torch.randn(2, 5, 3, 3), torch.zeros(2, 5, 3, 3, dtype=torch.int64), X, [6, 4, 3, 3], *CONV_GEOMETRY, *POOL_2X2, None), ["grad_output", "output channels"]),
    ("conv2d_grad_weight_pooled", "mask shape", lambda: ops.conv2d_grad_weight_pooled(torch.randn(2, 6, 3, 3), torch.zeros(2, 6, 3, 3, dtype=torch.int64), X, [6, 4, 3, 3], *CONV_GEOMETRY, *POOL_2X2, torch.randn(2, 6, 3, 2)), ["relu_output"]),
    ("conv2d_grad_input_pooled", "pool stride zero", lambda: ops.conv2d_grad_input_pooled(torch.randn(2, 6, 3, 3), torch.zeros(2, 6, 3, 3, dtype=torch.int64), W, [2, 4, 8, 8], *CONV_GEOMETRY, [2, 2], [0, 2], [0, 0], [1, 1], False, None), ["stride", "positive"]),
    ("conv2d_grad_input_pooled", "grad channels differ", lambda: ops.conv2d_grad_input_pooled(torch.randn(2, 5, 3, 3), torch.zeros(2, 5, 3, 3, dtype=torch.int64), W, [2, 4, 8, 8], *CONV_GEOMETRY, *POOL_2X2, None), ["grad_output", "output channels"]),
    ("conv2d_grad_input", "grad_output shape", lambda: ops.conv2d_grad_input(torch.randn(2, 6, 5, 5), W, list(X.shape), *CONV_GEOMETRY, None), ["grad_output", "[2, 6, 6, 6]"]),
    ("conv2d_grad_input", "negative input_size", lambda: ops.conv2d_grad_input(GY4, W, [2, 4, -8, 8], *CONV_GEOMETRY, None), ["input sizes", "non-negative"]),
    ("conv2d_grad_input", "relu_output shape", lambda: ops.conv2d_grad_input(GY4, W, list(X.shape), *CONV_GEOMETRY, torch.randn(2, 6, 6, 5)), ["relu_output"]),
    ("conv2d_grad_input", "weight dtype", lambda: ops.conv2d_grad_input(GY4, W.double(), list(X.shape), *CONV_GEOMETRY, None), ["weight", "same dtype"]),
    ("conv2d_grad_weight", "weight_size", lambda: ops.conv2d_grad_weight(GY4, X, [6, 4, 3, 2], *CONV_GEOMETRY, None), ["grad_output"]),
    ("conv2d_grad_weight", "negative weight_size", lambda: ops.conv2d_grad_weight(GY4, X, [6, 4, 3, -3], *CONV_GEOMETRY, None), ["weight sizes", "non-negative"]),
    ("conv2d_grad_weight", "input dtype", lambda: ops.conv2d_grad_weight(GY4, X.long(), list(W.shape), *CONV_GEOMETRY, None), ["input", "same dtype"]),
    ("conv2d_grad_weight", "dilation past int64", lambda: ops.conv2d_grad_weight(GY4, X, list(W.shape), [1, 1], [0, 0, 0, 0], [BIG, 1], 1, None), ["overflows int64"]),
    ("bias_grad", "channel_dim past the rank", lambda: ops.bias_grad(torch.randn(3, 4), None, 2), ["channel_dim"]),
    ("bias_grad", "channel_dim below the rank", lambda: ops.bias_grad(torch.randn(3, 4), None, -3), ["channel_dim"]),
    ("bias_grad", "0-D grad_output", lambda: ops.bias_grad(torch.tensor(1.0), None, 0), ["0-D"]),
    ("bias_grad", "relu_output shape", lambda: ops.bias_grad(torch.randn(3, 4), torch.randn(4, 3), 1), ["relu_output"]),
    ("linear_grad_input", "grad_output width", lambda: ops.linear_grad_input(torch.randn(3, 5), torch.randn(4, 6), None), ["out_features=4"]),
    ("linear_grad_input", "weight 1-D", lambda: ops.linear_grad_input(torch.randn(3, 5), torch.randn(5), None), ["weight", "2-D"]),
    ("linear_grad_weight", "leading dimensions", lambda: ops.linear_grad_weight(torch.randn(3, 4), torch.randn(2, 6), None), ["leading dimensions"]),
    ("linear_grad_weight", "input 0-D", lambda: ops.linear_grad_weight(torch.randn(3, 4), torch.tensor(1.0), None), ["leading dimensions"]),
]


def applicable(cfg):
    return [m for m in MUTATIONS if m[1](cfg)]


def mutated(cfg, mutation):
    out = copy.deepcopy({k: v for k, v in cfg.items() if k != "raw"})
    out["raw"] = dict(cfg["raw"])
    mutation[2](out)
    return out


def corpus():
    """(name, op, call, words) for every fixed case: each applicable mutation of a base config
    of every op and API (unbatched too, and float64), then the backward ops' cases."""
    cases = []
    for op in ("linear", "linear_relu", "relu", "max_pool2d", *CONV_OPS):
        bases = [base_config(op, "functional"), base_config(op, "op"), base_config(op, "functional", torch.float64, groups=1)]
        if op not in ("linear", "linear_relu", "relu"):
            bases[2]["x"] = bases[2]["x"][1:]  # unbatched
        for i, base in enumerate(bases):
            call(base)  # the base itself must be valid
            for mutation in applicable(base):
                cfg = mutated(base, mutation)
                cases.append((f"{op}/{base['api']}#{i}: {mutation[0]}", op, lambda cfg=cfg: call(cfg), mutation[3]))
    for op, name, fn, words in BACKWARD_CASES:
        cases.append((f"{op}: {name}", op, fn, words))
    return cases


def main():
    """Runs every corpus case; one JSON line each on stdout. The case's name goes to stderr before
    it runs, so that a crash shows which case it was."""
    for name, op, fn, words in corpus():
        print(f"running {name}", file=sys.stderr, flush=True)
        error = None
        try:
            fn()
        except Exception as e:  # noqa: BLE001  (every exception is judged by problem())
            error = e
        print(json.dumps({"case": name, "op": op, "error": type(error).__name__ if error else None,
                          "message": str(error) if error else None, "problem": problem(op, error, words)}), flush=True)


if __name__ == "__main__":
    main()
