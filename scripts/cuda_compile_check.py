"""Compiles the CUDA side of fastlayers where there is no GPU, so CI catches what would break the
CUDA build:

  1. every kernel file in csrc/kernels/cuda/ with nvcc for each architecture of
     TORCH_CUDA_ARCH_LIST (default 8.0;9.0+PTX, as setup.py; machine code only, +PTX adds
     nothing to check), with the flags the extension build gives nvcc, and ptxas's report
     (-Xptxas -v) of registers, spills, stack and shared memory per kernel;
  2. csrc/cuda_ops.cpp, the torch glue, syntax-checked by the host compiler against the torch and
     CUDA headers (a CPU-only torch ships the c10/cuda headers too).

Exits non-zero on a compile error or a kernel that spills more than MAX_SPILL_BYTES. Prints
"skipped" and exits 0 where nvcc is not found. Run by `make test-cuda-compile` (part of
`make test`); takes about a minute on 2 cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "csrc" / "kernels" / "cuda"
OUT = ROOT / "build" / "cuda-check"

# A spill in these kernels means a tile configuration too large for the register file: the
# kernels are register-blocked by design, so any spill is a regression to look at.
MAX_SPILL_BYTES = 0
# nvcc's own flags in setup.py (extra_compile_args["nvcc"]); torch adds COMMON_NVCC_FLAGS.
SETUP_NVCC_FLAGS = ["-O3", "-std=c++17", "-lineinfo"]
# Two compilations at a time: CI machines have 2 cores.
JOBS = 2


def find_nvcc() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None and os.environ.get("CUDA_HOME"):
        candidate = Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc"
        nvcc = str(candidate) if candidate.exists() else None
    return nvcc


def arch_flags() -> tuple[list[str], list[str]]:
    """-gencode flags and sm names for TORCH_CUDA_ARCH_LIST (e.g. "8.0;9.0", "8.6+PTX")."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX").replace(" ", ";").split(";")
    flags, names = [], []
    for arch in filter(None, archs):
        number = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        names.append(f"sm_{number}")
    return flags, names


def torch_nvcc_flags() -> list[str]:
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    return list(COMMON_NVCC_FLAGS)


def compile_kernel(nvcc: str, source: Path, flags: list[str]) -> tuple[Path, int, str]:
    cmd = [nvcc, *flags, "-Xptxas", "-v", "-I", str(ROOT / "csrc" / "kernels"), "-c", str(source),
           "-o", str(OUT / (source.stem + ".o"))]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return source, proc.returncode, proc.stdout + proc.stderr


# ptxas -v prints, per entry function and architecture:
#   ptxas info    : Compiling entry function '_Z...' for 'sm_80'
#   ptxas info    : Function properties for _Z...
#       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
#   ptxas info    : Used 118 registers, used 1 barriers, 8192 bytes smem, 608 bytes cmem[0]
ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def parse_ptxas(log: str) -> list[dict]:
    kernels, current = [], None
    for line in log.splitlines():
        if m := ENTRY.search(line):
            current = {"mangled": m.group(1), "arch": m.group(2), "stack": 0, "spill": 0, "regs": None, "smem": 0}
            kernels.append(current)
        elif current is not None and (m := FRAME.search(line)):
            current["stack"], current["spill"] = int(m.group(1)), int(m.group(2)) + int(m.group(3))
        elif current is not None and (m := USED.search(line)):
            current["regs"], current["smem"] = int(m.group(1)), int(m.group(2) or 0)
            current = None
    return kernels


def short_names(mangled: list[str]) -> dict[str, str]:
    """Demangled, without namespaces and parameter lists: gemm_kernel<float, GemmTile<...>, ...>."""
    demangled = mangled
    if shutil.which("c++filt"):
        out = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True).stdout
        demangled = out.splitlines() if len(out.splitlines()) == len(mangled) else mangled
    names = {}
    for raw, name in zip(mangled, demangled):
        name = re.sub(r"\(anonymous namespace\)::|fastlayers::cuda::|fastlayers::", "", name)
        name = re.sub(r"^void ", "", name)
        depth, cut = 0, len(name)
        for i, ch in enumerate(name):  # drop the parameter list: the first '(' outside <...>
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = i
                break
        names[raw] = name[:cut].replace("GemmTile<64, 64, 16, 4, 4>", "Tile64x64x16/4x4")
    return names


def report(results: dict[Path, list[dict]], archs: list[str]) -> list[str]:
    """Prints one row per kernel (registers per architecture, worst spill/stack); returns the
    kernels over MAX_SPILL_BYTES."""
    all_kernels = [k for ks in results.values() for k in ks]
    names = short_names(sorted({k["mangled"] for k in all_kernels}))
    over = []
    header = f"{'file':<15}{'kernel':<100}" + "".join(f"{a + ' regs':>12}" for a in archs) + f"{'spill B':>9}{'stack B':>9}{'smem B':>8}"
    print(header)
    print("-" * len(header))
    for source, kernels in sorted(results.items()):
        rows: dict[str, dict] = {}
        for k in kernels:
            row = rows.setdefault(k["mangled"], {"regs": {}, "spill": 0, "stack": 0, "smem": 0})
            row["regs"][k["arch"]] = k["regs"]
            row["spill"] = max(row["spill"], k["spill"])
            row["stack"] = max(row["stack"], k["stack"])
            row["smem"] = max(row["smem"], k["smem"])
        for mangled, row in sorted(rows.items(), key=lambda kv: names[kv[0]]):
            name = names[mangled]
            label = name if len(name) <= 98 else name[:95] + "..."
            regs = "".join(f"{row['regs'].get(a, '-'):>12}" for a in archs)
            print(f"{source.name:<15}{label:<100}{regs}{row['spill']:>9}{row['stack']:>9}{row['smem']:>8}")
            if row["spill"] > MAX_SPILL_BYTES:
                over.append(f"{source.name}: {name} spills {row['spill']} bytes")
    regs = [k["regs"] for k in all_kernels if k["regs"] is not None]
    print(f"\n{len({k['mangled'] for k in all_kernels})} kernels x {len(archs)} architectures; "
          f"registers {min(regs)}..{max(regs)}; spill bytes: {sum(k['spill'] for k in all_kernels)} in all")
    return over


def cuda_include_dirs(nvcc: str) -> list[str]:
    """The toolkit's include directories, as nvcc itself passes them to its host compiler."""
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)
    m = re.search(r'INCLUDES="([^"]*)"', out.stdout + out.stderr)
    return [flag[2:] for flag in (m.group(1).split() if m else []) if flag.startswith("-I")]


def check_glue(nvcc: str) -> bool:
    from torch.utils.cpp_extension import include_paths

    torch_includes = include_paths()
    cxx = os.environ.get("CXX", "c++")
    flags = ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror"]
    # A CPU-only torch lacks the header its CUDA build generates (cuda_cmake_macros.h); it only
    # holds the shared-library export switch, which a syntax check does not need.
    if not any((Path(p) / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists() for p in torch_includes):
        flags.append("-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE")
    for path in torch_includes + cuda_include_dirs(nvcc):
        flags += ["-isystem", path]
    cmd = [cxx, *flags, "-I", str(ROOT / "csrc"), str(ROOT / "csrc" / "cuda_ops.cpp")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr)
        print("FAILED: csrc/cuda_ops.cpp does not compile against the torch and CUDA headers")
        return False
    print("csrc/cuda_ops.cpp: compiles against the torch and CUDA headers (-Wall -Wextra -Werror)")
    return True


def main() -> int:
    nvcc = find_nvcc()
    if nvcc is None:
        print("cuda_compile_check: nvcc not found, skipped")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    gencode, archs = arch_flags()
    flags = SETUP_NVCC_FLAGS + torch_nvcc_flags() + gencode
    sources = sorted(KERNELS.glob("*.cu"))
    print(f"nvcc {' '.join(flags)}\ncompiling {len(sources)} files for {', '.join(archs)}\n")
    with ThreadPoolExecutor(JOBS) as pool:
        done = list(pool.map(lambda s: compile_kernel(nvcc, s, flags), sources))
    failed = [(s, log) for s, rc, log in done if rc != 0]
    for source, log in failed:
        print(f"--- {source.relative_to(ROOT)} ---\n{log}")
    if failed:
        print(f"FAILED: {len(failed)} of {len(sources)} CUDA files do not compile")
        return 1
    over = report({s: parse_ptxas(log) for s, _, log in done}, archs)
    if over:
        print("\nFAILED: kernels spilling more than", MAX_SPILL_BYTES, "bytes:\n  " + "\n  ".join(over))
        return 1
    print()
    return 0 if check_glue(nvcc) else 1


if __name__ == "__main__":
    sys.exit(main())
