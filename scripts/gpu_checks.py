"""Runs the GPU checks of tests/gpu/README.md in stages of a few minutes each, and writes their
summary:

    python scripts/gpu_checks.py build       # record the machine, build the CUDA extension (for
                                             # the GPU's own architecture unless
                                             # TORCH_CUDA_ARCH_LIST is set)
    python scripts/gpu_checks.py test        # the whole suite, CPU and CUDA cases
    python scripts/gpu_checks.py memcheck    # compute-sanitizer memcheck, op by op, small shapes
    python scripts/gpu_checks.py racecheck   # racecheck, synccheck and initcheck subsets
    python scripts/gpu_checks.py summary     # tests/gpu/summary-<date>.md from the logs

Each stage appends its commands' output to build/gpu-checks/<stage>.log and their exit codes to
build/gpu-checks/status.json; a later stage never reruns an earlier one. `summary` needs no GPU
and writes only what the logs hold. Several stages at once: `... test memcheck racecheck`.
Exits non-zero if a command of the stages run failed.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "build" / "gpu-checks"
STATUS = LOGS / "status.json"
PY = sys.executable
SANITIZER = ["compute-sanitizer", "--error-exitcode", "1", "--print-limit", "20"]

# The op test files run under memcheck (each with -k "cuda and not low_precision").
MEMCHECK_OPS = ["relu", "max_pool2d", "linear", "conv2d", "conv2d_relu_max_pool2d",
                "conv2d_grad_weight_pooled", "conv2d_grad_input_pooled"]


def pytest(*args):
    return [PY, "-m", "pytest", "-q", *args]


def sanitizer(tool, *args):
    return [*SANITIZER, "--tool", tool, *pytest("-x", *args)]


# stage -> [(label, command, extra environment)]
NO_CACHING = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"}
STAGES = {
    "build": [
        ("gpu", ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], {}),
        ("torch", [PY, "-c", "import torch; print(torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"], {}),
        ("nvcc", ["nvcc", "--version"], {}),
        ("commit", ["git", "rev-parse", "--short", "HEAD"], {}),
        ("build", [PY, "setup.py", "build_ext", "--inplace"], {"FASTLAYERS_CUDA": "1", "MAX_JOBS": str(os.cpu_count() or 4)}),
        ("has_cuda", [PY, "-c", "import fastlayers, sys; print(fastlayers.has_cuda()); sys.exit(0 if fastlayers.has_cuda() else 1)"], {}),
    ],
    "test": [("suite", pytest("tests"), {})],
    "memcheck": [
        *[(f"memcheck {op}", sanitizer("memcheck", f"tests/test_{op}.py", "-k", "cuda and not low_precision"), NO_CACHING)
          for op in MEMCHECK_OPS],
        # Not the graph test: without the caching allocator, capture would have to call cudaMalloc.
        ("memcheck test_cuda", sanitizer("memcheck", "tests/test_cuda.py", "-k", "not past_2_31 and not graph"), NO_CACHING),
    ],
    "racecheck": [
        ("racecheck test_cuda", sanitizer("racecheck", "tests/test_cuda.py", "-k", "deterministic or equals_cpu"), {}),
        ("racecheck conv2d, linear", sanitizer("racecheck", "tests/test_conv2d.py", "tests/test_linear.py", "-k", "cuda and gradcheck"), {}),
        ("synccheck test_cuda", sanitizer("synccheck", "tests/test_cuda.py", "-k", "deterministic or equals_cpu"), {}),
        ("initcheck max_pool2d, relu", sanitizer("initcheck", "tests/test_max_pool2d.py", "tests/test_relu.py", "-k", "cuda and not low_precision"), {}),
    ],
}


def load_status():
    return json.loads(STATUS.read_text()) if STATUS.exists() else {}


def own_arch():
    """The first GPU's compute capability ("9.0"), for a build of that architecture alone, which
    takes a fraction of the default 8.0;9.0+PTX build; None without a GPU."""
    import torch
    return "%d.%d" % torch.cuda.get_device_capability(0) if torch.cuda.is_available() else None


def run_stage(stage):
    status = load_status()
    ok = True
    with open(LOGS / f"{stage}.log", "a") as log:
        for label, cmd, env in STAGES[stage]:
            arch = own_arch() if label == "build" and "TORCH_CUDA_ARCH_LIST" not in os.environ else None
            if arch:
                env = {**env, "TORCH_CUDA_ARCH_LIST": arch}
            log.write(f"\n### {label}: {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
                code, out = proc.returncode, proc.stdout
            except OSError as e:  # the tool is not installed
                code, out = 127, f"{cmd[0]}: {e}\n"
            log.write(out)
            failures = [line for line in out.splitlines() if line.startswith(("FAILED ", "ERROR "))]
            status[label] = {"stage": stage, "returncode": code, "tail": out.strip().splitlines()[-6:],
                             "failures": failures[:20]}
            print(f"{'ok  ' if code == 0 else 'FAIL'} {label} (exit {code})", flush=True)
            ok &= code == 0
    STATUS.write_text(json.dumps(status, indent=1))
    return ok


def summary():
    """tests/gpu/summary-<date>.md from status.json: the machine, then each command's result."""
    status = load_status()
    if status.get("gpu", {}).get("returncode") != 0:
        sys.exit("no GPU recorded in build/gpu-checks/status.json: run the build stage on a GPU first")
    first = lambda label: (status.get(label, {}).get("tail") or ["(not run)"])[0]
    lines = [f"# GPU checks, {datetime.date.today().isoformat()}", "",
             f"- GPU: {first('gpu')}", f"- torch: {first('torch')}",
             f"- nvcc: {next((t for t in status.get('nvcc', {}).get('tail', []) if 'release' in t), '(not run)')}",
             f"- fastlayers commit: {first('commit')}", "",
             "| check | result |", "| --- | --- |"]
    for label, s in status.items():
        if s["stage"] == "build" and label not in ("build", "has_cuda"):
            continue
        tail = s["tail"] or [""]
        # pytest's closing line and, under compute-sanitizer, its error summary.
        found = [t.strip(" =") for t in tail if re.search(r"\b(passed|failed|error|errors)\b|ERROR SUMMARY", t)]
        result = "; ".join(found[-2:]) or tail[-1].strip()
        code = s["returncode"]
        lines.append(f"| {label} | {'ok' if code == 0 else f'FAILED (exit {code})'}: {result} |")
    failures = [(label, f) for label, s in status.items() for f in s.get("failures", [])]
    if failures:
        lines += ["", "Failures (the logs in build/gpu-checks/ have the messages):", ""]
        lines += [f"- {label}: `{f}`" for label, f in failures]
    path = ROOT / "tests" / "gpu" / f"summary-{datetime.date.today().isoformat()}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


def main(argv):
    stages = argv or ["build", "test", "memcheck", "racecheck", "summary"]
    unknown = [s for s in stages if s not in STAGES and s != "summary"]
    if unknown:
        sys.exit(f"unknown stage(s) {unknown}; expected some of {[*STAGES, 'summary']}")
    LOGS.mkdir(parents=True, exist_ok=True)
    ok = True
    for stage in stages:
        if stage == "summary":
            summary()
        else:
            ok &= run_stage(stage)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
