"""The five reference models, each buildable from torch.nn layers or from fastlayers layers with
the same parameter names, so a state_dict moves between the two unchanged:

    torch_model = fastlayers.models.build("cifar_cnn", layers="torch")
    fast_model = fastlayers.models.build("cifar_cnn", layers="fastlayers")
    fast_model.load_state_dict(torch_model.state_dict())

With layers="fastlayers", each Conv2d/Linear followed by ReLU is one fused layer, and each
Conv2d -> ReLU -> MaxPool2d one fused Conv2dReLUMaxPool2d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as fnn

__all__ = ["MLP", "RegressionMLP", "CifarCNN", "LeNet5", "MnistCNN", "MODELS", "build"]


class _Model(nn.Module):
    """Picks the layer classes; `_act(x)` is the ReLU that the fused layers already applied."""

    def __init__(self, layers: str):
        super().__init__()
        if layers not in ("torch", "fastlayers"):
            raise ValueError(f"layers must be 'torch' or 'fastlayers', but got {layers!r}")
        self.fused = layers == "fastlayers"
        self.relu = nn.Identity() if self.fused else nn.ReLU()

    def loss(self, output, target):
        """The training loss of the model's task: cross-entropy on the class logits."""
        return F.cross_entropy(output, target)

    def conv_relu_pool(self, *args, pool, **kwargs):
        """Conv2d whose output goes through ReLU and `pool` (see conv_block); fused into one
        Conv2dReLUMaxPool2d with fastlayers layers."""
        if not self.fused:
            return nn.Conv2d(*args, **kwargs)
        return fnn.Conv2dReLUMaxPool2d(*args, **kwargs, pool_kernel_size=pool.kernel_size, pool_stride=pool.stride,
                                       pool_padding=pool.padding, pool_dilation=pool.dilation, ceil_mode=pool.ceil_mode)

    def conv_block(self, conv, x):
        """pool(relu(conv(x))): the pool and ReLU are already inside a fused conv."""
        return conv(x) if self.fused else self.pool(self.relu(conv(x)))

    def linear_relu(self, *args, **kwargs):
        return (fnn.LinearReLU if self.fused else nn.Linear)(*args, **kwargs)

    def linear(self, *args, **kwargs):
        return (fnn.Linear if self.fused else nn.Linear)(*args, **kwargs)


class MLP(_Model):
    """flatten, Linear(784, 128), ReLU, Linear(128, 10); input N x 1 x 28 x 28."""

    input_shape = (1, 28, 28)
    batch_size = 100

    def __init__(self, layers: str = "torch"):
        super().__init__(layers)
        self.fc1 = self.linear_relu(784, 128)
        self.fc2 = self.linear(128, 10)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


class RegressionMLP(_Model):
    """Linear(10, 20), ReLU, Dropout(0.5), Linear(20, 1)."""

    input_shape = (10,)
    batch_size = 64

    def __init__(self, layers: str = "torch"):
        super().__init__(layers)
        self.fc1 = self.linear_relu(10, 20)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = self.linear(20, 1)

    def forward(self, x):
        return self.fc2(self.dropout(self.relu(self.fc1(x))))

    def loss(self, output, target):
        """Regression: mean squared error against a [N, 1] target."""
        return F.mse_loss(output, target)


class CifarCNN(_Model):
    """Conv(3,32,3,p1), ReLU, MaxPool 2, Conv(32,64,3,p1), ReLU, MaxPool 2, Linear(2304,128), ReLU,
    Linear(128,10); input N x 3 x 24 x 24."""

    input_shape = (3, 24, 24)
    batch_size = 64

    def __init__(self, layers: str = "torch"):
        super().__init__(layers)
        self.pool = nn.MaxPool2d(2)
        self.conv1 = self.conv_relu_pool(3, 32, 3, padding=1, pool=self.pool)
        self.conv2 = self.conv_relu_pool(32, 64, 3, padding=1, pool=self.pool)
        self.fc1 = self.linear_relu(64 * 6 * 6, 128)
        self.fc2 = self.linear(128, 10)

    def forward(self, x):
        x = self.conv_block(self.conv2, self.conv_block(self.conv1, x))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


class LeNet5(_Model):
    """LeNet-5 on 3 x 32 x 32: Conv(3,6,5), ReLU, MaxPool(2,2), Conv(6,16,5), ReLU, MaxPool(2,2),
    Linear(400,120), ReLU, Linear(120,84), ReLU, Linear(84,10), log_softmax."""

    input_shape = (3, 32, 32)
    batch_size = 64

    def __init__(self, layers: str = "torch"):
        super().__init__(layers)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv1 = self.conv_relu_pool(3, 6, 5, pool=self.pool)
        self.conv2 = self.conv_relu_pool(6, 16, 5, pool=self.pool)
        self.fc1 = self.linear_relu(400, 120)
        self.fc2 = self.linear_relu(120, 84)
        self.fc3 = self.linear(84, 10)

    def forward(self, x):
        x = self.conv_block(self.conv2, self.conv_block(self.conv1, x))
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        x = self.relu(self.fc2(x))
        return F.log_softmax(self.fc3(x), dim=1)

    def loss(self, output, target):
        """The output is already log-probabilities: negative log-likelihood."""
        return F.nll_loss(output, target)


class MnistCNN(_Model):
    """Conv(1,32,5,1,2), ReLU, MaxPool(2,2), Conv(32,64,5,1,2), ReLU, MaxPool(2,2),
    Linear(3136,1024), ReLU, Dropout(0.5), Linear(1024,10); input N x 1 x 28 x 28."""

    input_shape = (1, 28, 28)
    batch_size = 64

    def __init__(self, layers: str = "torch"):
        super().__init__(layers)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv1 = self.conv_relu_pool(1, 32, 5, 1, 2, pool=self.pool)
        self.conv2 = self.conv_relu_pool(32, 64, 5, 1, 2, pool=self.pool)
        self.fc1 = self.linear_relu(3136, 1024)
        self.dropout = nn.Dropout(0.5)
        self.fc2 = self.linear(1024, 10)

    def forward(self, x):
        x = self.conv_block(self.conv2, self.conv_block(self.conv1, x))
        x = self.dropout(self.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


MODELS = {
    "mlp": MLP,
    "regression_mlp": RegressionMLP,
    "cifar_cnn": CifarCNN,
    "lenet": LeNet5,
    "mnist_cnn": MnistCNN,
}


def build(name: str, layers: str = "torch") -> nn.Module:
    """One of MODELS by name, from 'torch' or 'fastlayers' layers."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name](layers)
