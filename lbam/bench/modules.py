"""Module cost: params, MACs, FLOPs, forward+backward latency and activation memory, eager and compiled.

For every (C, H=W) an input of ``batch``×C×H×W (requires grad, as inside a network) goes through each module of
``lbam.attention`` (default options, train mode) as written (eager) and under ``torch.compile``. Columns:
- ``params``/``macs``/``flops``: ``lbam.complexity.profile_model`` per image;
- ``fwdbwd_ms``: median over interleaved rounds (``common.interleaved_times``) of forward + backward with a fixed
  upstream gradient; ``fwdbwd_over_bam`` (+ ~95 % interval ``ci_lo``/``ci_hi``) is the median per-round ratio to
  BAM in the same mode; ``over_eager`` the compiled time over the same module's eager time;
- ``act_bytes``: bytes of the unique storages autograd saves for backward, without input and parameters.
Compiled modules are static-shape graphs (``dynamic=False``), compiled afresh for every size
(``torch.compiler.reset()``: Dynamo would otherwise make the third shape of a module dynamic, and fall back to
eager past its recompile limit).
"""

from __future__ import annotations

import copy
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


def _fwdbwd(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(grad)

    return run


def bench_modules(
    cfg: ModuleConfig, device: torch.device, info: dict[str, object]
) -> list[dict[str, object]]:
    """One row per (channels, size, attention, mode)."""
    rows: list[dict[str, object]] = []
    for channels, size in itertools.product(cfg.channels, cfg.sizes):
        gen = torch.Generator().manual_seed(channels * 1000 + size)
        x = torch.randn(cfg.batch, channels, size, size, generator=gen).to(device).requires_grad_()
        grad = torch.randn(x.shape, generator=gen).to(device)
        torch.manual_seed(0)
        eager = {name: build_attention(name, channels).to(device).train() for name in ATTENTIONS}
        modules = {(name, "eager"): m for name, m in eager.items()}
        torch.compiler.reset()
        for name in cfg.compiled:
            modules[(name, "compiled")] = torch.compile(copy.deepcopy(eager[name]), dynamic=False)
        times = interleaved_times({k: _fwdbwd(m, x, grad) for k, m in modules.items()}, cfg.rounds, cfg.min_s)
        for (name, mode), module in modules.items():
            cost = profile_model(eager[name], input_size=(1, channels, size, size))
            act = saved_tensor_bytes(lambda m=module, x=x: m(x), exclude=[x, *module.parameters()])
            base = ("bam", mode)
            lo, hi = paired_ratio_ci(times[(name, mode)], times[base])
            rows.append(
                {
                    **info,
                    "load_avg_1m": load_avg(),
                    "batch": cfg.batch,
                    "channels": channels,
                    "size": size,
                    "attention": name,
                    "mode": mode,
                    "params": cost["params"],
                    "macs": cost["macs"],
                    "flops": cost["flops"],
                    "fwdbwd_ms": 1e3 * statistics.median(times[(name, mode)]),
                    "fwdbwd_over_bam": paired_ratio(times[(name, mode)], times[base]),
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "over_eager": paired_ratio(times[(name, mode)], times[(name, "eager")]),
                    "act_bytes": act,
                }
            )
        print(
            f"modules C={channels} {size}x{size}: "
            + "  ".join(f"{n}/{m}={1e3 * statistics.median(t):.2f}ms" for (n, m), t in times.items()),
            flush=True,
        )
    return rows
