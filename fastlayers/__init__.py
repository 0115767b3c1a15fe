"""fastlayers: hand-written CPU (and CUDA) kernels for conv2d, max_pool2d, linear and fused ReLU,
as drop-in PyTorch layers.

    import fastlayers
    layer = fastlayers.nn.Conv2dReLU(3, 32, 3, padding=1)   # a torch.nn.Conv2d + ReLU, fused
    y = fastlayers.functional.max_pool2d(layer(x), 2)

The ops are also reachable as torch.ops.fastlayers.*.
"""

import torch

from . import _C  # noqa: F401  (loads the kernels and registers torch.ops.fastlayers.*)
from . import _fake  # noqa: F401  (fake kernels for torch.compile / export)
from . import functional, nn

__version__ = "0.1.0"
__all__ = ["functional", "nn", "has_cuda"]


def has_cuda() -> bool:
    """Whether this build of fastlayers has its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("fastlayers::conv2d", "CUDA")
