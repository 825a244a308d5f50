"""Shared pieces of the benchmarks: machine description, interleaved timing, saved-tensor memory, CSV output."""

from __future__ import annotations

import csv
import datetime
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from lbam.attention import _ext
from lbam.results import cpu_model, git_commit

REPO_ROOT = Path(__file__).resolve().parents[2]


def machine_info(device: torch.device) -> dict[str, object]:
    """Columns that every CSV row carries: where and with what it was measured."""
    return {
        "machine": f"{cpu_model()} ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none",
        "device": device.type,
        "torch_version": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "commit": git_commit(REPO_ROOT),
        "cpp_kernel": cpp_kernel_state(device),
    }


def cpp_kernel_state(device: torch.device) -> str:
    """Whether LBAM's (and CBAM's) CPU pooling runs the C++ kernel; builds it now, before anything is timed."""
    if device.type != "cpu":
        return "n/a"
    if _ext.disabled():
        return "off"
    return "on" if _ext.cpu_ops() is not None else "unavailable"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    fns: Mapping[str, Callable[[], object]],
    device: torch.device,
    warmup: int,
    repeats: int,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Wall times in seconds of each callable per round, measured round-robin in the same process.

    Each round runs every callable once, in a freshly shuffled order, so slow drifts of the machine
    (load, frequency, allocator state) spread evenly over all candidates instead of biasing one; the i-th
    times of two candidates come from the same round (see ``paired_ratio``).
    """
    rng = random.Random(seed)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i]: a ratio estimate that cancels drifts shared by one round."""
    return statistics.median(x / y for x, y in zip(a, b))


def paired_ratio_ci(a: list[float], b: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of that median: order statistics of the per-round ratios.

    Ranks (n ∓ z√n)/2 of the sorted ratios (normal approximation of the binomial; no assumption on the shape
    of the timing noise). With 41 rounds these are the 14th and 28th ratios.
    """
    r = sorted(x / y for x, y in zip(a, b))
    n = len(r)
    lo = max(1, math.floor((n - z * math.sqrt(n)) / 2))
    hi = min(n, math.ceil(1 + (n + z * math.sqrt(n)) / 2))
    return r[lo - 1], r[hi - 1]


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique tensor storages that autograd saves for backward while ``fn()`` runs.

    This is the activation memory a layer holds from its forward until its backward (what grows with
    depth and batch). Storages of ``exclude`` (the layer's input and parameters, which exist anyway)
    are not counted; views of one storage are counted once.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def zero_grads(module: nn.Module | None, *tensors: torch.Tensor) -> None:
    if module is not None:
        module.zero_grad(set_to_none=True)
    for t in tensors:
        t.grad = None


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows (dicts with the same keys) to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        # Four significant digits: the timing noise is larger than that anyway.
        writer.writerows(
            {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows
        )
    return path
