"""The benchmark's device-independent parts (fastlayers/bench.py): the device choice, --shard, the
large cases with their dtypes, FLOPs and bytes, the rows' rates and ceiling fractions, the
inference cases' setup and the argument errors. The timings themselves are what `make bench` is
for."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from fastlayers import bench

CEILINGS = {"copy_gbps": 2000.0, "cublas_tflops": {"float32": 50.0, "bfloat16": 500.0}}
COMMON = {"dtype": "float32", "device": "test", "threads": 1, "torch_version": torch.__version__, "git_commit": None,
          "cpu_isa": None}


@pytest.mark.parametrize("requested, cuda_available, fastlayers_cuda, device", [
    ("auto", True, True, "cuda"),
    ("auto", True, False, "cpu"),
    ("auto", False, False, "cpu"),
    ("cpu", True, True, "cpu"),
    ("cuda", True, True, "cuda"),
])
def test_resolve_device(requested, cuda_available, fastlayers_cuda, device):
    assert bench.resolve_device(requested, cuda_available, fastlayers_cuda) == (device, None)


def test_resolve_device_refuses_cuda_it_cannot_run():
    assert "torch sees no CUDA device" in bench.resolve_device("cuda", False, True)[1]
    assert "no CUDA kernels" in bench.resolve_device("cuda", True, False)[1]


def test_parse_shard():
    assert bench.parse_shard("3/4") == (3, 4)
    for text in ("0/4", "5/4", "1/0", "4", "1/2/3", "a/b"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.parse_shard(text)


def test_large_cases():
    cases = {(c["op"], c["dtype"]): c for c in bench.large_cases()}
    assert set(cases) == {("gemm", "float32"), ("gemm", "bfloat16"), ("relu", "float32"), ("max_pool2d", "float32")}
    assert all(c["model"] == "large" and c["dtype"] in c["shape"] for c in cases.values())
    assert cases["gemm", "float32"]["x"] == (4096, 4096) and cases["gemm", "float32"]["flops"] == {"fwd": 2 * 4096**3}
    assert cases["gemm", "bfloat16"]["x"] == (8192, 8192) and cases["gemm", "bfloat16"]["flops"] == {"fwd": 2 * 8192**3}
    n = math.prod(bench.LARGE_ACTIVATION)
    assert n * 4 >= 256 * 2**20
    relu, pool = cases["relu", "float32"], cases["max_pool2d", "float32"]
    assert relu["modes"] == pool["modes"] == ("fwd", "fwd+bwd") and not relu["flops"] and not pool["flops"]
    assert relu["bytes"] == {"fwd": 2 * 4 * n, "fwd+bwd": 5 * 4 * n}
    # 2 x 2 windows: a quarter of the elements out, each with a float32 value and an int64 index
    assert pool["bytes"] == {"fwd": 4 * n + 12 * n // 4, "fwd+bwd": 2 * (4 * n + 12 * n // 4)}


def test_memory_bytes_follow_the_pool_output_and_the_dtype():
    # 5 x 5 in 2 x 2 windows: 2 x 2 out, 3 x 3 with ceil_mode
    assert bench.memory_bytes("max_pool2d", "fwd", (1, 1, 5, 5), {"kernel_size": 2}, torch.float16) == 25 * 2 + 4 * (2 + 8)
    assert bench.memory_bytes("max_pool2d", "fwd", (1, 1, 5, 5), {"kernel_size": 2, "ceil_mode": True}, torch.float16) == 25 * 2 + 9 * 10
    assert bench.memory_bytes("relu", "fwd+bwd", (3, 7), {}, torch.bfloat16) == 5 * 21 * 2


def test_every_dtype_has_a_tolerance():
    assert all(getattr(torch, name) in bench.TOLERANCE for name in bench.DTYPES)


def test_cuda_row_rates_and_fractions():
    gemm = next(c for c in bench.large_cases() if c["dtype"] == "bfloat16")
    row = bench.make_row(gemm, "fwd", {"fastlayers": (4e-3, 0.0), "torch": (2e-3, 0.0)}, COMMON, None, CEILINGS, False, {})
    assert row["dtype"] == "bfloat16" and row["ratio"] == pytest.approx(0.5)
    assert row["tflops"] == pytest.approx(2 * 8192**3 / 4e-3 / 1e12)
    assert row["torch_tflops"] == pytest.approx(2 * row["tflops"])
    assert row["cublas_fraction"] == pytest.approx(row["tflops"] / 500.0)
    assert row["gbps"] is row["copy_fraction"] is None

    pool = next(c for c in bench.large_cases() if c["op"] == "max_pool2d")
    row = bench.make_row(pool, "fwd+bwd", {"fastlayers": (1e-3, 0.0), "torch": (1e-3, 0.0)}, COMMON, None, CEILINGS, False, {})
    assert row["gbps"] == pytest.approx(pool["bytes"]["fwd+bwd"] / 1e-3 / 1e9)
    assert row["copy_fraction"] == pytest.approx(row["gbps"] / 2000.0)
    assert row["tflops"] is row["cublas_fraction"] is None


def test_row_of_a_side_that_did_not_run():
    job = {"model": "mlp", "op": "train_step", "shape": "x=100x1x28x28", "flops": {"step-graph": 10**9}}
    errors = {"graph_error": "fastlayers: RuntimeError: capture failed"}
    row = bench.make_row(job, "step-graph", {"torch": (1e-3, 0.0)}, COMMON, None, CEILINGS, True, errors)
    assert row["median_us"] is row["ratio"] is row["tflops"] is row["compile_us"] is None
    assert row["torch_us"] == pytest.approx(1e3) and row["torch_tflops"] == pytest.approx(1.0)
    assert row["graph_error"] == errors["graph_error"] and bench.fmt_time(row["median_us"]) == "failed"


def test_cpu_row_has_the_cpu_fields_only():
    job = {"model": "mlp", "op": "train_step", "shape": "x=100x1x28x28", "flops": {"step": 10**9}}
    row = bench.make_row(job, "step", {"fastlayers": (1e-3, 0.0), "torch": (2e-3, 0.0)}, COMMON, 2000.0, None, False, {})
    assert list(row)[-4:] == ["ratio", "gflops", "torch_gflops", "peak_fraction"]
    assert row["gflops"] == pytest.approx(1000.0) and row["peak_fraction"] == pytest.approx(0.5)


def test_labels():
    assert bench.label(bench.gemm_case(64)) == "gemm n=64"
    assert bench.label(next(c for c in bench.large_cases() if c["op"] == "gemm") | {"mode": "fwd"}) == "large gemm fwd n=4096 float32"


@pytest.mark.parametrize("op, kwargs", [("relu", {}), ("max_pool2d", {"kernel_size": 2})])
def test_memory_bound_case_is_checked_against_torch(op, kwargs):
    case = {"model": "large", "op": op, "shape": "small", "x": (2, 3, 8, 8), "w": None, "bias": False, "kwargs": kwargs,
            "modes": ("fwd", "fwd+bwd"), "flops": {}}
    callables, error, errors = bench.layer_callables(case, torch.float32, "cpu", False)
    assert error is None and errors == {}
    assert set(callables) == {(mode, side) for mode in case["modes"] for side in ("fastlayers", "torch")}


@pytest.mark.parametrize("name", ["mnist_cnn", "lenet"])
def test_inference_case_runs_one_sample_in_eval_mode(name):
    # The MNIST CNN has dropout: the two sides agree only in eval mode.
    callables, error, errors = bench.inference_callables(name, torch.float64, "cpu", False)
    assert error is None and errors == {}
    assert set(callables) == {("infer", "fastlayers"), ("infer", "torch")}
    out = callables["infer", "fastlayers"]()
    assert out.shape == (1, 10) and not out.requires_grad
    torch.testing.assert_close(out, callables["infer", "torch"](), rtol=1e-10, atol=1e-10)


def test_argument_errors(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--shard", "3/2"])
    assert bench.main(["--filter", "no such case", "--device", "cpu"]) == 2
    assert "no case matches" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert bench.main(["--device", "cuda"]) == 2
        assert "torch sees no CUDA device" in capsys.readouterr().err


def test_cpu_name_carries_family_and_model(tmp_path):
    two_cores = "".join(
        f"processor\t: {i}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
        f"model name\t: AMD EPYC\nflags\t\t: fpu avx512f\n\n" for i in range(2))
    (tmp_path / "zen4").write_text(two_cores)
    assert bench.device_name("cpu", tmp_path / "zen4") == "AMD EPYC (family 25, model 17)"
    # Without the numbers (other architectures' cpuinfo), the name alone.
    (tmp_path / "arm").write_text("processor\t: 0\nmodel name\t: Neoverse-V2\n\n")
    assert bench.device_name("cpu", tmp_path / "arm") == "Neoverse-V2"
