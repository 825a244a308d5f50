"""Data time per training step (gather + augment + normalise, no model), this code against an older checkout's.

    python -m lbam.data.bench --ref /tmp/ref --rounds 15 --steps 40

``--ref`` is a checkout whose ``lbam/data/base.py`` still has the per-batch ``BatchTensorDataset`` (e.g. ``git
worktree add /tmp/ref d5ef74f``). Each round times ``--steps`` training batches of each loader, alternating which
goes first, so that a change in the machine's load hits both; the table gives the median over rounds of the
milliseconds per step. Cases: real BCCD at 32 px batch 32 and at 128 px batch 64 (flips), the Oxford-IIIT Pet
twin with random-resized crops at 224 px batch 32. Results: results/bench/data_loader.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from lbam.data import BCCDDataModule, SyntheticPetsDataModule
from lbam.paths import data_root, project_root

CASES = (
    ("BCCD 32 px, batch 32, flips", BCCDDataModule, {"image_size": 32, "batch_size": 32}),
    ("BCCD 128 px, batch 64, flips", BCCDDataModule, {"image_size": 128, "batch_size": 64}),
    ("Pet twin 224 px, batch 32, RRC + flip", SyntheticPetsDataModule, {"image_size": 224, "batch_size": 32}),
)


def old_dataset_class(ref: Path):
    """``BatchTensorDataset`` of the checkout at ``ref``, loaded from its file (it imports only torch and lbam.io)."""
    spec = importlib.util.spec_from_file_location("lbam_ref_base", ref / "lbam" / "data" / "base.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.BatchTensorDataset


def steps(batches, n: int, finish, batch_size: int) -> float:
    """Seconds per full batch over ``n`` steps of ``batches`` (an endless iterator), ``finish`` applied to each:
    per image times the batch size, since the old loader also yields a smaller last batch per epoch."""
    t0, images = time.perf_counter(), 0
    for _ in range(n):
        images += len(finish(next(batches))[1])
    return (time.perf_counter() - t0) / images * batch_size


def endless(make):
    while True:
        yield from make()


def measure(dm, old_cls, rounds: int, n: int) -> dict[str, list[float]]:
    """Per round, seconds per full training batch of the old loader, the new one gathering on the CPU, the new one gathering in
    the hook (``on_device=true``: what a GPU run does, here on CPU tensors)."""

    def old_loader():
        ds = old_cls(dm.images, dm.labels, dm.split_indices["train"], dm.mean, dm.std, crop=dm.image_size,
                     train=True, flips=dm.flips, rrc_scale=dm.rrc_scale)  # fmt: skip
        drop_last = len(ds) % dm.batch_size == 1
        return DataLoader(
            ds, sampler=BatchSampler(RandomSampler(ds), dm.batch_size, drop_last), batch_size=None
        )

    def new_loader(on_device: bool):
        def make():
            dm.on_device = on_device
            return dm.train_dataloader()

        return make

    kinds = {
        "old": (endless(old_loader), lambda b: b),
        "new": (endless(new_loader(False)), lambda b: dm.transform(b, True)),
        "new, gather in hook": (endless(new_loader(True)), lambda b: dm.transform(b, True)),
    }
    for batches, finish in kinds.values():  # warm-up: first allocations, lazy inits
        steps(batches, 3, finish, dm.batch_size)
    out = {k: [] for k in kinds}
    for r in range(rounds):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        for k in order:
            batches, finish = kinds[k]
            out[k].append(steps(batches, n, finish, dm.batch_size))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="checkout with the old BatchTensorDataset")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--only", default="", help="run the cases whose title contains this")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    old_cls = old_dataset_class(args.ref)
    cache = os.environ.get("LBAM_CACHE_DIR", str(project_root() / "data" / ".cache"))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f} at start"
    )
    print("| case | old ms/step | new ms/step | new/old (quartiles) | new, gather in hook ms/step |")
    print("| --- | --- | --- | --- | --- |")
    for title, cls, kw in (c for c in CASES if args.only in c[0]):
        root = {"root": str(data_root(folder=cls.folder))} if not cls.is_synthetic else {}
        dm = cls(cache_dir=cache, **root, **kw)
        dm.setup()
        times = measure(dm, old_cls, args.rounds, args.steps)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        q1, q2, q3 = statistics.quantiles([n / o for n, o in zip(times["new"], times["old"])], n=4)
        ratio = f"{q2:.2f} ({q1:.2f}–{q3:.2f})"
        hook = med["new, gather in hook"]
        print(f"| {title} | {med['old']:.2f} | {med['new']:.2f} | {ratio} | {hook:.2f} |", flush=True)
    print(f"load {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
