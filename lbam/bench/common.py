"""Shared pieces of the benchmarks: where it ran, interleaved timing, paired ratios, saved-tensor memory, CSV."""

from __future__ import annotations

import datetime
import math
import os
import random
import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch.utils import benchmark

from lbam.io import atomic_write
from lbam.results import cpu_model, git_commit

REPO_ROOT = Path(__file__).resolve().parents[2]


def machine_info(device: torch.device) -> dict[str, object]:
    """Columns that every CSV row carries: where, when and with what it was measured."""
    return {
        "machine": f"{cpu_model()} ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none",
        "torch_version": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(REPO_ROOT),
    }


def load_avg() -> float:
    """1-minute load average: the machine is shared, so every row states how busy it was."""
    return round(os.getloadavg()[0], 2)


def interleaved_times(fns: Mapping, rounds: int, min_s: float = 0.02, seed: int = 0) -> dict:
    """Seconds per call of each callable of ``fns`` (by key), one figure per round, by ``benchmark.Timer``.

    Every round times every candidate once, in a freshly shuffled order, so slow drifts of a shared machine
    (load, frequency, allocator state) spread over all candidates; the i-th times of two candidates come from
    the same round (see ``paired_ratio``). A figure averages enough calls to last ``min_s`` (from one warm call),
    after ``Timer.timeit``'s own warm-up calls, which also re-warm the caches after the previous candidate.
    """
    threads = torch.get_num_threads()  # Timer's default is 1 thread
    timers = {n: benchmark.Timer("fn()", globals={"fn": fn}, num_threads=threads) for n, fn in fns.items()}
    number = {name: max(1, math.ceil(min_s / t.timeit(1).mean)) for name, t in timers.items()}
    times = {name: [] for name in fns}
    order, rng = list(fns), random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            times[name].append(timers[name].timeit(number[name]).mean)
    return times


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i]: a ratio estimate that cancels drifts shared by one round."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def paired_ratio_ci(a: list[float], b: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free ~95 % confidence interval of that median: order statistics of the per-round ratios,
    ranks (n ∓ z√n)/2 (normal approximation of the binomial; no assumption on the timing noise)."""
    r = sorted(x / y for x, y in zip(a, b, strict=True))
    n = len(r)
    lo = max(1, math.floor((n - z * math.sqrt(n)) / 2))
    hi = min(n, math.ceil(1 + (n + z * math.sqrt(n)) / 2))
    return r[lo - 1], r[hi - 1]


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the unique storages autograd saves for backward while ``fn()`` runs (eager or compiled).

    This is the activation memory a layer holds from its forward until its backward (what grows with depth and
    batch). Storages of ``exclude`` (input, parameters: they exist anyway) are not counted; views of one
    storage count once.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows (dicts with the same keys) to ``path`` atomically; floats to 4 significant digits."""
    table = pd.DataFrame([{k: f"{v:.4g}" if isinstance(v, float) else v for k, v in r.items()} for r in rows])
    return atomic_write(path, table.to_csv(index=False, lineterminator="\n"))
