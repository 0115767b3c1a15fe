"""`python -m fastlayers train`: trains one of the reference image models (fastlayers or torch
layers) with the documented setup, the model's own loss and SGD(lr=0.01, momentum=0.9), on MNIST,
CIFAR-10 or the embedded scikit-learn digits (see fastlayers/data.py), on one process or under
torch.nn.parallel.DistributedDataParallel when started by torchrun.

    python -m fastlayers train --model mnist_cnn --data ~/mnist --epochs 2 --out runs
    torchrun --standalone --nproc_per_node 2 -m fastlayers train --model lenet --epochs 2

Each epoch: a tqdm progress bar, then the mean train loss, the test accuracy and the mean step time
printed; the model's state_dict saved with torch.save (OUT/<model>_epoch<N>.pt, loadable by the
torch-layers model); OUT/<model>_metrics.json and a PNG of the loss and accuracy curves
(OUT/<model>_curves.png, needs matplotlib) rewritten. Under torchrun (WORLD_SIZE/RANK/LOCAL_RANK
set) the process group is gloo on CPU and nccl on CUDA, --batch-size is the global batch (each rank
takes batch/world of it, sharded by DistributedSampler), and only rank 0 prints and writes files.
The sample order is DistributedSampler's for every world size, one process included, so a run on
N processes sees the same global batches as a run on one.

Tested in tests/test_train.py (loss parity with the torch twins, the command end to end, clean
errors, DDP against one process) and tests/test_mnist.py (accuracy on real MNIST).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from . import data as fdata
from .models import MODELS, build

__all__ = ["Config", "Plan", "History", "prepare_run", "fit", "run", "train_epoch", "evaluate", "main"]

IMAGE_MODELS = ["mlp", "cifar_cnn", "lenet", "mnist_cnn"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
EVAL_BATCH = 500  # evaluation needs no gradients: larger batches, fewer calls


@dataclass
class Config:
    """The options of `python -m fastlayers train` (see main for what each means)."""

    model: str
    data: str | None = None
    epochs: int = 2
    batch_size: int | None = None
    device: str = "cpu"
    layers: str = "fastlayers"
    out: str = "runs"
    seed: int = 0
    lr: float = 0.01
    momentum: float = 0.9
    limit: int | None = None
    dtype: str = "float32"
    workers: int = 0
    plot: bool = True


@dataclass
class Plan:
    """A checked Config with its data loaded and adapted: what fit() needs."""

    cfg: Config
    rank: int
    world: int
    distributed: bool
    device: torch.device
    dtype: torch.dtype
    batch_size: int  # global
    train_set: TensorDataset
    test_set: TensorDataset
    notes: list[str]


@dataclass
class History:
    """What a run measured: the global-batch loss of every step, and per epoch the mean train loss,
    the test accuracy (percent), the mean step time (ms); the files written (rank 0)."""

    step_loss: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    checkpoints: list[str] = field(default_factory=list)
    plot: str | None = None
    notes: list[str] = field(default_factory=list)


def _launch_env() -> tuple[bool, int, int, int]:
    """(started by torchrun, rank, world size, local rank) from the environment torchrun sets."""
    if "WORLD_SIZE" not in os.environ:
        return False, 0, 1, 0
    try:
        return True, int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    except (KeyError, ValueError) as e:
        raise ValueError(f"WORLD_SIZE is set, so RANK and LOCAL_RANK must be integers too (as torchrun sets them): {e}") from None


def prepare_run(cfg: Config) -> Plan:
    """Checks the options and loads the data. Raises ValueError / FileNotFoundError (a bad option,
    a missing or malformed data file) before any process group exists."""
    if cfg.model not in IMAGE_MODELS:
        raise ValueError(f"--model must be one of {IMAGE_MODELS}, but got {cfg.model!r}")
    if cfg.layers not in ("torch", "fastlayers"):
        raise ValueError(f"--layers must be 'torch' or 'fastlayers', but got {cfg.layers!r}")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {list(DTYPES)}, but got {cfg.dtype!r}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be at least 1, but got {cfg.epochs}")
    distributed, rank, world, local_rank = _launch_env()
    if cfg.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device")
        from . import has_cuda

        if cfg.layers == "fastlayers" and not has_cuda():
            raise ValueError("--device cuda --layers fastlayers: this fastlayers build has no CUDA kernels")
        device = torch.device("cuda", local_rank if distributed else torch.cuda.current_device())
    elif cfg.device == "cpu":
        device = torch.device("cpu")
    else:
        raise ValueError(f"--device must be 'cpu' or 'cuda', but got {cfg.device!r}")
    model_cls = MODELS[cfg.model]
    batch = cfg.batch_size or model_cls.batch_size
    if batch < 1 or batch % world:
        raise ValueError(f"--batch-size is the global batch and must be a positive multiple of the {world} "
                         f"process{'es' * (world > 1)}, but got {batch}")
    dtype = DTYPES[cfg.dtype]
    train_set, test_set, notes = fdata.prepare(fdata.load(cfg.data), model_cls.input_shape, cfg.limit, dtype)
    if distributed and len(train_set) % world:
        notes.append(f"DistributedSampler pads the {len(train_set)} training images to a multiple of {world} "
                     f"by repeating {world - len(train_set) % world} of them each epoch")
    return Plan(cfg, rank, world, distributed, device, dtype, batch, train_set, test_set, notes)


def train_epoch(model, loss_fn, batches, optimizer, device) -> tuple[list[float], list[float]]:
    """One pass over `batches` (x, target): forward, loss_fn, backward, optimizer step. Returns this
    process's loss and wall time (seconds: batch transfer, forward, backward, step) of each step.
    If `batches` is a tqdm bar its postfix shows the running loss."""
    model.train()
    losses, times = [], []
    for x, target in batches:
        start = time.perf_counter()
        x, target = x.to(device, non_blocking=True), target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # waits for the device, so the time below is the whole step's
        times.append(time.perf_counter() - start)
        if hasattr(batches, "set_postfix_str"):
            batches.set_postfix_str(f"loss {losses[-1]:.4f}", refresh=False)
    return losses, times


@torch.no_grad()
def evaluate(model, batches, device) -> tuple[int, int]:
    """(correct, total): arg-max predictions of `model` (in eval mode) against the labels."""
    model.eval()
    correct = total = 0
    for x, target in batches:
        correct += int((model(x.to(device)).argmax(1).cpu() == target).sum())
        total += len(target)
    return correct, total


def plot(history: History, path: Path, title: str) -> None:
    """Train loss per step (and its per-epoch mean) and test accuracy per epoch, side by side."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    per_step = history.steps_per_epoch
    steps = [(i + 1) / per_step for i in range(len(history.step_loss))]
    epochs = list(range(1, len(history.epoch_loss) + 1))
    loss_ax.plot(steps, history.step_loss, lw=0.8, alpha=0.6, label="per step")
    loss_ax.plot(epochs, history.epoch_loss, "o-", label="epoch mean")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="train loss")
    loss_ax.legend()
    acc_ax.plot(epochs, history.test_accuracy, "o-", color="tab:green")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy", xticks=epochs)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def fit(plan: Plan, log=print) -> History:
    """Trains as `plan` says: inits and tears down the process group when started by torchrun."""
    if plan.distributed:
        if plan.device.type == "cuda":
            torch.cuda.set_device(plan.device)
        dist.init_process_group("nccl" if plan.device.type == "cuda" else "gloo")
    try:
        history = _fit(plan, log if plan.rank == 0 else (lambda *a, **k: None))
        if plan.distributed:
            # Rank 0 still writes checkpoints when the others finish; gloo aborts a process that tears its
            # group down while a peer is still connected, so every rank waits here first.
            dist.barrier()
        return history
    finally:
        if plan.distributed:
            dist.destroy_process_group()


def _fit(plan: Plan, log) -> History:
    from tqdm import tqdm

    cfg, rank, world, device = plan.cfg, plan.rank, plan.world, plan.device
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and for either layers
    net = build(cfg.model, cfg.layers).to(device, plan.dtype)
    model = DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None) if plan.distributed else net
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    per_rank = plan.batch_size // world
    sampler = DistributedSampler(plan.train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    pin = device.type == "cuda"
    loader = DataLoader(plan.train_set, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers, pin_memory=pin)
    # Each rank scores every world-th test image; the counts are summed, so no image counts twice.
    test_loader = DataLoader(Subset(plan.test_set, range(rank, len(plan.test_set), world)),
                             batch_size=EVAL_BATCH, num_workers=cfg.workers, pin_memory=pin)
    out = Path(cfg.out)
    history = History(steps_per_epoch=len(loader), notes=plan.notes)

    for note in plan.notes:
        log(f"data: {note}")
    ranks = f" ({per_rank} on each of {world} processes, DistributedDataParallel)" if plan.distributed else ""
    log(f"model {cfg.model} ({cfg.layers} layers, {sum(p.numel() for p in net.parameters())} parameters) on "
        f"{device} {cfg.dtype}; its own loss, SGD lr {cfg.lr} momentum {cfg.momentum}; batch {plan.batch_size}{ranks}; "
        f"{len(plan.train_set)} train / {len(plan.test_set)} test images, {len(loader)} steps per epoch")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed + rank)  # dropout: each rank draws its own masks

    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch}/{cfg.epochs}", unit="step", disable=rank != 0, leave=False)
        losses, times = train_epoch(model, net.loss, bar, optimizer, device)
        bar.close()
        counts = torch.tensor([*evaluate(net, test_loader, device)], dtype=torch.float64)
        losses = torch.tensor(losses, dtype=torch.float64)
        if plan.distributed:  # every rank's steps have the same batch size: the mean is the global batch's loss
            stats = torch.cat([losses, counts]).to(device)
            dist.all_reduce(stats)
            losses, counts = stats[:len(losses)].cpu() / world, stats[len(losses):].cpu()
        history.step_loss += losses.tolist()
        history.epoch_loss.append(losses.mean().item())
        history.test_accuracy.append(100.0 * counts[0].item() / counts[1].item())
        history.step_ms.append(1000.0 * sum(times) / len(times))
        log(f"epoch {epoch}/{cfg.epochs}: train loss {history.epoch_loss[-1]:.4f}, test accuracy "
            f"{history.test_accuracy[-1]:.2f}% ({int(counts[0])}/{int(counts[1])}), step {history.step_ms[-1]:.1f} ms")
        if rank == 0:
            _save(net, history, out, epoch, cfg, log)
    return history


def _save(net, history: History, out: Path, epoch: int, cfg: Config, log) -> None:
    path = out / f"{cfg.model}_epoch{epoch}.pt"
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, path)
    history.checkpoints.append(str(path))
    if cfg.plot:
        try:
            history.plot = str(out / f"{cfg.model}_curves.png")
            plot(history, Path(history.plot), f"{cfg.model} ({cfg.layers} layers)")
        except ImportError:
            history.plot = None
            log("plot skipped: matplotlib is not installed (pip install matplotlib)")
    metrics = {"config": asdict(cfg), **{k: v for k, v in asdict(history).items()}}
    (out / f"{cfg.model}_metrics.json").write_text(json.dumps(metrics, indent=1))
    log(f"saved {path}" + (f", {history.plot}" if history.plot else ""))


def run(cfg: Config, log=print) -> History:
    """prepare_run, then fit."""
    return fit(prepare_run(cfg), log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlayers train", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=IMAGE_MODELS)
    parser.add_argument("--data", metavar="DIR", help="MNIST IDX files or CIFAR-10 python batches (default: the "
                        "handwritten digits inside scikit-learn, resized to the model's input)")
    parser.add_argument("--epochs", type=int, default=Config.epochs)
    parser.add_argument("--batch-size", type=int, metavar="B", help="global batch size (default: the model's, "
                        "64 or 100); under torchrun each process takes B / world size")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=Config.device,
                        help="under torchrun with cuda, each process takes the GPU of its LOCAL_RANK")
    parser.add_argument("--layers", choices=["fastlayers", "torch"], default=Config.layers)
    parser.add_argument("--out", metavar="DIR", default=Config.out, help="checkpoints, metrics JSON and PNG (default: runs)")
    parser.add_argument("--seed", type=int, default=Config.seed, help="initial weights, sample order and dropout")
    parser.add_argument("--lr", type=float, default=Config.lr)
    parser.add_argument("--momentum", type=float, default=Config.momentum)
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N train and N test images")
    parser.add_argument("--dtype", choices=list(DTYPES), default=Config.dtype)
    parser.add_argument("--workers", type=int, default=Config.workers, help="DataLoader worker processes")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not draw the PNG")
    cfg = Config(**vars(parser.parse_args(argv)))
    try:
        plan = prepare_run(cfg)
    except (FileNotFoundError, ValueError) as e:  # a bad option or data file: the message says it all
        if os.environ.get("RANK", "0") == "0":
            print(f"python -m fastlayers train: error: {e}", file=sys.stderr)
        return 2
    fit(plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
