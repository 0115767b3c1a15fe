"""Property-based fuzzing of every op against torch: hypothesis draws random configurations (sizes
from 0 up, strides, paddings, dilations, groups, ceil_mode, bias or not, float32/float64, layouts
that are contiguous, channels_last, transposed, sliced or expanded, requires_grad on any subset,
the functional API or torch.ops.fastlayers, the CPU instruction set and thread count) and checks
outputs, pooling indices and every gradient against torch in float64.

Where torch refuses a configuration (a kernel larger than the padded input, an empty pooling
output, padding='same' with a stride, ...) fastlayers must refuse it too, with an error that names
the op. Values are either N(0, 1), compared with the tolerances of conftest.assert_close, or small
integers, for which every sum is exact in float32 too and the results must be equal bit for bit
(ties in the pools included). Pools also see NaN and +-inf.

Run with the fast profile by make test, with the deep one (10,000 cases per op) by make fuzz; the
case counts per op are printed at the end (fuzz_report.py)."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, note
from hypothesis import strategies as st

import bad_inputs
import fastlayers
import fastlayers.functional as FF
import fuzz_report
from conftest import assert_close

ops = torch.ops.fastlayers
LAYOUTS = ["contiguous", "contiguous", "channels_last", "transposed", "sliced", "expanded"]
DTYPES = [torch.float32, torch.float64]
# Sizes around the GEMM's register tiles and cache blocks (MC 128, KC 256, NC 512 for float32).
BLOCK_EDGES = [7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513]


# --- drawing the machine, tensors and gradients ---------------------------------------------------

@contextlib.contextmanager
def machine(data, device):
    """Draws the CPU instruction set, the thread count and the torch seed of one case; restores
    the instruction set and the thread count afterwards."""
    old_threads = torch.get_num_threads()
    if device == "cpu":
        fastlayers.set_cpu_isa(data.draw(st.sampled_from(fastlayers.cpu_isas()), label="cpu_isa"))
        torch.set_num_threads(data.draw(st.sampled_from(sorted({1, 2, old_threads})), label="threads"))
    # Every value is drawn on the CPU (then moved): seeding the CPU generator is enough, and it
    # costs microseconds where torch.manual_seed, which seeds every backend, costs milliseconds.
    torch.default_generator.manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    try:
        yield
    finally:
        fastlayers.set_cpu_isa("best")
        torch.set_num_threads(old_threads)


def values(kind, shape):
    """float64 values on the CPU: N(0, 1), small integers, or N(0, 1) with NaN, +-inf and +-0."""
    if kind == "integers":
        return torch.randint(-3, 4, shape, dtype=torch.float64)
    x = torch.randn(shape, dtype=torch.float64)
    if kind == "special" and x.numel():
        specials = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0, -0.0], dtype=torch.float64)
        pick = torch.rand(shape) < 0.2
        x[pick] = specials[torch.randint(0, len(specials), (int(pick.sum()),))]
    return x


def tensor(data, name, shape, dtype, device, kind, requires_grad=False, layouts=LAYOUTS):
    """A leaf tensor of `shape` in a drawn memory layout (views keep their strides)."""
    shape = tuple(shape)
    layout = data.draw(st.sampled_from(layouts), label=f"{name} layout")
    if layout == "channels_last" and len(shape) == 4:
        t = values(kind, shape).to(device, dtype).contiguous(memory_format=torch.channels_last)
    elif layout == "transposed" and len(shape) >= 2:
        t = values(kind, shape[:-2] + shape[:-3:-1]).to(device, dtype).transpose(-1, -2)
    elif layout == "sliced" and len(shape) >= 1:
        t = values(kind, shape[:-1] + (2 * shape[-1] + 1,)).to(device, dtype)[..., 1::2]
    elif layout == "expanded" and len(shape) >= 1 and shape[0] > 1:
        t = values(kind, (1,) + shape[1:]).to(device, dtype).expand(shape)
    else:
        t = values(kind, shape).to(device, dtype)
    assert t.shape == shape
    return t.detach().requires_grad_(requires_grad)


def reference_copy(t):
    """The float64 CPU twin of a fastlayers input, with the same requires_grad."""
    return None if t is None else t.detach().to("cpu", torch.float64).requires_grad_(t.requires_grad)


def draw_requires_grad(data, names):
    return {n: data.draw(st.booleans(), label=f"{n}.requires_grad") for n in names}


def gradients(out, inputs, grad_out):
    """Gradients of out with respect to the inputs that require grad (None for the others)."""
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    if not wanted:
        return [None] * len(inputs)
    got = iter(torch.autograd.grad(out, wanted, grad_out))
    return [next(got) if t is not None and t.requires_grad else None for t in inputs]


def check(actual, expected, terms, kind, what):
    """fastlayers against the float64 reference: bit-equal for integer-valued data (every sum is
    exact), within conftest.assert_close's tolerance otherwise."""
    if kind == "integers":
        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        torch.testing.assert_close(actual.double().cpu(), expected, rtol=0, atol=0, msg=lambda m: f"{what}: {m}")
    else:
        assert_close(actual, expected, terms, what)


def check_grads(inputs, grads, ref_inputs, ref_grads, terms, kind, names):
    for t, g, r, rg, n, name in zip(inputs, grads, ref_inputs, ref_grads, terms, names):
        if t is None or not t.requires_grad:
            continue
        assert g.shape == t.shape and g.dtype == t.dtype, f"grad_{name}: {g.shape} {g.dtype}"
        check(g, rg, n, kind, f"grad_{name}")


def grad_output(ref_out, dtype, device, kind):
    """A random output gradient, as fastlayers gets it and as the reference gets it (the same
    values, in float64)."""
    g = values("integers" if kind == "integers" else "normal", tuple(ref_out.shape)).to(device, dtype)
    return g, g.detach().to("cpu", torch.float64)


def expect_same_refusal(op, torch_error, call):
    """torch refused the configuration (torch_error); fastlayers must refuse it too, cleanly."""
    note(f"torch raised {type(torch_error).__name__}: {torch_error}")
    with pytest.raises(Exception) as info:
        call()
    problem = bad_inputs.problem(op, info.value, [])
    assert problem is None, problem
    fuzz_report.count(op, what="raised_like_torch")


def sizes(low=0, high=6, edges=()):
    """Small sizes, with occasional block edges."""
    small = st.integers(low, high)
    return st.one_of(small, small, small, st.sampled_from(list(edges))) if edges else small


def rare(data, label, one_in=10):
    """True about one time in `one_in` (the last value of the range: hypothesis starts from the
    first, so the common case is also the simplest)."""
    return data.draw(st.integers(0, one_in - 1), label=label) == one_in - 1


# --- linear, linear_relu --------------------------------------------------------------------------

@pytest.mark.parametrize("relu", [False, True], ids=["linear", "linear_relu"])
@given(data=st.data())
def test_fuzz_linear(device, relu, data):
    op = "linear_relu" if relu else "linear"
    fuzz_report.count(op)
    with machine(data, device):
        lead = data.draw(st.lists(st.integers(0, 5), max_size=3), label="leading dims")
        k = data.draw(sizes(0, 9, BLOCK_EDGES), label="in_features")
        n = data.draw(sizes(0, 9, BLOCK_EDGES), label="out_features")
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        kind = data.draw(st.sampled_from(["normal", "integers"]), label="values")
        has_bias = data.draw(st.booleans(), label="bias")
        api = data.draw(st.sampled_from(["functional", "op"]), label="api")
        rg = draw_requires_grad(data, "xwb")
        x = tensor(data, "x", (*lead, k), dtype, device, kind, rg["x"])
        w = tensor(data, "w", (n, k), dtype, device, kind, rg["w"])
        b = tensor(data, "b", (n,), dtype, device, kind, rg["b"]) if has_bias else None
        fn = getattr(FF if api == "functional" else ops, op)
        out = fn(x, w, b)

        refs = [reference_copy(t) for t in (x, w, b)]
        ref = F.linear(*refs)
        ref = torch.relu(ref) if relu else ref
        assert out.dtype == dtype and out.device == x.device and out.requires_grad == ref.requires_grad
        check(out, ref, k, kind, "output")
        if ref.requires_grad:
            gy, ref_gy = grad_output(ref, dtype, device, kind)
            rows = ref.numel() // max(n, 1)
            check_grads((x, w, b), gradients(out, (x, w, b), gy), refs, gradients(ref, refs, ref_gy), (n, rows, rows), kind, "xwb")


# --- relu -----------------------------------------------------------------------------------------

@given(data=st.data())
def test_fuzz_relu(device, data):
    fuzz_report.count("relu")
    with machine(data, device):
        shape = data.draw(st.lists(st.integers(0, 7), max_size=4), label="shape")
        if shape and rare(data, "one large dimension", 4):  # vector tails and threaded loops
            shape[0] = data.draw(st.sampled_from([17, 64, 65, 1000, 70_000]), label="large dimension")
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        kind = data.draw(st.sampled_from(["normal", "integers", "special"]), label="values")
        api = data.draw(st.sampled_from(["functional", "inplace", "op"]), label="api")
        x = tensor(data, "x", shape, dtype, device, kind, data.draw(st.booleans(), label="x.requires_grad"))
        xr = reference_copy(x)
        if api == "inplace":
            # In place on a leaf that requires grad is refused by torch's autograd; on a copy the
            # gradient still reaches x.
            h, hr = x.clone(), xr.clone()
            out, ref = FF.relu(h, inplace=True), F.relu(hr, inplace=True)
            assert out is h
        else:
            out, ref = (FF.relu if api == "functional" else ops.relu)(x), torch.relu(xr)
        assert out.dtype == dtype and out.device == x.device and out.shape == ref.shape and out.requires_grad == ref.requires_grad
        torch.testing.assert_close(out.double().cpu(), ref, rtol=0, atol=0, equal_nan=True)
        if ref.requires_grad:
            gy, ref_gy = grad_output(ref, dtype, device, kind)
            (gx,), (gr,) = gradients(out, [x], gy), gradients(ref, [xr], ref_gy)
            torch.testing.assert_close(gx.double().cpu(), gr, rtol=0, atol=0)


# --- max_pool2d -----------------------------------------------------------------------------------

def pool_geometry(data, prefix=""):
    """kernel, stride (None: the kernel's), padding, dilation, ceil_mode; padding is drawn up to
    one past half the kernel, which torch refuses."""
    kernel = [data.draw(st.integers(1, 5), label=f"{prefix}kernel_{d}") for d in "hw"]
    stride = data.draw(st.one_of(st.none(), st.tuples(st.integers(1, 4), st.integers(1, 4))), label=f"{prefix}stride")
    padding = [data.draw(st.integers(0, k // 2 + rare(data, f"{prefix}padding_{d} may pass half the kernel", 40)), label=f"{prefix}padding_{d}") for k, d in zip(kernel, "hw")]
    dilation = [data.draw(st.integers(1, 3), label=f"{prefix}dilation_{d}") for d in "hw"]
    ceil_mode = data.draw(st.booleans(), label=f"{prefix}ceil_mode")
    return kernel, stride, padding, dilation, ceil_mode


def plane_size(data, name, extent, padding):
    """A plane size around the smallest one that holds the (dilated) window: mostly valid, now and
    then too small, now and then empty."""
    return max(max(extent - 2 * padding, 1) + data.draw(st.integers(-1, 8), label=name), 0 if rare(data, f"{name}: may be 0", 20) else 1)


def torch_max_pool2d(act, kernel, stride, padding, dilation, ceil_mode):
    """torch's max_pool2d (output, indices), the output differentiable without torch's max_pool2d
    backward: it is the gather of act at torch's indices, whose backward is the same scatter, but
    a window with no tap inside the plane is held constant. Such a window gives -inf and an index
    that is none of its taps (past the plane's end, where torch's backward writes out of bounds)."""
    out, indices = F.max_pool2d(act.detach(), kernel, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=True)
    empty = F.max_pool2d(act.new_zeros(act.shape[-2:])[None], kernel, stride, padding, dilation, ceil_mode=ceil_mode)[0].isneginf()
    gathered = act.flatten(-2).gather(-1, indices.masked_fill(empty, 0).flatten(-2)).view_as(out)
    return torch.where(empty, out, gathered), indices


def pool_indices_agree(indices, ref_indices, ref_act, ref_out, terms, exact):
    """Exactly torch's indices where the values are exact; otherwise each index that differs from
    torch's must point at a window maximum of the float64 reference activation (near-ties may pick
    either element)."""
    indices = indices.cpu()
    if exact:
        assert torch.equal(indices, ref_indices), "indices differ from torch's"
        return
    same = indices == ref_indices
    plane = ref_act.shape[-1] * ref_act.shape[-2]
    at_index = ref_act.detach().flatten(-2).gather(-1, indices.clamp(0, max(plane - 1, 0)).flatten(-2)).view_as(ref_out)
    assert_close(torch.where(same, ref_out.detach(), at_index), ref_out.detach(), terms, "activation at the returned indices")


@given(data=st.data())
def test_fuzz_max_pool2d(device, data):
    fuzz_report.count("max_pool2d")
    with machine(data, device):
        kernel, stride, padding, dilation, ceil_mode = pool_geometry(data)
        batched = not rare(data, "unbatched", 4)
        api = data.draw(st.sampled_from(["functional", "op"]), label="api") if batched else "functional"
        n = data.draw(st.integers(0, 3), label="N")
        c = 0 if rare(data, "zero channels") else data.draw(st.integers(1, 4), label="C")
        h, w = (plane_size(data, f"{d} - window", dl * (k - 1) + 1, p) for d, k, p, dl in zip("HW", kernel, padding, dilation))
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        kind = data.draw(st.sampled_from(["normal", "integers", "special"]), label="values")
        x = tensor(data, "x", (n, c, h, w) if batched else (c, h, w), dtype, device, kind, data.draw(st.booleans(), label="x.requires_grad"))
        xr = reference_copy(x)
        try:
            ref, ref_indices = torch_max_pool2d(xr, kernel, stride, padding, dilation, ceil_mode)
        except RuntimeError as e:
            if api == "op":
                return expect_same_refusal("max_pool2d", e, lambda: ops.max_pool2d(x, kernel, stride or kernel, padding, dilation, ceil_mode))
            return expect_same_refusal("max_pool2d", e, lambda: FF.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, True))
        if api == "op":
            out, indices = ops.max_pool2d(x, kernel, stride or kernel, padding, dilation, ceil_mode)
        else:
            out, indices = FF.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        assert out.dtype == dtype and indices.dtype == torch.int64 and out.requires_grad == ref.requires_grad
        assert out.device == indices.device == x.device and not indices.requires_grad
        torch.testing.assert_close(out.double().cpu(), ref, rtol=0, atol=0, equal_nan=True, msg=lambda m: f"output: {m}")
        assert torch.equal(indices.cpu(), ref_indices), "indices differ from torch's"
        if ref.requires_grad:
            gy, ref_gy = grad_output(ref, dtype, device, kind)
            (gx,), (gr,) = gradients(out, [x], gy), gradients(ref, [xr], ref_gy)
            check(gx, gr, kernel[0] * kernel[1], kind, "grad_input")  # overlapping windows sum


# --- conv2d, conv2d_relu, conv2d_relu_max_pool2d --------------------------------------------------

def conv_geometry(data, api, small=False):
    """groups, in/out channels per group, kernel, stride, dilation and padding (as the functional
    API takes it, or [top, bottom, left, right] for the op) of one convolution, and the input plane
    size drawn around the smallest that holds the dilated kernel."""
    g = data.draw(st.sampled_from([1, 1, 1, 2, 3, 4]), label="groups")
    # 16+ input channels per group take grad_input's flipped-weight path; 0 in / out channels
    # happen now and then (torch refuses zero out_channels).
    cg = 0 if rare(data, "no in_channels", 20) else data.draw(st.sampled_from([1, 2, 3, 1, 2, 3, 5, 16, 17]), label="in_channels / groups")
    ocg = 0 if rare(data, "no out_channels", 20) else data.draw(st.sampled_from([1, 2, 3, 4, 1, 2, 3, 8, 17]), label="out_channels / groups")
    if small:
        cg, ocg = min(cg, 5), min(ocg, 5)
    if cg >= 16:
        g = min(g, 2)  # keeps the float64 reference (torch's slow path) at a few ms
    kernel = [data.draw(st.integers(1, 5), label=f"kernel_{d}") for d in "hw"]
    stride = [data.draw(st.integers(1, 3), label=f"stride_{d}") for d in "hw"]
    dilation = [data.draw(st.integers(1, 3), label=f"dilation_{d}") for d in "hw"]
    extent = [dl * (k - 1) + 1 for dl, k in zip(dilation, kernel)]
    if api == "op":
        padding = [data.draw(st.integers(0, 4), label=f"padding_{side}") for side in ("top", "bottom", "left", "right")]
        total = [padding[0] + padding[1], padding[2] + padding[3]]
    else:
        form = data.draw(st.sampled_from(["int", "pair", "same", "valid"]), label="padding form")
        if form == "int":
            padding = data.draw(st.integers(0, 4), label="padding")
            total = [2 * padding] * 2
        elif form == "pair":
            padding = tuple(data.draw(st.integers(0, 4), label=f"padding_{d}") for d in "hw")
            total = [2 * p for p in padding]
        elif form == "same":
            padding, total = "same", [e - 1 for e in extent]
            if not rare(data, "keep a stride with 'same'", 5):
                stride = [1, 1]  # torch refuses 'same' with a stride
        else:
            padding, total = "valid", [0, 0]
    # Around the smallest plane that holds the kernel; an empty plane now and then.
    h, w = (max(e - t + data.draw(st.integers(-1, 9), label=f"{d} - kernel"), 0 if rare(data, f"{d} may be 0", 20) else 1)
            for e, t, d in zip(extent, total, "HW"))
    n = data.draw(st.one_of(st.integers(0, 3), st.just(5)), label="N")
    return dict(g=g, c=cg * g, oc=ocg * g, kernel=kernel, stride=stride, dilation=dilation, padding=padding, n=n, h=h, w=w)


def torch_conv2d(x, w, b, geo, relu):
    """torch's relu(conv2d) in float64. [top, bottom, left, right] padding (the op's) goes through
    F.pad, after torch's own check that a non-empty batch of non-empty channels has non-empty
    planes. With zero input channels torch returns a tensor of zero channels, whatever the weight;
    the convolution is then the bias alone, over the output plane torch finds for an empty batch
    of one channel per group (which also gives torch's verdict on the geometry)."""
    padding = geo["padding"]
    if isinstance(padding, list):
        batch = x.shape[:-3].numel() if x.dim() == 4 else 1
        if x.numel() == 0 and batch and x.shape[-3]:
            raise RuntimeError("Only zero batch or zero channel inputs are supported")
        x = F.pad(x, [padding[2], padding[3], padding[0], padding[1]])
        padding = 0
    if x.shape[-3] == 0:
        stand_in = F.conv2d(x.new_zeros((0, geo["g"], *x.shape[-2:])), w.new_zeros((w.shape[0], 1, *w.shape[2:])),
                            None, geo["stride"], padding, geo["dilation"], geo["g"])
        y = x.new_zeros((*x.shape[:-3], *stand_in.shape[1:])) + 0 * (x.sum() + w.sum())
        y = y + b.view(-1, 1, 1) if b is not None else y
    else:
        y = F.conv2d(x, w, b, geo["stride"], padding, geo["dilation"], geo["g"])
    return torch.relu(y) if relu else y


def conv_inputs(data, geo, dtype, device, kind, batched):
    rg = draw_requires_grad(data, "xwb")
    shape = (geo["n"], geo["c"], geo["h"], geo["w"]) if batched else (geo["c"], geo["h"], geo["w"])
    x = tensor(data, "x", shape, dtype, device, kind, rg["x"])
    w = tensor(data, "w", (geo["oc"], geo["c"] // geo["g"], *geo["kernel"]), dtype, device, kind, rg["w"])
    b = tensor(data, "b", (geo["oc"],), dtype, device, kind, rg["b"]) if data.draw(st.booleans(), label="bias") else None
    return x, w, b


def conv_terms(w, out):
    """Length of the sums behind each element of the output, grad_weight and grad_bias."""
    per_channel = out.numel() // max(out.shape[-3], 1)
    return w[0].numel(), per_channel * w.shape[2] * w.shape[3], per_channel


@pytest.mark.parametrize("relu", [False, True], ids=["conv2d", "conv2d_relu"])
@given(data=st.data())
def test_fuzz_conv2d(device, relu, data):
    op = "conv2d_relu" if relu else "conv2d"
    fuzz_report.count(op)
    with machine(data, device):
        api = data.draw(st.sampled_from(["functional", "op"]), label="api")
        geo = conv_geometry(data, api)
        batched = api == "op" or not rare(data, "unbatched", 5)
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        kind = data.draw(st.sampled_from(["normal", "integers"]), label="values")
        x, w, b = conv_inputs(data, geo, dtype, device, kind, batched)
        args = (geo["stride"], geo["padding"], geo["dilation"], geo["g"])
        call = (lambda: getattr(ops, op)(x, w, b, *args)) if api == "op" else (lambda: getattr(FF, op)(x, w, b, *args))
        refs = [reference_copy(t) for t in (x, w, b)]
        try:
            ref = torch_conv2d(*refs, geo, relu)
        except RuntimeError as e:
            return expect_same_refusal(op, e, call)
        out = call()
        assert out.dtype == dtype and out.device == x.device and out.requires_grad == ref.requires_grad
        out_terms, w_terms, b_terms = conv_terms(w, ref)
        check(out, ref, out_terms, kind, "output")
        if ref.requires_grad:
            gy, ref_gy = grad_output(ref, dtype, device, kind)
            check_grads((x, w, b), gradients(out, (x, w, b), gy), refs, gradients(ref, refs, ref_gy),
                        (geo["oc"] * geo["kernel"][0] * geo["kernel"][1], w_terms, b_terms), kind, "xwb")


@given(data=st.data())
def test_fuzz_conv2d_relu_max_pool2d(device, data):
    op = "conv2d_relu_max_pool2d"
    fuzz_report.count(op)
    with machine(data, device):
        api = data.draw(st.sampled_from(["functional", "op"]), label="api")
        geo = conv_geometry(data, api, small=True)
        kernel, stride, padding, dilation, ceil_mode = pool_geometry(data, "pool_")
        # The conv's output plane must hold the pool's window most of the time: grow the input.
        grow = [max(0, dl * (k - 1) + 1 - 2 * p - 1) * s for dl, k, p, s in zip(dilation, kernel, padding, geo["stride"])]
        geo["h"] += grow[0] * (geo["h"] > 0)
        geo["w"] += grow[1] * (geo["w"] > 0)
        batched = api == "op" or not rare(data, "unbatched", 5)
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        kind = data.draw(st.sampled_from(["normal", "integers"]), label="values")
        x, w, b = conv_inputs(data, geo, dtype, device, kind, batched)
        conv_args = (geo["stride"], geo["padding"], geo["dilation"], geo["g"])
        if api == "op":
            def call():
                return ops.conv2d_relu_max_pool2d(x, w, b, *conv_args, kernel, stride or kernel, padding, dilation, ceil_mode)
        else:
            def call():
                return FF.conv2d_relu_max_pool2d(x, w, b, *conv_args, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
        refs = [reference_copy(t) for t in (x, w, b)]
        try:
            act = torch_conv2d(*refs, geo, relu=True)
            ref, ref_indices = torch_max_pool2d(act, kernel, stride, padding, dilation, ceil_mode)
        except RuntimeError as e:
            return expect_same_refusal(op, e, call)
        out, indices = call()
        assert out.dtype == dtype and indices.dtype == torch.int64 and out.requires_grad == ref.requires_grad
        assert out.device == indices.device == x.device and not indices.requires_grad
        out_terms, w_terms, b_terms = conv_terms(w, act)
        check(out, ref, out_terms, kind, "output")
        pool_indices_agree(indices, ref_indices, act, ref, out_terms, exact=kind == "integers" or dtype == torch.float64)
        if ref.requires_grad:
            gy, ref_gy = grad_output(ref, dtype, device, kind)
            x_terms = geo["oc"] * geo["kernel"][0] * geo["kernel"][1] * kernel[0] * kernel[1]
            check_grads((x, w, b), gradients(out, (x, w, b), gy), refs, gradients(ref, refs, ref_gy),
                        (x_terms, w_terms, b_terms), kind, "xwb")
