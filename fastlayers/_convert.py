"""fastlayers.convert(model): puts fastlayers' kernels under any torch model. Every torch.nn.Conv2d,
Linear, MaxPool2d and ReLU becomes its fastlayers.nn twin, and where the model's structure makes it
safe, Conv2d -> ReLU (-> MaxPool2d) and Linear -> ReLU become one fused layer. Tested by
tests/test_convert.py: the reference models, models with skip connections, untraceable, hooked,
parametrised and unsupported layers, each against the unconverted model's outputs and gradients.

How it keeps the model's behaviour:
- A layer is swapped by changing its class in place to the twin, a subclass of the torch class
  that only replaces forward. Parameters, buffers, hooks, device, dtype, requires_grad, training
  mode, state_dict keys and every reference to the layer stay as they were.
- The model's own forward code, class and methods are kept; fusion only changes modules (running
  the traced graph instead, as a GraphModule, would drop the model's methods and freeze Python
  control flow such as `if self.training` to the mode it was traced in). The
  conv (or linear) becomes the fused layer, keeping its parameter names, and the ReLU and pool it
  absorbs become nn.Identity in place (no index of an nn.Sequential moves).
- Fusion decisions come from a torch.fx trace of forward, taken in train and in eval mode. A
  conv (or linear) is fused only if, at every call of it in both traces, a ReLU module is the only
  user of its output (and a MaxPool2d module the only user of the ReLU's); a ReLU or pool becomes
  nn.Identity only if every call of it is absorbed. Nothing with hooks that fusing would bypass
  or change is fused (a forward pre-hook on the conv is fine: it still sees the same input).
  ReLU or pooling written as function calls (F.relu, x.relu(), F.max_pool2d) are not absorbed,
  since that would need forward rewritten; the report names them.
- A module whose trace fails is not fused inside, except an nn.Sequential, whose forward is
  known: its consecutive children are fused, and its children are traced on their own.
- Fusion assumes layers run through the model's forward by being called (a `layer.forward(x)`
  seen while tracing blocks fusing that layer), and tracing runs forward's Python code once per
  mode, on proxies.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import fx, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from . import nn as fnn

__all__ = ["convert", "ConversionReport"]

logger = logging.getLogger("fastlayers")

_TWIN = {nn.Conv2d: fnn.Conv2d, nn.Linear: fnn.Linear, nn.MaxPool2d: fnn.MaxPool2d, nn.ReLU: fnn.ReLU}
_OURS = (fnn.Linear, fnn.LinearReLU, fnn.Conv2d, fnn.Conv2dReLU, fnn.Conv2dReLUMaxPool2d, fnn.MaxPool2d, fnn.ReLU)
_CONV = (nn.Conv2d, fnn.Conv2d)      # take a ReLU (and then a pool)
_LINEAR = (nn.Linear, fnn.Linear)    # take a ReLU
_RELU = (nn.ReLU, fnn.ReLU)
_POOL = (nn.MaxPool2d, fnn.MaxPool2d)
_FUSABLE = _CONV + _LINEAR + (fnn.Conv2dReLU,) + _RELU + _POOL
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HOOKS = {"forward": "_forward_hooks", "forward pre": "_forward_pre_hooks",
          "backward": "_backward_hooks", "backward pre": "_backward_pre_hooks"}


@dataclass
class ConversionReport:
    """What convert did. Names are qualified module names ("features.0"; "(model)" for the root).

    replaced: (name, from class, to class) for each layer swapped on its own.
    fused:    (names, fused class): the first name is the layer that became the fused one, the
              others were absorbed and are now nn.Identity.
    skipped:  (name, reason) for each layer left as torch's.
    unfused:  (names, reason) for a conv/linear followed by a ReLU (or a ReLU by a pool) that was
              not fused.
    notes:    anything else that limited fusion (a failed trace, global module hooks)."""

    replaced: list[tuple[str, str, str]] = field(default_factory=list)
    fused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unfused: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fastlayers.convert: {len(self.fused)} fused, {len(self.replaced)} replaced, "
                 f"{len(self.skipped)} skipped, {len(self.unfused)} not fused"]
        lines += [f"  fused      {' + '.join(names)} -> {cls}" for names, cls in self.fused]
        lines += [f"  replaced   {name}: {old} -> {new}" for name, old, new in self.replaced]
        lines += [f"  skipped    {name}: {reason}" for name, reason in self.skipped]
        lines += [f"  not fused  {' + '.join(names)}: {reason}" for names, reason in self.unfused]
        lines += [f"  note       {note}" for note in self.notes]
        return "\n".join(lines)


def convert(model: nn.Module, fuse: bool = True, inplace: bool = False, report: bool = False):
    """Returns `model` with its torch.nn.Conv2d, Linear, MaxPool2d and ReLU layers running on
    fastlayers' kernels, and with Conv2d -> ReLU (-> MaxPool2d) and Linear -> ReLU fused where
    that is safe (fuse=False: swap only). Outputs and gradients stay torch's to float rounding;
    state_dict keys, devices, dtypes, requires_grad and train/eval mode are kept.

    inplace=False converts a deep copy; inplace=True converts `model` itself and returns it.
    Layers fastlayers cannot run (complex or integer dtypes, devices without kernels, subclasses
    of the torch layers) stay as they are. A summary goes to the "fastlayers" logger at
    INFO; report=True returns (model, ConversionReport) with the details. Converting a converted
    model changes nothing."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastlayers.convert: expected model to be a torch.nn.Module, but got {type(model).__name__}")
    dynamo = sys.modules.get("torch._dynamo")
    if isinstance(model, torch.jit.ScriptModule) or (dynamo and isinstance(model, dynamo.eval_frame.OptimizedModule)):
        raise TypeError(f"fastlayers.convert: expected an eager torch.nn.Module, but got {type(model).__name__}; "
                        "convert the model before scripting or compiling it")
    if not inplace:
        model = copy.deepcopy(model)
    result = ConversionReport()
    converter = _Converter(model, result)
    if fuse:
        converter.fuse()
    converter.swap()
    if result.fused or result.replaced or result.skipped or result.unfused or result.notes:
        logger.info("%s", result)
    return (model, result) if report else model


# --- per-module facts -----------------------------------------------------------------------------

def _base(m: nn.Module) -> type:
    """The module's class, seen through torch.nn.utils.parametrize's generated subclass."""
    cls = type(m)
    return cls.__bases__[0] if parametrize.is_parametrized(m) else cls


def _class_name(cls: type) -> str:
    if cls.__module__.startswith("torch.nn.modules"):
        return "torch.nn." + cls.__name__
    if cls.__module__ == fnn.__name__:
        return "fastlayers.nn." + cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _retype(m: nn.Module, cls: type) -> None:
    """Makes m an instance of cls, keeping a parametrisation's generated class on top."""
    if parametrize.is_parametrized(m):
        own = {k: v for k, v in vars(type(m)).items() if k not in ("__dict__", "__weakref__", "__qualname__")}
        cls = type(f"Parametrized{cls.__name__}", (cls,), own)
    m.__class__ = cls


def _hooks(m: nn.Module, allow_pre: bool = False) -> list[str]:
    """The kinds of hooks registered on m (a forward pre-hook still runs on a fused layer's input)."""
    return [kind for kind, attr in _HOOKS.items() if getattr(m, attr, None) and not (allow_pre and kind == "forward pre")]


def _global_hooks() -> bool:
    module = torch.nn.modules.module
    return any(getattr(module, "_global" + attr, None) for attr in _HOOKS.values())


def _device_dtype_problem(tensors, what: str) -> Optional[str]:
    from . import has_cuda

    for t in tensors:
        if t.dtype in _DTYPES and (t.device.type == "cpu" or (t.device.type == "cuda" and has_cuda())):
            continue
        where = "CPU and CUDA" if has_cuda() else "CPU"
        return f"{what} {t.dtype} on {t.device}; fastlayers runs float32, float64, float16 and bfloat16 on {where}"
    return None


def _subclass_problem(m: nn.Module) -> Optional[str]:
    torch_cls = next(c for c in _TWIN if isinstance(m, c))
    if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
        return f"{type(m).__name__} is not initialised yet; run one forward pass before converting"
    for cls in type(m).__mro__:
        if cls is torch_cls:
            break
        for method in ("forward", "_conv_forward"):
            if method in vars(cls):
                return f"{_class_name(cls)} overrides {method} of {_class_name(torch_cls)}"
    return (f"{_class_name(type(m))} subclasses {_class_name(torch_cls)}; only {_class_name(torch_cls)} itself is "
            "swapped, so the subclass keeps its own behaviour")


def _is_relu_call(node: fx.Node) -> bool:
    return ((node.op == "call_function" and getattr(node.target, "__name__", "") in ("relu", "relu_"))
            or (node.op == "call_method" and node.target in ("relu", "relu_")))


def _is_pool_call(node: fx.Node) -> bool:
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    return node.op in ("call_function", "call_method") and name in ("max_pool2d", "_max_pool2d", "max_pool2d_with_indices")


class _Tracer(fx.Tracer):
    """torch.fx's tracer with fastlayers' layers (and their subclasses) as leaves, like torch.nn's."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _OURS) or super().is_leaf_module(m, qualname)


@dataclass
class _Group:
    """Layers to fuse: chain[0] becomes the fused layer, the others become nn.Identity at `slots`."""

    chain: list[nn.Module]
    slots: list[list[tuple[nn.Module, str]]]   # per absorbed module: (parent, key) to replace


# --- the conversion -------------------------------------------------------------------------------

class _Converter:
    def __init__(self, model: nn.Module, report: ConversionReport):
        self.model = model
        self.report = report
        self.names = {id(m): name or "(model)" for name, m in model.named_modules()}
        self.registrations: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
        for parent in model.modules():
            for key, child in parent._modules.items():
                if child is not None:
                    self.registrations[id(child)].append((parent, key))
        # The input dtype of a parameter-free layer is unknown before it runs; the model's tensors stand for it.
        tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point() or t.is_complex()]
        self.parameter_free_problem = _device_dtype_problem(tensors, "the model holds")
        self.unfused: dict[tuple[str, ...], str] = {}

    def name(self, m: nn.Module) -> str:
        return self.names[id(m)]

    def swap_problem(self, m: nn.Module) -> Optional[str]:
        """Why m (a torch layer convert handles) cannot run on fastlayers, or None."""
        if "forward" in vars(m):
            return "has its own forward set on the instance"
        tensors = [*m.parameters(), *m.buffers()]
        return _device_dtype_problem(tensors, "holds") if tensors else self.parameter_free_problem

    # swapping

    def swap(self) -> None:
        for name, m in self.model.named_modules():
            name = name or "(model)"
            base = _base(m)
            if issubclass(base, _OURS):
                continue
            if base in _TWIN:
                problem = self.swap_problem(m)
                if problem:
                    self.report.skipped.append((name, problem))
                else:
                    _retype(m, _TWIN[base])
                    self.report.replaced.append((name, _class_name(base), _class_name(_TWIN[base])))
            elif isinstance(m, tuple(_TWIN)):
                self.report.skipped.append((name, _subclass_problem(m)))

    # fusing

    def fuse(self) -> None:
        if _global_hooks():
            self.report.notes.append("global module hooks are registered; fusing would hide layers from them, "
                                     "so nothing was fused")
            return
        groups = self.plan(self.model, set())
        for group in groups:
            self.apply(group)
        self.report.unfused.extend(self.unfused.items())

    def plan(self, root: nn.Module, seen: set) -> list[_Group]:
        """The groups to fuse inside `root`, a module that is only run through its own forward."""
        if id(root) in seen:
            return []
        seen.add(id(root))
        traces, error = [], None
        for training in (True, False):
            trace = self.trace(root, training)
            if isinstance(trace, str):
                error = trace
                break
            traces.append(trace)
        if error is None:
            return self.graph_groups(root, *traces)
        label = f"{self.name(root)} ({type(root).__name__})"
        if not (isinstance(root, nn.Sequential) and type(root).forward is nn.Sequential.forward):
            self.report.notes.append(f"tracing {label} failed ({error}); its layers are swapped but not fused")
            return []
        self.report.notes.append(f"tracing {label} failed ({error}); fused only across consecutive children "
                                 "of this nn.Sequential and inside children that trace")
        groups = self.sequential_groups(root)
        leaf = _Tracer()
        for key, child in root._modules.items():
            if child is not None and not leaf.is_leaf_module(child, key):
                groups += self.plan(child, seen)
        return groups

    def trace(self, root: nn.Module, training: bool):
        """(graph, calls to a layer's forward that bypass its __call__) with every module of root
        in train or eval mode; or the error message when root cannot be traced. Only the training
        flags are set (not train(), which a model may override), and they are restored after."""
        modes = [(m, m.training) for m in root.modules()]
        watched = [m for m in root.modules() if m is not root and _base(m) in _FUSABLE]
        direct, patched = Counter(), []

        def counting(m):
            forward = m.forward

            def count_then_forward(*args, **kwargs):
                direct[id(m)] += 1
                return forward(*args, **kwargs)
            return count_then_forward

        try:
            for m, _ in modes:
                m.training = training
            for m in watched:
                patched.append((m, m.__dict__.get("forward")))   # a forward set on the instance is put back
                m.forward = counting(m)
            graph = _Tracer().trace(root)
        except Exception as e:  # any failure of symbolic tracing means: no graph to reason about
            lines = str(e).strip().splitlines()
            return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"
        finally:
            for m, own in patched:
                if own is None:
                    del m.forward
                else:
                    m.forward = own
            for m, mode in modes:
                m.training = mode
        return graph, direct

    def head_problem(self, m: nn.Module, root: nn.Module, inside: set, direct: Counter) -> Optional[str]:
        """Why the conv/linear m cannot become a fused layer, whatever follows it."""
        name = self.name(m)
        if direct[id(m)]:
            return f"{name}.forward is called directly"
        if any(id(parent) not in inside for parent, _ in self.registrations[id(m)]):
            return f"{name} is also used outside {self.name(root)}"
        hooks = _hooks(m, allow_pre=True)
        if hooks:
            return f"{name} has {' and '.join(hooks)} hooks, which would see the fused output"
        return None

    def absorbed_problem(self, m: nn.Module, root: nn.Module, inside: set, direct: Counter) -> Optional[str]:
        """Why m (a ReLU or MaxPool2d module) cannot become nn.Identity, given it follows a layer."""
        name = self.name(m)
        hooks = _hooks(m)
        if hooks:
            return f"{name} has {' and '.join(hooks)} hooks, which would no longer run"
        if "forward" in vars(m):
            return f"{name} has its own forward set on the instance"
        if direct[id(m)]:
            return f"{name}.forward is called directly"
        if any(id(parent) not in inside for parent, _ in self.registrations[id(m)]):
            return f"{name} is also used outside {self.name(root)}"
        if _base(m) in _POOL and m.return_indices:
            return f"{name} returns indices"
        return None

    def site_chains(self, root: nn.Module, graph: fx.Graph, direct: Counter, inside: set):
        """For each call of a conv/linear in this trace, the longest fusable chain of layers after it:
        {id(head): [([(module, node)], why it stops or None)]}; and each module's calls, {id: [node]}."""
        mods = {n: root.get_submodule(n.target) for n in graph.nodes if n.op == "call_module"}
        sites = defaultdict(list)
        for n, m in mods.items():
            sites[id(m)].append(n)
        found = defaultdict(list)

        def is_layer(node, kinds):
            return node in mods and _base(mods[node]) in kinds

        def describe(node):
            if node in mods:
                return self.name(mods[node])
            if node.op == "call_function":
                return getattr(node.target, "__name__", node.name)
            return node.target if node.op == "call_method" else "the output" if node.op == "output" else node.name

        def follower(node, kinds, is_call, what):
            """(the layer of `kinds` that alone consumes node, why it cannot be absorbed or None);
            (None, None) where nothing of that kind follows node."""
            users = list(node.users)
            nexts = [u for u in users if is_layer(u, kinds) or is_call(u)]
            if not nexts:
                return None, None
            if len(users) > 1:
                others = ", ".join(describe(u) for u in users if u is not nexts[0])
                return nexts[0], f"the output of {describe(node)} also goes to {others}"
            user = users[0]
            if user.op != "call_module":
                return user, (f"the {what} is a function call; convert keeps forward as written, "
                              f"so only {what} modules are absorbed")
            if user.args != (node,) or user.kwargs:
                return user, f"{describe(user)} is called with more than the output of {describe(node)}"
            return user, self.absorbed_problem(mods[user], root, inside, direct)

        for n, head in mods.items():
            base = _base(head)
            if base not in _CONV + _LINEAR + (fnn.Conv2dReLU,) or self.swap_problem(head):
                continue
            chain, stop = [(head, n)], None
            wants = [(_RELU, _is_relu_call, "ReLU")] if base is not fnn.Conv2dReLU else []
            if base not in _LINEAR:
                wants.append((_POOL, _is_pool_call, "MaxPool2d"))
            for kinds, is_call, what in wants:
                node, problem = follower(chain[-1][1], kinds, is_call, what)
                if node is None:
                    break
                problem = problem or self.head_problem(head, root, inside, direct)
                if problem:
                    stop = (tuple(self.name(m) for m, _ in chain) + (describe(node),), problem)
                    break
                chain.append((mods[node], node))
            found[id(head)].append((chain, stop))
        return found, sites

    def graph_groups(self, root: nn.Module, train_trace, eval_trace) -> list[_Group]:
        """The groups to fuse from the train-mode and eval-mode traces of root: a layer is fused
        with what follows it at every one of its calls in both modes, and a ReLU or pool is
        absorbed only if every call of it is absorbed."""
        inside = {id(m) for m in root.modules()}
        (train_found, train_sites), (eval_found, eval_sites) = (
            self.site_chains(root, graph, direct, inside) for graph, direct in (train_trace, eval_trace))
        groups = {}   # id(head) -> per mode, the chain at each call, cut to what all calls share
        for head_id in [*train_found, *(k for k in eval_found if k not in train_found)]:   # graph order
            per_mode = [train_found.get(head_id, []), eval_found.get(head_id, [])]
            calls = [site for sites in per_mode for site in sites]
            agree = min(len(chain) for chain, _ in calls)
            while agree > 1 and any(chain[agree - 1][0] is not calls[0][0][agree - 1][0] for chain, _ in calls):
                agree -= 1
            longest = max(calls, key=lambda site: len(site[0]))[0]
            stops = [stop for chain, stop in calls if stop and len(chain) == agree]
            if stops:
                self.unfused.setdefault(*stops[0])
            elif agree < len(longest):
                names = tuple(self.name(m) for m, _ in longest[:agree + 1])
                differs = all(len(chain) == len(longest) for chain, _ in per_mode[0]) != \
                    all(len(chain) == len(longest) for chain, _ in per_mode[1])
                self.unfused.setdefault(names, "forward differs between train and eval mode here" if differs else
                                        f"{names[0]} also runs where no {names[agree]} follows it")
            if agree > 1:
                groups[head_id] = [[chain[:agree] for chain, _ in sites] for sites in per_mode]
        # An absorbed module becomes nn.Identity everywhere, so every call of it must be absorbed.
        changed = True
        while changed:
            changed = False
            for mode, sites in enumerate((train_sites, eval_sites)):
                covered = defaultdict(set)
                for per_mode in groups.values():
                    for chain in per_mode[mode]:
                        for m, node in chain[1:]:
                            covered[id(m)].add(node)
                uncovered = next((module_id for module_id, nodes in covered.items()
                                  if nodes != set(sites[module_id])), None)
                if uncovered is None:
                    continue
                for head_id, per_mode in list(groups.items()):
                    chain = next(chain for chains in per_mode for chain in chains)
                    cut = next((i for i, (m, _) in enumerate(chain) if id(m) == uncovered), None)
                    if cut is None:
                        continue
                    names = tuple(self.name(m) for m, _ in chain)
                    self.unfused[names[:cut + 1]] = f"{names[cut]} is also called where it is not fused"
                    if cut < 2:
                        del groups[head_id]
                    else:
                        groups[head_id] = [[chain[:cut] for chain in chains] for chains in per_mode]
                changed = True
                break
        groups = [next(chain for chains in per_mode for chain in chains) for per_mode in groups.values()]
        return [_Group([m for m, _ in chain], [self.registrations[id(m)] for m, _ in chain[1:]]) for chain in groups]

    def sequential_groups(self, seq: nn.Sequential) -> list[_Group]:
        """Fusable runs of consecutive children of an nn.Sequential, which runs them in order."""
        items = [(key, m) for key, m in seq._modules.items() if m is not None]
        groups, i = [], 0
        while i < len(items):
            head = items[i][1]
            base = _base(head)
            chain, slots = [head], []
            wants = [_RELU, _POOL] if base in _CONV else [_RELU] if base in _LINEAR else \
                [_POOL] if base is fnn.Conv2dReLU else []
            if wants and self.swap_problem(head):
                wants = []
            for kinds in wants:
                if i + len(chain) >= len(items) or _base(items[i + len(chain)][1]) not in kinds:
                    break
                key, m = items[i + len(chain)]
                names = tuple(self.name(x) for x in chain) + (self.slot_name(seq, key),)
                problem = None
                if len(self.registrations[id(head)]) != 1:
                    problem = f"{names[0]} is registered under {len(self.registrations[id(head)])} names"
                if not problem:
                    problem = self.head_problem(head, seq, {id(seq)}, Counter())
                if not problem and _hooks(m):
                    problem = f"{names[-1]} has {' and '.join(_hooks(m))} hooks, which would no longer run"
                if not problem and "forward" in vars(m):
                    problem = f"{names[-1]} has its own forward set on the instance"
                if not problem and kinds is _POOL and m.return_indices:
                    problem = f"{names[-1]} returns indices"
                if problem:
                    self.unfused[names] = problem
                    break
                chain.append(m)
                slots.append([(seq, key)])
            if len(chain) > 1:
                groups.append(_Group(chain, slots))
            i += len(chain)
        return groups

    def slot_name(self, parent: nn.Module, key: str) -> str:
        return key if parent is self.model else f"{self.name(parent)}.{key}"

    def apply(self, group: _Group) -> None:
        head, absorbed = group.chain[0], group.chain[1:]
        pool = absorbed[-1] if _base(absorbed[-1]) in _POOL else None
        base = _base(head)
        fused = fnn.LinearReLU if base in _LINEAR else fnn.Conv2dReLUMaxPool2d if pool is not None else fnn.Conv2dReLU
        names = (self.name(head),) + tuple(self.slot_name(*slots[0]) for slots in group.slots)
        _retype(head, fused)
        if pool is not None:
            head.pool_kernel_size, head.pool_stride = pool.kernel_size, pool.stride
            head.pool_padding, head.pool_dilation, head.ceil_mode = pool.padding, pool.dilation, pool.ceil_mode
        for m, slots in zip(absorbed, group.slots):
            identity = nn.Identity()
            identity.train(m.training)
            for parent, key in slots:
                parent._modules[key] = identity
        self.report.fused.append((names, _class_name(fused)))
