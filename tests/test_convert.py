"""fastlayers.convert: each converted model against the model it came from (same input, outputs and
every gradient, float64 and float32), its state_dict keys, and the report of what was replaced,
fused, skipped or left unfused. Models: the five reference models; unseen ones with skip
connections, shared and hooked layers, train/eval-dependent and untraceable forwards; layers
fastlayers cannot take; inplace, mode, dtype and idempotence."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

import fastlayers
import fastlayers.nn as fnn
from fastlayers import models

TOLERANCE = {torch.float64: dict(rtol=1e-10, atol=1e-12), torch.float32: dict(rtol=2e-4, atol=2e-5)}
CONV_RELU_POOL, CONV_RELU, LINEAR_RELU = (f"fastlayers.nn.{c}" for c in ("Conv2dReLUMaxPool2d", "Conv2dReLU", "LinearReLU"))


def assert_same_function(ref, conv, x, loss=None, seed=None):
    """conv(x) against ref(x): output, the input's gradient and every parameter's gradient."""
    results = []
    for model in (ref, conv):
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks in both
        xi = x.detach().clone().requires_grad_()
        out = model(xi)
        value = loss(model, out) if loss else (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype,
                                                                    device=out.device).view_as(out)).sum()
        value.backward()
        results.append((out.detach(), xi.grad, {n: p.grad for n, p in model.named_parameters()}))
    tol = TOLERANCE[x.dtype]
    torch.testing.assert_close(results[1][0], results[0][0], **tol, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(results[1][1], results[0][1], **tol, msg=lambda m: f"input grad: {m}")
    assert list(results[1][2]) == list(results[0][2])
    for name, grad in results[0][2].items():
        if grad is None:
            assert results[1][2][name] is None, name
        else:
            torch.testing.assert_close(results[1][2][name], grad, **tol, msg=lambda m: f"{name}.grad: {m}")


def assert_same_state(ref, conv, **tolerance):
    """The same state_dict keys and values (equal, or within `tolerance` after running)."""
    assert list(conv.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        if tolerance:
            torch.testing.assert_close(conv.state_dict()[key], value, **tolerance, msg=lambda m: f"{key}: {m}")
        else:
            assert torch.equal(conv.state_dict()[key], value), key


# --- the reference models ---------------------------------------------------------------------

EXPECTED_FUSED = {
    "mlp": [(("fc1", "relu"), LINEAR_RELU)],
    "regression_mlp": [(("fc1", "relu"), LINEAR_RELU)],
    "cifar_cnn": [(("conv1", "relu", "pool"), CONV_RELU_POOL), (("conv2", "relu", "pool"), CONV_RELU_POOL),
                  (("fc1", "relu"), LINEAR_RELU)],
    "lenet": [(("conv1", "relu", "pool"), CONV_RELU_POOL), (("conv2", "relu", "pool"), CONV_RELU_POOL),
              (("fc1", "relu"), LINEAR_RELU), (("fc2", "relu"), LINEAR_RELU)],
    "mnist_cnn": [(("conv1", "relu", "pool"), CONV_RELU_POOL), (("conv2", "relu", "pool"), CONV_RELU_POOL),
                  (("fc1", "relu"), LINEAR_RELU)],
}
LAST_LAYER = {"mlp": "fc2", "regression_mlp": "fc2", "cifar_cnn": "fc2", "lenet": "fc3", "mnist_cnn": "fc2"}


def model_batch(model, device, dtype, n=8):
    x = torch.randn(n, *model.input_shape, device=device, dtype=dtype)
    target = (torch.randn(n, 1, device=device, dtype=dtype) if isinstance(model, models.RegressionMLP)
              else torch.randint(0, 10, (n,), device=device))
    return x, lambda m, out: m.loss(out, target)


@pytest.mark.parametrize("name", list(models.MODELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_models(device, name, dtype):
    ref = models.build(name, "torch").to(device, dtype).eval()
    conv, report = fastlayers.convert(ref, report=True)
    assert conv is not ref and all(not isinstance(m, fnn.__dict__[c]) for m in ref.modules() for c in fnn.__all__)
    assert report.fused == EXPECTED_FUSED[name]
    assert report.replaced == [(LAST_LAYER[name], "torch.nn.Linear", "fastlayers.nn.Linear")]
    assert report.skipped == report.unfused == report.notes == []
    # The same layers as the model built from fastlayers layers, the absorbed ReLU and pool now Identity.
    built = models.build(name, "fastlayers")
    for module_name, module in built.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert type(conv.get_submodule(module_name)) is type(module), module_name
    assert type(conv.relu) is nn.Identity
    assert_same_state(ref, conv)
    x, loss = model_batch(ref, device, dtype)
    assert_same_function(ref, conv, x, loss)


@pytest.mark.parametrize("name", ["regression_mlp", "mnist_cnn"])
def test_reference_models_train_mode_with_dropout(name):
    ref = models.build(name, "torch").double()
    conv = fastlayers.convert(ref)
    assert conv.training and conv.dropout.training
    x, loss = model_batch(ref, "cpu", torch.float64)
    assert_same_function(ref, conv, x, loss, seed=3)


def test_fuse_false_only_swaps():
    ref = models.build("cifar_cnn", "torch")
    conv, report = fastlayers.convert(ref, fuse=False, report=True)
    assert report.fused == [] and report.notes == []
    assert [r[0] for r in report.replaced] == ["relu", "pool", "conv1", "conv2", "fc1", "fc2"]
    assert type(conv.conv1) is fnn.Conv2d and type(conv.relu) is fnn.ReLU and type(conv.pool) is fnn.MaxPool2d
    assert_same_function(ref.double(), conv.double(), torch.randn(4, 3, 24, 24, dtype=torch.float64))


# --- models it has never seen ------------------------------------------------------------------

class SkipNet(nn.Module):
    """A stem whose output feeds a ReLU and the skip add, a ResNet basic block (conv, bn, relu,
    conv, bn, + identity, relu), and an nn.Sequential head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                  nn.Flatten(), nn.Linear(16 * 4 * 4, 10), nn.ReLU(), nn.Linear(10, 10))

    def forward(self, x):
        y = self.stem(x)
        out = self.relu(y)
        out = self.relu1(self.bn1(self.conv1(out)))
        out = self.bn2(self.conv2(out))
        out = self.relu(out + y)
        return self.head(out)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_skip_connections_are_not_fused_across(dtype):
    ref = SkipNet().to(dtype)
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("head.0", "head.1", "head.2"), CONV_RELU_POOL), (("head.4", "head.5"), LINEAR_RELU)]
    assert report.unfused == [(("stem", "relu"), "the output of stem also goes to add")]
    assert type(conv.stem) is fnn.Conv2d and type(conv.relu) is fnn.ReLU and type(conv.relu1) is fnn.ReLU
    assert type(conv.bn1) is nn.BatchNorm2d and type(conv.head[1]) is nn.Identity and len(conv.head) == 7
    assert {r[0] for r in report.replaced} == {"stem", "relu", "conv1", "relu1", "conv2", "head.6"}
    assert_same_state(ref, conv)
    assert_same_function(ref, conv, torch.randn(4, 3, 8, 8, dtype=dtype))  # train mode: batch statistics
    assert_same_state(ref, conv, **TOLERANCE[dtype])  # the same running statistics
    assert_same_function(ref.eval(), conv.eval(), torch.randn(4, 3, 8, 8, dtype=dtype))


def test_sequential_model():
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
                        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("0", "1", "2"), CONV_RELU_POOL), (("3", "4"), CONV_RELU), (("6", "7"), LINEAR_RELU)]
    assert report.replaced == [("8", "torch.nn.Linear", "fastlayers.nn.Linear")]
    assert conv[0].ceil_mode and conv[3].padding_mode == "reflect"
    assert [type(m) for m in conv] == [fnn.Conv2dReLUMaxPool2d, nn.Identity, nn.Identity, fnn.Conv2dReLU, nn.Identity,
                                       nn.Flatten, fnn.LinearReLU, nn.Identity, fnn.Linear]
    assert_same_state(ref, conv)
    assert_same_function(ref, conv, torch.randn(3, 3, 9, 9, dtype=torch.float64))


class FeatureTaps(nn.Module):
    """Runs an nn.Sequential layer by layer and returns every layer's output (a feature
    extractor): fusing the Sequential's conv and ReLU would change the conv's tapped output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU())

    def forward(self, x):
        taps = []
        for layer in self.body:
            x = layer(x)
            taps.append(x.flatten(1))
        return torch.cat(taps, 1)


class SharedLayers(nn.Module):
    """pool also runs outside the conv1 chain, relu2 also after a subtraction: neither may become
    nn.Identity, so conv1 fuses its ReLU only and conv2 fuses nothing."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2 = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        x = self.pool(x)
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        return self.relu2(x - 0.5)


class ModeDependent(nn.Module):
    """In eval mode the conv output also feeds an add: fused in neither mode."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 4, 3), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        if self.training:
            return self.relu(y)
        return self.relu(y) + y


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 3 * 3, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(x.flatten(1)).relu()


class DirectForward(nn.Module):
    """relu.forward called directly: making relu an Identity would change that call."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(3, 4, 3), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + self.relu.forward(x).mean()


class SharedBlock(nn.Module):
    """A block run twice (shared weights) fuses, the same ReLU and pool following its conv at both
    calls; conv, run once without its ReLU, does not."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1))
        self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

    def forward(self, x):
        x = self.block(self.block(x))
        y = self.relu(self.conv(x))
        return y + self.conv(y)


FUNCTION_RELU = "the ReLU is a function call; convert keeps forward as written, so only ReLU modules are absorbed"
SAFE_ONLY = {  # model: (report.fused, report.unfused)
    FeatureTaps: ([], [(("body.0", "body.1"), "the output of body.0 also goes to flatten"),
                       (("body.2", "body.3"), "the output of body.2 also goes to flatten")]),
    SharedLayers: ([(("conv1", "relu1"), CONV_RELU)],
                   [(("conv1", "relu1", "pool"), "pool is also called where it is not fused"),
                    (("conv2", "relu2"), "relu2 is also called where it is not fused")]),
    ModeDependent: ([], [(("conv", "relu"), "the output of conv also goes to add")]),
    Functional: ([], [(("conv", "relu"), FUNCTION_RELU), (("fc", "relu"), FUNCTION_RELU)]),
    DirectForward: ([], [(("conv", "relu"), "relu.forward is called directly")]),
    SharedBlock: ([(("block.0", "block.1", "block.2"), CONV_RELU_POOL)],
                  [(("conv", "relu"), "conv also runs where no relu follows it")]),
}


@pytest.mark.parametrize("cls", list(SAFE_ONLY), ids=lambda c: c.__name__)
def test_fuses_only_where_safe(cls):
    ref = cls().double()
    conv, report = fastlayers.convert(ref, report=True)
    fused, unfused = SAFE_ONLY[cls]
    assert report.fused == fused
    assert report.unfused == unfused
    assert_same_state(ref, conv)
    for mode in (True, False):
        assert_same_function(ref.train(mode), conv.train(mode), torch.randn(2, 3, 8, 8, dtype=torch.float64))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        y = self.relu(self.conv(x))
        return y if y.mean() > 0 else -y


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc, self.relu = nn.Linear(4 * 4 * 4, 5), nn.ReLU()

    def forward(self, x):
        x = self.features(x)
        if x.sum() > 0:
            x = x * 2
        return self.relu(self.fc(x.flatten(1)))


def test_untraceable_model_is_swapped_without_fusing():
    ref = Untraceable().double()
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == []
    assert report.notes == [
        "tracing (model) (Untraceable) failed (TraceError: symbolically traced variables cannot be used as inputs "
        "to control flow); its layers are swapped but not fused"]
    assert sorted(r[0] for r in report.replaced) == ["fc", "features.0", "features.1", "features.2", "relu"]
    assert_same_function(ref, conv, torch.randn(2, 3, 8, 8, dtype=torch.float64))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.relu = nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(x)) + x


def test_untraceable_sequential_fuses_consecutive_children():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), DataDependent(), Block(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()).double()
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("0", "1", "2"), CONV_RELU_POOL), (("5", "6"), CONV_RELU), (("4.conv", "4.relu"), CONV_RELU)]
    assert [note.split(" failed")[0] for note in report.notes] == ["tracing (model) (Sequential)", "tracing 3 (DataDependent)"]
    assert type(conv[3].conv) is fnn.Conv2d and type(conv[3].relu) is fnn.ReLU
    assert_same_state(ref, conv)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert_same_function(ref, conv, x)
    assert_same_function(ref, conv, -x)


# --- layers it cannot take, hooks, parametrisations --------------------------------------------

class ScaledConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


class ZeroBiasConv(nn.Conv2d):
    def reset_parameters(self):
        super().reset_parameters()
        nn.init.zeros_(self.bias)


def test_layers_it_cannot_take_are_kept_and_named():
    ref = nn.Sequential(ScaledConv(3, 4, 3), nn.ReLU(), ZeroBiasConv(4, 4, 3), nn.ReLU(), nn.Flatten(),
                        nn.LazyLinear(5), nn.ReLU()).double()
    ref[6].forward = lambda x: torch.tanh(x)
    conv, report = fastlayers.convert(ref, report=True)
    assert report.skipped == [
        ("0", "test_convert.ScaledConv overrides forward of torch.nn.Conv2d"),
        ("2", "test_convert.ZeroBiasConv subclasses torch.nn.Conv2d; only torch.nn.Conv2d itself is swapped, "
              "so the subclass keeps its own behaviour"),
        ("5", "LazyLinear is not initialised yet; run one forward pass before converting"),
        ("6", "has its own forward set on the instance")]
    assert report.fused == [] and [r[0] for r in report.replaced] == ["1", "3"]
    assert type(conv[0]) is ScaledConv and type(conv[2]) is ZeroBiasConv
    ref(torch.randn(2, 3, 8, 8, dtype=torch.float64))   # materialises the lazy layer; converting then swaps it
    conv, report = fastlayers.convert(ref, report=True)
    assert report.unfused == [(("5", "6"), "6 has its own forward set on the instance")]
    assert_same_function(ref, conv, torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_unsupported_dtype_is_skipped():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(36, 5)).to(torch.complex64)
    conv, report = fastlayers.convert(ref, report=True)
    assert report.replaced == report.fused == []
    supported = "fastlayers runs float32, float64, float16 and bfloat16 on CPU"
    assert report.skipped == [("0", f"holds torch.complex64 on cpu; {supported}"), ("2", f"holds torch.complex64 on cpu; {supported}")]
    x = torch.randn(2, 3, 5, 5, dtype=torch.complex64)
    assert torch.equal(conv(x), ref(x))


def test_low_precision_models_are_converted():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5)).to(torch.bfloat16)
    conv, report = fastlayers.convert(ref, report=True)
    assert report.skipped == [] and len(report.fused) == 1
    x = torch.randn(2, 3, 5, 5, dtype=torch.bfloat16)
    torch.testing.assert_close(conv(x), ref(x), rtol=0.02, atol=0.02)


def test_hooked_layers_keep_their_hooks_and_are_not_fused_away():
    seen = {"ref": [], "conv": []}

    def build():
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                              nn.Linear(64, 6), nn.ReLU(inplace=True), nn.Linear(6, 6), nn.ReLU()).double()
        model[8].register_full_backward_hook(lambda m, gi, go: None)
        return model

    ref = build()
    ref[0].register_forward_hook(lambda m, i, o: seen[key].append(("0", o.detach().clone())))
    ref[2].register_forward_pre_hook(lambda m, i: seen[key].append(("2 pre", i[0].detach().clone())))
    ref[6].register_forward_hook(lambda m, i, o: seen[key].append(("6", o.detach().clone())))
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("2", "3"), CONV_RELU)]     # a forward pre-hook still sees the fused layer's input
    assert report.unfused == [(("0", "1"), "0 has forward hooks, which would see the fused output"),
                              (("5", "6"), "6 has forward hooks, which would no longer run"),
                              (("7", "8"), "8 has backward hooks, which would no longer run")]
    assert [type(conv[i]) for i in (0, 1, 5, 6, 7, 8)] == [fnn.Conv2d, fnn.ReLU, fnn.Linear, fnn.ReLU, fnn.Linear, fnn.ReLU]
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for key, model in (("ref", ref), ("conv", conv)):
        model(x)
    assert [k for k, _ in seen["conv"]] == [k for k, _ in seen["ref"]] == ["0", "2 pre", "6"]
    for (k, got), (_, want) in zip(seen["conv"], seen["ref"]):
        torch.testing.assert_close(got, want, **TOLERANCE[torch.float64], msg=lambda m: f"hook {k}: {m}")
    assert_same_function(ref, conv, x)


def test_parametrized_layers_are_swapped_and_fused():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5)).double()
    parametrizations.weight_norm(ref[0])
    parametrizations.weight_norm(ref[3])
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("0", "1"), CONV_RELU)]
    assert isinstance(conv[0], fnn.Conv2dReLU) and parametrize.is_parametrized(conv[0], "weight")
    assert isinstance(conv[3], fnn.Linear) and parametrize.is_parametrized(conv[3], "weight")
    assert_same_state(ref, conv)
    assert_same_function(ref, conv, torch.randn(2, 3, 5, 5, dtype=torch.float64))
    parametrize.remove_parametrizations(conv[0], "weight")
    assert type(conv[0]) is fnn.Conv2dReLU


# --- what it keeps ------------------------------------------------------------------------------

def test_inplace():
    ref = models.build("lenet", "torch")
    copy = fastlayers.convert(ref)
    assert copy is not ref and type(ref.conv1) is nn.Conv2d and type(ref.relu) is nn.ReLU
    assert all(p is not q for p, q in zip(ref.parameters(), copy.parameters()))
    params = list(ref.parameters())
    same = fastlayers.convert(ref, inplace=True)
    assert same is ref and type(ref.conv1) is fnn.Conv2dReLUMaxPool2d and type(ref.relu) is nn.Identity
    assert all(p is q for p, q in zip(params, ref.parameters()))


def test_keeps_dtype_requires_grad_and_modes():
    ref = SkipNet().double().eval()
    ref.head.train()
    ref.stem.weight.requires_grad_(False)
    conv = fastlayers.convert(ref)
    for (name, m), (_, m_ref) in zip(conv.named_modules(), ref.named_modules()):
        assert m.training == m_ref.training, name
    for (name, p), (_, p_ref) in zip(conv.named_parameters(), ref.named_parameters()):
        assert p.dtype == torch.float64 and p.device == p_ref.device and p.requires_grad == p_ref.requires_grad, name
    assert_same_function(ref, conv, torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert conv.stem.weight.grad is None


@pytest.mark.parametrize("name", ["cifar_cnn", "skipnet"])
def test_converting_again_changes_nothing(name):
    ref = (models.build(name, "torch") if name != "skipnet" else SkipNet()).double().eval()
    once, first = fastlayers.convert(ref, report=True)
    twice, second = fastlayers.convert(once, report=True)
    assert second.fused == second.replaced == second.skipped == []
    assert second.unfused == first.unfused
    assert [type(m) for m in twice.modules()] == [type(m) for m in once.modules()]
    x = torch.randn(2, *(ref.input_shape if name != "skipnet" else (3, 8, 8)), dtype=torch.float64)
    assert torch.equal(twice(x), once(x))
    # A model built from fastlayers layers has only its unused torch pool left to convert.
    _, built = fastlayers.convert(models.build("cifar_cnn", "fastlayers"), report=True)
    assert built.fused == built.skipped == [] and built.replaced == [("pool", "torch.nn.MaxPool2d", "fastlayers.nn.MaxPool2d")]


def test_separate_fastlayers_layers_are_fused():
    ref = nn.Sequential(fnn.Conv2d(3, 4, 3), fnn.ReLU(), fnn.MaxPool2d(2), nn.Conv2d(4, 4, 1), nn.ReLU()).double()
    step = nn.Sequential(fnn.Conv2dReLU(3, 4, 3), nn.MaxPool2d(2)).double()
    conv, report = fastlayers.convert(ref, report=True)
    assert report.fused == [(("0", "1", "2"), CONV_RELU_POOL), (("3", "4"), CONV_RELU)]
    assert_same_function(ref, conv, torch.randn(2, 3, 8, 8, dtype=torch.float64))
    conv, report = fastlayers.convert(step, report=True)
    assert report.fused == [(("0", "1"), CONV_RELU_POOL)]
    assert_same_function(step, conv, torch.randn(2, 3, 8, 8, dtype=torch.float64))


def test_report_and_log(caplog):
    with caplog.at_level(logging.INFO, logger="fastlayers"):
        _, report = fastlayers.convert(SkipNet(), report=True)
    assert str(report) in caplog.text
    assert str(report).splitlines()[:3] == [
        "fastlayers.convert: 2 fused, 6 replaced, 0 skipped, 1 not fused",
        "  fused      head.0 + head.1 + head.2 -> fastlayers.nn.Conv2dReLUMaxPool2d",
        "  fused      head.4 + head.5 -> fastlayers.nn.LinearReLU"]
    assert "  not fused  stem + relu: the output of stem also goes to add" in str(report).splitlines()


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_bad_input():
    with pytest.raises(TypeError, match="fastlayers.convert: expected model to be a torch.nn.Module, but got str"):
        fastlayers.convert("model")
    with pytest.raises(TypeError, match="convert the model before scripting or compiling it"):
        fastlayers.convert(torch.jit.script(nn.Linear(2, 2)))
