"""The layers as torch.autograd.Function classes, for code that composes its own autograd:

    y = fastlayers.autograd.Conv2d.apply(x, w, b, stride, padding, dilation, groups, relu)
    out, indices = fastlayers.autograd.MaxPool2d.apply(x, kernel, stride, padding, dilation, ceil_mode)

They take the raw ops' arguments (4-D input; conv2d padding [top, bottom, left, right], pooling
padding [h, w]). Their backward, in Python, calls the same backward ops as the ops' own autograd
in C++ (csrc/autograd.cpp), which fastlayers.functional and fastlayers.nn use, tens of
microseconds faster per call. Double backward works through either. Tested in
tests/test_autograd_functions.py."""

from ._autograd import Conv2d, Conv2dReLUMaxPool2d, Linear, MaxPool2d, ReLU

__all__ = ["Linear", "Conv2d", "Conv2dReLUMaxPool2d", "MaxPool2d", "ReLU"]
