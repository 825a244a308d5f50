"""Module cost: params, MACs, FLOPs, forward+backward latency and activation memory, eager and compiled.

For every (C, H=W) an input of ``batch``×C×H×W (requires grad, as inside a network) goes through each module of
``lbam.attention`` (default options, train mode) as written (eager) and under ``torch.compile``. Columns:
- ``params``/``macs``/``flops``: ``lbam.complexity.profile_model`` per image;
- ``fwdbwd_ms``: median over interleaved rounds (``common.interleaved_times``) of forward + backward with a fixed
  upstream gradient; ``fwdbwd_over_bam`` (+ ~95 % interval ``ci_lo``/``ci_hi``) is the median per-round ratio to
  BAM in the same mode; ``over_eager`` the compiled time over the same module's eager time;
- ``act_bytes``: bytes of the unique storages autograd saves for backward, without input and parameters.
"""

from __future__ import annotations

import copy
import functools
import itertools
import statistics
from dataclasses import dataclass

import torch

from lbam.attention import build_attention
from lbam.bench.common import interleaved_times, load_avg, paired_ratio, paired_ratio_ci, saved_tensor_bytes
from lbam.complexity import profile_model

ATTENTIONS = ("se", "cbam", "bam", "eca", "lbam")


@dataclass(frozen=True)
class ModuleConfig:
    channels: tuple[int, ...] = (64, 128, 256, 512)
    sizes: tuple[int, ...] = (56, 28, 14)
    batch: int = 8
    rounds: int = 15
    min_s: float = 0.03  # each timed figure averages calls for at least this long
    compiled: tuple[str, ...] = ATTENTIONS  # the modules also measured under torch.compile


QUICK = ModuleConfig(channels=(16,), sizes=(8,), batch=2, rounds=3, min_s=0.0, compiled=("bam", "lbam"))


def _fwdbwd(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    x.grad = None
    module.zero_grad(set_to_none=True)
    module(x).backward(grad)


def bench_modules(
    cfg: ModuleConfig, device: torch.device, info: dict[str, object], backend: str = "inductor"
) -> list[dict]:
    """One row per (channels, size, attention, mode); "compiled" is torch.compile with ``backend``."""
    rows = []
    for channels, size in itertools.product(cfg.channels, cfg.sizes):
        gen = torch.Generator().manual_seed(channels * 1000 + size)
        x = torch.randn(cfg.batch, channels, size, size, generator=gen).to(device).requires_grad_()
        grad = torch.randn(x.shape, generator=gen).to(device)
        torch.manual_seed(0)
        eager = {name: build_attention(name, channels).to(device).train() for name in ATTENTIONS}
        modules = {(name, "eager"): m for name, m in eager.items()}
        # Static-shape graphs, compiled afresh for every size: Dynamo would otherwise make the third shape of a
        # module dynamic, and fall back to eager past its recompile limit.
        torch.compiler.reset()
        for name in cfg.compiled:
            modules[(name, "compiled")] = torch.compile(
                copy.deepcopy(eager[name]), dynamic=False, backend=backend
            )
        fns = {k: functools.partial(_fwdbwd, m, x, grad) for k, m in modules.items()}
        times = interleaved_times(fns, cfg.rounds, cfg.min_s)
        for (name, mode), module in modules.items():
            t, bam = times[(name, mode)], times[("bam", mode)]
            cost = profile_model(eager[name], input_size=(1, channels, size, size))
            act = saved_tensor_bytes(functools.partial(module, x), exclude=[x, *module.parameters()])
            lo, hi = paired_ratio_ci(t, bam)
            rows.append(
                {**info, "load_avg_1m": load_avg(), "batch": cfg.batch, "channels": channels, "size": size}
                | {"attention": name, "mode": mode, **{k: cost[k] for k in ("params", "macs", "flops")}}
                | {"fwdbwd_ms": 1e3 * statistics.median(t), "fwdbwd_over_bam": paired_ratio(t, bam)}
                | {"ci_lo": lo, "ci_hi": hi, "over_eager": paired_ratio(t, times[(name, "eager")])}
                | {"act_bytes": act}
            )
        ms = "  ".join(f"{n}/{m}={1e3 * statistics.median(t):.2f}ms" for (n, m), t in times.items())
        print(f"modules C={channels} {size}x{size}: {ms}", flush=True)
    return rows
