"""Module cost: params, MACs, FLOPs, train-mode latency and activation memory of each attention module.

For every (C, H=W) an input of ``batch``×C×H×W (requires grad, as inside a network) goes through each module
of ``lbam.attention`` (default options) and through ``lbam_reference``, the plain eager LBAM sharing the
LBAM instance's parameters (checked equal in float64 first). Columns:
- ``params``/``macs``/``flops``: ``lbam.complexity.profile_model`` per image (batch 1).
- ``fwd_ms``/``fwdbwd_ms``: median wall time of forward, and of forward + backward with a fixed random
  upstream gradient, in train mode; all candidates of one size run round-robin in a shuffled order.
- ``act_bytes``: activation memory, i.e. bytes of the unique storages autograd saves for backward (via
  ``torch.autograd.graph.saved_tensors_hooks``), not counting the input and the parameters.
- ``*_over_{se,bam,lbam_reference}``: ratios to those rows; latency ratios are medians of per-round ratios
  (the two times of a round share the machine's state, which cancels most of the drift);
  ``fwdbwd_over_*_ci_lo/hi`` bound a ~95 % distribution-free interval of that median.
- ``lbam_gap_only`` is LBAM with ``pool="avg"`` (no global max pooling), measured to show where LBAM's time
  goes relative to BAM: the two differ only in the channel branch (1-D conv on GAP+GMP vs BAM's MLP on GAP).
- ``none`` (identity) has no cost to divide by, so against it the CSV gives differences (``*_added_ms``); its
  latency is the harness's own overhead.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

import torch
from torch import nn

from lbam.attention import ATTENTIONS, build_attention
from lbam.bench.common import (
    interleaved_times,
    machine_info,
    paired_ratio,
    paired_ratio_ci,
    saved_tensor_bytes,
    zero_grads,
)
from lbam.bench.reference import ReferenceLBAM, check_reference
from lbam.complexity import profile_model

REFERENCE = "lbam_reference"
# LBAM without its GMP (pool="avg"): the ablation that shows what the max pooling costs next to BAM.
GAP_ONLY = "lbam_gap_only"
# Ratio columns are written against these rows (the baselines and the eager reference).
BASELINES = ("se", "bam", REFERENCE)


@dataclass(frozen=True)
class ModuleConfig:
    channels: tuple[int, ...] = (64, 128, 256, 512)
    sizes: tuple[int, ...] = (56, 28, 14)
    batch: int = 8
    warmup: int = 2
    # 41 rounds: with 21, the median paired ratio moved by up to ±8 % between runs on the 2-core VM.
    repeats: int = 41


QUICK = ModuleConfig(channels=(16,), sizes=(8,), batch=2, warmup=1, repeats=3)


class _Probe(nn.Module):
    """One attention module as a model, so lbam.complexity counts it (attention_modules = [module])."""

    def __init__(self, module: nn.Module | None) -> None:
        super().__init__()
        self.module = module if module is not None else nn.Identity()
        self.attention_modules = [] if module is None else [module]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _candidates(channels: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    mods = {name: _Probe(build_attention(name, channels)) for name in ATTENTIONS}
    # The reference shares the LBAM instance's parameters: same function, plain eager implementation.
    mods[REFERENCE] = _Probe(ReferenceLBAM(mods["lbam"].module))
    mods[GAP_ONLY] = _Probe(build_attention("lbam", channels, pool="avg"))
    for m in mods.values():
        m.to(device).train()
    return mods


def _fwd(model: nn.Module, x: torch.Tensor):
    def run() -> torch.Tensor:
        return model(x)

    return run


def _fwdbwd(model: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        zero_grads(model, x)
        model(x).backward(grad)

    return run


def bench_modules(cfg: ModuleConfig, device: torch.device) -> list[dict[str, object]]:
    """One row per (channels, size, attention), with ratios to SE, BAM and the eager reference."""
    info = machine_info(device)
    rows: list[dict[str, object]] = []
    for channels, size in itertools.product(cfg.channels, cfg.sizes):
        mods = _candidates(channels, device)
        gen = torch.Generator().manual_seed(channels * 1000 + size)
        x = torch.randn(cfg.batch, channels, size, size, generator=gen).to(device).requires_grad_()
        grad = torch.randn(x.shape, generator=gen).to(device)
        # Equal function, checked on a slice of the batch (float64 is slow on CPU).
        check_reference(mods["lbam"].module, x.detach()[:2])
        fns = {}
        for name, m in mods.items():
            fns[f"{name}/fwd"] = _fwd(m, x)
            fns[f"{name}/fwdbwd"] = _fwdbwd(m, x, grad)
        times = interleaved_times(fns, device, cfg.warmup, cfg.repeats, seed=channels + size)
        block = {}
        for name, m in mods.items():
            cost = profile_model(m, input_size=(1, channels, size, size))
            block[name] = {
                "params": cost["params"],
                "macs": cost["macs"],
                "flops": cost["flops"],
                "fwd_ms": 1e3 * statistics.median(times[f"{name}/fwd"]),
                "fwdbwd_ms": 1e3 * statistics.median(times[f"{name}/fwdbwd"]),
                "act_bytes": saved_tensor_bytes(_fwd(m, x), exclude=[x, *m.parameters()]),
            }
        none = block["none"]
        for name, r in block.items():
            row = {**info, "batch": cfg.batch, "channels": channels, "height": size, "width": size}
            row |= {"attention": name, **r}
            row["fwd_added_ms"] = r["fwd_ms"] - none["fwd_ms"]
            row["fwdbwd_added_ms"] = r["fwdbwd_ms"] - none["fwdbwd_ms"]
            for base in BASELINES:
                b = block[base]
                row[f"params_over_{base}"] = r["params"] / b["params"]
                for col in ("fwd", "fwdbwd"):
                    row[f"{col}_over_{base}"] = paired_ratio(times[f"{name}/{col}"], times[f"{base}/{col}"])
                # How far the run's noise leaves the targeted ratio: its ~95 % interval.
                lo, hi = paired_ratio_ci(times[f"{name}/fwdbwd"], times[f"{base}/fwdbwd"])
                row[f"fwdbwd_over_{base}_ci_lo"], row[f"fwdbwd_over_{base}_ci_hi"] = lo, hi
                row[f"mem_over_{base}"] = r["act_bytes"] / b["act_bytes"]
            rows.append(row)
        print(
            f"C={channels:4d} H=W={size:3d}  "
            + "  ".join(f"{n}={block[n]['fwdbwd_ms']:.2f}ms" for n in block),
            flush=True,
        )
    return rows


def plot_modules(rows: list[dict[str, object]], path) -> None:
    """Forward+backward latency of each module relative to BAM, per input size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys((r["channels"], r["height"]) for r in rows))
    names = [n for n in dict.fromkeys(r["attention"] for r in rows) if n != "none"]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(sizes) + 2), 4.5))
    for name in names:
        ys = [
            next(
                r["fwdbwd_over_bam"]
                for r in rows
                if r["attention"] == name and (r["channels"], r["height"]) == s
            )
            for s in sizes
        ]
        dashed = name in (REFERENCE, GAP_ONLY)
        ax.plot(range(len(sizes)), ys, marker="o", label=name, linestyle="--" if dashed else "-")
    ax.axhline(1.05, color="grey", linewidth=0.8, linestyle=":", label="target 1.05 × BAM")
    ax.set_xticks(range(len(sizes)), [f"C={c}\n{h}×{h}" for c, h in sizes], fontsize=8)
    ax.set_xlabel("input size (channels, H×W)")
    ax.set_ylabel("forward+backward latency / BAM's (×)")
    r0 = rows[0]
    ax.set_title(
        f"Attention module cost, train mode, batch {r0['batch']}, {r0['device']} ({r0['threads']} threads)"
    )
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
