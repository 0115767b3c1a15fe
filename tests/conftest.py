"""Shared fixtures: the device parameter (CUDA cases skip where there is no GPU or no CUDA
build), NaN-poisoned allocations, a float comparison that reports the worst element, and the
float16/bfloat16 comparison against torch's own error at the same dtype. Also the hypothesis
profiles of the fuzz tests (FASTLAYERS_FUZZ=fast, the default, or deep) and the hooks that count
their cases per op (fuzz_report.py)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import fastlayers
import fuzz_report

# fast: make test; derandomized (the same cases every run) and about 50 per op, so the fuzz files
# take well under a minute. deep: make fuzz; 10,000 cases per op (FASTLAYERS_FUZZ_EXAMPLES), drawn
# from --hypothesis-seed.
# No example database: a failure is reproduced from the printed seed or blob, not from local state.
_FUZZ_SETTINGS = dict(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fast", max_examples=50, derandomize=True, **_FUZZ_SETTINGS)
settings.register_profile("deep", max_examples=int(os.environ.get("FASTLAYERS_FUZZ_EXAMPLES", 10_000)), **_FUZZ_SETTINGS)
FUZZ_PROFILE = os.environ.get("FASTLAYERS_FUZZ", "fast")
settings.load_profile(FUZZ_PROFILE)


def pytest_runtest_logreport(report):
    fuzz_report.record(report)


def pytest_terminal_summary(terminalreporter):
    fuzz_report.terminal_summary(terminalreporter, FUZZ_PROFILE, terminalreporter.config.getoption("hypothesis_seed", None))

HAS_CUDA = torch.cuda.is_available() and fastlayers.has_cuda()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and a CUDA build")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
# The CUDA kernels take these too (accumulating in float32); the CPU ones do not.
LOW_PRECISION = [torch.float16, torch.bfloat16]

# torch's float32 results on CUDA are references in these tests, so they must be IEEE float32:
# cuDNN convolutions default to TF32 (a 10-bit mantissa), which misses float32 tolerances by itself.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def poison_uninitialized_memory():
    """torch.empty (which every kernel uses for its outputs) fills with NaN, so an output element
    that a kernel forgets to write fails the comparison instead of passing by luck."""
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.utils.deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(old[0], warn_only=old[1])
    torch.utils.deterministic.fill_uninitialized_memory = old[2]


CPU_ISAS = ["generic", "avx2", "avx512"]


@pytest.fixture(params=CPU_ISAS)
def cpu_isa(request):
    """Runs a test once per CPU instruction set (each has its own GEMM micro-kernel), skipping
    those this CPU lacks. CUDA cases run once, since the ISA does not touch them."""
    isa = request.param
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("device") == "cuda" and isa != CPU_ISAS[0]:
        pytest.skip("the CPU instruction set does not apply to CUDA")
    if isa not in fastlayers.cpu_isas():
        pytest.skip(f"this CPU does not support {isa}")
    fastlayers.set_cpu_isa(isa)
    yield isa
    fastlayers.set_cpu_isa("best")


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, terms: int = 1, what: str = "") -> None:
    """actual (any float dtype) against a float64 reference. `terms` is the length of the sums
    behind each element: float32 rounding grows like its square root, so the tolerance does too.
    A real bug (a missed or doubled term of a N(0, 1) sum) is off by ~1, far above these bounds."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype or expected.dtype == torch.float64, f"{what}: dtype {actual.dtype}"
    if actual.dtype == torch.float64:
        rtol, atol = 1e-10, 1e-10 * max(terms, 1) ** 0.5
    else:
        rtol, atol = 1e-5, 1e-5 * max(terms, 1) ** 0.5
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def run_with_grads(fn, tensors, grad_out=None):
    """fn(*tensors) and the gradients of every tensor that requires grad, for a fixed random
    output gradient; returns (output, [grads])."""
    out = fn(*tensors)
    if grad_out is None:
        grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [t for t in tensors if t is not None and t.requires_grad], grad_out)
    return out, list(grads), grad_out


def assert_raises_with(call, words, exc=RuntimeError) -> None:
    """call() raises exc, and its message contains every one of `words` (op, argument, expected
    and actual values)."""
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def assert_close_low_precision(actual: torch.Tensor, expected: torch.Tensor, torch_actual: torch.Tensor,
                               what: str = "", factor: float = 2.0) -> None:
    """actual (float16 or bfloat16) against a float64 reference, allowed `factor` times the error
    torch's own implementation makes at the same dtype (torch_actual), plus one unit of the dtype's
    precision at the reference's scale (so that an exact torch does not demand an exact result)."""
    assert actual.shape == expected.shape == torch_actual.shape, f"{what}: shapes {tuple(actual.shape)}, {tuple(expected.shape)}, {tuple(torch_actual.shape)}"
    assert actual.dtype == torch_actual.dtype, f"{what}: dtype {actual.dtype} != torch's {torch_actual.dtype}"
    if actual.numel() == 0:
        return
    a, e, t = actual.double().cpu(), expected.double().cpu(), torch_actual.double().cpu()
    err = (a - e).abs().flatten()
    torch_err = (t - e).abs().max().item()
    floor = torch.finfo(actual.dtype).eps * e.abs().max().item()
    bound = factor * torch_err + floor
    worst = int(torch.nan_to_num(err, nan=float("inf")).argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual.shape))
    assert err[worst] <= bound, (
        f"{what}: largest error {err[worst].item():.3g} at {index} (got {a.flatten()[worst].item():.6g}, "
        f"expected {e.flatten()[worst].item():.6g}) exceeds {factor} x torch's {torch_err:.3g} + {floor:.3g}")
