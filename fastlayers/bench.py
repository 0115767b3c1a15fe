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
with torch layers and with fastlayers layers holding the same weights. With --compile,
torch.compile of the torch side is a second peer. With --memory, each model's peak training-step
memory is measured against torch's, each side in a fresh process (see memory_probe). Each case is checked against torch (outputs,
input and weight gradients, or the step losses) before it is timed; a mismatch prints FAIL, the
case is skipped and the exit status is 1. Results: a table on stdout (with GFLOP/s against the
measured FMA peak), a JSON document {"machine": {...}, "rows": [...]} (default
bench/results/cpu-latest.json) and a bar chart of the ratios next to it (.png, needs matplotlib).

    python -m fastlayers.bench [--quick] [--filter cifar] [--threads 1] [--compile] [--memory]
                               [--no-gemm] [--no-models] [--no-plot] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys

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

TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
MODES = ("fwd", "fwd+bwd", "step")
SIDES = ("fastlayers", "torch", "compile")
GEMM_SIZES, GEMM_SIZES_QUICK = (64, 128, 256, 512, 1024, 2048), (64, 256, 1024)
STEP_GEOMEAN_MODELS = ("mlp", "cifar_cnn", "lenet", "mnist_cnn")
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


def compiled(fn):
    """torch.compile(fn) on a fresh cache: with dynamic=False every shape is a recompilation, and
    past the recompile limit torch would silently run the function eagerly."""
    torch.compiler.reset()
    return torch.compile(fn, dynamic=False)


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
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return None


def layer_callables(case, dtype, device, with_compile):
    """For one layer or GEMM case: {(mode, side): zero-argument callable}, the first validation
    error and the torch.compile error, if any."""
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
        fns["compile"] = compiled(fns["torch"])
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
    return callables, next((e for e in errors if e), None), warm_compiled(callables)


def model_callables(name, dtype, device, with_compile):
    """Training-step callables for the torch-layers and fastlayers-layers models (with_compile: and
    for torch.compile of the torch-layers model) with the same weights and data, the validation
    error (losses of the first two steps) and the torch.compile error, if any."""
    cls = MODELS[name]
    x = torch.randn(cls.batch_size, *cls.input_shape, dtype=dtype, device=device)
    if name == "regression_mlp":
        target = torch.randn(cls.batch_size, 1, dtype=dtype, device=device)
    else:
        target = torch.randint(0, 10, (cls.batch_size,), device=device)
    ref = build(name, "torch").to(device, dtype)
    fast = build(name, "fastlayers").to(device, dtype)
    fast.load_state_dict(ref.state_dict())

    def train_step(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = model.loss(model(x), target)
            loss.backward()
            opt.step()
            return loss.detach()
        return run

    callables = {("step", "torch"): train_step(ref), ("step", "fastlayers"): train_step(fast)}
    if with_compile:
        twin = build(name, "torch").to(device, dtype)
        twin.load_state_dict(ref.state_dict())
        callables["step", "compile"] = train_step(compiled(twin))
    losses = {}
    for side in ("torch", "fastlayers"):
        torch.manual_seed(0)  # the same dropout masks on both sides
        losses[side] = torch.stack([callables["step", side]() for _ in range(2)])
    error = compare("losses of two steps", losses["fastlayers"], losses["torch"], TOLERANCE[dtype])
    return callables, error, warm_compiled(callables)


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
    cls = MODELS[name]
    torch.manual_seed(0)
    x = torch.randn(cls.batch_size, *cls.input_shape, dtype=dtype, device=device)
    if name == "regression_mlp":
        target = torch.randn(cls.batch_size, 1, dtype=dtype, device=device)
    else:
        target = torch.randint(0, 10, (cls.batch_size,), device=device)
    model = build(name, layers).to(device, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        model.loss(model(x), target).backward()
        opt.step()

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


def make_row(job, mode, times, common, peak, with_compile, compile_error):
    """One JSON row: times in microseconds, ratio = peer time / fastlayers time, GFLOP/s where the
    FLOPs are known, peak_fraction = fastlayers GFLOP/s / FMA peak."""
    (fast, fast_iqr), (eager, eager_iqr) = times["fastlayers"], times["torch"]
    flops = job["flops"].get(mode)
    gflops = flops / fast / 1e9 if flops else None
    row = {"op": job["op"], "model": job["model"], "mode": mode, "shape": job["shape"], **common,
           "median_us": fast * 1e6, "iqr_us": fast_iqr * 1e6, "torch_us": eager * 1e6, "torch_iqr_us": eager_iqr * 1e6,
           "ratio": eager / fast}
    if with_compile:
        comp, comp_iqr = times.get("compile", (None, None))
        row |= {"compile_us": comp and comp * 1e6, "compile_iqr_us": comp_iqr and comp_iqr * 1e6,
                "ratio_compile": comp and comp / fast, "compile_error": compile_error}
    return row | {"gflops": gflops, "torch_gflops": flops / eager / 1e9 if flops else None,
                  "peak_fraction": gflops / peak if gflops and peak else None}


def label(d):
    """'model op mode shape' of a job or row ('gemm n=...' for the GEMM sweep)."""
    parts = [d["op"], d["shape"]] if d["op"] == "gemm" else [d["model"], d["op"], d.get("mode"), d["shape"]]
    return " ".join(p for p in parts if p)


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    return f"{us:.1f} us" if us < 1e3 else f"{us / 1e3:.2f} ms"


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def print_table(rows, with_compile):
    header = ["model", "op", "shape", "mode", "fastlayers", "torch", "ratio"]
    header += (["torch.compile", "ratio"] if with_compile else []) + ["GFLOP/s", "% peak"]
    lines = []
    for r in rows:
        line = [r["model"] or "-", r["op"], r["shape"], r["mode"], fmt_time(r["median_us"]), fmt_time(r["torch_us"]),
                f"{r['ratio']:.2f}"]
        if with_compile:
            line += [fmt_time(r["compile_us"]), f"{r['ratio_compile']:.2f}"] if r["compile_us"] else ["failed", "-"]
        lines.append(line + [fmt(r["gflops"], ".1f"), fmt(r["peak_fraction"], ".1%")])
    widths = [max(len(line[i]) for line in [header] + lines) for i in range(len(header))]
    for line in [header, ["-" * w for w in widths]] + lines:
        print("  ".join(s.ljust(w) if i < 4 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))))

    print("\nratios: peer time / fastlayers time (>1: fastlayers faster)")
    groups = [(f"geometric mean ratio, {mode}", [r for r in rows if r["mode"] == mode and r["op"] != "gemm"])
              for mode in MODES]
    groups += [("geometric mean ratio, gemm sweep", [r for r in rows if r["op"] == "gemm"]),
               (f"models' step geomean ({', '.join(STEP_GEOMEAN_MODELS)})",
                [r for r in rows if r["mode"] == "step" and r["model"] in STEP_GEOMEAN_MODELS])]
    for name, group in groups:
        if group:
            text = f"{name}: {geomean([r['ratio'] for r in group]):.2f} over {len(group)} cases"
            compiled_ratios = [r["ratio_compile"] for r in group if r.get("ratio_compile")]
            if compiled_ratios:
                text += f"; vs torch.compile {geomean(compiled_ratios):.2f} over {len(compiled_ratios)}"
            print(text)
    backward = [r for r in rows if r["mode"] == "fwd+bwd"]
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastlayers.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing runs and GEMM sweep, for smoke tests")
    parser.add_argument("--filter", default="", metavar="SUBSTR", help="only cases whose model or op name contains SUBSTR")
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first (default: torch's current setting)")
    parser.add_argument("--out", metavar="PATH", help="JSON results path (default bench/results/<device>-latest.json); the plot goes to PATH with .png")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the torch side, as a second peer (slow)")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model training steps")
    parser.add_argument("--no-gemm", action="store_true", help="skip the n x n GEMM sweep")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the PNG bar chart of the ratios")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--memory", action="store_true", help="also measure each model's peak training-step memory "
                        "against torch's (fresh processes; CPU: Linux only)")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory comparison (--memory), no timing")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "LAYERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        memory_probe(*args.memory_probe, getattr(torch, args.dtype), args.device)
        return 0
    if args.memory and args.device == "cpu" and not os.path.exists("/proc/self/clear_refs"):
        print("error: --memory on CPU reads /proc/self (Linux)", file=sys.stderr)
        return 2

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device (or this torch build has no CUDA)", file=sys.stderr)
        return 2
    if args.device == "cuda" and not fastlayers.has_cuda():
        print("error: --device cuda, but this fastlayers build has no CUDA kernels", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads, dtype = torch.get_num_threads(), getattr(torch, args.dtype)
    min_run_time = 0.02 if args.quick else 1.0
    out_path = args.out or os.path.join("bench", "results", f"{args.device}-{'memory' if args.memory_only else 'latest'}.json")
    cpu = args.device == "cpu"
    common = {"dtype": args.dtype, "device": device_name(args.device), "threads": threads,
              "torch_version": torch.__version__, "git_commit": git_commit(), "cpu_isa": fastlayers.cpu_isa() if cpu else None}

    layers = {name: model_layers(name) for name in MODELS}
    cases = merge_cases([case for model_cases, _ in layers.values() for case in model_cases])
    if not args.no_gemm:
        cases += [gemm_case(n) for n in (GEMM_SIZES_QUICK if args.quick else GEMM_SIZES)]
    jobs = [case | {"make": lambda c=case: layer_callables(c, dtype, args.device, args.compile)} for case in cases]
    if not args.no_models:
        jobs += [{"model": name, "op": "train_step", "shape": f"x={dims((cls.batch_size, *cls.input_shape))}",
                  "modes": ("step",), "flops": {"step": layers[name][1]},
                  "make": lambda name=name: model_callables(name, dtype, args.device, args.compile)}
                 for name, cls in MODELS.items()]
    jobs = [job for job in jobs if args.filter in (job["model"] or "") or args.filter in job["op"]]
    if args.memory_only:
        jobs, args.memory = [], True
    elif not jobs:
        print(f"error: no case matches --filter {args.filter!r}", file=sys.stderr)
        return 2

    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f} before starting; other processes on these cores "
              "skew the timings", file=sys.stderr)
    # The float32 FMA peak of the CPU instruction set in use; no peak for float64 or CUDA. The best
    # of five short runs: other processes on the cores can only lower it.
    peak = max(fastlayers._C.fma_peak_gflops(threads, 0.1) for _ in range(5)) if cpu and dtype == torch.float32 else None
    torch.manual_seed(0)
    rows, failures = [], []
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {label(job)}", file=sys.stderr, flush=True)
        callables, error, compile_error = job["make"]()
        if error:
            failures.append(f"FAIL {label(job)}: {error}")
            print(failures[-1], flush=True)
            continue
        if compile_error:
            print(f"torch.compile failed, {label(job)}: {compile_error}", file=sys.stderr, flush=True)
        for mode in job["modes"]:
            times = measure_sides({side: callables[mode, side] for side in SIDES if (mode, side) in callables},
                                  threads, min_run_time)
            rows.append(make_row(job, mode, times, common, peak, args.compile, compile_error))

    memory = []
    if args.memory:
        names = [name for name in MODELS if args.filter in name or args.filter in "train_step"]
        print(f"peak memory: {len(names)} models, each side in a fresh process", file=sys.stderr, flush=True)
        memory = memory_rows(names, args.dtype, args.device, threads, common)

    peers = "torch eager and torch.compile" if args.compile else "torch eager"
    peak_text = f", FMA peak {peak:.0f} GFLOP/s" if peak else ""
    print(f"\nfastlayers {fastlayers.__version__} ({common['cpu_isa'] or args.device}{peak_text}) vs {peers} "
          f"(torch {torch.__version__}), {common['device']}, {threads} threads, {args.dtype}, "
          f"best of {ROUNDS} interleaved rounds' medians (blocked_autorange, {min_run_time:g} s per case and side)\n")
    if rows:
        print_table(rows, args.compile)
    if memory:
        print_memory_table(memory)
    if rows or memory:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        machine = {**common, "fastlayers_version": fastlayers.__version__, "peak_gflops": peak,
                   "min_run_time": min_run_time, "compile": args.compile}
        with open(out_path, "w") as f:
            json.dump({"machine": machine, "rows": rows, "memory": memory}, f, indent=1)
        print(f"\nwrote {len(rows)} timing rows and {len(memory)} memory rows to {out_path}")
    if rows:
        if not args.no_plot:
            plot(rows, os.path.splitext(out_path)[0] + ".png",
                 f"fastlayers vs {peers}: {common['device']}, {threads} threads, {args.dtype}")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
