"""Concurrency and memory: Python threads calling the ops at once on the same inputs get results
identical to one thread's (no global mutable state in the kernels), and a long training loop keeps
the process's resident memory flat (no leak in the ops, their autograd or their workspaces)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import fastlayers.functional as FF
from fastlayers import nn as fnn


def every_op(x, conv_w, conv_b, fc_w, fc_b):
    """One forward through every op, returning the output and the gradients of every input."""
    y = FF.conv2d_relu_max_pool2d(x, conv_w, conv_b, padding=1, pool_kernel_size=2)
    y = FF.max_pool2d(FF.relu(FF.conv2d(y, conv_w[:, :6].contiguous(), None, padding=1, groups=1)), 3, 1, 1)
    z = FF.linear_relu(FF.conv2d_relu(y, conv_w[:, :6].contiguous(), conv_b, stride=2).flatten(1), fc_w, fc_b)
    out = FF.linear(z, fc_w[:, :17].contiguous())
    grads = torch.autograd.grad(out.square().sum(), (x, conv_w, conv_b, fc_w, fc_b))
    return [out.detach(), *grads]


def test_threads_get_identical_results():
    torch.manual_seed(0)
    args = [torch.randn(4, 6, 10, 10), torch.randn(6, 6, 3, 3), torch.randn(6), torch.randn(17, 24), torch.randn(17)]
    args = [a.requires_grad_() for a in args]
    expected = every_op(*args)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: every_op(*args), range(64)))
    for result in results:
        for got, want in zip(result, expected):
            assert torch.equal(got, want)


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads resident memory from /proc")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="AddressSanitizer holds freed memory in quarantine")
def test_training_loop_does_not_leak():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        fnn.Conv2dReLUMaxPool2d(3, 8, 3, padding=1, pool_kernel_size=2),
        fnn.Conv2d(8, 8, 3, padding=1), fnn.ReLU(), fnn.MaxPool2d(2),
        torch.nn.Flatten(), fnn.LinearReLU(8 * 3 * 3, 16), fnn.Linear(16, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, target = torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))

    def steps(n):
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), target).backward()
            opt.step()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # memory, not speed, is measured: no fork/join on a busy machine
    try:
        steps(1_000)  # warm-up: allocator pools, lazy initialisation
        before = resident_bytes()
        steps(10_000)
        grown = resident_bytes() - before
    finally:
        torch.set_num_threads(threads)
    # The step's own tensors total ~20 KB, so a leak of even one per step would be ~200 MB.
    assert grown < 8 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over 10,000 steps"
