"""Kernel speed benchmark: fastlayers against torch eager, on the layer shapes of the five models.

For every layer of fastlayers.models (deduplicated), forward and forward+backward are timed with
torch.utils.benchmark.Timer.blocked_autorange on fastlayers' op and on torch's unfused equivalent
(a fused op such as conv2d_relu is compared with torch.relu(F.conv2d(...))), with the same inputs
and the same thread count. Then one full training step per model (forward, loss, backward,
SGD(lr=0.01, momentum=0.9).step()) is timed with torch layers and with fastlayers layers holding
the same weights. Each case is checked against torch (outputs, input and weight gradients, or the
step losses) before it is timed; a mismatch prints FAIL, the case is skipped and the exit status
is 1. Results: a table on stdout and a JSON list of rows (default bench/results/cpu-latest.json).

    python -m fastlayers.bench [--quick] [--filter cifar] [--threads 1] [--out PATH]
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
from torch.utils.benchmark import Timer

import fastlayers
import fastlayers.functional as FF
from fastlayers.models import MODELS, build

# (model, op, input shape, weight shape or None, keyword arguments); every layer has a bias.
LAYERS = [
    ("mlp", "linear_relu", (100, 784), (128, 784), {}),
    ("mlp", "linear", (100, 128), (10, 128), {}),
    ("regression_mlp", "linear_relu", (64, 10), (20, 10), {}),
    ("regression_mlp", "linear", (64, 20), (1, 20), {}),
    ("cifar_cnn", "conv2d_relu", (64, 3, 24, 24), (32, 3, 3, 3), {"padding": 1}),
    ("cifar_cnn", "max_pool2d", (64, 32, 24, 24), None, {"kernel_size": 2}),
    ("cifar_cnn", "conv2d_relu", (64, 32, 12, 12), (64, 32, 3, 3), {"padding": 1}),
    ("cifar_cnn", "max_pool2d", (64, 64, 12, 12), None, {"kernel_size": 2}),
    ("cifar_cnn", "linear_relu", (64, 2304), (128, 2304), {}),
    ("cifar_cnn", "linear", (64, 128), (10, 128), {}),
    ("lenet", "conv2d_relu", (64, 3, 32, 32), (6, 3, 5, 5), {}),
    ("lenet", "max_pool2d", (64, 6, 28, 28), None, {"kernel_size": 2, "stride": 2}),
    ("lenet", "conv2d_relu", (64, 6, 14, 14), (16, 6, 5, 5), {}),
    ("lenet", "max_pool2d", (64, 16, 10, 10), None, {"kernel_size": 2, "stride": 2}),
    ("lenet", "linear_relu", (64, 400), (120, 400), {}),
    ("lenet", "linear_relu", (64, 120), (84, 120), {}),
    ("lenet", "linear", (64, 84), (10, 84), {}),
    ("mnist_cnn", "conv2d_relu", (64, 1, 28, 28), (32, 1, 5, 5), {"stride": 1, "padding": 2}),
    ("mnist_cnn", "max_pool2d", (64, 32, 28, 28), None, {"kernel_size": 2, "stride": 2}),
    ("mnist_cnn", "conv2d_relu", (64, 32, 14, 14), (64, 32, 5, 5), {"padding": 2}),
    ("mnist_cnn", "max_pool2d", (64, 64, 14, 14), None, {"kernel_size": 2, "stride": 2}),
    ("mnist_cnn", "linear_relu", (64, 3136), (1024, 3136), {}),
    ("mnist_cnn", "linear", (64, 1024), (10, 1024), {}),
]

FAST_OPS = {"linear": FF.linear, "linear_relu": FF.linear_relu, "conv2d_relu": FF.conv2d_relu, "max_pool2d": FF.max_pool2d}
TORCH_OPS = {
    "linear": F.linear,
    "linear_relu": lambda x, w, b: torch.relu(F.linear(x, w, b)),
    "conv2d_relu": lambda x, w, b, **kw: torch.relu(F.conv2d(x, w, b, **kw)),
    "max_pool2d": F.max_pool2d,
}
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10}
MODES = ("fwd", "fwd+bwd", "step")


def layer_cases(pattern):
    """The LAYERS rows matching pattern, identical (op, shapes, arguments) merged into one case."""
    cases = {}
    for model, op, x_shape, w_shape, kwargs in LAYERS:
        key = (op, x_shape, w_shape, tuple(sorted(kwargs.items())))
        if key in cases:
            cases[key]["model"] += "," + model
        else:
            cases[key] = {"model": model, "op": op, "x": x_shape, "w": w_shape, "kwargs": kwargs}
    return [c for c in cases.values() if pattern in c["model"] or pattern in c["op"]]


def shape_str(case):
    text = "x=" + "x".join(map(str, case["x"]))
    if case["w"] is not None:
        text += " w=" + "x".join(map(str, case["w"]))
    return " ".join([text] + [f"{k}={v}" for k, v in case["kwargs"].items()])


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


def layer_callables(case, dtype, device):
    """For one case: {(mode, side): zero-argument callable} and the first validation error, if any."""
    x = torch.randn(case["x"], dtype=dtype, device=device)
    leaves = [x]
    if case["w"] is not None:
        fan_in = math.prod(case["w"][1:])
        w = torch.randn(case["w"], dtype=dtype, device=device) / math.sqrt(fan_in)
        b = torch.randn(case["w"][0], dtype=dtype, device=device) / math.sqrt(fan_in)
        leaves += [w, b]
    for t in leaves:
        t.requires_grad_(True)
    kwargs, tol = case["kwargs"], TOLERANCE[dtype]
    fns = {"fastlayers": FAST_OPS[case["op"]], "torch": TORCH_OPS[case["op"]]}
    grad = torch.randn_like(fns["torch"](*leaves, **kwargs))

    def forward(fn):
        def run():
            with torch.no_grad():
                return fn(*leaves, **kwargs)
        return run

    def forward_backward(fn):
        def run():
            for t in leaves:
                t.grad = None
            out = fn(*leaves, **kwargs)
            out.backward(grad)
            return out
        return run

    callables, results = {}, {}
    for side, fn in fns.items():
        callables["fwd", side], callables["fwd+bwd", side] = forward(fn), forward_backward(fn)
        out = callables["fwd+bwd", side]().detach()
        results[side] = [out] + [t.grad.clone() for t in leaves]
    names = ["output", "grad input", "grad weight", "grad bias"]
    errors = (compare(n, f, t, tol) for n, f, t in zip(names, results["fastlayers"], results["torch"]))
    return callables, next((e for e in errors if e), None)


def model_callables(name, dtype, device):
    """Training-step callables for the torch-layers and fastlayers-layers models with the same
    weights and data, and the validation error (losses of the first two steps), if any."""
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
    losses = {}
    for side in ("torch", "fastlayers"):
        torch.manual_seed(0)  # the same dropout masks on both sides
        losses[side] = torch.stack([callables["step", side]() for _ in range(2)])
    return callables, compare("losses of two steps", losses["fastlayers"], losses["torch"], TOLERANCE[dtype])


def measure(fn, threads, min_run_time):
    m = Timer("fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    return m.median, m.iqr


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
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def fmt_time(seconds):
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def print_table(rows):
    header = ("model", "op", "shape", "mode", "fastlayers", "torch", "ratio")
    lines = [(r["model"], r["op"], r["shape"], r["mode"], fmt_time(r["median_s"]), fmt_time(r["peer_median_s"]),
              f"{r['ratio']:.2f}") for r in rows]
    widths = [max(len(str(line[i])) for line in [header] + lines) for i in range(len(header))]
    for line in [header, tuple("-" * w for w in widths)] + lines:
        print("  ".join(s.ljust(w) if i < 4 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))))
    print()
    for mode in MODES:
        ratios = [r["ratio"] for r in rows if r["mode"] == mode]
        if ratios:
            geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"geometric mean ratio, {mode}: {geomean:.2f} over {len(ratios)} cases (torch time / fastlayers time, >1: fastlayers faster)")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastlayers.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing runs, for smoke tests")
    parser.add_argument("--filter", default="", metavar="SUBSTR", help="only cases whose model or op name contains SUBSTR")
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first (default: torch's current setting)")
    parser.add_argument("--out", metavar="PATH", help="JSON results path (default bench/results/<device>-latest.json)")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model training steps")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)

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
    out_path = args.out or os.path.join("bench", "results", f"{args.device}-latest.json")
    common = {"dtype": args.dtype, "device": device_name(args.device), "threads": threads,
              "torch_version": torch.__version__, "git_commit": git_commit(), "peer": "torch"}

    torch.manual_seed(0)
    jobs = [(c["model"], c["op"], shape_str(c), ("fwd", "fwd+bwd"), lambda c=c: layer_callables(c, dtype, args.device))
            for c in layer_cases(args.filter)]
    if not args.no_models:
        jobs += [(name, "train_step", "x=" + "x".join(map(str, (cls.batch_size, *cls.input_shape))), ("step",),
                  lambda name=name: model_callables(name, dtype, args.device))
                 for name, cls in MODELS.items() if args.filter in name or args.filter in "train_step"]
    if not jobs:
        print(f"error: no case matches --filter {args.filter!r}", file=sys.stderr)
        return 2

    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5:
        print(f"warning: load average {os.getloadavg()[0]:.2f} before starting; other processes on these cores "
              "skew the timings", file=sys.stderr)
    rows, failures = [], []
    for i, (model, op, shape, modes, make) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {model} {op} {shape}", file=sys.stderr, flush=True)
        callables, error = make()
        if error:
            failures.append(f"FAIL {model} {op} {shape}: {error}")
            print(failures[-1], flush=True)
            continue
        for mode in modes:
            fast, fast_iqr = measure(callables[mode, "fastlayers"], threads, min_run_time)
            peer, peer_iqr = measure(callables[mode, "torch"], threads, min_run_time)
            rows.append({"op": op, "model": model, "mode": mode, "shape": shape, **common,
                         "median_s": fast, "iqr_s": fast_iqr,
                         "peer_median_s": peer, "peer_iqr_s": peer_iqr, "ratio": peer / fast})

    print(f"\nfastlayers {fastlayers.__version__} vs torch {torch.__version__} eager, {common['device']}, "
          f"{threads} threads, {args.dtype}, median of blocked_autorange(min_run_time={min_run_time})\n")
    if rows:
        print_table(rows)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"\nwrote {len(rows)} rows to {out_path}")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
