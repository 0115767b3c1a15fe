"""Kernel speed benchmark: fastlayers against torch eager (and torch.compile) on the models' layers, a GEMM sweep and training steps.

The layer cases are read off fastlayers.models: one batch through each torch model, with a forward
hook on every module, records each Conv2d, Linear and MaxPool2d call. A Conv2d or Linear whose
output goes straight into a ReLU is the fused fastlayers op (conv2d_relu, linear_relu), compared
with torch's unfused ops; a Conv2d -> ReLU -> MaxPool2d chain also gives a conv2d_relu_max_pool2d
case where fastlayers.functional has that op. Identical cases of several models are merged. Each
is timed forward and forward+backward with torch.utils.benchmark.Timer.blocked_autorange on
fastlayers' op and on torch's, with the same inputs and the same thread count, the sides taken in
turn over a few rounds and each keeping its best round's median (see ROUNDS). The GEMM sweep times
torch.ops.fastlayers.linear(x, w, None) against torch.mm(x, w.t()) for n x n operands. Then one
full training step per model (forward, loss, backward, SGD(lr=0.01, momentum=0.9).step()) is timed
with torch layers and with fastlayers layers holding the same weights, and so is each model's
inference on one sample (mode "infer": the forward pass in eval mode under torch.no_grad, batch
1, where the blocked GEMM's packing and per-call costs weigh most). With --compile,
torch.compile of the torch side is a second peer. With --memory, each model's peak training-step
memory is measured against torch's, each side in a fresh process (see memory_probe). Each case is checked against torch (outputs,
input and weight gradients, or the step losses) before it is timed; a mismatch prints FAIL, the
case is skipped and the exit status is 1. Results: a table on stdout (with GFLOP/s against the
measured FMA peak), a JSON document {"machine": {...}, "rows": [...]} (default
bench/results/cpu-latest.json) and a bar chart of the ratios next to it (.png, needs matplotlib).

On CUDA (--device cuda, or auto on a machine with a GPU and fastlayers' CUDA kernels), TF32 is off,
the copy bandwidth and cuBLAS's GEMM throughput are measured first as the device's ceilings, and
the run adds: the "large" cases (GEMMs of 4096^3 in float32 and 8192^3 in bfloat16, relu and
max_pool2d on a 256 MiB activation), each in its own dtype; each model's whole training step
captured in a CUDA graph on both sides (mode "step-graph"); TFLOP/s and GB/s against those
ceilings. torch.compile's peer is mode="max-autotune-no-cudagraphs" on the layers and
"reduce-overhead" on the training steps there.

    python -m fastlayers.bench [--quick] [--filter cifar] [--threads 1] [--compile] [--memory]
                               [--no-gemm] [--no-models] [--no-large] [--shard K/N] [--no-plot]
                               [--dtype float32] [--device auto] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import traceback

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.benchmark import Timer

import fastlayers
import fastlayers.functional as FF
from fastlayers.models import MODELS, build


def split_pool_kwargs(kwargs):
    """conv2d_relu_max_pool2d's keywords as (the conv's, the pool's): pool_* and ceil_mode go to
    the pool, without the prefix."""
    is_pool = lambda k: k.startswith("pool_") or k == "ceil_mode"
    conv = {k: v for k, v in kwargs.items() if not is_pool(k)}
    pool = {k.removeprefix("pool_"): v for k, v in kwargs.items() if is_pool(k)}
    return conv, pool


def torch_conv2d_relu_max_pool2d(x, w, b, **kwargs):
    """torch's three ops for fastlayers' conv2d_relu_max_pool2d."""
    conv, pool = split_pool_kwargs(kwargs)
    return F.max_pool2d(torch.relu(F.conv2d(x, w, b, **conv)), **pool)


TORCH_OPS = {
    "linear": F.linear,
    "linear_relu": lambda x, w, b: torch.relu(F.linear(x, w, b)),
    "conv2d": F.conv2d,
    "conv2d_relu": lambda x, w, b, **kw: torch.relu(F.conv2d(x, w, b, **kw)),
    "max_pool2d": F.max_pool2d,
    "conv2d_relu_max_pool2d": torch_conv2d_relu_max_pool2d,
    "gemm": lambda x, w, b: torch.mm(x, w.t()),
    "relu": torch.relu,
}


# Where a ReLU's input is within rounding of zero, its gradient is 0 or not depending on that
# rounding; where two values in a pool window are within rounding of each other, so is which one
# gets the gradient. Either side is right, so the reference backward of the fused ops follows
# fastlayers' forward: its ReLU mask (output > 0) and, for the pool, its indices.
def _relu_reference_backward(op):
    def backward(args, kwargs, grad, fast_output):
        TORCH_OPS[op](*args, **kwargs).backward(grad * (fast_output > 0))
    return backward


def _conv2d_relu_max_pool2d_reference_backward(args, kwargs, grad, fast_output):
    _, indices = FF.conv2d_relu_max_pool2d(*args, **kwargs, return_indices=True)
    act = F.conv2d(*args, **split_pool_kwargs(kwargs)[0]).flatten(2)
    picked = act.gather(2, indices.flatten(2)).view_as(indices)
    picked.backward(grad * (fast_output > 0))


REFERENCE_BACKWARD = {
    "linear_relu": _relu_reference_backward("linear"),
    "conv2d_relu": _relu_reference_backward("conv2d"),
    "conv2d_relu_max_pool2d": _conv2d_relu_max_pool2d_reference_backward,
}

# compare()'s rtol, and its atol before compare() scales it by the reference's largest magnitude
# (so small elements, such as most of a gradient's, are held to the largest one's rounding).
# fastlayers accumulates float16 and bfloat16 in float32 and rounds each output once; 2e-2 is a
# few roundings of bfloat16's 8 significant bits (2^-8 = 0.4%), and more than float16's 11 need.
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 2e-2, torch.float16: 2e-2}
DTYPES = ("float32", "float64", "bfloat16", "float16")
MODES = ("fwd", "fwd+bwd", "step", "step-graph", "infer")
STEP_MODES = ("step", "step-graph")
SIDES = ("fastlayers", "torch", "compile")
# A peer's error, as a row records it, and as the run reports it.
ERROR_TEXT = {"compile_error": "torch.compile failed", "graph_error": "CUDA graph capture failed"}
GEMM_SIZES, GEMM_SIZES_QUICK = (64, 128, 256, 512, 1024, 2048), (64, 256, 1024)
STEP_GEOMEAN_MODELS = ("mlp", "cifar_cnn", "lenet", "mnist_cnn")
# The large cases (CUDA only), each in its own dtype: GEMMs as (dtype, n), and the activation of
# the memory-bound relu and max_pool2d cases, 64 x 64 x 128 x 128 float32 = 256 MiB.
LARGE_GEMMS = (("float32", 4096), ("bfloat16", 8192))
LARGE_ACTIVATION, LARGE_ACTIVATION_DTYPE = (64, 64, 128, 128), "float32"
INDEX_BYTES = 8  # max_pool2d's indices are int64
# torch.compile's mode per device for the layer and GEMM cases and for whole models ("steps":
# training steps and inference; None: the default mode). On CUDA the layers' peer autotunes
# Triton templates against cuBLAS and cuDNN, and the steps' peer replays CUDA graphs, as both
# sides of the step-graph mode do.
COMPILE_MODES = {"cpu": {"layers": None, "steps": None},
                 "cuda": {"layers": "max-autotune-no-cudagraphs", "steps": "reduce-overhead"}}
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before a training step is captured
# The hyper-parameters a case lists, with the values it leaves out (None: always listed).
CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
POOL_DEFAULTS = {"kernel_size": None, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}


def fast_op(op):
    return torch.ops.fastlayers.linear if op == "gemm" else getattr(FF, op)


def hyper_parameters(module, defaults):
    """module's attributes named in defaults (an equal pair as one int), those at their default left out."""
    values = {k: getattr(module, k) for k in defaults}
    values = {k: v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v for k, v in values.items()}
    return {k: v for k, v in values.items() if v != defaults[k]}


def dims(shape):
    return "x".join(map(str, shape))


def layer_case(model, op, x, layer, kwargs, flops=None):
    """A layer case: input shape, weight shape (None for a pool), kwargs for both sides, and the
    FLOPs per mode (forward+backward: forward, grad input and grad weight, as much each)."""
    w = None if layer is None else tuple(layer.weight.shape)
    text = " ".join([f"x={dims(x.shape)}"] + ([f"w={dims(w)}"] if w else []) + [f"{k}={v}" for k, v in kwargs.items()])
    return {"model": model, "op": op, "shape": text, "x": tuple(x.shape), "w": w,
            "bias": layer is not None and layer.bias is not None, "kwargs": kwargs,
            "modes": ("fwd", "fwd+bwd"), "flops": {"fwd": flops, "fwd+bwd": 3 * flops} if flops else {}}


def gemm_case(n):
    return {"model": None, "op": "gemm", "shape": f"n={n}", "x": (n, n), "w": (n, n), "bias": False, "kwargs": {},
            "modes": ("fwd",), "flops": {"fwd": 2 * n**3}}


def memory_bytes(op, mode, shape, kwargs, dtype):
    """The bytes one relu or max_pool2d call must read and write (fwd+bwd: both passes), for its
    GB/s. relu reads x and writes y; its backward reads the output gradient and y and writes the
    input gradient. max_pool2d reads x and writes y and the int64 indices (torch's and fastlayers'
    both write them); its backward reads the output gradient and the indices and writes the input
    gradient. The pool's output size comes from torch's max_pool2d on a meta tensor."""
    n = math.prod(shape)
    if op == "relu":
        fwd, bwd = 2 * n * dtype.itemsize, 3 * n * dtype.itemsize
    else:
        pooled = math.prod(F.max_pool2d(torch.empty(shape, device="meta"), **kwargs).shape)
        fwd = bwd = n * dtype.itemsize + pooled * (dtype.itemsize + INDEX_BYTES)
    return fwd + bwd if mode == "fwd+bwd" else fwd


def large_cases():
    """The CUDA-only cases on large operands, model "large", each in its own dtype (named in its
    shape text, and carried as "dtype"): the LARGE_GEMMS against cuBLAS, and relu and max_pool2d
    (2 x 2 windows) on LARGE_ACTIVATION, forward and forward+backward, with the bytes they move."""
    cases = [gemm_case(n) | {"model": "large", "shape": f"n={n} {dtype}", "dtype": dtype} for dtype, n in LARGE_GEMMS]
    x, dtype, modes = LARGE_ACTIVATION, LARGE_ACTIVATION_DTYPE, ("fwd", "fwd+bwd")
    for op, kwargs in (("relu", {}), ("max_pool2d", {"kernel_size": 2})):
        text = " ".join([f"x={dims(x)}"] + [f"{k}={v}" for k, v in kwargs.items()] + [dtype])
        nbytes = {mode: memory_bytes(op, mode, x, kwargs, getattr(torch, dtype)) for mode in modes}
        cases.append({"model": "large", "op": op, "shape": text, "x": x, "w": None, "bias": False, "kwargs": kwargs,
                      "modes": modes, "flops": {}, "bytes": nbytes, "dtype": dtype})
    return cases


def model_layers(name):
    """The layer cases of model `name` and the FLOPs of its training step (convolutions and linear
    layers only), read off one forward pass of its torch build on a batch of batch_size inputs."""
    cls, model = MODELS[name], build(name, "torch")
    calls = []  # (module, input, output) in call order
    hooks = [m.register_forward_hook(lambda m, args, out: calls.append((m, args[0], out)))
             for m in model.modules() if next(m.children(), None) is None]
    # With grad enabled, a layer's input requires grad exactly where a training step computes its grad input.
    model(torch.randn(cls.batch_size, *cls.input_shape))
    for hook in hooks:
        hook.remove()

    def consumer(i):
        """The module of the call after call i, if it takes call i's output."""
        return calls[i + 1][0] if i + 1 < len(calls) and calls[i + 1][1] is calls[i][2] else None

    cases, step_flops = [], 0
    for i, (m, x, y) in enumerate(calls):
        if isinstance(m, nn.MaxPool2d):
            cases.append(layer_case(name, "max_pool2d", x, None, hyper_parameters(m, POOL_DEFAULTS)))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            flops = 2 * y.numel() * math.prod(m.weight.shape[1:])
            step_flops += flops * (3 if x.requires_grad else 2)  # no grad input pass for the model's input
            op = "conv2d" if isinstance(m, nn.Conv2d) else "linear"
            kwargs = hyper_parameters(m, CONV_DEFAULTS) if op == "conv2d" else {}
            relu = isinstance(consumer(i), nn.ReLU)
            cases.append(layer_case(name, f"{op}_relu" if relu else op, x, m, kwargs, flops))
            pool = consumer(i + 1) if op == "conv2d" and relu else None
            if isinstance(pool, nn.MaxPool2d) and hasattr(FF, "conv2d_relu_max_pool2d"):
                # fastlayers' names: pool_ in front, but for ceil_mode
                pool_kwargs = {k if k == "ceil_mode" else "pool_" + k: v
                               for k, v in hyper_parameters(pool, POOL_DEFAULTS).items()}
                cases.append(layer_case(name, "conv2d_relu_max_pool2d", x, m, kwargs | pool_kwargs, flops))
    return cases, step_flops


def merge_cases(cases):
    """Identical (op, shape) cases of several models merged into one, their model names joined by commas."""
    merged = {}
    for case in cases:
        key = (case["op"], case["shape"], case["bias"])
        if key in merged:
            merged[key]["model"] += "," + case["model"]
        else:
            merged[key] = dict(case)
    return list(merged.values())


def compare(what, got, want, tol):
    """None when got matches want (allclose with atol scaled by want's largest magnitude), else a
    message with the largest absolute difference."""
    scale = max(1.0, want.abs().max().item())
    if got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol * scale):
        return None
    if got.shape != want.shape:
        return f"{what}: shape {list(got.shape)} vs torch {list(want.shape)}"
    diff = (got - want).abs().max().item()
    return f"{what}: max |diff| {diff:.3g} (torch max |value| {scale:.3g}, tolerance {tol * scale:.3g} + {tol:g}*|value|)"


def compiled(fn, mode=None):
    """torch.compile(fn, mode=mode) on a fresh cache: with dynamic=False every shape is a
    recompilation, and past the recompile limit torch would silently run the function eagerly."""
    torch.compiler.reset()
    return torch.compile(fn, dynamic=False, mode=mode)


def one_line(e):
    """An exception as one line of at most 300 characters, for a row or a FAIL line."""
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def warm_compiled(callables):
    """Runs each torch.compile side callable twice (compiling it, then warm). If one fails (no C++
    compiler, an inductor error), removes them all and returns the error in one line."""
    keys = [key for key in callables if key[1] == "compile"]
    try:
        for key in keys:
            callables[key]()
            callables[key]()
    except Exception as e:  # only this peer is lost; the case is still timed against torch eager
        for key in keys:
            del callables[key]
        return one_line(e)
    return None


def layer_callables(case, dtype, device, with_compile, compile_mode=None):
    """For one layer, GEMM or large case: {(mode, side): zero-argument callable}, the first
    validation error, and with_compile {"compile_error": the torch.compile error or None}."""
    x = torch.randn(case["x"], dtype=dtype, device=device)
    args = [x]
    if case["w"] is not None:
        fan_in = math.prod(case["w"][1:])
        w = torch.randn(case["w"], dtype=dtype, device=device) / math.sqrt(fan_in)
        b = torch.randn(case["w"][0], dtype=dtype, device=device) / math.sqrt(fan_in) if case["bias"] else None
        args += [w, b]
    leaves = [t for t in args if t is not None]
    backward = "fwd+bwd" in case["modes"]
    for t in leaves:
        t.requires_grad_(backward)
    kwargs, tol = case["kwargs"], TOLERANCE[dtype]
    fns = {"fastlayers": fast_op(case["op"]), "torch": TORCH_OPS[case["op"]]}
    if with_compile:
        fns["compile"] = compiled(fns["torch"], compile_mode)
    grad = torch.randn_like(fns["torch"](*args, **kwargs)) if backward else None

    def forward(fn):
        def run():
            with torch.no_grad():
                return fn(*args, **kwargs)
        return run

    def forward_backward(fn):
        def run():
            for t in leaves:
                t.grad = None
            out = fn(*args, **kwargs)
            out.backward(grad)
            return out
        return run

    wrap = {"fwd": forward, "fwd+bwd": forward_backward}
    callables = {(mode, side): wrap[mode](fn) for mode in case["modes"] for side, fn in fns.items()}
    checked = "fwd+bwd" if backward else "fwd"
    results = {}
    for side in ("fastlayers", "torch"):
        out = callables[checked, side]().detach()
        results[side] = [out] + ([t.grad.clone() for t in leaves] if backward else [])
    if backward and case["op"] in REFERENCE_BACKWARD:
        for t in leaves:
            t.grad = None
        REFERENCE_BACKWARD[case["op"]](args, kwargs, grad, results["fastlayers"][0])
        results["torch"][1:] = [t.grad.clone() for t in leaves]
    names = ["output", "grad input", "grad weight", "grad bias"]
    errors = (compare(n, f, t, tol) for n, f, t in zip(names, results["fastlayers"], results["torch"]))
    return callables, next((e for e in errors if e), None), {"compile_error": warm_compiled(callables)} if with_compile else {}


def step_batch(name, dtype, device):
    """A batch of model `name`'s inputs and training targets (class indices, or values for
    regression_mlp), on the device."""
    cls = MODELS[name]
    x = torch.randn(cls.batch_size, *cls.input_shape, dtype=dtype, device=device)
    if name == "regression_mlp":
        target = torch.randn(cls.batch_size, 1, dtype=dtype, device=device)
    else:
        target = torch.randint(0, 10, (cls.batch_size,), device=device)
    return x, target


def sgd_step(model, x, target):
    """A callable running one training step of model on (x, target) with its own SGD(lr=0.01,
    momentum=0.9) and returning the loss."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run():
        opt.zero_grad(set_to_none=True)
        loss = model.loss(model(x), target)
        loss.backward()
        opt.step()
        return loss.detach()
    return run


def twins(name, dtype, device, layers):
    """Model `name` built from each of `layers` ("torch" or "fastlayers"), in that order, all with
    the first one's weights."""
    models = [build(name, kind).to(device, dtype) for kind in layers]
    for model in models[1:]:
        model.load_state_dict(models[0].state_dict())
    return models


def model_callables(name, dtype, device, with_compile, compile_mode=None):
    """Training-step callables for the torch-layers and fastlayers-layers models (with_compile: and
    for torch.compile of the torch-layers model) with the same weights and data, the validation
    error (losses of the first two steps) and, with_compile, {"compile_error": the torch.compile
    error or None}."""
    x, target = step_batch(name, dtype, device)
    ref, fast, *twin = twins(name, dtype, device, ("torch", "fastlayers") + (("torch",) if with_compile else ()))
    callables = {("step", "torch"): sgd_step(ref, x, target), ("step", "fastlayers"): sgd_step(fast, x, target)}
    if with_compile:
        callables["step", "compile"] = sgd_step(compiled(twin[0], compile_mode), x, target)
    losses = {}
    for side in ("torch", "fastlayers"):
        torch.manual_seed(0)  # the same dropout masks on both sides
        losses[side] = torch.stack([callables["step", side]() for _ in range(2)])
    error = compare("losses of two steps", losses["fastlayers"], losses["torch"], TOLERANCE[dtype])
    return callables, error, {"compile_error": warm_compiled(callables)} if with_compile else {}


def inference_callables(name, dtype, device, with_compile, compile_mode=None):
    """Inference callables for the torch-layers and fastlayers-layers models (with_compile: and
    torch.compile of the torch-layers model) on one sample: the forward pass in eval mode under
    torch.no_grad, the same weights and input; the validation error (the two outputs) and,
    with_compile, {"compile_error": the torch.compile error or None}."""
    x = torch.randn(1, *MODELS[name].input_shape, dtype=dtype, device=device)
    models = [m.eval() for m in twins(name, dtype, device, ("torch", "fastlayers") + (("torch",) if with_compile else ()))]
    sides = {"torch": models[0], "fastlayers": models[1]}
    if with_compile:
        sides["compile"] = compiled(models[2], compile_mode)

    def infer(model):
        def run():
            with torch.no_grad():
                return model(x)
        return run

    callables = {("infer", side): infer(model) for side, model in sides.items()}
    error = compare("output", callables["infer", "fastlayers"](), callables["infer", "torch"](), TOLERANCE[dtype])
    return callables, error, {"compile_error": warm_compiled(callables)} if with_compile else {}


class GraphedStep:
    """A training step captured in a CUDA graph (see captured_step); a call replays the graph and
    returns its static loss. It holds the step, whose model, optimizer state and static inputs
    live outside the graph's memory pool and must outlive the graph, which reads and writes them."""

    def __init__(self, graph, step, loss):
        self.graph, self.step, self.loss = graph, step, loss

    def __call__(self):
        self.graph.replay()
        return self.loss


def captured_step(model, x, target):
    """model's training step (zero_grad, forward, loss, backward, SGD step) captured in a CUDA
    graph, as torch.cuda.graph's documentation captures a whole network: GRAPH_WARMUP_STEPS eager
    steps on a side stream first (they create the momentum buffers and any lazily built state),
    then the capture, whose gradients are allocated in the graph's pool as zero_grad set them to
    None. x and target are the graph's static inputs. Returns (the GraphedStep, the warm-up steps'
    losses)."""
    step = sgd_step(model, x, target)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        warm_losses = [step() for _ in range(GRAPH_WARMUP_STEPS)]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss = step()
    return GraphedStep(graph, step, loss), warm_losses


def graph_callables(name, dtype, device):
    """For model `name` on CUDA: each side's training step captured in a CUDA graph (see
    captured_step) as the callable to time, the validation error, and {"graph_error": the sides
    whose capture failed, with their errors, or None}. Each captured side's losses over the
    warm-up steps and two replays must match as many eager steps of the torch model from the same
    weights and seed (CUDA's random numbers, dropout's, are the same in a graph as in eager
    execution)."""
    x, target = step_batch(name, dtype, device)
    ref, fast, graphed_ref = twins(name, dtype, device, ("torch", "fastlayers", "torch"))
    eager = sgd_step(ref, x, target)
    torch.manual_seed(0)
    want = torch.stack([eager() for _ in range(GRAPH_WARMUP_STEPS + 2)])
    callables, capture_errors, errors = {}, [], []
    for side, model in (("torch", graphed_ref), ("fastlayers", fast)):
        torch.manual_seed(0)
        try:
            replay, losses = captured_step(model, x, target)
            losses += [replay().clone() for _ in range(2)]
        except Exception as e:  # recorded in the row; the other side is still timed
            # An error inside the capture makes ending it fail too: keep the first error as well.
            first = f" (after {one_line(e.__context__)})" if e.__context__ else ""
            capture_errors.append(f"{side}: {one_line(e)}{first}")
            continue
        callables["step-graph", side] = replay
        errors.append(compare(f"{side} graphed losses of {len(losses)} steps vs torch eager", torch.stack(losses), want,
                              TOLERANCE[dtype]))
    return callables, next((e for e in errors if e), None), {"graph_error": "; ".join(capture_errors) or None}


# Peak memory of a training step, measured in a fresh process per model and side (--memory). On
# CPU it is resident memory: glibc is told to serve blocks of 64 KiB and more with mmap and to
# return them on free, so the resident set follows live memory, and /proc/self/clear_refs resets
# its high-water mark (VmHWM). Both sides import both libraries before measuring.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _proc_status_bytes(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def memory_probe(name, layers, dtype, device):
    """Peak memory of SGD training steps of model `name` built from `layers`, in bytes above what
    the process held before the first step (the model and a batch already built):
    first_steps: over the first three steps (gradients, momentum buffers, activations, kernel
    workspaces and any lazily built caches); step: over one step after those (activations and
    workspaces). Prints one JSON line; run it in a fresh process (see memory_rows)."""
    torch.manual_seed(0)
    x, target = step_batch(name, dtype, device)
    step = sgd_step(build(name, layers).to(device, dtype), x, target)
    if device == "cuda":
        def current():
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()

        def reset():
            torch.cuda.reset_peak_memory_stats()

        def peak():
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
    else:
        def current():
            return _proc_status_bytes("VmRSS")

        def reset():
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

        def peak():
            return _proc_status_bytes("VmHWM")

    reset()
    before = current()
    for _ in range(3):
        step()
    first_steps = peak() - before
    reset()
    before = current()
    step()
    print(json.dumps({"first_steps": first_steps, "step": peak() - before}))


def memory_rows(names, dtype_name, device, threads, common):
    """One row per model: memory_probe of each side in its own process; memory_ratio is
    fastlayers / torch (below 1: fastlayers needs less)."""
    rows = []
    for name in names:
        result = {}
        for side in ("torch", "fastlayers"):
            cmd = [sys.executable, "-m", "fastlayers.bench", "--memory-probe", name, side,
                   "--dtype", dtype_name, "--device", device, "--threads", str(threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MEMORY_ENV}, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"memory probe {name} {side} failed:\n{out.stderr}")
            result[side] = json.loads(out.stdout.strip().splitlines()[-1])
        mib = {side: {k: v / 2**20 for k, v in r.items()} for side, r in result.items()}
        rows.append({"op": "train_step", "model": name, "mode": "memory", **common,
                     "torch_first_steps_mib": mib["torch"]["first_steps"], "first_steps_mib": mib["fastlayers"]["first_steps"],
                     "torch_step_mib": mib["torch"]["step"], "step_mib": mib["fastlayers"]["step"],
                     "memory_ratio": mib["fastlayers"]["first_steps"] / mib["torch"]["first_steps"]})
    return rows


def print_memory_table(rows):
    print("\npeak memory above the built model (MiB): first three training steps, and one step after them; "
          "ratio = fastlayers / torch")
    header = ["model", "fastlayers", "torch", "ratio", "fastlayers, 1 step", "torch, 1 step"]
    lines = [[r["model"], f"{r['first_steps_mib']:.1f}", f"{r['torch_first_steps_mib']:.1f}", f"{r['memory_ratio']:.2f}",
              f"{r['step_mib']:.2f}", f"{r['torch_step_mib']:.2f}"] for r in rows]
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths]] + lines:
        print("  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))))


# Each case's sides are timed in ROUNDS rounds that take the sides in turn, each a
# blocked_autorange of min_run_time / ROUNDS, and each side keeps its round of lowest median. Other
# processes on these shared cores only ever slow a round down, so a burst of load costs one
# round of one side instead of skewing the ratio, and both sides see the same stretch of time.
ROUNDS = 3


def measure_sides(fns, threads, min_run_time):
    """{side: (median, IQR)} in seconds for the callables {side: fn}, interleaved (see ROUNDS)."""
    best = {}
    for _ in range(ROUNDS):
        for side, fn in fns.items():
            m = Timer("fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time / ROUNDS)
            if side not in best or m.median < best[side].median:
                best[side] = m
    return {side: (m.median, m.iqr) for side, m in best.items()}


# The CUDA device's ceilings, measured at the start of a run: the copy bandwidth (the memory-bound
# cases' GB/s are fractions of it) and cuBLAS's GEMM throughput in each dtype whose rows count
# FLOPs (their TFLOP/s are fractions of it). Each is the best of CEILING_ROUNDS medians: other
# work on the device can only lower it.
COPY_BYTES = 2**30
CEILING_GEMM_N = 8192
CEILING_ROUNDS, CEILING_RUN_TIME = 5, 0.2


def disable_tf32():
    """float32 matmuls and convolutions in IEEE float32 on CUDA, in cuBLAS, cuDNN and
    torch.compile's kernels alike: TF32's 10-bit mantissa would time another computation and miss
    the float32 tolerance."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def cuda_settings():
    """What CUDA timings depend on besides the GPU's name: versions, memory and the math settings."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    matmul = torch.backends.cuda.matmul
    return {"cuda_version": torch.version.cuda, "cudnn_version": torch.backends.cudnn.version(),
            "compute_capability": f"{props.major}.{props.minor}", "gpu_memory_gib": props.total_memory / 2**30,
            "allow_tf32_matmul": matmul.allow_tf32, "allow_tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "allow_bf16_reduced_precision_reduction": matmul.allow_bf16_reduced_precision_reduction,
            "allow_fp16_reduced_precision_reduction": matmul.allow_fp16_reduced_precision_reduction,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}


def best_median(fn, threads):
    """The lowest median, in seconds, of CEILING_ROUNDS blocked_autorange runs of fn."""
    return min(Timer("fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=CEILING_RUN_TIME).median
               for _ in range(CEILING_ROUNDS))


def copy_gbps(threads):
    """The device-to-device copy bandwidth in GB/s: dst.copy_(src) between two COPY_BYTES
    buffers, counting the bytes read and those written (2 * COPY_BYTES per call)."""
    src = torch.zeros(COPY_BYTES // 4, device="cuda")
    dst = torch.empty_like(src)
    return 2 * COPY_BYTES / best_median(lambda: dst.copy_(src), threads) / 1e9


def cublas_tflops(dtype, threads):
    """cuBLAS's GEMM throughput in dtype, in TFLOP/s: torch.mm(a, b.t()) for CEILING_GEMM_N^3, the
    GEMM peer's call, under the run's math settings (TF32 off)."""
    n = CEILING_GEMM_N
    a = torch.randn(n, n, dtype=dtype, device="cuda")
    b = torch.randn(n, n, dtype=dtype, device="cuda")
    return 2 * n**3 / best_median(lambda: torch.mm(a, b.t()), threads) / 1e12


def cuda_ceilings(dtype_names, threads):
    """{"copy_gbps": ..., "cublas_tflops": {dtype name: ...}} for the dtypes named, measured now;
    the buffers are handed back to the device before the cases run."""
    ceilings = {"copy_gbps": copy_gbps(threads),
                "cublas_tflops": {name: cublas_tflops(getattr(torch, name), threads) for name in dtype_names}}
    torch.cuda.empty_cache()
    return ceilings


def ceilings_text(ceilings):
    """The ceilings for the table's title: ', copy 3000 GB/s, cuBLAS float32 50.0 TFLOP/s'."""
    tflops = ", ".join(f"{name} {v:.1f}" for name, v in ceilings["cublas_tflops"].items())
    return f", copy {ceilings['copy_gbps']:.0f} GB/s" + (f", cuBLAS {tflops} TFLOP/s" if tflops else "")


def div(a, b, unit=1):
    """a / b / unit, or None where either is unknown (no FLOP or byte count, a side that did not run)."""
    return a / b / unit if a and b else None


def make_row(job, mode, times, common, peak, ceilings, with_compile, errors):
    """One JSON row: times in microseconds, ratio = peer time / fastlayers time, GFLOP/s where the
    FLOPs are known, peak_fraction = fastlayers GFLOP/s / FMA peak; errors ({"compile_error": ...}
    or {"graph_error": ...}) as they are. A side that could not run (a failed CUDA graph capture)
    has None times and ratios. With ceilings (CUDA): TFLOP/s and GB/s, fastlayers' as fractions
    of cuBLAS's TFLOP/s in the row's dtype and of the copy bandwidth."""
    fast, fast_iqr = times.get("fastlayers", (None, None))
    eager, eager_iqr = times.get("torch", (None, None))
    us = lambda t: t and t * 1e6
    row = {"op": job["op"], "model": job["model"], "mode": mode, "shape": job["shape"], **common}
    row["dtype"] = job.get("dtype", common["dtype"])
    row |= {"median_us": us(fast), "iqr_us": us(fast_iqr), "torch_us": us(eager), "torch_iqr_us": us(eager_iqr),
            "ratio": div(eager, fast)}
    if with_compile:
        comp, comp_iqr = times.get("compile", (None, None))
        row |= {"compile_us": us(comp), "compile_iqr_us": us(comp_iqr), "ratio_compile": div(comp, fast)}
    row |= errors
    flops = job["flops"].get(mode)
    gflops = div(flops, fast, 1e9)
    row |= {"gflops": gflops, "torch_gflops": div(flops, eager, 1e9), "peak_fraction": gflops / peak if gflops and peak else None}
    if ceilings:
        nbytes = job.get("bytes", {}).get(mode)
        tflops, gbps = div(flops, fast, 1e12), div(nbytes, fast, 1e9)
        cublas = ceilings["cublas_tflops"].get(row["dtype"])
        row |= {"tflops": tflops, "torch_tflops": div(flops, eager, 1e12), "cublas_fraction": div(tflops, cublas),
                "gbps": gbps, "torch_gbps": div(nbytes, eager, 1e9), "copy_fraction": div(gbps, ceilings["copy_gbps"])}
    return row


def label(d):
    """'model op mode shape' of a job or row ('gemm n=...' for the GEMM sweep)."""
    parts = [d["op"], d["shape"]] if d["op"] == "gemm" and not d["model"] else [d["model"], d["op"], d.get("mode"), d["shape"]]
    return " ".join(p for p in parts if p)


def resolve_device(requested, cuda_available, fastlayers_cuda):
    """--device's value as ("cpu" or "cuda", None), or (requested, error message) where it cannot
    run. auto is cuda where torch sees a CUDA device and fastlayers has its CUDA kernels, else cpu."""
    if requested == "auto":
        return ("cuda" if cuda_available and fastlayers_cuda else "cpu"), None
    if requested == "cuda" and not cuda_available:
        return requested, "error: --device cuda, but torch sees no CUDA device (or this torch build has no CUDA)"
    if requested == "cuda" and not fastlayers_cuda:
        return requested, "error: --device cuda, but this fastlayers build has no CUDA kernels"
    return requested, None


def parse_shard(text):
    """--shard's K/N as (K, N), 1 <= K <= N."""
    try:
        k, n = map(int, text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/4, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N, got {text!r}")
    return k, n


def device_name(device, cpuinfo="/proc/cpuinfo"):
    """The GPU's name, or the CPU's with its family and model numbers where /proc/cpuinfo has them:
    a virtual machine may name its CPU only "AMD EPYC", and the numbers tell its generations apart
    (family 25 model 17 is a Zen 4, family 26 a Zen 5)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def git_commit():
    """HEAD's short hash of the git checkout holding this file, with -dirty if it has changes; None
    outside a checkout."""
    def git(*args):
        try:
            out = subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True,
                                 cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    return commit and commit + ("-dirty" if git("status", "--porcelain") else "")


def fmt_time(us):
    """A time for the table; None is a side that could not run."""
    if us is None:
        return "failed"
    return f"{us:.1f} us" if us < 1e3 else f"{us / 1e3:.2f} ms"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def print_table(rows, with_compile, cuda):
    """The rows, then geometric mean ratios: per mode over the models' layers and steps, over the
    GEMM sweep, and over the steps of STEP_GEOMEAN_MODELS. CUDA rows show TFLOP/s and GB/s with
    their fractions of the ceilings; CPU rows GFLOP/s and the fraction of the FMA peak."""
    header = ["model", "op", "shape", "mode", "fastlayers", "torch", "ratio"]
    header += ["torch.compile", "ratio"] if with_compile else []
    header += ["TFLOP/s", "% cuBLAS", "GB/s", "% copy"] if cuda else ["GFLOP/s", "% peak"]
    lines = []
    for r in rows:
        line = [r["model"] or "-", r["op"], r["shape"], r["mode"], fmt_time(r["median_us"]), fmt_time(r["torch_us"]),
                fmt(r["ratio"], ".2f")]
        if with_compile:
            if r["compile_us"]:
                line += [fmt_time(r["compile_us"]), fmt(r["ratio_compile"], ".2f")]
            else:  # its compilation failed, or no torch.compile peer (the step-graph mode)
                line += ["failed" if r.get("compile_error") else "-", "-"]
        if cuda:
            line += [fmt(r["tflops"], ".2f"), fmt(r["cublas_fraction"], ".1%"),
                     fmt(r["gbps"], ".0f"), fmt(r["copy_fraction"], ".1%")]
        else:
            line += [fmt(r["gflops"], ".1f"), fmt(r["peak_fraction"], ".1%")]
        lines.append(line)
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths]] + lines:
        print("  ".join(s.ljust(w) if i < 4 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))))

    timed = [r for r in rows if r["ratio"]]
    models = [r for r in timed if r["model"] != "large"]
    groups = [(f"geometric mean ratio, {mode}", [r for r in models if r["mode"] == mode and r["op"] != "gemm"])
              for mode in MODES]
    groups.append(("geometric mean ratio, gemm sweep", [r for r in models if r["op"] == "gemm"]))
    groups += [(f"models' {mode} geomean ({', '.join(STEP_GEOMEAN_MODELS)})",
                [r for r in models if r["mode"] == mode and r["model"] in STEP_GEOMEAN_MODELS]) for mode in STEP_MODES]
    if any(group for _, group in groups):
        print("\nratios: peer time / fastlayers time (>1: fastlayers faster)")
    for name, group in groups:
        if group:
            text = f"{name}: {geomean([r['ratio'] for r in group]):.2f} over {len(group)} cases"
            compiled_ratios = [r["ratio_compile"] for r in group if r.get("ratio_compile")]
            if compiled_ratios:
                text += f"; vs torch.compile {geomean(compiled_ratios):.2f} over {len(compiled_ratios)}"
            print(text)
    backward = [r for r in models if r["mode"] == "fwd+bwd"]
    if backward:
        worst = min(backward, key=lambda r: r["ratio"])
        print(f"minimum fwd+bwd ratio: {worst['ratio']:.2f}, {label(worst)}")


def plot(rows, path, title):
    """A horizontal bar per row from 1.0 to its ratio (log scale), a second bar for torch.compile."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import LogLocator, NullFormatter
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return
    peers = [("ratio", "torch eager / fastlayers")]
    if any(r.get("ratio_compile") for r in rows):
        peers.append(("ratio_compile", "torch.compile / fastlayers"))
    height = 0.8 / len(peers)
    fig = Figure(figsize=(10, 1.5 + 0.22 * len(rows) * len(peers)))
    ax = fig.subplots()
    for k, (key, name) in enumerate(peers):
        ratios = [r.get(key) or math.nan for r in rows]
        ax.barh([i + (k - (len(peers) - 1) / 2) * height for i in range(len(rows))], [v - 1 for v in ratios],
                height=height, left=1.0, label=name)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # ticks 0.5, 1, 2, 5, 10...
    ax.xaxis.set_major_formatter("{x:g}")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("peer time / fastlayers time (>1: fastlayers faster)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    print(f"wrote {path}")


def write_results(path, machine, rows, memory):
    """The JSON document {"machine": ..., "rows": ..., "memory": ...} at path, its folder made if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"machine": machine, "rows": rows, "memory": memory}, f, indent=1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastlayers.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing runs and GEMM sweep, for smoke tests")
    parser.add_argument("--filter", default="", metavar="SUBSTR", help="only cases whose model or op name contains SUBSTR "
                        "(the large cases' model is 'large'), or whose mode does (step-graph)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first (default: torch's current setting)")
    parser.add_argument("--out", metavar="PATH", help="JSON results path (default bench/results/<device>-latest.json); the plot goes to PATH with .png")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the torch side, as a second peer (slow)")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model training steps")
    parser.add_argument("--no-gemm", action="store_true", help="skip the n x n GEMM sweep")
    parser.add_argument("--no-large", action="store_true", help="skip the large GEMM, relu and max_pool2d cases (CUDA only)")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N", help="only the K-th of every N cases left by the "
                        "other options, to split a long run (--compile on CUDA) into pieces")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG bar chart of the ratios")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="the cases' dtype (the large cases have their own)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto (the default): cuda where torch sees a CUDA device and fastlayers has its CUDA "
                        "kernels, else cpu")
    parser.add_argument("--memory", action="store_true", help="also measure each model's peak training-step memory "
                        "against torch's (fresh processes; CPU: Linux only)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison (--memory), no timing")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    requested = args.device
    args.device, error = resolve_device(requested, torch.cuda.is_available(), fastlayers.has_cuda())
    if error:
        print(error, file=sys.stderr)
        return 2
    if args.memory_probe:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        memory_probe(*args.memory_probe, getattr(torch, args.dtype), args.device)
        return 0
    if args.memory and args.device == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        print("error: --memory on CPU reads /proc/self (Linux)", file=sys.stderr)
        return 2
    if requested == "auto" and args.device == "cpu" and torch.cuda.is_available():
        print("note: --device auto runs on the CPU: this fastlayers build has no CUDA kernels", file=sys.stderr)

    cuda = args.device == "cuda"
    if cuda:
        disable_tf32()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads, dtype = torch.get_num_threads(), getattr(torch, args.dtype)
    min_run_time = 0.02 if args.quick else 1.0
    out_path = args.out or os.path.join("bench", "results", f"{args.device}-{'memory' if args.memory_only else 'latest'}.json")
    cpu = args.device == "cpu"
    common = {"dtype": args.dtype, "device": device_name(args.device), "threads": threads,
              "torch_version": torch.__version__, "git_commit": git_commit(), "cpu_isa": fastlayers.cpu_isa() if cpu else None}
    compile_modes = COMPILE_MODES[args.device]

    layers = {name: model_layers(name) for name in MODELS}
    cases = merge_cases([case for model_cases, _ in layers.values() for case in model_cases])
    if not args.no_gemm:
        cases += [gemm_case(n) for n in (GEMM_SIZES_QUICK if args.quick else GEMM_SIZES)]
    if cuda and not args.no_large:
        cases += large_cases()
    jobs = [case | {"make": lambda c=case: layer_callables(c, getattr(torch, c.get("dtype", args.dtype)), args.device,
                                                           args.compile, compile_modes["layers"])}
            for case in cases]
    if not args.no_models:
        steps = [{"model": name, "op": "train_step", "shape": f"x={dims((cls.batch_size, *cls.input_shape))}"}
                 for name, cls in MODELS.items()]
        jobs += [step | {"modes": ("step",), "flops": {"step": layers[step["model"]][1]},
                         "make": lambda name=step["model"]: model_callables(name, dtype, args.device, args.compile,
                                                                            compile_modes["steps"])}
                 for step in steps]
        jobs += [{"model": name, "op": "inference", "shape": f"x={dims((1, *cls.input_shape))}", "modes": ("infer",),
                  "mode": "infer", "flops": {},  # mode: for --filter
                  "make": lambda name=name: inference_callables(name, dtype, args.device, args.compile,
                                                                compile_modes["steps"])}
                 for name, cls in MODELS.items()]
        if cuda:  # last: a capture that fails can leave the device in a state that fails what follows
            jobs += [step | {"modes": ("step-graph",), "mode": "step-graph",  # for label() and --filter
                             "flops": {"step-graph": layers[step["model"]][1]},
                             "make": lambda name=step["model"]: graph_callables(name, dtype, args.device)}
                     for step in steps]
    jobs = [job for job in jobs if any(args.filter in (job.get(key) or "") for key in ("model", "op", "mode"))]
    if args.shard:
        k, n = args.shard
        jobs = jobs[k - 1::n]
    if args.memory_only:
        jobs, args.memory = [], True
    elif not jobs:
        shard = f" and --shard {k}/{n}" if args.shard else ""
        print(f"error: no case matches --filter {args.filter!r}{shard}", file=sys.stderr)
        return 2

    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f} before starting; other processes on these cores "
              "skew the timings", file=sys.stderr)
    # The float32 FMA peak of the CPU instruction set in use; no peak for other dtypes or CUDA. The
    # best of five short runs: other processes on the cores can only lower it.
    peak = max(fastlayers._C.fma_peak_gflops(threads, 0.1) for _ in range(5)) if cpu and dtype == torch.float32 else None
    ceilings = None
    if cuda and jobs:
        flop_dtypes = sorted({job.get("dtype", args.dtype) for job in jobs if job["flops"]})
        gemms = f", cuBLAS {CEILING_GEMM_N}^3 in {', '.join(flop_dtypes)}" if flop_dtypes else ""
        print(f"ceilings: copy bandwidth{gemms}", file=sys.stderr, flush=True)
        ceilings = cuda_ceilings(flop_dtypes, threads)
    machine = {**common, "fastlayers_version": fastlayers.__version__, "peak_gflops": peak,
               "min_run_time": min_run_time, "compile": args.compile,
               "compile_modes": {key: mode or "default" for key, mode in compile_modes.items()}}
    if cuda:
        machine |= cuda_settings() | (ceilings or {})
    # A CUDA run that is cut short (a time limit per command, a kernel fault) keeps the rows timed
    # so far in PATH.partial.
    partial_path = out_path + ".partial" if cuda else None
    torch.manual_seed(0)
    rows, failures = [], []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {label(job)}", file=sys.stderr, flush=True)
        try:
            callables, error, errors = job["make"]()
            if error:
                failures.append(f"FAIL {label(job)}: {error}")
                print(failures[-1], flush=True)
                continue
            for key, message in errors.items():
                if message:
                    print(f"{ERROR_TEXT[key]}, {label(job)}: {message}", file=sys.stderr, flush=True)
            for mode in job["modes"]:
                times = measure_sides({side: callables[mode, side] for side in SIDES if (mode, side) in callables},
                                      threads, min_run_time)
                rows.append(make_row(job, mode, times, common, peak, ceilings, args.compile, errors))
        except Exception as e:  # one case lost, not the run: the rest is still timed and written
            traceback.print_exc()
            failures.append(f"FAIL {label(job)}: {one_line(e)}")
            print(failures[-1], flush=True)
        finally:
            if partial_path:
                write_results(partial_path, machine, rows, [])

    memory = []
    if args.memory:
        names = [name for name in MODELS if args.filter in name or args.filter in "train_step"]
        print(f"peak memory: {len(names)} models, each side in a fresh process", file=sys.stderr, flush=True)
        memory = memory_rows(names, args.dtype, args.device, threads, common)

    peers = "torch eager and torch.compile" if args.compile else "torch eager"
    if args.compile and cuda:
        peers += f" (layers: {compile_modes['layers']}, steps: {compile_modes['steps']})"
    peak_text = f", FMA peak {peak:.0f} GFLOP/s" if peak else ""
    if cuda:
        peak_text += (ceilings_text(ceilings) if ceilings else "") + ", TF32 off"
    print(f"\nfastlayers {fastlayers.__version__} ({common['cpu_isa'] or args.device}{peak_text}) vs {peers} "
          f"(torch {torch.__version__}), {common['device']}, {threads} threads, {args.dtype}, "
          f"best of {ROUNDS} interleaved rounds' medians (blocked_autorange, {min_run_time:g} s per case and side)\n")
    if rows:
        print_table(rows, args.compile, cuda)
    if memory:
        print_memory_table(memory)
    if rows or memory:
        write_results(out_path, machine, rows, memory)
        print(f"\nwrote {len(rows)} timing rows and {len(memory)} memory rows to {out_path}")
    if partial_path and os.path.exists(partial_path):
        os.remove(partial_path)
    if rows:
        if not args.no_plot:
            plot(rows, os.path.splitext(out_path)[0] + ".png",
                 f"fastlayers vs {peers}: {common['device']}, {threads} threads, {args.dtype}")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
