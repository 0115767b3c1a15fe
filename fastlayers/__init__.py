"""fastlayers: hand-written CPU (and CUDA) kernels for conv2d, max_pool2d, linear and fused ReLU,
as drop-in PyTorch layers.

    import fastlayers
    layer = fastlayers.nn.Conv2dReLU(3, 32, 3, padding=1)   # a torch.nn.Conv2d + ReLU, fused
    y = fastlayers.functional.max_pool2d(layer(x), 2)
    model = fastlayers.convert(torch_model)                  # any model onto fastlayers' layers

The ops are also reachable as torch.ops.fastlayers.*.
"""

import os

import torch

from . import _C  # loads the kernels and registers torch.ops.fastlayers.*
from . import _fake  # noqa: F401  (fake kernels for torch.compile / export)
from . import autograd, functional, models, nn
from ._convert import ConversionReport, convert

__version__ = "0.1.0"
__all__ = ["autograd", "functional", "models", "nn", "convert", "ConversionReport", "has_cuda", "cpu_isa", "cpu_isas", "set_cpu_isa",
           "cpu_winograd", "set_cpu_winograd"]


def has_cuda() -> bool:
    """Whether this build of fastlayers has its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastlayers::conv2d", "CUDA")


def cpu_isa() -> str:
    """The instruction set the CPU kernels use now: "avx512", "avx2" or "generic" (portable C++).
    By default the widest one the CPU supports."""
    return _C.cpu_isa()


def cpu_isas() -> list[str]:
    """The instruction sets this CPU supports, narrowest first; "generic" is always there."""
    return _C.cpu_isas()


def set_cpu_isa(name: str) -> None:
    """Makes the CPU kernels use `name` ("generic", "avx2", "avx512", or "best"), process-wide.
    Raises ValueError for an unknown name or one this CPU cannot run. The environment variable
    FASTLAYERS_CPU_ISA sets the same at import."""
    _C.set_cpu_isa(name)


def cpu_winograd() -> bool:
    """Whether CPU convs with a 3x3 or 5x5 kernel, stride 1, no dilation and at least 16 input
    and output channels per group use Winograd F(2x2, 3x3) or F(2x2, 5x5): 2.25x or 2.8x fewer
    multiplies. F(2x2, 5x5) has about 5x the float32 rounding error of a direct sum (still far
    inside float32 tolerances); F(2x2, 3x3) about a direct sum's.
    On by default; inputs or weights with an Inf or a NaN always take the direct path."""
    return _C.cpu_winograd()


def set_cpu_winograd(enabled: bool) -> None:
    """Allows (True) or forbids (False) the Winograd path of cpu_winograd(), process-wide. The
    environment variable FASTLAYERS_CPU_WINOGRAD=0 forbids it at import."""
    _C.set_cpu_winograd(enabled)


if os.environ.get("FASTLAYERS_CPU_ISA"):
    set_cpu_isa(os.environ["FASTLAYERS_CPU_ISA"])
if os.environ.get("FASTLAYERS_CPU_WINOGRAD") == "0":
    set_cpu_winograd(False)
