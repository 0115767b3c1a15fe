"""The CPU instruction-set setting: every supported ISA can be chosen and gives the same answer
(the op tests run each one), bad names and unsupported ISAs are refused, "best" is the default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fastlayers
from conftest import CPU_ISAS


def test_default_is_the_widest_supported():
    assert fastlayers.cpu_isa() == fastlayers.cpu_isas()[-1]
    assert fastlayers.cpu_isas()[0] == "generic"
    assert set(fastlayers.cpu_isas()) <= set(CPU_ISAS)


def test_each_isa_agrees_on_a_large_product():
    x, w, b = torch.randn(130, 700, dtype=torch.float64), torch.randn(260, 700, dtype=torch.float64), torch.randn(260, dtype=torch.float64)
    expected = torch.nn.functional.linear(x, w, b).relu()
    try:
        for isa in fastlayers.cpu_isas():
            fastlayers.set_cpu_isa(isa)
            assert fastlayers.cpu_isa() == isa
            torch.testing.assert_close(torch.ops.fastlayers.linear_relu(x, w, b), expected, rtol=1e-12, atol=1e-10)
    finally:
        fastlayers.set_cpu_isa("best")
    assert fastlayers.cpu_isa() == fastlayers.cpu_isas()[-1]


@pytest.mark.parametrize("name", ["sse9", "AVX2", "", 3])
def test_unknown_name_is_refused(name):
    with pytest.raises(ValueError, match="expected one of"):
        fastlayers.set_cpu_isa(name)
    assert fastlayers.cpu_isa() == fastlayers.cpu_isas()[-1]


def test_unsupported_isa_is_refused():
    missing = [isa for isa in CPU_ISAS if isa not in fastlayers.cpu_isas()]
    if not missing:
        pytest.skip("this CPU supports every ISA")
    with pytest.raises(ValueError, match="does not support"):
        fastlayers.set_cpu_isa(missing[0])


def test_environment_variable_sets_it_at_import():
    code = "import fastlayers; print(fastlayers.cpu_isa())"
    env = dict(os.environ, FASTLAYERS_CPU_ISA="generic")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "generic"
    env["FASTLAYERS_CPU_ISA"] = "nonsense"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "expected one of" in bad.stderr
