"""Forward + backward of max pooling on the CPU: amax (gradient / tie count) against torch.max(dim) (gradient
to one argmax), eager, 2 threads, median of 3 interleaved rounds. Output: max_pool_cpu.txt."""

import collections

import torch
from torch.utils import benchmark

torch.set_num_threads(2)
times = collections.defaultdict(list)
for shape in [(64, 32, 64, 64), (64, 64, 32, 32), (64, 128, 16, 16)]:
    x = torch.randn(*shape).relu().requires_grad_()
    fns = {
        "amax hw": lambda x=x: x.amax((2, 3)).sum().backward(),
        "max hw": lambda x=x: x.flatten(2).max(2).values.sum().backward(),
        "amax c": lambda x=x: x.amax(1, keepdim=True).sum().backward(),
        "max c": lambda x=x: x.max(1, keepdim=True).values.sum().backward(),
    }
    for _ in range(3):
        for name, fn in fns.items():
            timer = benchmark.Timer("f()", globals={"f": fn})
            times[(shape, name)].append(timer.blocked_autorange(min_run_time=0.3).median)
for key, ts in times.items():
    print(key, f"{sorted(ts)[1] * 1e3:.2f} ms")
