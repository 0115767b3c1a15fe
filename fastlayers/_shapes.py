"""Argument normalisation and output-size arithmetic shared by the functional API and the fake
kernels. The formulas are torch's (ATen ConvUtils.h and Pool.h); csrc/checks.cpp holds the same
ones for the compiled ops, and the opcheck tests keep the two in agreement."""

from __future__ import annotations

from typing import Sequence, Union

IntOrPair = Union[int, Sequence[int]]


def pair(value: IntOrPair, name: str, op: str) -> list[int]:
    """An int or a pair of ints as a list of two ints, as torch.nn.modules.utils._pair."""
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)) or isinstance(value, str):
        raise TypeError(f"fastlayers.{op}: expected {name} to be an int or a pair of ints, but got {value!r}")
    if isinstance(value, int):
        return [value, value]
    values = list(value)
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise TypeError(f"fastlayers.{op}: expected {name} to be an int or a pair of ints, but got {value!r}")
    return values


def conv2d_padding(padding, kernel_hw: Sequence[int], stride: list[int], dilation: list[int], op: str) -> list[int]:
    """conv2d padding as [top, bottom, left, right], from an int, a pair, 'valid' or 'same'.

    'same' follows torch: total padding dilation * (k - 1) per dim, the odd extra on the
    bottom/right; it is refused for strided convolutions, as torch refuses it."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError(f"fastlayers.{op}: padding='same' is not supported for strided convolutions, but got stride={stride}")
            out = []
            for k, d in zip(kernel_hw, dilation):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return out
        raise RuntimeError(f"fastlayers.{op}: invalid padding string {padding!r}; expected 'same' or 'valid'")
    ph, pw = pair(padding, "padding", op)
    return [ph, ph, pw, pw]


def conv2d_output_hw(h: int, w: int, kernel_hw: Sequence[int], stride, padding4, dilation) -> tuple[int, int]:
    oh = (h + padding4[0] + padding4[1] - dilation[0] * (kernel_hw[0] - 1) - 1) // stride[0] + 1
    ow = (w + padding4[2] + padding4[3] - dilation[1] * (kernel_hw[1] - 1) - 1) // stride[1] + 1
    return oh, ow


def pool_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    # In ceil mode the last window must start inside the input or its left padding.
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out
