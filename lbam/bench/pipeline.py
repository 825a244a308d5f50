"""Pipeline efficiency: training throughput of the real Lightning loop against the compute-only bound.

The loop is ``lbam.train.train`` itself (the runner's LitClassifier, datamodule and Trainer, with its
checkpointing, logging and metrics) on the embodiment-1 model; a callback timestamps every training batch.
The bound, measured in the same process right after, repeats forward, loss, backward and optimiser step of
the same module with the same optimiser on real batches already in memory (no data loading, no Lightning).
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from lbam.bench.common import machine_info, synchronize


@dataclass(frozen=True)
class PipelineConfig:
    # The embodiment-1 quick profile (cnn4, width_mult 0.5, 64×64 crops, batch 64) on the real BCCD.
    overrides: tuple[str, ...] = ("experiment=embodiment1_quick",)
    synthetic_overrides: tuple[str, ...] = ("experiment=embodiment1_quick", "dataset=synthetic_bccd")
    attentions: tuple[str, ...] = ("none", "lbam")
    epochs: int = 2
    batches_per_epoch: int | None = 24  # trainer.limit_train_batches (None: the whole train split)
    warmup_batches: int = 3  # of the first epoch, not timed (lazy init, allocator warm-up)
    bound_steps: int = 30


QUICK = PipelineConfig(
    overrides=(
        "dataset=synthetic_bccd",
        "dataset.image_size=16",
        "dataset.batch_size=8",
        "backbone.width_mult=0.125",
    ),
    synthetic_overrides=(),
    attentions=("lbam",),
    epochs=2,
    batches_per_epoch=None,
    warmup_batches=1,
    bound_steps=4,
)


class BatchTimer(pl.Callback):
    """Timestamps the end of every training batch; keeps the trainer and module for the bound."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ends: list[tuple[int, float, int]] = []  # (epoch, time, batch size)
        self.trainer: pl.Trainer | None = None
        self.module: pl.LightningModule | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.ends.append((trainer.current_epoch, time.perf_counter(), len(batch[1])))

    def on_train_end(self, trainer, pl_module) -> None:
        self.trainer, self.module = trainer, pl_module


def loop_throughput(ends: list[tuple[int, float, int]], warmup: int) -> tuple[float, float]:
    """(overall, in-epoch) images/s after ``warmup`` batches: overall spans epoch boundaries (checkpointing,
    new data iterators); in-epoch sums only the gaps between consecutive batches of one epoch."""
    timed = ends[warmup:]
    images = sum(n for _, _, n in timed[1:])
    overall = images / (timed[-1][1] - timed[0][1])
    gaps = [(b[1] - a[1], b[2]) for a, b in itertools.pairwise(timed) if a[0] == b[0]]
    in_epoch = sum(n for _, n in gaps) / sum(t for t, _ in gaps)
    return overall, in_epoch


def compute_bound(module, optimizer, batches, steps: int, device: torch.device) -> float:
    """Images/s of forward + loss + backward + optimiser step on in-memory batches (median step time)."""
    module.train()
    times = []
    for i in range(steps + 2):  # two untimed warm-up steps
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(module(x).float(), y)
        loss.backward()
        optimizer.step()
        synchronize(device)
        if i >= 2:
            times.append((time.perf_counter() - t0) / len(y))
    return 1.0 / statistics.median(times)


def _has_bccd(cfg) -> bool:
    return (Path(cfg.paths.data_dir) / "BCCD" / "Annotations").is_dir()


def bench_pipeline(cfg: PipelineConfig, device: torch.device) -> list[dict[str, object]]:
    """One row per attention: loop and bound images/s and their ratio, with the data it ran on."""
    from lbam.train import compose_config, train

    info = machine_info(device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    rows = []
    with tempfile.TemporaryDirectory(prefix="lbam-bench-") as tmp:
        base = [
            f"paths.results_dir={tmp}/results",
            f"paths.experiments_dir={tmp}/experiments",
            f"trainer.max_epochs={cfg.epochs}",
            f"trainer.limit_train_batches={cfg.batches_per_epoch or 'null'}",
            f"trainer.accelerator={accelerator}",
            "force=true",
        ]
        overrides = list(cfg.overrides)
        if cfg.synthetic_overrides and not _has_bccd(compose_config(overrides)):
            print(
                "bench pipeline: no BCCD under LBAM_DATA_DIR; running on synthetic BCCD instead", flush=True
            )
            overrides = list(cfg.synthetic_overrides)
        for attention in cfg.attentions:
            run_overrides = [*overrides, f"attention={attention}", *base]
            timer = BatchTimer(device)
            row = train(compose_config(run_overrides), overrides=run_overrides, callbacks=[timer])
            if row["status"] != "ok":
                raise RuntimeError(f"bench pipeline: training failed: {row['error']}")
            loop, in_epoch = loop_throughput(timer.ends, cfg.warmup_batches)
            # Real training batches (augmented, collated) from the run's own datamodule, held on the device.
            batches = [
                tuple(t.to(device) for t in b)
                for b in itertools.islice(timer.trainer.datamodule.train_dataloader(), 8)
            ]
            bound = compute_bound(timer.module, timer.trainer.optimizers[0], batches, cfg.bound_steps, device)
            batch = len(batches[0][1])
            rows.append(
                {
                    **info,
                    "dataset": row["dataset"],
                    "synthetic": row["synthetic"],
                    "backbone": row["backbone"],
                    "attention": attention,
                    "width_mult": row["width_mult"],
                    "image_size": row["image_size"],
                    "batch": batch,
                    "n_train": row["n_train"],
                    "epochs": cfg.epochs,
                    "precision": row["precision"],
                    "timed_batches": len(timer.ends) - cfg.warmup_batches - 1,
                    "loop_images_per_s": loop,
                    "loop_in_epoch_images_per_s": in_epoch,
                    "bound_images_per_s": bound,
                    "loop_over_bound": loop / bound,
                    "in_epoch_over_bound": in_epoch / bound,
                }
            )
            print(
                f"pipeline {row['dataset']} {row['backbone']}+{attention}: loop {loop:.0f} img/s "
                f"(in-epoch {in_epoch:.0f}), bound {bound:.0f} img/s, ratio {loop / bound:.3f}",
                flush=True,
            )
    return rows
