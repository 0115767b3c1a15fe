"""Bookkeeping for the fuzz tests (test_fuzz.py, test_fuzz_invalid.py, test_bad_inputs.py): how
many cases each op ran, how many of its tests failed and how long they took. tests/conftest.py
feeds it pytest's reports and prints the table at the end of the run; with FASTLAYERS_FUZZ_SUMMARY
set (make fuzz sets it) the table is also written there as JSON, with the torch version, the git
commit, the hypothesis profile and seed."""

from __future__ import annotations

import collections
import datetime
import json
import os
import platform
import re
import subprocess

import torch

# Fuzz test functions are named test_fuzz_<op> (valid configurations against torch),
# test_fuzz_invalid_<op> (invalid configurations) and test_bad_inputs_<what> (the corpus).
_TEST_NAME = re.compile(r"::test_(fuzz_invalid|fuzz|bad_inputs)_(\w+?)(\[|$)")
_KIND = {"fuzz": "valid", "fuzz_invalid": "invalid", "bad_inputs": "bad_inputs"}
# A test that covers two ops (conv2d and conv2d_relu) is parametrised with the op's name as an id.
OPS = {"linear", "linear_relu", "conv2d", "conv2d_relu", "conv2d_relu_max_pool2d", "max_pool2d", "relu"}

# counts[(kind, op)][what]: "cases" (every case run), "raised_like_torch" (valid-profile cases
# where torch raised, and fastlayers raised too), "failures" (failed tests), "seconds".
counts: dict = collections.defaultdict(collections.Counter)


def count(op: str, kind: str = "valid", what: str = "cases", n: int = 1) -> None:
    counts[(kind, op)][what] += n


def record(report) -> None:
    """pytest_runtest_logreport: failures and durations of the fuzz tests, by op."""
    match = _TEST_NAME.search(report.nodeid)
    if match is None:
        return
    params = report.nodeid.partition("[")[2].rstrip("]").split("-")
    op = next((p for p in params if p in OPS), match.group(2))
    key = (_KIND[match.group(1)], op)
    if report.when == "call":
        counts[key]["seconds"] += report.duration
    if report.failed:
        counts[key]["failures"] += 1


def _git_commit() -> str:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


GIT_COMMIT = _git_commit()  # when the run starts: the code it tests


def summary(profile: str, seed) -> dict:
    rows = []
    for (kind, op), c in sorted(counts.items()):
        rows.append({"kind": kind, "op": op, "cases": c["cases"], "raised_like_torch": c["raised_like_torch"],
                     "failures": c["failures"], "seconds": round(c["seconds"], 1)})
    return {
        "profile": profile,
        "hypothesis_seed": seed,
        "rows": rows,
        "total_cases": sum(r["cases"] for r in rows),
        "total_failures": sum(r["failures"] for r in rows),
        "seconds": round(sum(r["seconds"] for r in rows), 1),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "git_commit": GIT_COMMIT,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def terminal_summary(terminalreporter, profile: str, seed) -> None:
    """pytest_terminal_summary: the per-op table, and the JSON file if FASTLAYERS_FUZZ_SUMMARY."""
    if not any(c["cases"] for c in counts.values()):
        return
    result = summary(profile, seed)
    write = terminalreporter.write_line
    terminalreporter.section(f"fuzz cases per op (profile {profile})")
    write(f"{'kind':<11} {'op':<24} {'cases':>8} {'raised like torch':>18} {'failures':>9} {'seconds':>8}")
    for r in result["rows"]:
        write(f"{r['kind']:<11} {r['op']:<24} {r['cases']:>8} {r['raised_like_torch']:>18} {r['failures']:>9} {r['seconds']:>8}")
    path = os.environ.get("FASTLAYERS_FUZZ_SUMMARY")
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        write(f"fuzz summary written to {path}")
